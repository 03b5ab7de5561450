"""``ondevice bench profile``: where the native runtime's time goes, per operator.

The benchmark (``bench translate``) says how fast each engine is; this says why the native one is
as fast as it is: the executor's per-operator timers (``_core.Translator.profile()``) summed over
one translation pass, and what is left of the wall time outside the graphs (tokenization, search:
log-softmax, candidate selection, KV-cache reordering). Same inputs and decoding as the benchmark.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import DataError

__all__ = ["profile_native", "write_profile", "read_sentences"]


def profile_native(model_dir: str | os.PathLike, sentences: list[str], configs: list[tuple[int, int, int]],
                   kernel: str = "") -> list[dict[str, Any]]:
    """One warm-up and one profiled pass per (threads, batch, beam); returns a row per configuration with
    the wall time, the per-op seconds and calls, and the time outside the graphs."""
    from .. import _core

    rows = []
    for threads, batch, beam in configs:
        tr = _core.Translator(str(model_dir), threads=threads, kernel=kernel)
        batches = [sentences[i:i + batch] for i in range(0, len(sentences), batch)]
        for b in batches:
            tr.translate_batch(b, beam_size=beam)
        tr.enable_profiling(True)
        start = time.perf_counter()
        for b in batches:
            tr.translate_batch(b, beam_size=beam)
        wall = time.perf_counter() - start
        ops = [{"op": op, "calls": calls, "seconds": secs} for op, calls, secs in tr.profile()]
        in_graphs = sum(o["seconds"] for o in ops)
        rows.append({"threads": threads, "batch": batch, "beam": beam, "sentences": len(sentences),
                     "wall_s": wall, "graph_s": in_graphs, "outside_graphs_s": max(0.0, wall - in_graphs),
                     "ops": ops})
    return rows


def _machine() -> str:
    from .. import _core

    return f"{_core.cpu_description()}; {platform.platform()}"


def write_profile(rows: list[dict[str, Any]], out_dir: str | os.PathLike, name: str = "translate_profile",
                  command: str = "") -> Path:
    """``<out>/<name>.md`` and ``.json`` (atomic)."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"machine": _machine(), "date": time.strftime("%Y-%m-%d"), "command": command, "rows": rows}
    atomic_write_text(out / f"{name}.json", json.dumps(doc, indent=1) + "\n")
    lines = [f"# Native runtime: time per operator ({doc['date']})", "",
             f"Machine: {doc['machine']}.", "", f"Command: `{command}`", "",
             "One profiled pass after a warm-up; `outside graphs` is tokenization and search (log-softmax, "
             "candidate selection, KV-cache reordering) plus the executor's own bookkeeping between ops.", ""]
    for r in rows:
        lines += [f"## threads {r['threads']}, batch {r['batch']}, beam {r['beam']} "
                  f"({r['sentences']} sentences, {r['wall_s']:.2f} s)", "",
                  "| part | calls | seconds | share of wall time |", "|---|---:|---:|---:|"]
        for o in r["ops"]:
            if o["seconds"] < 0.001 * r["wall_s"]:
                continue
            lines.append(f"| {o['op']} | {o['calls']:,} | {o['seconds']:.3f} | {100 * o['seconds'] / r['wall_s']:.1f} % |")
        lines.append(f"| outside graphs | | {r['outside_graphs_s']:.3f} | "
                     f"{100 * r['outside_graphs_s'] / r['wall_s']:.1f} % |")
        lines.append("")
    atomic_write_text(out / f"{name}.md", "\n".join(lines))
    return out / f"{name}.md"


def read_sentences(path: str | os.PathLike, limit: int) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p} does not exist (make it with `ondevice data prepare`, or pass --src)")
    lines = [s for s in p.read_text(encoding="utf-8").splitlines() if s.strip()]
    return lines[:limit]
