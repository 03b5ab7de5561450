"""The BCQ math (ondevice/bcq.py): greedy, alternating and uniform quantization, checked
against brute force, exact recoveries and independent references."""

import itertools

import numpy as np
import pytest

from ondevice import bcq

quantize, num_groups, QuantizationError = bcq.quantize, bcq.num_groups, bcq.QuantizationError


def sq_err(w, res):
    return float(np.sum((res.dequantize().astype(np.float64) - w) ** 2))


def row_err(w, res):
    return np.sum((res.dequantize().astype(np.float64) - w) ** 2, axis=1)


# ---------------------------------------------------------------- alternating vs greedy

@pytest.mark.parametrize("q", [1, 2, 3, 4])
@pytest.mark.parametrize("group_size", [None, 16, 24])
@pytest.mark.parametrize("offset", [False, True])
def test_alternating_never_worse_than_greedy(q, group_size, offset):
    w = np.random.default_rng(q * 10 + (group_size or 0)).standard_normal((12, 100))
    greedy = quantize(w, q, group_size, "greedy", offset)
    alt = quantize(w, q, group_size, "alternating", offset)
    # per row, not only in total: the guard is per (row, group) vector
    assert np.all(row_err(w, alt) <= row_err(w, greedy) * (1 + 1e-6) + 1e-9)


@pytest.mark.parametrize("q", [2, 3, 4])
@pytest.mark.parametrize("offset", [False, True])
def test_alternating_strictly_better_for_multibit(q, offset):
    w = np.random.default_rng(q).standard_normal((64, 256)).astype(np.float32)
    greedy = sq_err(w, quantize(w, q, None, "greedy", offset))
    alt = sq_err(w, quantize(w, q, None, "alternating", offset))
    assert alt < 0.97 * greedy


def reference_greedy(x, q, offset):
    off = x.mean() if offset else 0.0
    r, signs, alphas = x - off, [], []
    for _ in range(q):
        b = np.where(r >= 0, 1.0, -1.0)  # sign(0) = +1
        a = np.abs(r).mean()
        r = r - a * b
        signs.append(b > 0)
        alphas.append(a)
    return np.array(signs), np.array(alphas), off


@pytest.mark.parametrize("offset", [False, True])
def test_greedy_matches_reference(offset):
    rng = np.random.default_rng(7)
    w = np.round(rng.standard_normal((4, 40)), 1)  # rounding leaves exact zeros and ties
    w[0, :8] = 0.0
    res = quantize(w, 3, 16, "greedy", offset)
    for n in range(4):
        for g, start in enumerate(range(0, 40, 16)):
            signs, alphas, off = reference_greedy(w[n, start:start + 16], 3, offset)
            np.testing.assert_array_equal(res.signs[n, :, start:start + 16], signs)
            np.testing.assert_allclose(res.alpha[n, :, g], alphas, rtol=1e-6)
            if offset:
                np.testing.assert_allclose(res.offset[n, g], off, rtol=1e-6, atol=1e-7)


def test_zero_iterations_is_greedy():
    w = np.random.default_rng(5).standard_normal((8, 40))
    a = quantize(w, 3, 16, "alternating", iters=0)
    g = quantize(w, 3, 16, "greedy")
    np.testing.assert_array_equal(a.signs, g.signs)
    np.testing.assert_array_equal(a.alpha, g.alpha)


def test_more_iterations_do_not_hurt():
    w = np.random.default_rng(6).standard_normal((16, 128))
    errs = [row_err(w, quantize(w, 3, 32, iters=it)) for it in range(6)]
    for before, after in zip(errs, errs[1:]):
        assert np.all(after <= before * (1 + 1e-6) + 1e-9)


# ---------------------------------------------------------------- exact recovery

