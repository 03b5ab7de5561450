"""The translation model as two ONNX graphs: the encoder, and one decoder step with an explicit KV cache.

The graphs repeat :mod:`ondevice.nmt.model`'s arithmetic operation for operation (same masking value,
same scaling points, the same sinusoid formula on float32 positions), so onnxruntime and PyTorch
differ only by the summation order inside matrix products and reductions.

Encoder (``encoder.onnx``): ``src_tokens`` int64 [B, S] (padded with pad_id, either side) ->
``encoder_out`` float [B, S, C], ``src_pad_mask`` bool [B, S] (True at padding) and, for each decoder
layer l, the encoder-attention keys/values ``cross_k.l`` / ``cross_v.l`` float [B, H, S, C/H]: they
depend on the source only, so they are computed once here instead of at every step.

Decoder step (``decoder_step.onnx``): ``tokens`` int64 [B, 1] (the last token of each hypothesis),
``src_pad_mask``, the cross keys/values, and ``past_self_k.l`` / ``past_self_v.l`` [B, H, L, C/H] (L = 0
at the first step) -> ``logits`` float [B, V] of the next token and ``present_self_k.l`` /
``present_self_v.l`` [B, H, L+1, C/H]. The position is L, read from the cache's shape, so a step costs
the same graph work at any length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np
from onnx import TensorProto

from ..bitplane import PackedPlanes, num_groups
from .graph import GraphBuilder, WeightStore
from .ops import DOMAIN, GATHER, MATMUL

if TYPE_CHECKING:
    from ..nmt.model import TransformerConfig

__all__ = ["Weights", "build_encoder", "build_decoder_step", "cache_names"]

_F32 = TensorProto.FLOAT
_NEG = float(np.finfo(np.float32).min)  # the model's masked_fill value (finite: no NaN for all-masked rows)


@dataclass(frozen=True)
class Weights:
    """Where each parameter's value comes from.

    ``canonical`` maps every parameter name (aliases of tied tensors included) to the name it is stored
    under; ``dense`` holds float32 values by canonical name; ``packed`` the bit-plane matrices by canonical
    name (empty for an fp32 export). A packed name is exported as our custom ops, anything else as
    standard ONNX ops."""

    canonical: Mapping[str, str]
    dense: Mapping[str, np.ndarray]
    packed: Mapping[str, PackedPlanes]

    def name(self, param: str) -> str:
        return self.canonical[param]


def cache_names(layers: int) -> dict[str, list[str]]:
    """The KV-cache tensor names of the decoder-step graph, per kind, in layer order."""
    kinds = ("cross_k", "cross_v", "past_self_k", "past_self_v", "present_self_k", "present_self_v")
    return {kind: [f"{kind}.{i}" for i in range(layers)] for kind in kinds}


class _Builder:
    """Emits the model's building blocks into one graph."""

    def __init__(self, g: GraphBuilder, cfg: "TransformerConfig", w: Weights, used_ops: set[str]):
        self.g, self.cfg, self.w, self.used_ops = g, cfg, w, used_ops
        self.head_dim = cfg.d_model // cfg.heads

    # -- parameters
    def _dense(self, param: str) -> str:
        name = self.w.name(param)
        return self.g.weight(name, self.w.dense[name])

    def _packed_inputs(self, name: str, p: PackedPlanes) -> tuple[list[str], dict[str, int]]:
        """Initializers of a packed matrix (overridable: see GraphBuilder) and the op's attributes."""
        ins = [self.g.weight(f"{name}.planes", p.planes, overridable=True),
               self.g.weight(f"{name}.alpha", p.alpha, overridable=True),
               self.g.weight(f"{name}.row_bits", p.row_bits, overridable=True)]
        offset = "" if p.offset is None else self.g.weight(
            f"{name}.offset", p.offset.reshape(p.rows, num_groups(p.cols, p.group_size)), overridable=True)
        attrs = {"K": p.cols, "N": p.rows, "group_size": p.group_size, "bits": int(p.row_bits.max())}
        return ins + [offset], attrs

    # -- blocks
    def linear(self, x: str, prefix: str, bias: bool = True) -> str:
        """``x @ W^T + b`` for the nn.Linear ``prefix`` (BitPlaneMatMul when W is packed)."""
        name = self.w.name(f"{prefix}.weight")
        b = self._dense(f"{prefix}.bias") if bias else ""
        packed = self.w.packed.get(name)
        if packed is not None:
            ins, attrs = self._packed_inputs(name, packed)
            self.used_ops.add(MATMUL)
            return self.g.op(MATMUL, x, *ins, b, domain=DOMAIN, hint=prefix, **attrs)
        y = self.g.op("MatMul", x, self.g.op("Transpose", self._dense(f"{prefix}.weight"), perm=[1, 0]), hint=prefix)
        return self.g.op("Add", y, b) if bias else y

    def embed(self, ids: str, prefix: str) -> str:
        """``sqrt(C) * embed_tokens(ids)`` (BitPlaneGather when the table is packed)."""
        name = self.w.name(f"{prefix}.weight")
        packed = self.w.packed.get(name)
        if packed is not None:
            ins, attrs = self._packed_inputs(name, packed)
            self.used_ops.add(GATHER)
            x = self.g.op(GATHER, ids, *ins, domain=DOMAIN, hint=prefix, **attrs)
        else:
            x = self.g.op("Gather", self._dense(f"{prefix}.weight"), ids, axis=0)
        return self.g.op("Mul", x, self.g.const(math.sqrt(self.cfg.d_model), np.float32))

    def positions(self, pos: str) -> str:
        """Sinusoidal embeddings [..., C] of float32 positions ``pos`` [...] (SinusoidalPositionalEmbedding)."""
        from ..nmt.model import sinusoid_frequencies

        # the frequencies exactly as the model computes them (the same bits on every CPU)
        freq = sinusoid_frequencies(self.cfg.d_model // 2).numpy()
        angle = self.g.op("Mul", self.g.op("Unsqueeze", pos, self.g.const([-1], np.int64)), self.g.const(freq))
        emb = self.g.op("Concat", self.g.op("Sin", angle), self.g.op("Cos", angle), axis=-1)
        if self.cfg.d_model % 2:  # odd widths get a zero last column
            emb = self.g.op("Pad", emb, self.g.const([0, 1], np.int64), "", self.g.const([-1], np.int64))
        return emb

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.g.op("LayerNormalization", x, self._dense(f"{prefix}.weight"), self._dense(f"{prefix}.bias"),
                         axis=-1, epsilon=1e-5, hint=prefix)

    def heads(self, x: str) -> str:
        """[B, T, C] -> [B, H, T, C/H]."""
        x = self.g.op("Reshape", x, self.g.const([0, 0, self.cfg.heads, self.head_dim], np.int64))
        return self.g.op("Transpose", x, perm=[0, 2, 1, 3])

    def kv(self, x: str, prefix: str) -> tuple[str, str]:
        return self.heads(self.linear(x, f"{prefix}.k_proj")), self.heads(self.linear(x, f"{prefix}.v_proj"))

    def attend(self, x: str, k: str, v: str, prefix: str, key_pad: str | None = None) -> str:
        """MultiheadAttention.attend: scaled q, masked softmax over keys, out_proj."""
        g = self.g
        q = g.op("Mul", self.linear(x, f"{prefix}.q_proj"), g.const(self.head_dim ** -0.5, np.float32))
        scores = g.op("MatMul", self.heads(q), g.op("Transpose", k, perm=[0, 1, 3, 2]))
        if key_pad is not None:
            mask = g.op("Unsqueeze", key_pad, g.const([1, 2], np.int64))
            scores = g.op("Where", mask, g.const(_NEG, np.float32), scores)
        out = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        out = g.op("Reshape", g.op("Transpose", out, perm=[0, 2, 1, 3]), g.const([0, 0, self.cfg.d_model], np.int64))
        return self.linear(out, f"{prefix}.out_proj")

    def sublayer(self, x: str, prefix: str, ln: str, out_ln: str, body: Callable[[str], str]) -> str:
        """``x + F(x)`` with the configured norm placement (post: LN after, pre: before, peri: both sides)."""
        norm = self.cfg.norm
        y = self.layer_norm(x, f"{prefix}.{ln}") if norm != "post" else x
        y = body(y)
        if norm == "peri":
            y = self.layer_norm(y, f"{prefix}.{out_ln}")
        x = self.g.op("Add", x, y)
        return self.layer_norm(x, f"{prefix}.{ln}") if norm == "post" else x

    def ffn(self, x: str, prefix: str) -> str:
        return self.linear(self.g.op("Relu", self.linear(x, f"{prefix}.fc1")), f"{prefix}.fc2")


def build_encoder(cfg: "TransformerConfig", w: Weights, store: WeightStore, used_ops: set[str]) -> GraphBuilder:
    g = GraphBuilder("encoder", store)
    b = _Builder(g, cfg, w, used_ops)
    src = g.input("src_tokens", TensorProto.INT64, ["batch", "src_len"])
    pad = g.op("Equal", src, g.const(cfg.pad_id, np.int64))
    keep = g.op("Cast", g.op("Not", pad), to=TensorProto.INT64)
    # fairseq make_positions: non-pad tokens numbered from pad_id + 1, padding gets pad_id (a zero row)
    pos = g.op("Add", g.op("Mul", g.op("CumSum", keep, g.const(1, np.int64)), keep), g.const(cfg.pad_id, np.int64))
    keep_f = g.op("Unsqueeze", g.op("Cast", keep, to=_F32), g.const([-1], np.int64))
    x = g.op("Add", b.embed(src, "encoder.embed_tokens"),
             g.op("Mul", b.positions(g.op("Cast", pos, to=_F32)), keep_f))
    x = g.op("Mul", x, keep_f)  # zero the padded positions, as the model does
    for i in range(cfg.encoder_layers):
        p = f"encoder.layers.{i}"
        x = b.sublayer(x, p, "self_attn_layer_norm", "self_attn_out_layer_norm",
                       lambda y, p=p: b.attend(y, *b.kv(y, f"{p}.self_attn"), f"{p}.self_attn", key_pad=pad))
        x = b.sublayer(x, p, "final_layer_norm", "ffn_out_layer_norm", lambda y, p=p: b.ffn(y, p))
    if cfg.norm != "post":
        x = b.layer_norm(x, "encoder.layer_norm")
    g.output(x, "encoder_out", _F32, ["batch", "src_len", cfg.d_model])
    g.output(pad, "src_pad_mask", TensorProto.BOOL, ["batch", "src_len"])
    names = cache_names(cfg.decoder_layers)
    for i in range(cfg.decoder_layers):
        k, v = b.kv(x, f"decoder.layers.{i}.encoder_attn")
        shape = ["batch", cfg.heads, "src_len", b.head_dim]
        g.output(k, names["cross_k"][i], _F32, shape)
        g.output(v, names["cross_v"][i], _F32, shape)
    return g


def build_decoder_step(cfg: "TransformerConfig", w: Weights, store: WeightStore, used_ops: set[str]) -> GraphBuilder:
    g = GraphBuilder("decoder_step", store)
    b = _Builder(g, cfg, w, used_ops)
    names = cache_names(cfg.decoder_layers)
    tokens = g.input("tokens", TensorProto.INT64, ["batch", 1])
    src_pad = g.input("src_pad_mask", TensorProto.BOOL, ["batch", "src_len"])
    cross_shape = ["batch", cfg.heads, "src_len", b.head_dim]
    past_shape = ["batch", cfg.heads, "past_len", b.head_dim]
    for i in range(cfg.decoder_layers):
        g.input(names["cross_k"][i], _F32, cross_shape)
        g.input(names["cross_v"][i], _F32, cross_shape)
        g.input(names["past_self_k"][i], _F32, past_shape)
        g.input(names["past_self_v"][i], _F32, past_shape)
    # the new token is position past_len of an unpadded sequence: pad_id + 1 + past_len
    past_len = g.op("Shape", names["past_self_k"][0], start=2, end=3)
    pos = g.op("Cast", g.op("Add", past_len, g.const([cfg.pad_id + 1], np.int64)), to=_F32)
    x = g.op("Add", b.embed(tokens, "decoder.embed_tokens"), b.positions(pos))
    present: list[tuple[str, str]] = []
    for i in range(cfg.decoder_layers):
        p = f"decoder.layers.{i}"

        def self_attn(y: str, p: str = p, i: int = i) -> str:
            k, v = b.kv(y, f"{p}.self_attn")
            k = g.op("Concat", names["past_self_k"][i], k, axis=2)
            v = g.op("Concat", names["past_self_v"][i], v, axis=2)
            present.append((k, v))
            return b.attend(y, k, v, f"{p}.self_attn")

        x = b.sublayer(x, p, "self_attn_layer_norm", "self_attn_out_layer_norm", self_attn)
        x = b.sublayer(x, p, "encoder_attn_layer_norm", "encoder_attn_out_layer_norm",
                       lambda y, p=p, i=i: b.attend(y, names["cross_k"][i], names["cross_v"][i],
                                                    f"{p}.encoder_attn", key_pad=src_pad))
        x = b.sublayer(x, p, "final_layer_norm", "ffn_out_layer_norm", lambda y, p=p: b.ffn(y, p))
    if cfg.norm != "post":
        x = b.layer_norm(x, "decoder.layer_norm")
    logits = b.linear(g.op("Squeeze", x, g.const([1], np.int64)), "decoder.output_projection", bias=False)
    g.output(logits, "logits", _F32, ["batch", cfg.vocab_size])
    out_shape = ["batch", cfg.heads, "present_len", b.head_dim]
    for i, (k, v) in enumerate(present):
        g.output(k, names["present_self_k"][i], _F32, out_shape)
        g.output(v, names["present_self_v"][i], _F32, out_shape)
    return g
