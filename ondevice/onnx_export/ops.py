"""The ``ondevice`` ONNX op domain, version 1: ``BitPlaneMatMul`` and ``BitPlaneGather``.

The normative specifications are export/ops/BitPlaneMatMul.md and export/ops/BitPlaneGather.md. Both
ops take a quantized matrix as the sections of its ``.bcq`` file (docs/bitplane-format.md) unchanged:
the planes in the kernel-native 32-row tile layout, the scales in the tiled layout, the row bits and
the optional offsets. So a runtime with native kernels maps the same bytes the C++ LUT kernels read,
and mixed-bit rows (frequency-clustered embeddings) need no special case.

Each op is also declared as an ONNX model-local function built from standard ops (opset 18), so stock
onnxruntime runs the files with no plug-in: the body unpacks bits with BitShift/BitwiseAnd/Cast,
scales them, and finishes with Gemm or a reshape. The body is the reference semantics, not a fast
path: it dequantizes the rows it needs on every call.

Optional inputs are handled without control flow: a missing ``bias`` is Gemm's optional ``C``, and a
missing ``offset`` enters as ``Gemm(zeros[N,1], zeros[1,G], offset)``, which is the offsets when given
and zeros when not (ONNX lets a function pass an omitted input only to an optional input slot). No
intermediate of a body may be a large tensor computed from constants alone: onnxruntime would fold
it into a stored float matrix (see ``_matmul_function``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from .graph import NodeEmitter

__all__ = ["DOMAIN", "DOMAIN_VERSION", "ONNX_OPSET", "IR_VERSION", "MATMUL", "GATHER", "ATTRIBUTES",
           "opset_imports", "functions"]

DOMAIN = "ondevice"
DOMAIN_VERSION = 1
ONNX_OPSET = 18  # BitwiseAnd needs 18; ReduceMax/ReduceSum take axes as an input from 18
IR_VERSION = 8  # model-local functions need IR 8; the lowest version keeps older runtimes able to load
MATMUL = "BitPlaneMatMul"
GATHER = "BitPlaneGather"
ATTRIBUTES = ("K", "N", "group_size", "bits")
TILE_ROWS = 32


def opset_imports() -> list[onnx.OperatorSetIdProto]:
    return [helper.make_opsetid("", ONNX_OPSET), helper.make_opsetid(DOMAIN, DOMAIN_VERSION)]


class _Body(NodeEmitter):
    """Emits a function body: constants are Constant nodes (one per value), attributes are referenced by name."""

    def __init__(self) -> None:
        super().__init__()
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def const(self, value: Any, dtype: Any = None) -> str:
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        if key not in self._consts:
            self._consts[key] = self.op("Constant", value=numpy_helper.from_array(arr), hint="c")
        return self._consts[key]

    def attr(self, name: str) -> str:
        """The int attribute ``name`` of the calling node, as an int64 scalar tensor."""
        out = self.fresh(name)
        ref = AttributeProto()
        ref.name, ref.ref_attr_name, ref.type = "value_int", name, AttributeProto.INT
        node = helper.make_node("Constant", [], [out], name=f"n{len(self.nodes)}_Constant")
        node.attribute.append(ref)
        self.nodes.append(node)
        return out

    def vec(self, scalar: str) -> str:
        """A scalar as a 1-element vector (for Concat, Slice, shapes)."""
        return self.op("Unsqueeze", scalar, self.const([0], np.int64))


def _ceil_div(b: _Body, x: str, d: str) -> str:
    return b.op("Div", b.op("Add", x, b.op("Sub", d, b.const(1, np.int64))), d)


class _Dims:
    """The op's attributes and the layout sizes derived from them, as int64 scalars of the body."""

    def __init__(self, b: _Body):
        self.k, self.n, self.group_size, self.bits = (b.attr(a) for a in ATTRIBUTES)
        self.kbytes = _ceil_div(b, self.k, b.const(8, np.int64))
        self.groups = _ceil_div(b, self.k, self.group_size)
        self.tiles = _ceil_div(b, self.n, b.const(TILE_ROWS, np.int64))


def _offsets(b: _Body, d: _Dims) -> str:
    """The [N, G] offsets, or zeros when the optional input is omitted: Gemm's C is optional, and
    zeros[N,1] @ zeros[1,G] + C is exactly C."""
    zeros_n1 = b.op("ConstantOfShape", b.op("Concat", b.vec(d.n), b.const([1], np.int64), axis=0))
    zeros_1g = b.op("ConstantOfShape", b.op("Concat", b.const([1], np.int64), b.vec(d.groups), axis=0))
    return b.op("Gemm", zeros_n1, zeros_1g, "offset")


