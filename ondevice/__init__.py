"""ondevice: on-device NMT and spoken-language understanding with extremely low-bit Transformers.

Public API (kept stable, see ARCHITECTURE in the docs):
    quantize_bcq(w, bits, group_size=None, method=...) -> BCQMatrix
    BCQMatrix.load(path), .matmul(x), .dequantize(), .bits, .nbytes, .save(path)
"""

from __future__ import annotations

__version__ = "0.1.0"

from .bcq import QuantizationError
from .bcq_matrix import (BCQMatrix, available_kernels, get_num_threads, quantize_bcq,
                         set_num_threads)
from .errors import BCQFormatError, KernelArgumentError, OndeviceError

load_bcq = BCQMatrix.load

__all__ = [
    "__version__", "BCQMatrix", "quantize_bcq", "load_bcq", "available_kernels", "set_num_threads",
    "get_num_threads", "OndeviceError", "BCQFormatError", "KernelArgumentError", "QuantizationError",
]
