"""Post-training quantization (PTQ): BCQ-quantize a trained fp32 model per a :class:`QuantPlan`.

No retraining: every matrix the plan assigns is quantized once with :mod:`ondevice.bcq`
(through :mod:`ondevice.quant.fake_quant`, so the numbers are exactly what QAT export
would produce for the same weights) and the dequantized values are baked into a plain
model.  :func:`post_training_quantize` writes that model as a checkpoint in the training
format (``{"model", "model_config", ...}``), so ``ondevice.nmt.evaluate.evaluate(...,
checkpoint=name)`` scores it, plus ``<name>.json`` with the plan, its size report and
the average bits.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from ..errors import ConfigError
from .plan import EmbeddingClusters, QuantPlan, average_bits, size_report

__all__ = ["post_training_quantize", "quantize_model_", "resolve_frequencies"]


def quantize_model_(model, assignment: Mapping[str, Any], plan: QuantPlan, iters: int = 15):
    """Quantize the weights in ``assignment`` (``{param name: bits}``) of ``model`` in place with the
    plan's BCQ options (group size, method, offset, alpha dtype) and bake the dequantized values
    into the plain parameters.  Everything not assigned (biases, LayerNorms, other matrices)
    is left untouched.  Returns ``model``."""
    import torch

    from .fake_quant import apply_fake_quant, remove_fake_quant

    if not assignment:
        return model
    with torch.no_grad():
        apply_fake_quant(model, assignment, group_size=plan.group_size, method=plan.method, offset=plan.offset,
                         iters=iters, alpha_dtype=plan.alpha_dtype)
        remove_fake_quant(model, bake=True)
    return model


def _parse_frequencies_from(spec) -> tuple[Path, str, list[str]]:
    """``frequencies_from``: a mapping ``{"data_dir", "split" (default "train"), "langs"}`` or a tuple
    ``(data_dir, split, langs)`` (langs: a sequence of language suffixes or one string)."""
    if isinstance(spec, Mapping):
        unknown = sorted(set(spec) - {"data_dir", "split", "langs"})
        if unknown or "data_dir" not in spec or "langs" not in spec:
            raise ConfigError("frequencies_from must be {'data_dir': ..., 'split': 'train', 'langs': [...]}"
                              + (f" (unknown key(s) {', '.join(map(str, unknown))})" if unknown else ""))
        data_dir, split, langs = spec["data_dir"], spec.get("split", "train"), spec["langs"]
    elif isinstance(spec, (tuple, list)) and len(spec) == 3:
        data_dir, split, langs = spec
    else:
        raise ConfigError(f"frequencies_from must be (data_dir, split, langs) or a mapping, got {spec!r}")
    if isinstance(langs, str):
        langs = [langs]
    langs = list(langs)
    if not langs or not all(isinstance(x, str) and x for x in langs):
        raise ConfigError(f"frequencies_from: langs must be non-empty language suffixes, got {langs!r}")
    return Path(data_dir), str(split), langs


def resolve_frequencies(plan: QuantPlan, tokenizer, frequencies_from=None) -> np.ndarray | None:
    """Token counts for a frequency-cluster embedding plan (None when the plan does not need them)."""
    if not isinstance(plan.embedding, EmbeddingClusters):
        return None
    if frequencies_from is None:
        raise ConfigError("the plan's embedding uses frequency clusters (Algorithm 1), which need word "
                          "frequencies: pass frequencies_from=(data_dir, split, langs), e.g. "
                          "(data_dir, 'train', ['en', 'de']), to count tokens in the training text")
    from .embedding_bits import token_frequencies

    data_dir, split, langs = _parse_frequencies_from(frequencies_from)
    return token_frequencies(tokenizer, [data_dir / f"{split}.{lang}" for lang in langs])


def post_training_quantize(model_dir: str | os.PathLike, plan: QuantPlan | Mapping | str,
                           out_checkpoint_name: str = "checkpoint_ptq.pt", checkpoint: str = "checkpoint_best.pt",
                           frequencies_from=None, iters: int = 15) -> dict[str, Any]:
    """PTQ of ``model_dir/checkpoint`` with ``plan`` (a QuantPlan, its dict form, a plan file or a
    built-in plan name); writes ``model_dir/out_checkpoint_name`` (training checkpoint format, the
    quantized values baked into fp32 tensors) and ``model_dir/<out_checkpoint_name>.json``.

    Returns the json's content: ``plan``, ``average_bits``, ``size_report``, ``checkpoint``,
    ``source_checkpoint``, ``quantized`` (the quantized parameter names) and ``frequencies_from``.
    """
    from ..nmt.evaluate import load_model
    from ..nmt.train import atomic_torch_save, atomic_write_text

    plan = _as_plan(plan)
    if not out_checkpoint_name or Path(out_checkpoint_name).name != out_checkpoint_name:
        raise ConfigError(f"out_checkpoint_name must be a file name inside model_dir, got {out_checkpoint_name!r}")
    if out_checkpoint_name == checkpoint:
        raise ConfigError(f"out_checkpoint_name {out_checkpoint_name!r} would overwrite the fp32 checkpoint")
    if not out_checkpoint_name.endswith(".pt"):
        raise ConfigError(f"out_checkpoint_name must end in .pt, got {out_checkpoint_name!r}")
    d = Path(model_dir)
    # Only an earlier PTQ output (its own .json record beside it) is replaced: a name that collides
    # with another file of the model directory (a tokenizer, a QAT result) must not destroy it.
    if (d / out_checkpoint_name).exists() and not _is_ptq_record(d / (out_checkpoint_name + ".json"),
                                                                   out_checkpoint_name):
        raise ConfigError(f"{d / out_checkpoint_name} exists and is not an earlier `quantize nmt` output "
                          "(no PTQ .json record beside it): choose another --out name")
    model, tok = load_model(d, checkpoint)
    plan.validate_for(model.config)
    freqs = resolve_frequencies(plan, tok, frequencies_from)
    assignment = plan.assign(model, freqs)
    quantize_model_(model, assignment, plan, iters=iters)
    report = size_report(plan, model, freqs)
    avg = report.average_bits if freqs is not None else average_bits(plan, model)
    fr = None
    if frequencies_from is not None and freqs is not None:
        dd, split, langs = _parse_frequencies_from(frequencies_from)
        fr = {"data_dir": str(dd), "split": split, "langs": langs}
    meta = {"plan": plan.to_dict(), "average_bits": float(avg), "size_report": report.to_dict(),
            "checkpoint": out_checkpoint_name, "source_checkpoint": checkpoint,
            "quantized": sorted(assignment), "frequencies_from": fr}
    atomic_torch_save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                       "quantization": {"plan": meta["plan"], "average_bits": meta["average_bits"],
                                        "source_checkpoint": checkpoint}}, d / out_checkpoint_name)
    atomic_write_text(d / (out_checkpoint_name + ".json"), json.dumps(meta, indent=1) + "\n")
    return meta


def _is_ptq_record(path: Path, name: str) -> bool:
    """Whether ``path`` is the record post_training_quantize wrote for checkpoint ``name`` (QAT's
    record has phases; other files are not such JSON)."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("checkpoint") == name and "source_checkpoint" in meta \
        and "phases" not in meta


def _as_plan(plan) -> QuantPlan:
    if isinstance(plan, QuantPlan):
        return plan
    if isinstance(plan, Mapping):
        return QuantPlan.from_dict(plan)
    if isinstance(plan, (str, os.PathLike)):
        p = Path(plan)
        if p.suffix == ".json" and p.is_file():
            return QuantPlan.load(p)
        from .plan import builtin_plan

        return builtin_plan(str(plan))
    raise ConfigError(f"plan must be a QuantPlan, a dict, a plan file or a built-in plan name, got {plan!r}")
