"""``ondevice bench translate``: the same trained model through several translation engines (issue 7, item 8).

Protocol (the paper's): 300 held-out sentences (default: the first 300 lines of
``data/en-de/test_bible.{en,de}``; ``--src/--ref`` for others) translated by every engine at every
configuration (threads x batch x beam).  For each engine x configuration a *fresh worker process*
(:mod:`ondevice.bench.engines`) loads the engine, translates the whole set once as a warm-up, then
``runs`` more times (timed); numbers are medians over the timed runs.  Reported per cell:

* target tokens/s -- output tokens counted with ONE SentencePiece model for all engines (the fp32
  model's ``spm.model``; pieces without eos), divided by the run's wall time;
* latency per sentence -- batch 1: median over sentences of the sentence's time; batch B: median over
  batches of the batch's time / its size;
* peak RSS of the worker (``VmHWM`` at its end: includes the interpreter, the engine's libraries, the
  model and decoding buffers; memory-mapped weight pages count once touched) and its RSS before
  loading anything (the interpreter baseline every engine pays);
* model size on disk (the files that engine loads, tokenizer included);
* BLEU and chrF (sacrebleu) of the warm-up outputs against the references, and the share of outputs
  identical to PyTorch fp32's at the same beam (the correctness check of the CTranslate2 conversion);
* ratios against CTranslate2 int8 and onnxruntime fp32 at the same configuration: the issue's targets
  are native >= 2x CT2 int8 tokens/s at <= 1/3 of its peak RSS, and >= 3x onnxruntime fp32 tokens/s.

Robustness: an engine that cannot run here (not installed, not built yet) is reported with the reason;
a worker that fails or exceeds its time (``--max-seconds`` of timing plus ``--load-timeout``) is
killed and reported, and the benchmark goes on.  The report is rewritten (atomically) after every
cell, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from ..atomic import atomic_write_text
from ..errors import ConfigError, DataError
from . import engines as eng
from .machine import cpuinfo_fields

__all__ = ["Cell", "BenchOptions", "TokenCounter", "default_paths", "load_texts", "run_worker", "summarise",
           "add_comparisons", "targets", "machine_info", "to_markdown", "write_report", "run_benchmark"]

MIB = 1024.0  # KiB per MiB
SENTENCES = 300  # the paper's protocol
RATIO_ENGINES = ("ct2-int8", "ort-fp32")  # the targets are stated against these


@dataclass(frozen=True)
class Cell:
    """One measurement: an engine at one configuration (one fresh worker process)."""

    engine: str
    threads: int
    batch: int
    beam: int

    @property
    def tag(self) -> str:
        return f"{self.engine} t{self.threads} b{self.batch} k{self.beam}"


@dataclass
class BenchOptions:
    """Everything a benchmark run depends on (recorded in the report's ``protocol``)."""

    engines: list[str]
    threads: list[int]
    batches: list[int]
    beams: list[int]
    runs: int = 3
    limit: int = SENTENCES
    max_seconds: float = 900.0  # timing budget of one cell (warm-up + timed runs)
    load_timeout: float = 300.0  # extra allowance for starting the worker and loading the model
    src: str | None = None
    ref: str | None = None
    quant_model: str | None = None
    fp32_model: str | None = None
    spm: str | None = None
    work_dir: str = "build/bench-translate"
    ct2_method: str = "spec"


# --------------------------------------------------------------------------- inputs


def repo_root() -> Path:
    """The source checkout this package lives in (models/ and data/ are found relative to it)."""
    return Path(__file__).resolve().parents[2]


def default_paths() -> dict[str, Path | None]:
    """Where the models and the held-out data are by default: the shipped quantized model
    (``ondevice.translator.default_model_dir``), the fp32 baseline ``models/nmt-en-de`` and the first
    held-out Bible split of a checkout (``data/`` is not in git; pass --src/--ref elsewhere)."""
    root = repo_root()
    try:
        from ..translator import default_model_dir

        quant: Path | None = default_model_dir()
    except DataError:
        quant = None
    fp32 = root / "models" / "nmt-en-de"
    data = root / "data" / "en-de"
    return {"quant_model": quant, "fp32_model": fp32 if fp32.is_dir() else None,
            "src": data / "test_bible.en", "ref": data / "test_bible.de"}


def load_texts(src: str | os.PathLike, ref: str | os.PathLike | None,
               limit: int | None) -> tuple[list[str], list[str] | None]:
    """The first ``limit`` source lines and their references (same count required: a misaligned pair of
    files would give meaningless BLEU)."""
    from ..text_lines import read_lines

    sources = read_lines(src)
    refs = read_lines(ref) if ref else None
    if refs is not None and len(refs) != len(sources):
        raise DataError(f"{src} has {len(sources)} lines but {ref} has {len(refs)}")
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        sources = sources[:limit]
        refs = refs[:limit] if refs is not None else None
    if not sources:
        raise DataError(f"{src} has no lines")
    return sources, refs


class TokenCounter:
    """Counts target tokens with one SentencePiece model for every engine, so tokens/s are comparable
    whatever tokenizer (or none) an engine reports internally."""

    def __init__(self, spm_path: str | os.PathLike):
        from ..nmt.tokenizer import Tokenizer

        self.tok = Tokenizer(spm_path)

    def count(self, texts: Sequence[str]) -> int:
        """Pieces of all texts (no eos; an empty output counts 0)."""
        return sum(len(x) for x in self.tok.encode(list(texts), add_eos=False))


# --------------------------------------------------------------------------- running one cell


# The worker is ``ondevice.bench.engines.main`` of *this* package: `python -m` would put the working
# directory first on sys.path, and a source checkout there would shadow the package being benchmarked.
_WORKER = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r}); "
           "from ondevice.bench.engines import main; sys.exit(main())")


