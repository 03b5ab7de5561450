"""The engines of ``ondevice bench translate``, and the worker process that times one of them.

Each engine is a small class: ``prepare`` runs once in the harness (it may build a cached
conversion, and raises :class:`EngineUnavailable` with the reason when the engine cannot run here),
then a *fresh worker process* (:func:`main`, ``python -m ondevice.bench.engines JOB RESULT``; the harness
starts it with its own copy of this package first on the path) constructs the engine,
calls ``load`` and times ``translate_batch``.  A fresh process per measurement is what makes peak
RSS meaningful: the number is that engine's own high-water mark (``VmHWM``), not the harness's, and
no engine benefits from another's warm caches or allocator state.  Engine-specific imports happen
inside ``load`` so that the "RSS before loading" baseline is only the interpreter and this module.

Adding an engine is a subclass plus an entry in :data:`ENGINES` (or :func:`register`).

All engines translate the same sentences, and their outputs are scored the same way by the harness
(target tokens counted with one shared SentencePiece model, sacrebleu BLEU/chrF).  Decoding settings
follow the PyTorch reference (:mod:`ondevice.nmt.search`): beam with length penalty 1, at most
``1.2 * source_tokens + 10`` target tokens; CTranslate2 gets the same limit per batch (it has one
limit per call, so in a batch the longest source sets it).
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, ClassVar, Sequence

__all__ = ["Engine", "EngineUnavailable", "ENGINES", "ALIASES", "register", "resolve_names", "read_status_kib",
           "run_job", "main"]


class EngineUnavailable(Exception):
    """The engine cannot run on this machine or in this build; the message says why (shown in the report)."""


# --------------------------------------------------------------------------- process memory


def read_status_kib(field: str, pid: int | str = "self") -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``: resident now, ``VmHWM``: peak resident), or
    None where /proc is not available.  Peak RSS is what the issue compares between engines."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _files_bytes(files: Sequence[str | os.PathLike]) -> int:
    return sum(Path(f).stat().st_size for f in files)


def _dir_files(d: Path) -> list[str]:
    return sorted(str(f) for f in d.rglob("*") if f.is_file())


# --------------------------------------------------------------------------- engines


class Engine:
    """One way of translating with the benchmark's model.

    ``params`` is the JSON-able dict that ``prepare`` returned (model paths etc.); it crosses into the
    worker process.  Subclasses implement ``load(threads)`` and ``translate_batch(sentences, beam)``."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    # which trained model it runs, "fp32" or "quant": its outputs are compared with PyTorch on that model
    model: ClassVar[str] = "fp32"

    def __init__(self, params: dict[str, Any]):
        self.params = params

    @classmethod
    def prepare(cls, opts: dict[str, Any]) -> dict[str, Any]:
        """Harness side, once per benchmark: check the engine can run and build what it loads (cached).

        ``opts``: ``quant_model``, ``fp32_model`` (directories or None), ``work_dir``, ``ct2_method``,
        ``log`` (a progress callable).  Returns the engine's ``params``, which must include
        ``model_files`` (what it loads from disk: the model-size column)."""
        raise NotImplementedError

    def load(self, threads: int, beam: int) -> None:
        """Load the model with ``threads`` intra-op threads (inter-op parallelism off); ``beam`` is the beam
        every call will use (an engine may size buffers for it)."""
        raise NotImplementedError

    def translate_batch(self, sentences: list[str], beam: int) -> list[str]:
        """Translations of ``sentences`` (one call = one batch, as an application would make it)."""
        raise NotImplementedError

    def loaded_files(self) -> list[str] | None:
        """Files actually loaded, if the engine can tell after ``load`` (overrides ``model_files``)."""
        return None


def _need_dir(opts: dict[str, Any], key: str, what: str) -> Path:
    d = opts.get(key)
    if d is None or not Path(d).is_dir():
        raise EngineUnavailable(f"{what} not found ({d or 'no path'}); pass --{key.replace('_', '-')}")
    return Path(d)


def _need_module(name: str, hint: str) -> None:
    """Is ``name`` installed?  Checked without importing it, so the harness stays light."""
    import importlib.util

    if importlib.util.find_spec(name) is None:
        raise EngineUnavailable(f"{name} is not installed ({hint})")


def _onnx_dir_of(model_dir: Path) -> Path:
    """A model card directory keeps its ONNX export in onnx/ (as ondevice.Translator resolves it)."""
    return model_dir / "onnx" if (model_dir / "onnx" / "manifest.json").is_file() else model_dir


class TorchEngine(Engine):
    """``ondevice.Translator(backend="torch")``: the PyTorch reference decoder."""

    model_key: ClassVar[str] = "fp32_model"

    @classmethod
    def prepare(cls, opts: dict[str, Any]) -> dict[str, Any]:
        _need_module("torch", "pip install '.[train]'")
        d = _need_dir(opts, cls.model_key, "model directory")
        return {"model": str(d), "model_files": cls._files(d)}

    @staticmethod
    def _files(d: Path) -> list[str]:
        """The checkpoint and tokenizer of a card/training directory, or a packed model's files."""
        card = d / "card.json"
        if card.is_file():
            c = json.loads(card.read_text(encoding="utf-8"))
            if c.get("format") == "packed":
                return _dir_files(d / c["packed"])
            return [str(d / c["checkpoint"]), str(d / "spm.model")]
        if (d / "manifest.json").is_file():
            return _dir_files(d)
        return [str(d / "checkpoint_best.pt"), str(d / "spm.model")]

    def load(self, threads: int, beam: int) -> None:
        import torch

        from ..translator import Translator

        torch.set_num_interop_threads(1)
        self.tr = Translator(self.params["model"], threads=threads, backend="torch", beam_size=beam)

    def translate_batch(self, sentences: list[str], beam: int) -> list[str]:
        return self.tr.translate_batch(sentences, beam_size=beam)


class TorchFp32Engine(TorchEngine):
    name = "torch-fp32"
    description = "PyTorch fp32 (ondevice.Translator backend='torch' on the fp32 model)"
    model_key = "fp32_model"


class TorchQuantEngine(TorchEngine):
    name = "torch-quant"
    description = ("PyTorch on the quantized model (backend='torch'; bit-planes dequantized to fp32 at load: "
                   "fp32 compute, the quantized model's outputs)")
    model_key = "quant_model"
    model = "quant"


class OrtEngine(Engine):
    """``ondevice.onnx_export.OnnxTranslator``: stock onnxruntime (CPU provider) on an export directory."""

    def load(self, threads: int, beam: int) -> None:
        from ..onnx_export import OnnxTranslator

        self.tr = OnnxTranslator(self.params["onnx_dir"], threads=threads, beam_size=beam)

    def translate_batch(self, sentences: list[str], beam: int) -> list[str]:
        return self.tr.translate_batch(sentences, beam_size=beam)

    @staticmethod
    def _check_ort() -> None:
        _need_module("onnxruntime", "pip install '.[export]'")

    @staticmethod
    def _export_files(onnx_dir: Path) -> list[str]:
        from ..onnx_export.manifest import read_manifest

        m = read_manifest(onnx_dir, verify_files=False)
        return [str(onnx_dir / f["path"]) for f in m["files"]]


class OrtQuantEngine(OrtEngine):
    name = "ort-quant"
    description = ("onnxruntime on our quantized export (bit-plane ops run through their ONNX function "
                   "bodies: dequantize, then MatMul)")
    model = "quant"

    @classmethod
    def prepare(cls, opts: dict[str, Any]) -> dict[str, Any]:
        cls._check_ort()
        d = _onnx_dir_of(_need_dir(opts, "quant_model", "quantized model directory"))
        if not (d / "manifest.json").is_file():
            raise EngineUnavailable(f"{d} has no ONNX export (ondevice export nmt --model <packed> --out ...)")
        return {"onnx_dir": str(d), "model_files": cls._export_files(d)}


class OrtFp32Engine(OrtEngine):
    name = "ort-fp32"
    description = "onnxruntime on the fp32 export of the fp32 model (ondevice export nmt --fp32; cached)"

    @classmethod
    def prepare(cls, opts: dict[str, Any]) -> dict[str, Any]:
        cls._check_ort()
        d = _need_dir(opts, "fp32_model", "fp32 model directory")
        out = cached_fp32_export(d, Path(opts["work_dir"]) / "onnx-fp32", opts.get("log"))
        return {"onnx_dir": str(out), "model_files": cls._export_files(out)}


