"""`ondevice bench translate` (ondevice/bench/translate.py, engines.py, ct2_convert.py): fast checks.

The report writer and the ratio/target arithmetic on synthetic rows; the worker process's memory
figures, timeout and failure handling with the model-free ``echo`` engine; target-token counting with
the shared tokenizer; and a tiny end-to-end run (2 sentences of the CI subset, beam 1, one timed run)
with PyTorch fp32 and, when ctranslate2 is installed, the CTranslate2 conversion, whose float32 form
must translate exactly as PyTorch does.  No data/ directory is needed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ondevice.bench import engines as eng
from ondevice.bench import translate as bt

MODELS = Path(__file__).resolve().parent.parent / "models"
FP32 = MODELS / "nmt-en-de"
QUANT = MODELS / "nmt-en-de-bcq"
CI_SRC, CI_REF = FP32 / "eval" / "ci_bible.en", FP32 / "eval" / "ci_bible.de"
needs_proc = pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux /proc")


# --------------------------------------------------------------------------- synthetic report


def _row(engine, tok_s, rss, threads=1, batch=1, beam=1, outputs=("a", "b"), bleu=20.0):
    return {"engine": engine, "threads": threads, "batch": batch, "beam": beam, "status": "ok",
            "timed_runs": 3, "warmup_only": False, "deterministic": True, "tokens_per_s": tok_s,
            "latency_ms": 10.0, "peak_rss_mib": rss, "rss_start_mib": 15.0, "load_seconds": 0.5, "bleu": bleu,
            "chrf": 40.0, "_outputs": list(outputs)}


def _report(rows, engines=None):
    machine = {"date": "2026-01-01 00:00 UTC", "cpu": "Test CPU", "cores": 2, "usable_cores": 2,
               "isa": ["avx2"], "platform": "linux", "python": "3.11", "versions": {"torch": "2"},
               "loadavg": ["0.1", "0.1", "0.1"]}
    protocol = {"src": "s.en", "ref": "s.de", "sentences": 2, "spm": "spm.model", "runs": 3, "threads": [1],
                "batches": [1], "beams": [1], "max_seconds": 60, "load_timeout": 60, "ct2_method": "spec"}
    return {"machine": machine, "protocol": protocol, "results": rows, "targets": [],
            "engines": engines or {r["engine"]: {"status": "ok", "description": r["engine"], "model_bytes": 10 ** 6}
                                   for r in rows}}


def test_comparisons_ratios_agreement_and_targets():
    rows = [_row("torch-fp32", 100.0, 300.0), _row("ct2-int8", 400.0, 90.0, outputs=("a", "c"), bleu=19.5),
            _row("ort-fp32", 200.0, 150.0), _row("torch-quant", 100.0, 280.0, outputs=("x", "y"), bleu=18.0),
            _row("native", 1000.0, 25.0, outputs=("x", "y"), bleu=18.0)]
    bt.add_comparisons(rows)
    by = {r["engine"]: r for r in rows}
    # each engine is compared with PyTorch on the model it runs: fp32 engines with torch-fp32 ...
    assert by["ct2-int8"]["same_as_torch_pct"] == 50.0 and by["ct2-int8"]["torch_reference"] == "torch-fp32"
    assert by["ct2-int8"]["bleu_minus_torch"] == -0.5
    assert by["torch-fp32"]["same_as_torch_pct"] == 100.0
    # ... quantized ones (native) with torch-quant
    assert by["native"]["same_as_torch_pct"] == 100.0 and by["native"]["torch_reference"] == "torch-quant"
    assert by["native"]["speed_vs_ct2-int8"] == pytest.approx(2.5)
    assert by["native"]["rss_vs_ct2-int8"] == pytest.approx(25 / 90)
    assert by["native"]["speed_vs_ort-fp32"] == pytest.approx(5.0)
    tg = bt.targets(rows)
    assert [t["met"] for t in tg] == [True, True, True, True]  # speed, RSS, speed, BLEU
    by["native"]["tokens_per_s"] = 500.0  # 1.25x CT2, 2.5x ORT: both speed targets missed
    by["native"]["bleu"] = 17.5
    bt.add_comparisons(rows)
    assert [t["met"] for t in bt.targets(rows)] == [False, True, False, False]
    report = _report(rows)
    report["targets"] = bt.targets(rows)
    text = bt.to_markdown(report)
    assert "| 1 | 1 | 1 | >= 2x CTranslate2 int8 tokens/s | 1.25x | **no** |" in text
    assert "-0.50 BLEU | **no** |" in text


def test_write_report_markdown_and_json(tmp_path):
    rows = [_row("torch-fp32", 100.0, 300.0), _row("ct2-int8", 400.0, 90.0),
            {"engine": "ort-fp32", "threads": 1, "batch": 1, "beam": 1, "status": "timeout", "reason": "killed"}]
    bt.add_comparisons(rows)
    engines = {"torch-fp32": {"status": "ok", "description": "PyTorch", "model_bytes": 20_000_000},
               "ct2-int8": {"status": "ok", "description": "CT2", "model_bytes": 11_000_000},
               "ort-fp32": {"status": "ok", "description": "ORT", "model_bytes": 40_000_000},
               "native": {"status": "unavailable", "description": "C++", "reason": "not built"}}
    js, md = bt.write_report(_report(rows, engines), tmp_path, "t")
    data = json.loads(js.read_text())
    assert all(not k.startswith("_") for r in data["results"] for k in r)  # outputs are not in the JSON
    text = md.read_text()
    assert "Test CPU" in text and "| torch-fp32 | 1 | 1 | 1 | 100 |" in text
    assert "| ct2-int8 | 1 | 1 | 1 | 400 |" in text and "timeout: killed" in text
    assert "**unavailable**: not built" in text and "Not measured: not built" in text
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporaries left


def test_machine_info_describes_cpu_and_versions():
    m = bt.machine_info()
    assert m["cpu"] and m["cores"] >= 1 and "date" in m
    assert set(m["versions"]) >= {"torch", "onnxruntime", "ctranslate2"}


# --------------------------------------------------------------------------- inputs


def test_token_counter_uses_the_shared_tokenizer():
    pytest.importorskip("sentencepiece")
    c = bt.TokenCounter(FP32 / "spm.model")
    n = len(c.tok.sp.Encode("Das Haus ist klein."))
    assert n > 0 and c.count(["Das Haus ist klein."]) == n
    assert c.count(["Das Haus ist klein.", ""]) == n and c.count([]) == 0


def test_load_texts_limits_and_checks_alignment(tmp_path):
    src, refs = bt.load_texts(CI_SRC, CI_REF, 3)
    assert len(src) == len(refs) == 3
    short = tmp_path / "short.de"
    short.write_text("eins\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lines"):
        bt.load_texts(CI_SRC, short, 3)


def test_unknown_engine_is_a_clear_error():
    assert eng.resolve_names(["torch", "ct2", "torch-fp32"]) == ["torch-fp32", "ct2-int8"]
    with pytest.raises(ValueError, match="unknown engine"):
        eng.resolve_names(["tensorflow"])


# --------------------------------------------------------------------------- the worker process


def _echo_job(**params):
    return {"engine": "echo", "params": {"model_files": [], **params}, "threads": 1, "batch": 2, "beam": 1,
            "runs": 2, "max_seconds": 30, "sentences": ["a b", "c", "d e f"], "tag": "echo"}


@needs_proc
def test_worker_measures_its_own_peak_rss(tmp_path):
    res = bt.run_worker(_echo_job(alloc_mib=64), timeout=60, tmp_dir=tmp_path)
    assert res["status"] == "ok", res
    grown_mib = (res["peak_rss_kib"] - res["rss_start_kib"]) / 1024
    assert 60 <= grown_mib < 200  # the 64 MiB the engine touched, and not the harness's memory
    assert res["wait4_maxrss_kib"] >= res["peak_rss_kib"] - 1024  # the kernel agrees
    assert res["warmup"]["outputs"] == ["a b", "c", "d e f"] and len(res["runs"]) == 2
    assert all(r["outputs"] is None for r in res["runs"])  # same outputs as the warm-up
    assert len(res["warmup"]["latencies"]) == 2  # batches of 2: [a b, c], [d e f]


def test_worker_failure_and_timeout_are_reported(tmp_path):
    res = bt.run_worker(_echo_job(fail=True), timeout=60, tmp_dir=tmp_path)
    assert res["status"] == "error" and "asked to fail" in res["reason"]
    res = bt.run_worker(_echo_job(sleep_s=60), timeout=2, tmp_dir=tmp_path)
    assert res["status"] == "timeout" and res["wall_seconds"] < 30


def test_engine_too_slow_for_the_budget_gives_a_flagged_partial_pass(tmp_path):
    pytest.importorskip("sentencepiece")
    job = dict(_echo_job(sleep_per_batch_s=0.3), batch=1, max_seconds=0.5, sentences=[f"s{i}" for i in range(8)])
    res = bt.run_worker(job, timeout=60, tmp_dir=tmp_path)
    assert res["status"] == "ok" and 1 <= res["partial"] < 8 and res["runs"] == []
    row = bt.summarise(bt.Cell("echo", 1, 1, 1), res, bt.TokenCounter(FP32 / "spm.model"), None)
    assert row["partial"] and row["sentences_done"] == res["partial"] and row["tokens_per_s"] > 0
    assert "partial warm-up" in bt.to_markdown(_report([row]))


def test_summarise_counts_tokens_per_run():
    pytest.importorskip("sacrebleu")
    c = bt.TokenCounter(FP32 / "spm.model")
    outs = ["Das Haus ist klein.", "Ja."]
    res = {"status": "ok", "warmup": {"seconds": 2.0, "latencies": [1.0, 1.0], "outputs": outs},
           "runs": [{"seconds": 1.0, "latencies": [0.4, 0.6], "outputs": None},
                    {"seconds": 2.0, "latencies": [0.9, 1.1], "outputs": None},
                    {"seconds": 4.0, "latencies": [2.0, 2.0], "outputs": None}],
           "load_seconds": 0.1, "rss_start_kib": 10240, "rss_loaded_kib": 20480, "peak_rss_kib": 40960}
    row = bt.summarise(bt.Cell("echo", 1, 1, 1), res, c, outs)
    assert row["tokens_per_s"] == pytest.approx(c.count(outs) / 2.0)  # median run: 2 s
    assert row["latency_ms"] == pytest.approx(1000.0)  # medians 0.5, 1.0, 2.0 s -> 1.0 s
    assert row["peak_rss_mib"] == 40.0 and row["bleu"] == 100.0 and row["timed_runs"] == 3


# --------------------------------------------------------------------------- end to end


def test_tiny_end_to_end_run(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sacrebleu")
    have_ct2 = True
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        have_ct2 = False
    names = ["torch-fp32", "native"] + (["ct2-fp32", "ct2-int8"] if have_ct2 else [])
    opts = bt.BenchOptions(engines=names, threads=[1], batches=[1], beams=[1], runs=1, limit=2, src=str(CI_SRC),
                           ref=str(CI_REF), fp32_model=str(FP32), quant_model=str(QUANT),
                           work_dir=str(tmp_path / "work"), max_seconds=120, load_timeout=120)
    lines = []
    report = bt.run_benchmark(opts, out_dir=tmp_path / "out", log=lines.append)
    data = json.loads((tmp_path / "out" / "translate.json").read_text())
    assert (tmp_path / "out" / "translate.md").is_file() and any("[1/" in x for x in lines)
    rows = {r["engine"]: r for r in data["results"]}
    torch_row = rows["torch-fp32"]
    assert torch_row["status"] == "ok", torch_row
    assert torch_row["tokens_per_s"] > 0 and torch_row["latency_ms"] > 0 and torch_row["target_tokens"] > 0
    assert torch_row["run_seconds"][0] > 0 and torch_row["timed_runs"] == 1
    assert torch_row["peak_rss_mib"] > torch_row["rss_start_mib"] > 0
    assert data["engines"]["torch-fp32"]["model_bytes"] > 10_000_000
    assert torch_row["same_as_torch_pct"] == 100.0 and torch_row["bleu"] > 0
    from ondevice.translator import BACKENDS

    if "native" not in BACKENDS:
        assert data["engines"]["native"]["status"] == "unavailable" and "native" not in rows
    if have_ct2:
        # the float32 conversion is the same network: identical outputs; int8 runs and scores
        assert rows["ct2-fp32"]["same_as_torch_pct"] == 100.0, rows["ct2-fp32"]
        assert rows["ct2-int8"]["status"] == "ok" and rows["ct2-int8"]["tokens_per_s"] > 0
        assert rows["torch-fp32"]["speed_vs_ct2-int8"] > 0
        from ondevice.bench import ct2_convert

        _, reused = ct2_convert.cached_convert(FP32, tmp_path / "work" / "ct2-int8-spec")
        assert reused  # the conversion is cached
    assert report["results"][0]["_outputs"]  # kept in memory for the agreement column


def test_cli_registers_bench_translate():
    from ondevice.cli import build_parser

    args = build_parser().parse_args(["bench", "translate", "--engines", "torch,ct2", "--threads", "1",
                                      "--batch", "1,16", "--beam", "4", "--limit", "20"])
    assert args.func.__name__ == "_cmd_bench_translate"
    assert args.engines == ["torch", "ct2"] and args.batch == [1, 16] and args.beam == [4]


def test_ct2_fairseq_route_matches_spec_route(tmp_path):
    """CTranslate2's own FairseqConverter (on our fairseq export) and the spec route agree."""
    pytest.importorskip("ctranslate2")
    pytest.importorskip("fairseq")
    from ondevice.bench import ct2_convert

    a = ct2_convert.convert(FP32, tmp_path / "spec", quantization="float32", method="spec")
    b = ct2_convert.convert(FP32, tmp_path / "fairseq", quantization="float32", method="fairseq")
    import ctranslate2

    from ondevice.nmt.tokenizer import Tokenizer

    tok = Tokenizer(FP32 / "spm.model")
    src = tok.sp.Encode(bt.load_texts(CI_SRC, None, 3)[0], out_type=str)
    outs = [[r.hypotheses[0] for r in ctranslate2.Translator(str(d), intra_threads=1).translate_batch(
        src, beam_size=1, max_decoding_length=64)] for d in (a, b)]
    assert outs[0] == outs[1]
    assert os.path.getsize(a / "model.bin") == os.path.getsize(b / "model.bin")
