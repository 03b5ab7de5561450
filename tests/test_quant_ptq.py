"""Post-training BCQ quantization of a trained tiny NMT model, and the per-sublayer sensitivity table."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")


from ondevice.errors import ConfigError  # noqa: E402
from ondevice.quant.plan import QuantPlan, classify  # noqa: E402

EVAL = dict(split="test_bible", src="en", tgt="de", beam=1, progress=False)


@pytest.fixture(scope="module")
def trained(tiny_trained_run):
    """The shared tiny trained model and its fp32 score."""
    from ondevice.nmt.evaluate import evaluate

    run, data = tiny_trained_run
    fp32 = evaluate(run, data, **EVAL)
    assert fp32["bleu"] > 50, fp32
    return run, data, fp32


def _state(run, name):
    return torch.load(run / name, map_location="cpu", weights_only=False)


def test_ptq_quality_checkpoint_and_report(trained):
    from ondevice.nmt.evaluate import evaluate, load_model
    from ondevice.quant.ptq import post_training_quantize

    run, data, fp32 = trained
    meta4 = post_training_quantize(run, QuantPlan.uniform(4), out_checkpoint_name="ptq4.pt")
    meta1 = post_training_quantize(run, QuantPlan.uniform(1))  # default name checkpoint_ptq.pt
    b4 = evaluate(run, data, checkpoint="ptq4.pt", **EVAL)["bleu"]
    b1 = evaluate(run, data, checkpoint="checkpoint_ptq.pt", **EVAL)["bleu"]
    assert b4 >= fp32["bleu"] - 8, (b4, fp32)  # 4-bit PTQ is nearly lossless
    assert b1 < b4 - 10, (b1, b4)  # 1-bit PTQ without retraining clearly hurts

    # The json next to the checkpoint: plan, average bits, honest size report.
    for name, meta, bits in (("ptq4.pt", meta4, 4), ("checkpoint_ptq.pt", meta1, 1)):
        on_disk = json.loads((run / (name + ".json")).read_text())
        assert on_disk == json.loads(json.dumps(meta))
        assert QuantPlan.from_dict(on_disk["plan"]) == QuantPlan.uniform(bits)
        assert on_disk["average_bits"] == pytest.approx(bits)
        rep = on_disk["size_report"]
        assert rep["compression_ratio"] > 1 and rep["total_bytes"] < rep["fp32_bytes"]
    assert meta1["size_report"]["compression_ratio"] > meta4["size_report"]["compression_ratio"]

    # The checkpoint loads like a training checkpoint; only the assigned matrices changed.
    model, _ = load_model(run, "ptq4.pt")
    assert model.config.d_model == 64
    ref, q = _state(run, "checkpoint_best.pt")["model"], _state(run, "ptq4.pt")["model"]
    assert ref.keys() == q.keys()
    quantized = set(meta4["quantized"])
    assert "encoder.embed_tokens.weight" in quantized and "decoder.layers.1.fc2.weight" in quantized
    changed = {k for k in ref if not torch.equal(ref[k], q[k])}
    assert quantized <= changed
    for k in ref:
        module = k.rsplit(".", 1)[0]
        if k.endswith(".bias") or classify(module) is None:  # biases, LayerNorms, positional buffers
            assert torch.equal(ref[k], q[k]), k
        else:
            assert k in changed, k  # every Linear / embedding weight (aliases of the tied one included)


def test_ptq_matrices_are_really_bcq(trained):
    from ondevice.quant.ptq import post_training_quantize

    run, _, _ = trained
    plan = QuantPlan.uniform(2, group_size=16, method="greedy")
    meta = post_training_quantize(run, plan, out_checkpoint_name="ptq2g.pt")
    ref, q = _state(run, "checkpoint_best.pt")["model"], _state(run, "ptq2g.pt")["model"]
    for name in meta["quantized"]:
        w = q[name].numpy()
        rows, cols = w.shape
        g = w.reshape(rows, cols // 16, 16)
        distinct = max(len(np.unique(g[r, j])) for r in range(rows) for j in range(cols // 16))
        assert distinct <= 2 ** 2, (name, distinct)
        orig = ref[name].numpy().reshape(rows, cols // 16, 16)
        assert max(len(np.unique(orig[r, j])) for r in range(rows) for j in range(cols // 16)) > 4  # fp32 is not
        err = np.abs(w - ref[name].numpy()).mean() / np.abs(ref[name].numpy()).mean()
        assert err < 0.6, (name, err)  # an approximation of the original, not noise


def test_ptq_frequency_cluster_plan_needs_frequencies(trained):
    from ondevice.quant.ptq import post_training_quantize

    run, data, _ = trained
    plan = QuantPlan.uniform(3).replace(embedding={"ratio": 2, "bits": [4, 3, 2, 1]})
    with pytest.raises(ConfigError, match="frequencies_from"):
        post_training_quantize(run, plan, out_checkpoint_name="ptqf.pt")
    assert not (run / "ptqf.pt").exists()
    meta = post_training_quantize(run, plan, out_checkpoint_name="ptqf.pt",
                                  frequencies_from=(data, "train", ["en", "de"]))
    assert 1 < meta["average_bits"] < 4 and meta["frequencies_from"]["langs"] == ["en", "de"]
    emb = _state(run, "ptqf.pt")["model"]["encoder.embed_tokens.weight"].numpy()
    per_row = [len(np.unique(r)) for r in emb]
    assert max(per_row) <= 16 and min(per_row) <= 2  # rows at 4 bits ... rows at 1 bit
    with pytest.raises(ConfigError):
        post_training_quantize(run, QuantPlan.uniform(2), checkpoint="checkpoint_best.pt",
                               out_checkpoint_name="checkpoint_best.pt")
    # Another file of the model directory is never overwritten: only an earlier PTQ output (its .json
    # record beside it) is; the name must be a checkpoint's.
    (run / "notes.pt").write_bytes(b"not ours")
    with pytest.raises(ConfigError, match="notes.pt exists and is not an earlier `quantize nmt` output"):
        post_training_quantize(run, QuantPlan.uniform(2), out_checkpoint_name="notes.pt")
    assert (run / "notes.pt").read_bytes() == b"not ours"
    (run / "notes.pt").unlink()
    (run / "qat_final.pt").write_bytes(b"a QAT result")  # its record has phases: not PTQ's
    (run / "qat_final.pt.json").write_text(json.dumps({"checkpoint": "qat_final.pt", "source_checkpoint": "x",
                                                       "phases": []}))
    with pytest.raises(ConfigError, match="not an earlier `quantize nmt` output"):
        post_training_quantize(run, QuantPlan.uniform(2), out_checkpoint_name="qat_final.pt")
    assert (run / "qat_final.pt").read_bytes() == b"a QAT result"
    with pytest.raises(ConfigError, match="must end in .pt"):
        post_training_quantize(run, QuantPlan.uniform(2), out_checkpoint_name="spm.model")
    post_training_quantize(run, QuantPlan.uniform(2), out_checkpoint_name="ptqf.pt")  # an earlier output: replaced


def test_sensitivity_table(trained):
    from ondevice.quant.sensitivity import KINDS, sensitivity, to_markdown

    run, data, _ = trained
    before = sorted(p.name for p in run.iterdir())
    rows = sensitivity(run, data, split="valid", src="en", tgt="de", bits=(1, 3), limit=40)
    assert sorted(p.name for p in run.iterdir()) == before  # nothing written
    assert [(r["kind"], r["bits"]) for r in rows] == [(k, b) for k in KINDS for b in (1, 3)]
    for r in rows:
        assert isinstance(r["bleu"], float) and isinstance(r["chrf"], float)
        assert r["bleu_drop"] == pytest.approx(r["fp32_bleu"] - r["bleu"], abs=0.011)
    by = {(r["kind"], r["bits"]): r["bleu"] for r in rows}
    # In aggregate 1-bit hurts more than 3-bit (single cells of a tiny model can be noisy).
    assert sum(by[k, 1] for k in KINDS) < sum(by[k, 3] for k in KINDS)
    assert by["embedding", 1] < by["embedding", 3]
    md = to_markdown(rows).splitlines()
    assert md[0].startswith("| sublayer") and "1-bit" in md[0] and "3-bit" in md[0]
    assert md[1].startswith("|---")
    assert [line.split("|")[1].strip() for line in md[2:]] == list(KINDS)
    with pytest.raises(ConfigError, match="kind"):
        sensitivity(run, data, split="valid", src="en", tgt="de", kinds=("attention",))


def test_quantize_cli(trained, tmp_path):
    import json as _json
    import subprocess
    import sys as _sys

    run_dir = trained[0]
    r = subprocess.run([_sys.executable, "-m", "ondevice", "quantize", "nmt", "--model", str(run_dir), "--plan",
                        "uniform_4bit", "--out", "checkpoint_cli.pt"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _json.loads(r.stdout)["average_bits"] == 4
    r = subprocess.run([_sys.executable, "-m", "ondevice", "quantize", "nmt", "--model", str(run_dir), "--plan",
                        "no_such_plan"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr
