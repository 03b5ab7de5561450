"""The public quantized-matrix object: ``quantize_bcq`` and :class:`BCQMatrix`.

It ties the three pieces together: the BCQ math (:mod:`ondevice.bcq`), the
packed format (:mod:`ondevice.bitplane`) and the C++ LUT kernels
(``ondevice._core``), so that ``quantize_bcq(w, bits=2).matmul(x)`` runs the
same bytes a model file holds.
"""

from __future__ import annotations

import operator
import os
from typing import Sequence

import numpy as np

from . import _core, bcq, bitplane
from .errors import BCQFormatError, KernelArgumentError

def _usable_cores() -> int:
    """Cores this process may run on (affinity / cgroup-pinned sets), not all cores of the host."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _thread_count(n: object) -> int:
    try:
        value = operator.index(n)  # int, numpy integers; not floats or bools' lookalikes
    except TypeError:
        raise KernelArgumentError(f"threads must be a positive integer, got {n!r}") from None
    if isinstance(n, bool) or value < 1:
        raise KernelArgumentError(f"threads must be a positive integer, got {n!r}")
    return min(value, 1024)


_default_threads = _usable_cores()


def set_num_threads(n: int) -> None:
    """Sets the default thread count of :meth:`BCQMatrix.matmul` (default: all cores)."""
    global _default_threads
    _default_threads = _thread_count(n)


def get_num_threads() -> int:
    return _default_threads


def available_kernels() -> list[str]:
    """Kernel variants usable on this CPU, slowest (reference) to fastest."""
    return list(_core.available_variants())


class BCQMatrix:
    """A binary-coding-quantized matrix W ~= offset + sum_i alpha_i * B_i (B_i in {-1,+1}).

    Shape is (rows, cols) = (out_features, in_features), as ``torch.nn.Linear.weight``:
    :meth:`matmul` computes ``x @ W.T``.
    """

    def __init__(self, packed: bitplane.PackedPlanes, alpha_dtype: str = "float32"):
        if alpha_dtype not in ("float32", "float16"):
            raise KernelArgumentError(f"alpha_dtype must be 'float32' or 'float16', got {alpha_dtype!r}")
        self._p = packed
        self.alpha_dtype = alpha_dtype  # how save() stores the scales by default (and how load() found them)
        try:
            self._core = _core.Matrix(packed.rows, packed.cols, packed.group_size, packed.row_bits,
                                      packed.planes, packed.alpha, packed.offset)
        except _core.ArgumentError as e:
            raise BCQFormatError(f"inconsistent bit-plane arrays: {e}") from None

    # -- construction -----------------------------------------------------
    @classmethod
    def from_result(cls, r: bcq.BCQResult) -> "BCQMatrix":
        return cls(bitplane.pack(r.signs, r.alpha, r.row_bits, r.group_size, r.offset))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "BCQMatrix":
        """Loads a ``.bcq`` file (validated by the C++ reader; BCQFormatError if bad)."""
        packed, alpha_dtype = bitplane.read_file(path)
        return cls(packed, alpha_dtype)

    def save(self, path: str | os.PathLike, alpha_dtype: str | None = None) -> None:
        """Writes a ``.bcq`` file atomically; ``alpha_dtype='float16'`` halves the scale storage.

        The default keeps this matrix's ``alpha_dtype`` (float32 unless it was loaded from float16).
        """
        bitplane.write_file(path, self._p, alpha_dtype or self.alpha_dtype)

    # -- properties -------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return (self._p.rows, self._p.cols)

    @property
    def group_size(self) -> int:
        return self._p.group_size

    @property
    def row_bits(self) -> np.ndarray:
        return self._p.row_bits.copy()

    @property
    def bits(self) -> float:
        """Average number of bit-planes per weight (== q for uniform q); excludes scale overhead."""
        return float(self._p.row_bits.mean())

    @property
    def nbytes(self) -> int:
        """Bytes of the packed data as stored in a file: planes (with tile padding), scales and
        offsets in ``alpha_dtype``, row bits; the 128-byte header and alignment gaps excluded."""
        p = self._p
        scale_bytes = 2 if self.alpha_dtype == "float16" else 4
        n_scales = p.alpha.size + (0 if p.offset is None else p.offset.size)
        return p.planes.nbytes + p.row_bits.nbytes + scale_bytes * n_scales

    @property
    def bits_per_weight(self) -> float:
        """Honest storage cost: 8 * nbytes / (rows * cols), scales and offsets included."""
        return 8.0 * self.nbytes / (self._p.rows * self._p.cols)

    @property
    def packed(self) -> bitplane.PackedPlanes:
        return self._p

    def __repr__(self) -> str:
        return (f"BCQMatrix(shape={self.shape}, bits={self.bits:g}, group_size={self.group_size}, "
                f"offset={self._p.offset is not None}, bits_per_weight={self.bits_per_weight:.3f})")

    # -- math -------------------------------------------------------------
    def dequantize(self) -> np.ndarray:
        """The dense float32 matrix this object represents."""
        return bitplane.dequantize(self._p)

    def matmul(self, x: np.ndarray, threads: int | None = None, kernel: str | None = None,
               path: str = "lut") -> np.ndarray:
        """``x @ W.T`` for x of shape (cols,) or (batch, cols), with the C++ kernels.

        The GIL is released while the kernel runs. ``kernel`` picks a variant
        from :func:`available_kernels` (default: the fastest, or $ONDEVICE_KERNEL).
        ``path``: ``"lut"`` (lookup tables, one int8 pass: the fastest for a few
        rows), ``"lut16"`` (two passes, ~250x smaller table error) or ``"dense"``
        (each 32-row tile expanded to float32 and multiplied with fused
        multiply-adds: the faster path from some tens of rows on, exact up to
        float rounding; benchmarks/dense_crossover.md). The native runtime picks
        between lut16 and dense by the number of rows (docs/runtime.md).
        """
        a = np.asarray(x)
        cols = self._p.cols
        if a.ndim == 1 and a.shape[0] == cols:
            x2 = a.reshape(1, cols)
        elif a.ndim == 2 and a.shape[1] == cols:
            x2 = a
        else:
            raise KernelArgumentError(f"x must have shape ({cols},) or (batch, {cols}), got {a.shape}")
        if x2.dtype != np.float32 or not x2.flags.c_contiguous:
            if a.dtype.kind not in "fiu":
                raise KernelArgumentError(f"x must be a real array, got dtype {a.dtype}")
            x2 = np.ascontiguousarray(x2, dtype=np.float32)
        threads = _default_threads if threads is None else _thread_count(threads)
        try:
            y = self._core.gemm(x2, kernel or "", threads, path)
        except _core.ArgumentError as e:
            raise KernelArgumentError(str(e)) from None
        return y.reshape(self._p.rows) if a.ndim == 1 else y

    def error_bound(self, x: np.ndarray) -> np.ndarray:
        """Per-row bound on |matmul(x) - dequantize() @ x| from the kernels' int8 tables (1-D x)."""
        a = np.asarray(x)
        if a.ndim != 1 or a.shape[0] != self._p.cols or a.dtype.kind not in "fiu":
            raise KernelArgumentError(f"x must be a real vector of {self._p.cols} values, got shape {a.shape}")
        try:
            return np.asarray(self._core.error_bound(np.ascontiguousarray(a, dtype=np.float32)))
        except _core.ArgumentError as e:
            raise KernelArgumentError(str(e)) from None


def quantize_bcq(w: np.ndarray, bits: int | Sequence[int] | np.ndarray = 2, group_size: int | None = None,
                 method: str = "alternating", offset: bool = False, iters: int = 15) -> BCQMatrix:
    """Quantizes a float matrix [out, in] row-wise to ``bits`` bit-planes (1..4, or one value per row).

    ``group_size`` (None = whole row) must be a multiple of 8 when smaller than
    the row, so groups align with the packed bytes. ``method`` is "greedy",
    "alternating" or "uniform" (the latter needs ``offset=True``).
    """
    arr = np.asarray(w)
    if arr.ndim == 2 and group_size is not None and group_size < arr.shape[1] and group_size % 8 != 0:
        raise bcq.QuantizationError(
            f"group_size must be a multiple of 8 (or None / >= {arr.shape[1]} for whole rows), got {group_size}")
    return BCQMatrix.from_result(bcq.quantize(arr, bits, group_size=group_size, method=method,
                                              offset=offset, iters=iters))
