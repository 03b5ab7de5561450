"""Mixed-precision BCQ of the speech-intent model, with quantization-aware retraining.

The same machinery as the translation model (:mod:`ondevice.quant.fake_quant`, the BCQ math in
:mod:`ondevice.bcq`, Algorithm 1's frequency clusters for the token embedding); only the plan differs.
Every matrix is quantized, the convolutions included (they are ``nn.Linear`` over frames):

* the feature encoder and the quantizer map decide the *tokens*; their error cannot be trained
  away through the argmax, so they keep more bits and the BERT is retrained on the tokens the
  quantized front end produces (the tokens are recomputed once after quantizing it);
* the BERT's matrices are fake-quantized (straight-through) while fine-tuning with the shipped variant's loss
  (cross-entropy, plus L1 to the teacher's logits if the variant has stage-2 KD).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ..bitplane import PackedPlanes, pack
from ..errors import ConfigError
from ..quant.embedding_bits import check_cluster_spec, embedding_bits
from .model import SLUConfig, SpeechIntentModel


@dataclass
class SLUQuantPlan:
    """Bits per matrix kind (1..4); ``embedding`` may be frequency clusters ``{"ratio", "bits"}``."""

    conv: int = 4
    vq: int = 4
    bert_conv: int = 2
    embedding: Any = field(default_factory=lambda: {"ratio": 2.0, "bits": [3, 2, 1]})
    positions: int = 2
    attn: int = 3
    ffn: int = 2
    heads: int = 4
    method: str = "alternating"

    def to_dict(self) -> dict:
        return asdict(self)


def _kind(name: str) -> str | None:
    if name.startswith("encoder.convs."):
        return "conv"
    if name == "vq_logits.weight":
        return "vq"
    if name.startswith("bert.embed_groups."):
        return "embedding"
    if name.startswith("bert.convs."):
        return "bert_conv"
    if name == "bert.embed_positions.weight":
        return "positions"
    if ".self_attn." in name:
        return "attn"
    if ".fc1." in name or ".fc2." in name:
        return "ffn"
    if name.startswith("bert.heads."):
        return "heads"
    return None


def assignment(model: SpeechIntentModel, plan: SLUQuantPlan, token_counts: np.ndarray) -> dict[str, Any]:
    """``{weight name: bits}`` for every matrix of the shipped model (per-row bits for each group's
    embedding, ranked by its codeword's frequency in the training tokens ``token_counts`` [V**G];
    the [MASK] and padding rows get the fewest bits)."""
    out: dict[str, Any] = {}
    for name, p in model.named_parameters():
        if p.dim() != 2 or not name.endswith(".weight"):
            continue
        kind = _kind(name)
        if kind is None:
            raise ConfigError(f"{name} has no entry in the SLU quantization plan")
        spec = getattr(plan, kind)
        if isinstance(spec, dict):
            ratio, bits = check_cluster_spec(spec.get("ratio"), spec.get("bits"), kind)
            cfg = model.cfg
            v, group = cfg.vq_codewords, int(name.split(".")[2])
            codeword = (np.arange(cfg.num_tokens) // v ** (cfg.vq_groups - 1 - group)) % v
            freq = np.bincount(codeword, weights=np.asarray(token_counts, dtype=np.float64), minlength=v + 2)
            out[name] = embedding_bits(freq, ratio, bits, demote_ids=(v, v + 1))
        else:
            if isinstance(spec, bool) or not isinstance(spec, int) or not 1 <= spec <= 4:
                raise ConfigError(f"SLU plan {kind} must be 1..4 bits or clusters, got {spec!r}")
            out[name] = spec
    return out


def average_bits(model: SpeechIntentModel, assign: dict[str, Any]) -> float:
    """Parameter-weighted average of bit-planes over the quantized matrices (the paper's figure)."""
    params = dict(model.named_parameters())
    total = bits = 0.0
    for name, b in assign.items():
        rows, cols = params[name].shape
        per_row = np.broadcast_to(np.asarray(b, dtype=np.float64), (rows,))
        bits += float(per_row.sum()) * cols
        total += rows * cols
    return bits / total


def front_end(model: SpeechIntentModel) -> list[torch.nn.Parameter]:
    """The parameters that decide the tokens (feature encoder + quantizer map)."""
    return list(model.encoder.parameters()) + list(model.vq_logits.parameters())


def pack_results(results: dict[str, Any]) -> dict[str, PackedPlanes]:
    """BCQ results (``fake_quant.export_bcq``) -> bit-plane matrices for the export."""
    return {name: pack(r.signs, r.alpha, r.row_bits, r.group_size, r.offset) for name, r in results.items()}


def build_model(cfg: SLUConfig, tokenizer_state: dict, bert_state: dict) -> SpeechIntentModel:
    """The shipped model from the tokenizer's and the fine-tuned BERT's weights (the pre-training
    heads ``mlm`` and ``kd_proj`` are dropped: nothing at inference reads them)."""
    m = SpeechIntentModel(cfg)
    m.encoder.load_state_dict(tokenizer_state["encoder"])
    m.vq_logits.load_state_dict(tokenizer_state["vq_logits"])
    m.bert.load_state_dict(bert_state)
    del m.bert.mlm, m.bert.kd_proj
    return m.eval()
