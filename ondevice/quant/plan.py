"""Mixed-precision quantization plans: which weight matrix gets how many BCQ bits.

A plan follows Chung et al. (2020): bits are chosen per block (embedding /
encoder / decoder) and per sublayer kind inside a block; the embedding may use
per-word bits by frequency (Algorithm 1, :mod:`ondevice.quant.embedding_bits`).
Only the 2-D weight matrices of the Linear layers and the token embedding are
quantized; biases and LayerNorm parameters stay in full precision.  The shared
embedding (= decoder input embedding = output projection when
``share_all_embeddings``) is one tensor and is quantized once.

JSON form (every key is checked; unknown keys raise :class:`ConfigError`)::

    {
      "embedding": 2 | {"ratio": 1, "bits": [4, 3, 2, 1]},
      "encoder_self_attn": 3,            # or [b_0, ..., b_{L-1}], one per encoder layer
      "encoder_ffn": 4,
      "decoder_self_attn": 2,            # lists: one value per decoder layer
      "decoder_encoder_attn": 3,
      "decoder_ffn": 1,
      "group_size": null,                # null = one group per row, else a multiple of 8
      "method": "greedy",                # "greedy" | "alternating" | "uniform"
      "offset": false,                   # "uniform" needs true
      "alpha_dtype": "float32",          # storage of scales/offsets: "float32" | "float16"
      "name": "...", "note": "..."       # free text
    }

Reporting: :func:`average_bits` is the paper's number (parameter-weighted
average of bit-planes over the quantized matrices); :func:`size_report` is the
honest storage bill in the project's ``.bcq`` layout (tile padding, scales,
offsets and row-bit bytes included) plus every unquantized parameter at 32 bits.
Both work from a :class:`~ondevice.nmt.model.TransformerConfig` (no model is
allocated) or from a model.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..atomic import atomic_write_text
from ..errors import ConfigError
_emb = importlib.import_module(".embedding_bits", __package__)  # the submodule, whatever the package re-exports

__all__ = ["QuantPlan", "EmbeddingClusters", "MatrixSpec", "MatrixSize", "SizeReport", "SUBLAYER_KINDS",
           "BLOCK_OF_KIND", "METHODS", "ALPHA_DTYPES", "PLANS_DIR", "builtin_plan", "model_matrices",
           "average_bits", "average_bits_by_block", "size_report", "classify"]

METHODS = ("greedy", "alternating", "uniform")
ALPHA_DTYPES = ("float32", "float16")
MAX_BITS = 4
SUBLAYER_KINDS = ("encoder_self_attn", "encoder_ffn", "decoder_self_attn", "decoder_encoder_attn", "decoder_ffn")
BLOCK_OF_KIND = {"embedding": "embedding", "encoder_self_attn": "encoder", "encoder_ffn": "encoder",
                 "decoder_self_attn": "decoder", "decoder_encoder_attn": "decoder", "decoder_ffn": "decoder"}
_LAYERS_OF_BLOCK = {"encoder": "encoder_layers", "decoder": "decoder_layers"}
_BIT_KEYS = ("embedding",) + SUBLAYER_KINDS
_OPTIONAL_KEYS = ("group_size", "method", "offset", "alpha_dtype", "name", "note")
PLANS_DIR = Path(__file__).resolve().parent / "plans"

# fairseq module names -> sublayer kind (the layer index is group 1 where there is one)
_PATTERNS = (
    (re.compile(r"^(?:encoder|decoder)\.embed_tokens$"), "embedding"),
    (re.compile(r"^decoder\.output_projection$"), "embedding"),
    (re.compile(r"^encoder\.layers\.(\d+)\.self_attn\.(?:q|k|v|out)_proj$"), "encoder_self_attn"),
    (re.compile(r"^encoder\.layers\.(\d+)\.fc[12]$"), "encoder_ffn"),
    (re.compile(r"^decoder\.layers\.(\d+)\.self_attn\.(?:q|k|v|out)_proj$"), "decoder_self_attn"),
    (re.compile(r"^decoder\.layers\.(\d+)\.encoder_attn\.(?:q|k|v|out)_proj$"), "decoder_encoder_attn"),
    (re.compile(r"^decoder\.layers\.(\d+)\.fc[12]$"), "decoder_ffn"),
)


def classify(module_name: str) -> tuple[str, int | None] | None:
    """``(kind, layer)`` of a fairseq-named Linear/Embedding module, or None if no plan entry fits."""
    for pat, kind in _PATTERNS:
        m = pat.match(module_name)
        if m:
            return kind, (int(m.group(1)) if m.groups() else None)
    return None


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class EmbeddingClusters:
    """Algorithm 1 spec: ranked vocabulary cut into clusters of sizes ~ 1, r, r^2, ... with ``bits``."""

    ratio: float
    bits: tuple[int, ...] = _emb.DEFAULT_BITS

    def __post_init__(self) -> None:
        ratio, bits = _emb.check_cluster_spec(self.ratio, self.bits)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "bits", bits)

    def average_bits(self, vocab_size: int) -> float:
        return _emb.cluster_average_bits(vocab_size, self.ratio, self.bits)

    def to_json(self) -> dict:
        r = self.ratio
        return {"ratio": int(r) if float(r).is_integer() else r, "bits": list(self.bits)}


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _check_bits(key: str, v: Any, allow_list: bool = True) -> int | tuple[int, ...]:
    if _is_int(v):
        if not 1 <= v <= MAX_BITS:
            raise ConfigError(f"{key} must be in 1..{MAX_BITS}, got {v}")
        return int(v)
    if allow_list and isinstance(v, (list, tuple)):
        if not v:
            raise ConfigError(f"{key} must be an int in 1..{MAX_BITS} or a non-empty list (one per layer)")
        for i, b in enumerate(v):
            if not _is_int(b) or not 1 <= b <= MAX_BITS:
                raise ConfigError(f"{key}[{i}] must be an integer in 1..{MAX_BITS}, got {b!r}")
        return tuple(int(b) for b in v)
    raise ConfigError(f"{key} must be an integer in 1..{MAX_BITS}"
                      + (" or a list with one value per layer" if allow_list else "") + f", got {v!r}")


def _check_embedding(v: Any) -> int | EmbeddingClusters:
    if isinstance(v, EmbeddingClusters):
        return v
    if isinstance(v, Mapping):
        unknown = sorted(set(v) - {"ratio", "bits"})
        if unknown:
            raise ConfigError(f"embedding: unknown key(s) {', '.join('embedding.' + str(k) for k in unknown)} "
                              "(expected 'ratio' and 'bits')")
        if "ratio" not in v:
            raise ConfigError("embedding.ratio is required for a frequency-cluster embedding spec")
        return EmbeddingClusters(v["ratio"], tuple(v["bits"]) if isinstance(v.get("bits"), list)
                                 else v.get("bits", _emb.DEFAULT_BITS))
    return _check_bits("embedding", v, allow_list=False)


@dataclass(frozen=True)
class QuantPlan:
    """A mixed-precision plan.  Bit fields: an int (1..4) or, for the sublayer kinds, a tuple with one
    value per layer.  Construction validates every field (ConfigError naming the key)."""

    embedding: int | EmbeddingClusters
    encoder_self_attn: int | tuple[int, ...]
    encoder_ffn: int | tuple[int, ...]
    decoder_self_attn: int | tuple[int, ...]
    decoder_encoder_attn: int | tuple[int, ...]
    decoder_ffn: int | tuple[int, ...]
    group_size: int | None = None
    method: str = "alternating"
    offset: bool = False
    alpha_dtype: str = "float32"
    name: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        set_("embedding", _check_embedding(self.embedding))
        for k in SUBLAYER_KINDS:
            set_(k, _check_bits(k, getattr(self, k)))
        gs = self.group_size
        if gs is not None and (not _is_int(gs) or gs < 8 or gs % 8 != 0):
            raise ConfigError(f"group_size must be null (whole rows) or a positive multiple of 8, got {gs!r}")
        if gs is not None:
            set_("group_size", int(gs))
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not isinstance(self.offset, (bool, np.bool_)):
            raise ConfigError(f"offset must be true or false, got {self.offset!r}")
        set_("offset", bool(self.offset))
        if self.method == "uniform" and not self.offset:
            raise ConfigError("offset must be true with method 'uniform' (uniform levels need a per-group offset)")
        if self.alpha_dtype not in ALPHA_DTYPES:
            raise ConfigError(f"alpha_dtype must be one of {', '.join(ALPHA_DTYPES)}, got {self.alpha_dtype!r}")
        for k in ("name", "note"):
            if not isinstance(getattr(self, k), str):
                raise ConfigError(f"{k} must be a string, got {getattr(self, k)!r}")

    # -- construction / files
    @classmethod
    def uniform(cls, bits: int, **kw) -> "QuantPlan":
        """Every quantized matrix (embedding included) at ``bits``."""
        return cls(embedding=bits, **{k: bits for k in SUBLAYER_KINDS}, **kw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "QuantPlan":
        if not isinstance(d, Mapping):
            raise ConfigError(f"a quantization plan must be a JSON object, got {type(d).__name__}")
        unknown = sorted(set(d) - set(_BIT_KEYS) - set(_OPTIONAL_KEYS))
        if unknown:
            raise ConfigError(f"unknown plan key(s): {', '.join(map(str, unknown))} "
                              f"(allowed: {', '.join(_BIT_KEYS + _OPTIONAL_KEYS)})")
        missing = [k for k in _BIT_KEYS if k not in d]
        if missing:
            raise ConfigError(f"missing plan key(s): {', '.join(missing)}")
        return cls(**dict(d))

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.name:
            out["name"] = self.name
        if self.note:
            out["note"] = self.note
        e = self.embedding
        out["embedding"] = e.to_json() if isinstance(e, EmbeddingClusters) else e
        for k in SUBLAYER_KINDS:
            v = getattr(self, k)
            out[k] = list(v) if isinstance(v, tuple) else v
        out.update(group_size=self.group_size, method=self.method, offset=self.offset,
                   alpha_dtype=self.alpha_dtype)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike) -> "QuantPlan":
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read quantization plan {p}: {e}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{p} is not valid JSON: {e}") from None
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{p}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        """Writes the plan as JSON, atomically (temporary file + rename)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, json.dumps(self.to_dict(), indent=2) + "\n")

    def replace(self, **changes) -> "QuantPlan":
        return dataclasses.replace(self, **changes)

    # -- queries
    def validate_for(self, cfg) -> None:
        """Check per-layer lists against a model config's layer counts (ConfigError naming the key)."""
        for k in SUBLAYER_KINDS:
            v = getattr(self, k)
            if isinstance(v, tuple):
                attr = _LAYERS_OF_BLOCK[BLOCK_OF_KIND[k]]
                n = int(getattr(cfg, attr))
                if len(v) != n:
                    raise ConfigError(f"{k} lists {len(v)} values but the model has {n} {attr.replace('_', ' ')}")

    def layer_bits(self, kind: str, layer: int | None = None) -> int:
        """Bits of sublayer ``kind`` in ``layer`` (not for a frequency-cluster embedding)."""
        if kind == "embedding":
            if isinstance(self.embedding, EmbeddingClusters):
                raise ConfigError("embedding uses frequency clusters: use embedding_row_bits()")
            return self.embedding
        if kind not in SUBLAYER_KINDS:
            raise ConfigError(f"unknown sublayer kind {kind!r} (expected one of {', '.join(SUBLAYER_KINDS)})")
        v = getattr(self, kind)
        if isinstance(v, tuple):
            if layer is None or not 0 <= layer < len(v):
                raise ConfigError(f"{kind} lists {len(v)} values; no value for layer {layer}")
            return v[layer]
        return v

    def embedding_row_bits(self, vocab_size: int, frequencies=None, demote_ids=()) -> int | np.ndarray:
        """The embedding's bits: an int, or (Algorithm 1) a uint8 array with one value per row."""
        e = self.embedding
        if not isinstance(e, EmbeddingClusters):
            return e
        if frequencies is None:
            raise ConfigError("embedding uses frequency clusters (Algorithm 1): pass frequencies= "
                              "(counts per vocabulary id, see ondevice.quant.embedding_bits.token_frequencies)")
        f = np.asarray(frequencies)
        if f.ndim != 1 or f.shape[0] != vocab_size:
            raise ConfigError(f"frequencies must have one count per vocabulary id ({vocab_size}), "
                              f"got shape {f.shape}")
        return _emb.embedding_bits(f, e.ratio, e.bits, demote_ids)

    def matrix_bits(self, spec: "MatrixSpec") -> float:
        """Average bits of one matrix (Algorithm 1's average for the embedding)."""
        if spec.kind == "embedding" and isinstance(self.embedding, EmbeddingClusters):
            return self.embedding.average_bits(spec.rows)
        return float(self.layer_bits(spec.kind, spec.layer))

    def assign(self, model, frequencies=None) -> dict[str, int | np.ndarray]:
        """Which parameter gets which bits: ``{param name: int | uint8 per-row array}``.

        Keys are the fairseq names of the weight tensors (``encoder.layers.0.fc1.weight``...), one per
        distinct tensor: a tied embedding / output projection appears once (under its first name,
        ``encoder.embed_tokens.weight``).  Biases, LayerNorms and positional tables never appear.
        ``frequencies`` (counts per vocabulary id) is needed when the embedding uses Algorithm 1;
        the padding id is ranked last.
        """
        mats = _model_layout(model)[0]
        cfg = getattr(model, "config", None)
        if cfg is not None:
            self.validate_for(cfg)
        else:
            self.validate_for(_infer_layers(mats))
        pad = getattr(cfg, "pad_id", None)
        out: dict[str, int | np.ndarray] = {}
        for spec in mats:
            if spec.kind == "embedding":
                out[spec.name] = self.embedding_row_bits(spec.rows, frequencies,
                                                         () if pad is None else (pad,))
            else:
                out[spec.name] = self.layer_bits(spec.kind, spec.layer)
        return out


