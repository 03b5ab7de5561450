"""Mixed-precision BCQ quantization of the NMT Transformer (Chung et al., 2020).

* :mod:`.plan` -- :class:`QuantPlan` (bits per block / sublayer kind, JSON files), the
  parameter -> bits assignment, the paper's average bits and an honest size report.
* :mod:`.embedding_bits` -- Algorithm 1: embedding bits by word frequency.
* :mod:`.fake_quant` -- quantization-aware training (straight-through estimator, periodic
  re-quantization, AlphaTuning) and export of the final BCQ matrices (needs torch).
* :mod:`.qat` -- ``ondevice train qat``: resumable retraining in phases (embedding, decoder,
  encoder, AlphaTuning), earlier phases frozen; writes an evaluable checkpoint and the BCQ export.
* :mod:`.packed_model` -- the shippable form: a directory of ``.bcq`` files, raw dense parameters,
  the tokenizer and a hashed manifest (docs/packed-model.md); save, verified load, honest size.

``plan`` and ``embedding_bits`` are numpy-only; ``fake_quant`` is imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

# (the Algorithm 1 function ``embedding_bits`` stays in its module: re-exporting it here would
# shadow the submodule ``ondevice.quant.embedding_bits``)
from .embedding_bits import cluster_average_bits, cluster_sizes, token_frequencies
from .plan import (EmbeddingClusters, QuantPlan, SizeReport, average_bits, average_bits_by_block, builtin_plan,
                   model_matrices, size_report)

_FAKE_QUANT = ("BCQFakeQuant", "apply_fake_quant", "apply_plan", "remove_fake_quant", "export_bcq",
               "fake_quant_step", "attach_optimizer", "to_alpha_tuning", "alpha_parameters",
               "bcq_quantize_tensor", "bcq_quantize_result")


def __getattr__(name: str) -> Any:
    if name in _FAKE_QUANT:
        return getattr(importlib.import_module(".fake_quant", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["QuantPlan", "EmbeddingClusters", "SizeReport", "average_bits", "average_bits_by_block",
           "size_report", "builtin_plan", "model_matrices", "token_frequencies",
           "cluster_sizes", "cluster_average_bits", *_FAKE_QUANT]
