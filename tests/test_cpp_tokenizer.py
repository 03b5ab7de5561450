"""The C++ runtime's SentencePiece tokenizer gives the ``sentencepiece`` package's ids.

``ondevice_spm`` (cpp_runtime/tools/spm_tool.cc, on the dependency-free tokenizer in
cpp_runtime/src/tokenizer/) encodes and decodes lines; every id list must equal
``sp.Encode(text, out_type=int)`` and every decoded line ``sp.Decode(ids)``, on

* both sides of the committed held-out subsets (models/nmt-en-de/eval/ci_*.{en,de}),
* tricky strings (whitespace runs, tabs, NFKC compatibility characters, combining marks,
  emoji, CJK, unknown and control characters, very long words),
* variants of the shipped model (spaces kept, no dummy prefix, no escaping, whitespace as
  suffix, an unk surface, user-defined and UNUSED pieces, byte fallback, a denormalizer),
  mostly made by appending protobuf fields, which protobuf merges,
* random id sequences (decoding only),
* synthetic models whose segmentations tie in real arithmetic, where only sentencepiece's
  exact float rounding (and, past a path score of 1e5, its re-basing of scores) decides.

The tool is found through ``$ONDEVICE_SPM`` or in the native build of tests/run_all.sh
(``build/cpp-native``); failing both, it is built into a temporary directory. The tests
skip only if it cannot be built.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

spm = pytest.importorskip("sentencepiece")
from sentencepiece import sentencepiece_model_pb2 as model_pb2  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "nmt-en-de-bcq" / "onnx" / "spm.model"
EVAL_DIR = ROOT / "models" / "nmt-en-de" / "eval"
_DEFAULT_TOOL = ROOT / "build" / "cpp-native" / "cpp_runtime" / "ondevice_spm"


def _executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


@pytest.fixture(scope="session")
def tool(tmp_path_factory) -> Path:
    env = os.environ.get("ONDEVICE_SPM")
    if env:
        if not _executable(Path(env)):
            pytest.fail(f"$ONDEVICE_SPM={env} is not an executable")
        return Path(env)
    if _executable(_DEFAULT_TOOL):
        return _DEFAULT_TOOL
    cmake = shutil.which("cmake")
    if cmake is None:
        pytest.skip(f"ondevice_spm not built (looked at {_DEFAULT_TOOL}) and no cmake to build it")
    build = tmp_path_factory.mktemp("spm-build")
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    steps = [[cmake, "-S", str(ROOT), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
              "-DONDEVICE_BUILD_TESTS=ON", "-DONDEVICE_BUILD_PYTHON=OFF"],
             [cmake, "--build", str(build), "--target", "ondevice_spm", "--parallel"]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"ondevice_spm could not be built ({' '.join(step[:2])}...):\n{done.stdout[-2000:]}"
                        f"{done.stderr[-2000:]}")
    path = build / "cpp_runtime" / "ondevice_spm"
    if not _executable(path):
        pytest.skip(f"ondevice_spm was not produced at {path}")
    return path


def _run(tool: Path, mode: str, model: Path, lines: list[bytes]) -> list[bytes]:
    assert all(b"\n" not in line for line in lines)
    data = b"".join(line + b"\n" for line in lines)
    done = subprocess.run([str(tool), mode, str(model)], input=data, capture_output=True, timeout=600)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    out = done.stdout.split(b"\n")
    assert out[-1] == b"" and len(out) - 1 == len(lines), (len(out), len(lines))
    return out[:-1]


def encode_cpp(tool: Path, model: Path, texts: list[str]) -> list[list[int]]:
    out = _run(tool, "encode", model, [t.encode("utf-8") for t in texts])
    return [[int(x) for x in line.split()] for line in out]


def decode_cpp(tool: Path, model: Path, ids: list[list[int]]) -> list[str]:
    out = _run(tool, "decode", model, [" ".join(map(str, i)).encode() for i in ids])
    return [line.decode("utf-8") for line in out]


def assert_identical(tool: Path, model: Path, texts: list[str]) -> None:
    """ids and decoded text of every text equal sentencepiece's (the first few differences shown)."""
    sp = spm.SentencePieceProcessor(model_file=str(model))
    expected = [sp.Encode(t, out_type=int) for t in texts]
    got = encode_cpp(tool, model, texts)
    diffs = [(t[:80], e[:30], g[:30]) for t, e, g in zip(texts, expected, got) if e != g]
    assert not diffs, f"{len(diffs)} of {len(texts)} texts differ, e.g. {diffs[:3]}"
    decoded = decode_cpp(tool, model, expected)
    ddiffs = [(e[:30], sp.Decode(e)[:80], d[:80]) for e, d in zip(expected, decoded) if sp.Decode(e) != d]
    assert not ddiffs, f"{len(ddiffs)} of {len(texts)} decodings differ, e.g. {ddiffs[:3]}"