def builtin_plan(name: str) -> QuantPlan:
    """One of the plans shipped in ``ondevice/quant/plans`` (e.g. ``"paper_2.6bit"``)."""
    p = PLANS_DIR / (name if name.endswith(".json") else name + ".json")
    if not p.is_file():
        avail = sorted(q.stem for q in PLANS_DIR.glob("*.json"))
        raise ConfigError(f"no built-in plan {name!r} (available: {', '.join(avail)})")
    return QuantPlan.load(p)


# --------------------------------------------------------------------------- model layout


@dataclass(frozen=True)
class MatrixSpec:
    """A quantizable weight matrix: its parameter name, sublayer kind, layer index and shape."""

    name: str
    kind: str
    layer: int | None
    rows: int
    cols: int

    @property
    def numel(self) -> int:
        return self.rows * self.cols


def model_matrices(cfg) -> list[MatrixSpec]:
    """Quantizable matrices of a TransformerModel built from ``cfg`` (same names and order), no allocation."""
    d, f, v = int(cfg.d_model), int(cfg.ffn_dim), int(cfg.vocab_size)
    out = [MatrixSpec("encoder.embed_tokens.weight", "embedding", None, v, d)]
    attn = ("k_proj", "v_proj", "q_proj", "out_proj")  # the model's definition order
    for i in range(int(cfg.encoder_layers)):
        p = f"encoder.layers.{i}."
        out += [MatrixSpec(f"{p}self_attn.{a}.weight", "encoder_self_attn", i, d, d) for a in attn]
        out += [MatrixSpec(f"{p}fc1.weight", "encoder_ffn", i, f, d), MatrixSpec(f"{p}fc2.weight", "encoder_ffn", i, d, f)]
    if not cfg.share_all_embeddings:
        out.append(MatrixSpec("decoder.embed_tokens.weight", "embedding", None, v, d))
    for i in range(int(cfg.decoder_layers)):
        p = f"decoder.layers.{i}."
        out += [MatrixSpec(f"{p}self_attn.{a}.weight", "decoder_self_attn", i, d, d) for a in attn]
        out += [MatrixSpec(f"{p}encoder_attn.{a}.weight", "decoder_encoder_attn", i, d, d) for a in attn]
        out += [MatrixSpec(f"{p}fc1.weight", "decoder_ffn", i, f, d), MatrixSpec(f"{p}fc2.weight", "decoder_ffn", i, d, f)]
    if not cfg.share_all_embeddings:
        out.append(MatrixSpec("decoder.output_projection.weight", "embedding", None, v, d))
    return out


