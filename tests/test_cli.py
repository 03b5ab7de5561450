"""The `ondevice` command: help, version, `quantize matrix`, `bench kernels` (tiny run)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
    for setting, message in (("vq_steps=five", "--set vq_steps: expected an integer (default 2000), got 'five'"),
                             ("vq_steps=2.5", "expected an integer"), ("finetune_lr=fast", "expected a number"),
                             ("warp=true", "expected a number")):
        r = run("train", "slu", "--corpus", str(tmp_path), "--out", str(tmp_path / "run"), "--set", setting)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, (setting, r.stderr)


def test_outputs_and_thread_counts_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    """Every verb's output (file or directory) and --threads are checked before its work: a report
    used to be lost after the decoding to "no such directory" or "file exists", and a thread count
    of 99999 crashed PyTorch's thread pool (a segfault, exit 139)."""
    from ondevice import cli

    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    work_done = []
    for name in list(cli._OUTPUT_FILES) + list(cli._OUTPUT_DIRS) + ["_cmd_eval_card", "_cmd_eval_slu"]:
        def no_work(args, name=name):
            work_done.append(name)
            return 0

        no_work.__name__ = name  # the verb's checks are found by its function's name
        monkeypatch.setattr(cli, name, no_work)
    cli_runs = [
        (["eval", "nmt", "--model", str(tmp_path), "--data", str(tmp_path), "--output",
          str(tmp_path / "missing" / "hyp.txt")],
         "its directory .*missing does not exist"),
        (["quantize", "sensitivity", "--model", str(tmp_path), "--data", str(tmp_path), "--output", str(tmp_path)],
         "is a directory"),
        (["quantize", "matrix", str(tmp_path / "w.npy"), "--bits", "2", "-o", str(afile / "w.bcq")],
         "afile is not a directory"),
        (["bench", "kernels", "--out", str(afile)], "afile is a file; give a directory"),
        (["bench", "understand", "--out", str(afile / "sub")], "afile is a file, not a directory"),
        (["data", "slu", "--out", str(afile)], "afile is a file; give a directory"),
        (["train", "slu", "--out", str(afile)], "afile is a file; give a directory"),
        (["export", "slu", "--run", str(tmp_path), "--out", str(afile)], "afile is a file; give a directory"),
        (["eval", "card", str(tmp_path), "--threads", "99999"], r"--threads must be in 0\.\.1024, got 99999"),
        (["eval", "slu", "--threads", "-3"], r"--threads must be in 0\.\.1024, got -3"),
        (["bench", "kernels", "--threads", "1,99999"], r"got 99999"),
    ]
    import re

    for argv, message in cli_runs:
        capsys.readouterr()
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err
        assert re.search(message, err) and "Traceback" not in err, (argv, err)
    assert work_done == []


def test_training_thread_settings_are_bounded(tmp_path):
    from ondevice.errors import ConfigError
    from ondevice.nmt.config import config_from_dict

    try:
        config_from_dict({"data_dir": str(tmp_path), "save_dir": str(tmp_path / "r"), "threads": 99999})
    except ConfigError as e:
        assert "threads must be <= 1024" in str(e)
    else:
        raise AssertionError("threads=99999 was accepted")
    r = run("train", "slu", "--corpus", str(tmp_path / "none"), "--out", str(tmp_path / "r"), "--set",
            "threads=99999")
    assert r.returncode == 1 and "threads must be an integer in 0..1024" in r.stderr and "Traceback" not in r.stderr


def test_bad_counts_and_config_paths_are_clear_errors(tmp_path, capsys):
    """Found by the session-18 audit: each of these was a traceback (numpy, IndexError, IsADirectoryError)."""
    from ondevice import cli

    for argv, message in (
            (["eval", "slu", "--corpus", str(tmp_path), "--limit", "0"], "limit must be a positive number"),
            (["eval", "slu", "--corpus", str(tmp_path), "--limit", "-1"], "limit must be a positive number"),
            (["bench", "understand", "--corpus", str(tmp_path), "--runs", "0"], "--runs must be >= 1, got 0"),
            (["bench", "understand", "--corpus", str(tmp_path), "--torch-run", str(tmp_path / "nope")],
             "no training run there"),
            (["train", "nmt", "--config", str(tmp_path)], "is a directory, not a JSON file"),
            (["bench", "kernels", "--batch", "1,0"], "--batch must be >= 1"),
            (["bench", "dense", "--rows", "0"], "--rows must be >= 1"),
            (["eval", "card", str(Path(__file__).resolve().parents[1] / "models" / "slu-intent-bcq")],
             "is a speech model's card: `eval card` checks translation")):
        capsys.readouterr()
        assert cli.main(argv) == 1, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (argv, err)


def test_every_verb_with_an_output_is_in_the_output_tables():
    """A verb added later with --out/--output must be listed in cli._OUTPUT_FILES or _OUTPUT_DIRS
    (or be one that checks its own output), or its output would not be checked before its work."""
    import argparse

    from ondevice import cli

    own_checks = {"_cmd_quantize_nmt"}  # its --out is a file name inside --model, checked by post_training_quantize

    def leaves(parser):
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            yield parser
        for a in subs:
            for p in a.choices.values():
                yield from leaves(p)

    seen = 0
    for p in leaves(cli.build_parser()):
        func = p.get_default("func")
        outputs = {a.dest for a in p._actions} & {"out", "output"}
        if func is None or not outputs:
            continue
        seen += 1
        name = func.__name__
        assert name in cli._OUTPUT_FILES or name in cli._OUTPUT_DIRS or name in own_checks, name
    assert seen >= 15
