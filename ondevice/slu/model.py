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
  head (pre-training only) and the three slot heads (action / object / location).  A token is
  embedded as the *sum of one embedding per codebook group* (2 x 64 rows instead of 4,096: the
  combined tokens are sparse, most of the 4,096 are rare and their rows never learn), and two
  strided convolutions (stride 2 each) turn 20 ms tokens into 80 ms positions before the
  Transformer: measured here, the BERT over raw 20 ms tokens learnt ~5x slower per epoch than the
  same BERT behind the convolutions (docs/slu-model.md).

At inference only the feature encoder, the quantizer's logits (argmax) and the BERT run.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

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
    max_frames: int = 1536       # token frames the BERT accepts; 30 s of audio is 1500 frames
    bert_convs: int = 2          # strided (2) convolutions over the embedded tokens before the Transformer

    def __post_init__(self) -> None:
        self.conv_strides = tuple(int(s) for s in self.conv_strides)

    def validate(self) -> "SLUConfig":
        for name in ("conv_channels", "vq_groups", "vq_codewords", "d_model", "heads", "ffn_dim",
                     "layers", "max_frames", "bert_convs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if name == "bert_convs" else 1):
                raise ConfigError(f"slu model {name} must be a positive integer, got {v!r}")
        if bert_frames(self.max_frames, self) < 1:
            raise ConfigError(f"slu model max_frames {self.max_frames} leaves no position after "
                              f"{self.bert_convs} strided convolutions")
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

    # special ids after the V**G speech tokens (inputs of SpeechBert.encode)
    @property
    def mask_id(self) -> int:
        return self.num_tokens

    @property
    def pad_id(self) -> int:
        return self.num_tokens + 1

    @property
    def frames_per_position(self) -> int:
        """Token frames per BERT position (the strided convolutions' total stride)."""
        return 2 ** self.bert_convs

    @property
    def bert_positions(self) -> int:
        """Rows of the position embedding: [CLS] + the positions of ``max_frames`` token frames."""
        return bert_frames(self.max_frames, self) + 1

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


def bert_frames(tokens: int, cfg: SLUConfig) -> int:
    """BERT positions (after the strided convolutions, [CLS] not counted) of ``tokens`` token frames."""
    n = tokens
    for _ in range(cfg.bert_convs):
        n = max(0, n // 2 - 1)
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
    return TransformerConfig(vocab_size=cfg.vq_codewords + 2, d_model=cfg.d_model, ffn_dim=cfg.ffn_dim, heads=cfg.heads,
                             encoder_layers=cfg.layers, decoder_layers=1, dropout=cfg.dropout, norm="pre",
                             max_positions=cfg.bert_positions, pad_id=cfg.vq_codewords + 1)


class SpeechBert(nn.Module):
    """BERT over speech tokens: group embeddings -> strided convolutions -> ``[CLS] p_1 .. p_M`` ->
    pre-LN Transformer -> final LayerNorm.

    Inputs are token ids ``[B, N]`` (``sum_g idx_g V**(G-1-g)``, or ``mask_id`` / ``pad_id``).  Each
    group's codeword index has its own embedding table of V + 2 rows (row V: [MASK], row V+1:
    padding); a frame's embedding is the sum over groups.  Heads: ``mlm`` (pre-training: the G
    codewords of each of the ``frames_per_position`` token frames a position stands for),
    ``heads[slot]`` on the [CLS] output (the intent), ``kd_proj`` mapping the [CLS] output to the text
    teacher's width (stage-1 KD only)."""

    def __init__(self, cfg: SLUConfig, teacher_dim: int = 256):
        super().__init__()
        self.cfg = cfg
        d, v = cfg.d_model, cfg.vq_codewords
        tc = bert_config(cfg)
        self.embed_groups = nn.ModuleList(nn.Embedding(v + 2, d) for _ in range(cfg.vq_groups))
        for e in self.embed_groups:
            nn.init.normal_(e.weight, std=0.02)
        self.convs = nn.ModuleList(FrameConv(d, d, 2) for _ in range(cfg.bert_convs))
        self.conv_norms = nn.ModuleList(nn.LayerNorm(d) for _ in range(cfg.bert_convs))
        self.cls = nn.Parameter(torch.randn(d) * 0.02)
        self.embed_positions = nn.Embedding(cfg.bert_positions, d)
        nn.init.normal_(self.embed_positions.weight, std=0.02)
        self.dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(TransformerEncoderLayer(tc) for _ in range(cfg.layers))
        self.layer_norm = nn.LayerNorm(d)
        self.mlm = nn.Linear(d, cfg.frames_per_position * cfg.vq_groups * v)
        self.heads = nn.ModuleDict({slot: nn.Linear(d, len(vals)) for slot, vals in SLOTS.items()})
        self.kd_proj = nn.Linear(d, teacher_dim)

    def group_ids(self, tokens: Tensor) -> Tensor:
        """``[B, N]`` token ids -> ``[B, N, G]`` codeword index per group ([MASK] -> V, padding -> V+1)."""
        cfg = self.cfg
        v, g = cfg.vq_codewords, cfg.vq_groups
        div = torch.tensor([v ** (g - 1 - i) for i in range(g)], device=tokens.device)
        idx = (tokens.clamp(max=cfg.num_tokens - 1).unsqueeze(-1) // div) % v
        idx = torch.where(tokens.eq(cfg.mask_id).unsqueeze(-1), v, idx)
        return torch.where(tokens.eq(cfg.pad_id).unsqueeze(-1), v + 1, idx)

    def embed(self, tokens: Tensor) -> Tensor:
        """``[B, N]`` token ids -> ``[B, N, d]``: the sum of the groups' embeddings."""
        idx = self.group_ids(tokens)
        return sum(e(idx[..., i]) for i, e in enumerate(self.embed_groups))

    def encode(self, tokens: Tensor, feature_mask: Tensor | None = None) -> Tensor:
        """Hidden states ``[B, 1+M, d]`` of token ids ``[B, N]`` (``pad_id`` = padding; M =
        :func:`bert_frames` of N); [CLS] is prepended after the convolutions.  ``feature_mask``
        ``[B, N, d]`` (0/1) zeroes entries of the embedded tokens: time and channel masking
        (augmentation).  A padded utterance's valid positions never read its padding (each
        convolution's output frame i reads input frames 2i..2i+3 only)."""
        cfg = self.cfg
        if tokens.shape[1] > cfg.max_frames:
            raise ConfigError(f"{tokens.shape[1]} frames exceed the model's {cfg.max_frames}")
        lengths = tokens.ne(cfg.pad_id).sum(1)
        x = self.embed(tokens)
        if feature_mask is not None:
            x = x * feature_mask
        for conv, norm in zip(self.convs, self.conv_norms):  # under 4 frames in -> 0 frames out
            x = F.relu(norm(conv(x)))
            lengths = (lengths // 2 - 1).clamp(min=0)  # bert_frames, per utterance
        b, m = x.shape[0], x.shape[1]
        x = torch.cat([self.cls.expand(b, 1, -1), x], 1)
        x = x + self.embed_positions(torch.arange(m + 1, device=x.device))[None]
        pad = torch.arange(m + 1, device=x.device)[None, :] > lengths[:, None]
        x = self.dropout(x)
        for layer in self.layers:
            x = layer(x, pad)
        return self.layer_norm(x)

    def mlm_logits(self, h: Tensor) -> Tensor:
        """``[B, 1+M, d]`` hidden states -> ``[B, M, frames_per_position, G, V]`` codeword logits of
        the token frames ``r*j .. r*j+r-1`` behind position j."""
        cfg = self.cfg
        return self.mlm(h[:, 1:]).unflatten(-1, (cfg.frames_per_position, cfg.vq_groups, cfg.vq_codewords))

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
