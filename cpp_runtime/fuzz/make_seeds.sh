#!/usr/bin/env bash
# Seed corpora for the fuzz targets, from the shipped model files (generated at
# run time, not committed: the graphs and the tokenizer are tens to hundreds of KB).
#
#   bash cpp_runtime/fuzz/make_seeds.sh OUT_DIR
#
# writes OUT_DIR/<target>/ for json, onnx_model, bitplane, tokenizer_model and
# tokenizer_encode:
#   json              the shipped manifests (ONNX export, packed model) and card, plus small edge cases
#   onnx_model        encoder.onnx and decoder_step.onnx of models/nmt-en-de-bcq/onnx and, when the
#                     onnx package is available, a small graph of every standard op the executor runs
#   bitplane          two shipped .bcq matrices (3-bit attention, 2-bit FFN) and, when numpy is
#                     available, tiny ones with float16 scales, offsets, groups and mixed row bits
#   tokenizer_model   the shipped spm.model, reduced copies of it (400 pieces without the 240 KB
#                     charsmap; byte fallback and user-defined pieces), and, when the sentencepiece
#                     package is available, a tiny trained model with a small custom charsmap
#   tokenizer_encode  sentences, NFKC cases, control characters and invalid UTF-8
set -euo pipefail
OUT=${1:?usage: make_seeds.sh OUT_DIR}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
M=$ROOT/models/nmt-en-de-bcq
mkdir -p "$OUT"/{json,onnx_model,bitplane,tokenizer_model,tokenizer_encode}

cp "$M/onnx/manifest.json" "$OUT/json/onnx_manifest.json"
cp "$M/model/manifest.json" "$OUT/json/packed_manifest.json"
cp "$M/card.json" "$OUT/json/card.json"
cp "$M/onnx/encoder.onnx" "$M/onnx/decoder_step.onnx" "$OUT/onnx_model/"
cp "$M/model/matrices/encoder.layers.0.self_attn.q_proj.weight.bcq" "$OUT/bitplane/attn_3bit.bcq"
cp "$M/model/matrices/decoder.layers.0.fc1.weight.bcq" "$OUT/bitplane/ffn_2bit.bcq"
cp "$M/onnx/spm.model" "$OUT/tokenizer_model/shipped_spm.model"

PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 - "$OUT" "$M" <<'PY'
import os
import struct
import sys
import tempfile

out, model = sys.argv[1], sys.argv[2]


