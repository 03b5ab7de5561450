"""``ondevice.Understander``: spoken command -> action / object / location (the public Python API).

``model=None`` is the shipped default speech-intent model (models/slu-intent-bcq, installed with
the package).  Audio can be a file path (WAV of any PCM/float format, FLAC/Ogg via soundfile) or a
numpy array with its sample rate; it is downmixed to mono and resampled to 16 kHz
(:mod:`ondevice.slu.audio`).  Limits: 0.1 s to 30 s per utterance (outside: AudioError; commands
are a few seconds and the model's position table is bounded), and at least the model's
``min_samples`` (0.24 s for the shipped model: one position after its convolutions; shorter:
AudioError too); silence is accepted and gives the model's guess (low scores).

Errors are typed (:mod:`ondevice.errors`) on both backends: bad audio is an AudioError whose message
starts with the file's path (or "audio" for an array); a model directory that cannot be used, or a
model that computes non-finite scores (a corrupt file), is an OnnxModelError naming the directory.

Speed ensemble: a model whose manifest lists ``ensemble_rates`` (the shipped one: 15000, 16000,
17000) is run once per rate on the utterance resampled from 16 kHz to that rate and read as 16 kHz,
i.e. sped up or slowed down with its pitch by 16000/rate; each slot's logits are the mean of the
runs' log-softmax. Voices unlike the training voices land nearer to some training voice in one of
the runs (measured on the held-out voices: +2 points of intent accuracy for 3x the compute; the
model card has the numbers). ``speed_ensemble=False`` makes one run on the audio as it is.

Backends: ``native`` (default; the C++ runtime with LUT bit-plane kernels, no PyTorch or
onnxruntime needed) and ``onnxruntime`` (stock onnxruntime on the same export: the reference).
Both compute the same ensemble. One Understander may be shared by threads.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import AudioError, ConfigError, DataError
from .translator import MAX_THREADS

__all__ = ["Understander", "Intent", "default_slu_model_dir", "BACKENDS"]

BACKENDS = ("native", "onnxruntime")
DEFAULT_MODEL = "slu-intent-bcq"
SAMPLE_RATE = 16000
#: The speed ensemble's rates (speed changes of 0.67x..1.33x: beyond that speech is garbled).
ENSEMBLE_MIN_RATE, ENSEMBLE_MAX_RATE = 12000, 24000


def check_ensemble_rates(rates: Any, where: str) -> list[int]:
    """The speed ensemble's rates (export/README.md section 8; the exporter writes them, both
    backends read them): distinct integers in [ENSEMBLE_MIN_RATE, ENSEMBLE_MAX_RATE], 16000 among
    them; ConfigError otherwise. Here, not in ondevice.slu.export, because reading a model must not
    need PyTorch."""
    if (not isinstance(rates, (list, tuple)) or not rates
            or any(isinstance(r, bool) or not isinstance(r, int) for r in rates)):
        raise ConfigError(f"{where}: a non-empty list of integer sample rates, got {rates!r}")
    if any(not ENSEMBLE_MIN_RATE <= r <= ENSEMBLE_MAX_RATE for r in rates) or len(set(rates)) != len(rates) \
            or SAMPLE_RATE not in rates:
        raise ConfigError(f"{where}: distinct rates in {ENSEMBLE_MIN_RATE}..{ENSEMBLE_MAX_RATE} including "
                          f"{SAMPLE_RATE}, got {list(rates)}")
    return [int(r) for r in rates]


def default_slu_model_dir() -> Path:
    """``$ONDEVICE_SLU_MODEL`` if set, else the copy installed in the package, else the checkout's."""
    env = os.environ.get("ONDEVICE_SLU_MODEL")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for d in (here / "models" / DEFAULT_MODEL, here.parent / "models" / DEFAULT_MODEL):
        if (d / "onnx" / "manifest.json").is_file():
            return d
    raise DataError(f"the default speech model {DEFAULT_MODEL!r} is not installed (looked in {here / 'models'} "
                    f"and {here.parent / 'models'}); pass a model directory or set ONDEVICE_SLU_MODEL")