def unquantized_param_count(cfg) -> int:
    """Parameters that stay in full precision (biases, LayerNorms) of a model built from ``cfg``."""
    d, f = int(cfg.d_model), int(cfg.ffn_dim)
    peri, post = cfg.norm == "peri", cfg.norm == "post"
    enc_layer = 4 * d + f + d + 2 * (2 * d) + (2 * (2 * d) if peri else 0)
    dec_layer = 8 * d + f + d + 3 * (2 * d) + (3 * (2 * d) if peri else 0)
    final = 0 if post else 2 * d
    return int(cfg.encoder_layers) * enc_layer + final + int(cfg.decoder_layers) * dec_layer + final


def _weight_of(module):
    """The stored weight tensor of a module (the latent original when it is parametrized)."""
    params = getattr(module, "parametrizations", None)
    if params is not None and "weight" in params:
        return params["weight"].original
    return module.weight


def _module_tree_matrices(model) -> Iterator[tuple[str, Any, Any]]:
    """(module name, module, stored weight) for every Linear/Embedding, tied modules included."""
    from torch import nn

    for mname, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            yield mname, module, _weight_of(module)


def _model_layout(model) -> tuple[list[MatrixSpec], int]:
    """Quantizable matrices of a model (one per distinct tensor) and its count of other parameters."""
    specs: list[MatrixSpec] = []
    seen: dict[int, MatrixSpec] = {}
    for mname, _module, w in _module_tree_matrices(model):
        c = classify(mname)
        if c is None:
            raise ConfigError(f"module {mname} ({type(_module).__name__}) has no entry in a quantization plan "
                              "(expected fairseq Transformer names)")
        kind, layer = c
        prev = seen.get(id(w))
        if prev is not None:
            if (prev.kind, prev.layer) != (kind, layer):
                raise ConfigError(f"{mname}.weight is tied to {prev.name} but belongs to another sublayer kind")
            continue
        if w.dim() != 2:
            raise ConfigError(f"{mname}.weight is not a matrix (shape {tuple(w.shape)})")
        spec = MatrixSpec(mname + ".weight", kind, layer, int(w.shape[0]), int(w.shape[1]))
        seen[id(w)] = spec
        specs.append(spec)
    other = 0
    for pname, p in model.named_parameters():
        if id(p) in seen or ".parametrizations." in pname:
            continue
        other += p.numel()
    return specs, other


