"""``ondevice export nmt``: a translation model as an ONNX model directory (export/README.md).

    <out>/manifest.json       kind, languages, vocabulary, special ids, op sets, graph I/O, file hashes
    <out>/encoder.onnx        source tokens -> encoder output, padding mask, cross-attention keys/values
    <out>/decoder_step.onnx   one decoding step with explicit self-attention KV cache in and out
    <out>/weights.bin         every parameter, once (ONNX external data of both graphs, mappable)
    <out>/spm.model           the SentencePiece tokenizer, byte for byte

The quantized export reads a packed model directory (docs/packed-model.md) and passes each ``.bcq``
file's sections unchanged to our bit-plane ops; the fp32 export writes every matrix dense with plain
MatMul (from a training checkpoint, or from a packed directory's dequantized weights) for comparisons.
The same input gives byte-identical files, and the directory appears complete or not at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..staged_dir import StagedWriter, replacing_dir
from . import manifest as mf
from . import ops
from .graph import WeightStore
from .nmt_graphs import Weights, build_decoder_step, build_encoder, cache_names

__all__ = ["export_nmt"]


def _languages(model_dir: Path, src: str | None, tgt: str | None, recorded: dict[str, Any]) -> tuple[str, str]:
    """Language codes: as given, else as recorded by the source (packed manifest or training config)."""
    out = []
    for key, given in (("src", src), ("tgt", tgt)):
        have = recorded.get(key)
        if given is not None and have is not None and given != have:
            raise ConfigError(f"{key}={given!r} but {model_dir} was made for {key}={have!r}")
        value = given if given is not None else have
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{model_dir} does not record the {key} language: give {key}=")
        out.append(value)
    return out[0], out[1]


def _load(model_dir: Path, fp32: bool, checkpoint: str | None):
    """(model, tokenizer path, packed matrices by canonical name, what the source records, source description)."""
    from ..bitplane import read_file
    from ..nmt.evaluate import PACKED, load_model
    from ..quant.packed_model import is_packed_dir, load_packed

    if checkpoint in (None, PACKED) and is_packed_dir(model_dir):
        model, tok, pm = load_packed(model_dir)  # verifies every file, shape and hash
        packed = {} if fp32 else {e["name"]: read_file(model_dir / e["file"])[0] for e in pm["matrices"]}
        source = {"kind": "packed", "average_bits": pm["average_bits"], "quant_plan": pm["quant_plan"]}
        return model, tok.path, packed, pm, source
    if not fp32:
        raise ConfigError(f"{model_dir} is not a packed model directory, and only a packed model exports with "
                          "bit-plane ops: pack it first (ondevice quantize pack) or export it with fp32=True "
                          "(--fp32)")
    model, tok = load_model(model_dir, checkpoint)
    try:
        recorded = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = {}
    source = {"kind": "checkpoint", "checkpoint": checkpoint or "checkpoint_best.pt"}
    return model, tok.path, {}, recorded if isinstance(recorded, dict) else {}, source


def _weights(model, packed: dict[str, Any]) -> Weights:
    """Canonical names as the packed format uses them: a tensor shared by several modules (tied embeddings)
    is named by its first name in module order."""
    canonical: dict[str, str] = {}
    first: dict[int, str] = {}
    dense: dict[str, np.ndarray] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        canonical[name] = first.setdefault(id(p), name)
        if canonical[name] == name and name not in packed:
            dense[name] = p.detach().float().numpy()
    return Weights(canonical, dense, packed)


def export_nmt(model_dir: str | os.PathLike, out_dir: str | os.PathLike, *, fp32: bool = False,
               checkpoint: str | None = None, src: str | None = None, tgt: str | None = None) -> dict[str, Any]:
    """Exports the translation model in ``model_dir`` to the ONNX model directory ``out_dir``; returns the manifest.

    Quantized (default): ``model_dir`` must be a packed model directory; its bit-plane matrices become
    ``ondevice`` ops. ``fp32=True``: every matrix dense (a training directory's ``checkpoint``, default
    checkpoint_best.pt, or a packed directory's dequantized weights). ``src``/``tgt`` default to what the
    source records. Raises ConfigError for an unsuitable source, BCQFormatError for an inconsistent packed
    directory, DataError for a missing one."""
    import onnx

    root = Path(model_dir)
    if not root.is_dir():
        raise DataError(f"model directory {root} does not exist")
    model, tok_path, packed, recorded, source = _load(root, fp32, checkpoint)
    src, tgt = _languages(root, src, tgt, recorded)
    cfg = model.config
    weights = _weights(model, packed)
    store = WeightStore(mf.WEIGHTS_FILE)
    used_ops: set[str] = set()
    graphs = {"encoder": (mf.ENCODER_FILE, build_encoder(cfg, weights, store, used_ops)),
              "decoder_step": (mf.DECODER_FILE, build_decoder_step(cfg, weights, store, used_ops))}
    stored = {n for _, g in graphs.values() for n in g.store_names()}
    unused = sorted(n for n in packed if f"{n}.planes" not in stored)
    if unused:
        raise ConfigError(f"packed matrices the translation graphs have no use for (is {root} a packed "
                          f"nmt-transformer?): {', '.join(unused)}")
    functions = ops.functions(used_ops)
    out = Path(os.path.abspath(out_dir))
    with replacing_dir(out, mf.is_onnx_export_dir, "an exported ONNX model") as tmp:
        w = StagedWriter(tmp)
        io: dict[str, Any] = {}
        for kind, (file, g) in graphs.items():
            proto = g.model(ops.opset_imports(), ops.IR_VERSION, [f for f in functions if f.name in g.op_types()],
                            doc=f"ondevice {cfg.norm}-LN Transformer {src}->{tgt}: {kind} (export/README.md)")
            w.put(file, proto.SerializeToString(deterministic=True))
            io[kind] = {"file": file, "inputs": [v.name for v in g.inputs if v.name not in stored],
                        "outputs": [v.name for v in g.outputs]}
        w.put(mf.WEIGHTS_FILE, store.to_bytes())
        w.put(mf.TOKENIZER_FILE, Path(tok_path).read_bytes())
        for kind in graphs:  # the full checker, with the weights file in place
            onnx.checker.check_model(str(tmp / io[kind]["file"]), full_check=True)
        manifest = {
            "format": mf.FORMAT, "format_version": "%d.%d" % mf.FORMAT_VERSION, "model_kind": "nmt-transformer",
            "quantized": bool(packed), "src": src, "tgt": tgt, "vocab_size": cfg.vocab_size,
            "special_ids": {"bos": cfg.bos_id, "pad": cfg.pad_id, "eos": cfg.eos_id, "unk": cfg.unk_id},
            "model_config": dataclasses.asdict(cfg), "source": source,
            "opsets": dict(mf.OPSETS), "ir_version": ops.IR_VERSION, "ops": sorted(used_ops),
            "graphs": io, "kv_cache": {"layers": cfg.decoder_layers, "heads": cfg.heads,
                                       "head_dim": cfg.d_model // cfg.heads, **cache_names(cfg.decoder_layers)},
            "tokenizer": mf.TOKENIZER_FILE, "weights": mf.WEIGHTS_FILE,
            "files": sorted(w.files, key=lambda f: f["path"]),
        }
        w.put(mf.MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"), record=False)
    return manifest
