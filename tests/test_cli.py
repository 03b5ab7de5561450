"""The `ondevice` command: help, version, `quantize matrix`, `bench kernels` (tiny run)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

import ondevice


def run(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ondevice", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_version_and_help(tmp_path):
    r = run("--version", cwd=tmp_path)
    assert r.returncode == 0 and ondevice.__version__ in r.stdout
    r = run("--help", cwd=tmp_path)
    assert r.returncode == 0 and "quantize" in r.stdout and "bench" in r.stdout
    r = run("bench", "kernels", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "MatMulNBits" in r.stdout


def test_quantize_matrix_round_trip(tmp_path):
    w = np.random.default_rng(0).standard_normal((48, 96)).astype(np.float32)
    np.save(tmp_path / "w.npy", w)
    r = run("quantize", "matrix", "w.npy", "-o", "w.bcq", "--bits", "3", "--group-size", "32", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "relative error" in r.stdout
    m = ondevice.load_bcq(tmp_path / "w.bcq")
    assert m.shape == (48, 96) and m.bits == 3 and m.group_size == 32
    assert np.linalg.norm(m.dequantize() - w) / np.linalg.norm(w) < 0.3


def test_quantize_matrix_bad_input_is_a_clear_error(tmp_path):
    (tmp_path / "bad.npy").write_text("not numpy")
    r = run("quantize", "matrix", "bad.npy", "-o", "x.bcq", cwd=tmp_path)
    assert r.returncode == 1 and "error" in r.stderr and "Traceback" not in r.stderr
    np.save(tmp_path / "v.npy", np.ones(5, np.float32))
    r = run("quantize", "matrix", "v.npy", "-o", "x.bcq", cwd=tmp_path)
    assert r.returncode == 1 and "2-D" in r.stderr
    assert not (tmp_path / "x.bcq").exists()


def test_bench_kernels_tiny_run_writes_reports(tmp_path):
    r = run("bench", "kernels", "--shapes", "64x96", "--bits", "2", "--batch", "1", "--threads", "1",
            "--min-time", "0.01", "--out", str(tmp_path), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "kernels.json").read_text())
    (case,) = report["cases"]
    assert set(case["times_us"]) >= {"numpy_fp32", "ort_fp32", "ort_nbits4", "ort_nbits2", "bcq_q2"}
    assert all(t > 0 for t in case["times_us"].values())
    assert report["machine"]["cpu"] and report["bandwidth_gbps"]["1"] > 0
    assert "Speed-up" in (tmp_path / "kernels.md").read_text()


def test_train_slu_unknown_setting_lists_the_settings(tmp_path):
    r = run("train", "slu", "--corpus", str(tmp_path), "--out", str(tmp_path / "run"), "--set", "finetune_epoch=3")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "unknown setting 'finetune_epoch'" in r.stderr and "finetune_epochs" in r.stderr
    assert "reverb_copies" in r.stderr and not (tmp_path / "run").exists()
