"""Encoder-decoder Transformer with fairseq's ``transformer`` architecture and parameter names.

The module tree mirrors fairseq's ``TransformerModel`` (0.12) so that ``state_dict()`` keys equal a
fairseq checkpoint's ``model`` dict and one can be loaded into the other:

    encoder.version, encoder.embed_tokens.weight, encoder.embed_positions._float_tensor,
    encoder.layers.{i}.self_attn.{k_proj,v_proj,q_proj,out_proj}.{weight,bias},
    encoder.layers.{i}.{self_attn_layer_norm,fc1,fc2,final_layer_norm}.{weight,bias},
    encoder.layer_norm.{weight,bias}                        (norm="pre"/"peri" only)
    decoder.version, decoder.embed_tokens.weight, decoder.embed_positions._float_tensor,
    decoder.layers.{i}.{self_attn,encoder_attn}.{k_proj,v_proj,q_proj,out_proj}.{weight,bias},
    decoder.layers.{i}.{self_attn_layer_norm,encoder_attn_layer_norm,fc1,fc2,final_layer_norm}.*,
    decoder.layer_norm.{weight,bias}                        (norm="pre"/"peri" only)
    decoder.output_projection.weight                        (tied to the embeddings when shared)

Peri-LN (``norm="peri"``) is not in fairseq: it uses the Pre-LN names for the *input* norms
(``self_attn_layer_norm``, ``encoder_attn_layer_norm``, ``final_layer_norm``), adds the *output*
norms ``self_attn_out_layer_norm``, ``encoder_attn_out_layer_norm``, ``ffn_out_layer_norm`` and,
like Pre-LN, a final ``encoder.layer_norm`` / ``decoder.layer_norm`` (the residual stream itself is
never normalized).  Each sublayer computes ``x + dropout(LN_out(F(LN_in(x))))``.

All tensors are batch-first.  Incremental decoding keeps per-layer keys/values in a
:class:`DecoderCache` (plain tensors, ``[B, heads, L, head_dim]``), so a decoding step is
``model.decode(new_tokens, enc, cache)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError

__all__ = [
    "TransformerConfig", "TransformerModel", "EncoderOut", "DecoderCache", "MultiheadAttention",
    "SinusoidalPositionalEmbedding", "TransformerEncoder", "TransformerDecoder",
    "TransformerEncoderLayer", "TransformerDecoderLayer", "reorder_encoder_out", "NORMS",
]

NORMS = ("post", "pre", "peri")


# --------------------------------------------------------------------------- configuration


@dataclass
class TransformerConfig:
    """Hyper-parameters of :class:`TransformerModel` (defaults: fairseq ``transformer`` = Transformer-base)."""

    vocab_size: int
    d_model: int = 512  # fairseq encoder_embed_dim == decoder_embed_dim
    ffn_dim: int = 2048
    heads: int = 8
    encoder_layers: int = 6
    decoder_layers: int = 6
    dropout: float = 0.1
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    norm: str = "post"  # "post" (fairseq default), "pre" (normalize_before), "peri" (Peri-LN)
    max_positions: int = 1024
    share_all_embeddings: bool = True  # encoder/decoder embeddings and output projection are one matrix
    bos_id: int = 0
    pad_id: int = 1
    eos_id: int = 2
    unk_id: int = 3

    def validate(self) -> None:
        """Raise :class:`~ondevice.errors.ConfigError` if the configuration cannot build a model."""

        def positive_int(name: str, minimum: int = 1) -> int:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"TransformerConfig.{name} must be an integer, got {v!r}")
            if v < minimum:
                raise ConfigError(f"TransformerConfig.{name} must be >= {minimum}, got {v}")
            return v

        for name in ("vocab_size", "ffn_dim", "heads", "encoder_layers", "decoder_layers", "max_positions"):
            positive_int(name)
        # the sinusoidal table divides by (d_model // 2 - 1): d_model must be at least 4
        positive_int("d_model", 4)
        if self.d_model % self.heads != 0:
            raise ConfigError(f"TransformerConfig.d_model ({self.d_model}) must be divisible by heads "
                              f"({self.heads})")
        for name in ("dropout", "attention_dropout", "activation_dropout"):
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ConfigError(f"TransformerConfig.{name} must be a probability in [0, 1), got {p!r}")
        if self.norm not in NORMS:
            raise ConfigError(f"TransformerConfig.norm must be one of {', '.join(map(repr, NORMS))}, "
                              f"got {self.norm!r}")
        if not isinstance(self.share_all_embeddings, bool):
            raise ConfigError(f"TransformerConfig.share_all_embeddings must be a bool, got "
                              f"{self.share_all_embeddings!r}")
        ids = {}
        for name in ("bos_id", "pad_id", "eos_id", "unk_id"):
            v = positive_int(name, 0)
            if v >= self.vocab_size:
                raise ConfigError(f"TransformerConfig.{name} ({v}) must be < vocab_size ({self.vocab_size})")
            if v in ids:
                raise ConfigError(f"TransformerConfig.{name} and {ids[v]} are both {v}: special ids must be "
                                  "distinct")
            ids[v] = name


# --------------------------------------------------------------------------- building blocks


class EncoderOut(NamedTuple):
    """Encoder output: ``out`` ``[B, S, C]`` and ``padding_mask`` ``[B, S]`` (True at padding)."""

    out: Tensor
    padding_mask: Tensor

    def reorder(self, new_order: Tensor) -> "EncoderOut":
        """Select/repeat batch rows (``index_select`` along dim 0), e.g. for beam search."""
        new_order = new_order.to(self.out.device)
        return EncoderOut(self.out.index_select(0, new_order), self.padding_mask.index_select(0, new_order))


def reorder_encoder_out(enc: EncoderOut, new_order: Tensor) -> EncoderOut:
    """Functional form of :meth:`EncoderOut.reorder`."""
    return enc.reorder(new_order)


class DecoderCache:
    """Incremental-decoding state of a :class:`TransformerDecoder`.

    Per decoder layer ``i``: ``self_k[i]``/``self_v[i]`` — self-attention keys/values of every
    position decoded so far, ``[B, heads, L, head_dim]`` (grown each step); ``cross_k[i]``/
    ``cross_v[i]`` — encoder-attention keys/values, ``[B, heads, S, head_dim]`` (computed on the
    first step from the encoder output and kept).  ``length`` is L, the number of decoded positions.
    """

    def __init__(self, num_layers: int):
        self.num_layers = num_layers
        self.self_k: list[Tensor | None] = [None] * num_layers
        self.self_v: list[Tensor | None] = [None] * num_layers
        self.cross_k: list[Tensor | None] = [None] * num_layers
        self.cross_v: list[Tensor | None] = [None] * num_layers

    @property
    def length(self) -> int:
        k = self.self_k[0] if self.num_layers else None
        return 0 if k is None else int(k.size(2))

    @property
    def batch_size(self) -> int | None:
        for t in (*self.self_k, *self.cross_k):
            if t is not None:
                return int(t.size(0))
        return None

    def reorder(self, new_order: Tensor) -> "DecoderCache":
        """Select/repeat batch rows in place (``index_select`` along dim 0); returns ``self``."""
        for store in (self.self_k, self.self_v, self.cross_k, self.cross_v):
            for i, t in enumerate(store):
                if t is not None:
                    store[i] = t.index_select(0, new_order.to(t.device))
        return self


def sinusoid_frequencies(half_dim: int) -> Tensor:
    """The sinusoidal positions' frequencies ``exp(-i * log(10000) / (half_dim - 1))``, i < half_dim,
    float32. The argument is fairseq's float32 product; its exponential is taken in double precision
    (libm) and rounded once, so the table has the same bits on every CPU: torch's float32 ``exp``
    does not (its AVX2 and AVX-512 vector code differ in the last bit for some arguments), which made
    the exported graphs, whose constants these are, differ between machines."""
    arg = torch.arange(half_dim, dtype=torch.float) * -(math.log(10000) / max(half_dim - 1, 1))
    return torch.tensor([math.exp(a) for a in arg.tolist()], dtype=torch.float64).float()


class SinusoidalPositionalEmbedding(nn.Module):
    """fairseq's ``SinusoidalPositionalEmbedding``: positions start at ``padding_idx + 1``,
    ``[sin | cos]`` halves, frequencies ``exp(-i * log(10000) / (half_dim - 1))``, padding → 0.

    ``_float_tensor`` is fairseq 0.12's (persistent) dummy buffer, kept only so that state-dict keys
    match; the table itself (``weights``) is a non-persistent buffer that grows on demand.
    """

    def __init__(self, embedding_dim: int, padding_idx: int, init_size: int = 1024):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.padding_idx = padding_idx
        self.register_buffer("weights", self.get_embedding(init_size, embedding_dim, padding_idx),
                             persistent=False)
        self.register_buffer("_float_tensor", torch.zeros(1))

    @staticmethod
    def get_embedding(num_embeddings: int, embedding_dim: int, padding_idx: int | None = None) -> Tensor:
        half_dim = embedding_dim // 2
        emb = sinusoid_frequencies(half_dim)
        emb = torch.arange(num_embeddings, dtype=torch.float).unsqueeze(1) * emb.unsqueeze(0)
        emb = torch.cat([torch.sin(emb), torch.cos(emb)], dim=1).view(num_embeddings, -1)
        if embedding_dim % 2 == 1:
            emb = torch.cat([emb, torch.zeros(num_embeddings, 1)], dim=1)
        if padding_idx is not None:
            emb[padding_idx, :] = 0
        return emb

    def make_positions(self, tokens: Tensor) -> Tensor:
        """fairseq ``utils.make_positions``: non-pad tokens numbered from padding_idx+1, pads get padding_idx."""
        mask = tokens.ne(self.padding_idx).int()
        return (torch.cumsum(mask, dim=1).type_as(mask) * mask).long() + self.padding_idx

    def forward(self, tokens: Tensor, start: int | None = None) -> Tensor:
        """Position embeddings ``[B, T, C]`` of ``tokens`` ``[B, T]``.

        ``start=None``: padding-aware positions (``make_positions``).  ``start=L`` (incremental
        decoding): the T tokens are positions L..L+T-1 of an unpadded sequence.
        """
        bsz, seq_len = tokens.shape
        max_pos = self.padding_idx + 1 + seq_len + (0 if start is None else int(start))
        if max_pos > self.weights.size(0):
            self.weights = self.get_embedding(max_pos, self.embedding_dim, self.padding_idx).to(self.weights)
        if start is None:
            positions = self.make_positions(tokens)
        else:
            positions = (torch.arange(seq_len, device=tokens.device) + (self.padding_idx + 1 + int(start)))
            positions = positions.unsqueeze(0).expand(bsz, seq_len)
        return self.weights.index_select(0, positions.reshape(-1)).view(bsz, seq_len, -1).detach()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Tolerate checkpoints without the dummy buffer (newer fairseq) or with a stored table (older).
        state_dict.setdefault(prefix + "_float_tensor", self._float_tensor.detach().clone())
        state_dict.pop(prefix + "weights", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class MultiheadAttention(nn.Module):
    """fairseq's ``MultiheadAttention`` (same parameters and init), batch-first.

    ``q = q_proj(x) * head_dim**-0.5``; softmax in float32; keys/values are ``[B, H, S, head_dim]``.
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.scaling = self.head_dim ** -0.5
        self.dropout_p = dropout
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # fairseq (qkv_same_dim): scaled xavier for q/k/v, whose biases keep nn.Linear's default init
        nn.init.xavier_uniform_(self.k_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.v_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.q_proj.weight, gain=1 / math.sqrt(2))
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.constant_(self.out_proj.bias, 0.0)

    def _heads(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def compute_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``[B, H, S, head_dim]`` of ``x`` ``[B, S, C]``."""
        return self._heads(self.k_proj(x)), self._heads(self.v_proj(x))

    def attend(self, query: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None = None,
               attn_mask: Tensor | None = None) -> Tensor:
        """Attention of ``query`` ``[B, T, C]`` over ``k``/``v``; masks are boolean, True = excluded:
        ``key_padding_mask`` ``[B, S]``, ``attn_mask`` ``[T, S]``."""
        b, t, c = query.shape
        q = self._heads(self.q_proj(query) * self.scaling)
        scores = torch.matmul(q, k.transpose(-1, -2))  # [B, H, T, S]
        # fairseq fills -inf; the most negative finite value gives the same probabilities (exactly 0
        # after exp) but no NaN for a query with every key masked (e.g. an all-padding row)
        neg = torch.finfo(scores.dtype).min
        if attn_mask is not None:
            scores = scores.masked_fill(attn_mask, neg)
        if key_padding_mask is not None:
            scores = scores.masked_fill(key_padding_mask[:, None, None, :], neg)
        probs = torch.softmax(scores.float(), dim=-1).type_as(scores)
        probs = F.dropout(probs, p=self.dropout_p, training=self.training)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, c)
        return self.out_proj(out)

    def forward(self, query: Tensor, key: Tensor, key_padding_mask: Tensor | None = None,
                attn_mask: Tensor | None = None) -> Tensor:
        k, v = self.compute_kv(key)
        return self.attend(query, k, v, key_padding_mask, attn_mask)


def _layer_norm(d: int) -> nn.LayerNorm:
    return nn.LayerNorm(d, eps=1e-5)


class TransformerEncoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.d_model
        self.norm = cfg.norm
        self.self_attn = MultiheadAttention(d, cfg.heads, cfg.attention_dropout)
        self.self_attn_layer_norm = _layer_norm(d)
        if self.norm == "peri":
            self.self_attn_out_layer_norm = _layer_norm(d)
        self.dropout_module = nn.Dropout(cfg.dropout)
        self.activation_dropout_module = nn.Dropout(cfg.activation_dropout)
        # fairseq: plain nn.Linear (PyTorch's default init), see TransformerEncoderLayerBase.build_fc1
        self.fc1 = nn.Linear(d, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, d)
        self.final_layer_norm = _layer_norm(d)
        if self.norm == "peri":
            self.ffn_out_layer_norm = _layer_norm(d)

    def _ffn(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout_module(F.relu(self.fc1(x))))

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> Tensor:
        post, peri = self.norm == "post", self.norm == "peri"
        residual = x
        if not post:
            x = self.self_attn_layer_norm(x)
        x = self.self_attn(x, x, key_padding_mask=padding_mask)
        if peri:
            x = self.self_attn_out_layer_norm(x)
        x = residual + self.dropout_module(x)
        if post:
            x = self.self_attn_layer_norm(x)

        residual = x
        if not post:
            x = self.final_layer_norm(x)
        x = self._ffn(x)
        if peri:
            x = self.ffn_out_layer_norm(x)
        x = residual + self.dropout_module(x)
        if post:
            x = self.final_layer_norm(x)
        return x


class TransformerDecoderLayer(nn.Module):
    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        d = cfg.d_model
        self.norm = cfg.norm
        self.dropout_module = nn.Dropout(cfg.dropout)
        self.self_attn = MultiheadAttention(d, cfg.heads, cfg.attention_dropout)
        self.activation_dropout_module = nn.Dropout(cfg.activation_dropout)
        self.self_attn_layer_norm = _layer_norm(d)
        if self.norm == "peri":
            self.self_attn_out_layer_norm = _layer_norm(d)
        self.encoder_attn = MultiheadAttention(d, cfg.heads, cfg.attention_dropout)
        self.encoder_attn_layer_norm = _layer_norm(d)
        if self.norm == "peri":
            self.encoder_attn_out_layer_norm = _layer_norm(d)
        self.fc1 = nn.Linear(d, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, d)
        self.final_layer_norm = _layer_norm(d)
        if self.norm == "peri":
            self.ffn_out_layer_norm = _layer_norm(d)

    def forward(self, x: Tensor, enc_out: Tensor, enc_padding_mask: Tensor | None,
                self_attn_mask: Tensor | None = None, self_padding_mask: Tensor | None = None,
                past_kv: tuple[Tensor, Tensor] | None = None,
                cross_kv: tuple[Tensor, Tensor] | None = None,
                ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
        """One layer.  Returns ``(x, (self_k, self_v), (cross_k, cross_v))``: the self-attention
        keys/values of every position (``past_kv`` plus the new ones) and the encoder-attention
        keys/values (``cross_kv`` when given, else computed from ``enc_out``)."""
        post, peri = self.norm == "post", self.norm == "peri"

        residual = x
        if not post:
            x = self.self_attn_layer_norm(x)
        k, v = self.self_attn.compute_kv(x)
        if past_kv is not None:
            k = torch.cat([past_kv[0], k], dim=2)
            v = torch.cat([past_kv[1], v], dim=2)
        x = self.self_attn.attend(x, k, v, self_padding_mask, self_attn_mask)
        if peri:
            x = self.self_attn_out_layer_norm(x)
        x = residual + self.dropout_module(x)
        if post:
            x = self.self_attn_layer_norm(x)

        residual = x
        if not post:
            x = self.encoder_attn_layer_norm(x)
        if cross_kv is None:
            cross_kv = self.encoder_attn.compute_kv(enc_out)
        x = self.encoder_attn.attend(x, cross_kv[0], cross_kv[1], enc_padding_mask)
        if peri:
            x = self.encoder_attn_out_layer_norm(x)
        x = residual + self.dropout_module(x)
        if post:
            x = self.encoder_attn_layer_norm(x)

        residual = x
        if not post:
            x = self.final_layer_norm(x)
        x = self.fc2(self.activation_dropout_module(F.relu(self.fc1(x))))
        if peri:
            x = self.ffn_out_layer_norm(x)
        x = residual + self.dropout_module(x)
        if post:
            x = self.final_layer_norm(x)
        return x, (k, v), cross_kv


class _VersionedModule(nn.Module):
    """fairseq's encoder/decoder carry a ``version`` buffer (``[3.]``); kept so state-dict keys match."""

    def _init_version(self) -> None:
        self.register_buffer("version", torch.Tensor([3]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        state_dict.setdefault(prefix + "version", self.version.detach().clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class TransformerEncoder(_VersionedModule):
    def __init__(self, cfg: TransformerConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self._init_version()
        self.dropout_module = nn.Dropout(cfg.dropout)
        self.padding_idx = cfg.pad_id
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(cfg.d_model)
        self.embed_positions = SinusoidalPositionalEmbedding(cfg.d_model, cfg.pad_id,
                                                             cfg.max_positions + cfg.pad_id + 1)
        self.layers = nn.ModuleList(TransformerEncoderLayer(cfg) for _ in range(cfg.encoder_layers))
        self.layer_norm = _layer_norm(cfg.d_model) if cfg.norm != "post" else None

    def forward(self, src_tokens: Tensor) -> EncoderOut:
        padding_mask = src_tokens.eq(self.padding_idx)
        x = self.embed_scale * self.embed_tokens(src_tokens)
        x = x + self.embed_positions(src_tokens)
        x = self.dropout_module(x)
        x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))  # as fairseq: zero the padded positions
        for layer in self.layers:
            x = layer(x, padding_mask)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return EncoderOut(x, padding_mask)


def _causal_mask(t: int, past: int, device: torch.device) -> Tensor:
    """Boolean ``[t, past + t]`` mask, True where query ``past + i`` must not see key ``j > past + i``."""
    q = torch.arange(t, device=device).unsqueeze(1) + past
    k = torch.arange(past + t, device=device).unsqueeze(0)
    return k > q


class TransformerDecoder(_VersionedModule):
    def __init__(self, cfg: TransformerConfig, embed_tokens: nn.Embedding):
        super().__init__()
        self._init_version()
        self.dropout_module = nn.Dropout(cfg.dropout)
        self.padding_idx = cfg.pad_id
        self.embed_tokens = embed_tokens
        self.embed_scale = math.sqrt(cfg.d_model)
        self.embed_positions = SinusoidalPositionalEmbedding(cfg.d_model, cfg.pad_id,
                                                             cfg.max_positions + cfg.pad_id + 1)
        self.layers = nn.ModuleList(TransformerDecoderLayer(cfg) for _ in range(cfg.decoder_layers))
        self.layer_norm = _layer_norm(cfg.d_model) if cfg.norm != "post" else None
        self.output_projection = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.share_all_embeddings:
            self.output_projection.weight = self.embed_tokens.weight
        else:
            nn.init.normal_(self.output_projection.weight, mean=0.0, std=cfg.d_model ** -0.5)

    def forward(self, prev_tokens: Tensor, enc: EncoderOut, cache: DecoderCache | None = None) -> Tensor:
        bsz, t = prev_tokens.shape
        if cache is not None:
            if cache.num_layers != len(self.layers):
                raise ValueError(f"DecoderCache has {cache.num_layers} layers, the decoder {len(self.layers)}")
            cb = cache.batch_size
            if cb is not None and cb != bsz:
                raise ValueError(f"DecoderCache holds batch size {cb} but prev_tokens has {bsz} rows "
                                 "(reorder the cache and the encoder output together)")
        if enc.out.size(0) != bsz:
            raise ValueError(f"encoder output has batch size {enc.out.size(0)} but prev_tokens has {bsz}")
        past = 0 if cache is None else cache.length
        x = self.embed_scale * self.embed_tokens(prev_tokens)
        x = x + self.embed_positions(prev_tokens, None if cache is None else past)
        x = self.dropout_module(x)

        if cache is None:
            self_attn_mask = _causal_mask(t, 0, prev_tokens.device)
            self_padding_mask = prev_tokens.eq(self.padding_idx)
        else:
            # incremental: prev_tokens are positions past..past+t-1 (no padding)
            self_attn_mask = _causal_mask(t, past, prev_tokens.device) if t > 1 else None
            self_padding_mask = None

        for i, layer in enumerate(self.layers):
            past_kv = cross_kv = None
            if cache is not None:
                if cache.self_k[i] is not None:
                    past_kv = (cache.self_k[i], cache.self_v[i])
                if cache.cross_k[i] is not None:
                    cross_kv = (cache.cross_k[i], cache.cross_v[i])
            x, (k, v), (ck, cv) = layer(x, enc.out, enc.padding_mask, self_attn_mask, self_padding_mask,
                                        past_kv, cross_kv)
            if cache is not None:
                cache.self_k[i], cache.self_v[i] = k, v
                cache.cross_k[i], cache.cross_v[i] = ck, cv
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_projection(x)


def _embedding(num: int, dim: int, padding_idx: int) -> nn.Embedding:
    m = nn.Embedding(num, dim, padding_idx=padding_idx)
    nn.init.normal_(m.weight, mean=0.0, std=dim ** -0.5)
    nn.init.constant_(m.weight[padding_idx], 0.0)
    return m


# --------------------------------------------------------------------------- the model


class TransformerModel(nn.Module):
    """fairseq-compatible encoder-decoder Transformer (batch-first)."""

    def __init__(self, cfg: TransformerConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        enc_emb = _embedding(cfg.vocab_size, cfg.d_model, cfg.pad_id)
        dec_emb = enc_emb if cfg.share_all_embeddings else _embedding(cfg.vocab_size, cfg.d_model, cfg.pad_id)
        self.encoder = TransformerEncoder(cfg, enc_emb)
        self.decoder = TransformerDecoder(cfg, dec_emb)

    @classmethod
    def from_config(cls, cfg: TransformerConfig) -> "TransformerModel":
        return cls(cfg)

    # -- inference API
    def encode(self, src_tokens: Tensor) -> EncoderOut:
        """Encode ``src_tokens`` ``[B, S]`` (padded with ``pad_id``, left or right)."""
        return self.encoder(src_tokens)

    def decode(self, prev_tokens: Tensor, enc: EncoderOut, cache: DecoderCache | None = None) -> Tensor:
        """Logits ``[B, T, V]``.  Without a cache ``prev_tokens`` is the whole (teacher-forced) decoder
        input; with one it holds only the new positions, which continue from ``cache.length``."""
        return self.decoder(prev_tokens, enc, cache)

    def forward(self, src_tokens: Tensor, prev_tokens: Tensor) -> Tensor:
        return self.decode(prev_tokens, self.encode(src_tokens))

    def new_cache(self) -> DecoderCache:
        """An empty :class:`DecoderCache` for this model's decoder."""
        return DecoderCache(len(self.decoder.layers))

    @staticmethod
    def reorder_encoder_out(enc: EncoderOut, new_order: Tensor) -> EncoderOut:
        return enc.reorder(new_order)

    # -- bookkeeping
    def _embedding_params(self) -> list[nn.Parameter]:
        seen: dict[int, nn.Parameter] = {}
        for p in (self.encoder.embed_tokens.weight, self.decoder.embed_tokens.weight,
                  self.decoder.output_projection.weight):
            seen.setdefault(id(p), p)
        return list(seen.values())

    def num_parameters(self, part: str | None = None) -> int:
        """Parameter count: all (``None``), ``"embedding"`` (token embeddings and output projection,
        a shared matrix counted once), ``"encoder"`` / ``"decoder"`` (without embeddings)."""
        emb = self._embedding_params()
        if part is None:
            return sum(p.numel() for p in self.parameters())
        if part == "embedding":
            return sum(p.numel() for p in emb)
        if part in ("encoder", "decoder"):
            ids = {id(p) for p in emb}
            module = self.encoder if part == "encoder" else self.decoder
            return sum(p.numel() for p in module.parameters() if id(p) not in ids)
        raise ValueError(f"part must be None, 'embedding', 'encoder' or 'decoder', got {part!r}")
