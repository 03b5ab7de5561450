"""Packing BCQ bit-planes into the ``.bcq`` format, and writing/reading files.

The layout is specified once, in docs/bitplane-format.md; this module is the
Python side of it (the C++ reader in cpp_runtime/ is the other). The layout is
*kernel-native*: rows are grouped in tiles of 32 and, inside a tile, the byte of
plane i for input byte s of the 32 rows is contiguous, which is exactly what
the LUT kernels load. Writing the kernel's layout to disk lets runtimes map a
file and run it without repacking.
"""

from __future__ import annotations

import errno
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_write_bytes
from .errors import BCQFormatError

TILE_ROWS = 32
MAX_BITS = 4
HEADER_BYTES = 128
SECTION_ALIGN = 64
MAGIC = b"ODBQ"
VERSION = (1, 0)
FLAG_HAS_OFFSET = 1
FLAG_ALPHA_F16 = 2


@dataclass(frozen=True)
class PackedPlanes:
    """The four arrays of a quantized matrix, in the spec's flat layout.

    Construction normalises dtypes and contiguity, checks every array size
    against the layout (so a file written from it is always well-formed), and
    marks the arrays read-only: kernels and files share them, so silent
    in-place edits would bypass validation.
    """

    rows: int
    cols: int
    group_size: int
    row_bits: np.ndarray  # uint8 [rows]
    planes: np.ndarray  # uint8 [sum over tiles of kbytes * tile_bits * 32]
    alpha: np.ndarray  # float32 [sum over tiles of groups * tile_bits * 32]
    offset: np.ndarray | None  # float32 [rows * groups] or None

    def __post_init__(self) -> None:
        rows, cols, gs = (int(v) for v in (self.rows, self.cols, self.group_size))
        if rows < 1 or cols < 1:
            raise BCQFormatError(f"matrix must have at least one row and column, got {rows}x{cols}")
        if not (gs == cols or (0 < gs < cols and gs % 8 == 0)):
            raise BCQFormatError(f"group_size must equal cols ({cols}) or be a multiple of 8 below it, got {gs}")
        arrays = {"row_bits": (self.row_bits, np.uint8), "planes": (self.planes, np.uint8),
                  "alpha": (self.alpha, np.float32), "offset": (self.offset, np.float32)}
        for name, (arr, dtype) in arrays.items():
            if arr is None:
                continue
            a = np.ascontiguousarray(np.asarray(arr).reshape(-1), dtype=dtype)
            if a is arr:
                a = a.view()
            a.flags.writeable = False
            object.__setattr__(self, name, a)
        for name, v in (("rows", rows), ("cols", cols), ("group_size", gs)):
            object.__setattr__(self, name, v)
        if self.row_bits.size != rows or self.row_bits.min() < 1 or self.row_bits.max() > MAX_BITS:
            raise BCQFormatError(f"row_bits must hold {rows} values in 1..{MAX_BITS}")
        tb = tile_bits(self.row_bits).astype(np.int64)
        kbytes, groups = -(-cols // 8), num_groups(cols, gs)
        expect = {"planes": int(tb.sum()) * kbytes * TILE_ROWS, "alpha": int(tb.sum()) * groups * TILE_ROWS,
                  "offset": rows * groups}
        for name, n in expect.items():
            arr = getattr(self, name)
            if arr is not None and arr.size != n:
                raise BCQFormatError(f"{name} has {arr.size} elements, the layout needs {n}")


def num_groups(cols: int, group_size: int) -> int:
    return -(-cols // group_size)


def tile_bits(row_bits: np.ndarray) -> np.ndarray:
    """Bits of each 32-row tile: the maximum over its rows (padding rows count as 0)."""
    tiles = -(-len(row_bits) // TILE_ROWS)
    padded = np.zeros(tiles * TILE_ROWS, dtype=np.uint8)
    padded[: len(row_bits)] = row_bits
    return padded.reshape(tiles, TILE_ROWS).max(axis=1)


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    if a.shape[0] == rows:
        return a
    out = np.zeros((rows,) + a.shape[1:], dtype=a.dtype)
    out[: a.shape[0]] = a
    return out


def pack(signs: np.ndarray, alpha: np.ndarray, row_bits: np.ndarray, group_size: int,
         offset: np.ndarray | None = None) -> PackedPlanes:
    """Packs bool signs [N, qmax, K] (True = +1) and scales [N, qmax, G] into the spec layout.

    Planes at or beyond a row's bit count are forced to the spec's required
    zero bits and zero scales, so any BCQ result packs into a valid file.
    """
    n, qmax, k = signs.shape
    row_bits = np.asarray(row_bits, dtype=np.uint8)
    if int(group_size) < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    group_size = min(int(group_size), k)  # a group spanning the row is stored as cols
    groups = num_groups(k, group_size)
    if alpha.shape != (n, qmax, groups):
        raise ValueError(f"alpha must have shape {(n, qmax, groups)}, got {alpha.shape}")
    if row_bits.shape != (n,) or row_bits.min() < 1 or row_bits.max() > min(qmax, MAX_BITS):
        raise ValueError("row_bits must hold one value in 1..qmax (<= 4) per row")
    if group_size != k and group_size % 8 != 0:
        raise ValueError(f"group_size must be a multiple of 8 or equal to cols ({k}), got {group_size}")
    used = np.arange(qmax)[None, :] < row_bits[:, None]  # [N, qmax]
    tb = tile_bits(row_bits)
    tiles, kbytes = len(tb), -(-k // 8)
    bits = _pad_rows(signs & used[:, :, None], tiles * TILE_ROWS)
    scales = _pad_rows(np.where(used[:, :, None], alpha, 0).astype(np.float32), tiles * TILE_ROWS)
    # [tiles, 32, qmax, kbytes], bit j of a byte = input 8s + j (LSB first)
    packed = np.packbits(bits, axis=2, bitorder="little").reshape(tiles, TILE_ROWS, qmax, kbytes)
    scales = scales.reshape(tiles, TILE_ROWS, qmax, groups)
    plane_parts, alpha_parts = [], []
    for q in np.unique(tb):
        sel = np.nonzero(tb == q)[0]
        plane_parts.append((sel, packed[sel, :, :q, :].transpose(0, 3, 2, 1).reshape(len(sel), -1)))
        alpha_parts.append((sel, scales[sel, :, :q, :].transpose(0, 3, 2, 1).reshape(len(sel), -1)))
    planes = _concat_by_tile(plane_parts, tiles, np.uint8)
    alphas = _concat_by_tile(alpha_parts, tiles, np.float32)
    off = None
    if offset is not None:
        off = np.ascontiguousarray(np.asarray(offset, dtype=np.float32).reshape(n * groups))
    return PackedPlanes(n, k, group_size, row_bits.copy(), planes, alphas, off)


def _concat_by_tile(parts: list[tuple[np.ndarray, np.ndarray]], tiles: int, dtype: type) -> np.ndarray:
    """Reassembles per-bit-width buckets of tiles into tile order."""
    rows: list[np.ndarray | None] = [None] * tiles
    for sel, data in parts:
        for i, t in enumerate(sel):
            rows[t] = data[i]
    return np.ascontiguousarray(np.concatenate(rows).astype(dtype, copy=False))


def unpack(p: PackedPlanes) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack`: returns (signs bool [N, qmax, K], alpha float32 [N, qmax, G])."""
    tb = tile_bits(p.row_bits)
    qmax = int(tb.max())
    kbytes, groups = -(-p.cols // 8), num_groups(p.cols, p.group_size)
    tiles = len(tb)
    bytes_ = np.zeros((tiles, TILE_ROWS, qmax, kbytes), dtype=np.uint8)
    scales = np.zeros((tiles, TILE_ROWS, qmax, groups), dtype=np.float32)
    po = ao = 0
    for t, q in enumerate(tb):
        q = int(q)
        n_p, n_a = kbytes * q * TILE_ROWS, groups * q * TILE_ROWS
        bytes_[t, :, :q, :] = p.planes[po:po + n_p].reshape(kbytes, q, TILE_ROWS).transpose(2, 1, 0)
        scales[t, :, :q, :] = p.alpha[ao:ao + n_a].reshape(groups, q, TILE_ROWS).transpose(2, 1, 0)
        po, ao = po + n_p, ao + n_a
    signs = np.unpackbits(bytes_, axis=3, count=p.cols, bitorder="little").astype(bool)
    signs = signs.reshape(tiles * TILE_ROWS, qmax, p.cols)[: p.rows]
    return signs, scales.reshape(tiles * TILE_ROWS, qmax, groups)[: p.rows]


def dequantize(p: PackedPlanes) -> np.ndarray:
    """Dense float32 [N, K] matrix the packed planes represent (the spec's element formula)."""
    signs, alpha = unpack(p)
    groups = num_groups(p.cols, p.group_size)
    col_group = np.arange(p.cols) // p.group_size
    w = np.einsum("nqk,nqk->nk", np.where(signs, 1.0, -1.0), alpha[:, :, col_group].astype(np.float64))
    if p.offset is not None:
        w += p.offset.reshape(p.rows, groups)[:, col_group]
    return w.astype(np.float32)


def _align(n: int) -> int:
    return -(-n // SECTION_ALIGN) * SECTION_ALIGN


def to_bytes(p: PackedPlanes, alpha_dtype: str = "float32") -> bytes:
    """Serializes to the ``.bcq`` file image (docs/bitplane-format.md, version 1.0)."""
    if alpha_dtype not in ("float32", "float16"):
        raise ValueError(f"alpha_dtype must be 'float32' or 'float16', got {alpha_dtype!r}")
    dt = np.dtype("<f4") if alpha_dtype == "float32" else np.dtype("<f2")
    with np.errstate(over="ignore"):  # overflow to inf is detected just below
        alpha = p.alpha.astype(dt)
        offset = None if p.offset is None else p.offset.astype(dt)
    if not np.isfinite(alpha).all() or (offset is not None and not np.isfinite(offset).all()):
        raise ValueError("scales or offsets are not finite" +
                         (" in float16; save with alpha_dtype='float32'" if alpha_dtype == "float16" else ""))
    off_bits = HEADER_BYTES
    off_planes = _align(off_bits + p.rows)
    off_alpha = _align(off_planes + p.planes.nbytes)
    off_offset = _align(off_alpha + alpha.nbytes)
    end = off_offset + offset.nbytes if offset is not None else off_alpha + alpha.nbytes
    buf = bytearray(end)
    buf[off_bits:off_bits + p.rows] = p.row_bits.tobytes()
    buf[off_planes:off_planes + p.planes.nbytes] = p.planes.tobytes()
    buf[off_alpha:off_alpha + alpha.nbytes] = alpha.tobytes()
    if offset is not None:
        buf[off_offset:off_offset + offset.nbytes] = offset.tobytes()
    flags = (FLAG_HAS_OFFSET if offset is not None else 0) | (FLAG_ALPHA_F16 if alpha_dtype == "float16" else 0)
    struct.pack_into(
        "<4sHHIIIIII QQ QQ QQ QQ Q I", buf, 0, MAGIC, VERSION[0], VERSION[1], HEADER_BYTES, flags,
        p.rows, p.cols, p.group_size, TILE_ROWS,
        off_bits, p.rows, off_planes, p.planes.nbytes, off_alpha, alpha.nbytes,
        off_offset if offset is not None else 0, offset.nbytes if offset is not None else 0,
        end, zlib.crc32(memoryview(buf)[HEADER_BYTES:]))
    struct.pack_into("<I", buf, 108, zlib.crc32(memoryview(buf)[:108]))
    return bytes(buf)


def write_file(path: str | os.PathLike, p: PackedPlanes, alpha_dtype: str = "float32") -> None:
    """Writes atomically (temporary file, fsync, rename): a failure never leaves a partial file."""
    atomic_write_bytes(path, to_bytes(p, alpha_dtype))


def read_file(path: str | os.PathLike) -> tuple[PackedPlanes, str]:
    """Reads and validates a ``.bcq`` file with the C++ reader.

    Returns the arrays and the scales' storage dtype ("float32"/"float16").
    A missing path raises FileNotFoundError, a directory IsADirectoryError,
    and anything that is not a valid file BCQFormatError.
    """
    from . import _core

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(errno.ENOENT, "no such bit-plane file", os.fspath(path))
    if p.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a bit-plane file", os.fspath(path))
    try:
        d = _core.read_bitplane_file(os.fspath(path))
    except _core.FormatError as e:
        raise BCQFormatError(str(e)) from None
    packed = PackedPlanes(d["rows"], d["cols"], d["group_size"], d["row_bits"], d["planes"], d["alpha"],
                          d["offset"])
    return packed, d["alpha_dtype"]
