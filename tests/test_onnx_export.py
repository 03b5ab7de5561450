"""ONNX export: the bit-plane ops against the format, the exported graphs against PyTorch, bad input.

Parity tolerance (export/README.md): logits of onnxruntime and PyTorch agree to 1e-4 absolute (measured
~2e-6 on the tiny model), and greedy and beam translations are identical.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from ondevice import bcq, bitplane  # noqa: E402
from ondevice.errors import BCQFormatError, ConfigError  # noqa: E402
from ondevice.onnx_export import OnnxModelError, OnnxTranslator, export_nmt, read_manifest  # noqa: E402
from ondevice.onnx_export import ops  # noqa: E402

LOGIT_TOL = 1e-4


# --------------------------------------------------------------------------- the ops on their own


def _op_model(op: str, p: bitplane.PackedPlanes, first: np.ndarray, bias: np.ndarray | None = None,
              overridable: bool = True) -> onnx.ModelProto:
    """One ``op`` node on packed matrix ``p``; ``first`` is X (BitPlaneMatMul) or the indices (BitPlaneGather)."""
    groups = bitplane.num_groups(p.cols, p.group_size)
    weights = {"planes": p.planes, "alpha": p.alpha, "row_bits": p.row_bits}
    if p.offset is not None:
        weights["offset"] = p.offset.reshape(p.rows, groups)
    if bias is not None:
        weights["bias"] = bias
    ins = ["first", "planes", "alpha", "row_bits", "offset" if p.offset is not None else ""]
    if op == ops.MATMUL:
        ins.append("bias" if bias is not None else "")
        out_shape = list(first.shape[:-1]) + [p.rows]
    else:
        out_shape = list(first.shape) + [p.cols]
    node = helper.make_node(op, ins, ["y"], domain=ops.DOMAIN, K=p.cols, N=p.rows, group_size=p.group_size,
                            bits=int(p.row_bits.max()))
    inputs = [helper.make_tensor_value_info("first", helper.np_dtype_to_tensor_dtype(first.dtype), first.shape)]
    if overridable:
        inputs += [helper.make_tensor_value_info(k, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
                   for k, v in weights.items()]
    graph = helper.make_graph([node], "op", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=ops.opset_imports(), functions=ops.functions({op}),
                              ir_version=ops.IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def _run(model: onnx.ModelProto, first: np.ndarray, opts=None) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), opts or _quiet(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"first": first})[0]


def _quiet():
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.intra_op_num_threads = 1
    return opts


def test_spec_example():
    """The worked example of export/ops/BitPlaneMatMul.md, byte for byte."""
    planes = np.zeros(64, np.uint8)
    planes[0], planes[1], planes[33] = 13, 3, 10
    alpha = np.zeros(64, np.float32)
    alpha[0], alpha[1], alpha[33] = 0.5, 1.0, 0.25
    p = bitplane.PackedPlanes(2, 4, 4, np.array([1, 2], np.uint8), planes, alpha, None)
    w = np.array([[0.5, -0.5, 0.5, 0.5], [0.75, 1.25, -1.25, -0.75]], np.float32)
    np.testing.assert_array_equal(bitplane.dequantize(p), w)  # the spec's bytes are the .bcq layout
    np.testing.assert_array_equal(_run(_op_model(ops.GATHER, p, np.array([1, 0, -1])), np.array([1, 0, -1])),
                                  w[[1, 0, 1]])
    x = np.array([[1.0, 2.0, 3.0, 4.0]], np.float32)
    np.testing.assert_allclose(_run(_op_model(ops.MATMUL, p, x), x), [[3.0, -3.5]], rtol=1e-6)


CASES = {  # rows, cols, group size, bits, offsets
    "uniform-2bit": (40, 24, None, 2, False),
    "mixed-tiles-groups-offset": (70, 37, 16, np.array([1] * 32 + [3] * 32 + [2] * 6), True),
    "clustered-rows": (45, 16, None, np.array([4, 3, 2, 1] * 11 + [1]), False),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_ops_match_the_format(case, rng):
    n, k, gs, bits, offset = CASES[case]
    r = bcq.quantize(rng.standard_normal((n, k)).astype(np.float32), bits, group_size=gs, method="greedy",
                     offset=offset)
    p = bitplane.pack(r.signs, r.alpha, r.row_bits, r.group_size, r.offset)
    w = r.dequantize()  # the float32 order of the packed-model loader
    ids = np.array([[0, n - 1, 33 % n], [-1, 5, 31 % n]], np.int64)
    np.testing.assert_array_equal(_run(_op_model(ops.GATHER, p, ids), ids), w[ids])  # bit-exact
    x = rng.standard_normal((2, 3, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    np.testing.assert_allclose(_run(_op_model(ops.MATMUL, p, x, bias), x), x @ w.T + bias, atol=2e-5)
    np.testing.assert_allclose(_run(_op_model(ops.MATMUL, p, x), x), x @ w.T, atol=2e-5)
    empty = np.zeros((0, k), np.float32)
    assert _run(_op_model(ops.MATMUL, p, empty), empty).shape == (0, n)
    bad = np.array([n], np.int64)
    with pytest.raises(Exception, match="out of bounds|out of range|indices"):
        _run(_op_model(ops.GATHER, p, bad), bad)


def _optimized_float_bytes(model: onnx.ModelProto, tmp_path) -> int:
    """Bytes of float initializers after onnxruntime's full optimization (constant folding included)."""
    opts = _quiet()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(tmp_path / "optimized.onnx"))
    return sum(numpy_helper.to_array(t).nbytes for t in optimized.graph.initializer if t.data_type == TensorProto.FLOAT)


