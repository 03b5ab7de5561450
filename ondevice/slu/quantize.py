"""Mixed-precision BCQ of the speech-intent model, with quantization-aware retraining.

The same machinery as the translation model (:mod:`ondevice.quant.fake_quant`, the BCQ math in
:mod:`ondevice.bcq`, Algorithm 1's frequency clusters for the token embedding); only the plan differs.
Every matrix is quantized, the convolutions included (they are ``nn.Linear`` over frames):

* the feature encoder and the quantizer map decide the *tokens* through an argmax, so the BERT's
  loss cannot reach them; they keep more bits and are retrained on their own task instead: with
  fake quantization, to give the fp32 front end's tokens back (:func:`retrain_front_end`, a
  cross-entropy per codebook group against the fp32 argmax). The BERT is then retrained on the
  tokens the quantized front end produces (recomputed once);
* the BERT's matrices are fake-quantized (straight-through) while fine-tuning with the shipped variant's loss
  (cross-entropy, plus L1 to the teacher's logits if the variant has stage-2 KD).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import time
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..bitplane import PackedPlanes, pack
from ..errors import ConfigError
from ..quant.embedding_bits import check_cluster_spec, embedding_bits
from ..progress import Progress
from .dataset import SLUSplit
from .model import SLUConfig, SpeechIntentModel, standardize


@dataclass
class SLUQuantPlan:
    """Bits per matrix kind (1..4); ``embedding`` may be frequency clusters ``{"ratio", "bits"}``."""

    conv: int = 4
    vq: int = 4
    bert_conv: int = 3
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


def retrain_front_end(model: SpeechIntentModel, teacher: SpeechIntentModel, split: SLUSplit, steps: int,
                      batch: int = 16,
                      crop_seconds: float = 1.5, lr: float = 3e-5, seed: int = 0,
                      log: Callable[[str], None] = print, progress: bool = True) -> dict[str, float]:
    """Quantization-aware retraining of the front end of ``model`` (feature encoder + quantizer map,
    already fake-quantized by ``apply_fake_quant``) towards the tokens of ``teacher``, its fp32 self
    (a copy taken before quantizing).

    Why: 4-bit post-training quantization of the front end changed 24-35 % of the tokens (measured
    per tokenizer run), and every changed token is input the fp32-trained BERT never saw. The fp32
    front end is the teacher: on random training crops, each codebook group's logits of the
    quantized front end are trained with cross-entropy against the fp32 argmax (straight-through
    through the fake quantization, re-quantized as the parametrizations' ``refresh_every`` says).
    Measured on the corpus-v3 tokenizer (150 validation utterances): tokens unchanged 61.6 % after
    PTQ, 85.8 % after 300 steps at lr 3e-5 re-quantizing every step; re-quantizing every 8 steps
    reached 80.6 %, and lr 1e-4 first undid most of the agreement (39 % at step 50) before recovering.
    Returns the token agreement (both groups equal) on the first and the last 10 % of the steps."""
    from ..quant.fake_quant import fake_quant_step
    from .pretrain import random_crops

    if steps <= 0:
        return {}
    cfg = model.cfg
    teacher.eval()
    params = [p for p in front_end(model) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed + 7)
    samples = int(crop_seconds * 16000)
    agree: list[float] = []
    model.encoder.train()
    t0 = time.monotonic()
    with Progress("front-end retraining", total=steps, unit="step", enabled=progress) as bar:
        for step in range(steps):
            for g in opt.param_groups:  # linear decay to 10 %
                g["lr"] = lr * (1.0 - 0.9 * step / steps)
            wave = standardize(random_crops(split, batch, samples, rng))
            with torch.no_grad():
                target = teacher.vq_logits(teacher.encoder(wave)).unflatten(-1, (cfg.vq_groups, -1)).argmax(-1)
            logits = model.vq_logits(model.encoder(wave)).unflatten(-1, (cfg.vq_groups, -1))
            loss = F.cross_entropy(logits.flatten(0, 2), target.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            fake_quant_step(model)
            agree.append(float((logits.argmax(-1) == target).all(-1).float().mean()))
            bar.update(1, loss=loss.item(), agree=agree[-1])
            if (step + 1) % 50 == 0 or step + 1 == steps:
                log(f"front-end retraining step {step + 1}/{steps} loss {loss.item():.4f} "
                    f"tokens agree {agree[-1]:.3f} ({time.monotonic() - t0:.0f} s)")
    model.eval()
    k = max(1, steps // 10)
    return {"agree_first": float(np.mean(agree[:k])), "agree_last": float(np.mean(agree[-k:]))}


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
