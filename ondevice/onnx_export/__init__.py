"""ONNX export of translation models, with our bit-plane ops, and the onnxruntime backend.

    export_nmt(model_dir, out_dir, fp32=False)   packed model (or checkpoint, fp32) -> ONNX model directory
    OnnxTranslator(out_dir).translate_batch([...], beam_size=4)
    read_manifest(out_dir)                       validate an exported directory (hashes, op sets)

The op specifications and the directory format are in export/ (export/README.md, export/ops/*.md).
Needs the ``export`` extra (onnx, onnxruntime) and, to export, torch. The names are imported on first
use, so the native backend (which only needs OnnxModelError) works without onnx installed.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import OnnxModelError

__all__ = ["export_nmt", "OnnxTranslator", "read_manifest", "OnnxModelError"]

_LAZY = {"export_nmt": ".exporter", "read_manifest": ".manifest", "OnnxTranslator": ".runtime"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