def _infer_layers(mats: list[MatrixSpec]):
    class _Counts:
        encoder_layers = 1 + max([m.layer for m in mats if BLOCK_OF_KIND[m.kind] == "encoder"], default=-1)
        decoder_layers = 1 + max([m.layer for m in mats if BLOCK_OF_KIND[m.kind] == "decoder"], default=-1)
    return _Counts


def _layout(cfg_or_model) -> tuple[list[MatrixSpec], int, Any]:
    """(matrices, unquantized parameter count, config or None) of a TransformerConfig or a model."""
    if hasattr(cfg_or_model, "named_modules"):
        mats, other = _model_layout(cfg_or_model)
        cfg = getattr(cfg_or_model, "config", None)
        return mats, other, cfg if cfg is not None else _infer_layers(mats)
    cfg = cfg_or_model
    if hasattr(cfg, "validate"):
        cfg.validate()
    return model_matrices(cfg), unquantized_param_count(cfg), cfg


# --------------------------------------------------------------------------- reporting


def average_bits_by_block(plan: QuantPlan, cfg_or_model) -> dict[str, float]:
    """Parameter-weighted average bits of ``embedding``, ``encoder``, ``decoder`` and ``total``
    (over quantized matrices only; the embedding at its Algorithm 1 average)."""
    mats, _, cfg = _layout(cfg_or_model)
    plan.validate_for(cfg)
    acc: dict[str, list[float]] = {"embedding": [0.0, 0], "encoder": [0.0, 0], "decoder": [0.0, 0]}
    for m in mats:
        a = acc[BLOCK_OF_KIND[m.kind]]
        a[0] += plan.matrix_bits(m) * m.numel
        a[1] += m.numel
    out = {k: (s / n if n else 0.0) for k, (s, n) in acc.items()}
    total_n = sum(n for _, n in acc.values())
    out["total"] = sum(s for s, _ in acc.values()) / total_n
    return out


