"""Binary-coding quantization (BCQ) of weight matrices.

A weight matrix ``W`` (``N`` output rows x ``K`` input columns) is approximated
row-wise, in groups of ``group_size`` consecutive input columns, as::

    W[n, k] ~= offset[n, g] + sum_{i < q_n} alpha[n, i, g] * B[n, i, k],
    B in {-1, +1},  g = k // group_size

BCQ is the format consumed by LUT-based GEMM kernels: each sign plane ``B[:, i]``
is a 1-bit matrix, so a product with an activation vector reduces to table
look-ups of partial sums scaled by ``alpha``.  Keeping all the quantization math
here (greedy, alternating and uniform-as-BCQ) gives every caller one definition
of the format and of its error.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import OndeviceError

MAX_BITS = 4
METHODS = ("greedy", "alternating", "uniform")
# Rows per chunk are chosen so a chunk holds about this many weights; the
# alternating search keeps several float64 arrays of q x chunk size alive.
_CHUNK_ELEMENTS = 1 << 20


class QuantizationError(OndeviceError, ValueError):
    """Raised for invalid quantization arguments (a ValueError, so generic callers can catch it)."""


@dataclass(frozen=True, eq=False)
class BCQResult:
    """Quantized matrix.  Planes ``i >= row_bits[n]`` of row ``n`` are False / 0.0, so
    mixed-bit rows share one dense layout and unused planes contribute nothing."""

    signs: np.ndarray  # bool [N, qmax, K]; True means +1
    alpha: np.ndarray  # float32 [N, qmax, G]
    offset: np.ndarray | None  # float32 [N, G] or None
    row_bits: np.ndarray  # uint8 [N]
    group_size: int  # effective group size (K when one group spans the row)

    def dequantize(self) -> np.ndarray:
        """Reconstruct the float32 [N, K] approximation of the original matrix."""
        k = self.signs.shape[2]
        out = np.zeros((self.signs.shape[0], k), dtype=np.float32)
        if self.offset is not None:
            out += np.repeat(self.offset, self.group_size, axis=1)[:, :k]
        for i in range(self.signs.shape[1]):
            a = np.repeat(self.alpha[:, i], self.group_size, axis=1)[:, :k]
            out += np.where(self.signs[:, i], a, -a)
        return out


def num_groups(k: int, group_size: int | None) -> int:
    """Number of column groups for ``k`` columns; the last group may be partial."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise QuantizationError(f"k must be an integer >= 1, got {k!r}")
    if group_size is None:
        return 1
    _check_group_size(group_size)
    return -(-int(k) // int(group_size))


def quantize(w: np.ndarray, bits: int | np.ndarray | Sequence[int], group_size: int | None = None,
             method: str = "alternating", offset: bool = False, iters: int = 15) -> BCQResult:
    """Quantize ``w`` [N, K] to BCQ with ``bits`` (int or one value per row, each 1..4).

    ``method``: "greedy" (Guo et al. 2017), "alternating" (Xu et al. 2018; starts from
    greedy and never ends with a larger error) or "uniform" (round-to-nearest with
    2^q levels, converted exactly to BCQ; needs ``offset=True`` because uniform grids
    are not symmetric around zero).  ``offset`` adds a per-(row, group) shift.
    Per-row bits let rarely used rows (e.g. embeddings of rare words) take fewer bits;
    rows are processed in buckets of equal bits.  Returned alphas are >= 0.  The math
    runs in float64, the result is float32.
    """
    w = _check_matrix(w)
    n, k = w.shape
    row_bits = _check_bits(bits, n)
    if group_size is not None:
        _check_group_size(group_size)
    if method not in METHODS:
        raise QuantizationError(f"method must be one of {METHODS}, got {method!r}")
    if method == "uniform" and not offset:
        raise QuantizationError("method='uniform' needs offset=True: its levels are min..max, "
                                "which BCQ can only express with a per-group offset")
    if isinstance(iters, bool) or not isinstance(iters, (int, np.integer)) or iters < 0:
        raise QuantizationError(f"iters must be an integer >= 0, got {iters!r}")

    gs = k if group_size is None else min(int(group_size), k)
    g = num_groups(k, gs)
    qmax = int(row_bits.max())
    signs = np.zeros((n, qmax, k), dtype=bool)
    alpha = np.zeros((n, qmax, g), dtype=np.float32)
    off = np.zeros((n, g), dtype=np.float32) if offset else None
    chunk = max(1, _CHUNK_ELEMENTS // k)
    for q in np.unique(row_bits).tolist():
        rows_q = np.flatnonzero(row_bits == q)
        for start in range(0, rows_q.size, chunk):
            rows = rows_q[start:start + chunk]
            x = w[rows].astype(np.float64)
            for c0, c1, g0, g1, xg in _group_views(x, gs):
                if method == "greedy":
                    codes, a, o = _greedy(xg, q, offset)
                elif method == "alternating":
                    codes, a, o = _alternating(xg, q, offset, int(iters))
                else:
                    codes, a, o = _uniform(xg, q)
                for i in range(q):
                    signs[rows, i, c0:c1] = ((codes >> i) & 1).astype(bool).reshape(rows.size, c1 - c0)
                alpha[rows, :q, g0:g1] = a.transpose(0, 2, 1)
                if off is not None:
                    off[rows, g0:g1] = o
    return BCQResult(signs, alpha, off, row_bits, gs)


# ---------------------------------------------------------------- validation

def _check_matrix(w) -> np.ndarray:
    w = np.asarray(w)
    if w.dtype.kind not in "fiu":
        raise QuantizationError(f"w must be a real floating or integer array, got dtype {w.dtype}")
    if w.ndim != 2 or w.shape[0] < 1 or w.shape[1] < 1:
        raise QuantizationError(f"w must be a 2-D array with N >= 1 rows and K >= 1 columns, "
                                f"got shape {w.shape}")
    bad = int(np.size(w) - np.count_nonzero(np.isfinite(w)))
    if bad:
        raise QuantizationError(f"w contains {bad} non-finite value(s) (NaN or inf)")
    return w


def _check_bits(bits, n: int) -> np.ndarray:
    if isinstance(bits, (int, np.integer)) and not isinstance(bits, (bool, np.bool_)):
        if not 1 <= bits <= MAX_BITS:
            raise QuantizationError(f"bits must be in 1..{MAX_BITS}, got {bits}")
        return np.full(n, bits, dtype=np.uint8)
    arr = np.asarray(bits)
    if arr.ndim != 1 or arr.dtype.kind not in "iu":
        raise QuantizationError(f"bits must be an int or a 1-D integer array, got {bits!r}")
    if arr.shape[0] != n:
        raise QuantizationError(f"bits array has length {arr.shape[0]}, expected one value per row ({n})")
    if arr.min() < 1 or arr.max() > MAX_BITS:
        raise QuantizationError(f"every per-row bits value must be in 1..{MAX_BITS}, "
                                f"got range {arr.min()}..{arr.max()}")
    return arr.astype(np.uint8)


def _check_group_size(group_size) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)) or group_size < 1:
        raise QuantizationError(f"group_size must be None or an integer >= 1, got {group_size!r}")


