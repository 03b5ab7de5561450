"""The SLU corpus in memory: waveforms, transcripts and slot labels of one split.

``ondevice data slu`` writes ``{split}.jsonl`` manifests and 16 kHz mono 16-bit WAVs
(docs/slu-data.md).  Training reads every waveform many times, so a split is loaded once into one
int16 array with offsets and cached beside the corpus as ``.cache/{split}.npz`` (keyed by the
manifest's size and mtime, rebuilt when it changes).
"""

from __future__ import annotations

import json
import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..progress import Progress
from .model import SAMPLE_RATE, SLOTS


@dataclass
class SLUSplit:
    """One split: ``audio[offsets[i]:offsets[i+1]]`` is utterance i (int16); labels are slot indices."""

    name: str
    ids: list[str]
    transcripts: list[str]
    audio: np.ndarray           # int16, all utterances concatenated
    offsets: np.ndarray         # int64 [n+1]
    labels: dict[str, np.ndarray]  # slot -> int64 [n]
    heldout_phrasing: np.ndarray   # bool [n]
    voices: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def wave(self, i: int) -> np.ndarray:
        """Utterance i as float32 in [-1, 1]."""
        return self.audio[self.offsets[i]:self.offsets[i + 1]].astype(np.float32) / 32768.0

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, idx: np.ndarray) -> "SLUSplit":
        """The utterances ``idx`` (a copy, in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        parts = [self.audio[self.offsets[i]:self.offsets[i + 1]] for i in idx]
        lens = np.array([len(p) for p in parts], dtype=np.int64)
        return SLUSplit(self.name, [self.ids[i] for i in idx], [self.transcripts[i] for i in idx],
                        np.concatenate(parts) if parts else np.zeros(0, np.int16),
                        np.concatenate([[0], np.cumsum(lens)]), {k: v[idx] for k, v in self.labels.items()},
                        self.heldout_phrasing[idx], [self.voices[i] for i in idx])


def read_manifest(path: Path, labelled: bool = True) -> list[dict]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise DataError(f"cannot read the SLU manifest {path}: {e.strerror} (make it with `ondevice data slu`)") \
            from None
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            for key in ("id", "path", "transcript") + (tuple(SLOTS) if labelled else ()):
                if key not in row:
                    raise KeyError(key)
        except (ValueError, KeyError) as e:
            raise DataError(f"{path}:{n}: not a manifest row ({e})") from None
        rows.append(row)
    if not rows:
        raise DataError(f"{path} has no utterances")
    return rows


def _read_wav16k(path: Path) -> np.ndarray:
    try:
        with wave.open(str(path), "rb") as w:
            if w.getframerate() != SAMPLE_RATE or w.getnchannels() != 1 or w.getsampwidth() != 2:
                raise DataError(f"{path}: corpus audio must be 16 kHz mono 16-bit, got {w.getframerate()} Hz, "
                                f"{w.getnchannels()} channel(s), {8 * w.getsampwidth()}-bit")
            return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").copy()
    except (OSError, EOFError, wave.Error) as e:
        raise DataError(f"{path}: unreadable WAV ({e})") from None


def load_split(corpus_dir: str | os.PathLike, split: str, limit: int | None = None,
               progress: bool = True, labelled: bool = True) -> SLUSplit:
    """Load ``{corpus_dir}/{split}.jsonl`` and its audio (a whole split is cached as
    ``.cache/{split}.npz``; several processes may load at once).  ``labelled=False``: a manifest
    without slot fields (the transfer set, ondevice/slu/transfer.py); ``labels`` is then empty."""
    root = Path(corpus_dir)
    manifest = root / f"{split}.jsonl"
    rows = read_manifest(manifest, labelled)
    if limit is not None:
        rows = rows[:limit]
    st = manifest.stat()
    key = f"{st.st_size}:{st.st_mtime_ns}:{len(rows)}"
    # Only whole splits are cached: a subset (``limit``) must not evict the full split's cache.
    cache = root / ".cache" / f"{split}.npz"
    audio = offsets = None
    if cache.exists():
        with np.load(cache) as z:
            if str(z["key"]) == key:
                audio, offsets = z["audio"], z["offsets"]
    if audio is None:
        parts = []
        with Progress(f"loading {split} audio", total=len(rows), unit="utt", enabled=progress) as bar:
            for r in rows:
                parts.append(_read_wav16k(root / r["path"]))
                bar.update()
        lens = np.array([len(p) for p in parts], dtype=np.int64)
        audio, offsets = np.concatenate(parts), np.concatenate([[0], np.cumsum(lens)])
        if limit is None:
            cache.parent.mkdir(exist_ok=True)
            tmp = cache.with_name(f"{split}.{os.getpid()}.tmp.npz")  # per process: concurrent loaders
            np.savez(tmp, audio=audio, offsets=offsets, key=np.array(key))
            os.replace(tmp, cache)
    labels = {}
    for slot, vocab in (SLOTS.items() if labelled else ()):
        index = {v: i for i, v in enumerate(vocab)}
        try:
            labels[slot] = np.array([index[r[slot]] for r in rows], dtype=np.int64)
        except KeyError as e:
            raise DataError(f"{manifest}: unknown {slot} {e}") from None
    return SLUSplit(split, [r["id"] for r in rows], [r["transcript"] for r in rows], audio, offsets, labels,
                    np.array([bool(r.get("heldout_phrasing", False)) for r in rows]),
                    [r.get("voice", "") for r in rows])