def cached_fp32_export(model_dir: Path, out: Path, log=None) -> Path:
    """``ondevice export nmt --fp32`` of ``model_dir`` into ``out``, redone only when the source files
    changed (their sha256 are kept in ``<out>.stamp.json`` beside the export, whose manifest lists only
    its own files)."""
    from ..atomic import atomic_write_text
    from ..onnx_export import export_nmt
    from .ct2_convert import _sha256, source_files

    files = source_files(model_dir)
    card = {}
    if (model_dir / "card.json").is_file():
        card = json.loads((model_dir / "card.json").read_text(encoding="utf-8"))
    stamp_path = out.with_name(out.name + ".stamp.json")
    want = {"sources": {f.name: _sha256(f) for f in files}}
    try:
        have = json.loads(stamp_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        have = None
    if have == want and (out / "manifest.json").is_file():
        return out
    if log:
        log(f"exporting {model_dir} as fp32 ONNX to {out} (once; cached)")
    export_nmt(model_dir, out, fp32=True, checkpoint=files[0].name, src=card.get("src"), tgt=card.get("tgt"))
    atomic_write_text(stamp_path, json.dumps(want, indent=1) + "\n")
    return out


class Ct2Engine(Engine):
    name = "ct2-int8"
    description = ("CTranslate2 int8 (compute_type int8) on the fp32 model converted with CTranslate2's "
                   "converter framework (ondevice/bench/ct2_convert.py; cached)")
    quantization: ClassVar[str] = "int8"

    @classmethod
    def prepare(cls, opts: dict[str, Any]) -> dict[str, Any]:
        _need_module("ctranslate2", "pip install '.[bench]'")
        from . import ct2_convert

        d = _need_dir(opts, "fp32_model", "fp32 model directory")
        method = opts.get("ct2_method") or "spec"
        out = Path(opts["work_dir"]) / f"ct2-{cls.quantization}-{method}"
        if opts.get("log"):
            opts["log"](f"CTranslate2 conversion of {d} ({cls.quantization}, {method}) -> {out}")
        out, reused = ct2_convert.cached_convert(d, out, quantization=cls.quantization, method=method)
        return {"ct2_dir": str(out), "method": method, "reused": reused,
                "model_files": [str(f) for f in ct2_convert.model_files(out)]}

    def load(self, threads: int, beam: int) -> None:
        import ctranslate2

        from ..nmt.tokenizer import Tokenizer
        from .ct2_convert import CT2_TOKENIZER

        d = Path(self.params["ct2_dir"])
        self.tok = Tokenizer(d / CT2_TOKENIZER)
        self.tr = ctranslate2.Translator(str(d), device="cpu", compute_type=self.quantization,
                                         inter_threads=1, intra_threads=threads)

    def translate_batch(self, sentences: list[str], beam: int) -> list[str]:
        texts = [" ".join(s.split()) for s in sentences]
        todo = [i for i, t in enumerate(texts) if t]
        out = [""] * len(texts)
        if not todo:
            return out
        pieces = self.tok.sp.Encode([texts[i] for i in todo], out_type=str)
        # the reference limit: int(1.2 * source tokens (with eos) + 10), one value per call
        limit = max(int(1.2 * (len(p) + 1) + 10) for p in pieces)
        res = self.tr.translate_batch(pieces, beam_size=beam, length_penalty=1.0, max_decoding_length=limit,
                                      min_decoding_length=1)
        sp = self.tok.sp
        ids = [[sp.PieceToId(t) for t in r.hypotheses[0]] for r in res]
        for i, text in zip(todo, self.tok.decode(ids)):  # the shared decode: drops specials, keeps unk
            out[i] = text
        return out


class Ct2Fp32Engine(Ct2Engine):
    name = "ct2-fp32"
    description = ("CTranslate2 float32 on the same conversion without quantization (not in the default set: it "
                   "separates conversion error from int8 error in the agreement with PyTorch fp32)")
    quantization = "float32"


class NativeEngine(Engine):
    name = "native"
    description = "ondevice native C++ runtime (ondevice.Translator backend='native') on the quantized model"
    model = "quant"

    @classmethod
    def prepare(cls, opts: dict[str, Any]) -> dict[str, Any]:
        from .. import translator

        backends = getattr(translator, "BACKENDS", ())
        if "native" not in backends:
            raise EngineUnavailable("ondevice.Translator has no 'native' backend in this build (backends: "
                                    f"{', '.join(backends)}); the C++ runtime's Python API is not there yet")
        d = _need_dir(opts, "quant_model", "quantized model directory")
        onnx = _onnx_dir_of(d)
        files = _dir_files(onnx) if onnx != d else TorchEngine._files(d)
        return {"model": str(d), "model_files": files}

    def load(self, threads: int, beam: int) -> None:
        from ..translator import Translator

        self.tr = Translator(self.params["model"], backend="native", threads=threads, beam_size=beam)

    def translate_batch(self, sentences: list[str], beam: int) -> list[str]:
        return self.tr.translate_batch(sentences, beam_size=beam)

    def loaded_files(self) -> list[str] | None:
        files = getattr(self.tr, "model_files", None)
        return [str(f) for f in files] if files else None


class EchoEngine(Engine):
    """Returns each source sentence unchanged: the harness's own cost per sentence, and a check of the
    memory measurement (``alloc_mib`` touches that much memory at load).  ``sleep_s`` / ``fail`` make a
    worker hang or raise, ``sleep_per_batch_s`` makes it slow, to test that the harness reports instead
    of hanging or crashing."""

    name = "echo"
    description = "identity (no model): harness overhead; for tests"
    model = "none"

    @classmethod
    def prepare(cls, opts: dict[str, Any]) -> dict[str, Any]:
        return {"model_files": [], **opts.get("echo", {})}

    def load(self, threads: int, beam: int) -> None:
        if self.params.get("fail"):
            raise RuntimeError("echo engine asked to fail")
        self.buffer = bytearray(int(self.params.get("alloc_mib", 0)) << 20)
        for i in range(0, len(self.buffer), 4096):  # touch every page so it is resident
            self.buffer[i] = 1
        time.sleep(float(self.params.get("sleep_s", 0)))

    def translate_batch(self, sentences: list[str], beam: int) -> list[str]:
        time.sleep(float(self.params.get("sleep_per_batch_s", 0)))
        return list(sentences)


ENGINES: dict[str, type[Engine]] = {}
ALIASES = {"torch": "torch-fp32", "ct2": "ct2-int8", "ctranslate2": "ct2-int8", "onnxruntime": "ort-quant",
           "ort": "ort-quant"}
DEFAULT_ORDER = ("native", "ct2-int8", "ort-fp32", "torch-fp32", "torch-quant", "ort-quant")
REFERENCES = {"fp32": "torch-fp32", "quant": "torch-quant"}  # PyTorch on the same trained model


def register(cls: type[Engine]) -> type[Engine]:
    """Adds an engine class under its ``name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    ENGINES[cls.name] = cls
    return cls


for _cls in (NativeEngine, Ct2Engine, OrtFp32Engine, TorchFp32Engine, TorchQuantEngine, OrtQuantEngine,
             Ct2Fp32Engine, EchoEngine):
    register(_cls)


def resolve_names(names: Sequence[str]) -> list[str]:
    """Engine names with aliases resolved, in the given order, without repeats; unknown names are an error."""
    from ..errors import ConfigError

    out: list[str] = []
    for n in names:
        full = ALIASES.get(n, n)
        if full not in ENGINES:
            raise ConfigError(f"unknown engine {n!r}; known: {', '.join(ENGINES)} (aliases: "
                              f"{', '.join(f'{a}={b}' for a, b in ALIASES.items())})")
        if full not in out:
            out.append(full)
    return out


# --------------------------------------------------------------------------- the worker


def _one_pass(engine: Engine, sentences: list[str], batch: int, beam: int,
              deadline: float | None = None) -> tuple[float, list[float], list[str]]:
    """Translates every sentence in consecutive batches of ``batch``; (wall seconds, per-sentence latency of
    each batch = batch time / batch size, outputs).  Past ``deadline`` (a perf_counter time) no further
    batch starts: the outputs are then a prefix, so that an engine too slow for the budget still gets
    numbers (flagged as partial) instead of only a timeout."""
    outs: list[str] = []
    lat: list[float] = []
    start = time.perf_counter()
    for k in range(0, len(sentences), batch):
        if deadline is not None and k and time.perf_counter() > deadline:
            break
        chunk = sentences[k:k + batch]
        t0 = time.perf_counter()
        outs += engine.translate_batch(chunk, beam)
        lat.append((time.perf_counter() - t0) / len(chunk))
    return time.perf_counter() - start, lat, outs


def run_job(job: dict[str, Any], say=None, stage: dict[str, str] | None = None) -> dict[str, Any]:
    """Loads one engine and times it: one warm-up pass, then up to ``runs`` timed passes, stopping early
    when another pass would exceed ``max_seconds`` (counted from the warm-up's start).  Returns timings,
    outputs and the process's memory figures.  ``stage["now"]`` says how far it got ("load", then
    "translate"), so a failure can be told apart: a failed load fails every configuration alike."""
    say = say or (lambda msg: None)
    stage = {} if stage is None else stage
    stage["now"] = "load"
    res: dict[str, Any] = {"rss_start_kib": read_status_kib("VmRSS"), "hwm_start_kib": read_status_kib("VmHWM")}
    engine = ENGINES[job["engine"]](job["params"])
    t0 = time.perf_counter()
    engine.load(int(job["threads"]), int(job["beam"]))
    stage["now"] = "translate"
    res["load_seconds"] = time.perf_counter() - t0
    res["rss_loaded_kib"] = read_status_kib("VmRSS")
    res["loaded_files"] = engine.loaded_files()
    sentences, batch, beam = job["sentences"], int(job["batch"]), int(job["beam"])
    budget = float(job.get("max_seconds") or float("inf"))
    begin = time.perf_counter()
    secs, lat, outs = _one_pass(engine, sentences, batch, beam, begin + budget)
    res["warmup"] = {"seconds": secs, "latencies": lat, "outputs": outs}
    runs: list[dict[str, Any]] = []
    if len(outs) < len(sentences):
        res["partial"] = len(outs)
        res["stopped"] = (f"max_seconds {budget:g} reached during the warm-up, after {len(outs)} of "
                          f"{len(sentences)} sentences")
        say(res["stopped"])
    else:
        say(f"warm-up {secs:.1f} s")
    last = secs
    for r in range(int(job["runs"]) if "partial" not in res else 0):
        if time.perf_counter() - begin + last > budget:
            res["stopped"] = f"max_seconds {budget:g} reached after {len(runs)} timed run(s)"
            say(res["stopped"])
            break
        last, lat, run_outs = _one_pass(engine, sentences, batch, beam)
        runs.append({"seconds": last, "latencies": lat, "outputs": None if run_outs == outs else run_outs})
        say(f"run {r + 1}/{job['runs']} {last:.1f} s")
    res["runs"] = runs
    res["rss_end_kib"] = read_status_kib("VmRSS")
    res["peak_rss_kib"] = read_status_kib("VmHWM")
    return res


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m ondevice.bench.engines JOB.json RESULT.json``.  Always writes RESULT
    (status ok / unavailable / error with the reason), so the harness can report instead of crash."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: python -m ondevice.bench.engines JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    tag = job.get("tag", job.get("engine", "?"))

    def say(msg: str) -> None:
        print(f"    {tag}: {msg}", file=sys.stderr, flush=True)

    stage: dict[str, str] = {}
    try:
        res = run_job(job, say, stage)
        res["status"] = "ok"
    except EngineUnavailable as e:
        res = {"status": "unavailable", "reason": str(e), "stage": stage.get("now")}
    except Exception as e:  # reported in the table, not fatal to the benchmark
        res = {"status": "error", "reason": f"{type(e).__name__}: {e}", "stage": stage.get("now"),
               "traceback": traceback.format_exc(limit=8)}
        say(res["reason"])
    res["peak_rss_kib_final"] = read_status_kib("VmHWM")
    from ..atomic import atomic_write_text

    atomic_write_text(argv[1], json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
