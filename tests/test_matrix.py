"""The public quantized matrix: quantize_bcq -> BCQMatrix.matmul on every kernel variant,
against numpy's dequantize() @ x, on odd shapes, q = 1..4, groups, offsets, batches."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

import ondevice
from ondevice import BCQFormatError, BCQMatrix, KernelArgumentError, QuantizationError, quantize_bcq

VARIANTS = ondevice.available_kernels()
LUT_VARIANTS = [v for v in VARIANTS if v != "reference"]


def check_against_numpy(m: BCQMatrix, x: np.ndarray, kernel: str) -> np.ndarray:
    y = m.matmul(x, kernel=kernel, threads=2)
    exact = np.atleast_2d(x).astype(np.float64) @ m.dequantize().astype(np.float64).T
    y2 = np.atleast_2d(y)
    for b in range(y2.shape[0]):
        if kernel == "reference":
            bound = 1e-4 * (1 + np.abs(exact[b]))
        else:
            bound = m.error_bound(np.atleast_2d(x)[b]) * 1.001 + 1e-4 * (1 + np.abs(exact[b]))
        err = np.abs(y2[b] - exact[b])
        assert (err <= bound).all(), f"{kernel}: max excess {(err - bound).max()}"
    return y


@pytest.mark.parametrize("n,k,gs", [(1, 1, None), (7, 13, None), (33, 64, 8), (65, 100, 24), (40, 1100, 128),
                                    (96, 2050, None)])
@pytest.mark.parametrize("q", [1, 2, 3, 4])
@pytest.mark.parametrize("batch", [1, 3, 8])
def test_matmul_all_variants_against_numpy(n, k, gs, q, batch):
    rng = np.random.default_rng(n + k + q + batch)
    w = rng.standard_normal((n, k)).astype(np.float32)
    m = quantize_bcq(w, bits=q, group_size=gs, method="greedy", offset=(q + batch) % 2 == 0)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    outs = {v: check_against_numpy(m, x, v) for v in VARIANTS}
    for v in LUT_VARIANTS:  # every SIMD variant computes exactly what the portable LUT kernel does
        np.testing.assert_array_equal(outs[v], outs["lut_generic"])


@pytest.mark.parametrize("n,k,gs,q,batch", [(1, 1, None, 1, 1), (7, 13, None, 2, 5), (33, 64, 8, 3, 40),
                                             (65, 100, 24, 4, 7), (40, 1100, 128, 2, 300)])
def test_dense_path_against_numpy(n, k, gs, q, batch):
    """path="dense" (the expanded tiles + fmas the runtime uses for many rows) is the exact product up to
    float rounding, and every variant's dense path gives the same bits."""
    rng = np.random.default_rng(n * k + q)
    w = rng.standard_normal((n, k)).astype(np.float32)
    m = quantize_bcq(w, bits=q, group_size=gs, method="greedy", offset=q % 2 == 0)
    x = rng.standard_normal((batch, k)).astype(np.float32)
    wd = m.dequantize().astype(np.float64)
    exact = x.astype(np.float64) @ wd.T
    outs = {v: m.matmul(x, kernel=v, threads=2, path="dense") for v in LUT_VARIANTS}
    bound = (k + 8) * 6e-8 * (np.abs(x).astype(np.float64) @ np.abs(wd).T) + 1e-30
    assert (np.abs(outs["lut_generic"] - exact) <= bound).all()
    for v in LUT_VARIANTS:
        np.testing.assert_array_equal(outs[v], outs["lut_generic"])
    lut16 = m.matmul(x, threads=1, path="lut16")
    assert np.abs(lut16 - exact).max() <= np.abs(m.matmul(x, threads=1) - exact).max() + 1e-6
    with pytest.raises(KernelArgumentError, match="path"):
        m.matmul(x, path="gpu")
    with pytest.raises(KernelArgumentError, match="dense path"):
        m.matmul(x, kernel="reference", path="dense")


