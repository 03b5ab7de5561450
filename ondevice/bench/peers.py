"""Peer implementations the kernel benchmark times in the same run as ours.

numpy float32 (its BLAS, thread count set through threadpoolctl), and
onnxruntime sessions of a single fp32 ``MatMul`` or com.microsoft
``MatMulNBits`` (block-quantized 2/4-bit weights) node.
"""

from __future__ import annotations

from typing import Callable

import numpy as np


def numpy_matmul(w: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """x [B, K] -> x @ W.T; for B == 1 numpy dispatches to sgemv, else sgemm."""
    wt = np.ascontiguousarray(w.T)

    def run(x: np.ndarray) -> np.ndarray:
        return x @ wt if x.shape[0] > 1 else w @ x[0]

    return run


def _session(model, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def ort_matmul_fp32(w: np.ndarray, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    from onnx import TensorProto, helper, numpy_helper

    n, k = w.shape
    node = helper.make_node("MatMul", ["x", "wt"], ["y"])
    graph = helper.make_graph([node], "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", n])],
                              [numpy_helper.from_array(np.ascontiguousarray(w.T), "wt")])
    sess = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), threads)
    return lambda x: sess.run(None, {"x": x})[0]


def pack_matmul_nbits(w: np.ndarray, bits: int, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric round-to-nearest block quantization in MatMulNBits' layout.

    Codes c in [0, 2^bits) with the op's default zero point 2^(bits-1) mean
    w ~= (c - zp) * scale; they are packed low bits first along K into
    B[N, k_blocks, block_size * bits / 8]; scales are [N, k_blocks].
    """
    n, k = w.shape
    blocks = -(-k // block_size)
    wp = np.zeros((n, blocks * block_size), dtype=np.float32)
    wp[:, :k] = w
    wb = wp.reshape(n, blocks, block_size)
    zp = 1 << (bits - 1)
    scale = np.abs(wb).max(axis=2) / max(zp - 0.5, 0.5)
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(wb / scale[:, :, None]) + zp, 0, (1 << bits) - 1).astype(np.uint8)
    per_byte = 8 // bits
    codes = codes.reshape(n, blocks, block_size // per_byte, per_byte)
    packed = np.zeros(codes.shape[:3], dtype=np.uint8)
    for j in range(per_byte):
        packed |= codes[..., j] << (bits * j)
    return packed, scale.astype(np.float32)


def ort_matmul_nbits(w: np.ndarray, bits: int, threads: int, block_size: int = 128,
                     accuracy_level: int = 4) -> Callable[[np.ndarray], np.ndarray]:
    """A MatMulNBits session; accuracy_level 4 lets the CPU kernel use int8 activations."""
    from onnx import TensorProto, helper, numpy_helper

    n, k = w.shape
    packed, scale = pack_matmul_nbits(w, bits, block_size)
    node = helper.make_node("MatMulNBits", ["x", "b", "scales"], ["y"], domain="com.microsoft", K=k, N=n,
                            bits=bits, block_size=block_size, accuracy_level=accuracy_level)
    graph = helper.make_graph([node], "mmnb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", n])],
                              [numpy_helper.from_array(packed, "b"),
                               numpy_helper.from_array(scale.reshape(-1), "scales")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.microsoft", 1)])
    sess = _session(model, threads)
    return lambda x: sess.run(None, {"x": x})[0]
