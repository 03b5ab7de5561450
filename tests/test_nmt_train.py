"""NMT training pipeline on tiny synthetic data: config validation, tokenizer, resumable
training (interrupted + resumed == uninterrupted), evaluation with sacrebleu."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from ondevice.errors import ConfigError, DataError  # noqa: E402
from ondevice.nmt.config import config_from_dict, load_config  # noqa: E402
from ondevice.nmt.data import ParallelData, make_batches  # noqa: E402
from ondevice.nmt.tokenizer import BOS, EOS, PAD, UNK, Tokenizer, train_sentencepiece  # noqa: E402

WORDS = {"the": "der", "house": "haus", "is": "ist", "small": "klein", "big": "gross", "a": "ein", "dog": "hund",
         "sees": "sieht", "cat": "katze", "and": "und", "red": "rot", "green": "gruen", "tree": "baum",
         "man": "mann", "woman": "frau", "child": "kind", "runs": "laeuft", "sleeps": "schlaeft"}


def make_corpus(root: Path, n_train: int = 600, n_valid: int = 40, seed: int = 0) -> Path:
    """A word-for-word 'language pair' a tiny Transformer learns in a few hundred updates."""
    rng = random.Random(seed)
    en = list(WORDS)
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("valid", n_valid), ("test_bible", n_valid)):
        src, tgt = [], []
        for _ in range(n):
            words = [rng.choice(en) for _ in range(rng.randint(2, 6))]
            src.append(" ".join(words))
            tgt.append(" ".join(WORDS[w] for w in words))
        (data / f"{split}.en").write_text("\n".join(src) + "\n", encoding="utf-8")
        (data / f"{split}.de").write_text("\n".join(tgt) + "\n", encoding="utf-8")
    return data


def tiny_config(root: Path, **kw) -> dict:
    cfg = {"data_dir": str(root / "data"), "save_dir": str(root / "run"), "vocab_size": 60,
           "model": {"d_model": 32, "ffn_dim": 64, "heads": 2, "encoder_layers": 1, "decoder_layers": 1,
                     "dropout": 0.1},
           "max_tokens": 256, "lr": 3e-3, "warmup_updates": 20, "validate_every": 25, "save_every_minutes": 60,
           "threads": 1, "seed": 3}
    cfg.update(kw)
    return cfg


def test_config_validation(tmp_path):
    base = tiny_config(tmp_path)
    config_from_dict(base)
    with pytest.raises(ConfigError, match="unknown key"):
        config_from_dict({**base, "learning_rate": 1.0})
    with pytest.raises(ConfigError, match="unknown model key"):
        config_from_dict({**base, "model": {"dmodel": 3}})
    with pytest.raises(ConfigError, match="max_tokens must be int"):
        config_from_dict({**base, "max_tokens": "many"})
    with pytest.raises(ConfigError, match="missing"):
        config_from_dict({"data_dir": "x"})
    with pytest.raises(ConfigError, match="label_smoothing"):
        config_from_dict({**base, "label_smoothing": 1.5})
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.json")
    (tmp_path / "rel.json").write_text(json.dumps({"data_dir": "d", "save_dir": "s"}))
    assert load_config(tmp_path / "rel.json").data_dir == str((tmp_path / "d").resolve())


def test_tokenizer_ids_and_round_trip(tmp_path):
    data = make_corpus(tmp_path)
    model = train_sentencepiece([data / "train.en", data / "train.de"], tmp_path / "spm.model", vocab_size=60)
    tok = Tokenizer(model)
    assert tok.vocab_size == 60
    assert (tok.sp.bos_id(), tok.sp.pad_id(), tok.sp.eos_id(), tok.sp.unk_id()) == (BOS, PAD, EOS, UNK)
    ids = tok.encode(["the small dog sees a cat"])
    assert ids[0][-1] == EOS
    assert tok.decode(ids) == ["the small dog sees a cat"]
    again = train_sentencepiece([data / "train.en", data / "train.de"], tmp_path / "spm2.model", vocab_size=60)
    # Deterministic: the same pieces and scores (the file also records its temporary path).
    tok2 = Tokenizer(again)
    pieces = [(tok.sp.IdToPiece(i), tok.sp.GetScore(i)) for i in range(tok.vocab_size)]
    assert pieces == [(tok2.sp.IdToPiece(i), tok2.sp.GetScore(i)) for i in range(tok2.vocab_size)]
    with pytest.raises(DataError):
        Tokenizer(tmp_path / "nope.model")
    (tmp_path / "junk.model").write_bytes(b"junk")
    with pytest.raises(DataError):
        Tokenizer(tmp_path / "junk.model")


def test_batches_respect_max_tokens(tmp_path):
    data = make_corpus(tmp_path)
    tok = Tokenizer(train_sentencepiece([data / "train.en", data / "train.de"], tmp_path / "s.model", vocab_size=60))
    pd = ParallelData.load(data, "train", "en", "de", tok, max_len=64)
    batches = make_batches(pd, 100)
    assert sorted(int(i) for b in batches for i in b) == list(range(len(pd)))
    for b in batches:
        longest = max(max(len(pd.src[i]), len(pd.tgt[i])) for i in b)
        assert longest * len(b) <= 100


def _params(run: Path) -> dict:
    return torch.load(run / "checkpoint_last.pt", map_location="cpu", weights_only=False)["model"]


def test_interrupted_and_resumed_run_equals_uninterrupted(tmp_path):
    from ondevice.nmt.train import train

    make_corpus(tmp_path)
    a = config_from_dict(tiny_config(tmp_path, save_dir=str(tmp_path / "a"), max_updates=30))
    sa = train(a, progress=False, log=lambda *_: None)
    assert sa["updates"] == 30
    b1 = config_from_dict(tiny_config(tmp_path, save_dir=str(tmp_path / "b"), max_updates=13))
    train(b1, progress=False, log=lambda *_: None)
    b2 = config_from_dict(tiny_config(tmp_path, save_dir=str(tmp_path / "b"), max_updates=30))
    sb = train(b2, progress=False, log=lambda *_: None)
    assert sb["updates"] == 30
    pa, pb = _params(tmp_path / "a"), _params(tmp_path / "b")
    assert pa.keys() == pb.keys()
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k
    with pytest.raises(ConfigError, match="already holds a run"):
        train(b2, resume=False, progress=False, log=lambda *_: None)


def test_training_learns_and_evaluation_scores(tmp_path):
    from ondevice.nmt.evaluate import evaluate
    from ondevice.nmt.train import average_checkpoints, train

    make_corpus(tmp_path, n_train=1500)
    cfg = config_from_dict(tiny_config(tmp_path, max_updates=300, validate_every=50,
                                       model={"d_model": 64, "ffn_dim": 128, "heads": 4, "encoder_layers": 2,
                                              "decoder_layers": 2, "dropout": 0.0}))
    summary = train(cfg, progress=False, log=lambda *_: None)
    run = tmp_path / "run"
    assert (run / "checkpoint_best.pt").exists() and (run / "spm.model").exists()
    assert json.loads((run / "config.json").read_text())["max_updates"] == 300
    assert summary["best_valid_loss"] < 2.0, summary  # bits per token: far below the unigram entropy
    out = tmp_path / "hyp.txt"
    result = evaluate(run, tmp_path / "data", "test_bible", "en", "de", beam=4, output=out, progress=False)
    assert result["bleu"] > 60, result
    assert result["bleu_signature"].startswith("nrefs:1") and "tok:13a" in result["bleu_signature"]
    assert len(out.read_text().splitlines()) == 40
    greedy = evaluate(run, tmp_path / "data", "test_bible", "en", "de", beam=1, limit=10, progress=False)
    assert greedy["sentences"] == 10
    kept = sorted(run.glob("checkpoint_u*.pt"), key=lambda p: int(p.stem[len("checkpoint_u"):]))
    assert 1 <= len(kept) <= 5
    avg = average_checkpoints(kept[-2:], run / "checkpoint_avg.pt")
    src, out = (torch.load(p, weights_only=False)["model"] for p in (kept[-1], avg))
    ptr = lambda sd, k: sd[k].untyped_storage().data_ptr()  # noqa: E731
    tied = [(a, b) for a in src for b in src if a < b and ptr(src, a) == ptr(src, b)]
    assert tied and all(ptr(out, a) == ptr(out, b) for a, b in tied)  # tied weights are stored once
    assert evaluate(run, tmp_path / "data", "test_bible", "en", "de", beam=2, checkpoint=avg.name,
                    progress=False)["bleu"] > 50


def test_bad_data_is_a_clear_error(tmp_path):
    from ondevice.nmt.train import train

    data = make_corpus(tmp_path)
    (data / "valid.de").write_text("only one line\n")
    with pytest.raises(DataError, match="lines"):
        train(config_from_dict(tiny_config(tmp_path, max_updates=1)), progress=False, log=lambda *_: None)
    (data / "valid.en").write_text("")
    (data / "valid.de").write_text("")
    with pytest.raises(DataError, match="empty"):
        train(config_from_dict(tiny_config(tmp_path, max_updates=1)), progress=False, log=lambda *_: None)
    with pytest.raises(DataError, match="does not exist"):
        train(config_from_dict(tiny_config(tmp_path, data_dir=str(tmp_path / "nowhere"), save_dir=str(tmp_path / "r2"),
                                           max_updates=1)), progress=False, log=lambda *_: None)


def test_two_processes_equal_one_with_the_same_global_batch(tmp_path):
    """torchrun with 2 gloo processes (update_freq 1) == 1 process with update_freq 2."""
    import os
    import subprocess
    import sys

    make_corpus(tmp_path)
    one = tiny_config(tmp_path, save_dir=str(tmp_path / "one"), max_updates=12, update_freq=2)
    two = tiny_config(tmp_path, save_dir=str(tmp_path / "two"), max_updates=12, update_freq=1)
    for name, cfg in (("one", one), ("two", two)):
        (tmp_path / f"{name}.json").write_text(json.dumps(cfg))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "ondevice", "train", "nmt", "--quiet", "--config"]
    r1 = subprocess.run(cmd + [str(tmp_path / "one.json")], capture_output=True, text=True, timeout=600, env=env,
                        cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr[-2000:]
    r2 = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                         "-m", "ondevice", "train", "nmt", "--quiet", "--config", str(tmp_path / "two.json")],
                        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert json.loads(r2.stdout[r2.stdout.index("{"):])["world_size"] == 2
    p1, p2 = _params(tmp_path / "one"), _params(tmp_path / "two")
    for k in p1:
        assert torch.allclose(p1[k], p2[k], atol=1e-5, rtol=1e-4), k


def test_bf16_autocast_trains(tmp_path):
    from ondevice.nmt.train import train

    make_corpus(tmp_path)
    cfg = config_from_dict(tiny_config(tmp_path, max_updates=40, validate_every=20, bf16=True))
    summary = train(cfg, progress=False, log=lambda *_: None)
    ck = torch.load(tmp_path / "run" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert all(v.dtype == torch.float32 for v in ck["model"].values() if v.is_floating_point())  # fp32 masters
    vals = ck["state"]["validations"]
    assert vals[-1]["loss"] < vals[0]["loss"], vals
    assert summary["updates"] == 40


def _quiet(cfg):
    from ondevice.nmt.train import train

    return train(cfg, progress=False, log=lambda *_: None)


def test_rerunning_a_finished_run_does_nothing(tmp_path):
    make_corpus(tmp_path)
    cfg = config_from_dict(tiny_config(tmp_path, max_updates=5))
    assert _quiet(cfg)["updates"] == 5
    before = (tmp_path / "run" / "checkpoint_last.pt").read_bytes()
    again = _quiet(cfg)
    assert again["updates"] == 5 and "nothing to do" in again["stop_reason"]
    assert (tmp_path / "run" / "checkpoint_last.pt").read_bytes() == before


def test_early_stopping_sticks_and_epoch_end_does_not_validate_twice(tmp_path):
    from ondevice.nmt.data import ParallelData, make_batches
    from ondevice.nmt.tokenizer import Tokenizer

    make_corpus(tmp_path)
    # lr 1e-20: the weights move far below float32 resolution of anything they touch, so the validation
    # loss is bit-identical and patience 2 stops after the second validation.  (1e-9 was not small
    # enough: Adam moves zero-initialised biases by ~lr a step, which can lower the loss by an ulp.)
    cfg = config_from_dict(tiny_config(tmp_path, lr=1e-20, warmup_updates=0, patience=2, validate_every=3))
    first = _quiet(cfg)
    assert "no valid improvement" in first["stop_reason"]
    ck = torch.load(tmp_path / "run" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    updates = [v["update"] for v in ck["state"]["validations"]]
    assert len(updates) == len(set(updates)) == 3  # best, then 2 without improvement
    again = _quiet(cfg)
    assert again["updates"] == first["updates"] and "stopped early" in again["stop_reason"]
    # An epoch whose length is a multiple of validate_every validates once at its end.
    tok = Tokenizer(tmp_path / "run" / "spm.model")
    n = len(make_batches(ParallelData.load(tmp_path / "data", "train", "en", "de", tok, 256), 256))
    cfg2 = config_from_dict(tiny_config(tmp_path, save_dir=str(tmp_path / "r2"), validate_every=n, max_epochs=1))
    _quiet(cfg2)
    ck2 = torch.load(tmp_path / "r2" / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    assert [v["update"] for v in ck2["state"]["validations"]] == [n]


def test_resume_refuses_settings_that_change_the_data_order(tmp_path):
    make_corpus(tmp_path)
    _quiet(config_from_dict(tiny_config(tmp_path, max_updates=3)))
    with pytest.raises(ConfigError, match="max_tokens"):
        _quiet(config_from_dict(tiny_config(tmp_path, max_updates=6, max_tokens=300)))
    with pytest.raises(ConfigError, match="global batch"):
        _quiet(config_from_dict(tiny_config(tmp_path, max_updates=6, update_freq=2)))
    assert _quiet(config_from_dict(tiny_config(tmp_path, max_updates=6, patience=3)))["updates"] == 6


def test_lines_are_split_on_newline_only(tmp_path):
    from ondevice.nmt.data import read_lines

    (tmp_path / "a.txt").write_bytes("one\ntwo\rstill two\nthree".encode())
    assert read_lines(tmp_path / "a.txt") == ["one", "two\rstill two", "three"]
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\n")
    with pytest.raises(DataError, match="UTF-8"):
        read_lines(tmp_path / "b.txt")


def test_command_line_overrides(tmp_path, monkeypatch):
    (tmp_path / "cfgdir").mkdir()
    (tmp_path / "cfgdir" / "c.json").write_text(json.dumps(
        {"data_dir": "d", "save_dir": "s", "model": {"d_model": 32, "heads": 2}}))
    monkeypatch.chdir(tmp_path)
    cfg = load_config(tmp_path / "cfgdir" / "c.json", {"save_dir": "runs/x", "model.dropout": 0.3})
    assert cfg.save_dir == str(tmp_path / "runs" / "x")
    assert cfg.data_dir == str(tmp_path / "cfgdir" / "d")
    assert cfg.model == {"d_model": 32, "heads": 2, "dropout": 0.3}