def test_mixed_bits_per_row(rng):
    w = rng.standard_normal((100, 300)).astype(np.float32)
    bits = rng.integers(1, 5, size=100)
    m = quantize_bcq(w, bits=bits, group_size=64)
    np.testing.assert_array_equal(m.row_bits, bits)
    assert m.bits == pytest.approx(bits.mean())
    x = rng.standard_normal(300).astype(np.float32)
    for v in VARIANTS:
        check_against_numpy(m, x, v)


def test_one_dimensional_input_and_threads_give_same_result(rng):
    w = rng.standard_normal((300, 512)).astype(np.float32)
    m = quantize_bcq(w, bits=2, group_size=128)
    x = rng.standard_normal(512).astype(np.float32)
    y1 = m.matmul(x, threads=1)
    assert y1.shape == (300,)
    np.testing.assert_array_equal(y1, m.matmul(x[None, :], threads=2)[0])
    np.testing.assert_array_equal(y1, m.matmul(x.astype(np.float64), threads=3))


def test_lut_error_is_small_in_practice(rng):
    w = rng.standard_normal((512, 1024)).astype(np.float32)
    m = quantize_bcq(w, bits=3, group_size=128)
    x = rng.standard_normal(1024).astype(np.float32)
    exact = m.dequantize() @ x
    rel = np.linalg.norm(m.matmul(x) - exact) / np.linalg.norm(exact)
    assert rel < 0.01, rel


def test_shared_matrix_from_many_threads(rng):
    # Large enough that every call splits its rows over the kernel thread pool too.
    w = rng.standard_normal((2048, 2048)).astype(np.float32)
    m = quantize_bcq(w, bits=2, group_size=128, method="greedy")
    xs = [rng.standard_normal((4, 2048)).astype(np.float32) for _ in range(8)]
    expected = [m.matmul(x, threads=1) for x in xs]
    results: dict[int, list[np.ndarray]] = {i: [] for i in range(8)}

    def work(i: int) -> None:
        for _ in range(5):
            results[i].append(m.matmul(xs[i], threads=2))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(8):
        assert len(results[i]) == 5
        for r in results[i]:
            np.testing.assert_array_equal(r, expected[i])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_kernel_pool_survives_fork(rng):
    w = rng.standard_normal((2048, 2048)).astype(np.float32)
    m = quantize_bcq(w, bits=2, group_size=128, method="greedy")
    x = rng.standard_normal((4, 2048)).astype(np.float32)
    expected = m.matmul(x, threads=2)  # the parent's pool has started its workers
    pid = os.fork()
    if pid == 0:  # child: must not hang on the parent's (absent) worker threads
        ok = np.array_equal(m.matmul(x, threads=2), expected)
        os._exit(0 if ok else 3)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("matmul in a forked child hung")


def test_save_load_round_trip(tmp_path, rng):
    w = rng.standard_normal((70, 200)).astype(np.float32)
    m = quantize_bcq(w, bits=3, group_size=64, offset=True, method="uniform")
    m.save(tmp_path / "w.bcq")
    m2 = ondevice.load_bcq(tmp_path / "w.bcq")
    assert m2.shape == m.shape and m2.group_size == 64
    x = rng.standard_normal((2, 200)).astype(np.float32)
    np.testing.assert_array_equal(m2.matmul(x), m.matmul(x))
    np.testing.assert_array_equal(m2.dequantize(), m.dequantize())
    m.save(tmp_path / "h.bcq", alpha_dtype="float16")
    m3 = BCQMatrix.load(tmp_path / "h.bcq")
    np.testing.assert_allclose(m3.dequantize(), m.dequantize(), rtol=2e-3, atol=2e-3)
    assert (tmp_path / "h.bcq").stat().st_size < (tmp_path / "w.bcq").stat().st_size
    assert m3.alpha_dtype == "float16" and m3.nbytes < m.nbytes
    m3.save(tmp_path / "h2.bcq")  # keeps float16 storage
    assert (tmp_path / "h2.bcq").read_bytes() == (tmp_path / "h.bcq").read_bytes()