def test_packed_weights_are_not_constant_folded(tmp_path, rng):
    """Declared as graph inputs the planes stay packed; as plain initializers onnxruntime folds the whole
    dequantization into a float matrix (the hazard the export avoids)."""
    n = k = 128
    r = bcq.quantize(rng.standard_normal((n, k)).astype(np.float32), 2, method="greedy")
    p = bitplane.pack(r.signs, r.alpha, r.row_bits, r.group_size)
    x = np.ones((1, k), np.float32)
    assert _optimized_float_bytes(_op_model(ops.MATMUL, p, x, overridable=True), tmp_path) < n * k
    assert _optimized_float_bytes(_op_model(ops.MATMUL, p, x, overridable=False), tmp_path) >= 4 * n * k


# --------------------------------------------------------------------------- exporting a model


@pytest.fixture(scope="module")
def exported(tiny_trained_run, tmp_path_factory):
    """A mixed-precision packed model (frequency-clustered embedding) exported quantized, and the checkpoint
    exported fp32: (run_dir, data_dir, packed_dir, quantized export, fp32 export)."""
    from ondevice.quant.packed_model import pack_checkpoint

    run, data = tiny_trained_run
    root = tmp_path_factory.mktemp("onnx_export")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pack_checkpoint(run, "paper_2.6bit", root / "packed", src="en", tgt="de",
                        frequencies_from=(data, "train", ["en", "de"]))
        export_nmt(root / "packed", root / "onnx_q")
        export_nmt(run, root / "onnx_fp32", fp32=True, src="en", tgt="de")
    finally:
        torch.set_num_threads(old)
    return run, data, root / "packed", root / "onnx_q", root / "onnx_fp32"