# ---------------------------------------------------------------- math
# Every kernel takes x float64 [n, G, L] (rows, groups, columns in a group) and
# returns codes uint8 [n, G, L] (bit i set <=> b_i = +1), alpha [n, G, q], offset [n, G].

def _group_views(x: np.ndarray, gs: int):
    """Yield (col0, col1, group0, group1, view) for the full groups and the partial tail,
    so each kernel sees equal-length groups and needs no masking."""
    n, k = x.shape
    full = k // gs
    if full:
        yield 0, full * gs, 0, full, x[:, :full * gs].reshape(n, full, gs)
    if k > full * gs:
        yield full * gs, k, full, full + 1, x[:, full * gs:][:, None, :]


def _greedy(x: np.ndarray, q: int, use_offset: bool):
    off = x.mean(-1) if use_offset else np.zeros(x.shape[:2])
    r = x - off[..., None]
    codes = np.zeros(x.shape, dtype=np.uint8)
    alpha = np.empty(x.shape[:2] + (q,))
    for i in range(q):
        pos = r >= 0  # sign(0) = +1
        codes |= pos.astype(np.uint8) << i
        alpha[..., i] = np.abs(r).mean(-1)
        r -= np.where(pos, alpha[..., i, None], -alpha[..., i, None])
    return codes, alpha, off


