"""Intent accuracy of a deployed speech model (``ondevice.Understander``) on a corpus split: the
numbers of the model card and of the CI regression come from here, through the same path as
``ondevice understand`` (file -> audio reader -> exported graph), not from the training code."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..progress import Progress
from .dataset import read_manifest


def evaluate_understander(understander, corpus_dir: str | os.PathLike, split: str = "test",
                          limit: int | None = None, progress: bool = True) -> dict:
    """Accuracy (all three slots right) overall and by seen / held-out phrasing, per-slot accuracy,
    and the median time per utterance (audio read + resample + model)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive number of utterances, got {limit!r}")
    root = Path(corpus_dir)
    rows = read_manifest(root / f"{split}.jsonl")
    if limit is not None:
        rows = rows[:limit]
    ok, heldout, times, voice = [], [], [], []
    slot_ok: dict[str, list[bool]] = {"action": [], "object": [], "location": []}
    with Progress(f"understanding {split}", total=len(rows), unit="utt", enabled=progress) as bar:
        for r in rows:
            t0 = time.perf_counter()
            intent = understander.understand(root / r["path"])
            times.append(time.perf_counter() - t0)
            hits = {s: getattr(intent, s) == r[s] for s in slot_ok}
            for s, h in hits.items():
                slot_ok[s].append(h)
            ok.append(all(hits.values()))
            heldout.append(bool(r.get("heldout_phrasing", False)))
            voice.append(str(r.get("voice", "?")))
            bar.update()
    ok_a, held = np.array(ok), np.array(heldout)
    out = {"split": split, "n": len(ok), "intent_accuracy": float(ok_a.mean()),
           **{f"{s}_accuracy": float(np.mean(v)) for s, v in slot_ok.items()},
           "median_ms_per_utterance": round(1000 * float(np.median(times)), 2), **by_phrasing(ok_a, held),
           "by_voice": by_voice(ok_a, held, voice)}
    return out


def by_voice(ok: np.ndarray, heldout: np.ndarray, voices: list[str]) -> dict[str, dict]:
    """Accuracy per base voice (espeak-ng accent or flite voice; variants pooled): held-out voices
    differ a lot in how close they are to some training voice, and the mean hides that."""
    bases = np.array([v.split("+")[0] for v in voices])  # "espeak-ng:en-us-nyc+f4" -> "espeak-ng:en-us-nyc"
    return {b: {"n": int(m.sum()), "intent_accuracy": float(ok[m].mean()), **by_phrasing(ok[m], heldout[m])}
            for b in sorted(set(bases)) for m in [bases == b]}


def by_phrasing(ok: np.ndarray, heldout: np.ndarray | None, counts: bool = True) -> dict:
    """Intent accuracy of the utterances with seen and with held-out phrasings (the test split holds
    phrasings never used in training: the text teacher bounds what a speech model can get there)."""
    out: dict = {}
    if heldout is not None:
        for name, m in (("seen_phrasing", ~heldout), ("heldout_phrasing", heldout)):
            if m.any():
                out[f"{name}_intent_accuracy"] = float(ok[m].mean())
                if counts:
                    out[f"{name}_n"] = int(m.sum())
    return out