def _read_lines(path: Path) -> list[str]:
    lines = path.read_bytes().decode("utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


# ---------------------------------------------------------------- the shipped model

@pytest.mark.parametrize("name", ["ci_bible.en", "ci_bible.de", "ci_ui.en", "ci_ui.de"])
def test_eval_subsets_identical(tool, name):
    lines = _read_lines(EVAL_DIR / name)
    assert len(lines) > 100
    assert_identical(tool, MODEL, lines)


TRICKY = [
    "", " ", "   ", "\t", "Hello world", "  leading", "trailing  ", "  both  ", "multiple    inner   spaces",
    "tabs\tand\t\ttabs", "\tlead tab", "cr\rinside", "nbsp\u00a0here", "en\u2002em\u2003thin\u2009spaces",
    "ideographic\u3000space", "line\u2028separator", "zero\u200bwidth\u200cjoin\u200dners", "\ufeffbom",
    "ＡＢＣ ａｂｃ １２３ ！？", "ｶﾀｶﾅ ﾊﾞﾋﾟ", "ﬁ ﬂ ﬀ ﬃ", "① ② ⑳ ㉑", "Ⅻ ⅻ Ⅳ", "x² H₂O ½ ¾", "™ ℃ № ℡ ㎏ ㍻", "…",
    "Cafe\u0301 nai\u0308ve re\u0301sume\u0301", "café naïve résumé", "Ä Ö Ü ä ö ü ß ẞ", "Tiếng Việt có dấu",
    "ǅ ǆ Ǳ", "\u2126 \u212b \u212a", "e\u0301\u0302\u0303\u0304 stacked", "\u0301 lone combining",
    "´ ¨ ¸ spacing accents", "😀 😃 👍🏽 👨\u200d👩\u200d👧 🇩🇪", "日本語のテキスト", "中文文本", "한국어 텍스트",
    "\u1100\u1161\u11a8 jamo", "العربية نص", "עברית", "हिन्दी पाठ", "ไทย", "Ελληνικά", "Русский текст",
    "control\x01\x02\x1f chars", "del\x7f", "nul\x00byte", "bell\x07", "esc\x1b[0m", "private\ue000use",
    "replacement\ufffd", "noncharacter\uffff", "astral\U0001F600\U00010348\U0010FFFF",
    "Open the Settings app, then tap “Wi‑Fi” — “Bluetooth” ‘quotes’ «guillemets» „German“",
    "URLs: https://example.com/a?b=c&d=e#f mail@example.org", "numbers 3.14159 1,000,000 -42 +7 1e-9",
    "code: if (x <= y && z != 0) { return a[i] ^ b; } // ~`|\\",
    "a" * 1000, "x" * 50000, "Donaudampfschifffahrtsgesellschaftskapitänswitwe" * 20,
    "The quick brown fox jumps over the lazy dog. " * 200,
]


def test_tricky_strings_identical(tool):
    assert_identical(tool, MODEL, TRICKY)


def test_random_text_identical(tool):
    rnd = random.Random(20240611)
    pool = [chr(c) for c in range(0x20, 0x7F)] * 6 + list("ﬁ①Ⅻ\u3000\u200b\u0301Ａ´\t\u00a0😀日本üéß ") * 3

    def char() -> str:
        if rnd.random() < 0.9:
            return rnd.choice(pool)
        c = rnd.randint(1, 0x10FFFF)
        while 0xD800 <= c < 0xE000 or c in (0x0A, 0x0D):
            c = rnd.randint(1, 0x10FFFF)
        return chr(c)

    texts = ["".join(char() for _ in range(rnd.choice([1, 2, 5, 20, 80, 300]))) for _ in range(3000)]
    assert_identical(tool, MODEL, texts)


def test_random_id_sequences_decode_identically(tool):
    # Any ids, not only encoder output: control pieces, unk runs, "▁" runs, pieces at the start.
    sp = spm.SentencePieceProcessor(model_file=str(MODEL))
    rnd = random.Random(7)
    ids = [[rnd.randrange(sp.GetPieceSize()) for _ in range(rnd.randint(0, 30))] for _ in range(2000)]
    ids += [[rnd.choice([0, 1, 2, 3, 5, 23, 472]) for _ in range(rnd.randint(0, 10))] for _ in range(2000)]
    got = decode_cpp(tool, MODEL, ids)
    diffs = [(i, sp.Decode(i), g) for i, g in zip(ids, got) if sp.Decode(i) != g]
    assert not diffs, f"{len(diffs)} of {len(ids)} decodings differ, e.g. {diffs[:3]}"


def test_shipped_model_copies_are_identical():
    assert (ROOT / "models" / "nmt-en-de" / "spm.model").read_bytes() == MODEL.read_bytes()


# ---------------------------------------------------------------- model variants

def _varint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _field_varint(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _field_bytes(number: int, value: bytes) -> bytes:
    return _varint((number << 3) | 2) + _varint(len(value)) + value


def _piece(text: str, kind: int) -> bytes:
    return _field_bytes(1, _field_bytes(1, text.encode()) + _field_varint(3, kind))


_VARIANTS = {
    "keep_whitespace": _field_bytes(3, _field_varint(4, 0)),
    "no_dummy_prefix": _field_bytes(3, _field_varint(3, 0)),
    "no_escape": _field_bytes(3, _field_varint(5, 0)),
    "whitespace_suffix": _field_bytes(2, _field_varint(24, 1)),
    "unk_surface": _field_bytes(2, _field_bytes(44, b"<?>")),
    "user_defined": b"".join(_piece(p, 4) for p in ["<sep>", "@@", "the", "und ", "▁und▁", "ﬁ", "日本"]),
    "unused": b"",  # filled in below: some NORMAL pieces re-typed UNUSED
    "denormalizer": b"",  # filled in below: the normalizer's rules applied to decoded text too
    "byte_fallback": b"".join(_piece(f"<0x{b:02X}>", 6) for b in range(256)) + _field_bytes(2, _field_varint(35, 1)),
}


@pytest.mark.parametrize("variant", sorted(_VARIANTS))
def test_model_variants_identical(tool, tmp_path, variant):
    data = MODEL.read_bytes()
    if variant == "unused":
        proto = model_pb2.ModelProto()
        proto.ParseFromString(data)
        for i in (5, 23, 100, 472, 1078):  # "▁the", "▁", ..., "x", "▁world"
            proto.pieces[i].type = model_pb2.ModelProto.SentencePiece.UNUSED
        data = proto.SerializeToString()
    elif variant == "denormalizer":
        proto = model_pb2.ModelProto()
        proto.ParseFromString(data)
        proto.denormalizer_spec.precompiled_charsmap = proto.normalizer_spec.precompiled_charsmap
        proto.denormalizer_spec.add_dummy_prefix = False
        data = proto.SerializeToString()
    else:
        data += _VARIANTS[variant]
    path = tmp_path / f"{variant}.model"
    path.write_bytes(data)
    texts = TRICKY[:60] + _read_lines(EVAL_DIR / "ci_ui.en")[:50] + _read_lines(EVAL_DIR / "ci_bible.de")[:50]
    texts += ["x<sep>y@@z the und ﬁsh 日本", "@@@ <sep><sep> thethe", "theund ▁und▁ und  und", "und und"]
    assert_identical(tool, path, texts)


# ---------------------------------------------------------------- exact ties

def _synthetic(path: Path, pieces: list[tuple[str, float, int]]) -> Path:
    proto = model_pb2.ModelProto()
    for text, score, kind in pieces:
        p = proto.pieces.add()
        p.piece, p.score, p.type = text, score, kind
    proto.trainer_spec.model_type = model_pb2.TrainerSpec.UNIGRAM
    proto.normalizer_spec.name = "identity"
    path.write_bytes(proto.SerializeToString())
    return path


_TIE_MODELS = {
    # every split of g^n scores the same in real arithmetic; float rounding decides
    "integer": ([("<unk>", 0, 2), ("▁", -1, 1), ("g", -1, 1), ("gg", -2, 1), ("ggg", -3, 1), ("h", -0.5, 1),
                 ("gh", -1.5, 1), ("hg", -1.5, 1)], "ggh "),
    "fraction": ([("<unk>", 0, 2), ("▁", -0.3, 1), ("g", -0.1, 1), ("gg", -0.2, 1), ("ggg", -0.3, 1),
                  ("gggg", -0.4, 1)], "g "),
    # USER_DEFINED pieces score (bytes - 1) * 0.1: "gg" ties with "g"+"g"
    "user_defined": ([("<unk>", 0, 2), ("▁", -1, 1), ("g", 0.05, 1), ("gg", 0, 4), ("h", 0.1, 1), ("ghg", 0, 4),
                      ("gh", 0.15, 1)], "ggh "),
    # path scores pass 1e5 within 14,000 characters: sentencepiece re-bases them
    "large": ([("<unk>", 0, 2), ("▁", -7.3, 1), ("g", -7.3, 1), ("gg", -14.6, 1), ("ggg", -21.9, 1),
               ("gggg", -29.2, 1), ("h", -3.65, 1), ("hg", -10.95, 1)], "gggh"),
}


@pytest.mark.parametrize("name", sorted(_TIE_MODELS))
def test_tied_segmentations_identical(tool, tmp_path, name):
    pieces, alphabet = _TIE_MODELS[name]
    path = _synthetic(tmp_path / f"{name}.model", pieces)
    rnd = random.Random(name)
    texts = ["".join(rnd.choice(alphabet) for _ in range(rnd.randint(1, 60))) for _ in range(2000)]
    texts += ["".join(rnd.choice(alphabet) for _ in range(30000)) for _ in range(3)]
    assert_identical(tool, path, texts)


# ---------------------------------------------------------------- errors

def test_tool_errors(tool, tmp_path):
    def run(args, data=b""):
        return subprocess.run([str(tool), *args], input=data, capture_output=True, timeout=60)

    bad_utf8 = run(["encode", str(MODEL)], b"fine\nbad \xff byte\n")
    assert bad_utf8.returncode == 1 and b"line 2" in bad_utf8.stderr and b"UTF-8" in bad_utf8.stderr
    assert bad_utf8.stdout.split(b"\n")[0] != b""  # the first line was written
    out_of_range = run(["decode", str(MODEL)], b"5 8000\n")
    assert out_of_range.returncode == 1 and b"8000" in out_of_range.stderr
    not_ids = run(["decode", str(MODEL)], b"5 x\n")
    assert not_ids.returncode == 1
    missing = run(["encode", str(tmp_path / "none.model")])
    assert missing.returncode == 1 and b"none.model" in missing.stderr
    garbage = tmp_path / "garbage.model"
    garbage.write_bytes(MODEL.read_bytes()[:1000])
    truncated = run(["encode", str(garbage)], b"x\n")
    assert truncated.returncode == 1 and b"invalid SentencePiece model" in truncated.stderr
    assert run(["encode"]).returncode == 2
    assert run(["frobnicate", str(MODEL)]).returncode == 2
