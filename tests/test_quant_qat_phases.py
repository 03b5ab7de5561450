"""Quantization-aware retraining in phases (ondevice.quant.qat, `ondevice train qat`) on a tiny trained model:
strict config, earlier phases stay frozen, 1-bit QAT recovers what 1-bit PTQ loses, stop/resume is
bit-identical, and the final files load, evaluate and export."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")


from ondevice.errors import ConfigError  # noqa: E402
from ondevice.quant.plan import QuantPlan  # noqa: E402
from ondevice.quant.qat import load_qat_config, qat_config_from_dict, read_bcq_export, train_qat  # noqa: E402

ONE_BIT = QuantPlan.uniform(1).to_dict()
EMB = "encoder.embed_tokens.parametrizations.weight"
DEC = "decoder.layers.1.fc1.parametrizations.weight"


def _quiet(cfg, **kw):
    return train_qat(cfg, progress=False, log=lambda *_: None, **kw)


def _phases(n_emb=40, n_dec=40, n_enc=40, n_alpha=40, lr=2e-3, dec_refresh=1):
    return [{"name": "embedding", "blocks": ["embedding"], "updates": n_emb, "lr": lr},
            {"name": "decoder", "blocks": ["decoder"], "updates": n_dec, "lr": lr, "refresh_every": dec_refresh},
            {"name": "encoder", "blocks": ["encoder"], "updates": n_enc, "lr": lr},
            {"name": "alpha", "blocks": [], "updates": n_alpha, "lr": lr / 2, "mode": "alpha"}]


def _config(trained, save_dir, **kw) -> dict:
    run, data = trained
    cfg = {"model_dir": str(run), "data_dir": str(data), "save_dir": str(save_dir), "plan": ONE_BIT,
           "max_tokens": 256, "threads": 1, "validate_every": 20, "phases": _phases()}
    cfg.update(kw)
    return cfg


@pytest.fixture(scope="module")
def trained(tiny_trained_run):
    return tiny_trained_run


@pytest.fixture(scope="module")
def qat_run(trained, tmp_path_factory):
    """The four default-order phases at 1 bit, 40 updates each."""
    old = torch.get_num_threads()
    try:
        save = tmp_path_factory.mktemp("qat1") / "qat"
        summary = _quiet(qat_config_from_dict(_config(trained, save)))
    finally:
        torch.set_num_threads(old)
    assert summary["finished"] and summary["updates"] == 160, summary
    return save, summary


def _load(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def test_config_validation(tmp_path):
    base = {"model_dir": "m", "data_dir": "d", "save_dir": "s", "plan": "uniform_2bit"}
    cfg = qat_config_from_dict(base)
    assert [p.name for p in cfg.phase_list()] == ["embedding", "decoder", "encoder", "alpha"]  # the paper's order
    assert cfg.phase_list()[3].mode == "alpha" and cfg.phase_list()[3].train_other is False
    assert cfg.phase_list()[0].train_other is True and cfg.phase_list()[0].warmup_updates == 100
    bad = [({"learning_rate": 1}, "unknown key"),
           ({"plan": "no_such_plan"}, "no built-in plan"),
           ({"plan": 3}, "plan must be"),
           ({"max_tokens": "many"}, "max_tokens must be int"),
           ({"bf16": 1}, "bf16 must be bool"),
           ({"save_dir": "m"}, "must differ from model_dir"),
           ({"phases": []}, "non-empty"),
           ({"phases": _phases()[:3] + [{**_phases()[3], "rate": 1}]}, r"phases\[3\]: unknown key"),
           ({"phases": [{**_phases()[0], "blocks": ["embeddings"]}] + _phases()[1:]}, "unknown block 'embeddings'"),
           ({"phases": [{**_phases()[0], "mode": "lsq"}] + _phases()[1:]}, r"phases\[0\]\.mode"),
           ({"phases": [{**_phases()[0], "updates": 0}] + _phases()[1:]}, "updates must be >= 1"),
           ({"phases": [{**_phases()[0], "name": "a/b"}] + _phases()[1:]}, "names a file"),
           ({"phases": _phases()[:2]}, "no phase quantizes encoder"),
           ({"phases": _phases() + [{**_phases()[1], "name": "again"}]}, "already quantized by phase 'decoder'"),
           ({"phases": [_phases()[3]] + _phases()[:3]}, "nothing to tune"),
           ({"phases": [{**_phases()[0], "blocks": []}] + _phases()[1:]}, "needs at least one block"),
           ({"phases": _phases()[:3] + [{**_phases()[3], "refresh_every": 5}]}, "ste' phases only"),
           ({"phases": _phases()[:3] + [{**_phases()[3], "name": "encoder"}]}, "used by another phase"),
           ({"phases": [{"name": "x", "blocks": ["embedding"]}]}, r"missing key\(s\) \['updates', 'lr'\]")]
    for change, msg in bad:
        with pytest.raises(ConfigError, match=msg):
            qat_config_from_dict({**base, **change})
    with pytest.raises(ConfigError, match="missing required"):
        qat_config_from_dict({"model_dir": "m"})
    # Files: paths relative to the file, --set values relative to the cwd, a plan file found next to it.
    (tmp_path / "cfg").mkdir()
    QuantPlan.uniform(3).save(tmp_path / "cfg" / "p3.json")
    (tmp_path / "cfg" / "qat.json").write_text(json.dumps({**base, "plan": "p3.json"}))
    cfg = load_qat_config(tmp_path / "cfg" / "qat.json", {"save_dir": "out", "phases": _phases(lr=1)})
    assert cfg.model_dir == str(tmp_path / "cfg" / "m") and cfg.plan == str(tmp_path / "cfg" / "p3.json")
    assert cfg.save_dir == os.path.abspath("out") and cfg.phase_list()[0].lr == 1.0
    (tmp_path / "cfg" / "bad.json").write_text(json.dumps({**base, "phases": "all"}))
    with pytest.raises(ConfigError, match="bad.json: phases must be list"):
        load_qat_config(tmp_path / "cfg" / "bad.json")


def test_earlier_phases_stay_frozen(trained, qat_run):
    """Embedding signs/alpha/latent are unchanged once its phase is over; decoder likewise after its phase;
    the still-fp32 encoder trains during the first phases; the alpha phase changes only scales."""
    save, _ = qat_run
    fp32 = _load(trained[0] / "checkpoint_best.pt")["model"]
    s = [_load(save / f"phase{k}_{n}.pt")["qat_model"]
         for k, n in ((1, "embedding"), (2, "decoder"), (3, "encoder"), (4, "alpha"))]
    for key in ("original", "0.signs", "0.alpha", "0.step", "0.quantized_at"):
        assert torch.equal(s[0][f"{EMB}.{key}"], s[1][f"{EMB}.{key}"]), key
        assert torch.equal(s[0][f"{EMB}.{key}"], s[2][f"{EMB}.{key}"]), key
        assert torch.equal(s[1][f"{DEC}.{key}"], s[2][f"{DEC}.{key}"]), key
    assert not torch.equal(s[0][f"{EMB}.original"], fp32["encoder.embed_tokens.weight"])  # phase 1 retrained it
    assert DEC + ".original" not in s[0]  # not quantized yet in phase 1 ...
    enc = "encoder.layers.0.fc1.weight"
    assert not torch.equal(s[0][enc], fp32[enc]) and not torch.equal(s[0][enc], s[1][enc])  # ... and training
    # AlphaTuning: same signs and latents, new scales, biases and LayerNorms untouched (train_other false)
    for prefix in (EMB, DEC):
        assert torch.equal(s[2][f"{prefix}.0.signs"], s[3][f"{prefix}.0.signs"])
        assert torch.equal(s[2][f"{prefix}.original"], s[3][f"{prefix}.original"])
        assert not torch.equal(s[2][f"{prefix}.0.alpha"], s[3][f"{prefix}.0.alpha"])
    others = [k for k in s[3] if ".parametrizations." not in k]
    assert others and all(torch.equal(s[2][k], s[3][k]) for k in others)


def test_one_bit_qat_recovers_what_ptq_loses(trained, qat_run):
    from ondevice.nmt.data import ParallelData, make_batches, read_parallel
    from ondevice.nmt.evaluate import evaluate, load_model, score, translate
    from ondevice.nmt.train import evaluate_loss
    from ondevice.quant.ptq import quantize_model_

    run, data = trained
    save, summary = qat_run
    model, tok = load_model(run)
    plan = QuantPlan.uniform(1)
    quantize_model_(model, plan.assign(model), plan)
    valid = ParallelData.load(data, "valid", "en", "de", tok)
    ptq_loss = evaluate_loss(model, valid, make_batches(valid, 256), 0.1)["loss"]
    src, ref = read_parallel(data, "test_bible", "en", "de")
    ptq_bleu = score(translate(model, tok, src, beam=1), ref)["bleu"]
    qat_loss = summary["phases_done"][-1]["valid"]["loss"]
    assert qat_loss < ptq_loss - 1.5, (qat_loss, ptq_loss)  # bits per token
    losses = [p["valid"]["loss"] for p in summary["phases_done"]]
    assert losses[-1] < losses[1]  # the later phases recover from the decoder's quantization
    qat_bleu = evaluate(save, data, "test_bible", "en", "de", beam=1, checkpoint="qat_final.pt",
                        progress=False)["bleu"]
    assert qat_bleu > ptq_bleu + 20, (qat_bleu, ptq_bleu)


def test_final_files_load_and_export(qat_run):
    from ondevice.nmt.evaluate import load_model

    save, summary = qat_run
    assert (save / "spm.model").is_file() and json.loads((save / "model_config.json").read_text())["d_model"] == 64
    model, _ = load_model(save, "qat_final.pt")
    load_model(save, "phase1_embedding.pt")  # every phase's result is a plain checkpoint as well
    final = _load(save / "qat_final.pt")
    assert final["quantization"]["average_bits"] == 1.0 and final["quantization"]["plan"] == ONE_BIT
    meta = json.loads((save / "qat_final.pt.json").read_text())
    assert meta["average_bits"] == 1.0 and meta["size_report"]["compression_ratio"] > 5
    assert [p["name"] for p in meta["phase_results"]] == ["embedding", "decoder", "encoder", "alpha"]
    assert summary["final_checkpoint"] == str(save / "qat_final.pt")
    results = read_bcq_export(save / "qat_final_bcq.pt")
    assert sorted(results) == meta["quantized"] and "decoder.layers.1.encoder_attn.q_proj.weight" in results
    params = dict(model.named_parameters())
    for name, r in results.items():  # the export is exactly what the checkpoint computes with
        assert np.array_equal(r.dequantize(), params[name].detach().numpy()), name
        assert set(np.unique(r.row_bits)) == {1}
        assert max(len(np.unique(row)) for row in r.dequantize()) <= 2
    tied = torch.load(save / "qat_final_bcq.pt", weights_only=True)["tied"]
    assert tied["decoder.output_projection.weight"] == "encoder.embed_tokens.weight"


def test_stop_and_resume_equals_uninterrupted(trained, tmp_path):
    """Stopped mid-phase twice (once between two re-quantizations), exactly at a phase end (through the
    command line), then finished: the same weights, quantization and validations as one run."""
    phases = _phases(6, 5, 4, 4, dec_refresh=3)
    plan = QuantPlan.uniform(2).to_dict()
    a = _quiet(qat_config_from_dict(_config(trained, tmp_path / "a", phases=phases, plan=plan, validate_every=4)))
    assert a["finished"] and a["updates"] == 19

    def part(n, plan=plan):
        return _quiet(qat_config_from_dict(_config(trained, tmp_path / "b", phases=phases, plan=plan,
                                                   validate_every=4, max_updates_this_run=n)))

    s = part(4)
    assert (s["phase"], s["phase_updates"], s["finished"]) == ("embedding", 4, False)
    assert "max_updates_this_run" in s["stop_reason"]
    s = part(4)  # 2 decoder updates: its matrices were quantized at the phase start, next at update 3
    assert (s["phase"], s["phase_updates"]) == ("decoder", 2) and (tmp_path / "b" / "phase1_embedding.pt").exists()
    with pytest.raises(ConfigError, match="cannot resume.*plan"):
        part(1, plan=QuantPlan.uniform(3).to_dict())
    with pytest.raises(ConfigError, match="already holds a run"):
        _quiet(qat_config_from_dict(_config(trained, tmp_path / "b", phases=phases, plan=plan)), resume=False)
    cfg_file = tmp_path / "b.json"
    cfg_file.write_text(json.dumps(_config(trained, tmp_path / "b", phases=phases, plan=plan, validate_every=4)))
    r = subprocess.run([sys.executable, "-m", "ondevice", "train", "qat", "--quiet", "--config", str(cfg_file),
                        "--set", "max_updates_this_run=3"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads(r.stdout)  # to the end of the decoder phase
    assert (s["phase"], s["phase_updates"]) == ("encoder", 0) and "resumed" in r.stderr
    assert (tmp_path / "b" / "phase2_decoder.pt").exists()
    s = part(0)
    assert s["finished"] and s["updates"] == 19 and s["updates_this_run"] == 8

    la, lb = _load(tmp_path / "a" / "checkpoint_last.pt"), _load(tmp_path / "b" / "checkpoint_last.pt")
    assert la["model"].keys() == lb["model"].keys()
    for k in la["model"]:
        assert torch.equal(la["model"][k], lb["model"][k]), k
    assert la["state"]["validations"] == lb["state"]["validations"]
    assert [v["phase_update"] for v in la["state"]["validations"]] == [4, 6, 4, 5, 4, 4]
    fa, fb = _load(tmp_path / "a" / "qat_final.pt")["model"], _load(tmp_path / "b" / "qat_final.pt")["model"]
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    again = part(0)
    assert again["updates_this_run"] == 0 and "nothing to do" in again["stop_reason"]


def test_cli_reports_config_errors(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps({"model_dir": "m", "data_dir": "d", "save_dir": "s",
                                                 "plan": "uniform_2bit", "phases": [{"name": "x"}]}))
    r = subprocess.run([sys.executable, "-m", "ondevice", "train", "qat", "--config", str(tmp_path / "q.json")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "phases[0]: missing key" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "ondevice", "train", "qat", "--help"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and "AlphaTuning" in r.stdout and "refresh_every" in r.stdout


def test_qat_result_packs_exactly(qat_run, tmp_path):
    """`ondevice quantize pack --qat-run` stores the trained sign planes and scales: the packed model
    computes exactly what qat_final.pt computes."""
    from ondevice.nmt.evaluate import load_model
    from ondevice.quant.packed_model import load_packed, pack_qat_run

    save, _ = qat_run
    size = pack_qat_run(save, tmp_path / "packed", src="en", tgt="de")
    assert size["average_bits"] == 1.0 and size["total_bytes"] > 0
    ref, tok = load_model(save, "qat_final.pt")
    packed, _, manifest = load_packed(tmp_path / "packed")
    src = torch.tensor([tok.encode(["the dog sees a cat"])[0]])
    prev = torch.tensor([[2, 5, 6, 7]])
    with torch.no_grad():
        assert torch.equal(ref(src, prev), packed(src, prev))
    assert manifest["quant_plan"] == json.loads((save / "qat_final.pt.json").read_text())["plan"]