def test_export_layout_checker_and_determinism(exported, tmp_path):
    _, _, packed, q, fp32 = exported
    m = read_manifest(q)
    assert m["quantized"] and m["opsets"] == {"ai.onnx": 18, "ondevice": 1}
    assert m["ops"] == ["BitPlaneGather", "BitPlaneMatMul"]
    assert m["special_ids"] == {"bos": 0, "pad": 1, "eos": 2, "unk": 3} and m["src"] == "en"
    assert sorted(f["path"] for f in m["files"]) == ["decoder_step.onnx", "encoder.onnx", "spm.model", "weights.bin"]
    for d in (q, fp32):
        for graph in ("encoder.onnx", "decoder_step.onnx"):
            onnx.checker.check_model(str(d / graph), full_check=True)
    # the planes in weights.bin are the .bcq file's planes section, unchanged
    enc = onnx.load(str(q / "encoder.onnx"))
    stored = {t.name: numpy_helper.to_array(t) for t in enc.graph.initializer}
    bcq_planes, _ = bitplane.read_file(packed / "matrices" / "encoder.layers.0.fc1.weight.bcq")
    np.testing.assert_array_equal(stored["encoder.layers.0.fc1.weight.planes"], bcq_planes.planes)
    assert (q / "weights.bin").stat().st_size * 4 < (fp32 / "weights.bin").stat().st_size
    # same input, same bytes; an existing export is replaced in place
    export_nmt(packed, tmp_path / "again")
    export_nmt(packed, tmp_path / "again")
    for f in m["files"] + [{"path": "manifest.json"}]:
        assert (tmp_path / "again" / f["path"]).read_bytes() == (q / f["path"]).read_bytes(), f["path"]


def _teacher_forced_logit_diff(translator: OnnxTranslator, model, tok, sentences: list[str], steps: int = 6) -> float:
    ids = tok.encode(sentences)
    src = np.full((len(ids), max(map(len, ids))), tok.sp.pad_id(), np.int64)
    for r, x in enumerate(ids):
        src[r, : len(x)] = x
    state = translator.encode(src)
    diff = 0.0
    with torch.no_grad():
        enc = model.encode(torch.from_numpy(src))
        cache = model.new_cache()
        last = np.full((len(ids), 1), model.config.eos_id, np.int64)
        for _ in range(steps):
            logits, state = translator.step(last, state)
            ref = model.decode(torch.from_numpy(last), enc, cache)[:, -1, :].numpy()
            diff = max(diff, float(np.abs(logits - ref).max()))
            last = ref.argmax(-1).reshape(-1, 1).astype(np.int64)
    return diff


@pytest.mark.parametrize("kind", ["quantized", "fp32"])
def test_parity_with_pytorch(exported, kind):
    from ondevice.nmt.evaluate import load_model, translate

    run, data, packed, q, fp32 = exported
    model, tok = load_model(packed if kind == "quantized" else run)
    translator = OnnxTranslator(q if kind == "quantized" else fp32, threads=1)
    sentences = (data / "test_bible.en").read_text(encoding="utf-8").splitlines()
    assert _teacher_forced_logit_diff(translator, model, tok, sentences[:4]) < LOGIT_TOL
    for beam in (1, 4):
        assert translator.translate_batch(sentences, beam_size=beam) == translate(model, tok, sentences, beam=beam)
    assert translator.translate_batch(["", "  "]) == ["", ""]


@pytest.mark.parametrize("norm,d_model,heads", [("pre", 32, 2), ("peri", 33, 3)])
def test_parity_norms_groups_offsets(exported, tmp_path, norm, d_model, heads):
    """Pre-/Peri-LN, an odd width (K not a multiple of 8, partial last group), grouped uniform BCQ with
    offsets and float16 scales: untrained weights, so logits only."""
    from ondevice.nmt.model import TransformerConfig, TransformerModel
    from ondevice.quant.packed_model import load_packed, save_packed
    from ondevice.quant.plan import QuantPlan

    run = exported[0]
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=60, d_model=d_model, ffn_dim=40, heads=heads, encoder_layers=1,
                            decoder_layers=2, norm=norm, dropout=0.0)
    plan = QuantPlan.uniform(3, group_size=8, method="uniform", offset=True, alpha_dtype="float16")
    save_packed(TransformerModel(cfg).eval(), run / "spm.model", tmp_path / "packed", src="en", tgt="de", plan=plan)
    model, tok, _ = load_packed(tmp_path / "packed")
    sentences = ["the cat sees the dog", "a red tree", "the man runs"]
    for fp32 in (False, True):
        export_nmt(tmp_path / "packed", tmp_path / "onnx", fp32=fp32)
        translator = OnnxTranslator(tmp_path / "onnx", threads=1)
        assert _teacher_forced_logit_diff(translator, model, tok, sentences) < LOGIT_TOL


# --------------------------------------------------------------------------- bad input


def test_bad_input(exported, tmp_path):
    run, _, packed, q, _ = exported
    with pytest.raises(ConfigError, match="not a packed model"):
        export_nmt(run, tmp_path / "x")  # an unquantized checkpoint cannot export as quantized
    with pytest.raises(ConfigError, match="refusing to replace"):
        export_nmt(run, run, fp32=True)  # never overwrites a directory that is not an export
    with pytest.raises(ConfigError, match="was made for src='en'"):
        export_nmt(packed, tmp_path / "x", src="fr")
    inconsistent = tmp_path / "inconsistent"
    shutil.copytree(packed, inconsistent)
    bcq_file = inconsistent / "matrices" / "encoder.layers.0.fc1.weight.bcq"
    data = bytearray(bcq_file.read_bytes())
    data[-1] ^= 1
    bcq_file.write_bytes(bytes(data))
    with pytest.raises(BCQFormatError, match="fc1.weight.bcq"):
        export_nmt(inconsistent, tmp_path / "x")
    assert not (tmp_path / "x").exists()

    broken = tmp_path / "broken"
    shutil.copytree(q, broken)
    with open(broken / "weights.bin", "ab") as f:
        f.write(b"\0")
    with pytest.raises(OnnxModelError, match="weights.bin.*manifest.json says"):
        OnnxTranslator(broken)

    future = tmp_path / "future"
    shutil.copytree(q, future)
    m = json.loads((future / "manifest.json").read_text())
    m["opsets"]["ondevice"] = 2
    (future / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OnnxModelError, match="'ondevice' version 2 is not supported"):
        read_manifest(future)

    # a graph importing ondevice v2 under a manifest that claims v1 (hashes updated to match)
    m["opsets"]["ondevice"] = 1
    graph = onnx.load(str(future / "encoder.onnx"), load_external_data=False)
    for o in graph.opset_import:
        if o.domain == ops.DOMAIN:
            o.version = 2
    data = graph.SerializeToString()
    (future / "encoder.onnx").write_bytes(data)
    from ondevice.onnx_export.manifest import file_entry

    m["files"] = [file_entry("encoder.onnx", data) if f["path"] == "encoder.onnx" else f for f in m["files"]]
    (future / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(OnnxModelError, match="encoder.onnx.*version 2 is not supported"):
        read_manifest(future)


def test_translator_backends_and_cli_agree(exported, tmp_path):
    """ondevice.Translator and `ondevice translate` give the same output on the packed model (torch) and
    its ONNX export (onnxruntime); `ondevice export nmt` writes the same export as export_nmt."""
    import subprocess
    import sys

    from ondevice.translator import Translator

    _, data, packed, q, _ = exported
    sentences = (data / "test_bible.en").read_text(encoding="utf-8").splitlines()[:8] + [""]
    by_torch = Translator(packed, threads=1, backend="torch", beam_size=2).translate_batch(sentences)
    assert Translator(q, threads=1, backend="onnxruntime", beam_size=2).translate_batch(sentences) == by_torch
    r = subprocess.run([sys.executable, "-m", "ondevice", "export", "nmt", "--model", str(packed), "--out",
                        str(tmp_path / "cli_export")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for f in read_manifest(q)["files"]:
        assert (tmp_path / "cli_export" / f["path"]).read_bytes() == (q / f["path"]).read_bytes(), f["path"]
    r = subprocess.run([sys.executable, "-m", "ondevice", "translate", "--backend", "onnxruntime", "--model",
                        str(q), "--beam", "2", "--threads", "1", *sentences[:2]], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == by_torch[:2]
