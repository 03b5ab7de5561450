"""The quantization results table/plot command on the shared tiny trained model."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from ondevice.errors import ConfigError  # noqa: E402
from ondevice.quant.results import load_spec, run  # noqa: E402


def _spec(tmp_path, run_dir, data_dir, experiments, **kw):
    spec = {"model_dir": str(run_dir), "data_dir": str(data_dir), "splits": ["test_bible"], "beam": 1,
            "experiments": experiments, **kw}
    p = tmp_path / "spec.json"
    p.write_text(json.dumps(spec))
    return p


def test_table_plot_and_rerun(tiny_trained_run, tmp_path):
    from ondevice.quant.packed_model import pack_checkpoint

    run_dir, data = tiny_trained_run
    pack_checkpoint(run_dir, "uniform_3bit", tmp_path / "packed3", src="en", tgt="de")
    exps = [{"name": "fp32"}, {"name": "u4", "plan": "uniform_4bit"}, {"name": "u1", "plan": {"embedding": 1, "encoder_self_attn": 1, "encoder_ffn": 1, "decoder_self_attn": 1,
                                      "decoder_encoder_attn": 1, "decoder_ffn": 1}},
            {"name": "packed 3-bit", "method": "PTQ", "packed": "packed3"}]
    spec = _spec(tmp_path, run_dir, data, exps)
    logs: list[str] = []
    rows = run(spec, tmp_path / "out", log=logs.append, progress=False)
    by = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows] == ["fp32", "u4", "u1", "packed 3-bit"]
    assert by["fp32"]["method"] == "fp32" and by["u4"]["method"] == "PTQ"
    assert by["u4"]["average_bits"] == 4 and by["u1"]["average_bits"] == 1
    assert by["u1"]["compression"] > by["u4"]["compression"] > 1
    fp32, u4, u1 = (by[n]["scores"]["test_bible"]["bleu"] for n in ("fp32", "u4", "u1"))
    assert u4 > fp32 - 8 and u1 < u4 - 10  # 4-bit PTQ is nearly lossless, 1-bit without retraining is not
    assert by["packed 3-bit"]["average_bits"] == 3
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| u1 | PTQ | 1.00 |" in md and "test_bible BLEU" in md
    png = (tmp_path / "out" / "results.png").read_bytes() if (tmp_path / "out" / "results.png").exists() else None
    pytest.importorskip("matplotlib")
    assert png is not None and png[:8] == b"\x89PNG\r\n\x1a\n"

    # A rerun with one more experiment evaluates only the new one.
    exps.append({"name": "u2", "plan": "uniform_2bit"})
    spec = _spec(tmp_path, run_dir, data, exps)
    logs.clear()
    rows2 = run(spec, tmp_path / "out", log=logs.append, progress=False)
    assert [r["name"] for r in rows2][-1] == "u2" and rows2[:4] == rows
    assert all(m.startswith("[results] u2") for m in logs), logs

    # Other settings would make the old rows incomparable: refused, and the earlier results kept.
    before = (tmp_path / "out" / "results.json").read_bytes()
    with pytest.raises(ConfigError, match="holds results made with other settings \\(beam\\)"):
        run(_spec(tmp_path, run_dir, data, exps, beam=2), tmp_path / "out", log=logs.append, progress=False)
    assert (tmp_path / "out" / "results.json").read_bytes() == before


def test_spec_errors(tmp_path):
    ok = [{"name": "fp32"}]
    assert load_spec(_spec(tmp_path, tmp_path, tmp_path, ok))["beam"] == 1
    with pytest.raises(ConfigError, match="unknown key"):
        load_spec(_spec(tmp_path, tmp_path, tmp_path, ok, beam_size=4))
    with pytest.raises(ConfigError, match="used twice"):
        load_spec(_spec(tmp_path, tmp_path, tmp_path, ok + ok))
    with pytest.raises(ConfigError, match="more than one"):
        load_spec(_spec(tmp_path, tmp_path, tmp_path, [{"name": "x", "plan": "uniform_2bit", "packed": "d"}]))
    with pytest.raises(ConfigError, match="non-empty"):
        load_spec(_spec(tmp_path, tmp_path, tmp_path, []))
    for bad, message in (({"beam": "four"}, "beam must be an integer >= 1"), ({"beam": 0}, "beam must be"),
                         ({"limit": -1}, "limit must be null"), ({"splits": "test_bible"}, "splits must be"),
                         ({"src": 3}, "src must be a non-empty string")):
        with pytest.raises(ConfigError, match=message):
            load_spec(_spec(tmp_path, tmp_path, tmp_path, ok, **bad))
