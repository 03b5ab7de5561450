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
and zeros when not (ONNX lets a function pass an omitted input only to an optional input slot).
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
    """Emits a function body: constants are Constant nodes, attributes are referenced by name."""

    def const(self, value: Any, dtype: Any = None) -> str:
        return self.op("Constant", value=numpy_helper.from_array(np.asarray(value, dtype=dtype)), hint="c")

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


def _dequantize_rows(b: _Body, rows: str) -> tuple[str, str]:
    """Nodes computing the float32 rows ``W[rows]`` ([M, K]) of the matrix in the op's inputs.

    ``rows``: int64 [M] in 0..N-1. Returns (W rows, K as a scalar). Follows the spec's layout formulas:
    tile t = n // 32 has Q_t = max row bits of its rows; the byte of row n, plane i, byte column s is at
    (plane_start[t] + s*Q_t + i) * 32 + n % 32, its scale for group g at (alpha_start[t] + g*Q_t + i) * 32
    + n % 32, where plane_start/alpha_start count 32-byte (32-value) chunks of the preceding tiles.
    """
    i64, one, zero = np.int64, b.const(1, np.int64), b.const(0, np.int64)
    k, n, gs, q = (b.attr(a) for a in ATTRIBUTES)
    c32 = b.const(TILE_ROWS, i64)
    kbytes = _ceil_div(b, k, b.const(8, i64))
    groups = _ceil_div(b, k, gs)
    tiles = _ceil_div(b, n, c32)

    # tile bits Q_t and the first chunk of each tile's planes and scales
    row_bits = b.op("Cast", "row_bits", to=TensorProto.INT64)
    pad = b.op("Concat", b.const([0], i64), b.vec(b.op("Sub", b.op("Mul", tiles, c32), n)), axis=0)
    by_tile = b.op("Reshape", b.op("Pad", row_bits, pad), b.const([-1, TILE_ROWS], i64))
    tile_bits = b.op("ReduceMax", by_tile, b.const([1], i64), keepdims=0)
    plane_start = b.op("CumSum", b.op("Mul", tile_bits, kbytes), zero, exclusive=1)
    alpha_start = b.op("CumSum", b.op("Mul", tile_bits, groups), zero, exclusive=1)

    # per requested row: [M, 1, 1] columns to broadcast against byte columns / groups and planes
    axes12 = b.const([1, 2], i64)
    tile = b.op("Div", rows, c32)
    lane = b.op("Unsqueeze", b.op("Mod", rows, c32), axes12)
    qt = b.op("Unsqueeze", b.op("Gather", tile_bits, tile, axis=0), axes12)
    qn = b.op("Unsqueeze", b.op("Gather", row_bits, rows, axis=0), axes12)  # also rejects rows >= N
    plane = b.op("Reshape", b.op("Range", zero, q, one), b.const([1, 1, -1], i64))  # [1, 1, bits]
    # planes a tile does not have (i >= Q_t) read the tile's last plane; their scale is zeroed below
    plane_c = b.op("Min", plane, b.op("Sub", qt, one))

    def chunk_index(start: str, count: str) -> str:  # [M, count, bits] element index
        pos = b.op("Reshape", b.op("Range", zero, count, one), b.const([1, -1, 1], i64))
        first = b.op("Unsqueeze", b.op("Gather", start, tile, axis=0), axes12)
        chunk = b.op("Add", b.op("Add", first, b.op("Mul", pos, qt)), plane_c)
        return b.op("Add", b.op("Mul", chunk, c32), lane)

    # signs: bytes [M, KB, bits] -> [M, bits, KB, 8] bits, LSB first -> +-1.0 [M, bits, K]
    data = b.op("Transpose", b.op("Gather", "planes", chunk_index(plane_start, kbytes), axis=0), perm=[0, 2, 1])
    shifted = b.op("BitShift", b.op("Unsqueeze", data, b.const([3], i64)), b.const(np.arange(8), np.uint8),
                   direction="RIGHT")
    bits = b.op("Cast", b.op("BitwiseAnd", shifted, b.const(1, np.uint8)), to=TensorProto.FLOAT)
    signs = b.op("Sub", b.op("Mul", bits, b.const(2.0, np.float32)), b.const(1.0, np.float32))
    # explicit dims, not Reshape's 0/-1: those cannot infer a dimension when M is 0
    flat_shape = b.op("Concat", b.op("Shape", signs, end=2), b.vec(b.op("Mul", kbytes, b.const(8, i64))), axis=0)
    signs = b.op("Slice", b.op("Reshape", signs, flat_shape), b.const([0], i64), b.vec(k), b.const([2], i64))

    # scales [M, groups, bits]; planes >= the row's bits count 0 -> [M, bits, K] by column group
    alpha = b.op("Gather", "alpha", chunk_index(alpha_start, groups), axis=0)
    alpha = b.op("Where", b.op("Less", plane, qn), alpha, b.const(0.0, np.float32))
    col_group = b.op("Div", b.op("Range", zero, k, one), gs)
    alpha = b.op("Gather", b.op("Transpose", alpha, perm=[0, 2, 1]), col_group, axis=2)

    # offsets (zeros when the optional input is omitted) [M, K]
    zeros_n1 = b.op("ConstantOfShape", b.op("Concat", b.vec(n), b.const([1], i64), axis=0))
    zeros_1g = b.op("ConstantOfShape", b.op("Concat", b.const([1], i64), b.vec(groups), axis=0))
    offset = b.op("Gemm", zeros_n1, zeros_1g, "offset")
    offset = b.op("Gather", b.op("Gather", offset, rows, axis=0), col_group, axis=1)

    # W = offset + sum_i alpha_i * B_i, summed in that order (as ondevice.bcq.BCQResult.dequantize)
    terms = b.op("Concat", b.op("Unsqueeze", offset, b.const([1], i64)), b.op("Mul", alpha, signs), axis=1)
    return b.op("ReduceSum", terms, b.const([1], i64), keepdims=0), k


def _matmul_function() -> onnx.FunctionProto:
    b = _Body()
    n = b.attr("N")
    rows = b.op("Range", b.const(0, np.int64), n, b.const(1, np.int64))
    w, k = _dequantize_rows(b, rows)
    x2d = b.op("Reshape", "X", b.op("Concat", b.const([-1], np.int64), b.vec(k), axis=0))
    y2d = b.op("Gemm", x2d, w, "bias", transB=1)
    lead = b.op("Slice", b.op("Shape", "X"), b.const([0], np.int64), b.const([-1], np.int64))
    b.op("Reshape", y2d, b.op("Concat", lead, b.vec(n), axis=0), outputs=["Y"])
    return helper.make_function(DOMAIN, MATMUL, ["X", "planes", "alpha", "row_bits", "offset", "bias"], ["Y"],
                                b.nodes, [helper.make_opsetid("", ONNX_OPSET)], attributes=list(ATTRIBUTES),
                                doc_string="Y = X @ W^T + bias for the bit-plane matrix W; "
                                           "spec: export/ops/BitPlaneMatMul.md")


def _gather_function() -> onnx.FunctionProto:
    b = _Body()
    n = b.attr("N")
    ids = b.op("Cast", "indices", to=TensorProto.INT64)
    ids = b.op("Where", b.op("Less", ids, b.const(0, np.int64)), b.op("Add", ids, n), ids)  # as Gather: -N..N-1
    w, k = _dequantize_rows(b, b.op("Reshape", ids, b.const([-1], np.int64)))
    b.op("Reshape", w, b.op("Concat", b.op("Shape", "indices"), b.vec(k), axis=0), outputs=["Y"])
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
