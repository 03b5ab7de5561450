"""The bad-input table (docs/bad-input.md), one test per row: what a user gets from the Python API
(``ondevice.Translator``, native backend, and the C++ core's own errors through ``ondevice._core``)
and from the CLI (``python -m ondevice translate``) for corrupt model directories and bad text.

Every model-directory case works on a copy of the shipped export (models/nmt-en-de-bcq/onnx) in a
tmp dir. Where a case changes a file on purpose and wants the reader, not the manifest check, to
see the change, the manifest's size and sha256 entries are rewritten to match (``_refresh``).
Rows covered elsewhere: a flipped weights byte (sha256), truncated weights and a truncated manifest
through the API in test_native_runtime.py::test_default_translator_is_native_and_errors_are_typed;
more tokens than the model's positions in the same test; invalid UTF-8 in files through the API in
test_translator.py::test_file_translation_and_invalid_utf8; the C++ side in
cpp_runtime/tests/test_runtime.cc (translator_rejects_corrupt_model_directories) and the fuzz
targets (cpp_runtime/fuzz).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ondevice import _core
from ondevice.errors import DataError, OndeviceError
from ondevice.onnx_export.errors import OnnxModelError
from ondevice.translator import MAX_INPUT_CHARS, Translator

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "nmt-en-de-bcq" / "onnx"
SENTENCE = "The house is small."

pytestmark = pytest.mark.skipif(not (SHIPPED / "manifest.json").is_file(), reason="no shipped ONNX export")


# --- helpers -------------------------------------------------------------------------------------

def _copy(tmp_path: Path, name: str = "model") -> Path:
    d = tmp_path / name
    shutil.copytree(SHIPPED, d)
    return d


def _manifest(d: Path) -> dict:
    return json.loads((d / "manifest.json").read_text())


def _write_manifest(d: Path, m: dict) -> None:
    (d / "manifest.json").write_text(json.dumps(m, indent=1))


def _refresh(d: Path) -> None:
    """Rewrites the manifest's size and sha256 of every file to match the files as they are now."""
    m = _manifest(d)
    for f in m["files"]:
        data = (d / f["path"]).read_bytes()
        f["size"], f["sha256"] = len(data), hashlib.sha256(data).hexdigest()
    _write_manifest(d, m)


def _load(d: Path) -> Translator:
    return Translator(d, threads=1, beam_size=1)


