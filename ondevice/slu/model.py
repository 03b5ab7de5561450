"""The spoken-intent model: a vq-wav2vec-style tokenizer of the waveform and a BERT over its tokens.

Kim et al. 2021 ("Two-stage Textual Knowledge Distillation for End-to-End SLU") put a BERT on the
discrete tokens of vq-wav2vec (Baevski et al. 2020).  Scaled to a 2-core CPU and a 2 MB budget:

* :class:`FeatureEncoder`: vq-wav2vec's strided convolutions on the raw waveform (kernel = 2 x
  stride, as its 10/5, 8/4, 4/2 ... stack), six layers with total stride 320: one frame per 20 ms
  (vq-wav2vec: 10 ms; halving the frame rate halves every later cost).  Each layer is written as
  frames -> ``nn.Linear`` (:class:`FrameConv`) on channels-last tensors: the same arithmetic as a
  ``Conv1d``, but the weights are plain matrices, so the BCQ machinery quantizes them like any
  Transformer matrix and the export is a reshape plus ``BitPlaneMatMul``.
* k-means vector quantization (vq-wav2vec's k-means variant, fitted after the contrastive training
  on the frozen features: :func:`kmeans_codebooks`): the C channels split into G groups, each group
  replaced by the nearest of V codewords; the token of a frame is ``sum_g idx_g * V**(G-1-g)``
  (V**G possible tokens).  The nearest-codeword search is one linear map + argmax (:func:`kmeans_logits`).
* :class:`ContextNetwork`: the causal convolutional aggregator used only by the contrastive
  pre-training (predict the frames k steps ahead against distractors).
* :class:`SpeechBert`: a pre-LN Transformer encoder over the tokens with a [CLS] position, an MLM
  head (pre-training only) and the three slot heads (action / object / location).

At inference only the feature encoder, the quantizer's logits (argmax) and the BERT run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from ..nmt.model import TransformerConfig, TransformerEncoderLayer
from .intents import ACTIONS, LOCATIONS, OBJECTS

SLOTS = {"action": ACTIONS, "object": OBJECTS, "location": LOCATIONS}
SAMPLE_RATE = 16000


@dataclass
class SLUConfig:
    """Hyper-parameters of the speech tokenizer and the BERT (saved with every checkpoint)."""

    conv_channels: int = 96
    conv_strides: tuple = (5, 4, 2, 2, 2, 2)  # kernel = 2 x stride; product 320 = 20 ms at 16 kHz
    vq_groups: int = 2
    vq_codewords: int = 64
    context_layers: int = 3      # causal aggregator, pre-training only
    d_model: int = 128
    heads: int = 4
    ffn_dim: int = 256
    layers: int = 3
    dropout: float = 0.1
    max_frames: int = 1536       # BERT positions (+1 for [CLS]); 30 s of audio is 1500 frames

    def __post_init__(self) -> None:
        self.conv_strides = tuple(int(s) for s in self.conv_strides)

    def validate(self) -> "SLUConfig":
        for name in ("conv_channels", "vq_groups", "vq_codewords", "d_model", "heads", "ffn_dim",
                     "layers", "max_frames"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"slu model {name} must be a positive integer, got {v!r}")
        if not self.conv_strides or any(s < 1 for s in self.conv_strides):
            raise ConfigError(f"slu model conv_strides must be positive integers, got {self.conv_strides!r}")
        if self.conv_channels % self.vq_groups or self.d_model % self.heads:
            raise ConfigError("slu model conv_channels must divide by vq_groups and d_model by heads")
        return self

    @property
    def hop(self) -> int:
        """Waveform samples per frame."""
        return math.prod(self.conv_strides)

    @property
    def num_tokens(self) -> int:
        return self.vq_codewords ** self.vq_groups

    # special ids after the V**G speech tokens
    @property
    def cls_id(self) -> int:
        return self.num_tokens

    @property
    def mask_id(self) -> int:
        return self.num_tokens + 1

    @property
    def pad_id(self) -> int:
        return self.num_tokens + 2

    @property
    def vocab_size(self) -> int:
        return self.num_tokens + 3

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["conv_strides"] = list(self.conv_strides)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "SLUConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown slu model keys: {', '.join(sorted(unknown))}")
        return cls(**d).validate()


def num_frames(samples: int, cfg: SLUConfig) -> int:
    """Frames the feature encoder makes of ``samples`` waveform samples (0 if too short)."""
    n = samples
    for s in cfg.conv_strides:
        n = n // s - 1
        if n < 1:
            return 0
    return n


def standardize(wave: Tensor, lengths: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Zero mean, unit variance per utterance (``[B, T]``), over the valid samples only: the level of
    the recording carries no meaning (the exported graph does the same with LayerNormalization)."""
    if lengths is None:
        return F.layer_norm(wave, wave.shape[-1:], eps=eps)
    mask = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
    n = lengths.clamp(min=1).to(wave.dtype)[:, None]
    mean = (wave * mask).sum(1, keepdim=True) / n
    var = (((wave - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (wave - mean) / torch.sqrt(var + eps) * mask


class FrameConv(nn.Module):
    """``Conv1d(kernel=2*stride, stride)`` without padding on channels-last ``[B, T, C]``.

    ``T`` is cut to a multiple of the stride and viewed as frames of ``stride*C`` values; output
    frame ``i`` reads frames ``i`` and ``i+1`` (its 2*stride-sample window, time-major), so the
    output has ``T // stride - 1`` frames.  The weight is an ``nn.Linear`` over that window."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        self.proj = nn.Linear(2 * stride * c_in, c_out)

    def forward(self, x: Tensor) -> Tensor:
        b, t, c = x.shape
        n = t // self.stride
        x = x[:, : n * self.stride].reshape(b, n, self.stride * c)
        return self.proj(torch.cat([x[:, :-1], x[:, 1:]], dim=-1))


class FeatureEncoder(nn.Module):
    """Waveform ``[B, T]`` -> features ``[B, N, C]``: FrameConv -> LayerNorm -> ReLU per layer."""

    def __init__(self, cfg: SLUConfig):
        super().__init__()
        c = cfg.conv_channels
        self.convs = nn.ModuleList(FrameConv(1 if i == 0 else c, c, s) for i, s in enumerate(cfg.conv_strides))
        self.norms = nn.ModuleList(nn.LayerNorm(c) for _ in cfg.conv_strides)

    def forward(self, wave: Tensor) -> Tensor:
        x = wave.unsqueeze(-1)
        for conv, norm in zip(self.convs, self.norms):
            x = F.relu(norm(conv(x)))
        return x


def kmeans_codebooks(features: Tensor, groups: int, codewords: int, iters: int = 25, seed: int = 0) -> Tensor:
    """k-means codebooks ``[G, V, C/G]`` of frame features ``[M, C]`` split into G channel groups
    (k-means++-style seeding by distance sampling, Lloyd iterations; empty clusters re-seeded on
    the farthest points)."""
    g_ = torch.Generator().manual_seed(seed)
    m, c = features.shape
    if c % groups:
        raise ConfigError(f"{c} feature channels do not split into {groups} groups")
    books = []
    for x in features.double().unflatten(1, (groups, -1)).unbind(1):
        centers = x[torch.randint(0, m, (1,), generator=g_)]
        for _ in range(1, codewords):
            d = torch.cdist(x, centers).min(1).values.pow(2)
            centers = torch.cat([centers, x[torch.multinomial(d / d.sum(), 1, generator=g_)]])
        for _ in range(iters):
            assign = torch.cdist(x, centers).argmin(1)
            counts = torch.bincount(assign, minlength=codewords)
            sums = torch.zeros_like(centers).index_add_(0, assign, x)
            empty = counts == 0
            centers = torch.where(empty[:, None], centers, sums / counts.clamp(min=1)[:, None].double())
            if empty.any():
                far = torch.cdist(x, centers).min(1).values.topk(int(empty.sum())).indices
                centers[empty] = x[far]
        books.append(centers.float())
    return torch.stack(books)


def kmeans_logits(books: Tensor) -> tuple[Tensor, Tensor]:
    """(weight ``[G*V, C]``, bias ``[G*V]``) of the linear map whose per-group argmax is the nearest
    codeword: ``argmin |z_g - e|^2 = argmax 2 e.z_g - |e|^2`` is linear in ``z``, so the quantizer
    runs as one matrix product (and is quantized and exported like every other matrix)."""
    g, v, dg = books.shape
    w = torch.zeros(g, v, g, dg)
    for i in range(g):
        w[i, :, i] = 2 * books[i]
    return w.reshape(g * v, g * dg), -books.pow(2).sum(-1).reshape(g * v)


def group_tokens(logits: Tensor, groups: int, codewords: int) -> Tensor:
    """Token id per frame: the argmax per group read as a base-V number (``[B, N, G*V]`` -> ``[B, N]``)."""
    idx = logits.unflatten(-1, (groups, codewords)).argmax(-1)
    tok = torch.zeros_like(idx[..., 0])
    for g in range(groups):
        tok = tok * codewords + idx[..., g]
    return tok


class ContextNetwork(nn.Module):
    """Causal convolutions (kernel 3) over the frames with K prediction heads: vq-wav2vec's aggregator
    and step-specific projections, scaled down."""

    def __init__(self, cfg: SLUConfig, steps: int):
        super().__init__()
        d = cfg.conv_channels
        self.convs = nn.ModuleList(nn.Conv1d(d, d, 3) for _ in range(cfg.context_layers))
        self.norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.context_layers))
        self.predict = nn.ModuleList(nn.Linear(d, d) for _ in range(steps))

    def forward(self, q: Tensor) -> Tensor:
        x = q.transpose(1, 2)
        for conv, norm in zip(self.convs, self.norms):
            x = x + F.relu(norm(conv(F.pad(x, (2, 0))).transpose(1, 2)).transpose(1, 2))
        return x.transpose(1, 2)


class SpeechTokenizer(nn.Module):
    """Feature encoder + quantizer (+ the context network while pre-training)."""

    def __init__(self, cfg: SLUConfig, pred_steps: int = 8):
        super().__init__()
        self.cfg = cfg
        self.encoder = FeatureEncoder(cfg)
        self.context = ContextNetwork(cfg, pred_steps)
        self.vq_logits = nn.Linear(cfg.conv_channels, cfg.vq_groups * cfg.vq_codewords)  # set by k-means

    @torch.no_grad()
    def tokenize(self, wave: Tensor) -> Tensor:
        """Token ids ``[B, N]`` of waveforms ``[B, T]`` (equal lengths)."""
        return group_tokens(self.vq_logits(self.encoder(standardize(wave))), self.cfg.vq_groups,
                            self.cfg.vq_codewords)


def contrastive_loss(tok: SpeechTokenizer, wave: Tensor, negatives: int = 10, temperature: float = 0.1,
                     variance_target: float = 0.5, variance_weight: float = 1.0) -> tuple[Tensor, dict]:
    """vq-wav2vec's future-prediction objective on fixed-length crops ``[B, T]``: for k = 1..K the
    context at t must pick the true frame t+k among ``negatives`` frames of the same utterance.
    Scored as wav2vec 2.0 does (cosine similarity / temperature, cross-entropy over the candidates),
    on the continuous features; the codebooks are fitted afterwards (:func:`kmeans_codebooks`)."""
    z = tok.encoder(standardize(wave))
    c = tok.context(z)
    b, n, d = z.shape
    losses, correct, count = [], 0, 0
    for k, head in enumerate(tok.context.predict, start=1):
        if n - k < 2:
            break
        pred = F.normalize(head(c[:, : n - k]), dim=-1)         # [B, n-k, d]
        pos = z[:, k:]                                            # [B, n-k, d]
        # negatives: half from other frames of the same utterance (never the positive itself), half
        # from anywhere in the batch (the easier ones give the signal that starts the learning)
        same = negatives - negatives // 2
        neg_idx = torch.randint(0, n - 1, (b, n - k, same), device=z.device)
        target_idx = torch.arange(k, n, device=z.device)[None, :, None]
        neg_idx = neg_idx + (neg_idx >= target_idx).long()
        neg = z[torch.arange(b, device=z.device)[:, None, None], neg_idx]  # [B, n-k, same, d]
        other = z.reshape(b * n, d)[torch.randint(0, b * n, (b, n - k, negatives // 2), device=z.device)]
        neg = torch.cat([neg, other], 2)
        cand = F.normalize(torch.cat([pos.unsqueeze(2), neg], 2), dim=-1)
        logits = (pred.unsqueeze(2) * cand).sum(-1) / temperature       # [B, n-k, 1+negs]
        losses.append(F.cross_entropy(logits.flatten(0, 1), torch.zeros(b * (n - k), dtype=torch.long,
                                                                          device=z.device)))
        correct += int((logits.argmax(-1) == 0).sum())
        count += b * (n - k)
    # Without a guard the encoder collapses within a few steps: features constant over time make
    # every candidate equally likely (loss log(1+negatives)), which is lower than a random
    # initialization's loss.  VICReg's variance hinge keeps each channel varying over time.
    std = torch.sqrt(z.var(1) + 1e-4)                             # [B, C] per utterance and channel
    variance = F.relu(variance_target - std).mean()
    loss = torch.stack(losses).mean()
    return loss + variance_weight * variance, {"acc": correct / max(count, 1), "var": float(variance.detach())}


def bert_config(cfg: SLUConfig) -> TransformerConfig:
    return TransformerConfig(vocab_size=cfg.vocab_size, d_model=cfg.d_model, ffn_dim=cfg.ffn_dim, heads=cfg.heads,
                             encoder_layers=cfg.layers, decoder_layers=1, dropout=cfg.dropout, norm="pre",
                             max_positions=cfg.max_frames + 1, pad_id=cfg.pad_id)


class SpeechBert(nn.Module):
    """BERT over speech tokens: ``[CLS] t_1 .. t_N`` -> pre-LN Transformer -> final LayerNorm.

    Heads: ``mlm`` (masked-token prediction; pre-training), ``heads[slot]`` on the [CLS] output (the
    intent), ``kd_proj`` mapping the [CLS] output to the text teacher's width (stage-1 KD only)."""

    def __init__(self, cfg: SLUConfig, teacher_dim: int = 256):
        super().__init__()
        self.cfg = cfg
        tc = bert_config(cfg)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.embed_positions = nn.Embedding(cfg.max_frames + 1, cfg.d_model)
        nn.init.normal_(self.embed_tokens.weight, std=0.02)
        nn.init.normal_(self.embed_positions.weight, std=0.02)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerEncoderLayer(tc) for _ in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(cfg.d_model)
        self.mlm = nn.Linear(cfg.d_model, cfg.num_tokens)
        self.heads = nn.ModuleDict({slot: nn.Linear(cfg.d_model, len(vals)) for slot, vals in SLOTS.items()})
        self.kd_proj = nn.Linear(cfg.d_model, teacher_dim)

    def encode(self, tokens: Tensor, feature_mask: Tensor | None = None) -> Tensor:
        """Hidden states ``[B, 1+N, d]`` of token ids ``[B, N]`` (``pad_id`` = padding); [CLS] is
        prepended here.  ``feature_mask`` ``[B, 1+N, d]`` (0/1) zeroes embedding entries: time and
        channel masking (augmentation)."""
        b = tokens.shape[0]
        cls = torch.full((b, 1), self.cfg.cls_id, dtype=tokens.dtype, device=tokens.device)
        tokens = torch.cat([cls, tokens], 1)
        if tokens.shape[1] > self.cfg.max_frames + 1:
            raise ConfigError(f"{tokens.shape[1] - 1} frames exceed the model's {self.cfg.max_frames}")
        pad = tokens.eq(self.cfg.pad_id)
        pos = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.embed_tokens(tokens) + self.embed_positions(pos)[None]
        if feature_mask is not None:
            x = x * feature_mask
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, pad)
        return self.layer_norm(x)

    def slot_logits(self, h: Tensor) -> dict[str, Tensor]:
        return {slot: head(h[:, 0]) for slot, head in self.heads.items()}

    def forward(self, tokens: Tensor, feature_mask: Tensor | None = None) -> dict[str, Tensor]:
        return self.slot_logits(self.encode(tokens, feature_mask))


class SpeechIntentModel(nn.Module):
    """What ships: waveform -> tokens -> BERT -> slot logits (tokenizer frozen, argmax in between)."""

    def __init__(self, cfg: SLUConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = FeatureEncoder(cfg)
        self.vq_logits = nn.Linear(cfg.conv_channels, cfg.vq_groups * cfg.vq_codewords)  # folded quantizer
        self.bert = SpeechBert(cfg)

    @torch.no_grad()
    def tokens(self, wave: Tensor) -> Tensor:
        return group_tokens(self.vq_logits(self.encoder(standardize(wave))), self.cfg.vq_groups,
                            self.cfg.vq_codewords)

    @torch.no_grad()
    def forward(self, wave: Tensor) -> dict[str, Tensor]:
        return self.bert(self.tokens(wave))
