"""ONNX export of translation models, with our bit-plane ops, and the onnxruntime backend.

    export_nmt(model_dir, out_dir, fp32=False)   packed model (or checkpoint, fp32) -> ONNX model directory
    OnnxTranslator(out_dir).translate_batch([...], beam_size=4)
    read_manifest(out_dir)                       validate an exported directory (hashes, op sets)

The op specifications and the directory format are in export/ (export/README.md, export/ops/*.md).
Needs the ``export`` extra (onnx, onnxruntime) and, to export, torch.
"""

from __future__ import annotations

from .errors import OnnxModelError
from .exporter import export_nmt
from .manifest import read_manifest
from .runtime import OnnxTranslator

__all__ = ["export_nmt", "OnnxTranslator", "read_manifest", "OnnxModelError"]