@dataclass
class Intent:
    """The three slots with their probabilities (softmax over each slot's labels).  The slots are
    decoded jointly over the model's valid intents (the manifest's ``"intents"``; FSC's 31 for older
    exports without it; :func:`ondevice.slu.intents.best_valid_intent`), so the combination always
    exists; ``scores`` are the chosen labels' probabilities."""

    action: str
    object: str
    location: str
    scores: dict[str, float] = field(default_factory=dict)   # slot -> probability of the chosen label
    logits: dict[str, list[float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """FSC's intent label, e.g. ``activate_lights_kitchen``."""
        return f"{self.action}_{self.object}_{self.location}"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "object": self.object, "location": self.location, "intent": self.key,
                "scores": {k: round(v, 6) for k, v in self.scores.items()}}


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def _log_softmax(x: np.ndarray) -> np.ndarray:
    top = x.max()
    return x - (top + np.log(np.exp(x - top).sum()))


def _export_dir(model_dir: Path) -> Path:
    d = model_dir / "onnx" if (model_dir / "onnx" / "manifest.json").is_file() else model_dir
    if not (d / "manifest.json").is_file():
        raise DataError(f"{model_dir} is not a speech model directory (no manifest.json there or in onnx/)")
    return d


class Understander:
    """Recognizes the intent of spoken commands with one model.

    ``model``: a model directory (``models/slu-intent-bcq`` or its ``onnx/`` export), None for the
    default.  ``threads``: 0 = all usable cores.  ``backend``: "native" or "onnxruntime".
    ``speed_ensemble``: use the manifest's ``ensemble_rates`` (module docstring); False: one run."""

    def __init__(self, model: str | os.PathLike | None = None, threads: int = 0, backend: str = "native",
                 speed_ensemble: bool = True):
        if backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= MAX_THREADS:
            raise ConfigError(f"threads must be an integer in 0..{MAX_THREADS} (0: all usable cores), got {threads!r}")
        self.model_dir = Path(model) if model is not None else default_slu_model_dir()
        if not self.model_dir.is_dir():
            raise DataError(f"model directory {self.model_dir} does not exist")
        self.backend = backend
        self._dir = _export_dir(self.model_dir)
        self._lock = threading.Lock()
        self.manifest = self._read_manifest()
        self.slots: dict[str, list[str]] = self.manifest["slots"]
        rates = self.manifest.get("ensemble_rates") or [SAMPLE_RATE]
        #: the rates understand() runs (just 16000 without an ensemble)
        self.ensemble_rates: list[int] = list(rates) if speed_ensemble and len(rates) > 1 else [SAMPLE_RATE]
        threads = threads or len(os.sched_getaffinity(0))
        if backend == "native":
            from . import _core
            from .onnx_export.errors import OnnxModelError

            try:
                self._native = _core.Understander(str(self._dir), threads, speed_ensemble=bool(speed_ensemble))
            except (_core.FormatError, _core.ArgumentError, _core.Error) as e:
                raise OnnxModelError(str(e)) from None
            self._ort = None
        else:
            self._native = None
            self._ort = self._ort_session(threads)

    def _read_manifest(self) -> dict[str, Any]:
        from .onnx_export.errors import OnnxModelError

        path = self._dir / "manifest.json"
        try:
            m = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise OnnxModelError(f"{path}: not a readable manifest ({e})") from None
        if not isinstance(m, dict) or m.get("model_kind") != "slu-intent":
            raise OnnxModelError(f"{path}: not a speech-intent model (model_kind "
                                 f"{m.get('model_kind') if isinstance(m, dict) else None!r})")
        for key in ("slots", "graphs", "sample_rate", "min_samples"):
            if key not in m:
                raise OnnxModelError(f"{path}: missing {key!r}")
        # The types the native runtime checks, for the onnxruntime backend too (and before use here).
        slots = m["slots"]
        if not (isinstance(slots, dict) and set(slots) == {"action", "object", "location"}
                and all(isinstance(v, list) and v and all(isinstance(x, str) for x in v) for v in slots.values())):
            raise OnnxModelError(f"{path}: 'slots' must map action, object and location to non-empty lists of labels")
        graph = m["graphs"].get("understand") if isinstance(m["graphs"], dict) else None
        if not (isinstance(graph, dict) and isinstance(graph.get("file"), str)):
            raise OnnxModelError(f"{path}: 'graphs' must name the 'understand' graph's file")
        if m["sample_rate"] != SAMPLE_RATE or isinstance(m["sample_rate"], bool):
            raise OnnxModelError(f"{path}: sample_rate must be {SAMPLE_RATE}, got {m['sample_rate']!r}")
        max_seconds = m.get("max_seconds", 30.0)
        if isinstance(max_seconds, bool) or not isinstance(max_seconds, (int, float)) or not 0 < max_seconds <= 3600:
            raise OnnxModelError(f"{path}: max_seconds must be a number in (0, 3600], got {max_seconds!r}")
        mins = m["min_samples"]
        if isinstance(mins, float) and mins.is_integer():  # JSON 3825.0: a whole number, as the runtime reads it
            mins = m["min_samples"] = int(mins)
        if isinstance(mins, bool) or not isinstance(mins, int) or not 1 <= mins <= max_seconds * SAMPLE_RATE:
            raise OnnxModelError(f"{path}: min_samples must be a whole number in 1..{int(max_seconds * SAMPLE_RATE)}, "
                                 f"got {mins!r}")
        if "ensemble_rates" in m:  # as the native runtime checks them, for the onnxruntime backend too
            try:
                check_ensemble_rates(m["ensemble_rates"], f"{path}: ensemble_rates")
            except ConfigError as e:
                raise OnnxModelError(str(e)) from None
        if "intents" in m:  # the checks of the native runtime, for the onnxruntime backend too
            intents, slots = m["intents"], m["slots"]
            if not isinstance(intents, list) or not intents:
                raise OnnxModelError(f"{path}: 'intents' must be a non-empty list of [action, object, location]")
            seen = set()
            for k, it in enumerate(intents):
                if not (isinstance(it, list) and len(it) == 3 and all(isinstance(x, str) for x in it)):
                    raise OnnxModelError(f"{path}: intents[{k}] is not a list of 3 labels: {it!r}")
                for slot, label in zip(("action", "object", "location"), it):
                    if label not in slots.get(slot, ()):
                        raise OnnxModelError(f"{path}: intents[{k}]: {label!r} is not one of the {slot} labels")
                if tuple(it) in seen:
                    raise OnnxModelError(f"{path}: intents[{k}]: duplicate intent {it!r}")
                seen.add(tuple(it))
        return m

    def _ort_session(self, threads: int):
        import onnxruntime as ort

        from .onnx_export.manifest import listed_files, verify_listed_files

        verify_listed_files(self._dir, listed_files(self._dir, self.manifest.get("files"),
                                                    self._dir / "manifest.json"))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        graph = self._dir / self.manifest["graphs"]["understand"]["file"]
        return ort.InferenceSession(str(graph), so, providers=["CPUExecutionProvider"])

    def understand(self, audio, sample_rate: int | None = None) -> Intent:
        """The intent of one utterance: a path, a binary file object (e.g. ``sys.stdin.buffer``), or a
        numpy array (``sample_rate`` default 16000)."""
        from .slu.audio import load_audio, source_name

        pcm = load_audio(audio, sample_rate)
        source = source_name(audio)
        min_samples = int(self.manifest["min_samples"])
        if len(pcm) < min_samples:
            raise AudioError(f"{source}: audio too short: {len(pcm)} samples at 16 kHz ({len(pcm) / SAMPLE_RATE:.3g} "
                             f"s), the model needs at least {min_samples} ({min_samples / SAMPLE_RATE:.3g} s)")
        return self._run(np.ascontiguousarray(pcm, dtype=np.float32), source)

    def understand_batch(self, items, sample_rate: int | None = None) -> list[Intent]:
        return [self.understand(x, sample_rate) for x in items]

    def _run(self, pcm: np.ndarray, source: str = "audio") -> Intent:
        if self._native is not None:
            from . import _core
            from .onnx_export.errors import OnnxModelError

            try:
                r = self._native.understand(pcm)
            except _core.ArgumentError as e:  # the audio: load_audio's checks make this rare
                raise AudioError(f"{source}: {e}") from None
            except (_core.FormatError, _core.Error) as e:  # the model: e.g. a corrupt weight gives NaN
                raise OnnxModelError(str(e)) from None
            if self._native.joint_decoding:
                # The runtime decoded over the manifest's intents, exactly as _decode does.
                return Intent(r["action"]["label"], r["object"]["label"], r["location"]["label"],
                              {s: r[s]["score"] for s in self.slots}, {s: list(r[s]["logits"]) for s in self.slots})
            # An older export without "intents": the runtime took each slot's arg max.
            logits = {s: np.asarray(r[s]["logits"], dtype=np.float64) for s in self.slots}
        else:
            logits = self._ort_logits(pcm)
            for slot, v in logits.items():
                if not np.isfinite(v).all():
                    from .onnx_export.errors import OnnxModelError

                    raise OnnxModelError(f"{self._dir}: the model produced a non-finite {slot} logit "
                                         f"({v[~np.isfinite(v)][0]}): the model file is corrupt")
        return self._decode(logits)

    def _ort_logits(self, pcm: np.ndarray) -> dict[str, np.ndarray]:
        """The graph's logits, or the speed ensemble's mean log-softmax, as the native runtime
        computes them (understander.h): resampled copies outside the model's length limits are
        left out; the audio as it is always runs."""
        from .slu.audio import resample

        lo, hi = int(self.manifest["min_samples"]), int(float(self.manifest.get("max_seconds", 30.0)) * SAMPLE_RATE)
        runs = []
        for rate in self.ensemble_rates:
            x = pcm if rate == SAMPLE_RATE else resample(pcm, SAMPLE_RATE, rate)
            if not lo <= len(x) <= hi:
                continue
            with self._lock:
                outs = self._ort.run(None, {"audio": np.ascontiguousarray(x, dtype=np.float32)[None]})
            runs.append({slot: out[0].astype(np.float64) for slot, out in zip(self.slots, outs)})
        if len(self.ensemble_rates) == 1:
            return runs[0]
        return {s: np.mean([_log_softmax(r[s]) for r in runs], axis=0).astype(np.float32).astype(np.float64)
                for s in self.slots}

    def _decode(self, logits: dict[str, np.ndarray]) -> Intent:
        """The valid intent with the highest summed log-probability: the manifest's "intents" (the
        native runtime's choice, ties: the first listed), or FSC's 31 for older exports."""
        from .slu.intents import best_valid_intent

        probs = {s: _softmax(v) for s, v in logits.items()}
        best, _ = best_valid_intent({s: np.log(np.maximum(p, 1e-300)) for s, p in probs.items()},
                                    self.manifest.get("intents"), self.slots)
        labels = {"action": best.action, "object": best.object, "location": best.location}
        scores = {s: float(probs[s][self.slots[s].index(labels[s])]) for s in self.slots}
        return Intent(labels["action"], labels["object"], labels["location"], scores,
                      {s: v.tolist() for s, v in logits.items()})