def _dequantize_rows(b: _Body, d: _Dims, rows: str, with_offset: bool) -> str:
    """Nodes computing the float32 rows ``W[rows]`` ([M, K]) of the matrix in the op's inputs.

    ``rows``: int64 [M] in 0..N-1. Follows the spec's layout formulas: tile t = n // 32 has Q_t = max row
    bits of its rows; the byte of row n, plane i, byte column s is at (plane_start[t] + s*Q_t + i) * 32 +
    n % 32, its scale for group g at (alpha_start[t] + g*Q_t + i) * 32 + n % 32, where plane_start /
    alpha_start count the 32-byte (32-value) chunks of the preceding tiles. ``with_offset`` adds the
    offsets first, then the planes in order (the float32 order of ondevice.bcq.BCQResult.dequantize).
    """
    i64, one, zero = np.int64, b.const(1, np.int64), b.const(0, np.int64)
    c32 = b.const(TILE_ROWS, i64)

    # tile bits Q_t and the first chunk of each tile's planes and scales
    row_bits = b.op("Cast", "row_bits", to=TensorProto.INT64)
    pad = b.op("Concat", b.const([0], i64), b.vec(b.op("Sub", b.op("Mul", d.tiles, c32), d.n)), axis=0)
    by_tile = b.op("Reshape", b.op("Pad", row_bits, pad), b.const([-1, TILE_ROWS], i64))
    tile_bits = b.op("ReduceMax", by_tile, b.const([1], i64), keepdims=0)
    plane_start = b.op("CumSum", b.op("Mul", tile_bits, d.kbytes), zero, exclusive=1)
    alpha_start = b.op("CumSum", b.op("Mul", tile_bits, d.groups), zero, exclusive=1)

    # per requested row: [M, 1, 1] columns to broadcast against byte columns / groups and planes
    axes12 = b.const([1, 2], i64)
    tile = b.op("Div", rows, c32)
    lane = b.op("Unsqueeze", b.op("Mod", rows, c32), axes12)
    qt = b.op("Unsqueeze", b.op("Gather", tile_bits, tile, axis=0), axes12)
    qn = b.op("Unsqueeze", b.op("Gather", row_bits, rows, axis=0), axes12)  # also rejects rows >= N
    plane = b.op("Reshape", b.op("Range", zero, d.bits, one), b.const([1, 1, -1], i64))  # [1, 1, bits]
    # planes a tile does not have (i >= Q_t) read the tile's last plane; their scale is zeroed below
    plane_c = b.op("Min", plane, b.op("Sub", qt, one))

    def chunk_index(start: str, count: str) -> str:  # [M, count, bits] element index
        pos = b.op("Reshape", b.op("Range", zero, count, one), b.const([1, -1, 1], i64))
        first = b.op("Unsqueeze", b.op("Gather", start, tile, axis=0), axes12)
        chunk = b.op("Add", b.op("Add", first, b.op("Mul", pos, qt)), plane_c)
        return b.op("Add", b.op("Mul", chunk, c32), lane)

    # signs: bytes [M, KB, bits] -> [M, bits, KB, 8] bits, LSB first -> +-1.0 [M, bits, K]
    data = b.op("Transpose", b.op("Gather", "planes", chunk_index(plane_start, d.kbytes), axis=0), perm=[0, 2, 1])
    shifted = b.op("BitShift", b.op("Unsqueeze", data, b.const([3], i64)), b.const(np.arange(8), np.uint8),
                   direction="RIGHT")
    bits = b.op("Cast", b.op("BitwiseAnd", shifted, b.const(1, np.uint8)), to=TensorProto.FLOAT)
    signs = b.op("Sub", b.op("Mul", bits, b.const(2.0, np.float32)), b.const(1.0, np.float32))
    # explicit dims, not Reshape's 0/-1: those cannot infer a dimension when M is 0
    flat_shape = b.op("Concat", b.op("Shape", signs, end=2), b.vec(b.op("Mul", d.kbytes, b.const(8, i64))), axis=0)
    signs = b.op("Slice", b.op("Reshape", signs, flat_shape), b.const([0], i64), b.vec(d.k), b.const([2], i64))

    # scales [M, groups, bits]; planes >= the row's bits count 0 -> [M, bits, K] by column group
    alpha = b.op("Gather", "alpha", chunk_index(alpha_start, d.groups), axis=0)
    alpha = b.op("Where", b.op("Less", plane, qn), alpha, b.const(0.0, np.float32))
    col_group = b.op("Div", b.op("Range", zero, d.k, one), d.group_size)
    alpha = b.op("Gather", b.op("Transpose", alpha, perm=[0, 2, 1]), col_group, axis=2)

    terms = b.op("Mul", alpha, signs)
    if with_offset:
        offset = b.op("Gather", b.op("Gather", _offsets(b, d), rows, axis=0), col_group, axis=1)
        terms = b.op("Concat", b.op("Unsqueeze", offset, b.const([1], i64)), terms, axis=1)
    return b.op("ReduceSum", terms, b.const([1], i64), keepdims=0)


