"""The packed format (docs/bitplane-format.md): Python packing pinned byte by byte,
round trips through the C++ reader, and rejection of corrupt files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from ondevice import BCQFormatError, bcq, bitplane


def random_signs(rng, n, q, k, row_bits=None):
    signs = rng.random((n, q, k)) < 0.5
    rb = np.full(n, q, dtype=np.uint8) if row_bits is None else np.asarray(row_bits, dtype=np.uint8)
    alpha = rng.uniform(0.1, 1.0, size=(n, q, bitplane.num_groups(k, gs_for(k)))).astype(np.float32)
    return signs, alpha, rb


def gs_for(k):
    return 16 if k > 16 else k


def test_layout_pinned_on_a_hand_computed_example():
    # N=2 rows, K=10 cols, q=2, one group: KB=2 bytes per plane row, one tile of 32 rows.
    signs = np.zeros((2, 2, 10), dtype=bool)
    signs[1, 0, 0] = True   # row 1, plane 0, col 0 -> byte s=0, bit 0
    signs[0, 1, 9] = True   # row 0, plane 1, col 9 -> byte s=1, bit 1
    signs[1, 1, 4] = True   # row 1, plane 1, col 4 -> byte s=0, bit 4
    alpha = np.array([[[1.0], [0.5]], [[2.0], [0.25]]], dtype=np.float32)
    p = bitplane.pack(signs, alpha, [2, 2], group_size=10)
    assert p.planes.shape == (2 * 2 * 32,)
    expect = np.zeros(128, dtype=np.uint8)
    expect[(0 * 2 + 0) * 32 + 1] = 0b1          # s=0, i=0, j=1
    expect[(1 * 2 + 1) * 32 + 0] = 0b10         # s=1, i=1, j=0
    expect[(0 * 2 + 1) * 32 + 1] = 0b10000      # s=0, i=1, j=1
    np.testing.assert_array_equal(p.planes, expect)
    # alpha [g][i][j]: 1 group x 2 planes x 32 rows; rows 2..31 are padding (0)
    a = np.zeros(64, dtype=np.float32)
    a[[0, 1, 32, 33]] = [1.0, 2.0, 0.5, 0.25]
    np.testing.assert_array_equal(p.alpha, a)


def test_mixed_bits_tiles_and_unused_planes():
    rng = np.random.default_rng(0)
    n, k, q = 70, 37, 4
    rb = np.array([1 + (i % 2) for i in range(32)] + [3] * 32 + [4, 1, 2, 2, 1, 1], dtype=np.uint8)
    signs = rng.random((n, q, k)) < 0.5
    alpha = rng.uniform(0.1, 1, (n, q, 1)).astype(np.float32)
    p = bitplane.pack(signs, alpha, rb, group_size=k)
    np.testing.assert_array_equal(bitplane.tile_bits(rb), [2, 3, 4])
    assert p.planes.size == 5 * 32 * (2 + 3 + 4)
    s2, a2 = bitplane.unpack(p)
    used = np.arange(q)[None, :] < rb[:, None]
    np.testing.assert_array_equal(s2[:, :, :], (signs & used[:, :, None])[:, : s2.shape[1]])
    np.testing.assert_array_equal(a2, np.where(used[:, :, None], alpha, 0))


@pytest.mark.parametrize("n,k,gs", [(1, 1, 1), (5, 7, 7), (33, 9, 9), (31, 100, 16), (64, 130, 64), (40, 1031, 1031)])
@pytest.mark.parametrize("q", [1, 2, 3, 4])
def test_pack_unpack_round_trip(n, k, gs, q):
    rng = np.random.default_rng(n * 1000 + k + q)
    signs = rng.random((n, q, k)) < 0.5
    alpha = rng.uniform(0.1, 1, (n, q, bitplane.num_groups(k, gs))).astype(np.float32)
    p = bitplane.pack(signs, alpha, np.full(n, q), gs)
    s2, a2 = bitplane.unpack(p)
    np.testing.assert_array_equal(s2, signs)
    np.testing.assert_array_equal(a2, alpha)


def test_dequantize_matches_quantizer(rng):
    w = rng.standard_normal((45, 100)).astype(np.float32)
    r = bcq.quantize(w, [1, 2, 3, 4, 2] * 9, group_size=32, method="alternating", offset=True)
    p = bitplane.pack(r.signs, r.alpha, r.row_bits, r.group_size, r.offset)
    np.testing.assert_allclose(bitplane.dequantize(p), r.dequantize(), rtol=1e-6, atol=1e-6)


def _write(tmp_path: Path, p, name="m.bcq", alpha_dtype="float32") -> Path:
    path = tmp_path / name
    bitplane.write_file(path, p, alpha_dtype)
    return path


@pytest.mark.parametrize("alpha_dtype", ["float32", "float16"])
@pytest.mark.parametrize("with_offset", [False, True])
def test_file_round_trip_through_cpp_reader(tmp_path, rng, alpha_dtype, with_offset):
    w = rng.standard_normal((67, 75)).astype(np.float32)
    r = bcq.quantize(w, rng.integers(1, 5, size=67), group_size=24, method="greedy", offset=with_offset)
    p = bitplane.pack(r.signs, r.alpha, r.row_bits, r.group_size, r.offset)
    path = _write(tmp_path, p, alpha_dtype=alpha_dtype)
    back, stored = bitplane.read_file(path)
    assert stored == alpha_dtype
    assert (back.rows, back.cols, back.group_size) == (67, 75, 24)
    np.testing.assert_array_equal(back.row_bits, p.row_bits)
    np.testing.assert_array_equal(back.planes, p.planes)
    tol = 1e-3 if alpha_dtype == "float16" else 0
    np.testing.assert_allclose(back.alpha, p.alpha, rtol=tol)
    if with_offset:
        np.testing.assert_allclose(back.offset, p.offset, rtol=tol, atol=1e-7)
    else:
        assert back.offset is None


def test_header_fields_and_alignment(tmp_path, rng):
    signs, alpha, rb = random_signs(rng, 40, 3, 50)
    p = bitplane.pack(signs, alpha, rb, 16)
    data = _write(tmp_path, p).read_bytes()
    magic, major, minor, hdr, flags, n, k, gs, tile = struct.unpack_from("<4sHHIIIIII", data, 0)
    assert (magic, major, minor, hdr, flags, n, k, gs, tile) == (b"ODBQ", 1, 0, 128, 0, 40, 50, 16, 32)
    offs = struct.unpack_from("<8Q", data, 32)
    for off in offs[0::2][:3]:
        assert off % 64 == 0 and off >= 128
    assert offs[1] == 40 and offs[3] == p.planes.nbytes and offs[5] == p.alpha.nbytes
    assert struct.unpack_from("<Q", data, 96)[0] == len(data)
    assert struct.unpack_from("<I", data, 104)[0] == zlib.crc32(data[128:])
    assert struct.unpack_from("<I", data, 108)[0] == zlib.crc32(data[:108])
    assert data[112:128] == bytes(16)


def test_every_truncation_and_byte_flip_is_rejected(tmp_path, rng):
    signs, alpha, rb = random_signs(rng, 3, 2, 12)
    data = _write(tmp_path, bitplane.pack(signs, alpha, rb, 12)).read_bytes()
    bad = tmp_path / "bad.bcq"
    for cut in range(0, len(data), 7):
        bad.write_bytes(data[:cut])
        with pytest.raises(BCQFormatError):
            bitplane.read_file(bad)
    for i in range(len(data)):
        b = bytearray(data)
        b[i] ^= 0x40
        bad.write_bytes(bytes(b))
        with pytest.raises(BCQFormatError):
            bitplane.read_file(bad)


def test_missing_directory_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        bitplane.read_file(tmp_path / "nope.bcq")
    with pytest.raises(IsADirectoryError):
        bitplane.read_file(tmp_path)
    (tmp_path / "text.bcq").write_text("hello, this is not a model" * 10)
    with pytest.raises(BCQFormatError, match="magic"):
        bitplane.read_file(tmp_path / "text.bcq")
    (tmp_path / "empty.bcq").write_bytes(b"")
    with pytest.raises(BCQFormatError, match="shorter than"):
        bitplane.read_file(tmp_path / "empty.bcq")


def _fix_checksums(b: bytearray) -> bytes:
    struct.pack_into("<Q", b, 96, len(b))
    struct.pack_into("<I", b, 104, zlib.crc32(bytes(b[128:])))
    struct.pack_into("<I", b, 108, zlib.crc32(bytes(b[:108])))
    return bytes(b)


def test_structural_corruption_behind_valid_checksums_is_rejected(tmp_path, rng):
    # The checksums are recomputed, so these reach the reader's structural checks.
    signs, alpha, rb = random_signs(rng, 5, 2, 21)
    good = _write(tmp_path, bitplane.pack(signs, alpha, rb, 16)).read_bytes()
    off_bits, _, off_planes, _, off_alpha = struct.unpack_from("<5Q", good, 32)
    edits = {
        "row bits 0": lambda b: b.__setitem__(off_bits, 0),
        "row bits 5": lambda b: b.__setitem__(off_bits, 5),
        "NaN scale": lambda b: struct.pack_into("<f", b, off_alpha, float("nan")),
        "padding bits beyond cols": lambda b: b.__setitem__(off_planes + 2 * 2 * 32, 0x80),
        "padding row bits": lambda b: b.__setitem__(off_planes + 31, 1),
        "trailing bytes": lambda b: b.extend(bytes(64)),
        "nonzero gap": lambda b: b.__setitem__(off_planes - 1, 7),
        "cols 2^32-1": lambda b: struct.pack_into("<II", b, 20, 2**32 - 1, 2**32 - 1),
        "rows 2^32-1": lambda b: struct.pack_into("<I", b, 16, 2**32 - 1),
    }
    bad = tmp_path / "bad.bcq"
    for what, edit in edits.items():
        b = bytearray(good)
        edit(b)
        bad.write_bytes(_fix_checksums(b))
        with pytest.raises(BCQFormatError):
            bitplane.read_file(bad)
            pytest.fail(what)


def test_packed_planes_normalises_and_freezes_arrays(rng):
    signs, alpha, rb = random_signs(rng, 4, 2, 10)
    p = bitplane.pack(signs, alpha, rb, 10)
    q = bitplane.PackedPlanes(4, 10, 10, p.row_bits.astype(np.int64), p.planes, p.alpha.astype(np.float64), None)
    assert q.row_bits.dtype == np.uint8 and q.alpha.dtype == np.float32
    assert bitplane.to_bytes(q) == bitplane.to_bytes(p)
    with pytest.raises(ValueError):
        q.alpha[0] = 1.0
    with pytest.raises(BCQFormatError, match="layout needs"):
        bitplane.PackedPlanes(4, 10, 10, p.row_bits, p.planes[:-1], p.alpha, None)
    with pytest.raises(BCQFormatError, match="group_size"):
        bitplane.PackedPlanes(4, 10, 16, p.row_bits, p.planes, p.alpha, None)
    # A group spanning the whole row is normalised to cols when packing.
    assert bitplane.pack(signs, alpha, rb, 16).group_size == 10


def test_saved_file_follows_umask(tmp_path, rng):
    import os

    signs, alpha, rb = random_signs(rng, 3, 2, 12)
    path = _write(tmp_path, bitplane.pack(signs, alpha, rb, 12))
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    # Rewriting an existing file keeps its mode, as open() for writing does: a private file stays private.
    path.chmod(0o640)  # no umask gives it
    _write(tmp_path, bitplane.pack(signs, alpha, rb, 12))
    assert path.stat().st_mode & 0o777 == 0o640


def test_write_is_atomic(tmp_path, rng, monkeypatch):
    signs, alpha, rb = random_signs(rng, 3, 2, 12)
    p = bitplane.pack(signs, alpha, rb, 12)
    path = _write(tmp_path, p)
    before = path.read_bytes()
    # A failure while replacing (disk full, killed process) leaves the old file and no temp file.
    import os

    def failing_replace(src, dst):
        raise OSError("simulated failure")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="simulated"):
        bitplane.write_file(path, bitplane.pack(signs, alpha * 2, rb, 12))
    assert path.read_bytes() == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.bcq"]


def test_scales_that_do_not_fit_are_refused(tmp_path, rng):
    signs, alpha, rb = random_signs(rng, 3, 2, 12)
    p = bitplane.pack(signs, alpha * 1e6, rb, 12)
    with pytest.raises(ValueError, match="float16"):
        bitplane.to_bytes(p, "float16")


def test_pack_rejects_bad_group_size(rng):
    signs, alpha, rb = random_signs(rng, 3, 1, 40)
    with pytest.raises(ValueError, match="multiple of 8"):
        bitplane.pack(signs, np.ones((3, 1, 4), np.float32), rb, 12)