def make_bcq_matrix(rng, n, k, group_size, alphas, offset=False):
    """Random signs, per-(row, group) scale times well separated alphas (each larger than the
    sum of the later ones, so the representation is unique), optionally a random offset."""
    g = -(-k // group_size)
    signs = rng.random((n, len(alphas), k)) < 0.5
    scale = rng.uniform(0.5, 2.0, (n, 1, g)) * np.asarray(alphas)[None, :, None]
    expand = np.repeat(scale, group_size, axis=2)[:, :, :k]
    w = np.where(signs, expand, -expand).sum(axis=1)
    if offset:
        w += np.repeat(rng.standard_normal((n, g)), group_size, axis=1)[:, :k]
    return w


def recovered_fraction(w, res, group_size):
    """Fraction of (row, group) vectors reproduced to 1e-5."""
    bad = np.abs(res.dequantize() - w) > 1e-5
    g = -(-w.shape[1] // group_size)
    padded = np.zeros((w.shape[0], g * group_size), dtype=bool)
    padded[:, :w.shape[1]] = bad
    return 1.0 - padded.reshape(w.shape[0], g, group_size).any(axis=2).mean()


@pytest.mark.parametrize("alphas", [(1.0,), (1.0, 0.4)])
def test_exact_bcq_matrix_is_recovered(alphas):
    w = make_bcq_matrix(np.random.default_rng(len(alphas)), 32, 300, 128, alphas)  # tail group of 44
    np.testing.assert_allclose(quantize(w, len(alphas), 128).dequantize(), w, atol=1e-5)
    if len(alphas) == 1:
        np.testing.assert_allclose(quantize(w, 1, 128, "greedy").dequantize(), w, atol=1e-5)


def test_exact_three_bit_matrix_is_mostly_recovered():
    # Alternating is a local method started from greedy: on about 1% of such 128-element
    # vectors it settles in a non-exact fixed point, so assert the rate, not every vector.
    w = make_bcq_matrix(np.random.default_rng(3), 64, 512, 128, (1.0, 0.4, 0.15))
    frac = recovered_fraction(w, quantize(w, 3, 128), 128)
    print(f"3-bit exact BCQ recovered on {frac:.1%} of vectors")
    assert frac >= 0.95
    assert recovered_fraction(w, quantize(w, 3, 128, "greedy"), 128) < 0.5 * frac


def test_exact_one_bit_matrix_with_offset_is_recovered():
    # greedy takes the mean as offset, which is off-centre for unbalanced signs; the joint
    # least squares of alternating puts it right
    w = make_bcq_matrix(np.random.default_rng(4), 16, 100, 32, (1.0,), offset=True)
    np.testing.assert_allclose(quantize(w, 1, 32, offset=True).dequantize(), w, atol=1e-5)
    assert np.abs(quantize(w, 1, 32, "greedy", offset=True).dequantize() - w).max() > 1e-2


def test_degenerate_vectors_stay_exact_and_finite():
    # constant and zero rows make greedy produce identical planes / zero scales, i.e.
    # singular normal equations that the solver has to survive
    w = np.array([[3.0] * 10, [0.0] * 10, [-2.0] * 5 + [7.0] * 5])
    for q in range(1, 5):
        for offset in (False, True):
            res = quantize(w, q, 5, "alternating", offset)
            assert np.all(np.isfinite(res.alpha))
            np.testing.assert_allclose(res.dequantize(), w, atol=1e-5)


# ---------------------------------------------------------------- brute force optimum

def brute_force_err(x, q):
    """Smallest ||x - B a||^2 over all sign matrices B in {-1,+1}^(len(x) x q), a by least squares."""
    b = np.array(list(itertools.product((-1.0, 1.0), repeat=q * len(x)))).reshape(-1, len(x), q)
    a = np.linalg.pinv(b) @ x  # [patterns, q]; pinv also covers identical planes
    return float(np.min(np.sum(((b @ a[..., None])[..., 0] - x) ** 2, axis=1)))


def test_one_bit_greedy_and_alternating_are_optimal():
    rng = np.random.default_rng(11)
    for _ in range(4):
        w = rng.standard_normal((3, 6))
        opt = np.array([brute_force_err(row, 1) for row in w])
        for method in ("greedy", "alternating"):
            np.testing.assert_allclose(row_err(w, quantize(w, 1, method=method)), opt, rtol=1e-6, atol=1e-9)


def test_two_bit_brute_force():
    rng = np.random.default_rng(12)
    w = rng.standard_normal((200, 6))
    opt = np.array([brute_force_err(row, 2) for row in w])
    alt = row_err(w, quantize(w, 2, method="alternating"))
    greedy = row_err(w, quantize(w, 2, method="greedy"))
    tol = 1e-6 * np.sum(w ** 2, axis=1)
    assert np.all(opt <= alt + tol)
    assert np.all(alt <= greedy + tol)
    alt_opt, greedy_opt = float(np.mean(alt <= opt + tol)), float(np.mean(greedy <= opt + tol))
    print(f"optimum reached on {alt_opt:.1%} (alternating) / {greedy_opt:.1%} (greedy) of 1x6 vectors, q=2")
    assert alt_opt >= 0.6  # observed 0.68-0.74 over several seeds (greedy: about 0.26)
    assert greedy_opt < alt_opt


# ---------------------------------------------------------------- uniform

def reference_rtn(w, q, group_size):
    out = np.empty_like(w)
    for start in range(0, w.shape[1], group_size):
        x = w[:, start:start + group_size]
        lo, hi = x.min(axis=1, keepdims=True), x.max(axis=1, keepdims=True)
        delta = (hi - lo) / (2 ** q - 1)
        safe = np.where(delta > 0, delta, 1.0)
        m = np.clip(np.rint((x - lo) / safe), 0, 2 ** q - 1)
        out[:, start:start + group_size] = lo + delta * m
    return out


@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_uniform_matches_reference_rtn(q):
    rng = np.random.default_rng(q)
    w = rng.standard_normal((10, 100)) * rng.uniform(0.1, 3.0, (10, 1))
    w[3, 32:64] = 0.7  # constant group: delta = 0
    res = quantize(w, q, 32, "uniform", offset=True)
    np.testing.assert_allclose(res.dequantize(), reference_rtn(w, q, 32), atol=1e-5)
    assert res.alpha.shape == (10, q, 4) and res.offset.shape == (10, 4)
    # the sign planes are exactly the bits of the integer code
    lo = w[:, :32].min(axis=1, keepdims=True)
    delta = (w[:, :32].max(axis=1, keepdims=True) - lo) / (2 ** q - 1)
    m = np.rint((w[:, :32] - lo) / delta).astype(int)
    for i in range(q):
        np.testing.assert_array_equal(res.signs[:, i, :32], ((m >> i) & 1).astype(bool))


# ---------------------------------------------------------------- mixed bits per row

def test_mixed_bits_per_row():
    rng = np.random.default_rng(21)
    content = rng.standard_normal((8, 96))
    w = np.tile(content, (4, 1))  # the same 8 rows at 1, 2, 3 and 4 bits
    bits = np.repeat([1, 2, 3, 4], 8)
    order = rng.permutation(len(w))  # interleave the buckets
    w, bits = w[order], bits[order]
    res = quantize(w, bits, 32)
    np.testing.assert_array_equal(res.row_bits, bits)
    assert res.row_bits.dtype == np.uint8
    assert res.signs.shape == (32, 4, 96) and res.alpha.shape == (32, 4, 3)
    for n, q in enumerate(bits):
        assert not res.signs[n, q:].any()
        assert np.all(res.alpha[n, q:] == 0.0)
    err = row_err(w, res)
    mean_err = [err[bits == q].mean() for q in (1, 2, 3, 4)]
    assert all(a > b for a, b in zip(mean_err, mean_err[1:]))
    # each bucket gives exactly what a uniform-bits call on those rows gives
    for q in (1, 2, 3, 4):
        rows = np.flatnonzero(bits == q)
        single = quantize(w[rows], q, 32)
        np.testing.assert_array_equal(res.signs[rows, :q], single.signs)
        np.testing.assert_array_equal(res.alpha[rows, :q], single.alpha)


def test_mixed_bits_with_offset_and_sequence():
    w = np.random.default_rng(22).standard_normal((3, 40))
    res = quantize(w, [2, 1, 3], 16, "greedy", offset=True)
    assert res.offset.shape == (3, 3)
    assert list(res.row_bits) == [2, 1, 3]


# ---------------------------------------------------------------- groups

@pytest.mark.parametrize("k, group_size, expected", [
    (100, 32, 4), (128, 32, 4), (5, None, 1), (5, 100, 1), (5, 5, 1), (1, 1, 1), (7, 1, 7)])
def test_num_groups(k, group_size, expected):
    assert num_groups(k, group_size) == expected


def test_partial_last_group():
    w = np.random.default_rng(31).standard_normal((5, 100))
    res = quantize(w, 2, 32)
    assert res.group_size == 32 and res.alpha.shape == (5, 2, 4)
    # the tail group (columns 96..99) is quantized on its own: changing it leaves the rest alone
    w2 = w.copy()
    w2[:, 96:] *= 10
    res2 = quantize(w2, 2, 32)
    np.testing.assert_array_equal(res.alpha[:, :, :3], res2.alpha[:, :, :3])
    np.testing.assert_array_equal(res.signs[:, :, :96], res2.signs[:, :, :96])
    # and matches quantizing those columns alone
    tail = quantize(w[:, 96:], 2)
    np.testing.assert_allclose(res.alpha[:, :, 3:], tail.alpha)


@pytest.mark.parametrize("group_size", [None, 50, 1000])
def test_one_group_spanning_the_row(group_size):
    w = np.random.default_rng(32).standard_normal((4, 50))
    res = quantize(w, 3, group_size)
    assert res.group_size == 50 and res.alpha.shape == (4, 3, 1)
    ref = quantize(w, 3, None)
    np.testing.assert_array_equal(res.signs, ref.signs)
    np.testing.assert_array_equal(res.alpha, ref.alpha)


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("kwargs, match", [
    (dict(w=np.array([[1.0, np.nan], [np.inf, 0.0]]), bits=2), "2 non-finite"),
    (dict(w=np.array([[1.0, -np.inf]]), bits=2), "1 non-finite"),
    (dict(w=np.ones(8), bits=2), "2-D"),
    (dict(w=np.ones((0, 4)), bits=2), "2-D"),
    (dict(w=np.ones((2, 2), dtype=complex), bits=2), "real"),
    (dict(w=np.ones((2, 4)), bits=0), "1..4"),
    (dict(w=np.ones((2, 4)), bits=5), "1..4"),
    (dict(w=np.ones((2, 4)), bits=2.0), "int"),
    (dict(w=np.ones((2, 4)), bits=[1, 2, 3]), "length 3"),
    (dict(w=np.ones((2, 4)), bits=[1, 5]), "1..4"),
    (dict(w=np.ones((2, 4)), bits=[0, 2]), "1..4"),
    (dict(w=np.ones((2, 4)), bits=2, method="optimal"), "method"),
    (dict(w=np.ones((2, 4)), bits=2, method="uniform"), "offset=True"),
    (dict(w=np.ones((2, 4)), bits=2, group_size=0), "group_size"),
    (dict(w=np.ones((2, 4)), bits=2, group_size=2.5), "group_size"),
    (dict(w=np.ones((2, 4)), bits=2, iters=-1), "iters"),
])
def test_validation_errors(kwargs, match):
    with pytest.raises(QuantizationError, match=match) as info:
        quantize(**kwargs)
    assert isinstance(info.value, ValueError) and str(info.value)


def test_num_groups_validation():
    with pytest.raises(QuantizationError):
        num_groups(0, 4)
    with pytest.raises(QuantizationError):
        num_groups(10, 0)


# ---------------------------------------------------------------- types and shapes

@pytest.mark.parametrize("method, offset", [("greedy", False), ("alternating", True), ("uniform", True)])
def test_dtypes_and_shapes(method, offset):
    w = np.random.default_rng(41).standard_normal((6, 70)).astype(np.float32)
    res = quantize(w, 3, 32, method, offset)
    assert res.signs.dtype == np.bool_ and res.signs.shape == (6, 3, 70)
    assert res.alpha.dtype == np.float32 and res.alpha.shape == (6, 3, 3)
    assert res.offset.dtype == np.float32 and res.offset.shape == (6, 3) if offset else res.offset is None
    assert res.row_bits.dtype == np.uint8 and res.row_bits.shape == (6,)
    assert np.all(res.alpha >= 0)
    deq = res.dequantize()
    assert deq.dtype == np.float32 and deq.shape == (6, 70)


def test_integer_input():
    w = np.arange(-8, 8).reshape(1, 16)  # 16 integer levels: 4-bit uniform is exact
    res = quantize(w, 4, method="uniform", offset=True)
    np.testing.assert_allclose(res.dequantize(), w, atol=1e-5)