def _matmul_function() -> onnx.FunctionProto:
    """Y = X W^T + bias with W's plane sum dequantized and the offsets applied to X's group sums:
    X (O expanded over groups)^T = (group sums of X) O^T. Dequantizing the offsets over all N rows would
    give onnxruntime an [N, K] function of constants only (zeros when there are no offsets), which its
    constant folding would store as a float matrix as large as the unquantized weight."""
    b = _Body()
    d = _Dims(b)
    i64 = np.int64
    w = _dequantize_rows(b, d, b.op("Range", b.const(0, i64), d.n, b.const(1, i64)), with_offset=False)
    x2d = b.op("Reshape", "X", b.op("Concat", b.const([-1], i64), b.vec(d.k), axis=0))
    # group sums [M, G]: zero-pad K to G * group_size, view as [M, G, group_size], sum
    padded = b.op("Mul", d.groups, d.group_size)
    x_pad = b.op("Pad", x2d, b.op("Concat", b.const([0, 0, 0], i64), b.vec(b.op("Sub", padded, d.k)), axis=0))
    grouped_shape = b.op("Concat", b.op("Shape", x2d, end=1), b.vec(d.groups), b.vec(d.group_size), axis=0)
    x_groups = b.op("ReduceSum", b.op("Reshape", x_pad, grouped_shape), b.const([2], i64), keepdims=0)
    y2d = b.op("Gemm", x_groups, _offsets(b, d), b.op("Gemm", x2d, w, "bias", transB=1), transB=1)
    lead = b.op("Slice", b.op("Shape", "X"), b.const([0], i64), b.const([-1], i64))
    b.op("Reshape", y2d, b.op("Concat", lead, b.vec(d.n), axis=0), outputs=["Y"])
    return helper.make_function(DOMAIN, MATMUL, ["X", "planes", "alpha", "row_bits", "offset", "bias"], ["Y"],
                                b.nodes, [helper.make_opsetid("", ONNX_OPSET)], attributes=list(ATTRIBUTES),
                                doc_string="Y = X @ W^T + bias for the bit-plane matrix W; "
                                           "spec: export/ops/BitPlaneMatMul.md")


def _gather_function() -> onnx.FunctionProto:
    b = _Body()
    d = _Dims(b)
    ids = b.op("Cast", "indices", to=TensorProto.INT64)
    ids = b.op("Where", b.op("Less", ids, b.const(0, np.int64)), b.op("Add", ids, d.n), ids)  # as Gather: -N..N-1
    w = _dequantize_rows(b, d, b.op("Reshape", ids, b.const([-1], np.int64)), with_offset=True)
    b.op("Reshape", w, b.op("Concat", b.op("Shape", "indices"), b.vec(d.k), axis=0), outputs=["Y"])
    return helper.make_function(DOMAIN, GATHER, ["indices", "planes", "alpha", "row_bits", "offset"], ["Y"],
                                b.nodes, [helper.make_opsetid("", ONNX_OPSET)], attributes=list(ATTRIBUTES),
                                doc_string="Y = W[indices] for the bit-plane matrix W; "
                                           "spec: export/ops/BitPlaneGather.md")


def functions(used: set[str]) -> list[onnx.FunctionProto]:
    """The model-local function definitions of the ops in ``used`` (names), in a fixed order."""
    makers = {MATMUL: _matmul_function, GATHER: _gather_function}
    unknown = used - set(makers)
    if unknown:
        raise ValueError(f"no function body for op(s) {sorted(unknown)}")
    return [makers[name]() for name in sorted(used)]
