"""The transfer set (ondevice/slu/transfer.py) and its use in fine-tuning (distill.transfer_loss,
finetune's ``transfer``, train's ``transfer`` setting)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ondevice.errors import ConfigError, DataError
from ondevice.slu import transfer as tr

_spec = importlib.util.spec_from_file_location("data_builders", Path(__file__).parent / "fixtures" / "data_builders.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

HAVE_RENDER = shutil.which("espeak-ng") is not None and shutil.which("sox") is not None


def test_clean_sentence_keeps_plain_words_only():
    assert tr.clean_sentence("Open the File!") == "open the file"
    assert tr.clean_sentence("Don\u2019t save changes") == "don't save changes"
    assert tr.clean_sentence("Salt & pepper") == "salt and pepper"
    for bad in ("Open", "Page %d of %s", "Version 2", "<b>Bold</b> text", "see https://x.org now",
                "one two three four five six seven eight nine ten eleven twelve thirteen", "", "'quoted' 'words'x'"):
        assert tr.clean_sentence(bad) is None, bad


def test_leakage_guard_excludes_phrasings_and_held_out_substrings():
    every, held = tr.excluded_strings()
    assert held and set(held) <= every
    h = held[0]
    assert tr.leaks(h, every, held)
    assert tr.leaks(f"and then {h} again", every, held)           # contains a held-out phrasing
    seen = sorted(every - set(held))[0]
    assert tr.leaks(seen, every, held)                              # equals a seen phrasing
    assert not tr.leaks(f"x{h}", every, held)                       # not on a word boundary
    assert not tr.leaks("the remembered state of the numlock led", every, held)
    comma = sorted(h for h in held if "," in h)[0]                   # a comma cannot hide a phrasing
    assert tr.leaks(tr.clean_sentence(comma), every, held)
    assert tr.leaks(f"well {tr.clean_sentence(comma)} now", every, held)


def _fixture(root: Path) -> tuple[Path, Path]:
    """(bible_db, locale_dir): the data tests' catalogs, and their Bible with two verses in plain
    words (the fixture's verses all carry numbers, which the rules drop)."""
    _, locale = fx.make_fixture(root)
    verses = fx.fixture_verses()
    verses["4"][(fx.GEN, 1, 1)] = "In the beginning God created the heaven and the earth; and it was good."
    verses["k"][(fx.GEN, 1, 2)] = "And the earth was without form, and void."
    return fx.build_bible_db(root / "plain.db", verses), locale


def test_candidates_and_choice_are_deterministic_and_guarded(tmp_path):
    db, locale = _fixture(tmp_path / "fx")
    cands = tr.candidate_sentences(db, locale)
    assert cands["ui"] and cands["bible"]
    every, held = tr.excluded_strings()
    for pool in cands.values():
        assert pool == sorted(set(pool))
        for s in pool:
            assert tr.clean_sentence(s) == s and not tr.leaks(s, every, held)
    assert cands["bible"] == ["and it was good", "and the earth was without form", "and void",
                              "in the beginning god created the heaven and the earth"]   # clauses
    a = tr.choose_sentences(cands, {"ui": 2, "bible": 3}, seed=1)
    assert a == tr.choose_sentences(cands, {"ui": 2, "bible": 3}, seed=1)
    assert sorted(src for src, _ in a) == ["bible"] * 3 + ["ui"] * 2
    assert any(tr.choose_sentences(cands, {"ui": 2, "bible": 3}, seed=k) != a for k in range(2, 6))
    with pytest.raises(DataError, match="sentences pass the rules"):
        tr.choose_sentences(cands, {"ui": len(cands["ui"]) + 1}, seed=0)


@pytest.mark.skipif(not HAVE_RENDER, reason="espeak-ng and sox are not installed")
def test_generate_transfer_renders_resumes_and_refuses_other_settings(tmp_path):
    from ondevice.slu.dataset import load_split

    db, locale = _fixture(tmp_path / "fx")
    out = tmp_path / "transfer"
    stats = tr.generate_transfer(out, {"ui": 2, "bible": 2}, engines=("espeak-ng",), bible_db=db,
                                 locale_dir=locale, progress=False)
    assert stats["utterances"] == 4 and stats["rendered"] == 4 and stats["by_engine"] == {"espeak-ng": 4}
    rows = [json.loads(x) for x in (out / "transfer.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == [f"transfer_{i:06d}" for i in range(4)]
    for r in rows:
        assert "action" not in r and (out / r["path"]).stat().st_size > 1000
        assert r["voice"].startswith("espeak-ng:") and r["source"] in ("ui", "bible")
    again = tr.generate_transfer(out, {"ui": 2, "bible": 2}, engines=("espeak-ng",), bible_db=db,
                                 locale_dir=locale, progress=False)
    assert again["rendered"] == 0
    with pytest.raises(DataError, match="different sizes"):
        tr.generate_transfer(out, {"ui": 3, "bible": 2}, engines=("espeak-ng",), bible_db=db,
                             locale_dir=locale, progress=False)
    sp = load_split(out, tr.SPLIT, labelled=False, progress=False)
    assert len(sp) == 4 and sp.labels == {} and sp.transcripts == [r["transcript"] for r in rows]
    with pytest.raises(DataError, match="not a manifest row"):
        load_split(out, tr.SPLIT, progress=False)   # a labelled split needs the slot fields


def test_generate_transfer_checks_arguments(tmp_path):
    with pytest.raises(DataError, match="not all 0"):
        tr.generate_transfer(tmp_path / "t", {"ui": 0, "bible": 0})
    with pytest.raises(DataError, match="workers"):
        tr.generate_transfer(tmp_path / "t", {"ui": 1}, workers=0)
    assert not (tmp_path / "t").exists()


def test_transfer_loss_is_zero_at_the_teacher_and_pulls_towards_it():
    from ondevice.slu.distill import split_logits, transfer_loss

    torch.manual_seed(0)
    teacher = torch.randn(5, 6 + 14 + 4) * 3
    assert transfer_loss(split_logits(teacher.clone()), teacher).abs().item() < 1e-5
    student = torch.zeros_like(teacher, requires_grad=True)
    loss = transfer_loss(split_logits(student), teacher)
    assert loss.item() > 0.1
    loss.backward()
    # one gradient step moves the student's distributions towards the teacher's
    with torch.no_grad():
        moved = student - 0.5 * student.grad
    assert transfer_loss(split_logits(moved), teacher).item() < loss.item()


def _tiny_data():
    """(a tiny model config, 6 labelled token sequences, their labels, 5 unlabelled ones)."""
    from ondevice.slu.model import SLUConfig

    tiny = dict(conv_channels=16, d_model=32, heads=2, ffn_dim=64, layers=1, vq_codewords=8, max_frames=256)
    torch.manual_seed(0)
    cfg = SLUConfig(**tiny).validate()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, cfg.num_tokens, int(n)) for n in rng.integers(20, 40, 6)]
    labels = {k: np.zeros(len(seqs), np.int64) for k in ("action", "object", "location")}
    return cfg, seqs, labels, [rng.integers(0, cfg.num_tokens, int(n)) for n in rng.integers(20, 40, 5)]


def test_finetune_draws_transfer_batches():
    from ondevice.slu.distill import finetune
    from ondevice.slu.model import SpeechBert

    cfg, seqs, labels, tseqs = _tiny_data()
    tlogits = torch.randn(5, 24)
    with pytest.raises(ValueError, match="5 token sequences, 4 teacher logits"):
        finetune(SpeechBert(cfg), seqs, labels, None, (seqs, labels), epochs=1, progress=False,
                 log=lambda _: None, transfer=(tseqs, tlogits[:4]))
    trained = {}
    for weight in (0.0, 1.0):  # the same seed and draws; only the transfer term's weight differs
        torch.manual_seed(1)
        bert = SpeechBert(cfg)
        _, hist = finetune(bert, seqs, labels, None, (seqs, labels), epochs=1, progress=False, log=lambda _: None,
                           transfer=(tseqs, tlogits), transfer_batch=3, transfer_weight=weight)
        assert len(hist) == 1
        trained[weight] = bert.state_dict()
    assert any(not torch.equal(trained[0.0][k], v) for k, v in trained[1.0].items())


def test_finetune_with_encoder_vectors_fits_kd_proj():
    from ondevice.slu.distill import finetune, rep_loss
    from ondevice.slu.model import SpeechBert

    cfg, seqs, labels, tseqs = _tiny_data()
    bert = SpeechBert(cfg, teacher_dim=8)
    reps, treps = torch.randn(6, 8), torch.randn(5, 8)
    with pytest.raises(ValueError, match="rep_targets"):
        finetune(bert, seqs, labels, None, (seqs, labels), epochs=1, progress=False, log=lambda _: None,
                 rep_targets=reps)
    scale = torch.cat([reps, treps]).pow(2).mean()
    with torch.no_grad():
        before = rep_loss(bert.eval(), bert.encode(torch.from_numpy(np.stack([s[:20] for s in seqs]))), reps, scale)
    bert, _ = finetune(bert, seqs, labels, None, (seqs, labels), epochs=8, lr=3e-3, progress=False,
                       log=lambda _: None, transfer=(tseqs, treps), transfer_batch=3, rep_targets=reps)
    with torch.no_grad():
        after = rep_loss(bert, bert.encode(torch.from_numpy(np.stack([s[:20] for s in seqs]))), reps, scale)
    assert after < before


def test_transfer_setting_is_checked(tmp_path):
    from ondevice.slu.train import SLUTrainConfig, run_stages

    with pytest.raises(ConfigError, match="no transfer set"):
        run_stages(SLUTrainConfig(corpus="/nonexistent", out=str(tmp_path / "run"), transfer=str(tmp_path)))
    (tmp_path / "transfer.jsonl").write_text("")
    with pytest.raises(ConfigError, match="transfer_target"):
        run_stages(SLUTrainConfig(corpus="/nonexistent", out=str(tmp_path / "run"), transfer=str(tmp_path),
                                  transfer_target="slots"))
    with pytest.raises(ConfigError, match="transfer_batch"):
        run_stages(SLUTrainConfig(corpus="/nonexistent", out=str(tmp_path / "run"), transfer=str(tmp_path),
                                  transfer_batch=0))


@pytest.mark.skipif(not HAVE_RENDER, reason="espeak-ng and sox are not installed")
def test_a_sentence_the_engine_cannot_say_is_left_out(tmp_path, monkeypatch):
    db, locale = _fixture(tmp_path / "fx")
    real = tr._render_one

    def crash_on_first(item):
        if item[1].endswith("transfer_000000.wav"):
            raise DataError("espeak-ng failed to say it (exit -11)")
        return real(item)

    monkeypatch.setattr(tr, "_render_one", crash_on_first)
    stats = tr.generate_transfer(tmp_path / "t", {"ui": 1, "bible": 2}, engines=("espeak-ng",), bible_db=db,
                                 locale_dir=locale, progress=False)
    assert stats["utterances"] == 2 and [f["id"] for f in stats["failed"]] == ["transfer_000000"]
    assert "exit -11" in stats["failed"][0]["error"]
    rows = [json.loads(x) for x in (tmp_path / "t" / "transfer.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["transfer_000001", "transfer_000002"]


@pytest.mark.skipif(not HAVE_RENDER, reason="espeak-ng and sox are not installed")
def test_a_broken_engine_stops_the_set_and_lists_the_failures(tmp_path, monkeypatch):
    assert tr.max_failed(100) == 20 and tr.max_failed(20000) == 200
    db, locale = _fixture(tmp_path / "fx")

    def broken(item):
        raise DataError("sox not found")

    monkeypatch.setattr(tr, "_render_one", broken)
    monkeypatch.setattr(tr, "max_failed", lambda n: 1)
    with pytest.raises(DataError, match="3 of 3 sentences could not be rendered.*sox not found"):
        tr.generate_transfer(tmp_path / "t", {"ui": 1, "bible": 2}, engines=("espeak-ng",), bible_db=db,
                             locale_dir=locale, progress=False)
    assert len(json.loads((tmp_path / "t" / "stats.json").read_text())["failed"]) == 3


@pytest.mark.skipif(not HAVE_RENDER, reason="espeak-ng and sox are not installed")
def test_no_engine_and_another_sentence_list_are_refused(tmp_path, monkeypatch):
    db, locale = _fixture(tmp_path / "fx")
    with pytest.raises(DataError, match="no TTS engine"):
        tr.generate_transfer(tmp_path / "t", {"ui": 1}, engines=(), bible_db=db, locale_dir=locale, progress=False)
    assert not (tmp_path / "t").exists()
    monkeypatch.setattr(tr, "_render_one", lambda item: 1.0)
    tr.generate_transfer(tmp_path / "t", {"ui": 1, "bible": 1}, engines=("espeak-ng",), bible_db=db,
                         locale_dir=locale, progress=False)
    # the same seed and sizes but other sentences (another Bible): the WAVs on disk belong to the old list
    verses = fx.fixture_verses()
    verses["4"][(fx.GEN, 1, 1)] = "And God saw the light that it was good."
    other = fx.build_bible_db(tmp_path / "other.db", verses)
    with pytest.raises(DataError, match="sentences_sha256"):
        tr.generate_transfer(tmp_path / "t", {"ui": 1, "bible": 1}, engines=("espeak-ng",), bible_db=other,
                             locale_dir=locale, progress=False)