def _child_env(threads: int) -> dict[str, str]:
    """The worker's environment: this package first on the path (the worker must import the same code),
    and every OpenMP/BLAS pool capped at the cell's thread count so no engine uses more cores than asked."""
    env = dict(os.environ)
    pkg_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = pkg_parent + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[k] = str(threads)
    return env


def run_worker(job: dict[str, Any], timeout: float, tmp_dir: str | os.PathLike) -> dict[str, Any]:
    """Runs one worker process on ``job`` and returns its result dict, adding ``wall_seconds`` and the
    kernel's account of the child's peak RSS (``wait4`` ``ru_maxrss``, KiB), which does not depend on the
    child cooperating.  A worker past ``timeout`` seconds is killed and reported as status "timeout"."""
    tmp = Path(tmp_dir)
    job_path, res_path = tmp / "job.json", tmp / "result.json"
    res_path.unlink(missing_ok=True)
    atomic_write_text(job_path, json.dumps(job))
    t0 = time.monotonic()
    try:
        out_fd: int | None = sys.stderr.fileno()  # library chatter on stdout must not reach our stdout
    except (AttributeError, OSError, ValueError):
        out_fd = subprocess.DEVNULL
    proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(job_path), str(res_path)],
                            env=_child_env(int(job["threads"])), stdin=subprocess.DEVNULL, stdout=out_fd)
    status, rusage, killed = None, None, False
    while True:
        pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - t0 > timeout:
            proc.kill()
            killed = True
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - t0
    if killed:
        res: dict[str, Any] = {"status": "timeout", "reason": f"killed after {wall:.0f} s (limit {timeout:.0f} s)"}
    else:
        try:
            res = json.loads(res_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            res = {"status": "error", "reason": f"worker exited with code {proc.returncode} without a result"}
    res["wall_seconds"] = wall
    res["wait4_maxrss_kib"] = int(rusage.ru_maxrss) if rusage is not None else None
    return res


# --------------------------------------------------------------------------- numbers of one cell


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _p90(values: Sequence[float]) -> float | None:
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def _digest(outputs: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(outputs).encode("utf-8")).hexdigest()[:16]


def summarise(cell: Cell, res: dict[str, Any], counter: TokenCounter, refs: list[str] | None) -> dict[str, Any]:
    """The row of one cell: medians over timed runs (or the warm-up alone, flagged, when the budget
    allowed no timed run), memory in MiB, scores of the warm-up's outputs.  Outputs themselves are kept
    under ``_outputs`` for the agreement column and not written to the JSON."""
    row: dict[str, Any] = {"engine": cell.engine, "threads": cell.threads, "batch": cell.batch, "beam": cell.beam,
                           "status": res.get("status", "error")}
    if row["status"] != "ok":
        row["reason"] = res.get("reason", "")
        return row
    outs = res["warmup"]["outputs"]
    if res.get("partial") is not None and refs is not None:
        refs = refs[:len(outs)]  # scores over the translated prefix only (flagged in the table)
    runs = res["runs"] or [dict(res["warmup"], outputs=None)]
    tok_per_run, lat_per_run, p90_per_run = [], [], []
    for r in runs:
        tokens = counter.count(r["outputs"] if r.get("outputs") is not None else outs)
        tok_per_run.append(tokens / r["seconds"])
        lat_per_run.append(_median(r["latencies"]))
        p90_per_run.append(_p90(r["latencies"]))
    row.update({
        "timed_runs": len(res["runs"]),
        "warmup_only": not res["runs"],
        "sentences_done": len(outs),
        "partial": res.get("partial") is not None,
        "stopped": res.get("stopped"),
        "run_seconds": [r["seconds"] for r in res["runs"]],
        "warmup_seconds": res["warmup"]["seconds"],
        "target_tokens": counter.count(outs),
        "tokens_per_s": _median(tok_per_run),
        "tokens_per_s_runs": tok_per_run,
        "latency_ms": 1000 * _median(lat_per_run),
        "latency_p90_ms": 1000 * _median(p90_per_run),
        "load_seconds": res["load_seconds"],
        "rss_start_mib": (res.get("rss_start_kib") or 0) / MIB,
        "rss_loaded_mib": (res.get("rss_loaded_kib") or 0) / MIB,
        "peak_rss_mib": (res.get("peak_rss_kib") or res.get("wait4_maxrss_kib") or 0) / MIB,
        "peak_rss_wait4_mib": (res.get("wait4_maxrss_kib") or 0) / MIB,
        "deterministic": all(r.get("outputs") is None for r in res["runs"]),
        "outputs_sha256": _digest(outs),
        "loaded_files": res.get("loaded_files"),
    })
    if refs is not None:
        from ..nmt.evaluate import score

        s = score(outs, refs)
        row.update({"bleu": s["bleu"], "chrf": s["chrf"]})
    row["_outputs"] = outs
    return row


def add_comparisons(rows: list[dict[str, Any]]) -> None:
    """Adds, in place, the agreement with PyTorch on the same trained model (fp32 engines with
    torch-fp32, quantized ones with torch-quant) at the same beam -- the reference's outputs do not
    depend on threads or batching, its decoder limits lengths per sentence -- and the ratios against
    CT2 int8 and onnxruntime fp32 at the same threads/batch/beam."""
    ok = [r for r in rows if r["status"] == "ok"]
    refs: dict[tuple[str, int], dict[str, Any]] = {}
    for r in sorted(ok, key=lambda r: (r["threads"], r["batch"])):
        if r["engine"] in eng.REFERENCES.values():
            refs.setdefault((r["engine"], r["beam"]), r)
    for r in ok:
        cls = eng.ENGINES.get(r["engine"])
        ref_name = eng.REFERENCES.get(cls.model) if cls is not None else None
        ref = refs.get((ref_name, r["beam"])) if ref_name else None
        if ref is not None and "_outputs" in ref and "_outputs" in r:
            same = sum(a == b for a, b in zip(r["_outputs"], ref["_outputs"]))
            r["torch_reference"] = ref_name
            r["same_as_torch_pct"] = 100.0 * same / max(1, min(len(r["_outputs"]), len(ref["_outputs"])))
            if "bleu" in r and "bleu" in ref and not r.get("partial") and not ref.get("partial"):
                r["bleu_minus_torch"] = round(r["bleu"] - ref["bleu"], 2)
        for peer in RATIO_ENGINES:
            p = next((x for x in ok if x["engine"] == peer and (x["threads"], x["batch"], x["beam"]) ==
                      (r["threads"], r["batch"], r["beam"])), None)
            if p is None:
                continue
            r[f"speed_vs_{peer}"] = r["tokens_per_s"] / p["tokens_per_s"]
            r[f"rss_vs_{peer}"] = r["peak_rss_mib"] / p["peak_rss_mib"] if p["peak_rss_mib"] else None


def targets(rows: list[dict[str, Any]], engine: str = "native") -> list[dict[str, Any]]:
    """The issue's targets, per configuration where ``engine`` and the peer both ran."""
    out = []
    for r in rows:
        if r["engine"] != engine or r["status"] != "ok":
            continue
        cfg = {k: r[k] for k in ("threads", "batch", "beam")}
        for key, need, text, higher in (("speed_vs_ct2-int8", 2.0, ">= 2x CTranslate2 int8 tokens/s", True),
                                        ("rss_vs_ct2-int8", 1 / 3, "<= 1/3 of CTranslate2 int8 peak RSS", False),
                                        ("speed_vs_ort-fp32", 3.0, ">= 3x onnxruntime fp32 tokens/s", True)):
            v = r.get(key)
            if v is not None:
                out.append({**cfg, "target": text, "measured": v, "met": v >= need if higher else v <= need})
        if r.get("bleu_minus_torch") is not None:  # "at the quantized model's BLEU"
            d = r["bleu_minus_torch"]
            out.append({**cfg, "target": "BLEU within 0.1 of PyTorch on the same model", "measured": d,
                        "met": d >= -0.1, "unit": "BLEU"})
    return out


# --------------------------------------------------------------------------- machine and report


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, and how busy it was (the load average before the run is worth
    knowing on a shared machine)."""
    info: dict[str, Any] = {"date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                            "platform": platform.platform(), "python": sys.version.split()[0],
                            "cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0))
                            if hasattr(os, "sched_getaffinity") else os.cpu_count()}
    fields = cpuinfo_fields()
    info["cpu"] = fields.get("model name") or platform.processor() or platform.machine()
    info["cpu_id"] = ", ".join(f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping", "cpu MHz", "cache size")
                               if k in fields)
    flags = fields.get("flags", fields.get("Features", "")).split()
    info["isa"] = [f for f in ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni",
                               "avx512_bf16", "avx_vnni", "amx_int8", "asimd", "asimddp", "sve") if f in flags]
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    try:
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    info["versions"] = {d: _version(d) for d in ("ondevice", "torch", "onnxruntime", "ctranslate2",
                                                 "sentencepiece", "sacrebleu", "numpy")}
    try:
        from .. import __version__

        info["versions"]["ondevice"] = __version__
    except ImportError:
        pass
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo_root(),
                                            capture_output=True, text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        info["git_commit"] = None
    try:
        from .. import _core

        info["ondevice_kernel"] = _core.default_variant()
    except (ImportError, AttributeError):
        info["ondevice_kernel"] = None
    try:
        import ctranslate2

        info["ctranslate2_compute_types"] = sorted(ctranslate2.get_supported_compute_types("cpu"))
    except ImportError:
        pass
    return info


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def to_markdown(report: dict[str, Any]) -> str:
    """The report as a table with the machine and protocol (benchmarks/translate.md)."""
    m, p = report["machine"], report["protocol"]
    v = m.get("versions", {})
    lines = ["# Translation benchmark: ondevice vs CTranslate2, onnxruntime and PyTorch", "",
             f"Generated by `ondevice bench translate` on {m['date']} (commit {m.get('git_commit') or '?'}). "
             f"{p['sentences']} sentences of `{p['src']}`; every engine x configuration in a fresh process: "
             f"one warm-up pass, then median of {p['runs']} timed passes. Target tokens counted with "
             f"`{p['spm']}` for all engines.", "",
             "## Machine", "",
             f"- CPU: {m['cpu']} ({m.get('cpu_id') or '-'}); {m['cores']} logical cores "
             f"({m.get('usable_cores')} usable), "
             f"{m.get('memory_gib', '?')} GiB",
             f"- ISA: {', '.join(m['isa']) or '-'}; ondevice kernel: {m.get('ondevice_kernel') or '-'}",
             f"- {m['platform']}; Python {m['python']}",
             "- versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if val),
             f"- load average before the run: {' '.join(m.get('loadavg', []))}"
             + (f", after: {' '.join(report['loadavg_after'])}" if report.get("loadavg_after") else ""), "",
             "## Engines", "", "| engine | what | size on disk (MB) | status |", "|---|---|---|---|"]
    for name, e in report["engines"].items():
        size = f"{e['model_bytes'] / 1e6:.1f}" if e.get("model_bytes") is not None else "-"
        status = "ok" if e["status"] == "ok" else f"**{e['status']}**: {e.get('reason', '')}"
        lines.append(f"| {name} | {e.get('description', '')} | {size} | {status} |")
    rows = report["results"]
    tg = report.get("targets") or []
    lines += ["", "## Targets (ondevice native, issue 7)", ""]
    if tg:
        lines += ["| threads | batch | beam | target | measured | met |", "|---|---|---|---|---|---|"]
        lines += [f"| {t['threads']} | {t['batch']} | {t['beam']} | {t['target']} | {t['measured']:+.2f} BLEU | "
                  f"{'yes' if t['met'] else '**no**'} |" if t.get("unit") == "BLEU" else
                  f"| {t['threads']} | {t['batch']} | {t['beam']} | {t['target']} | {t['measured']:.2f}x | "
                  f"{'yes' if t['met'] else '**no**'} |" for t in tg]
    else:
        native = report["engines"].get("native")
        why = (native or {}).get("reason") or "native or the peer engines were not run"
        lines.append(f"Not measured: {why}.")
    lines += ["", "## Results", "",
              "tok/s: target tokens per second (median of runs). ms/sent: median latency per sentence (batch "
              "B: batch time / B). RSS: peak resident set of the engine's process (MiB), and before loading "
              "(interpreter baseline). = PyTorch: outputs identical to PyTorch's on the same trained model (fp32 or "
              "quantized) at the same beam. Ratios are "
              "against CTranslate2 int8 (speed, RSS) and onnxruntime fp32 (speed) at the same configuration.", "",
              "| engine | threads | batch | beam | tok/s | ms/sent | peak RSS | RSS before load | load s | BLEU | "
              "chrF | = PyTorch % | x CT2 tok/s | RSS / CT2 | x ORT-fp32 tok/s | runs |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['engine']} | {r['threads']} | {r['batch']} | {r['beam']} |"
        if r["status"] != "ok":
            lines.append(head + f" {r['status']}: {r.get('reason', '')} |" + " |" * 11)
            continue
        runs = f"{r['timed_runs']}" + (" (warm-up only)" if r["warmup_only"] else "") + \
            ("" if r["deterministic"] else " nondet.")
        if r.get("partial"):
            runs = f"0 (partial warm-up: {r['sentences_done']} sentences; BLEU on those)"
        lines.append(head + " " + " | ".join([
            _f(r["tokens_per_s"], ".0f"), _f(r["latency_ms"], ".1f"), _f(r["peak_rss_mib"], ".0f"),
            _f(r["rss_start_mib"], ".0f"), _f(r["load_seconds"], ".1f"), _f(r.get("bleu"), ".2f"),
            _f(r.get("chrf"), ".2f"), _f(r.get("same_as_torch_pct"), ".1f"),
            _f(r.get("speed_vs_ct2-int8"), ".2f"), _f(r.get("rss_vs_ct2-int8"), ".2f"),
            _f(r.get("speed_vs_ort-fp32"), ".2f"), runs]) + " |")
    lines += ["", "## Protocol", "",
              f"- sentences: {p['sentences']} from `{p['src']}` (references `{p['ref']}`)",
              f"- configurations: threads {p['threads']}, batch {p['batches']}, beam {p['beams']}; "
              f"{p['runs']} timed runs after one warm-up; per-cell budget {p['max_seconds']:g} s "
              f"(+ {p['load_timeout']:g} s to load)",
              "- batches are consecutive input sentences; decoding as the PyTorch reference: length penalty 1, "
              "at most 1.2 x source tokens + 10 output tokens (CTranslate2: one limit per batch, from its "
              "longest source)",
              "- thread counts are intra-op threads (OMP/MKL/OpenBLAS pools capped to the same number); "
              "inter-op parallelism off",
              f"- CTranslate2 conversion: {p.get('ct2_method')} (ondevice/bench/ct2_convert.py), "
              "compute_type int8",
              "- peak RSS is the worker's VmHWM (includes Python, the engine's libraries, the model, buffers; "
              "memory-mapped weights count once touched)"]
    return "\n".join(lines) + "\n"


def _public(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the kept outputs (JSON stays small; translations go to the work dir)."""
    out = dict(report)
    out["results"] = [{k: v for k, v in r.items() if not k.startswith("_")} for r in report["results"]]
    return out


def write_report(report: dict[str, Any], out_dir: str | os.PathLike, name: str = "translate") -> tuple[Path, Path]:
    """Writes ``<name>.json`` and ``<name>.md`` atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / f"{name}.json", out / f"{name}.md")
    atomic_write_text(paths[0], json.dumps(_public(report), indent=1) + "\n")
    atomic_write_text(paths[1], to_markdown(report))
    return paths


# --------------------------------------------------------------------------- the whole benchmark


def _resolve(opts: BenchOptions) -> dict[str, Any]:
    d = default_paths()
    quant = Path(opts.quant_model) if opts.quant_model else d["quant_model"]
    fp32 = Path(opts.fp32_model) if opts.fp32_model else d["fp32_model"]
    src = Path(opts.src) if opts.src else d["src"]
    ref = Path(opts.ref) if opts.ref else (None if opts.src else d["ref"])
    if not src.is_file():
        raise DataError(f"held-out source {src} does not exist (data/ is not in git: run `ondevice data prepare` "
                        "or pass --src/--ref, e.g. models/nmt-en-de/eval/ci_bible.en/.de)")
    spm = Path(opts.spm) if opts.spm else next((m / "spm.model" for m in (fp32, quant)
                                                if m is not None and (m / "spm.model").is_file()), None)
    if spm is None:
        raise DataError("no SentencePiece model to count target tokens with: pass --spm")
    return {"quant_model": quant, "fp32_model": fp32, "src": src, "ref": ref, "spm": spm}


def run_benchmark(opts: BenchOptions, out_dir: str | os.PathLike | None = None, name: str = "translate",
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Prepares every engine, measures every cell in a fresh worker, and returns the report (also written
    to ``out_dir`` after each cell, when given)."""
    log = log or (lambda msg: None)
    names = eng.resolve_names(opts.engines)
    for key, values in (("threads", opts.threads), ("batch", opts.batches), ("beam", opts.beams)):
        if not values or any(v < 1 for v in values):
            raise ConfigError(f"--{key} needs positive integers, got {values}")
    if opts.runs < 0:
        raise ConfigError(f"--runs must be >= 0, got {opts.runs}")
    paths = _resolve(opts)
    sources, refs = load_texts(paths["src"], paths["ref"], opts.limit)
    counter = TokenCounter(paths["spm"])
    work = Path(opts.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "protocol": {"src": str(paths["src"]), "ref": str(paths["ref"]) if paths["ref"] else None,
                     "sentences": len(sources), "spm": str(paths["spm"]), "runs": opts.runs,
                     "threads": opts.threads, "batches": opts.batches, "beams": opts.beams,
                     "max_seconds": opts.max_seconds, "load_timeout": opts.load_timeout,
                     "quant_model": str(paths["quant_model"]), "fp32_model": str(paths["fp32_model"]),
                     "ct2_method": opts.ct2_method, "source_tokens": sum(len(x) for x in
                                                                       counter.tok.encode(sources))},
        "engines": {}, "results": [], "targets": []}
    # workers get absolute paths: nothing they load may depend on their working directory
    prep_opts = {"quant_model": paths["quant_model"] and paths["quant_model"].resolve(),
                 "fp32_model": paths["fp32_model"] and paths["fp32_model"].resolve(), "work_dir": str(work.resolve()),
                 "ct2_method": opts.ct2_method, "log": log}
    params: dict[str, dict[str, Any]] = {}
    for n in names:
        cls = eng.ENGINES[n]
        entry: dict[str, Any] = {"description": cls.description}
        try:
            params[n] = cls.prepare(prep_opts)
            entry.update(status="ok", model_files=params[n]["model_files"],
                         model_bytes=eng._files_bytes(params[n]["model_files"]))
        except eng.EngineUnavailable as e:
            entry.update(status="unavailable", reason=str(e))
        except Exception as e:  # a failed conversion must not stop the other engines
            entry.update(status="error", reason=f"{type(e).__name__}: {e}")
        report["engines"][n] = entry
        log(f"{n}: {entry['status']}" + (f" ({entry['reason']})" if entry.get("reason") else ""))
    cells = [Cell(n, t, b, k) for n in names for t in opts.threads for b in opts.batches for k in opts.beams]
    todo = [c for c in cells if c.engine in params]
    outputs_dir = work / "outputs"
    outputs_dir.mkdir(exist_ok=True)
    broken: dict[str, str] = {}  # engine -> why its load failed (its other cells would fail the same way)
    with tempfile.TemporaryDirectory(prefix="ondevice-bench-") as tmp:
        for i, cell in enumerate(todo, 1):
            if cell.engine in broken:
                report["results"].append({"engine": cell.engine, "threads": cell.threads, "batch": cell.batch,
                                          "beam": cell.beam, "status": "skipped", "reason": broken[cell.engine]})
                continue
            log(f"[{i}/{len(todo)}] {cell.tag}")
            job = {"engine": cell.engine, "params": params[cell.engine], "threads": cell.threads,
                   "batch": cell.batch, "beam": cell.beam, "runs": opts.runs, "max_seconds": opts.max_seconds,
                   "sentences": sources, "tag": cell.tag}
            res = run_worker(job, opts.max_seconds + opts.load_timeout, tmp)
            row = summarise(cell, res, counter, refs)
            report["results"].append(row)
            if row["status"] == "ok":
                atomic_write_text(outputs_dir / f"{cell.tag.replace(' ', '-')}.txt",
                                  "".join(t + "\n" for t in row["_outputs"]))
                log(f"[{i}/{len(todo)}] {cell.tag}: {row['tokens_per_s']:.0f} tok/s, {row['latency_ms']:.1f} "
                    f"ms/sent, peak RSS {row['peak_rss_mib']:.0f} MiB, BLEU {_f(row.get('bleu'), '.2f')} "
                    f"({res['wall_seconds']:.0f} s)")
            else:
                log(f"[{i}/{len(todo)}] {cell.tag}: {row['status']}: {row.get('reason')}")
                if res.get("stage") == "load":
                    broken[cell.engine] = f"its load failed in {cell.tag}: {row.get('reason')}"
                    report["engines"][cell.engine].update(status="error", reason=broken[cell.engine])
            add_comparisons(report["results"])
            report["targets"] = targets(report["results"])
            if out_dir is not None:
                write_report(report, out_dir, name)
    # engines that could not run appear once, with the reason, in report["engines"] (not once per cell)
    add_comparisons(report["results"])
    report["targets"] = targets(report["results"])
    try:
        report["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    if out_dir is not None:
        write_report(report, out_dir, name)
    return report
