"""Synthetic rooms for reverb copies (ondevice/slu/reverb.py) and the ``reverb_copies`` setting."""

from __future__ import annotations

import numpy as np
import pytest

from ondevice.errors import ConfigError
from ondevice.slu import reverb


def test_room_impulse_response_has_a_direct_path_and_a_decaying_tail():
    for seed in range(20):
        rng = np.random.default_rng(seed)
        h = reverb.room_impulse_response(rng, 16000).astype(np.float64)
        assert h[0] == 1.0
        assert reverb.RT60_S[0] * 16000 <= h.size <= (reverb.RT60_S[1] + reverb.PRE_DELAY_S[1]) * 16000 + 1
        tail = h[1:]
        drr_db = 10 * np.log10(1.0 / np.sum(tail ** 2))
        assert reverb.DRR_DB[0] - 0.01 <= drr_db <= reverb.DRR_DB[1] + 0.01
        tenth = tail.size // 10
        first, last = np.sum(tail[:tenth] ** 2), np.sum(tail[-tenth:] ** 2)
        assert last < 1e-3 * first  # 60 dB over the tail: the last tenth is far below the first


def test_reverberate_keeps_length_and_peak_and_is_a_convolution():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1001).astype(np.float32) * 0.3
    np.testing.assert_allclose(reverb.reverberate(x, np.array([1.0], np.float32)), x, atol=1e-6)
    h = reverb.room_impulse_response(rng, 16000)
    y = reverb.reverberate(x, h)
    assert y.dtype == np.float32 and y.shape == x.shape
    assert np.isclose(np.abs(y).max(), np.abs(x).max(), rtol=1e-5)
    direct = np.convolve(x.astype(np.float64), h.astype(np.float64))[: x.size]
    np.testing.assert_allclose(y, direct * (np.abs(x).max() / np.abs(direct).max()), rtol=1e-4, atol=1e-5)
    assert reverb.reverberate(np.zeros(0, np.float32), h).size == 0


def test_reverb_transform_is_seeded_by_seed_copy_and_index():
    x = np.random.default_rng(1).standard_normal(4000).astype(np.float32)
    a, b = reverb.reverb_transform(0, 0, 16000), reverb.reverb_transform(0, 1, 16000)
    np.testing.assert_array_equal(a(5, x), reverb.reverb_transform(0, 0, 16000)(5, x))
    assert not np.allclose(a(5, x), a(6, x))
    assert not np.allclose(a(5, x), b(5, x))


def test_reverb_copies_setting_is_checked(tmp_path):
    from ondevice.slu.train import SLUTrainConfig, run_stages

    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigError, match="reverb_copies"):
            run_stages(SLUTrainConfig(corpus="/nonexistent", out=str(tmp_path / "run"), reverb_copies=bad))