def average_bits(plan: QuantPlan, cfg_or_model) -> float:
    """The paper's number: bit-planes per quantized weight, averaged over all quantized matrices."""
    return average_bits_by_block(plan, cfg_or_model)["total"]


@dataclass(frozen=True)
class MatrixSize:
    """Storage of one quantized matrix in the ``.bcq`` layout (see :func:`size_report`)."""

    name: str
    kind: str
    rows: int
    cols: int
    average_bits: float  # bit-planes per weight (no padding, no scales)
    plane_bytes: int  # packed sign planes, 32-row tiles padded to the tile's largest row bits
    scale_bytes: int  # alpha: one per (row, plane, group), tile-padded like the planes
    offset_bytes: int  # one per (row, group) when the plan has offsets
    row_bits_bytes: int  # one uint8 per row

    @property
    def bytes(self) -> int:
        return self.plane_bytes + self.scale_bytes + self.offset_bytes + self.row_bits_bytes

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.rows * self.cols


@dataclass(frozen=True)
class SizeReport:
    """Honest size accounting of a plan applied to a model (see :func:`size_report`)."""

    matrices: list[MatrixSize]
    unquantized_params: int
    alpha_dtype: str
    notes: list[str] = field(default_factory=list)

    @property
    def quantized_params(self) -> int:
        return sum(m.rows * m.cols for m in self.matrices)

    @property
    def quantized_bytes(self) -> int:
        return sum(m.bytes for m in self.matrices)

    @property
    def unquantized_bytes(self) -> int:
        return 4 * self.unquantized_params

    @property
    def total_bytes(self) -> int:
        return self.quantized_bytes + self.unquantized_bytes

    @property
    def fp32_bytes(self) -> int:
        return 4 * (self.quantized_params + self.unquantized_params)

    @property
    def compression_ratio(self) -> float:
        return self.fp32_bytes / self.total_bytes

    @property
    def average_bits(self) -> float:
        """Paper-style average (bit-planes only, over quantized matrices)."""
        return sum(m.average_bits * m.rows * m.cols for m in self.matrices) / self.quantized_params

    @property
    def bits_per_weight(self) -> float:
        """Stored bits per quantized weight: planes with tile padding, scales, offsets, row bits."""
        return 8.0 * self.quantized_bytes / self.quantized_params

    def by_kind(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for m in self.matrices:
            d = out.setdefault(m.kind, {"params": 0, "bytes": 0, "bit_sum": 0.0})
            d["params"] += m.rows * m.cols
            d["bytes"] += m.bytes
            d["bit_sum"] += m.average_bits * m.rows * m.cols
        return {k: {"params": d["params"], "bytes": d["bytes"], "average_bits": d["bit_sum"] / d["params"],
                    "bits_per_weight": 8.0 * d["bytes"] / d["params"]} for k, d in out.items()}

    def to_dict(self) -> dict:
        return {"quantized_params": self.quantized_params, "quantized_bytes": self.quantized_bytes,
                "unquantized_params": self.unquantized_params, "unquantized_bytes": self.unquantized_bytes,
                "total_bytes": self.total_bytes, "fp32_bytes": self.fp32_bytes,
                "compression_ratio": self.compression_ratio, "average_bits": self.average_bits,
                "bits_per_weight": self.bits_per_weight, "alpha_dtype": self.alpha_dtype,
                "by_kind": self.by_kind(), "notes": list(self.notes),
                "matrices": [dict(dataclasses.asdict(m), bytes=m.bytes) for m in self.matrices]}

    def format(self) -> str:
        mb = lambda b: b / 2 ** 20  # noqa: E731
        lines = [f"{'kind':<22}{'params':>12}{'avg bits':>10}{'bits/w':>9}{'MiB':>10}"]
        for k, d in self.by_kind().items():
            lines.append(f"{k:<22}{d['params']:>12,}{d['average_bits']:>10.3f}{d['bits_per_weight']:>9.3f}"
                         f"{mb(d['bytes']):>10.2f}")
        lines.append(f"{'unquantized (fp32)':<22}{self.unquantized_params:>12,}{32:>10}{32:>9}"
                     f"{mb(self.unquantized_bytes):>10.2f}")
        lines.append(f"total {mb(self.total_bytes):.2f} MiB vs fp32 {mb(self.fp32_bytes):.2f} MiB: "
                     f"{self.compression_ratio:.2f}x smaller; average {self.average_bits:.3f} bits "
                     f"({self.bits_per_weight:.3f} stored bits per quantized weight)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def packed_matrix_size(name: str, kind: str, rows: int, cols: int, row_bits, group_size: int | None,
                       offset: bool, alpha_dtype: str) -> MatrixSize:
    """Bytes of one matrix in the ``.bcq`` layout (docs/bitplane-format.md), as ``BCQMatrix.nbytes``
    counts them: 32-row tiles store ``max(row bits in tile)`` planes of ``ceil(cols/8)`` bytes per row
    and as many scales per group; offsets are ``rows x groups``; the file header is not included."""
    from ..bitplane import TILE_ROWS, tile_bits

    rb = np.full(rows, row_bits, dtype=np.uint8) if np.ndim(row_bits) == 0 else np.asarray(row_bits, np.uint8)
    gs = cols if group_size is None else min(int(group_size), cols)
    groups = -(-cols // gs)
    kbytes = -(-cols // 8)
    tb = int(tile_bits(rb).astype(np.int64).sum())
    sb = 2 if alpha_dtype == "float16" else 4
    return MatrixSize(name=name, kind=kind, rows=rows, cols=cols,
                      average_bits=float(rb.mean(dtype=np.float64)), plane_bytes=tb * kbytes * TILE_ROWS,
                      scale_bytes=sb * tb * groups * TILE_ROWS, offset_bytes=sb * rows * groups if offset else 0,
                      row_bits_bytes=rows)


def size_report(plan: QuantPlan, cfg_or_model, frequencies=None) -> SizeReport:
    """Storage of ``plan`` applied to a model (or to a model config, without allocating it).

    Quantized matrices are counted in the project's ``.bcq`` layout (:func:`packed_matrix_size`):
    sign planes incl. tile padding, scales (``plan.alpha_dtype``) per row/plane/group, offsets,
    one byte of row bits per row.  Everything else (biases, LayerNorms) counts 32 bits per
    parameter; the sinusoidal positional tables are computed, not stored.  With frequency
    clusters and ``frequencies`` the embedding's real per-row bits are used (vocabulary order,
    so tiles mixing clusters pay for their largest row); without them the rows are assumed
    ordered by frequency (the smallest padding Algorithm 1 allows).
    """
    mats, other, cfg = _layout(cfg_or_model)
    plan.validate_for(cfg)
    notes = []
    sizes = []
    pad = getattr(cfg, "pad_id", None)
    for m in mats:
        if m.kind == "embedding" and isinstance(plan.embedding, EmbeddingClusters):
            if frequencies is not None:
                rb = plan.embedding_row_bits(m.rows, frequencies, () if pad is None else (pad,))
                note = "embedding rows in vocabulary order with Algorithm 1 bits from the given frequencies"
            else:
                rb = _emb.cluster_row_bits(m.rows, plan.embedding.ratio, plan.embedding.bits)
                note = ("embedding rows assumed sorted by frequency (no frequencies given): "
                        "the least tile padding Algorithm 1 allows")
            if note not in notes:
                notes.append(note)
        else:
            rb = plan.layer_bits(m.kind, m.layer)
        sizes.append(packed_matrix_size(m.name, m.kind, m.rows, m.cols, rb, plan.group_size, plan.offset,
                                        plan.alpha_dtype))
    notes.append("tied embedding / output projection counted once; positional embeddings are sinusoidal "
                 "(not stored); .bcq file headers (128 bytes per matrix) not included")
    return SizeReport(sizes, int(other), plan.alpha_dtype, notes)
