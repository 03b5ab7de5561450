"""The quantization results table and plot: BLEU/chrF against average bits, PTQ vs QAT.

One JSON spec lists the experiments (fp32, post-training quantization by a plan, the result of a
QAT run, a packed model directory); :func:`run` evaluates each on the same held-out splits with
the same decoder settings and writes ``results.json``, ``results.md`` (the table for the model
card) and ``results.png`` (the plot).  Finished experiments are kept in ``results.json`` and
skipped when the command is run again with the same spec entry, so a long table can be built
across several sessions on a small machine.

Spec::

    {"model_dir": "runs/nmt-en-de", "checkpoint": "checkpoint_avg.pt", "data_dir": "data/en-de",
     "src": "en", "tgt": "de", "splits": ["test_bible", "test_ui"], "beam": 1, "limit": null,
     "experiments": [
       {"name": "fp32"},
       {"name": "uniform 2-bit", "method": "PTQ", "plan": "uniform_2bit"},
       {"name": "ours 2.3-bit", "method": "QAT", "qat_run": "runs/qat-2.3"},
       {"name": "shipped", "method": "QAT", "packed": "models/nmt-en-de-q"}]}

Relative paths are relative to the spec file.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import ConfigError
from ..json_config import read_json_object

__all__ = ["load_spec", "run", "to_markdown", "plot"]

_SPEC_KEYS = {"model_dir", "checkpoint", "data_dir", "src", "tgt", "splits", "beam", "limit", "experiments"}
_EXP_KEYS = {"name", "method", "plan", "qat_run", "packed", "note"}
_PATHS = ("model_dir", "data_dir")
_EXP_PATHS = ("qat_run", "packed")


def load_spec(path: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates a results spec (unknown keys are errors; paths made absolute)."""
    p = Path(path)
    spec = read_json_object(p, "results spec")
    unknown = sorted(set(spec) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; allowed: {sorted(_SPEC_KEYS)}")
    for k in ("model_dir", "data_dir", "experiments"):
        if k not in spec:
            raise ConfigError(f"{p}: missing key {k!r}")
    spec = {"checkpoint": "checkpoint_best.pt", "src": "en", "tgt": "de", "splits": ["test_bible", "test_ui"],
            "beam": 1, "limit": None, **spec}
    for k in ("model_dir", "data_dir", "checkpoint", "src", "tgt"):
        if not isinstance(spec[k], str) or not spec[k]:
            raise ConfigError(f"{p}: {k} must be a non-empty string, got {spec[k]!r}")
    if isinstance(spec["beam"], bool) or not isinstance(spec["beam"], int) or spec["beam"] < 1:
        raise ConfigError(f"{p}: beam must be an integer >= 1, got {spec['beam']!r}")
    if spec["limit"] is not None and (isinstance(spec["limit"], bool) or not isinstance(spec["limit"], int)
                                      or spec["limit"] < 1):
        raise ConfigError(f"{p}: limit must be null (every sentence) or an integer >= 1, got {spec['limit']!r}")
    if not isinstance(spec["splits"], list) or not spec["splits"] \
            or not all(isinstance(x, str) and x for x in spec["splits"]):
        raise ConfigError(f"{p}: splits must be a non-empty list of split names, got {spec['splits']!r}")
    for k in _PATHS:
        spec[k] = str((p.parent / spec[k]).resolve())
    exps = spec["experiments"]
    if not isinstance(exps, list) or not exps:
        raise ConfigError(f"{p}: experiments must be a non-empty list")
    names = set()
    for e in exps:
        if not isinstance(e, dict) or "name" not in e:
            raise ConfigError(f"{p}: every experiment needs a name: {e!r}")
        bad = sorted(set(e) - _EXP_KEYS)
        if bad:
            raise ConfigError(f"{p}: experiment {e['name']!r}: unknown key(s) {bad}; allowed: {sorted(_EXP_KEYS)}")
        sources = [k for k in ("plan", "qat_run", "packed") if k in e]
        if len(sources) > 1:
            raise ConfigError(f"{p}: experiment {e['name']!r} has more than one of plan / qat_run / packed")
        if e["name"] in names:
            raise ConfigError(f"{p}: experiment name {e['name']!r} is used twice")
        names.add(e["name"])
        for k in _EXP_PATHS:
            if k in e:
                e[k] = str((p.parent / e[k]).resolve())
        if "plan" in e and isinstance(e["plan"], str) and e["plan"].endswith(".json"):
            e["plan"] = str((p.parent / e["plan"]).resolve())
    return spec


def _load_experiment(spec: Mapping[str, Any], e: Mapping[str, Any], base):
    """(model, tokenizer, bits/size facts) of one experiment."""
    from ..nmt.evaluate import load_model
    from .plan import size_report
    from .ptq import _as_plan, quantize_model_, resolve_frequencies

    model, tok = base
    fp32_bytes = 4 * sum(p.numel() for p in model.parameters())
    if "packed" in e:
        from .packed_model import load_packed, packed_size

        m, t, manifest = load_packed(e["packed"])
        size = packed_size(e["packed"])
        return m, t, {"average_bits": manifest["average_bits"], "bytes": size.weight_bytes,
                      "compression": fp32_bytes / size.weight_bytes}
    if "qat_run" in e:
        meta = read_json_object(Path(e["qat_run"]) / "qat_final.pt.json", "QAT result description")
        m, t = load_model(e["qat_run"], "qat_final.pt")
        rep = meta["size_report"]
        return m, t, {"average_bits": meta["average_bits"], "bytes": rep["total_bytes"],
                      "compression": rep["compression_ratio"]}
    if "plan" in e:
        plan = _as_plan(e["plan"])
        plan.validate_for(model.config)
        freqs = resolve_frequencies(plan, tok, (spec["data_dir"], "train", [spec["src"], spec["tgt"]]))
        m = copy.deepcopy(model)
        quantize_model_(m, plan.assign(m, freqs), plan)
        m.eval()
        rep = size_report(plan, m, freqs)
        return m, tok, {"average_bits": rep.average_bits, "bytes": rep.total_bytes,
                        "compression": rep.compression_ratio}
    return model, tok, {"average_bits": 32.0, "bytes": fp32_bytes, "compression": 1.0}


def run(spec_path: str | os.PathLike, out_dir: str | os.PathLike, log: Callable[[str], None] = print,
        progress: bool = True) -> list[dict[str, Any]]:
    """Evaluates every experiment not yet in ``out_dir/results.json`` (same spec entry, same settings)
    and rewrites results.json / results.md / results.png atomically after each one."""
    from ..nmt.data import read_parallel
    from ..nmt.evaluate import load_model, score, translate

    spec = load_spec(spec_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    settings = {k: spec[k] for k in ("model_dir", "checkpoint", "data_dir", "src", "tgt", "splits", "beam", "limit")}
    done: dict[str, dict[str, Any]] = {}
    prev = out / "results.json"
    if prev.exists():
        old = read_json_object(prev, "results file")
        diff = sorted(k for k in settings if (old.get("settings") or {}).get(k) != settings[k])
        # Settings that change the numbers: the old rows would be lost to rows that do not compare.
        # The directories alone may differ (a moved checkout, the shipped results' reproduce
        # command): then every row is measured again, as before.
        numeric = [k for k in diff if k not in ("model_dir", "data_dir")]
        if numeric:
            raise ConfigError(f"{prev} holds results made with other settings ({', '.join(numeric)}); use "
                              "another --out directory, or delete that file to start over")
        if not diff:
            done = {r["name"]: r for r in old.get("rows", [])}
    data = {s: read_parallel(spec["data_dir"], s, spec["src"], spec["tgt"]) for s in spec["splits"]}
    if spec["limit"]:
        data = {s: (src[: spec["limit"]], ref[: spec["limit"]]) for s, (src, ref) in data.items()}
    base = None
    rows = []
    for e in spec["experiments"]:
        entry = {k: e[k] for k in sorted(e)}
        if e["name"] in done and done[e["name"]].get("spec") == entry:
            rows.append(done[e["name"]])
            continue
        if base is None:
            base = load_model(spec["model_dir"], spec["checkpoint"])
        log(f"[results] {e['name']}: loading")
        model, tok, facts = _load_experiment(spec, e, base)
        method = e.get("method") or ("QAT" if "qat_run" in e else "PTQ" if "plan" in e
                                     else "packed" if "packed" in e else "fp32")
        row = {"name": e["name"], "method": method, "spec": entry,
               **facts, "scores": {}}
        for split, (src, ref) in data.items():
            hyp = translate(model, tok, src, beam=spec["beam"], progress=progress)
            s = score(hyp, ref)
            row["scores"][split] = {"bleu": s["bleu"], "chrf": s["chrf"], "sentences": s["sentences"]}
            log(f"[results] {e['name']} {split}: BLEU {s['bleu']:.2f} chrF {s['chrf']:.2f}")
        rows.append(row)
        done[e["name"]] = row
        _write(out, settings, rows + [r for n, r in done.items() if n not in {x["name"] for x in rows}])
    _write(out, settings, rows)
    return rows


def _write(out: Path, settings: Mapping[str, Any], rows: list[dict[str, Any]]) -> None:
    atomic_write_text(out / "results.json", json.dumps({"settings": settings, "rows": rows}, indent=1,
                                                       ensure_ascii=False) + "\n")
    atomic_write_text(out / "results.md", to_markdown(rows, settings))
    png = plot(rows, settings)
    if png is not None:
        atomic_write_bytes(out / "results.png", png)


def to_markdown(rows: list[dict[str, Any]], settings: Mapping[str, Any]) -> str:
    """The card's table: one line per experiment; BLEU and chrF per split and their difference to fp32."""
    splits = list(settings["splits"])
    fp32 = next((r for r in rows if r["method"] == "fp32"), None)
    head = "| model | method | avg bits | size (MiB) | smaller | " + " | ".join(
        f"{s} BLEU | {s} chrF" for s in splits) + " |"
    lines = [head, "|---|---|---:|---:|---:|" + "---:|---:|" * len(splits)]
    for r in rows:
        cells = []
        for s in splits:
            sc = r["scores"].get(s)
            if sc is None:
                cells += ["", ""]
                continue
            d = "" if fp32 is None or r is fp32 else f" ({sc['bleu'] - fp32['scores'][s]['bleu']:+.2f})"
            cells += [f"{sc['bleu']:.2f}{d}", f"{sc['chrf']:.2f}"]
        bits = "32" if r["method"] == "fp32" else f"{r['average_bits']:.2f}"
        lines.append(f"| {r['name']} | {r['method']} | {bits} | {r['bytes'] / 2**20:.2f} | "
                     f"{r['compression']:.2f}x | " + " | ".join(cells) + " |")
    beam = settings["beam"]
    lines.append("")
    lines.append(f"Decoding: {'greedy' if beam == 1 else f'beam {beam}'}; "
                 f"{'all' if not settings['limit'] else 'first ' + str(settings['limit'])} sentences per split; "
                 "sizes count the sign planes, scales, offsets and the fp32 biases/LayerNorms.")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], settings: Mapping[str, Any]) -> bytes | None:
    """PNG bytes of mean BLEU over the splits against average bits, PTQ and QAT as separate series,
    fp32 as a horizontal line; None when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import io

    splits = list(settings["splits"])

    def mean_bleu(r):
        return sum(r["scores"][s]["bleu"] for s in splits) / len(splits)

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for method, marker in (("PTQ", "o"), ("QAT", "s")):
        pts = sorted((r["average_bits"], mean_bleu(r), r["name"]) for r in rows if r["method"] == method)
        if pts:
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=marker, linestyle="none", label=method)
            for x, y, name in pts:
                ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7)
    fp32 = next((r for r in rows if r["method"] == "fp32"), None)
    if fp32 is not None:
        ax.axhline(mean_bleu(fp32), color="grey", linestyle="--", label="fp32")
    ax.set_xlabel("average bits per quantized weight")
    ax.set_ylabel(f"mean BLEU ({', '.join(splits)})")
    ax.set_title("BCQ quantization of the en-de Transformer")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
