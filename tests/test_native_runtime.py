"""The native C++ runtime (``ondevice._core.Executor`` / ``Translator``, ``backend="native"``) against
onnxruntime and PyTorch: the operator set, graph outputs, translations, errors and thread safety."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from ondevice import _core  # noqa: E402
from ondevice.errors import DataError  # noqa: E402
from ondevice.onnx_export import export_nmt  # noqa: E402
from ondevice.onnx_export.errors import OnnxModelError  # noqa: E402
from ondevice.translator import Translator  # noqa: E402
from test_onnx_export import exported  # noqa: E402,F401  (the module-scoped fixture)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "models" / "nmt-en-de-bcq"
CI_SETS = ROOT / "models" / "nmt-en-de" / "eval"


def _ort_session(path: Path):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def _ops(path: Path) -> set[str]:
    m = onnx.load(str(path), load_external_data=False)
    return {(f"{n.domain}.{n.op_type}" if n.domain else n.op_type) for n in m.graph.node}


def _untrained_export(run: Path, out: Path, norm: str, d_model: int, heads: int) -> Path:
    """An export of an untrained model with grouped BCQ, offsets and float16 scales."""
    from ondevice.nmt.model import TransformerConfig, TransformerModel
    from ondevice.quant.packed_model import save_packed
    from ondevice.quant.plan import QuantPlan

    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=60, d_model=d_model, ffn_dim=40, heads=heads, encoder_layers=1,
                            decoder_layers=2, norm=norm, dropout=0.0)
    plan = QuantPlan.uniform(3, group_size=8, method="uniform", offset=True, alpha_dtype="float16")
    save_packed(TransformerModel(cfg).eval(), run / "spm.model", out / "packed", src="en", tgt="de", plan=plan)
    export_nmt(out / "packed", out / "onnx")
    return out / "onnx"


def test_supported_ops_are_exactly_what_the_exporter_emits(exported, tmp_path):  # noqa: F811
    """The executor runs the exporter's op set, no more and no less: quantized and fp32 exports, post-, pre-
    and peri-LN, an odd d_model (its padded sinusoidal embedding), grouped BCQ with offsets."""
    run, _, _, q, fp32 = exported
    dirs = [q, fp32, SHIPPED / "onnx", _untrained_export(run, tmp_path / "peri", "peri", 33, 3),
            _untrained_export(run, tmp_path / "pre", "pre", 32, 2)]
    emitted = set()
    for d in dirs:
        for g in ("encoder.onnx", "decoder_step.onnx"):
            emitted |= _ops(d / g)
    assert set(_core.Executor.supported_ops()) == emitted


def _decoder_feeds(enc_names, enc_out, dec_inputs, batch, past_len, rng):
    state = dict(zip(enc_names, enc_out))
    feeds = {"tokens": rng.integers(4, 50, size=(batch, 1)).astype(np.int64), "src_pad_mask": state["src_pad_mask"]}
    for name in dec_inputs:
        if name.startswith("cross"):
            feeds[name] = state[name]
        elif name.startswith("past"):
            heads, head_dim = state["cross_k.0"].shape[1], state["cross_k.0"].shape[3]
            feeds[name] = rng.standard_normal((batch, heads, past_len, head_dim)).astype(np.float32)
    return feeds


@pytest.mark.parametrize("which", ["quantized", "fp32", "shipped"])
def test_graph_outputs_match_onnxruntime(exported, which):  # noqa: F811
    """Every output of both graphs, native vs onnxruntime, on padded batches and a non-empty cache: the
    exact ("reference") kernel to 1e-4, the default two-pass LUT kernel close to it."""
    _, _, _, q, fp32 = exported
    d = {"quantized": q, "fp32": fp32, "shipped": SHIPPED / "onnx"}[which]
    rng = np.random.default_rng(0)
    src = rng.integers(4, 50, size=(3, 7)).astype(np.int64)
    src[:, -1] = 2
    src[1, 4:] = 1  # padding
    src[1, 3] = 2
    oenc, odec = _ort_session(d / "encoder.onnx"), _ort_session(d / "decoder_step.onnx")
    for kernel, tol in (("reference", 1e-4), ("", 2e-3)):
        enc = _core.Executor(str(d / "encoder.onnx"), 1, kernel)
        ref = oenc.run(enc.output_names, {"src_tokens": src})
        got = enc.run({"src_tokens": src})
        for name, a, b in zip(enc.output_names, got, ref):
            assert a.shape == b.shape and a.dtype == b.dtype, name
            np.testing.assert_allclose(a, b, atol=tol, rtol=0, err_msg=f"{which} {kernel} {name}")
        dec = _core.Executor(str(d / "decoder_step.onnx"), 1, kernel)
        feeds = _decoder_feeds(enc.output_names, ref, dec.input_names, 3, 4, rng)
        for name, a, b in zip(dec.output_names, dec.run(feeds), odec.run(dec.output_names, feeds)):
            np.testing.assert_allclose(a, b, atol=tol * 10, rtol=0, err_msg=f"{which} {kernel} {name}")


def test_native_translations_equal_pytorch_and_onnxruntime(exported):  # noqa: F811
    _, data, packed, q, fp32 = exported
    sentences = (data / "test_bible.en").read_text(encoding="utf-8").splitlines() + ["", "  "]
    for beam in (1, 4):
        by_torch = Translator(packed, threads=1, backend="torch", beam_size=beam).translate_batch(sentences)
        assert Translator(q, threads=1, backend="native", beam_size=beam).translate_batch(sentences) == by_torch
    by_ort = Translator(fp32, threads=1, backend="onnxruntime", beam_size=4).translate_batch(sentences)
    assert Translator(fp32, threads=2, backend="native", beam_size=4).translate_batch(sentences) == by_ort


@pytest.mark.parametrize("norm,d_model,heads", [("pre", 32, 2), ("peri", 33, 3)])
def test_native_handles_norms_groups_offsets(exported, tmp_path, norm, d_model, heads):  # noqa: F811
    """Pre-/Peri-LN, K not a multiple of 8, grouped BCQ with offsets and float16 scales (untrained weights,
    so the logits of one decoder step, against onnxruntime)."""
    d = _untrained_export(exported[0], tmp_path, norm, d_model, heads)
    rng = np.random.default_rng(1)
    src = np.array([[5, 9, 11, 2], [7, 2, 1, 1]], dtype=np.int64)
    oenc, odec = _ort_session(d / "encoder.onnx"), _ort_session(d / "decoder_step.onnx")
    enc = _core.Executor(str(d / "encoder.onnx"), 1, "reference")
    ref = oenc.run(enc.output_names, {"src_tokens": src})
    for a, b in zip(enc.run({"src_tokens": src}), ref):
        np.testing.assert_allclose(a, b, atol=1e-4, rtol=0)
    dec = _core.Executor(str(d / "decoder_step.onnx"), 1, "reference")
    feeds = _decoder_feeds(enc.output_names, ref, dec.input_names, 2, 3, rng)
    np.testing.assert_allclose(dec.run(feeds)[0], odec.run(["logits"], feeds)[0], atol=1e-4, rtol=0)


def _bleu(hyps: list[str], refs: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(hyps, [refs]).score


@pytest.mark.parametrize("subset", ["ci_ui", "ci_bible"])
def test_shipped_model_native_vs_torch_on_held_out_subsets(subset):
    """Issue 7's correctness bar on the committed held-out subsets: greedy outputs identical for >= 99 % of
    sentences and BLEU within 0.1 (measured on all of test_ui: 856/856 identical)."""
    src = (CI_SETS / f"{subset}.en").read_text(encoding="utf-8").splitlines()
    ref = (CI_SETS / f"{subset}.de").read_text(encoding="utf-8").splitlines()
    native = Translator(SHIPPED, threads=2, backend="native", beam_size=1).translate_batch(src)
    by_torch = Translator(SHIPPED, threads=2, backend="torch", beam_size=1).translate_batch(src)
    same = sum(a == b for a, b in zip(native, by_torch))
    assert same >= 0.99 * len(src), f"{same}/{len(src)} identical"
    assert abs(_bleu(native, ref) - _bleu(by_torch, ref)) <= 0.1


def test_default_translator_is_native_and_errors_are_typed(tmp_path):
    tr = Translator(threads=1, beam_size=1)
    assert tr.backend == "native"
    out = tr.translate_batch(["The house is small.", "", "Unknown state"])
    assert out[1] == "" and out[0].startswith("Das Haus")
    with pytest.raises(DataError, match="tokens long"):
        tr.translate_batch(["house " * 1500])
    with pytest.raises(DataError, match="not an ONNX export"):
        Translator(tmp_path, backend="native")
    bad = tmp_path / "bad"
    shutil.copytree(SHIPPED / "onnx", bad)
    data = bytearray((bad / "weights.bin").read_bytes())
    data[5000] ^= 0x40
    (bad / "weights.bin").write_bytes(bytes(data))
    with pytest.raises(OnnxModelError, match="sha256"):
        Translator(bad, backend="native")
    (bad / "weights.bin").write_bytes(bytes(data[:1000]))
    with pytest.raises(OnnxModelError, match="bytes"):
        Translator(bad, backend="native")
    (bad / "manifest.json").write_text("{")
    with pytest.raises(OnnxModelError, match="manifest.json"):
        Translator(bad, backend="native")


def test_native_translator_shared_by_threads_equals_sequential():
    tr = Translator(threads=1, beam_size=2)
    sentences = ["The house is small.", "Open the file.", "And God said, Let there be light.", "Unknown state"]
    expected = [tr.translate_batch([s]) for s in sentences]
    results: dict[int, list[str]] = {}

    def work(k: int) -> None:
        results[k] = tr.translate_batch([sentences[k % len(sentences)]])

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(results[k] == expected[k % len(sentences)] for k in range(8))


def test_cli_translates_with_the_native_default():
    r = subprocess.run([sys.executable, "-m", "ondevice", "translate", "--beam", "1", "The house is small."],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == Translator(beam_size=1).translate("The house is small.")


def test_bench_profile_reports_time_per_operator(tmp_path):
    from ondevice.bench.profile import profile_native, read_sentences, write_profile

    sentences = read_sentences(CI_SETS / "ci_bible.en", 3)
    rows = profile_native(SHIPPED / "onnx", sentences, [(1, 1, 1), (1, 2, 2)])
    for r in rows:
        ops = {o["op"]: o for o in r["ops"]}
        assert ops["ondevice.BitPlaneMatMul"]["calls"] > 0 and ops["ondevice.BitPlaneMatMul"]["seconds"] > 0
        assert 0 < r["graph_s"] <= r["wall_s"]
    md = write_profile(rows, tmp_path, command="test").read_text(encoding="utf-8")
    assert "ondevice.BitPlaneMatMul" in md and "outside graphs" in md
    assert (tmp_path / "translate_profile.json").is_file()
