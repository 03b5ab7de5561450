"""The accuracy breakdowns of the speech model card (ondevice/slu/evaluate.py)."""

from __future__ import annotations

import numpy as np
import pytest

from ondevice.slu.evaluate import by_phrasing, by_voice


def test_by_phrasing_splits_seen_and_heldout():
    ok = np.array([True, False, True, True])
    held = np.array([False, False, True, True])
    r = by_phrasing(ok, held)
    assert r == {"seen_phrasing_intent_accuracy": 0.5, "seen_phrasing_n": 2,
                 "heldout_phrasing_intent_accuracy": 1.0, "heldout_phrasing_n": 2}
    assert by_phrasing(ok, None) == {}
    assert "heldout_phrasing_n" not in by_phrasing(ok, np.zeros(4, bool))


def test_by_voice_pools_variants_of_a_base_voice():
    ok = np.array([True, True, False, False, True])
    held = np.array([False, True, False, True, False])
    r = by_voice(ok, held, ["espeak-ng:en-us-nyc+f4", "espeak-ng:en-us-nyc+Gene", "flite:rms", "flite:rms",
                            "espeak-ng:en-gb-scotland"])
    assert list(r) == ["espeak-ng:en-gb-scotland", "espeak-ng:en-us-nyc", "flite:rms"]
    assert r["espeak-ng:en-us-nyc"]["n"] == 2 and r["espeak-ng:en-us-nyc"]["intent_accuracy"] == 1.0
    assert r["flite:rms"]["intent_accuracy"] == 0.0
    assert r["flite:rms"]["seen_phrasing_n"] == 1 and r["flite:rms"]["heldout_phrasing_n"] == 1
    assert r["espeak-ng:en-gb-scotland"]["seen_phrasing_intent_accuracy"] == pytest.approx(1.0)
