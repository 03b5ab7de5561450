"""The whole NMT pipeline through the command line, on the small generated corpus:
`ondevice data prepare` -> `ondevice train nmt` -> (interrupt, resume) -> `ondevice eval nmt`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).parent))
from fixtures import data_builders as fx  # noqa: E402


def ondevice(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "ondevice", *args], capture_output=True, text=True, cwd=cwd,
                       timeout=600)
    return r


def test_prepare_train_resume_eval(tmp_path):
    db, locale = fx.make_fixture(tmp_path / "corpus")
    r = ondevice("data", "prepare", "--src", "en", "--tgt", "de", "--out", "data", "--bible-db", str(db),
                 "--locale-dir", str(locale), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "stats.json").exists()
    cfg = {"data_dir": "data", "save_dir": "run", "vocab_size": 100, "max_tokens": 128, "warmup_updates": 5,
           "validate_every": 5, "threads": 1,
           "model": {"d_model": 16, "ffn_dim": 32, "heads": 2, "encoder_layers": 1, "decoder_layers": 1}}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    r = ondevice("train", "nmt", "--config", "cfg.json", "--set", "max_updates=6", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["updates"] == 6
    r = ondevice("train", "nmt", "--config", "cfg.json", "--set", "max_updates=10", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resumed from" in r.stdout + r.stderr and json.loads(r.stdout[r.stdout.index("{"):])["updates"] == 10
    r = ondevice("eval", "nmt", "--model", "run", "--data", "data", "--split", "test_bible", "--beam", "2",
                 "--output", "hyp.de", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout)
    assert result["split"] == "test_bible" and "bleu" in result and result["bleu_signature"].startswith("nrefs:1")
    assert len((tmp_path / "hyp.de").read_text(encoding="utf-8").splitlines()) == result["sentences"]
    r = ondevice("train", "average", "--run", "run", "--last", "2", "--out", "run/avg16.pt", "--dtype", "float16",
                 cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    kept = sorted((tmp_path / "run").glob("checkpoint_u*.pt"), key=lambda p: int(p.stem[len("checkpoint_u"):]))
    assert [Path(p).name for p in json.loads(r.stdout)["averaged"]] == [p.name for p in kept[-2:]]
    assert kept[-1].name == "checkpoint_u10.pt"
    r = ondevice("eval", "nmt", "--model", "run", "--data", "data", "--checkpoint", "avg16.pt", "--beam", "1",
                 "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    r = ondevice("train", "average", "--run", "run", "--last", "9", "--out", "run/x.pt", cwd=tmp_path)
    assert r.returncode == 1 and "fewer than the 9" in r.stderr and "Traceback" not in r.stderr


def test_cli_errors_are_clear(tmp_path):
    r = ondevice("data", "prepare", "--out", "d", "--bible-db", str(tmp_path / "missing.db"), cwd=tmp_path)
    assert r.returncode == 1 and "error" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "cfg.json").write_text(json.dumps({"data_dir": "d", "save_dir": "s", "lr_typo": 1}))
    r = ondevice("train", "nmt", "--config", "cfg.json", cwd=tmp_path)
    assert r.returncode == 1 and "unknown key" in r.stderr and "Traceback" not in r.stderr
    r = ondevice("eval", "nmt", "--model", "nowhere", "--data", "d", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
