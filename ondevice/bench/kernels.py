"""``ondevice bench kernels``: our LUT kernels against numpy fp32 and onnxruntime, in one run.

For each shape (out x in), batch and thread count, every implementation is
timed on the same inputs: medians over many repeats after a warm-up. Ratios
are peer time / our time (> 1 means we are faster). The machine (CPU model,
ISA, BLAS build, library versions) and a measured memory bandwidth are
recorded with the numbers, and each result is compared with its
memory-bandwidth bound (weight bytes / bandwidth).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .. import __version__
from ..atomic import atomic_write_text
from ..bcq_matrix import BCQMatrix, quantize_bcq
from . import peers
from .machine import cpuinfo_fields

FULL_SHAPES = [(512, 512), (2048, 512), (512, 2048), (4096, 4096)]
QUICK_SHAPES = [(512, 512), (2048, 512)]
GROUP_SIZE = 128


@dataclass
class Case:
    rows: int
    cols: int
    batch: int
    threads: int
    times_us: dict[str, float] = field(default_factory=dict)  # implementation -> median microseconds
    weight_bytes: dict[str, int] = field(default_factory=dict)


def time_median(fn: Callable[[], object], min_time: float, min_repeats: int = 15, max_repeats: int = 2000) -> float:
    """Median wall time (seconds) of fn() over repeats filling about min_time, after two warm-up calls."""
    fn()
    fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < min_time):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure_bandwidth(threads: int, mib: int = 256) -> float:
    """Read bandwidth in GB/s: numpy sum over a buffer far larger than the caches, median of 5."""
    from threadpoolctl import threadpool_limits

    a = np.ones(mib * (1 << 20) // 8, dtype=np.float64)
    with threadpool_limits(limits=threads):
        t = time_median(lambda: a.sum(), min_time=0.5, min_repeats=5, max_repeats=20)
    return a.nbytes / t / 1e9


def machine_info() -> dict:
    """What the numbers were measured on."""
    from .. import _core

    info: dict = {"cpu": _core.cpu_description(), "platform": platform.platform(),
                  "python": sys.version.split()[0], "numpy": np.__version__, "ondevice": __version__,
                  "kernel": _core.default_variant(), "cores": os.cpu_count()}
    info["isa"], info["cpu_id"], info["caches"] = [], "", ""
    fields = cpuinfo_fields()
    flags = fields.get("flags", fields.get("Features", "")).split()
    info["isa"] = [f for f in ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "asimd",
                               "asimddp") if f in flags]
    info["cpu_id"] = ", ".join(f"{k} {fields[k]}" for k in ("cpu family", "model", "stepping", "cpu MHz")
                               if k in fields)
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        info["caches"] = "; ".join(" ".join(line.split()) for line in lscpu.splitlines() if " cache:" in line)
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
                        for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        info["blas"] = []
    info["env"] = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "ONDEVICE_KERNEL")
                   if k in os.environ}
    return info


def run_benchmark(shapes: Iterable[tuple[int, int]] = FULL_SHAPES, bits: Iterable[int] = (1, 2, 3, 4),
                  batches: Iterable[int] = (1, 8), threads: Iterable[int] = (1, 2), min_time: float = 0.3,
                  progress: Callable[[str], None] | None = None) -> dict:
    """Runs the whole grid and returns the report as a dict (see write_report)."""
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    have_ort = True
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        have_ort = False
    cases: list[Case] = []
    bits, batches, threads = list(bits), list(batches), list(threads)
    for rows, cols in shapes:
        w = (rng.standard_normal((rows, cols)) / np.sqrt(cols)).astype(np.float32)
        # Speed does not depend on the sign pattern, so the quick greedy method suffices here.
        ours: dict[int, BCQMatrix] = {q: quantize_bcq(w, bits=q, group_size=GROUP_SIZE, method="greedy")
                                      for q in bits}
        for th in threads:
            ort_fp32 = peers.ort_matmul_fp32(w, th) if have_ort else None
            ort_nb = {b: peers.ort_matmul_nbits(w, b, th, GROUP_SIZE) for b in (4, 2)} if have_ort else {}
            np_mm = peers.numpy_matmul(w)
            for batch in batches:
                if progress:
                    progress(f"{rows}x{cols} batch {batch} threads {th}")
                x = rng.standard_normal((batch, cols), dtype=np.float32)
                c = Case(rows, cols, batch, th)
                with threadpool_limits(limits=th):
                    c.times_us["numpy_fp32"] = 1e6 * time_median(lambda: np_mm(x), min_time)
                c.weight_bytes["numpy_fp32"] = w.nbytes
                if ort_fp32 is not None:
                    c.times_us["ort_fp32"] = 1e6 * time_median(lambda: ort_fp32(x), min_time)
                    c.weight_bytes["ort_fp32"] = w.nbytes
                for b, f in ort_nb.items():
                    c.times_us[f"ort_nbits{b}"] = 1e6 * time_median(lambda: f(x), min_time)
                    c.weight_bytes[f"ort_nbits{b}"] = rows * (-(-cols // GROUP_SIZE)) * (GROUP_SIZE * b // 8 + 4)
                for q, m in ours.items():
                    c.times_us[f"bcq_q{q}"] = 1e6 * time_median(lambda: m.matmul(x, threads=th), min_time)
                    c.weight_bytes[f"bcq_q{q}"] = m.nbytes
                cases.append(c)
    bandwidth = {th: measure_bandwidth(th) for th in threads}
    return {"machine": machine_info(), "group_size": GROUP_SIZE,
            "bandwidth_gbps": {str(k): v for k, v in bandwidth.items()},
            "cases": [asdict(c) for c in cases]}


def targets(report: dict) -> list[dict]:
    """The issue's targets for the AVX2 path at 4096x4096, 1 thread, batch 1 (GEMV)."""
    out = []
    for c in report["cases"]:
        if (c["rows"], c["cols"], c["threads"]) != (4096, 4096, 1):
            continue
        t = c["times_us"]
        for q, need in ((2, 8.0), (3, 5.0)):
            if f"bcq_q{q}" in t:
                out.append({"batch": c["batch"], "target": f"q={q} >= {need:g}x numpy fp32",
                            "measured": t["numpy_fp32"] / t[f"bcq_q{q}"], "met": t["numpy_fp32"] / t[f"bcq_q{q}"] >= need})
        for b in (4, 2):
            if f"ort_nbits{b}" in t and f"bcq_q{b}" in t:
                r = t[f"ort_nbits{b}"] / t[f"bcq_q{b}"]
                out.append({"batch": c["batch"], "target": f"q={b} faster than MatMulNBits {b}-bit",
                            "measured": r, "met": r > 1.0})
    return out