def _cli(*args: str, model: Path | None = None, stdin: bytes | None = None, limit_as: int | None = None,
         timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m ondevice translate` (greedy, one thread); `limit_as`: RLIMIT_AS in bytes."""
    cmd = [sys.executable, "-m", "ondevice", "translate", "--beam", "1", "--threads", "1"]
    if model is not None:
        cmd += ["--model", str(model)]

    def limit():  # runs in the child before exec
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit_as, limit_as))

    return subprocess.run(cmd + list(args), input=stdin, capture_output=True, timeout=timeout,
                          preexec_fn=limit if limit_as else None)


def _cli_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    """Asserts a clean CLI failure: exit 1, 'ondevice: error: ...' naming each needle, no traceback."""
    err = r.stderr.decode("utf-8", "replace")
    assert r.returncode == 1, (r.returncode, err)
    assert "ondevice: error:" in err and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


def _api_error(d: Path, match: str) -> str:
    """Loading (and, if that works, translating with) `d` raises a typed error matching `match`."""
    with pytest.raises(OnnxModelError, match=match) as e:
        _load(d).translate(SENTENCE)
    return str(e.value)


def _onnx():
    return pytest.importorskip("onnx")


def _external(d: Path, graph: str = "encoder.onnx") -> dict[str, dict[str, str]]:
    """External-data entries ({"location", "offset", "length"}) of the graph's initializers, by name."""
    m = _onnx().load(str(d / graph), load_external_data=False)
    return {t.name: {e.key: e.value for e in t.external_data} for t in m.graph.initializer if t.data_location == 1}


def _edit_graph(d: Path, edit, graph: str = "encoder.onnx") -> None:
    onnx = _onnx()
    m = onnx.load(str(d / graph), load_external_data=False)
    edit(m)
    onnx.save(m, str(d / graph))
    _refresh(d)


def _poke_float(d: Path, offset: int, value: float) -> None:
    with open(d / "weights.bin", "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<f", value))
    _refresh(d)


# --- model directories ---------------------------------------------------------------------------

def test_truncated_files(tmp_path):
    """A truncated file: the manifest's size check names it; with the manifest made to match, the
    reader of that format reports where its data ends (ONNX graph, tokenizer, weights, manifest)."""
    cases = {}
    d = cases["weights"] = _copy(tmp_path, "weights")
    (d / "weights.bin").write_bytes((SHIPPED / "weights.bin").read_bytes()[:100_000])
    assert "the manifest says" in _api_error(d, "weights.bin: 100000 bytes")
    for name, file, match in [("graph", "encoder.onnx", "encoder.onnx: invalid ONNX model"),
                              ("tokenizer", "spm.model", "spm.model: invalid SentencePiece model"),
                              ("weights_refreshed", "weights.bin", "lie beyond the end of 'weights.bin'")]:
        d = cases[name] = _copy(tmp_path, name)
        data = (d / file).read_bytes()
        (d / file).write_bytes(data[: len(data) // 2])
        _refresh(d)
        _api_error(d, match)
        with pytest.raises(_core.FormatError):  # the C++ error underneath
            _core.Translator(str(d), threads=1)
    d = cases["manifest"] = _copy(tmp_path, "manifest")
    (d / "manifest.json").write_text((SHIPPED / "manifest.json").read_text()[:500])
    _api_error(d, "manifest.json: JSON error at byte 500")
    for name, needle in [("weights", "the manifest says"), ("graph", "invalid ONNX model"),
                         ("tokenizer", "invalid SentencePiece model"), ("manifest", "JSON error")]:
        _cli_error(_cli(SENTENCE, model=cases[name]), needle)


def test_flipped_bytes(tmp_path):
    """A flipped byte: sha256 differs from the manifest. With the manifest made to match (a file
    corrupted before its manifest was written), random bit flips in a graph, the tokenizer or the
    weights give a typed error or a translation, never a crash (run in child processes)."""
    d = _copy(tmp_path, "sha")
    data = bytearray((d / "encoder.onnx").read_bytes())
    data[1000] ^= 0x10
    (d / "encoder.onnx").write_bytes(bytes(data))
    _api_error(d, "encoder.onnx: sha256 differs from the manifest")
    _cli_error(_cli(SENTENCE, model=d), "sha256 differs")
    rng = random.Random(10)
    dirs = []
    for k, file in enumerate(["encoder.onnx", "decoder_step.onnx", "spm.model", "weights.bin"] * 2):
        d = _copy(tmp_path, f"flip{k}")
        data = bytearray((d / file).read_bytes())
        for _ in range(8):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        (d / file).write_bytes(bytes(data))
        _refresh(d)
        dirs.append(d)
    code = textwrap.dedent(f"""
        import sys
        from ondevice.errors import OndeviceError
        from ondevice.translator import Translator
        for d in {[str(d) for d in dirs]!r}:
            try:
                out = Translator(d, threads=1, beam_size=2).translate_batch([{SENTENCE!r}, "Open the file."])
                print(d, "translated", len(out))
            except OndeviceError as e:
                print(d, "error", type(e).__name__, str(e)[:200])
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert len(r.stdout.splitlines()) == len(dirs), r.stdout
    r = _cli(SENTENCE, model=dirs[0])
    assert r.returncode in (0, 1) and b"Traceback" not in r.stderr, r.stderr


def test_wrong_op_version(tmp_path):
    """A graph importing an op-set version this runtime does not run (ondevice 2, ai.onnx 11)."""
    def set_opset(domain, version):
        def edit(m):
            for o in m.opset_import:
                if o.domain == domain:
                    o.version = version
        return edit

    ondevice2 = _copy(tmp_path, "ondevice2")
    _edit_graph(ondevice2, set_opset("ondevice", 2))
    _api_error(ondevice2, "imports ondevice opset 2; this runtime runs version 1")
    _cli_error(_cli(SENTENCE, model=ondevice2), "ondevice opset 2")
    onnx11 = _copy(tmp_path, "onnx11")
    _edit_graph(onnx11, set_opset("", 11), graph="decoder_step.onnx")
    _api_error(onnx11, "decoder_step.onnx: the model imports ai.onnx opset 11; this runtime runs 14..18")
    _cli_error(_cli(SENTENCE, model=onnx11), "ai.onnx opset 11")
    # The manifest's "opsets" entry is informational: the graphs' own imports decide.
    informational = _copy(tmp_path, "manifest_opsets")
    m = _manifest(informational)
    m["opsets"]["ondevice"] = 2
    _write_manifest(informational, m)
    assert _load(informational).translate(SENTENCE) == _load(SHIPPED).translate(SENTENCE)


def test_unknown_op(tmp_path):
    d = _copy(tmp_path)

    def edit(m):
        next(n for n in m.graph.node if n.op_type == "Relu").op_type = "Gelu"

    _edit_graph(d, edit)
    msg = _api_error(d, "operator Gelu is not supported by this runtime")
    assert "it runs: Add," in msg  # the error lists what it does run
    _cli_error(_cli(SENTENCE, model=d), "operator Gelu is not supported")


@pytest.mark.parametrize("case", ["vocab_size", "kv_cache", "swapped_graphs", "file_size", "path_escape",
                                  "format_version", "missing_key"])
def test_mismatched_manifest(tmp_path, case):
    """A manifest that does not describe its files: each disagreement is named."""
    d = _copy(tmp_path)
    m = _manifest(d)
    if case == "vocab_size":
        m["vocab_size"] = 8001
        match = "the tokenizer has 8000 pieces, the model 8001"
    elif case == "kv_cache":
        m["kv_cache"]["cross_k"][0] = "cross_k.9"
        match = "the encoder graph has no output 'cross_k.9'"
    elif case == "swapped_graphs":
        m["graphs"]["encoder"]["file"] = "decoder_step.onnx"
        match = "the encoder graph has no input 'src_tokens'"
    elif case == "file_size":
        next(f for f in m["files"] if f["path"] == "spm.model")["size"] += 1
        match = "spm.model: 380479 bytes, the manifest says 380480"
    elif case == "path_escape":
        m["tokenizer"] = "../spm.model"
        match = "'../spm.model' is not a file name inside the model directory"
    elif case == "format_version":
        m["format_version"] = "2.0"
        match = "format_version 2.0 is not supported"
    else:
        del m["special_ids"]
        match = "missing key 'special_ids'"
    _write_manifest(d, m)
    _api_error(d, match)
    _cli_error(_cli(SENTENCE, model=d), match)


def test_nan_in_weights(tmp_path):
    """NaN in a bit-plane scale (alpha) is rejected at load by the matrix validation (finite scales).
    NaN in an fp32 LayerNorm weight is not validated at load; translating then fails cleanly when
    the NaN reaches the next bit-plane kernel's input check (a DataError), never a crash."""
    ext = _external(SHIPPED)
    alpha = "encoder.layers.0.self_attn.k_proj.weight.alpha"
    nan_alpha = _copy(tmp_path, "nan_alpha")
    _poke_float(nan_alpha, int(ext[alpha]["offset"]) + 4 * 3, float("nan"))
    msg = _api_error(nan_alpha, "invalid bit-plane matrix: alpha\\[3\\] is not finite")
    assert "encoder.onnx" in msg and "BitPlaneMatMul" in msg
    with pytest.raises(_core.FormatError, match="not finite"):
        _core.Translator(str(nan_alpha), threads=1)
    _cli_error(_cli(SENTENCE, model=nan_alpha), "is not finite")

    ln = "encoder.layers.0.self_attn_layer_norm.weight"
    nan_ln = _copy(tmp_path, "nan_layernorm")
    _poke_float(nan_ln, int(ext[ln]["offset"]), float("nan"))
    tr = _load(nan_ln)  # loads: fp32 weights are not scanned
    with pytest.raises(DataError, match="non-finite"):
        tr.translate(SENTENCE)
    assert tr.translate("") == ""  # nothing to run, nothing fails
    with pytest.raises(_core.ArgumentError, match="non-finite"):
        tr._native.translate_batch([SENTENCE], beam_size=1)
    _cli_error(_cli(SENTENCE, model=nan_ln), "non-finite")


def test_model_file_too_large_to_map(tmp_path):
    """A weights file larger than the process may map (here: a sparse 64 GiB file under a 4 GiB
    RLIMIT_AS, as `ulimit -v` sets it) is a clean error naming the file, not a crash."""
    d = _copy(tmp_path)
    huge = 64 << 30
    with open(d / "weights.bin", "r+b") as f:
        f.truncate(huge)  # sparse: no disk space used
    m = _manifest(d)
    next(f for f in m["files"] if f["path"] == "weights.bin")["size"] = huge
    _write_manifest(d, m)
    code = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
        from ondevice.onnx_export.errors import OnnxModelError
        from ondevice.translator import Translator
        try:
            Translator({str(d)!r}, threads=1)
        except OnnxModelError as e:
            print("OnnxModelError:", e)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OnnxModelError: cannot map" in r.stdout and "weights.bin" in r.stdout, r.stdout
    _cli_error(_cli(SENTENCE, model=d, limit_as=4 << 30), "cannot map", "weights.bin")


# --- text ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tr():
    return Translator(threads=1, beam_size=1)


def test_empty_text(tr):
    assert tr.translate("") == "" and tr.translate(" \t ") == ""
    assert tr.translate_batch(["", SENTENCE, "   "])[::2] == ["", ""]
    assert tr.translate_batch([]) == []
    r = _cli("", stdin=None)
    assert r.returncode == 0 and r.stdout == b"\n", r.stderr
    r = _cli(stdin=b"\n" + SENTENCE.encode() + b"\n\n")
    lines = r.stdout.decode().split("\n")
    assert r.returncode == 0 and len(lines) == 4 and lines[0] == lines[2] == lines[3] == "" and lines[1], r.stderr
    r = _cli(stdin=b"")
    assert r.returncode == 0 and r.stdout == b""


def test_100k_character_line(tr):
    """Over the Python API's 20,000-character limit: DataError before tokenizing. The C++ core's own
    limits: 1 MiB of UTF-8 per line, then the model's 1024 positions."""
    line = ("The house is small. " * 5000)[:100_000]
    with pytest.raises(DataError, match=f"100,000 characters, more than the limit of {MAX_INPUT_CHARS:,}"):
        tr.translate(line)
    with pytest.raises(_core.ArgumentError, match="more than the model's 1024 positions"):
        tr._native.translate_batch([line], beam_size=1)
    with pytest.raises(_core.ArgumentError, match="input of 1048577 bytes is longer than the limit of 1048576"):
        tr._native.translate_batch(["a" * (1 << 20) + "b"], beam_size=1)
    _cli_error(_cli(line), "100,000 characters")
    _cli_error(_cli(stdin=line.encode() + b"\n"), "100,000 characters")


def test_control_characters(tr):
    """Control characters are text like any other: translated, never an error; a file keeps its line
    count (lines end at \\n only: form feed, \\x1c-\\x1e, NEL, U+2028 stay inside their line)."""
    texts = ["The house\x00 is\x07 small.\x1b[31m", "\x00\x01\x02", "Open\x0cthe\x1cfile.\x85\u2028",
             "\u200b\u202eThe house\ufeff"]
    out = tr.translate_batch(texts)
    assert len(out) == len(texts) and all(isinstance(t, str) for t in out)
    # The C++ core directly, on the raw strings (the Python API first folds Python's whitespace,
    # \x0c \x1c \x85 \u2028 included, into single spaces, so its results may differ here).
    raw = tr._native.translate_batch(texts, beam_size=1)
    assert len(raw) == len(texts) and all(isinstance(t, str) for t in raw)
    r = _cli(stdin="\n".join(texts).encode() + b"\r\n" + SENTENCE.encode() + b"\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().split("\n")[:-1] == tr.translate_batch(texts + [SENTENCE])
    r = _cli("The house\x07 is\x1b[31m small.\x7f")  # (an argument cannot hold NUL)
    assert r.returncode == 0 and r.stdout.decode().count("\n") == 1, r.stderr


def test_invalid_utf8(tr, tmp_path):
    """Bytes that are not UTF-8: a DataError naming the line (files, stdin); a Python string that
    cannot be UTF-8 (lone surrogates, which is what a non-UTF-8 command-line argument becomes) is a
    DataError too, not a TypeError from the binding."""
    with pytest.raises(DataError, match="sentence 1 is not valid UTF-8"):
        tr.translate_batch([SENTENCE, "The \udcff house"])
    src = tmp_path / "in.txt"
    src.write_bytes(SENTENCE.encode() + b"\nThe \xff house\n")
    with pytest.raises(DataError, match="line 2 is not valid UTF-8"):
        tr.translate_file(src, tmp_path / "out.txt", progress=False)
    _cli_error(_cli(stdin=b"ok\n\xc3\x28 bad\n"), "stdin: line 2 is not valid UTF-8")
    _cli_error(_cli("-i", str(src)), "line 2 is not valid UTF-8")
    r = subprocess.run([sys.executable, "-m", "ondevice", "translate", "--beam", "1", "--threads", "1",
                        os.fsdecode(b"The \xff house")], capture_output=True, timeout=300)
    _cli_error(r, "sentence 0 is not valid UTF-8")


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_memory_stays_bounded_on_long_inputs():
    """Peak RSS of translating a ~1000-token line vs a ~10-token one (beam 4, one thread), each in a
    fresh process: bounded by the 1024-token limit (docs/bad-input.md records the numbers)."""
    code = textwrap.dedent("""
        import sys
        from ondevice.translator import Translator
        n = int(sys.argv[1])
        tr = Translator(threads=1, beam_size=4)
        words = "The house is small and the garden is green .".split()
        text, i = "", 0
        while len(tr._native.encode(text + " " + words[i % len(words)])) <= n:
            text, i = (text + " " + words[i % len(words)]).strip(), i + 1
        k = len(tr._native.encode(text))
        out = tr.translate(text)
        # VmHWM: the peak RSS of this process image (ru_maxrss would include the forking parent's).
        hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
        print(k, hwm // 1024, len(out.split()))
    """)
    peaks = {}
    for n in (10, 1000):
        r = subprocess.run([sys.executable, "-c", code, str(n)], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        tokens, peak_mib, words = map(int, r.stdout.split())
        assert n - 12 <= tokens <= n and words > 0, r.stdout
        peaks[n] = peak_mib
    print("peak RSS MiB:", peaks)
    assert peaks[1000] < 400, peaks  # measured 88 MiB (10 tokens: 38 MiB)
    assert peaks[1000] - peaks[10] < 300, peaks


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")
def test_huge_input_is_streamed_not_read_whole(tmp_path):
    """`translate -i FILE` (stdout or -o) and stdin are read line by line: a 60 MB file whose last
    line is not UTF-8 is refused (before any translation: nothing is printed) and a 60 MB line on
    stdin is refused with its length, each with a peak RSS within 40 MiB of the same command on a
    few bytes (reading such input whole took 60 MB of bytes plus 60 MB of text, and more)."""
    code = textwrap.dedent("""
        import sys
        from ondevice.cli import main
        rc = main(sys.argv[1:])
        hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
        print(rc, hwm // 1024, file=sys.stderr)
    """)

    def peak(args: list[str], stdin: bytes | None = None) -> tuple[int, str, bytes]:
        r = subprocess.run([sys.executable, "-c", code, "translate", "--beam", "1", "--threads", "1", *args],
                           input=stdin, capture_output=True, timeout=600)
        err = r.stderr.decode()
        rc, mib = map(int, err.strip().split("\n")[-1].split())
        assert r.returncode == 0 and rc == 1 and "Traceback" not in err, err
        return mib, err, r.stdout

    big, small = tmp_path / "big.txt", tmp_path / "small.txt"
    line = (b"The house is small and the garden is green. " * 23)[:999] + b"\n"
    big.write_bytes(line * 60_000 + b"bad \xff\n")
    small.write_bytes(b"bad \xff\n")
    base, _, _ = peak(["-i", str(small)])
    for args in (["-i", str(big)], ["-i", str(big), "-o", str(tmp_path / "o.txt")]):
        mib, err, out = peak(args)
        assert "big.txt: line 60001 is not valid UTF-8" in err and out == b"", err
        assert mib - base < 40, (args, mib, base)
    assert not (tmp_path / "o.txt").exists()
    mib, err, out = peak([], stdin=b"a" * 60_000_000)
    assert "stdin: line 1 has 60,000,000 characters, more than the limit of 20,000" in err and out == b"", err
    assert mib - base < 40, (mib, base)


def test_errors_are_one_type():
    """Everything above is catchable as OndeviceError (and ValueError), as the table says."""
    assert issubclass(OnnxModelError, OndeviceError) and issubclass(OnnxModelError, ValueError)
    assert issubclass(DataError, OndeviceError) and issubclass(DataError, ValueError)
    assert issubclass(_core.FormatError, ValueError) and issubclass(_core.ArgumentError, ValueError)