def write(rel, data):
    with open(os.path.join(out, rel), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


# --- json: edge cases of the grammar the manifest reader accepts or rejects
for i, text in enumerate([
    '{"a": [1, -0.5e-3, 1E+2, true, false, null, "\\u00e9\\ud83d\\ude00\\n\\"\\\\\\/"], "b": {}}',
    '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]',
    '{"files": [{"path": "weights.bin", "size": 9007199254740991, "sha256": "00"}], "x": 1e308}',
    '"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"',
]):
    write(f"json/edge_{i}.json", text)

# --- tokenizer_encode
for i, text in enumerate([
    "The house is small.",
    "  Open   the file.\tNow!  ",
    "Stra\u00dfe \u00e4\u00f6\u00fc \uff21\uff42\uff43 \u2460 \ufb01 \u2163 \u3000x",
    "\u65e5\u672c\u8a9e \U0001F600 \u2581 <unk> <s> </s> a\u0301",
    "\x01\x02\x1b[31m\x7f\u0085\u200b\ufeff",
]):
    write(f"tokenizer_encode/text_{i}.txt", text)
write("tokenizer_encode/invalid_utf8.bin", b"abc \xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80 \xc0\xaf end")


# --- tokenizer_model: reduced copies of the shipped model (protobuf wire format by hand)
def varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def fields(b):
    i, res = 0, []
    while i < len(b):
        key, i = varint(b, i)
        f, w = key >> 3, key & 7
        start = i
        if w == 0:
            _, i = varint(b, i)
        elif w == 2:
            n, i = varint(b, i)
            i += n
        elif w == 5:
            i += 4
        elif w == 1:
            i += 8
        else:
            raise ValueError("unexpected wire type")
        res.append((f, w, b[start:i]))
    return res


def enc_varint(v):
    o = bytearray()
    while True:
        c = v & 0x7F
        v >>= 7
        if v:
            o.append(c | 0x80)
        else:
            o.append(c)
            return bytes(o)


def field(f, w, payload):
    return enc_varint(f << 3 | w) + payload


def ld(f, data):
    return field(f, 2, enc_varint(len(data)) + data)


def piece(text, score, kind=None):
    p = ld(1, text.encode("utf-8") if isinstance(text, str) else text) + field(2, 5, struct.pack("<f", score))
    p += field(3, 0, enc_varint(kind)) if kind is not None else b""
    return ld(1, p)  # ModelProto.pieces


spm = open(os.path.join(model, "onnx", "spm.model"), "rb").read()
top = fields(spm)
pieces = [raw for f, w, raw in top if f == 1]
trainer = next(raw for f, w, raw in top if f == 2)


def raw_field(f, raw):  # re-encode a length-delimited field whose payload (with its length) is `raw`
    return enc_varint(f << 3 | 2) + raw


identity = ld(3, ld(1, b"identity") + field(3, 0, b"\x01") + field(4, 0, b"\x01") + field(5, 0, b"\x01"))
write("tokenizer_model/reduced_400.model",
      b"".join(raw_field(1, p) for p in pieces[:400]) + raw_field(2, trainer) + identity)
# byte fallback: specials, the 256 byte pieces, user-defined and normal pieces
body = [piece("<unk>", 0, 2), piece("<s>", 0, 3), piece("</s>", 0, 3)]
body += [piece(f"<0x{b:02X}>", 0, 6) for b in range(256)]
body += [piece("<sep>", 0, 4)]
body += [raw_field(1, p) for p in pieces[4:120]]
trainer_bf = ld(2, field(3, 0, b"\x01") + field(35, 0, b"\x01") + field(40, 0, b"\x00") + field(41, 0, b"\x01")
                + field(42, 0, b"\x02") + field(43, 0, enc_varint((1 << 64) - 1)) + ld(44, "<?>".encode()))
write("tokenizer_model/byte_fallback.model",
      b"".join(body) + trainer_bf + identity + ld(5, ld(1, b"identity") + field(3, 0, b"\x00")))

# a tiny trained model whose charsmap is small (custom normalization rules)
try:
    import sentencepiece as sp
except ImportError:
    sp = None
if sp is not None:
    with tempfile.TemporaryDirectory() as d:
        corpus = os.path.join(d, "c.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            for i in range(200):
                f.write(f"the house {i} is small and the cat sees a dog number {i * 7}\n")
                f.write(f"das Haus {i} ist klein und die Katze sieht einen Hund Nummer {i * 3}\n")
        rules = os.path.join(d, "rules.tsv")
        with open(rules, "w") as f:  # source code points -> target code points (hex)
            f.write("41\t61\n42\t62\nFF21\t61\n2460\t31\nFB01\t66 69\n3000\t20\nC4\t61 308\n")
        sp.SentencePieceTrainer.train(input=corpus, model_prefix=os.path.join(d, "tiny"), vocab_size=60,
                                      model_type="unigram", normalization_rule_tsv=rules, num_threads=1,
                                      minloglevel=2, user_defined_symbols=["<sep>"], byte_fallback=False)
        write("tokenizer_model/tiny_custom_charsmap.model", open(os.path.join(d, "tiny.model"), "rb").read())
else:
    print("make_seeds: no sentencepiece package: no tiny trained tokenizer seed", file=sys.stderr)

# --- onnx_model: every standard op the executor runs, once on constants (folded at load) and once
# on graph inputs (run per call): the shipped graphs lack some (Pad, Gather, CumSum, Equal, Not, and the
# SLU ops Slice, ArgMax, Sub, Div, ReduceMean, Sqrt, Gather on axis 1).
try:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
except ImportError as e:
    print(f"make_seeds: {e}: no op_zoo.onnx seed", file=sys.stderr)
else:
    F, I64 = TensorProto.FLOAT, TensorProto.INT64
    inits = {
        "cf": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "ci": np.array([[0, 1, 2], [2, 1, 0]], np.int64),
        "idx": np.array([1, 0], np.int64),
        "axis1": np.array(1, np.int64),
        "axes0": np.array([0], np.int64),
        "pads": np.array([0, 1, 0, 1], np.int64),
        "shape32": np.array([3, 2], np.int64),
        "flat": np.array([-1], np.int64),
        "w": np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        "scale": np.ones(3, np.float32),
        "bias": np.zeros(3, np.float32),
        "sl_starts": np.array([-1, 0], np.int64),
        "sl_ends": np.array([np.iinfo(np.int64).min, 2], np.int64),
        "sl_axes": np.array([-1, 0], np.int64),
        "sl_steps": np.array([-2, 1], np.int64),
        "one": np.array([1], np.int64),
        "zeros2": np.array([0, 0], np.int64),
        "rm_axes": np.array([-1], np.int64),
    }
    N = helper.make_node
    nodes = [
        N("Add", ["cf", "x"], ["add"]), N("Mul", ["cf", "cf"], ["mul_c"]),
        N("Cast", ["ci"], ["cast_c"], to=F), N("Cast", ["x"], ["cast_x"], to=I64),
        N("Concat", ["cf", "cf"], ["cat_c"], axis=0), N("Concat", ["x", "cf"], ["cat_x"], axis=1),
        N("Cos", ["cf"], ["cos_c"]), N("Sin", ["x"], ["sin_x"]),
        N("CumSum", ["ci", "axis1"], ["cum_c"]), N("CumSum", ["ids", "axis1"], ["cum_x"]),
        N("Equal", ["ci", "ids"], ["eq"]), N("Not", ["eq"], ["neq"]), N("Where", ["neq", "cf", "x"], ["where"]),
        N("Gather", ["cf", "idx"], ["gat_c"], axis=0), N("Gather", ["x", "idx"], ["gat_x"], axis=0),
        N("Identity", ["x"], ["ident"]),
        N("LayerNormalization", ["x", "scale", "bias"], ["ln"], axis=-1, epsilon=1e-5),
        N("MatMul", ["x", "w"], ["mm"]),
        N("Pad", ["cf", "pads"], ["pad_c"]), N("Pad", ["x", "pads"], ["pad_x"]),
        N("Relu", ["add"], ["relu"]),
        N("Reshape", ["cf", "shape32"], ["resh_c"]), N("Reshape", ["x", "flat"], ["resh_x"]),
        N("Shape", ["x"], ["shape_x"]),
        N("Softmax", ["x"], ["soft"], axis=-1),
        N("Unsqueeze", ["x", "axes0"], ["unsq"]), N("Squeeze", ["unsq", "axes0"], ["sq"]),
        N("Transpose", ["cf"], ["tr_c"], perm=[1, 0]), N("Transpose", ["x"], ["tr_x"], perm=[1, 0]),
        N("Sub", ["x", "cf"], ["sub_x"]), N("Div", ["ci", "one"], ["div_c"]), N("Div", ["ids", "one"], ["div_x"]),
        N("Slice", ["cf", "sl_starts", "sl_ends", "sl_axes", "sl_steps"], ["slice_c"]),
        N("Sub", ["shape_x", "one"], ["sl_end_x"]), N("Slice", ["x", "zeros2", "sl_end_x"], ["slice_x"]),
        N("ArgMax", ["cf"], ["amax_c"], axis=-1, keepdims=0),
        N("ArgMax", ["x"], ["amax_x"], axis=0, keepdims=1, select_last_index=1),
        N("ReduceMean", ["cf", "rm_axes"], ["rmean_c"], keepdims=1), N("ReduceMean", ["x"], ["rmean_x"], keepdims=0),
        N("ReduceMean", ["x", "axes0"], ["rmean_x0"], keepdims=0, noop_with_empty_axes=1),
        N("Sqrt", ["cf"], ["sqrt_c"]), N("Sqrt", ["x"], ["sqrt_x"]),
        N("Gather", ["x", "axis1"], ["gat1_x"], axis=1),
    ]
    outputs = ["relu", "mul_c", "cast_c", "cast_x", "cat_c", "cat_x", "cos_c", "sin_x", "cum_c", "cum_x", "where",
               "gat_c", "gat_x", "ident", "ln", "mm", "pad_c", "pad_x", "resh_c", "resh_x", "shape_x", "soft", "sq",
               "tr_c", "tr_x", "sub_x", "div_c", "div_x", "slice_c", "slice_x", "amax_c", "amax_x", "rmean_c",
               "rmean_x", "rmean_x0", "sqrt_c", "sqrt_x", "gat1_x"]
    g = helper.make_graph(
        nodes, "op_zoo",
        [helper.make_tensor_value_info("x", F, [2, 3]), helper.make_tensor_value_info("ids", I64, [2, 3])],
        [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in outputs],
        initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    write("onnx_model/op_zoo.onnx", m.SerializeToString())

# --- bitplane: tiny matrices through the Python writer (docs/bitplane-format.md)
try:
    import numpy as np
    from ondevice import bitplane
except ImportError as e:
    print(f"make_seeds: {e}: only the shipped .bcq seeds", file=sys.stderr)
else:
    rng = np.random.default_rng(0)
    for name, rows, cols, qmax, group, offset, dt in [
        ("r5_c9_g9_f32", 5, 9, 1, 9, False, "float32"),
        ("r33_c16_g8_off_f16", 33, 16, 3, 8, True, "float16"),
        ("r40_c24_g24_4bit_f32_off", 40, 24, 4, 24, True, "float32"),
        ("r64_c40_g16_f16", 64, 40, 2, 16, False, "float16"),
    ]:
        groups = -(-cols // min(group, cols))
        signs = rng.random((rows, qmax, cols)) < 0.5
        alpha = rng.uniform(0.1, 1.0, (rows, qmax, groups)).astype(np.float32)
        row_bits = rng.integers(1, qmax + 1, rows).astype(np.uint8)
        off = rng.normal(0, 0.1, (rows, groups)).astype(np.float32) if offset else None
        p = bitplane.pack(signs, alpha, row_bits, group, off)
        write(f"bitplane/{name}.bcq", bitplane.to_bytes(p, dt))
PY
for t in json onnx_model bitplane tokenizer_model tokenizer_encode; do
  echo "seeds/$t: $(ls "$OUT/$t" | wc -l) files, $(du -sk "$OUT/$t" | cut -f1) KB"
done