def to_markdown(report: dict) -> str:
    m = report["machine"]
    lines = ["# Kernel benchmark: BCQ LUT kernels vs numpy fp32 and onnxruntime", "",
             "Generated by `ondevice bench kernels`; medians over repeats, microseconds. Ratios are",
             "peer time / ours (> 1: ours faster). BCQ group size "
             f"{report['group_size']}; MatMulNBits block size {report['group_size']}, accuracy_level 4.", "",
             "## Machine", "",
             f"- CPU: {m['cpu']}; {m.get('cpu_id', '')}", f"- caches: {m.get('caches', '')}",
             f"- ISA: {', '.join(m['isa'])}", f"- platform: {m['platform']}",
             f"- python {m['python']}, numpy {m['numpy']}, onnxruntime {m['onnxruntime']}, ondevice {m['ondevice']}",
             f"- BLAS: {m['blas']}", f"- kernel variant: {m['kernel']}; environment: {m['env'] or 'no overrides'}",
             "- measured read bandwidth (numpy sum over 256 MiB): " +
             ", ".join(f"{k} thread(s) {v:.1f} GB/s" for k, v in report["bandwidth_gbps"].items()), ""]
    tg = targets(report)
    if tg:
        lines += ["## Targets (4096x4096, 1 thread)", "", "| batch | target | measured | met |", "|---|---|---|---|"]
        lines += [f"| {t['batch']} | {t['target']} | {t['measured']:.2f}x | {'yes' if t['met'] else 'no'} |" for t in tg]
        lines.append("")
    impls = [k for k in ("numpy_fp32", "ort_fp32", "ort_nbits4", "ort_nbits2", "bcq_q1", "bcq_q2", "bcq_q3", "bcq_q4")
             if any(k in c["times_us"] for c in report["cases"])]
    lines += ["## Times (us)", "", "| out x in | batch | threads | " + " | ".join(impls) + " |",
              "|---|---|---|" + "---|" * len(impls)]
    for c in report["cases"]:
        lines.append(f"| {c['rows']}x{c['cols']} | {c['batch']} | {c['threads']} | " +
                     " | ".join(f"{c['times_us'][k]:.1f}" if k in c["times_us"] else "-" for k in impls) + " |")
    ours = [k for k in impls if k.startswith("bcq_")]
    lines += ["", "## Speed-up of ours over peers (peer time / our time)", "",
              "| out x in | batch | threads | " + " | ".join(f"numpy/{k}" for k in ours) +
              " | nbits4/bcq_q4 | nbits2/bcq_q2 |", "|---|---|---|" + "---|" * (len(ours) + 2)]
    for c in report["cases"]:
        t = c["times_us"]
        cells = [f"{t['numpy_fp32'] / t[k]:.2f}" for k in ours]
        cells += [f"{t['ort_nbits4'] / t['bcq_q4']:.2f}" if "ort_nbits4" in t and "bcq_q4" in t else "-",
                  f"{t['ort_nbits2'] / t['bcq_q2']:.2f}" if "ort_nbits2" in t and "bcq_q2" in t else "-"]
        lines.append(f"| {c['rows']}x{c['cols']} | {c['batch']} | {c['threads']} | " + " | ".join(cells) + " |")
    lines += ["", "## Distance from the memory-bandwidth bound", "",
              "Bound = bytes of weights read / measured DRAM read bandwidth at the same thread count. A",
              "fraction above 100 % means the weights were served from cache (the 2- and 3-bit 4096x4096",
              "matrices, 4-6 MiB, fit this CPU's L3; the 64 MiB fp32 matrix does not).", "",
              "| out x in | batch | threads | impl | time us | bound us | bound / time |", "|---|---|---|---|---|---|---|"]
    for c in report["cases"]:
        if c["batch"] != 1:
            continue
        bw = report["bandwidth_gbps"][str(c["threads"])] * 1e9
        for k in ("numpy_fp32", "ort_nbits4", "ort_nbits2", "bcq_q2", "bcq_q3", "bcq_q4"):
            if k in c["times_us"]:
                bound = c["weight_bytes"][k] / bw * 1e6
                lines.append(f"| {c['rows']}x{c['cols']} | 1 | {c['threads']} | {k} | {c['times_us'][k]:.1f} | "
                             f"{bound:.1f} | {100 * bound / c['times_us'][k]:.0f} % |")
    return "\n".join(lines) + "\n"


def write_report(report: dict, out_dir: str | os.PathLike, name: str = "kernels") -> tuple[Path, Path]:
    """Writes <name>.json and <name>.md atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = (out / f"{name}.json", out / f"{name}.md")
    for path, text in zip(paths, (json.dumps(report, indent=1) + "\n", to_markdown(report))):
        atomic_write_text(path, text)
    return paths
