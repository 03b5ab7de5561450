"""ondevice: on-device NMT and spoken-language understanding with extremely low-bit Transformers.

Public API (kept stable, see ARCHITECTURE in the docs):
    quantize_bcq(w, bits, group_size=None, method=...) -> BCQMatrix
    BCQMatrix.load(path), .matmul(x), .dequantize(), .bits, .nbytes, .save(path)
    Translator(model=None, threads=0, backend="native", beam_size=4)
        .translate(str), .translate_batch(list[str], beam_size=None), .translate_file(src, dst),
        .translate_stream(binary_file, origin) -> iterator of translations
    Understander(model=None, threads=0, backend="native")
        .understand(path_or_array, sample_rate=None) -> Intent(action, object, location, scores)

Names that need the compiled core (``ondevice._core``) are imported on first
use, so pure-Python parts (data preparation, training) import without it.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

from .errors import AudioError, BCQFormatError, ConfigError, DataError, KernelArgumentError, OndeviceError

_LAZY = {
    "BCQMatrix": ("bcq_matrix", "BCQMatrix"),
    "quantize_bcq": ("bcq_matrix", "quantize_bcq"),
    "available_kernels": ("bcq_matrix", "available_kernels"),
    "set_num_threads": ("bcq_matrix", "set_num_threads"),
    "get_num_threads": ("bcq_matrix", "get_num_threads"),
    "QuantizationError": ("bcq", "QuantizationError"),
    "Translator": ("translator", "Translator"),
    "Understander": ("understander", "Understander"),
    "Intent": ("understander", "Intent"),
}


def __getattr__(name: str) -> Any:
    if name == "load_bcq":
        return importlib.import_module(".bcq_matrix", __name__).BCQMatrix.load
    if name in _LAZY:
        module, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'ondevice' has no attribute {name!r}")


__all__ = [
    "__version__", "BCQMatrix", "quantize_bcq", "load_bcq", "available_kernels", "set_num_threads",
    "get_num_threads", "OndeviceError", "BCQFormatError", "KernelArgumentError", "QuantizationError",
    "DataError", "ConfigError", "AudioError", "Translator", "Understander", "Intent",
]
