"""The speech-intent model: its building blocks, quantization plan, export, and a tiny end-to-end run
of the whole recipe (corpus -> vq-wav2vec -> BERT -> teacher -> KD -> BCQ -> ONNX -> Understander)."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ondevice.errors import ConfigError
from ondevice.slu.model import (FeatureEncoder, FrameConv, SLUConfig, SpeechIntentModel, group_tokens,
                                bert_frames, kmeans_codebooks, kmeans_logits, num_frames,
                                standardize)

REPO = Path(__file__).resolve().parents[1]
TINY = dict(conv_channels=16, d_model=32, heads=2, ffn_dim=64, layers=1, vq_codewords=8, max_frames=256)


def test_frame_conv_is_a_strided_conv1d():
    torch.manual_seed(0)
    for c_in, c_out, s, t in ((1, 8, 5, 103), (6, 4, 2, 37), (3, 5, 4, 64)):
        fc = FrameConv(c_in, c_out, s)
        x = torch.randn(2, t, c_in)
        # Linear over [x_t .. x_{t+2s-1}] flattened time-major == Conv1d weight [out, in, k] permuted
        w = fc.proj.weight.reshape(c_out, 2 * s, c_in).permute(0, 2, 1)
        ref = F.conv1d(x.transpose(1, 2), w, fc.proj.bias, stride=s).transpose(1, 2)
        got = fc(x)
        n = t // s - 1
        assert got.shape == (2, n, c_out)
        torch.testing.assert_close(got, ref[:, :n], rtol=1e-5, atol=1e-5)


def test_num_frames_matches_the_encoder():
    cfg = SLUConfig(**TINY).validate()
    enc = FeatureEncoder(cfg)
    for samples in (cfg.hop * 2 - 1, cfg.hop * 3, 5000, 16000, 16001, 32777):
        expect = num_frames(samples, cfg)
        if expect == 0:
            continue
        assert enc(torch.zeros(1, samples)).shape[1] == expect
    assert num_frames(100, cfg) == 0


def test_standardize_over_valid_samples_matches_one_by_one():
    torch.manual_seed(1)
    a, b = torch.randn(700) * 3 + 1, torch.randn(400) * 0.1
    batch = torch.zeros(2, 700)
    batch[0], batch[1, :400] = a, b
    out = standardize(batch, torch.tensor([700, 400]))
    torch.testing.assert_close(out[0], standardize(a[None])[0], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out[1, :400], standardize(b[None])[0], rtol=1e-4, atol=1e-4)
    assert out[1, 400:].abs().max() == 0


def test_kmeans_linear_map_picks_the_nearest_codeword():
    torch.manual_seed(2)
    x = torch.cat([torch.randn(200, 6) + 4, torch.randn(200, 6) - 4, torch.randn(200, 6)])
    books = kmeans_codebooks(x, groups=2, codewords=5, iters=10)
    assert books.shape == (2, 5, 3)
    w, b = kmeans_logits(books)
    tok = group_tokens((x @ w.T + b)[None], 2, 5)[0]
    d0 = torch.cdist(x[:, :3], books[0]).argmin(1)
    d1 = torch.cdist(x[:, 3:], books[1]).argmin(1)
    assert torch.equal(tok, d0 * 5 + d1)
    # every codeword is used on data with that many clusters
    assert len(torch.unique(d0)) == 5


def test_config_validation():
    with pytest.raises(ConfigError):
        SLUConfig(conv_channels=15, vq_groups=2).validate()
    with pytest.raises(ConfigError):
        SLUConfig.from_dict({"d_model": 64, "typo": 1})
    assert SLUConfig.from_dict(SLUConfig().to_dict()).hop == 320


def _quantized_tiny(tmp_path):
    from ondevice.quant.fake_quant import apply_fake_quant, export_bcq, remove_fake_quant
    from ondevice.slu.export import export_slu
    from ondevice.slu.quantize import SLUQuantPlan, assignment, pack_results

    torch.manual_seed(3)
    cfg = SLUConfig(**TINY).validate()
    m = SpeechIntentModel(cfg).eval()
    del m.bert.mlm, m.bert.kd_proj
    counts = np.random.default_rng(0).integers(0, 50, cfg.num_tokens)
    assign = assignment(m, SLUQuantPlan(method="greedy"), counts)
    apply_fake_quant(m, assign, method="greedy")
    results = export_bcq(m)
    remove_fake_quant(m, bake=True)
    export_slu(m, tmp_path / "q", pack_results(results))
    return m, assign, tmp_path / "q"


def test_quant_plan_covers_every_matrix_with_frequency_bits(tmp_path):
    from ondevice.slu.quantize import SLUQuantPlan, assignment, average_bits

    cfg = SLUConfig(**TINY).validate()
    m = SpeechIntentModel(cfg)
    del m.bert.mlm, m.bert.kd_proj
    counts = np.arange(cfg.num_tokens)[::-1].copy()  # token 0 most frequent
    a = assignment(m, SLUQuantPlan(), counts)
    matrices = {n for n, p in m.named_parameters() if p.dim() == 2}
    assert set(a) == matrices
    v = cfg.vq_codewords
    for g in range(cfg.vq_groups):  # codeword 0 is the most frequent in both groups of these counts
        emb = np.asarray(a[f"bert.embed_groups.{g}.weight"])
        assert emb.shape == (v + 2,)
        assert emb[0] == 3 and emb[v - 1] < 3 and np.all(np.diff(emb[:v].astype(int)) <= 0)
        assert emb[v] == 1 and emb[v + 1] == 1  # [MASK] and padding rows: never read at inference
    assert a["bert.convs.0.proj.weight"] == SLUQuantPlan().bert_conv
    # the weighted mean over every weight (this tiny model's 4-bit front end weighs more than the
    # shipped model's, whose average the card states and tests/test_shipped_slu_model.py bounds)
    params = dict(m.named_parameters())
    total = sum(params[n].numel() for n in a)
    expect = sum(float(np.mean(b)) * params[n].numel() for n, b in a.items()) / total
    assert average_bits(m, a) == pytest.approx(expect) and 1.0 < expect < 4.0
    with pytest.raises(ConfigError):
        assignment(m, SLUQuantPlan(ffn=5), counts)


def _noise_split(n: int, seconds: float, seed: int):
    """A split of band-limited noise bursts (enough structure for a tokenizer to tell frames apart)."""
    from ondevice.slu.dataset import SLUSplit

    rng = np.random.default_rng(seed)
    k = int(seconds * 16000)
    audio = np.concatenate([np.convolve(rng.normal(0, 3000, k), np.ones(rng.integers(1, 12)), "same")
                            for _ in range(n)]).clip(-32767, 32767).astype(np.int16)
    z = np.zeros(n, np.int64)
    return SLUSplit("train", [str(i) for i in range(n)], [""] * n, audio, np.arange(n + 1) * k,
                    {"action": z, "object": z, "location": z}, np.zeros(n, bool), ["v"] * n)


def test_front_end_retraining_gives_the_fp32_tokens_back():
    """A 2-bit front end changes many tokens; retraining it against its fp32 self's argmax brings
    them back (here on the few utterances it trains on: this pins the mechanism, the straight-through
    gradient reaching the front end, not how well it generalizes), and leaves the fp32 teacher alone."""
    import copy

    from ondevice.quant.fake_quant import apply_fake_quant
    from ondevice.slu.quantize import retrain_front_end

    torch.manual_seed(0)
    cfg = SLUConfig(**TINY).validate()
    model = SpeechIntentModel(cfg).eval()
    teacher = copy.deepcopy(model)
    before_teacher = {k: v.clone() for k, v in teacher.state_dict().items()}
    front = {n: 2 for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith("bert.")}
    apply_fake_quant(model, front, method="greedy", refresh_every=1)
    split = _noise_split(4, 0.5, 1)
    probe = torch.from_numpy(np.stack([split.wave(i) for i in range(len(split))]))

    def agreement() -> float:
        return float((model.tokens(probe) == teacher.tokens(probe)).float().mean())

    start = agreement()
    info = retrain_front_end(model, teacher, split, steps=80, batch=4, crop_seconds=0.5, lr=1e-3,
                             log=lambda _: None, progress=False)
    assert set(info) == {"agree_first", "agree_last"}
    assert agreement() > start + 0.1, (start, agreement())
    assert all(torch.equal(v, teacher.state_dict()[k]) for k, v in before_teacher.items())
    assert retrain_front_end(model, teacher, split, steps=0) == {}


def test_speed_copies_tokenize_resampled_audio_and_fine_tuning_draws_them():
    """``tokenize_split(rate=...)`` reads each utterance resampled to ``rate`` as 16 kHz (the
    runtime's speed-ensemble member, here a training copy): the same tokens as tokenizing the
    resampled waveform by hand, shorter at 15 kHz, longer at 17 kHz.  Fine-tuning takes such
    copies only when they match the tokens one for one."""
    from ondevice.slu.audio import resample
    from ondevice.slu.distill import finetune
    from ondevice.slu.model import SpeechBert, SpeechTokenizer
    from ondevice.slu.pretrain import tokenize_split

    torch.manual_seed(0)
    cfg = SLUConfig(**TINY).validate()
    tok = SpeechTokenizer(cfg).eval()
    split = _noise_split(3, 0.6, 2)
    base = tokenize_split(tok.tokenize, split, cfg, progress=False)
    fast = tokenize_split(tok.tokenize, split, cfg, progress=False, rate=15000)
    slow = tokenize_split(tok.tokenize, split, cfg, progress=False, rate=17000)
    for i in range(len(split)):
        assert len(fast[i]) < len(base[i]) < len(slow[i])
        w = torch.from_numpy(resample(split.wave(i), 16000, 15000))[None]
        np.testing.assert_array_equal(fast[i], tok.tokenize(w)[0].numpy())
    bert = SpeechBert(cfg)
    seqs = [b.astype(np.int64) for b in base]
    labels = {k: np.zeros(len(seqs), np.int64) for k in ("action", "object", "location")}
    with pytest.raises(ValueError, match="a copy has 2 utterances"):
        finetune(bert, seqs, labels, None, (seqs, labels), epochs=1, copies=[seqs[:2]], progress=False,
                 log=lambda _: None)
    finetune(bert, seqs, labels, None, (seqs, labels), epochs=1, copies=[[f.astype(np.int64) for f in fast]],
             progress=False, log=lambda _: None)


@pytest.mark.parametrize("average_wins", [True, False])
def test_finetune_average_last_keeps_the_mean_of_the_last_epochs_only_when_it_validates_better(
        monkeypatch, average_wins):
    """SWA: the mean of the last ``average_last`` epochs' weights (not one more, not one fewer) is
    validated like an epoch and kept only when it beats the best epoch."""
    from ondevice.slu import distill
    from ondevice.slu.model import SpeechBert

    torch.manual_seed(0)
    cfg = SLUConfig(**TINY).validate()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, cfg.num_tokens, int(n)) for n in rng.integers(20, 40, 6)]
    labels = {k: rng.integers(0, 2, len(seqs)) for k in ("action", "object", "location")}
    with pytest.raises(ValueError, match="average_last"):
        distill.finetune(SpeechBert(cfg), seqs, labels, None, (seqs, labels), epochs=2, average_last=3,
                         progress=False, log=lambda _: None)
    scores = iter([0.2, 0.5, 0.3, 0.4, 0.9 if average_wins else 0.1])  # epochs 1-4, then the average
    monkeypatch.setattr(distill, "evaluate", lambda *a, **k: {"intent_accuracy": next(scores)})
    bert = SpeechBert(cfg)
    snapshots = []  # one step per epoch (batch > utterances): the state after each step ends an epoch
    hook = lambda: snapshots.append({k: v.detach().clone() for k, v in bert.state_dict().items()})  # noqa: E731
    bert, hist = distill.finetune(bert, seqs, labels, None, (seqs, labels), epochs=4, batch=8, lr=3e-3,
                                  average_last=3, progress=False, log=lambda _: None, step_hook=hook)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4, "average"] and len(snapshots) == 4
    mean = {k: torch.stack([s[k].float() for s in snapshots[1:]]).mean(0) for k in snapshots[0]}
    expect = mean if average_wins else snapshots[1]  # else the best epoch, the second
    for k, v in bert.state_dict().items():
        if v.is_floating_point():
            torch.testing.assert_close(v, expect[k], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(mean["cls"], snapshots[0]["cls"])  # the epochs did move the weights


def test_finetune_average_setting_is_checked(tmp_path):
    from ondevice.slu.train import SLUTrainConfig, run_stages

    for bad in (-1, 7, 2.5, True):
        with pytest.raises(ConfigError, match="finetune_average"):
            run_stages(SLUTrainConfig(corpus="/nonexistent", out=str(tmp_path / "run"), finetune_epochs=6,
                                      finetune_average=bad))


def test_tokenize_split_applies_a_transform_per_utterance():
    """Reverb copies: ``transform(index, wave)`` runs on each waveform before the tokenizer."""
    from ondevice.slu.model import SpeechTokenizer
    from ondevice.slu.pretrain import tokenize_split
    from ondevice.slu.reverb import reverb_transform

    torch.manual_seed(0)
    cfg = SLUConfig(**TINY).validate()
    tok = SpeechTokenizer(cfg).eval()
    split = _noise_split(3, 0.6, 2)
    room = reverb_transform(0, 0, 16000)
    seen = []
    roomed = tokenize_split(tok.tokenize, split, cfg, progress=False,
                            transform=lambda i, w: seen.append(i) or room(i, w))
    assert seen == list(range(len(split)))
    for i in range(len(split)):
        w = torch.from_numpy(room(i, split.wave(i)))[None]
        np.testing.assert_array_equal(roomed[i], tok.tokenize(w)[0].numpy())
    assert any(not np.array_equal(a, b) for a, b in zip(roomed, tokenize_split(tok.tokenize, split, cfg,
                                                                              progress=False)))


def test_speed_copies_setting_is_checked():
    from ondevice.slu.train import SLUTrainConfig, check_speed_copies, run_stages

    assert check_speed_copies((15000, 17000)) == [15000, 17000] and check_speed_copies([]) == []
    for bad in ([16000], [15000, 15000], [15000.5], [30000], "15000", [True]):
        with pytest.raises(ConfigError, match="speed_copies"):
            check_speed_copies(bad)
    with pytest.raises(ConfigError, match="speed_copies"):  # refused before any stage runs
        run_stages(SLUTrainConfig(corpus="/nonexistent", out="/nonexistent/run", speed_copies=(16000,)))


@pytest.mark.parametrize("quantized", [False, True])
def test_export_matches_pytorch_in_onnxruntime(tmp_path, quantized):
    ort = pytest.importorskip("onnxruntime")
    from ondevice.slu.export import export_slu

    if quantized:
        m, _, d = _quantized_tiny(tmp_path)
    else:
        torch.manual_seed(4)
        m = SpeechIntentModel(SLUConfig(**TINY).validate()).eval()
        d = tmp_path / "f"
        export_slu(m, d)
    man = json.loads((d / "manifest.json").read_text())
    assert man["model_kind"] == "slu-intent" and man["quantized"] is quantized
    assert ("BitPlaneMatMul" in man["ops"]) is quantized
    so = ort.SessionOptions()
    so.log_severity_level = 3
    s = ort.InferenceSession(str(d / "understand.onnx"), so)
    rng = np.random.default_rng(5)
    for n in (man["min_samples"], 8000, 16000 + 123):
        w = (rng.standard_normal((1, n)) * 0.1).astype(np.float32)
        ref = m(torch.from_numpy(w))
        for out, (slot, v) in zip(s.run(None, {"audio": w}), ref.items()):
            np.testing.assert_allclose(out, v.numpy(), rtol=1e-4, atol=1e-4, err_msg=slot)
    # one sample fewer than min_samples leaves the BERT no position
    assert bert_frames(num_frames(man["min_samples"] - 1, m.cfg), m.cfg) == 0
    assert bert_frames(num_frames(man["min_samples"], m.cfg), m.cfg) == 1


def test_understander_onnxruntime_backend_and_bad_audio(tmp_path):
    pytest.importorskip("onnxruntime")
    from ondevice.errors import AudioError, DataError
    from ondevice.onnx_export.errors import OnnxModelError
    from ondevice.slu.intents import INTENT_KEYS
    from ondevice.understander import Understander

    _, _, d = _quantized_tiny(tmp_path)
    u = Understander(d, backend="onnxruntime", threads=1)
    rng = np.random.default_rng(6)
    r = u.understand((rng.standard_normal(16000) * 0.1).astype(np.float32))
    assert r.key in INTENT_KEYS  # decoded over the valid intents
    assert all(0 < v <= 1 for v in r.scores.values())
    assert json.loads(json.dumps(r.to_dict()))["intent"] == r.key
    with pytest.raises(DataError):
        u.understand(np.zeros(100, np.float32))          # shorter than 0.1 s
    lo = int(u.manifest["min_samples"])
    assert lo > 1600  # the BERT's strided convolutions need more than the reader's 0.1 s minimum
    with pytest.raises(AudioError, match=rf"^audio: audio too short: {lo - 1} samples at 16 kHz \(.* s\), the model "
                                         rf"needs at least {lo} \(0\.\d+ s\)"):
        u.understand(np.zeros(lo - 1, np.float32))
    assert u.understand(np.zeros(lo, np.float32)).key in INTENT_KEYS
    with pytest.raises(DataError):
        u.understand(np.full(16000, np.nan, np.float32))
    manifest = json.loads((d / "manifest.json").read_text())
    for files, message in (([{"path": "../escape.bin", "size": 1, "sha256": "0" * 64}], "escape.bin"),
                           ([{"path": "weights.bin", "size": -1, "sha256": "0" * 64}], "size >= 0"),
                           ("weights.bin", "'files' must be a list")):
        bad = tmp_path / "bad_files"
        shutil.copytree(d, bad, dirs_exist_ok=True)
        (bad / "manifest.json").write_text(json.dumps({**manifest, "files": files}))
        with pytest.raises(OnnxModelError, match=message):
            Understander(bad, backend="onnxruntime")
    (d / "weights.bin").write_bytes(b"\0" + (d / "weights.bin").read_bytes()[1:])
    with pytest.raises(OnnxModelError, match="sha256"):
        Understander(d, backend="onnxruntime")


def test_tiny_recipe_end_to_end(tmp_path, monkeypatch):
    """A few steps of every stage on a tiny rendered corpus; then the exported model answers through
    ``ondevice understand`` (this pins the plumbing, not the accuracy: that is the model card's job)."""
    from ondevice.cli import main
    from ondevice.slu import corpus
    from ondevice.slu.train import SLUTrainConfig, run_stages

    if not all(shutil.which(t) for t in ("espeak-ng", "sox")):
        pytest.fail("espeak-ng and sox are required (scripts/install_system_deps.sh installs them)")
    corpus.generate_corpus(tmp_path / "c", {"train": 24, "valid": 6, "test": 6}, seed=3,
                           engines=("espeak-ng",), progress=False)
    cfg = SLUTrainConfig(corpus=str(tmp_path / "c"), out=str(tmp_path / "run"), model=TINY, vq_steps=4, vq_batch=4,
                         bert_steps=3, teacher_epochs=1, kd1_steps=3, finetune_epochs=1, front_qat_steps=2, qat_epochs=1,
                         variants=("none", "both"), quant_plan={"method": "greedy"}, threads=1,
                         teacher=str(REPO / "models" / "nmt-en-de"), speed_copies=(15000,))
    run_stages(cfg)
    run = tmp_path / "run"
    table = json.loads((run / "ablation.json").read_text())
    assert set(table) == {"none", "both"}
    q = json.loads((run / "quantized.json").read_text())
    # (the tiny model's 4-bit front end is a larger share than the shipped model's: not under 3 bits)
    assert 1 < q["average_bits"] < 4 and 0 <= q["qat"]["intent_accuracy"] <= 1
    assert q["speed_copies"] == [15000]
    with np.load(run / "tokens_speed.npz") as z:  # the training split's tokens at 15 kHz, cached
        assert len(z["train@15000_offsets"]) == 24 + 1
        # stamped with the tokenizer that made them: another tokenizer's cache is not reused
        assert str(z["source"]) == f"{hashlib.sha256((run / 'tokenizer.pt').read_bytes()).hexdigest()} 24"
    assert json.loads((run / "ft_both.json").read_text())["speed_copies"] == [15000]
    # resuming is a no-op (every stage's output exists)
    before = (run / "onnx" / "manifest.json").read_bytes()
    run_stages(cfg)
    assert (run / "onnx" / "manifest.json").read_bytes() == before
    # a warm restart: another run continues fine-tuning from this run's checkpoint
    run2 = tmp_path / "run2"
    run2.mkdir()
    for name in ("tokenizer.pt", "tokens.npz", "teacher.pt", "bert_mlm.pt", "bert_kd1.pt"):
        shutil.copy(run / name, run2 / name)
    again = dataclasses.replace(cfg, out=str(run2), variants=("both",), finetune_from=str(run / "ft_both.pt"))
    with pytest.raises(ConfigError, match="finetune_from"):
        run_stages(dataclasses.replace(again, finetune_from=str(run / "missing.pt")), ("finetune",))
    run_stages(dataclasses.replace(again, finetune_cycles=2), ("finetune",))
    result = json.loads((run2 / "ft_both.json").read_text())
    assert result["from"] == str(run / "ft_both.pt") and result["cycles"] == 2
    assert [e["cycle"] for e in result["history"]] == [1, 2]  # one epoch per cycle
    # each cycle is kept: a run stopped after its last cycle resumes without training again
    (run2 / "ft_both.json").unlink()
    weights = (run2 / "ft_both.pt").read_bytes()
    run_stages(dataclasses.replace(again, finetune_cycles=2), ("finetune",))
    assert json.loads((run2 / "ft_both.json").read_text())["history"] == result["history"]
    before_w = torch.load(io.BytesIO(weights), weights_only=False)["bert"]
    after_w = torch.load(run2 / "ft_both.pt", weights_only=False)["bert"]
    assert before_w.keys() == after_w.keys() and all(torch.equal(before_w[k], after_w[k]) for k in before_w)
    with pytest.raises(ConfigError, match="finetune_cycles"):
        run_stages(dataclasses.replace(again, finetune_cycles=0), ("finetune",))
    # the dereverb stage: refused where tokens.npz came from the tokenizer before it; in a run with the vq
    # stage's tokenizer alone it keeps that one as tokenizer_vq.pt and records what it measured
    with pytest.raises(ConfigError, match="dereverb stage"):
        run_stages(dataclasses.replace(again, dereverb_steps=2), ("dereverb",))
    run3 = tmp_path / "run3"
    run3.mkdir()
    shutil.copy(run / "tokenizer.pt", run3 / "tokenizer.pt")
    dr = dataclasses.replace(cfg, out=str(run3), dereverb_steps=2, dereverb_pairs=3)
    run_stages(dr, ("dereverb", "tokens"))
    vq = torch.load(run / "tokenizer.pt", weights_only=False)
    kept = torch.load(run3 / "tokenizer_vq.pt", weights_only=False)
    assert all(torch.equal(vq["encoder"][k], kept["encoder"][k]) for k in vq["encoder"])
    new = torch.load(run3 / "tokenizer.pt", weights_only=False)
    assert new["dereverb"]["steps"] == 2 and 1 <= new["dereverb"]["pairs"] <= 3
    assert not all(torch.equal(vq["encoder"][k], new["encoder"][k]) for k in vq["encoder"])
    assert (run3 / "tokens.npz").exists()
    retrained = (run3 / "tokenizer.pt").read_bytes()
    run_stages(dr, ("dereverb",))  # done: not retrained again, not even with other settings (it says so)
    run_stages(dataclasses.replace(dr, dereverb_steps=3), ("dereverb",))
    assert (run3 / "tokenizer.pt").read_bytes() == retrained
    assert "already retrained (2 steps" in (run3 / "train.log").read_text()
    with pytest.raises(ConfigError, match="vq stage first"):
        run_stages(dataclasses.replace(dr, out=str(tmp_path / "run4")), ("dereverb",))
    wav = sorted((tmp_path / "c" / "test").glob("*.wav"))[0]
    assert main(["understand", "--model", str(run / "onnx"), "--backend", "onnxruntime", "--json", str(wav)]) == 0
    # the export lists the speed ensemble; --one-pass and the benchmark's one-pass rows skip it
    assert json.loads((run / "onnx" / "manifest.json").read_text())["ensemble_rates"] == [15000, 16000, 17000]
    assert main(["understand", "--model", str(run / "onnx"), "--one-pass", str(wav)]) == 0
    from ondevice.bench.understand import bench_understand

    rows = bench_understand(run / "onnx", tmp_path / "c", n=2, runs=1)["rows"]
    assert [r["engine"] for r in rows] == ["native", "onnxruntime", "native, speed ensemble x3",
                                           "onnxruntime, speed ensemble x3"]
    assert all(r["median_ms"] > 0 for r in rows)
    # the CLI's report quotes the command that made it and the dense-path setting it ran with
    bench_args = ["--model", str(run / "onnx"), "--corpus", str(tmp_path / "c"), "--n", "2", "--runs", "1"]
    assert main(["bench", "understand", *bench_args, "--out", str(tmp_path / "b")]) == 0
    md = (tmp_path / "b" / "understand.md").read_text()
    assert "ondevice bench understand " + " ".join(bench_args) in md and "Native dense path from 256" in md
    assert json.loads((tmp_path / "b" / "understand.json").read_text())["dense_min_rows"] == 256
    assert json.loads((tmp_path / "b" / "understand.json").read_text())["fuse"] is True
    assert "graph fusion on" in md
    # `export slu` writes the card from the run; --provenance (how the run was made) lands in the card and
    # under the README's "Reproduce"; an unreadable provenance file is refused before anything is written
    bad = tmp_path / "bad.md"
    bad.write_bytes(b"\xff\xfe not UTF-8")
    (tmp_path / "empty.md").write_text(" \n", encoding="utf-8")
    export = ["export", "slu", "--run", str(run), "--corpus", str(tmp_path / "c"), "--quiet"]
    import ondevice.bench.understand

    def no_bench(*args, **kwargs):
        raise AssertionError("benchmarked before the provenance file was checked")

    monkeypatch.setattr(ondevice.bench.understand, "bench_understand", no_bench)
    for refused in (bad, tmp_path / "empty.md", tmp_path / "missing.md"):
        assert main([*export, "--out", str(tmp_path / "m0"), "--bench", "1", "--provenance", str(refused)]) == 1
    assert not (tmp_path / "m0").exists()
    monkeypatch.undo()
    prov = tmp_path / "prov.md"
    prov.write_text("Chained runs: runs/a, then runs/b.\n", encoding="utf-8")
    assert main([*export, "--out", str(tmp_path / "m"), "--provenance", str(prov)]) == 0
    exported = json.loads((tmp_path / "m" / "card.json").read_text())
    assert exported["provenance"] == "Chained runs: runs/a, then runs/b.\n"
    assert exported["training"]["dereverb"] is None and exported["test"]["n"] == 6
    readme = (tmp_path / "m" / "README.md").read_text()
    assert "## Reproduce\n" in readme and "Chained runs: runs/a, then runs/b." in readme
    assert "--set front_qat_steps=2" in readme and "--set qat_epochs=1" in readme
    assert "--stages vq,tokens," in readme and "dereverb" not in readme
    # The model directory is touched only after the evaluation (a bad corpus leaves it as it was),
    # and onnx/ is replaced only over an earlier export, never over other files.
    (tmp_path / "m" / "onnx" / "sentinel").write_text("the export as it was")  # gone if onnx/ were replaced
    assert main(["export", "slu", "--run", str(run), "--corpus", str(tmp_path / "nowhere"), "--quiet",
                 "--out", str(tmp_path / "m")]) == 1
    assert (tmp_path / "m" / "onnx" / "sentinel").read_text() == "the export as it was"
    (tmp_path / "u" / "onnx").mkdir(parents=True)
    (tmp_path / "u" / "onnx" / "mine.onnx").write_bytes(b"a user's file")
    assert main([*export, "--out", str(tmp_path / "u")]) == 1
    assert (tmp_path / "u" / "onnx" / "mine.onnx").read_bytes() == b"a user's file"
    # a run whose tokenizer went through the dereverb stage: the card keeps the stage's record and the
    # command names the stage with its settings (run3's tokenizer; the rest copied from the first run)
    for name in ("quantized.json", "ablation.json", "teacher.pt", "ft_both.json"):
        shutil.copy(run / name, run3 / name)
    shutil.copytree(run / "onnx", run3 / "onnx")
    assert main(["export", "slu", "--run", str(run3), "--corpus", str(tmp_path / "c"), "--quiet",
                 "--out", str(tmp_path / "m3")]) == 0
    exported = json.loads((tmp_path / "m3" / "card.json").read_text())
    assert exported["training"]["dereverb"]["steps"] == 2 and "provenance" not in exported
    readme = (tmp_path / "m3" / "README.md").read_text()
    assert "--stages vq,dereverb,tokens," in readme
    assert "--set dereverb_steps=2" in readme and "--set dereverb_pairs=3" in readme


def test_understand_cli_reports_bad_files(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from ondevice.cli import main

    _, _, d = _quantized_tiny(tmp_path)
    good = tmp_path / "good.wav"
    import wave

    with wave.open(str(good), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(44100)
        w.writeframes((np.random.default_rng(7).standard_normal((44100, 2)) * 3000).astype("<i2").tobytes())
    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    assert main(["understand", "--model", str(d), "--backend", "onnxruntime", "--json", str(good), str(bad)]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[0]["file"] == str(good) and set(lines[0]) >= {"action", "object", "location", "scores"}
    assert lines[1]["file"] == str(bad) and "not an audio file" in lines[1]["error"]


def test_understand_cli_survives_odd_file_names_and_a_closed_pipe(tmp_path, capsys):
    """A file name that is not UTF-8 is printed with \\x escapes (valid JSON; the run goes on to
    the next file); every error line names its file; a reader that stops early (`| head -1`) ends
    the run quietly with 141, as for cat, not a BrokenPipeError traceback; "-" reads a piped file."""
    import os
    import subprocess
    import sys
    import time
    import wave

    pytest.importorskip("onnxruntime")
    from ondevice.cli import main

    _, _, d = _quantized_tiny(tmp_path)
    samples = (np.random.default_rng(8).standard_normal(16000) * 3000).astype("<i2")
    odd = os.path.join(os.fsencode(tmp_path), b"bad\xffname.wav")
    short = tmp_path / "short.wav"
    for path, x in ((odd, samples), (short, samples[:2400])):
        with wave.open(open(path, "wb"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(16000)
            w.writeframes(x.tobytes())
    odd_name = os.fsdecode(odd)
    good = str(tmp_path / "good.wav")
    os.link(odd, good)
    assert main(["understand", "--model", str(d), "--backend", "onnxruntime", "--json", odd_name, str(short),
                 good]) == 1
    out = capsys.readouterr().out
    out.encode("utf-8")  # strict: no lone surrogates
    lines = [json.loads(x) for x in out.splitlines()]
    assert lines[0]["file"] == os.fsdecode(tmp_path) + "/bad\\xffname.wav" and "action" in lines[0]
    assert lines[1]["error"].startswith(f"{short}: audio too short: 2400 samples")
    assert lines[2]["file"] == good and lines[2]["action"] == lines[0]["action"]
    assert main(["understand", "--model", str(d), "--backend", "onnxruntime", odd_name, str(short)]) == 1
    cap = capsys.readouterr()
    assert cap.out.startswith(os.fsdecode(tmp_path) + "/bad\\xffname.wav\taction=")
    assert f"ondevice: error: {short}: audio too short" in cap.err

    p = subprocess.Popen([sys.executable, "-m", "ondevice", "understand", "--model", str(d), "--backend",
                          "onnxruntime", "--threads", "1", *[good] * 300], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    assert p.stdout.readline().startswith(good.encode())
    p.stdout.close()  # the reader goes away while 299 files remain
    err = p.stderr.read()
    assert p.wait(timeout=300) == 141 and b"Traceback" not in err and b"Error" not in err, err
    # "-" is standard input (e.g. `sox in.mp3 -t wav - | ondevice understand -`)
    r = subprocess.run([sys.executable, "-m", "ondevice", "understand", "--model", str(d), "--backend", "onnxruntime",
                        "--threads", "1", "--json", "-"], input=Path(good).read_bytes(), capture_output=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    piped = json.loads(r.stdout)
    assert piped["file"] == "-" and piped["action"] == lines[2]["action"] and piped["scores"] == lines[2]["scores"]
    r = subprocess.run([sys.executable, "-m", "ondevice", "understand", "--model", str(d), "--backend", "onnxruntime",
                        "--threads", "1", "-"], input=Path(good).read_bytes()[:1000], capture_output=True, timeout=300)
    assert r.returncode == 1 and r.stderr.startswith(b"ondevice: error: <stdin>: truncated WAV"), r.stderr
    assert main(["understand", "--model", str(d), "-", "-"]) == 1
    assert "'-' (standard input) can be given once" in capsys.readouterr().err
    # SIGTERM while a piped recording is being copied: exit 143, and the copy is removed.
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "ondevice", "understand", "--model", str(d), "--backend",
                          "onnxruntime", "--threads", "1", "-"], stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                         env={**os.environ, "TMPDIR": str(tmp)})
    p.stdin.write(Path(good).read_bytes()[:1000])
    p.stdin.flush()
    deadline = time.monotonic() + 120
    while not list(tmp.glob("ondevice-audio-*/stream")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(tmp.glob("ondevice-audio-*/stream")), "the copy of stdin never appeared"
    p.terminate()
    assert p.wait(timeout=60) == 143 and b"Traceback" not in p.stderr.read()
    p.stdin.close()
    assert not list(tmp.glob("ondevice-audio-*"))


def test_split_cache_survives_subsets_and_concurrent_loaders(tmp_path):
    """A subset load must not replace the whole split's cache, and two processes filling the cache at
    once must not collide on one temporary file (both happened while training)."""
    import multiprocessing as mp

    from ondevice.slu import corpus
    from ondevice.slu.dataset import load_split

    if not shutil.which("espeak-ng") or not shutil.which("sox"):
        pytest.fail("espeak-ng and sox are required (scripts/install_system_deps.sh installs them)")
    root = tmp_path / "c"
    corpus.generate_corpus(root, {"train": 0, "valid": 0, "test": 4}, seed=1, engines=("espeak-ng",),
                           progress=False)
    full = load_split(root, "test", progress=False)
    stamp = (root / ".cache" / "test.npz").stat().st_mtime_ns
    assert len(load_split(root, "test", limit=2, progress=False)) == 2
    assert (root / ".cache" / "test.npz").stat().st_mtime_ns == stamp
    (root / ".cache" / "test.npz").unlink()
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=load_split, args=(root, "test"), kwargs={"progress": False}) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert sorted(f.name for f in (root / ".cache").iterdir()) == ["test.npz"]
    np.testing.assert_array_equal(load_split(root, "test", progress=False).audio, full.audio)


def test_time_warp_resamples_in_order_within_the_amount():
    from ondevice.slu.distill import time_warp

    rng = np.random.default_rng(0)
    x = np.arange(100, dtype=np.int64)
    assert time_warp(x, rng, 0.0) is x
    assert time_warp(x[:1], rng, 0.2).tolist() == [0]
    lengths = set()
    for _ in range(200):
        y = time_warp(x, rng, 0.15)
        assert 85 <= len(y) <= 115
        assert np.all(np.diff(y) >= 0) and y[0] == 0  # frames repeated or dropped, never reordered
        assert np.all(np.diff(y) <= 2)                 # at most every other frame dropped at 15 %
        lengths.add(len(y))
    assert len(lengths) > 10


def test_speech_bert_group_embeddings_and_padding_do_not_leak():
    """A token's embedding is the sum of its groups' rows; a padded utterance in a batch gives the
    same [CLS] output as the utterance alone (the strided convolutions never read the padding)."""
    torch.manual_seed(7)
    cfg = SLUConfig(**TINY).validate()
    from ondevice.slu.model import SpeechBert

    bert = SpeechBert(cfg).eval()
    v = cfg.vq_codewords
    tok = torch.tensor([[3 * v + 5, cfg.mask_id, cfg.pad_id]])
    idx = bert.group_ids(tok)
    assert idx.tolist() == [[[3, 5], [v, v], [v + 1, v + 1]]]
    e = bert.embed(tok)
    torch.testing.assert_close(e[0, 0], bert.embed_groups[0].weight[3] + bert.embed_groups[1].weight[5])
    rng = np.random.default_rng(1)
    short = torch.from_numpy(rng.integers(0, cfg.num_tokens, 23))
    long = torch.from_numpy(rng.integers(0, cfg.num_tokens, 40))
    batch = torch.full((2, 40), cfg.pad_id, dtype=torch.long)
    batch[0, :23], batch[1] = short, long
    with torch.no_grad():
        both = bert(batch)
        alone = bert(short[None])
    for slot in alone:
        torch.testing.assert_close(both[slot][0], alone[slot][0], rtol=1e-5, atol=1e-5)
    assert bert.encode(short[None]).shape[1] == 1 + bert_frames(23, cfg)
    for n in (0, 1, 3, 4, 9, 10):  # under 4 token frames leave no position: [CLS] alone
        assert bert.encode(short[None, :n]).shape[1] == 1 + bert_frames(n, cfg)
    assert bert_frames(9, cfg) == 0 and bert_frames(10, cfg) == 1
