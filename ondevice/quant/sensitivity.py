"""Sensitivity of translation quality to quantizing one sublayer kind (Chung et al., 2020, Table 2).

For every sublayer kind and bit width, only the matrices of that kind are BCQ-quantized
(post-training, no retraining); everything else stays fp32.  The first ``limit`` sentences
of a split are translated and scored (BLEU, chrF) and compared with the fp32 model.
Everything happens in memory: the fp32 model is deep-copied per cell.
"""

from __future__ import annotations

import copy
import os
from typing import Any, Sequence

from ..errors import ConfigError
from .plan import BLOCK_OF_KIND, MAX_BITS, QuantPlan, model_matrices
from .ptq import quantize_model_

__all__ = ["sensitivity", "to_markdown", "KINDS"]

KINDS = ("embedding", "encoder_self_attn", "encoder_ffn", "decoder_self_attn", "decoder_encoder_attn",
         "decoder_ffn")


def sensitivity(model_dir: str | os.PathLike, data_dir: str | os.PathLike, split: str = "valid", src: str = "en",
                tgt: str = "de", kinds: Sequence[str] = KINDS, bits: Sequence[int] = (1, 2, 3), limit: int = 200,
                beam: int = 1, checkpoint: str = "checkpoint_best.pt", method: str = "alternating",
                group_size: int | None = None, iters: int = 15) -> list[dict[str, Any]]:
    """One row per (kind, bits): ``{"kind", "bits", "bleu", "chrf", "bleu_drop", "chrf_drop",
    "fp32_bleu", "fp32_chrf", "params", "sentences"}`` (drop = fp32 score - quantized score)."""
    from ..nmt.data import read_parallel
    from ..nmt.evaluate import load_model, score, translate

    kinds = list(kinds)
    bad = [k for k in kinds if k not in BLOCK_OF_KIND]
    if not kinds or bad:
        raise ConfigError(f"unknown sublayer kind(s) {bad or kinds!r} (expected some of {', '.join(KINDS)})")
    bits = [int(b) for b in bits]
    if not bits or any(not 1 <= b <= MAX_BITS for b in bits):
        raise ConfigError(f"bits must be values in 1..{MAX_BITS}, got {bits!r}")
    sources, refs = read_parallel(data_dir, split, src, tgt)
    if limit:
        sources, refs = sources[:limit], refs[:limit]
    model, tok = load_model(model_dir, checkpoint)
    mats = model_matrices(model.config)

    def run(m) -> dict[str, Any]:
        return score(translate(m, tok, sources, beam=beam), refs)

    base = run(model)
    rows = []
    for kind in kinds:
        names = [m.name for m in mats if m.kind == kind]
        params = sum(m.numel for m in mats if m.kind == kind)
        for b in bits:
            plan = QuantPlan.uniform(b, method=method, group_size=group_size,
                                     offset=(method == "uniform"))
            m = copy.deepcopy(model)
            quantize_model_(m, {n: b for n in names}, plan, iters=iters)
            m.eval()
            s = run(m)
            rows.append({"kind": kind, "bits": b, "bleu": s["bleu"], "chrf": s["chrf"],
                         "bleu_drop": round(base["bleu"] - s["bleu"], 2), "chrf_drop": round(base["chrf"] - s["chrf"], 2),
                         "fp32_bleu": base["bleu"], "fp32_chrf": base["chrf"], "params": params,
                         "sentences": s["sentences"]})
            del m
    return rows


def to_markdown(rows: Sequence[dict[str, Any]], metric: str = "bleu") -> str:
    """Markdown table: one line per kind, one column per bit width, cells ``score (-drop)``; the fp32
    score goes in the header."""
    if not rows:
        raise ConfigError("no sensitivity rows to format")
    kinds = list(dict.fromkeys(r["kind"] for r in rows))
    bits = sorted({int(r["bits"]) for r in rows})
    cell = {(r["kind"], int(r["bits"])): r for r in rows}
    fp32 = rows[0].get(f"fp32_{metric}")
    head = f"| sublayer (fp32 {metric.upper()} {fp32}) | " + " | ".join(f"{b}-bit" for b in bits) + " |"
    lines = [head, "|---|" + "---:|" * len(bits)]
    for k in kinds:
        cs = []
        for b in bits:
            r = cell.get((k, b))
            cs.append("" if r is None else f"{r[metric]:.2f} ({-r[metric + '_drop']:+.2f})")
        lines.append(f"| {k} | " + " | ".join(cs) + " |")
    return "\n".join(lines) + "\n"
