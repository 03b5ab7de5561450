"""Does onnxruntime keep an exported model packed? Measures export/README.md section 5's table.

    python scripts/onnx_session_memory.py EXPORT_DIR [--plain] [--arena]

Creates the encoder and decoder-step sessions with ORT_ENABLE_ALL, saves the optimized models and sums
their float32 initializers (a folded bit-plane matrix shows up there as a float matrix), then runs the
encoder on 8 x 20 tokens and 5 decoder steps and reports the growth of the process's resident memory
over a warmed-up onnxruntime. ``--plain`` first rewrites the graphs so the packed weights are plain
initializers (not graph inputs), which is what onnxruntime folds; ``--arena`` keeps the CPU arena on.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

GRAPHS = ("encoder.onnx", "decoder_step.onnx")


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1024


def _plain_copy(src: Path, dst: Path) -> None:
    """The same export with every initializer removed from the graph inputs."""
    dst.mkdir()
    for name in ("weights.bin", "manifest.json"):
        shutil.copy(src / name, dst / name)
    for name in GRAPHS:
        m = onnx.load(str(src / name), load_external_data=False)
        stored = {t.name for t in m.graph.initializer}
        keep = [i for i in m.graph.input if i.name not in stored]
        del m.graph.input[:]
        m.graph.input.extend(keep)
        onnx.save(m, str(dst / name))


def _warm_up() -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "w",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    ort.InferenceSession(model.SerializeToString()).run(None, {"x": np.ones(1, np.float32)})


def measure(model_dir: Path, work: Path, arena: bool) -> dict:
    _warm_up()
    manifest = json.loads((model_dir / "manifest.json").read_text(encoding="utf-8"))
    start = _rss_mb()
    sessions, report = {}, {}
    for name in GRAPHS:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        opts.intra_op_num_threads = 1
        opts.enable_cpu_mem_arena = arena
        opts.optimized_model_filepath = str(work / f"optimized_{name}")
        opts.add_session_config_entry("session.optimized_model_external_initializers_file_name", f"{name}.data")
        sessions[name] = ort.InferenceSession(str(model_dir / name), opts, providers=["CPUExecutionProvider"])
        optimized = onnx.load(str(work / f"optimized_{name}"), load_external_data=False)
        floats = [t for t in optimized.graph.initializer if t.data_type == TensorProto.FLOAT]
        report[name] = {"float_initializers_mb": round(sum(4 * int(np.prod(t.dims)) for t in floats) / 2**20, 2),
                        "largest": sorted((list(t.dims) for t in floats), key=lambda d: -int(np.prod(d)))[:3]}
    after_sessions = _rss_mb()
    kv = manifest["kv_cache"]
    src = np.random.default_rng(0).integers(4, manifest["vocab_size"], (8, 20)).astype(np.int64)
    enc = sessions["encoder.onnx"]
    out = dict(zip([o.name for o in enc.get_outputs()], enc.run(None, {"src_tokens": src})))
    feed = {n: out[n] for n in ["src_pad_mask", *kv["cross_k"], *kv["cross_v"]]}
    for n in kv["past_self_k"] + kv["past_self_v"]:
        feed[n] = np.zeros((8, kv["heads"], 0, kv["head_dim"]), np.float32)
    dec = sessions["decoder_step.onnx"]
    names = [o.name for o in dec.get_outputs()]
    tokens = np.full((8, 1), manifest["special_ids"]["eos"], np.int64)
    for _ in range(5):
        step = dict(zip(names, dec.run(None, {"tokens": tokens, **feed})))
        for past, present in zip(kv["past_self_k"] + kv["past_self_v"], kv["present_self_k"] + kv["present_self_v"]):
            feed[past] = step[present]
        tokens = step["logits"].argmax(-1).reshape(-1, 1)
    return {"weights_bin_mb": round((model_dir / "weights.bin").stat().st_size / 2**20, 2),
            "rss_after_sessions_mb": round(after_sessions - start, 1),
            "rss_after_run_mb": round(_rss_mb() - start, 1), **report}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model_dir", type=Path)
    p.add_argument("--plain", action="store_true", help="packed weights as plain initializers (folded)")
    p.add_argument("--arena", action="store_true", help="keep onnxruntime's CPU memory arena on")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = args.model_dir
        if args.plain:
            model_dir = Path(tmp) / "plain"
            _plain_copy(args.model_dir, model_dir)
        result = measure(model_dir, Path(tmp), args.arena)
    print(json.dumps({"model_dir": str(args.model_dir), "plain": args.plain, "arena": args.arena, **result}, indent=1))


if __name__ == "__main__":
    main()
