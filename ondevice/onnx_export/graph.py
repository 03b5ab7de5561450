"""Building ONNX graphs node by node, and the shared external-data weights file.

Hand-built rather than traced from PyTorch: the exported graphs must contain our custom ops, mirror
the reference model's arithmetic step by step, and serialize to the same bytes on every run, all of
which a tracer makes hard to guarantee. Names are derived from a counter and the caller's hints, so
the same build sequence always yields the same protos.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .. import __version__

__all__ = ["NodeEmitter", "GraphBuilder", "WeightStore"]

# Offsets in the weights file: every tensor starts on a 64-byte boundary (cache line, SIMD loads, as in
# the .bcq format); tensors of a page or more start on a page, which ONNX's external-data spec asks for
# so that runtimes can memory-map them.
_ALIGN = 64
_PAGE = 4096


class NodeEmitter:
    """Appends nodes with unique, deterministic output names (``<hint>_<n>``)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self._count = 0

    def fresh(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def op(self, op_type: str, *inputs: str, outputs: int | Sequence[str] = 1, domain: str = "",
           hint: str | None = None, **attrs: Any) -> Any:
        """Adds one node; returns its output name (or the list of names when ``outputs`` is not 1).

        An input of ``""`` is an omitted optional input, as in ONNX."""
        if isinstance(outputs, int):
            names = [self.fresh(hint or op_type) for _ in range(outputs)]
        else:
            names = list(outputs)
        node = helper.make_node(op_type, list(inputs), names, name=f"n{len(self.nodes)}_{op_type}",
                                domain=domain or None, **attrs)
        self.nodes.append(node)
        return names[0] if isinstance(outputs, int) and outputs == 1 else names


@dataclass(frozen=True)
class _Stored:
    array: np.ndarray
    offset: int


class WeightStore:
    """The tensors of one export, laid out once in one raw file that every graph references.

    Registering the same name twice (the tied embedding, used by the encoder and decoder graphs) stores
    it once, so a shared matrix costs its size once on disk and, when mapped, once in memory."""

    def __init__(self, file_name: str):
        self.file_name = file_name
        self._tensors: dict[str, _Stored] = {}
        self._size = 0

    def add(self, name: str, array: np.ndarray) -> None:
        arr = np.ascontiguousarray(array)
        if arr.dtype.byteorder == ">":
            arr = arr.astype(arr.dtype.newbyteorder("<"))
        old = self._tensors.get(name)
        if old is not None:
            if old.array.dtype != arr.dtype or old.array.shape != arr.shape or not np.array_equal(old.array, arr):
                raise ValueError(f"weight {name!r} registered twice with different values")
            return
        align = _PAGE if arr.nbytes >= _PAGE else _ALIGN
        offset = -(-self._size // align) * align
        self._tensors[name] = _Stored(arr, offset)
        self._size = offset + arr.nbytes

    def tensor_proto(self, name: str) -> onnx.TensorProto:
        """An initializer whose data lives in the weights file (ONNX external data)."""
        s = self._tensors[name]
        t = TensorProto()
        t.name = name
        t.data_type = helper.np_dtype_to_tensor_dtype(s.array.dtype)
        t.dims.extend(s.array.shape)
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", self.file_name), ("offset", str(s.offset)), ("length", str(s.array.nbytes))):
            entry = t.external_data.add()
            entry.key, entry.value = key, value
        return t

    def to_bytes(self) -> bytes:
        buf = bytearray(self._size)
        for s in self._tensors.values():
            buf[s.offset:s.offset + s.array.nbytes] = s.array.tobytes()
        return bytes(buf)


class GraphBuilder(NodeEmitter):
    """One graph: inputs, outputs, small inline constants and weights kept in a :class:`WeightStore`.

    ``weight(..., overridable=True)`` also declares the initializer as a graph input. ONNX (IR >= 4) makes
    such an initializer a default value that a caller may replace, so onnxruntime does not treat it as a
    constant and never constant-folds the ops that read it. That is how the packed bit-planes stay
    packed in memory: with plain initializers, onnxruntime's constant folding evaluates the whole
    dequantization at load time and keeps the float32 matrix (export/README.md, "Constant folding")."""

    def __init__(self, name: str, store: WeightStore):
        super().__init__()
        self.name = name
        self.store = store
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._consts: dict[tuple[str, tuple[int, ...], bytes], str] = {}
        self._inline: list[onnx.TensorProto] = []
        self._weights: list[str] = []

    def input(self, name: str, elem_type: int, shape: Sequence[int | str]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))
        return name

    def output(self, value: str, name: str, elem_type: int, shape: Sequence[int | str]) -> None:
        """Exposes ``value`` as graph output ``name`` (through an Identity when the names differ)."""
        if value != name:
            self.op("Identity", value, outputs=[name])
        self.outputs.append(helper.make_tensor_value_info(name, elem_type, list(shape)))

    def const(self, value: Any, dtype: Any = None) -> str:
        """A small constant stored inside the graph (shapes, axes, scalars); equal values share one name."""
        arr = np.asarray(value, dtype=dtype)
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = self._consts.get(key)
        if name is None:
            name = f"const_{len(self._consts)}"
            self._consts[key] = name
            self._inline.append(numpy_helper.from_array(arr, name))
        return name

    def weight(self, name: str, array: np.ndarray, overridable: bool = False) -> str:
        """A model parameter, stored in the shared weights file under ``name``."""
        if name not in self._weights:
            self.store.add(name, array)
            self._weights.append(name)
            if overridable:
                arr = np.asarray(array)
                self.input(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape)
        return name

    def store_names(self) -> list[str]:
        """Names of the weights this graph reads from the weights file."""
        return list(self._weights)

    def op_types(self) -> set[str]:
        return {n.op_type for n in self.nodes}

    def model(self, opset_imports: Sequence[onnx.OperatorSetIdProto], ir_version: int,
              functions: Sequence[onnx.FunctionProto] = (), doc: str = "") -> onnx.ModelProto:
        initializers = self._inline + [self.store.tensor_proto(n) for n in self._weights]
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs, initializers, doc_string=doc)
        return helper.make_model(graph, opset_imports=list(opset_imports), functions=list(functions),
                                 ir_version=ir_version, producer_name="ondevice", producer_version=__version__)
