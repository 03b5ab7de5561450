"""The C++ runtime's ONNX reader sees what the ``onnx`` package sees.

Models built with ``onnx.helper`` (standard and custom-domain nodes with attributes of every type the
runtime reads, raw and typed initializers, external data, a symbolic dimension, a model-local function
with a referenced attribute) are summarised twice: by ``ondevice_onnx_dump`` (cpp_runtime/tools/onnx_dump.cc,
on the runtime's dependency-free reader) and, below, from ``onnx.load``. The two summaries must be equal,
tensor bytes included (FNV-1a 64 hashes).

The tool is found through ``$ONDEVICE_ONNX_DUMP`` or in the native build of tests/run_all.sh
(``build/cpp-native``); it is built with the C++ tests:
``cmake -S . -B build/cpp-native -G Ninja && cmake --build build/cpp-native --target ondevice_onnx_dump``.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import AttributeProto, TensorProto, helper, numpy_helper  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
_DEFAULT_TOOL = ROOT / "build" / "cpp-native" / "cpp_runtime" / "ondevice_onnx_dump"


def _tool() -> Path:
    env = os.environ.get("ONDEVICE_ONNX_DUMP")
    path = Path(env) if env else _DEFAULT_TOOL
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.skip(f"ondevice_onnx_dump not built (looked at {path}; set ONDEVICE_ONNX_DUMP or build it with "
                    "`cmake -S . -B build/cpp-native -G Ninja && cmake --build build/cpp-native "
                    "--target ondevice_onnx_dump`)")
    return path


def _dump(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(_tool()), str(path)], capture_output=True, text=True, timeout=60)


# ---------------------------------------------------------------- the summary, from onnx's parse

def _fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def _float(x: float):
    x = struct.unpack("<f", struct.pack("<f", x))[0]
    if x != x:
        return "nan"
    if x in (float("inf"), float("-inf")):
        return "inf" if x > 0 else "-inf"
    return x


def _tensor(t: onnx.TensorProto, base_dir: Path) -> dict:
    data = numpy_helper.to_array(t, base_dir=str(base_dir)).tobytes()
    if t.data_location == TensorProto.EXTERNAL:
        source = "external"
    elif t.HasField("raw_data"):
        source = "raw"
    elif any(len(f) for f in (t.float_data, t.int32_data, t.int64_data, t.double_data, t.uint64_data)):
        source = "typed"
    else:
        source = "raw"
    return {"name": t.name, "data_type": TensorProto.DataType.Name(t.data_type), "dims": list(t.dims),
            "byte_size": len(data), "source": source, "fnv1a64": _fnv1a64(data)}


def _attribute(a: onnx.AttributeProto, base_dir: Path) -> dict:
    value = None
    if not a.ref_attr_name:
        if a.type == AttributeProto.FLOAT:
            value = _float(a.f)
        elif a.type == AttributeProto.INT:
            value = a.i
        elif a.type == AttributeProto.STRING:
            value = a.s.decode()
        elif a.type == AttributeProto.TENSOR:
            value = _tensor(a.t, base_dir)
        elif a.type == AttributeProto.FLOATS:
            value = [_float(f) for f in a.floats]
        elif a.type == AttributeProto.INTS:
            value = list(a.ints)
        elif a.type == AttributeProto.STRINGS:
            value = [s.decode() for s in a.strings]
    return {"name": a.name, "type": AttributeProto.AttributeType.Name(a.type), "ref_attr_name": a.ref_attr_name,
            "value": value}


def _node(n: onnx.NodeProto, base_dir: Path) -> dict:
    return {"op_type": n.op_type, "domain": n.domain, "name": n.name, "inputs": list(n.input),
            "outputs": list(n.output), "attributes": [_attribute(a, base_dir) for a in n.attribute]}


def _value_info(v: onnx.ValueInfoProto) -> dict:
    elem, shape = None, None
    if v.type.HasField("tensor_type"):
        tt = v.type.tensor_type
        elem = tt.elem_type
        if tt.HasField("shape"):
            shape = [d.dim_value if d.HasField("dim_value") else d.dim_param if d.HasField("dim_param") else None
                     for d in tt.shape.dim]
    return {"name": v.name, "elem_type": elem, "shape": shape}


def _opsets(opsets) -> list:
    return [[o.domain, o.version] for o in opsets]


def summary_from_onnx(path: Path) -> dict:
    base = path.parent
    m = onnx.load(str(path), load_external_data=False)  # keep data_location; bytes are read per tensor
    g = m.graph
    return {
        "ir_version": m.ir_version, "producer_name": m.producer_name, "producer_version": m.producer_version,
        "opset_import": _opsets(m.opset_import),
        "graph": {"name": g.name, "nodes": [_node(n, base) for n in g.node],
                  "initializers": [_tensor(t, base) for t in g.initializer],
                  "inputs": [_value_info(v) for v in g.input], "outputs": [_value_info(v) for v in g.output]},
        "functions": [{"domain": f.domain, "name": f.name, "inputs": list(f.input), "outputs": list(f.output),
                       "attributes": list(f.attribute),
                       "attribute_defaults": [_attribute(a, base) for a in f.attribute_proto],
                       "opset_import": _opsets(f.opset_import), "nodes": [_node(n, base) for n in f.node]}
                      for f in m.functions],
    }


def _normalize(obj):
    """JSON floats from the tool ("%.9g") and from onnx (float32 widened) compared as float32."""
    if isinstance(obj, float):
        return _float(obj)
    if isinstance(obj, list):
        return [_normalize(x) for x in obj]
    if isinstance(obj, dict):
        return {k: _normalize(v) for k, v in obj.items()}
    return obj


def summary_from_tool(path: Path) -> dict:
    r = _dump(path)
    assert r.returncode == 0, f"ondevice_onnx_dump failed ({r.returncode}): {r.stderr}"
    return json.loads(r.stdout)


# ---------------------------------------------------------------- models

def _make_model() -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 8)).astype(np.float32)          # 512 bytes: external when saved so
    planes = rng.integers(0, 256, size=(300,), dtype=np.uint8)    # odd size: later offsets are unaligned
    alpha = rng.standard_normal((33,)).astype(np.float32)
    inits = [
        numpy_helper.from_array(w, "w"),
        numpy_helper.from_array(planes, "planes"),
        numpy_helper.from_array(alpha, "alpha"),
        numpy_helper.from_array(np.array([1, -2, 3], np.int8), "small_i8"),             # raw, stays inline
        helper.make_tensor("typed_f", TensorProto.FLOAT, [3], [0.5, -1.25, 3.0]),          # float_data
        helper.make_tensor("typed_h", TensorProto.FLOAT16, [2], np.array([1.0, -2.5], np.float16)),  # int32_data
        helper.make_tensor("typed_i64", TensorProto.INT64, [2, 1], [7, -9]),               # int64_data
        helper.make_tensor("typed_d", TensorProto.DOUBLE, [], [2.5]),                      # double_data, scalar
        helper.make_tensor("typed_b", TensorProto.BOOL, [3], [True, False, True]),         # int32_data
        helper.make_tensor("empty", TensorProto.FLOAT, [0, 4], []),
    ]
    big_const = numpy_helper.from_array(np.arange(32, dtype=np.int64), "")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="n0_MatMul"),
        helper.make_node("Constant", [], ["c"], name="n1_Constant", value=big_const),
        helper.make_node("Constant", [], ["c2"], name="n2_Constant", value_floats=[0.1, 2.0, -3.5]),
        helper.make_node("Transpose", ["h"], ["ht"], name="n3_Transpose", perm=[1, 0]),
        helper.make_node("BitPlaneMatMul", ["h", "planes", "alpha", "", "", ""], ["y"], name="n4_BitPlaneMatMul",
                         domain="ondevice", N=33, scale=0.1, mode="lut", names=["a", "bc"], dims=[1, -2, 3],
                         weights=[0.5, 0.25]),
    ]
    # A function body whose Constant takes the caller's attribute N (ref_attr_name).
    ref = AttributeProto()
    ref.name, ref.ref_attr_name, ref.type = "value_int", "N", AttributeProto.INT
    const = helper.make_node("Constant", [], ["n"])
    const.attribute.append(ref)
    fn = helper.make_function(
        "ondevice", "BitPlaneMatMul", ["X", "planes", "alpha", "row_bits", "offset", "bias"], ["Y"],
        [const, helper.make_node("Identity", ["X"], ["Y"])], [helper.make_opsetid("", 18)], attributes=["N"],
        attribute_protos=[helper.make_attribute("K", 8)])
    graph = helper.make_graph(
        nodes, "main",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16]),
         helper.make_tensor_value_info("unknown_rank", TensorProto.INT64, None)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 33]),
         helper.make_tensor_value_info("ht", TensorProto.FLOAT, [8, None])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("ondevice", 1)],
                             functions=[fn], ir_version=10, producer_name="ondevice-test", producer_version="1.2")


def _save(tmp_path: Path, external: bool) -> Path:
    path = tmp_path / "model.onnx"
    model = _make_model()
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="weights.bin", size_threshold=64, convert_attribute=True)
    else:
        onnx.save_model(model, str(path))
    return path


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("external", [False, True], ids=["inline", "external"])
def test_reader_sees_what_onnx_sees(tmp_path, external):
    path = _save(tmp_path, external)
    got = _normalize(summary_from_tool(path))
    want = _normalize(summary_from_onnx(path))
    assert got == want
    sources = {t["name"]: t["source"] for t in got["graph"]["initializers"]}
    assert sources["typed_f"] == "typed" and sources["small_i8"] == "raw"
    if external:
        assert (tmp_path / "weights.bin").is_file()
        assert sources["w"] == sources["planes"] == sources["alpha"] == "external"
        assert got["graph"]["nodes"][1]["attributes"][0]["value"]["source"] == "external"  # convert_attribute
    assert got["graph"]["inputs"][0]["shape"] == ["batch", 16]
    assert got["graph"]["inputs"][1]["shape"] is None
    assert got["graph"]["outputs"][1]["shape"] == [8, None]
    assert got["functions"][0]["nodes"][0]["attributes"][0]["ref_attr_name"] == "N"


def test_corrupt_and_escaping_files_are_rejected_cleanly(tmp_path):
    path = _save(tmp_path, external=True)
    good = path.read_bytes()
    bad = tmp_path / "bad.onnx"
    for n in range(0, len(good), max(1, len(good) // 97)):
        bad.write_bytes(good[:n])
        r = _dump(bad)
        assert r.returncode in (0, 1), f"prefix of {n} bytes: exit {r.returncode}: {r.stderr}"
        if r.returncode == 1:
            assert r.stderr.startswith("error: ")

    # External data whose location escapes the model directory, or lies past the end of its file.
    model = onnx.load(str(path), load_external_data=False)
    assert next(t for t in model.graph.initializer if t.name == "w").data_location == TensorProto.EXTERNAL
    for key, value, message in (("location", "../weights.bin", "leaves the model directory"),
                                ("location", str(tmp_path / "weights.bin"), "absolute path"),
                                ("offset", str((tmp_path / "weights.bin").stat().st_size), "beyond the end")):
        m = onnx.ModelProto()
        m.CopyFrom(model)
        entry = next(e for e in next(x for x in m.graph.initializer if x.name == "w").external_data if e.key == key)
        entry.value = value
        bad.write_bytes(m.SerializeToString())
        r = _dump(bad)
        assert r.returncode == 1 and message in r.stderr, r.stderr
