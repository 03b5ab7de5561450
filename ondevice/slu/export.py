"""The speech-intent model as one ONNX graph, and its model directory (format ``ondevice-onnx-model``,
``model_kind: "slu-intent"``; export/README.md section 6).

Graph ``understand.onnx``: ``audio`` float32 [1, samples] (16 kHz mono, any level) ->
``action_logits`` [1, 6], ``object_logits`` [1, 14], ``location_logits`` [1, 4].  Inside: the
per-utterance standardization (ReduceMean/Sub/Div/Sqrt), the six strided convolutions as
Slice/Reshape/Concat + matrix product (:class:`~ondevice.slu.model.FrameConv`), LayerNorm/ReLU, the
k-means quantizer as a matrix product + ArgMax per group, one embedding lookup per group (summed),
the BERT's two strided convolutions (the same FrameConv pattern), [CLS] + positions, the BERT (the
translation export's attention/FFN blocks) and the three slot heads on [CLS].  Quantized matrices are
``ondevice.BitPlaneMatMul`` / ``ondevice.BitPlaneGather`` with their function bodies, so stock
onnxruntime runs the file; the native runtime runs it with its LUT kernels.

One utterance per run (batch 1): utterances differ in length and padding would change the
convolutions' output at the edges; the host code loops.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..bitplane import PackedPlanes
from ..errors import ConfigError
from ..staged_dir import StagedWriter, replacing_dir
from ..understander import check_ensemble_rates
from .intents import INTENTS
from .model import SAMPLE_RATE, SLOTS, SLUConfig, SpeechIntentModel, bert_config, bert_frames, num_frames

GRAPH_FILE = "understand.onnx"
MODEL_KIND = "slu-intent"
MAX_SECONDS = 30.0
_I64_MAX = np.iinfo(np.int64).max


def _graph(model: SpeechIntentModel, packed: Mapping[str, PackedPlanes], used_ops: set[str], store):
    from onnx import TensorProto

    from ..onnx_export.graph import GraphBuilder
    from ..onnx_export.nmt_graphs import Weights, _Builder
    from ..onnx_export.ops import DOMAIN, GATHER

    cfg = model.cfg
    canonical = {n: n for n, _ in model.named_parameters()}
    dense = {n: p.detach().float().numpy() for n, p in model.named_parameters() if n not in packed}
    w = Weights(canonical, dense, dict(packed))
    g = GraphBuilder("understand", store)
    b = _Builder(g, bert_config(cfg), w, used_ops)
    i64 = lambda v: g.const(np.asarray(v, dtype=np.int64))  # noqa: E731
    f32 = TensorProto.FLOAT

    audio = g.input("audio", f32, [1, "samples"])
    # standardize (model.standardize): zero mean, unit variance over the utterance
    mean = g.op("ReduceMean", audio, i64([1]), keepdims=1)
    d = g.op("Sub", audio, mean)
    var = g.op("ReduceMean", g.op("Mul", d, d), i64([1]), keepdims=1)
    x = g.op("Div", d, g.op("Sqrt", g.op("Add", var, g.const(1e-5, np.float32))))
    x = g.op("Unsqueeze", x, i64([-1]))  # [1, T, 1]

    def frame_conv(x: str, prefix: str, stride: int, c_in: int) -> str:
        """FrameConv: cut T to a multiple of the stride, frames of stride*C, concat neighbours, linear."""
        length = g.op("Shape", x, start=1, end=2)
        cut = g.op("Mul", g.op("Div", length, i64([stride])), i64([stride]))
        x = g.op("Slice", x, i64([0]), cut, i64([1]))
        x = g.op("Reshape", x, i64([1, -1, stride * c_in]))
        x = g.op("Concat", g.op("Slice", x, i64([0]), i64([-1]), i64([1])),
                 g.op("Slice", x, i64([1]), i64([_I64_MAX]), i64([1])), axis=-1)
        return b.linear(x, f"{prefix}.proj")

    def embed(ids: str, prefix: str) -> str:
        name = f"{prefix}.weight"
        if name in packed:
            ins, attrs = b._packed_inputs(name, packed[name])
            used_ops.add(GATHER)
            return g.op(GATHER, ids, *ins, domain=DOMAIN, hint=prefix, **attrs)
        return g.op("Gather", b._dense(name), ids, axis=0)

    c_in = 1
    for i, s in enumerate(cfg.conv_strides):
        x = g.op("Relu", b.layer_norm(frame_conv(x, f"encoder.convs.{i}", s, c_in), f"encoder.norms.{i}"))
        c_in = cfg.conv_channels
    # quantizer: nearest codeword per group = argmax of a linear map; each group's codeword index
    # is embedded by its own table and the groups are summed (SpeechBert.embed)
    logits = g.op("Reshape", b.linear(x, "vq_logits"), i64([1, -1, cfg.vq_groups, cfg.vq_codewords]))
    idx = g.op("ArgMax", logits, axis=-1, keepdims=0)  # [1, N, G]
    h = None
    for k in range(cfg.vq_groups):
        part = g.op("Squeeze", g.op("Slice", idx, i64([k]), i64([k + 1]), i64([2])), i64([2]))
        e = embed(part, f"bert.embed_groups.{k}")
        h = e if h is None else g.op("Add", h, e)
    for i in range(cfg.bert_convs):
        h = g.op("Relu", b.layer_norm(frame_conv(h, f"bert.convs.{i}", 2, cfg.d_model), f"bert.conv_norms.{i}"))
    cls = g.op("Reshape", b._dense("bert.cls"), i64([1, 1, cfg.d_model]))
    h = g.op("Concat", cls, h, axis=1)  # [1, 1+M, d]
    # positions 0..M: the first 1+M entries of 0..bert_positions-1
    positions = g.op("Slice", i64(np.arange(cfg.bert_positions)), i64([0]), g.op("Shape", h, start=1, end=2),
                     i64([0]))
    h = g.op("Add", h, embed(positions, "bert.embed_positions"))
    for i in range(cfg.layers):
        p = f"bert.layers.{i}"
        h = b.sublayer(h, p, "self_attn_layer_norm", "self_attn_out_layer_norm",
                       lambda y, p=p: b.attend(y, *b.kv(y, f"{p}.self_attn"), f"{p}.self_attn"))
        h = b.sublayer(h, p, "final_layer_norm", "ffn_out_layer_norm", lambda y, p=p: b.ffn(y, p))
    h = b.layer_norm(h, "bert.layer_norm")
    cls = g.op("Gather", h, i64(0), axis=1)  # [1, d]
    for slot, vocab in SLOTS.items():
        g.output(b.linear(cls, f"bert.heads.{slot}"), f"{slot}_logits", f32, [1, len(vocab)])
    return g


def export_slu(model: SpeechIntentModel, out_dir: str | os.PathLike, packed: Mapping[str, PackedPlanes] | None = None,
               extra: Mapping[str, Any] | None = None,
               ensemble_rates: Sequence[int] | None = None) -> dict[str, Any]:
    """Write the model directory (graph, weights.bin, manifest.json with hashes); returns the manifest.

    ``packed``: bit-plane matrices by parameter name (``bert.layers.0.fc1.weight`` ...); every other
    parameter is stored dense (float32).  ``extra`` is merged into the manifest (e.g. the card's
    figures).  Written beside ``out_dir`` and renamed into place."""
    import onnx

    from ..onnx_export import manifest as mf
    from ..onnx_export import ops
    from ..onnx_export.graph import WeightStore

    packed = dict(packed or {})
    names = {n for n, _ in model.named_parameters()}
    unknown = sorted(set(packed) - names)
    if unknown:
        raise ConfigError(f"packed matrices that are not parameters of the model: {', '.join(unknown)}")
    store = WeightStore(mf.WEIGHTS_FILE)
    used_ops: set[str] = set()
    g = _graph(model, packed, used_ops, store)
    stored = set(g.store_names())
    unused = sorted(n for n in packed if f"{n}.planes" not in stored)
    if unused:
        raise ConfigError(f"packed matrices the graph has no use for: {', '.join(unused)}")
    functions = ops.functions(used_ops)
    cfg: SLUConfig = model.cfg
    out = Path(os.path.abspath(out_dir))
    with replacing_dir(out, mf.is_onnx_export_dir, "an exported ONNX model") as tmp:
        w = StagedWriter(tmp)
        proto = g.model(ops.opset_imports(), ops.IR_VERSION, [f for f in functions if f.name in g.op_types()],
                        doc="ondevice speech intent model (vq-wav2vec-style tokenizer + BERT), export/README.md")
        w.put(GRAPH_FILE, proto.SerializeToString(deterministic=True))
        w.put(mf.WEIGHTS_FILE, store.to_bytes())
        onnx.checker.check_model(str(tmp / GRAPH_FILE), full_check=True)
        manifest = {
            "format": mf.FORMAT, "format_version": "%d.%d" % mf.FORMAT_VERSION, "model_kind": MODEL_KIND,
            "quantized": bool(packed), "model_config": cfg.to_dict(),
            "sample_rate": SAMPLE_RATE, "hop": cfg.hop, "max_seconds": MAX_SECONDS,
            "min_samples": min_samples(cfg),
            "slots": {slot: list(v) for slot, v in SLOTS.items()},
            # the valid slot combinations: hosts decode the three heads jointly over these
            "intents": [[it.action, it.object, it.location] for it in INTENTS],
            "opsets": dict(mf.OPSETS), "ir_version": ops.IR_VERSION, "ops": sorted(g.op_types()),
            "graphs": {"understand": {"file": GRAPH_FILE, "inputs": ["audio"],
                                      "outputs": [f"{s}_logits" for s in SLOTS]}},
            "weights": mf.WEIGHTS_FILE, **dict(extra or {}),
            **({"ensemble_rates": check_ensemble_rates(ensemble_rates, "ensemble_rates")} if ensemble_rates else {}),
            "files": sorted(w.files, key=lambda f: f["path"]),
        }
        w.put(mf.MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"), record=False)
    return manifest


def min_samples(cfg: SLUConfig) -> int:
    """The fewest samples that give the BERT at least one position after its convolutions."""
    def enough(n: int) -> bool:
        return bert_frames(num_frames(n, cfg), cfg) >= 1

    n = cfg.hop
    while not enough(n):
        n += cfg.hop
    while n > 1 and enough(n - 1):
        n -= 1
    return n
