"""The reverb-invariant front end (ondevice/slu/dereverb.py), its sox reverb pairs and the
``dereverb`` stage of ``train slu``."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ondevice.errors import ConfigError, DataError  # noqa: E402
from ondevice.slu import dereverb, synth  # noqa: E402
from ondevice.slu.dataset import SLUSplit  # noqa: E402
from ondevice.slu.model import SLUConfig, SpeechTokenizer, kmeans_codebooks  # noqa: E402

TINY = dict(conv_channels=16, d_model=32, heads=2, ffn_dim=64, layers=1, vq_codewords=8, max_frames=256)


@pytest.fixture(autouse=True)
def _need_sox():
    if not shutil.which("sox"):
        pytest.fail("sox is required (scripts/install_system_deps.sh installs it)")


def _vowels(n: int, seed: int) -> list[np.ndarray]:
    """Short harmonic 'utterances' with gaps: 0.6-1.0 s, a few tones of random pitch."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        x = np.zeros(int(rng.integers(9600, 16000)), np.float32)
        t = np.arange(2400) / 16000
        for start in range(800, len(x) - 2400, 3200):
            f0 = rng.uniform(100, 300)
            x[start:start + 2400] = 0.3 * sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
        out.append(x)
    return out


def _split(waves: list[np.ndarray]) -> SLUSplit:
    pcm = [np.round(w * 32767).astype(np.int16) for w in waves]
    lens = np.array([len(p) for p in pcm], np.int64)
    n = len(waves)
    return SLUSplit("train", [str(i) for i in range(n)], [""] * n, np.concatenate(pcm),
                    np.concatenate([[0], np.cumsum(lens)]), {}, np.zeros(n, bool), [""] * n)


def test_sox_reverb_keeps_length_and_adds_a_tail():
    x = np.zeros(8000, np.float32)
    x[1000:1400] = np.sin(np.arange(400) * 0.3) * 0.5
    y = synth.sox_reverb(x, 80, 100)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.abs(y).max() == pytest.approx(10 ** (-1 / 20), abs=1e-3)  # gain -n -1
    assert np.abs(y[1600:4000]).max() > 0.01  # the tail rings on after the burst
    assert 1000 <= int(np.argmax(np.abs(y))) < 1400  # aligned: no delay
    assert np.abs(y[:1000]).max() == 0  # nothing before the burst
    assert np.abs(x[1600:4000]).max() == 0
    np.testing.assert_array_equal(y, synth.sox_reverb(x, 80, 100))
    assert not np.allclose(y, synth.sox_reverb(x, 20, 20))
    short = synth.sox_reverb(x[:100], 50, 50)
    assert short.shape == (100,)


def test_reverb_pairs_take_the_dry_utterances_in_order_and_are_seeded():
    waves = _vowels(5, 0)
    split = _split(waves)
    dry = np.array([False, True, False, True, True])
    d, w = dereverb.reverb_pairs(split, dry, 2, seed=0, progress=False)
    assert len(d) == len(w) == 2
    np.testing.assert_allclose(d[0], split.wave(1))
    np.testing.assert_allclose(d[1], split.wave(3))
    assert all(a.shape == b.shape for a, b in zip(d, w))
    _, w2 = dereverb.reverb_pairs(split, dry, 2, seed=0, progress=False)
    np.testing.assert_array_equal(w[1], w2[1])
    assert dereverb.reverb_pairs(split, np.zeros(5, bool), 2, seed=0, progress=False) == ([], [])


def _tokenizer(waves: list[np.ndarray]) -> SpeechTokenizer:
    """A random tiny tokenizer with k-means codebooks on its own features of ``waves``."""
    torch.manual_seed(0)
    cfg = SLUConfig(**TINY)
    tok = SpeechTokenizer(cfg).eval()
    from ondevice.slu.model import standardize

    with torch.no_grad():
        feats = torch.cat([tok.encoder(standardize(torch.from_numpy(w)[None]))[0] for w in waves])
        books = kmeans_codebooks(feats, cfg.vq_groups, cfg.vq_codewords)  # [G, V, C/G]
        w_ = torch.zeros(cfg.vq_groups * cfg.vq_codewords, cfg.conv_channels)
        b_ = torch.zeros(cfg.vq_groups * cfg.vq_codewords)
        c = cfg.conv_channels // cfg.vq_groups
        for g in range(cfg.vq_groups):  # argmax of 2 x.c - |c|^2 = nearest codeword
            rows = slice(g * cfg.vq_codewords, (g + 1) * cfg.vq_codewords)
            w_[rows, g * c:(g + 1) * c] = 2 * books[g].float()
            b_[rows] = -(books[g].float() ** 2).sum(-1)
        tok.vq_logits.weight.copy_(w_)
        tok.vq_logits.bias.copy_(b_)
    return tok


def test_train_dereverb_moves_reverberant_tokens_to_the_dry_ones_and_leaves_the_teacher():
    waves = _vowels(12, 1)
    dry, wet = dereverb.reverb_pairs(_split(waves), np.ones(12, bool), 12, seed=0, progress=False)
    teacher = _tokenizer(waves)
    before_state = {k: v.clone() for k, v in teacher.state_dict().items()}
    before = dereverb.token_agreement(teacher, teacher, wet, dry)
    assert dereverb.token_agreement(teacher, teacher, dry, dry) == 1.0
    student = dereverb.train_dereverb(teacher, dry, wet, steps=150, batch=8, crop_seconds=0.5, lr=3e-3,
                                      log=lambda _: None, progress=False)
    after = dereverb.token_agreement(student, teacher, wet, dry)
    assert before < 0.9 and after > before + 0.1, (before, after)
    assert all(torch.equal(before_state[k], v) for k, v in teacher.state_dict().items())
    assert not any(p.requires_grad for p in student.parameters())
    assert dereverb.token_agreement(student, teacher, [], []) is None
    with pytest.raises(ConfigError, match="dereverb_steps"):
        dereverb.train_dereverb(teacher, dry, wet, steps=0)
    with pytest.raises(DataError, match="unaugmented"):
        dereverb.train_dereverb(teacher, [], [], steps=5)


def test_dereverb_settings_are_checked(tmp_path):
    from ondevice.slu.train import SLUTrainConfig, run_stages

    for steps, pairs in ((1.5, 10), (True, 10), (-1, 10), (10, 0), (10, "5")):
        with pytest.raises(ConfigError, match="dereverb"):
            run_stages(SLUTrainConfig(corpus="/nonexistent", out=str(tmp_path / "run"), dereverb_steps=steps,
                                      dereverb_pairs=pairs))
