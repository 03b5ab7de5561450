"""The error an exported ONNX model directory raises when it cannot be trusted."""

from __future__ import annotations

from ..errors import OndeviceError

__all__ = ["OnnxModelError"]


class OnnxModelError(OndeviceError, ValueError):
    """An exported ONNX model directory violates export/README.md: a manifest that does not match its
    files (size, sha256, missing file), an unknown format version, or op sets this reader does not know
    (e.g. ``ondevice`` v2). A ValueError, so generic handlers keep working."""
