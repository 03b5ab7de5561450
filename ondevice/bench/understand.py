"""`ondevice bench understand`: latency per spoken command of the speech-intent model, native runtime
vs onnxruntime (same export) vs PyTorch (the same weights, dequantized), in one process and run.

Each engine gets the same utterances (already decoded to 16 kHz float32, so file reading is not
timed): one pass of the graph for each engine, and for a model with a speed ensemble also the native
runtime and onnxruntime running it (one pass per rate: the shipped default). One thread, one warm-up pass, then ``runs`` timed passes; the report gives the median and
90th percentile over every timed call, the ratio to the native runtime, and the machine.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..atomic import atomic_write_text
from ..errors import ConfigError, DataError
from .machine import cpuinfo_fields


def _engines(model_dir: Path, torch_run: Path | None) -> dict[str, Callable[[np.ndarray], Any]]:
    from ..understander import Understander

    out: dict[str, Callable[[np.ndarray], Any]] = {}
    # One pass each (the same work as PyTorch's), then the speed ensemble where the model has one.
    for backend in ("native", "onnxruntime"):
        out[backend] = Understander(model_dir, threads=1, backend=backend, speed_ensemble=False)._run
    for backend in ("native", "onnxruntime"):
        u = Understander(model_dir, threads=1, backend=backend)
        if len(u.ensemble_rates) > 1:
            out[f"{backend}, speed ensemble x{len(u.ensemble_rates)}"] = u._run
    if torch_run is not None:
        import torch

        from ..slu.train import load_torch
        from ..slu.quantize import build_model
        from ..slu.model import SLUConfig

        torch.set_num_threads(1)
        cfg = SLUConfig.from_dict(load_torch(torch_run / "tokenizer.pt")["config"])
        variant = json.loads((torch_run / "quantized.json").read_text())["variant"]
        model = build_model(cfg, load_torch(torch_run / "tokenizer.pt"),
                            load_torch(torch_run / f"ft_{variant}.pt")["bert"])

        def run_torch(pcm: np.ndarray):
            with torch.inference_mode():
                return model(torch.from_numpy(pcm)[None])

        out["pytorch-fp32"] = run_torch
    return out


def bench_understand(model_dir: str | os.PathLike, corpus: str | os.PathLike, n: int = 100, runs: int = 3,
                     torch_run: str | os.PathLike | None = None) -> dict[str, Any]:
    """Time every engine on the first ``n`` test utterances of ``corpus``."""
    from ..slu.dataset import load_split

    if isinstance(n, bool) or not isinstance(n, int) or n < 1 or isinstance(runs, bool) \
            or not isinstance(runs, int) or runs < 1:
        raise ConfigError(f"n and runs must be positive integers, got {n!r} and {runs!r}")
    if torch_run is not None and not (Path(torch_run) / "tokenizer.pt").is_file():
        raise DataError(f"--torch-run {torch_run}: no training run there (no tokenizer.pt)")

    split = load_split(corpus, "test", limit=n, progress=False)
    waves = [split.wave(i) for i in range(len(split))]
    engines = _engines(Path(model_dir), Path(torch_run) if torch_run else None)
    rows = []
    for name, fn in engines.items():
        for w in waves[:5]:
            fn(w)
        times = []
        for _ in range(runs):
            for w in waves:
                t0 = time.perf_counter()
                fn(w)
                times.append(time.perf_counter() - t0)
        t = np.array(times) * 1000
        rows.append({"engine": name, "median_ms": round(float(np.median(t)), 3),
                     "p90_ms": round(float(np.percentile(t, 90)), 3), "calls": len(times)})
    base = next(r["median_ms"] for r in rows if r["engine"] == "native")
    for r in rows:
        r["vs_native"] = round(r["median_ms"] / base, 2)
    cpu = cpuinfo_fields()
    from .. import _core

    return {"utterances": len(waves), "mean_seconds": round(float(np.mean([len(w) for w in waves])) / 16000, 3),
            "runs": runs, "threads": 1, "rows": rows,
            # products with this many activation rows (and >= 3 bits) take the dense path (docs/runtime.md)
            "dense_min_rows": int(_core.Matrix.default_dense_min_rows()),
            # the convolutions' frame windows read in place (ONDEVICE_FUSE=0: the nodes as written)
            "fuse": bool(_core.default_fuse()),
            "machine": {"cpu": cpu.get("model name", platform.processor()), "cores": os.cpu_count(),
                        "python": platform.python_version()}}


def write_report(result: dict[str, Any], out_dir: str | os.PathLike, command: str) -> Path:
    """``out_dir/understand.{json,md}``; ``command`` is the line that made them, quoted in the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "understand.json", json.dumps(result, indent=1) + "\n")
    lines = ["# Speech-intent latency per utterance", "",
             f"{result['utterances']} held-out test utterances (mean {result['mean_seconds']} s of audio), "
             f"{result['runs']} timed passes after a warm-up, 1 thread, audio already decoded. "
             f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores. Native dense path from "
             f"{result.get('dense_min_rows', 'n/a')} activation rows (0: never; docs/runtime.md); graph fusion "
             f"{ {True: 'on', False: 'off (ONDEVICE_FUSE=0)'}.get(result.get('fuse'), 'n/a') }.", "",
             "| engine | median ms | p90 ms | vs native |", "|---|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(f"| {r['engine']} | {r['median_ms']} | {r['p90_ms']} | {r['vs_native']}x |")
    lines += ["", f"Command: `{command}`", ""]
    atomic_write_text(out / "understand.md", "\n".join(lines))
    return out / "understand.md"