def _solve(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Batched m @ s = v.  Systems whose determinant is negligible next to the product of
    the diagonal (e.g. two identical sign planes) get the minimum-norm pinv solution."""
    ok = np.linalg.det(m) > 1e-10 * np.prod(np.diagonal(m, axis1=-2, axis2=-1), axis=-1)
    sol = np.empty_like(v)
    sol[ok] = np.linalg.solve(m[ok], v[ok][..., None])[..., 0]
    if not ok.all():
        sol[~ok] = (np.linalg.pinv(m[~ok], hermitian=True) @ v[~ok][..., None])[..., 0]
    return sol


def _alternating(x: np.ndarray, q: int, use_offset: bool, iters: int):
    """Alternate least-squares scales and nearest-level signs, starting from greedy.

    With signs fixed, all that least squares needs of a vector is the count and the sum
    of its elements for each of the 2^q sign combinations (codes), so an iteration touches
    elements only to assign levels and to take those histograms.  A vector whose
    histograms stop changing has reached a fixed point and is dropped from later work."""
    codes, alpha, off = _greedy(x, q, use_offset)
    shape = x.shape
    x, codes = x.reshape(-1, shape[-1]), codes.reshape(-1, shape[-1])  # one row per vector
    c = 1 << q
    combos = ((np.arange(c)[:, None] >> np.arange(q)) & 1) * 2.0 - 1.0  # [C, q] signs of each code
    design = np.hstack([combos, np.ones((c, 1))]) if use_offset else combos  # [C, p]
    p = design.shape[1]
    outer = (design[:, :, None] * design[:, None, :]).reshape(c, p * p)
    xx = np.square(x).sum(-1)

    def histograms(xa, index):  # per-vector count and sum of elements for each value of index
        flat = (index + (np.arange(len(xa)) * c)[:, None]).ravel()
        cnt = np.bincount(flat, minlength=len(xa) * c).astype(np.float64)
        return cnt.reshape(-1, c), np.bincount(flat, weights=xa.ravel(), minlength=cnt.size).reshape(-1, c)

    def sq_err(s, m, v, xx):  # ||x - D s||^2 = x.x - 2 s.v + s.M.s, with M = D^T D and v = D^T x
        return xx - 2 * (s * v).sum(-1) + (s[:, None, :] @ m @ s[:, :, None])[:, 0, 0]

    cnt, sums = histograms(x, codes)
    cur = np.concatenate([alpha, off[..., None]], axis=-1) if use_offset else alpha.copy()
    cur = cur.reshape(-1, p)
    act = np.arange(len(x))  # vectors that have not converged yet
    for _ in range(iters):
        if act.size == 0:
            break
        xa = x[act]
        # (1) least squares for the fixed signs, kept per vector only if it does not hurt
        m, v = (cnt[act] @ outer).reshape(-1, p, p), sums[act] @ design
        sol, old = _solve(m, v), cur[act]
        better = sq_err(sol, m, v, xx[act]) <= sq_err(old, m, v, xx[act])
        cur[act] = new = np.where(better[:, None], sol, old)
        # (2) nearest of the 2^q levels for every element, which never increases the error
        levels = new[:, :q] @ combos.T + (new[:, q, None] if use_offset else 0.0)
        order = np.argsort(levels, axis=-1)
        srt = np.take_along_axis(levels, order, axis=-1)
        mids = 0.5 * (srt[:, 1:] + srt[:, :-1])
        rank = np.zeros(xa.shape, dtype=np.uint8)
        above = np.empty(xa.shape, dtype=bool)
        for j in range(c - 1):
            rank += np.greater(xa, mids[:, j, None], out=above)
        codes[act] = np.take_along_axis(order, rank, axis=-1)
        hc, hs = histograms(xa, rank)
        new_cnt, new_sums = np.empty_like(hc), np.empty_like(hs)
        np.put_along_axis(new_cnt, order, hc, axis=-1)
        np.put_along_axis(new_sums, order, hs, axis=-1)
        moved = (new_cnt != cnt[act]).any(-1) | (new_sums != sums[act]).any(-1)
        cnt[act], sums[act] = new_cnt, new_sums
        act = act[moved]  # unchanged statistics -> the next least squares would repeat itself
    alpha = cur[:, :q].reshape(shape[:2] + (q,))
    off = cur[:, q].reshape(shape[:2]) if use_offset else off
    # Least squares may return negative scales; flip those planes so alpha >= 0.
    flip = ((alpha < 0) << np.arange(q)).sum(-1).astype(np.uint8)
    return codes.reshape(shape) ^ flip[..., None], np.abs(alpha), off


def _uniform(x: np.ndarray, q: int):
    """Round-to-nearest on 2^q levels, written exactly as BCQ: the level code m = sum 2^i u_i
    is the BCQ code, since min + delta*m = offset + sum delta*2^(i-1)*(2u_i - 1)
    with offset = min + delta*(2^q-1)/2."""
    top = (1 << q) - 1
    lo = x.min(-1)
    delta = (x.max(-1) - lo) / top
    safe = np.where(delta > 0, delta, 1.0)  # constant group: every code is 0
    codes = np.clip(np.rint((x - lo[..., None]) / safe[..., None]), 0, top).astype(np.uint8)
    alpha = delta[..., None] * 2.0 ** (np.arange(q) - 1.0)
    return codes, alpha, lo + delta * top / 2