def test_size_accounting(rng):
    w = rng.standard_normal((64, 1024)).astype(np.float32)
    m = quantize_bcq(w, bits=2, group_size=128)
    planes = 64 * 1024 * 2 // 8
    alpha = 64 * 8 * 2 * 4
    assert m.nbytes == planes + alpha + 64
    assert m.bits_per_weight == pytest.approx(2 * (1 + 32 / 128) + 8 / 1024)
    assert m.bits == 2.0


@pytest.mark.parametrize("kwargs,exc", [
    (dict(bits=5), QuantizationError), (dict(bits=0), QuantizationError),
    (dict(group_size=12), QuantizationError), (dict(method="magic"), QuantizationError),
    (dict(method="uniform"), QuantizationError),
])
def test_quantize_rejects_bad_arguments(kwargs, exc, rng):
    with pytest.raises(exc):
        quantize_bcq(rng.standard_normal((8, 64)).astype(np.float32), **kwargs)


def test_quantize_rejects_bad_matrices():
    with pytest.raises(QuantizationError):
        quantize_bcq(np.ones(10, np.float32))
    with pytest.raises(QuantizationError):
        quantize_bcq(np.array([[1.0, np.nan]], np.float32))
    with pytest.raises(ondevice.OndeviceError):  # the common base class catches it too
        quantize_bcq(np.array([[1.0, np.inf]], np.float32))


def test_matmul_rejects_bad_input(rng):
    m = quantize_bcq(rng.standard_normal((8, 16)).astype(np.float32), bits=2)
    with pytest.raises(KernelArgumentError, match="shape"):
        m.matmul(np.ones(15, np.float32))
    with pytest.raises(KernelArgumentError, match="non-finite"):
        m.matmul(np.array([np.nan] + [1.0] * 15, np.float32))
    with pytest.raises(KernelArgumentError):
        m.matmul(np.ones((2, 2, 16), np.float32))
    with pytest.raises(KernelArgumentError):
        m.matmul(np.array(["a"] * 16))
    with pytest.raises(KernelArgumentError):
        m.matmul(np.ones(16, np.float32), threads=0)
    with pytest.raises(KernelArgumentError, match="not available"):
        m.matmul(np.ones(16, np.float32), kernel="lut_sse9")
    with pytest.raises(KernelArgumentError):
        m.matmul(np.ones(16, np.float32), threads=1.5)
    np.testing.assert_array_equal(m.matmul(np.ones(16, np.float32), threads=np.int64(2)),
                                  m.matmul(np.ones(16, np.float32), threads=1))
    with pytest.raises(KernelArgumentError):
        m.error_bound(np.ones(15, np.float32))
    with pytest.raises(KernelArgumentError):
        m.error_bound(np.ones((2, 16), np.float32))
    assert m.matmul(np.zeros((0, 16), np.float32)).shape == (0, 8)


def test_inconsistent_arrays_are_rejected(rng):
    m = quantize_bcq(rng.standard_normal((8, 16)).astype(np.float32), bits=2)
    p = m.packed
    from ondevice.bitplane import PackedPlanes

    with pytest.raises(BCQFormatError):
        BCQMatrix(PackedPlanes(p.rows, p.cols, p.group_size, p.row_bits, p.planes[:-1], p.alpha, None))
    with pytest.raises(ValueError):  # the packed arrays are read-only once validated
        p.alpha[0] = np.nan
    bad_alpha = p.alpha.copy()
    bad_alpha[0] = np.inf
    with pytest.raises(BCQFormatError):
        BCQMatrix(PackedPlanes(p.rows, p.cols, p.group_size, p.row_bits, p.planes, bad_alpha, None))
