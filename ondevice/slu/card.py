"""`ondevice export slu`: the shipped speech-model directory from a training run, with its card.

Copies the run's ONNX export to ``OUT/onnx`` and measures what the card states, through the deployed
path (``ondevice.Understander``, native runtime): intent accuracy on the whole held-out-voice test
split and on the CI subset (its first ``ci_limit`` utterances, which the corpus generator renders
identically anywhere: the regression test re-renders them), plus the run's fp32/PTQ/QAT and ablation
numbers.  Writes ``card.json`` (read by tests/test_shipped_slu_model.py) and ``README.md``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_text
from ..errors import DataError
from ..staged_dir import replacing_dir

CI_LIMIT = 310  # 10 blocks of the 31 intents: balanced
TOLERANCE = 0.01


def _pct(x: float) -> str:
    return f"{100 * x:.2f}"


def write_slu_model(run_dir: str | os.PathLike, out_dir: str | os.PathLike, corpus: str | os.PathLike,
                    bench: dict[str, Any] | None = None, progress: bool = True,
                    ablation_run: str | os.PathLike | None = None,
                    provenance: str | None = None) -> dict[str, Any]:
    """``ablation_run``: take the ablation table from another run (e.g. equal-budget fine-tunings
    while the shipped variant was trained longer in ``run_dir``).  ``provenance``: Markdown saying how
    the run was actually made when no single ``train slu`` command made it (chained runs, a stage run
    by an experiment script); the card keeps it and the README prints it under "Reproduce"."""
    from ..understander import Understander
    from .evaluate import evaluate_understander

    run, out = Path(run_dir), Path(out_dir)
    for f in ("quantized.json", "ablation.json", "teacher.pt", "onnx/manifest.json"):
        if not (run / f).exists():
            raise DataError(f"{run / f} is missing: run `ondevice train slu` to the end first")
    q = json.loads((run / "quantized.json").read_text())
    ablation = json.loads((Path(ablation_run or run) / "ablation.json").read_text())
    from .train import load_torch

    teacher_acc = load_torch(run / "teacher.pt")["accuracy"]
    # the dereverb stage's record (train.stage_dereverb), when the tokens came from a retrained front end
    dereverb = load_torch(run / "tokenizer.pt").get("dereverb") if (run / "tokenizer.pt").is_file() else None
    ft = json.loads((run / f"ft_{q['variant']}.json").read_text())
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} is a file; give the model directory")
    # Measured on the run's export, before the model directory is touched: a bad corpus or an
    # interrupted evaluation leaves the shipped model as it was.
    und = Understander(run / "onnx", threads=1)
    full = evaluate_understander(und, corpus, "test", progress=progress)
    ci = evaluate_understander(und, corpus, "test", limit=CI_LIMIT, progress=progress)
    single = (evaluate_understander(Understander(run / "onnx", threads=1, speed_ensemble=False), corpus, "test",
                                    progress=progress) if len(und.ensemble_rates) > 1 else full)
    out.mkdir(parents=True, exist_ok=True)
    # onnx/ is swapped in whole, and only over an earlier export (a manifest.json), never over
    # other files; then the card that describes it.
    with replacing_dir(out / "onnx", lambda d: (d / "manifest.json").is_file(), "an ONNX export") as staging:
        shutil.copytree(run / "onnx", staging, dirs_exist_ok=True)
    manifest = json.loads((out / "onnx" / "manifest.json").read_text())
    size = sum((out / "onnx" / f["path"]).stat().st_size for f in manifest["files"]) \
        + (out / "onnx" / "manifest.json").stat().st_size
    card = {
        "name": "slu-intent-bcq", "kind": "slu-intent", "onnx": "onnx",
        "average_bits": round(q["average_bits"], 4), "size_bytes": size, "max_size_bytes": 2_000_000,
        "test": full, "test_single_pass": single, "ensemble_rates": und.ensemble_rates, "regression": {
            "corpus_command": f"ondevice data slu --out DIR --train 0 --valid 0 --test {CI_LIMIT}", "seed": 0,
            "split": "test", "limit": CI_LIMIT, "tolerance": TOLERANCE,
            "intent_accuracy": ci["intent_accuracy"],
            "seen_phrasing_intent_accuracy": ci["seen_phrasing_intent_accuracy"]},
        "training": {"fp32_test": q["fp32"], "ptq_test": q["ptq"], "qat_test": q["qat"],
                     "quantized_front_end_fp32_bert_test": q["quantized_front_end_fp32_bert"],
                     "tokens_unchanged": q["tokens_unchanged"], "plan": q["plan"], "variant": q["variant"],
                     "front_end_retraining": q.get("front_end_retraining"), "dereverb": dereverb,
                     "qat_epochs": len(q["qat_history"]),
                     # what the fine-tuning used (its result file, else the run's setting at quantization)
                     "speed_copies": ft.get("speed_copies", q.get("speed_copies", []))},
        "ablation": {v: r["test"] for v, r in ablation.items()},
        "ablation_epochs": [h["epoch"] for h in next(iter(ablation.values()))["history"]
                            if isinstance(h["epoch"], int)][-1],
        "shipped_epochs": sum(isinstance(h["epoch"], int) for h in ft["history"]),  # not the averages' entries
        "shipped_average": ft.get("finetune_average", 0),
        "shipped_cycles": ft.get("cycles", 1),
        "teacher": teacher_acc,
        "corpus_generator": _corpus_generator(corpus),
        **({"provenance": provenance} if provenance else {}),
    }
    if bench:
        card["latency"] = bench
    atomic_write_text(out / "card.json", json.dumps(card, indent=1) + "\n")
    atomic_write_text(out / "README.md", render_readme(card))
    return card


def _corpus_generator(corpus: str | os.PathLike) -> str | None:
    """The corpus version (config.json's generator): test numbers compare across corpus versions
    only when their test splits are the same."""
    try:
        return json.loads((Path(corpus) / "config.json").read_text(encoding="utf-8")).get("generator")
    except (OSError, ValueError, AttributeError):
        return None


def _epochs(c: dict[str, Any]) -> str:
    """The shipped fine-tuning's length: "40 epochs", or "3 cycles of 40 epochs"."""
    cycles = c.get("shipped_cycles", 1)
    if cycles > 1:
        return f"{cycles} cycles of {c['shipped_epochs'] // cycles} epochs"
    return f"{c['shipped_epochs']} epochs"


def render_readme(c: dict[str, Any]) -> str:
    t, tr, reg = c["test"], c["training"], c["regression"]
    fp = tr["fp32_test"]
    lines = [
        "# slu-intent-bcq: spoken command -> action / object / location (default of `ondevice understand`)", "",
        "A vq-wav2vec-style tokenizer (strided convolutions on the 16 kHz waveform, 20 ms frames, k-means "
        "VQ 2 x 64) and a BERT over its tokens (one embedding per codebook group, two strided convolutions to "
        "80 ms positions, 3 pre-LN layers, d 128), distilled from a text teacher in two stages "
        "(Kim et al. 2021), quantized with mixed-precision BCQ and retrained; one ONNX graph with the "
        "`ondevice` bit-plane ops (`onnx/`, export/README.md section 8). Recipe and choices: docs/slu-model.md. "
        "Data: the FSC-style TTS corpus of `ondevice data slu` (docs/slu-data.md"
        + (f", {c['corpus_generator']}" if c.get("corpus_generator") else "") + "); **test voices are never "
        "heard in training**; a third of the test utterances also use phrasings held out of training.", "",
        "## Accuracy (intent = all three slots right; held-out voices; test split, "
        f"{t['n']} utterances)", "",
        "| model | all | seen phrasings | held-out phrasings |", "|---|---:|---:|---:|",
        f"| text teacher on the transcripts (reference) | {_pct(c['teacher']['test']['intent_accuracy'])} | "
        f"{_pct(c['teacher']['test']['seen_phrasing_intent_accuracy'])} | "
        f"{_pct(c['teacher']['test']['heldout_phrasing_intent_accuracy'])} |",
        f"| fp32 speech model ({tr['variant']}, {_epochs(c)}) | {_pct(fp['intent_accuracy'])} | "
        f"{_pct(fp['seen_phrasing_intent_accuracy'])} | {_pct(fp['heldout_phrasing_intent_accuracy'])} |",
        f"| BCQ, {'the BERT not retrained (front end retrained, below)' if (tr.get('front_end_retraining') or {}).get('steps') else 'no retraining (PTQ)'} | "
        f"{_pct(tr['ptq_test']['intent_accuracy'])} | "
        f"{_pct(tr['ptq_test']['seen_phrasing_intent_accuracy'])} | "
        f"{_pct(tr['ptq_test']['heldout_phrasing_intent_accuracy'])} |",
        f"| BCQ + retraining (training code) | {_pct(tr['qat_test']['intent_accuracy'])} | "
        f"{_pct(tr['qat_test']['seen_phrasing_intent_accuracy'])} | "
        f"{_pct(tr['qat_test']['heldout_phrasing_intent_accuracy'])} |",
    ]
    rates = c.get("ensemble_rates") or [16000]
    one = c.get("test_single_pass", t)
    if len(rates) > 1:
        lines += [
            f"| BCQ + retraining, native runtime from the WAV files, one pass | {_pct(one['intent_accuracy'])} | "
            f"{_pct(one['seen_phrasing_intent_accuracy'])} | {_pct(one['heldout_phrasing_intent_accuracy'])} |",
            f"| **shipped: the same with the speed ensemble ({', '.join(str(r) for r in rates)} Hz)** | "
            f"**{_pct(t['intent_accuracy'])}** | **{_pct(t['seen_phrasing_intent_accuracy'])}** | "
            f"**{_pct(t['heldout_phrasing_intent_accuracy'])}** |"]
    else:
        lines.append(
            f"| **shipped: BCQ + retraining, native runtime from the WAV files** | **{_pct(t['intent_accuracy'])}** | "
            f"**{_pct(t['seen_phrasing_intent_accuracy'])}** | **{_pct(t['heldout_phrasing_intent_accuracy'])}** |")
    fe = tr.get("front_end_retraining") or {}
    lines += [
        "", f"Per slot (shipped): action {_pct(t['action_accuracy'])}, object {_pct(t['object_accuracy'])}, "
        f"location {_pct(t['location_accuracy'])}. Quantizing the front end (4 bits) "
        + (f"and retraining it {fe['steps']} steps towards the fp32 tokens (post-training quantization alone: "
           f"{_pct(fe['valid_tokens_unchanged_before'])} % of the validation tokens unchanged) " if fe.get("steps") else "")
        + f"left {_pct(tr['tokens_unchanged'])} % of the tokens unchanged; with the fp32 BERT on those tokens: "
        f"{_pct(tr['quantized_front_end_fp32_bert_test']['intent_accuracy'])} %.", ""]
    if len(rates) > 1:
        lines += [f"Speed ensemble (the default; `speed_ensemble=False` turns it off): the utterance is also "
                  f"resampled to {', '.join(str(r) for r in rates if r != 16000)} Hz and read as 16 kHz (a speed "
                  "and pitch change of 16000/rate), the graph runs once per rate and the slots' log-probabilities "
                  "are averaged: one graph run per rate. The rates were chosen on the validation split.", ""]
    if tr.get("speed_copies"):
        lines += [f"Speed copies in training: every training utterance was also tokenized after resampling to "
                  f"{', '.join(str(r) for r in tr['speed_copies'])} Hz (read as 16 kHz, the ensemble's change); "
                  "fine-tuning and the BERT's retraining drew one of its versions each time it came up.", ""]
    if t.get("by_voice"):
        lines += ["Per test voice (shipped; each espeak-ng accent pools its 18 timbre variants):", "",
                  "| voice | utterances | all | seen phrasings |", "|---|---:|---:|---:|"]
        for v, r in t["by_voice"].items():
            lines.append(f"| {v} | {r['n']} | {_pct(r['intent_accuracy'])} | "
                         f"{_pct(r.get('seen_phrasing_intent_accuracy', float('nan')))} |")
        lines.append("")
    lines += [
        f"## Ablation of the two-stage KD (fp32, test split, {c['ablation_epochs']} epochs of fine-tuning each)", "",
        "| fine-tuning | all | seen phrasings | held-out phrasings |", "|---|---:|---:|---:|"]
    names = {"none": "no KD", "stage1": "stage 1 only (pre-training KD)",
             "stage2": "stage 2 only (fine-tuning KD)", "both": "both stages"}
    for v, r in c["ablation"].items():
        lines.append(f"| {names.get(v, v)} | {_pct(r['intent_accuracy'])} | "
                     f"{_pct(r['seen_phrasing_intent_accuracy'])} | {_pct(r['heldout_phrasing_intent_accuracy'])} |")
    lines += ["", "## Size", "",
              f"{c['size_bytes']:,} bytes in `onnx/` (graph + weights + manifest; limit {c['max_size_bytes']:,}); "
              f"{c['average_bits']:.2f} bit-planes per quantized weight on average (every matrix quantized, the "
              "convolutions included; biases and LayerNorms float32). Plan: " + json.dumps(tr["plan"]) + ".", ""]
    if "latency" in c:
        lat = c["latency"]
        lines += ["## Latency per utterance (1 thread)", "",
                  f"{lat['utterances']} test utterances, mean {lat['mean_seconds']} s of audio; "
                  f"machine: {lat['machine']['cpu']}. Audio already decoded."
                  + (f" Measured by `{lat['command']}`." if "command" in lat else "")
                  + (f" The native runtime's dense path ran from {lat['dense_min_rows']} activation rows "
                     "(docs/runtime.md)." if lat.get("dense_min_rows") else ""), "",
                  "| engine | median ms | p90 ms | vs native |", "|---|---:|---:|---:|"]
        for r in lat["rows"]:
            lines.append(f"| {r['engine']} | {r['median_ms']} | {r['p90_ms']} | {r['vs_native']}x |")
        lines.append("")
    # the 1e-9: accuracies are counts over n, and 30 of 3,000 is exactly one point, not 1.0000000000000002
    lines += ["## Targets", "",
              f"* >= 99 % intent accuracy on held-out voices after quantization: "
              f"{'met' if t['seen_phrasing_intent_accuracy'] >= 0.99 else 'NOT met'} on the seen phrasings "
              f"({_pct(t['seen_phrasing_intent_accuracy'])} %, FSC's own setting: new speakers, known phrasings); "
              f"{'met' if t['intent_accuracy'] >= 0.99 else 'NOT met'} over all test utterances "
              f"({_pct(t['intent_accuracy'])} %), whose held-out phrasings are bounded by what the text teacher "
              f"itself gets from their transcripts ({_pct(c['teacher']['test']['heldout_phrasing_intent_accuracy'])} %).",
              f"* <= 1 point below fp32 (both one pass): {_pct(fp['intent_accuracy'] - one['intent_accuracy'])} points "
              f"({'met' if fp['intent_accuracy'] - one['intent_accuracy'] <= 0.01 + 1e-9 else 'NOT met'}).",
              f"* <= 2 MB: {c['size_bytes']:,} bytes ({'met' if c['size_bytes'] <= 2_000_000 else 'NOT met'}).", "",
              "## CI regression", "",
              f"tests/test_shipped_slu_model.py renders the first {reg['limit']} test utterances "
              f"(`{reg['corpus_command']}`) and requires intent accuracy >= {_pct(reg['intent_accuracy'])} % "
              f"(measured) - {_pct(reg['tolerance'])} points, with both the native runtime and onnxruntime, and "
              "the size above.", ""]
    return "\n".join(lines + _reproduce(c))


def _reproduce(c: dict[str, Any]) -> list[str]:
    """The README's "Reproduce" section: the single ``train slu`` run nearest to the shipped model, made
    from what the card records (settings that differ from the defaults of :class:`.train.SLUTrainConfig`),
    then the card's ``provenance`` (how the shipped run was actually made, when it is not that one run:
    chained runs, stages from experiments), then the commands that measure this card."""
    from .train import SLUTrainConfig

    tr, defaults = c["training"], SLUTrainConfig()
    cycles = c.get("shipped_cycles", 1)
    dereverb = tr.get("dereverb") or {}
    fe_steps = (tr.get("front_end_retraining") or {}).get("steps")  # None: not recorded (older cards)
    pairs = dereverb.get("requested_pairs", defaults.dereverb_pairs)
    version = (c.get("corpus_generator") or "").rpartition("/")[2]
    stages = ["vq", *(["dereverb"] if dereverb else []), "tokens", "bert", "teacher", "kd1", "finetune", "quantize"]
    sets = [f"--set finetune_epochs={c['shipped_epochs'] // cycles}",
            *([f"--set finetune_cycles={cycles}"] if cycles > 1 else []),
            *([f"--set finetune_average={c['shipped_average']}"] if c.get("shipped_average", 0) else []),
            f"--set 'speed_copies={json.dumps(tr.get('speed_copies', []), separators=(',', ':'))}'",
            *([f"--set dereverb_steps={dereverb['steps']}"] if dereverb else []),
            *([f"--set dereverb_pairs={pairs}"] if dereverb and pairs != defaults.dereverb_pairs else []),
            *([f"--set front_qat_steps={fe_steps}"] if fe_steps not in (None, defaults.front_qat_steps) else []),
            *([f"--set qat_epochs={tr['qat_epochs']}"] if tr["qat_epochs"] != defaults.qat_epochs else [])]
    text = ("The nearest single run: every stage with the defaults"
            + (f" on corpus version {version} (docs/slu-data.md)" if version else "")
            + f" except the fine-tuning, which trains the stage-1 variant alone, {_epochs(c)}, with speed copies "
            f"at {', '.join(str(r) for r in tr.get('speed_copies', []))} Hz"
            + (" (each cycle a warm restart of the schedule from the previous cycle's best validation epoch: "
               "`finetune_cycles`)" if cycles > 1 else "")
            + (f"; the front end retrained to be reverb-invariant before the tokens are made ({dereverb['steps']} "
               "steps of the `dereverb` stage, docs/slu-model.md)" if dereverb else "")
            + "; then quantized (" + (f"front-end retraining {fe_steps} steps, " if fe_steps is not None else "")
            + f"BERT retrained {tr['qat_epochs']} epochs with fake quantization, export with the speed ensemble).")
    # hours on the 2 cores, measured: 1.1 for the default stages, 0.4 a 40-epoch cycle, 0.1 a 1,500-step
    # dereverb stage, 0.09 per 1,000 front-end steps and 0.02 per QAT epoch beyond the defaults
    hours = (1.1 + 0.4 * c["shipped_epochs"] / 40 + 0.1 * dereverb.get("steps", 0) / 1500
             + 0.09 * max(0, (fe_steps or 0) - defaults.front_qat_steps) / 1000
             + 0.02 * max(0, tr["qat_epochs"] - defaults.qat_epochs))
    lines = ["## Reproduce", "", text, ""]
    if c.get("provenance"):
        lines += [c["provenance"].strip(), ""]
    train = ["    ondevice train slu --corpus data/slu --out runs/slu \\",
             f"        --stages {','.join(stages)} \\",
             "        --set 'variants=[\"stage1\"]' --set ship_variant=stage1 \\"]
    for i in range(0, len(sets), 3):  # three settings a line
        train.append("        " + " ".join(sets[i:i + 3]) + (" \\" if i + 3 < len(sets) else ""))
    return lines + [
        f"    ondevice data slu --out data/slu --workers 2                       # version {version or '?'}, "
        "~15-30 min",
        f"    # the nearest single run, ~{hours:.1f} h on 2 cores", *train,
        "    ondevice train slu --corpus data/slu --out runs/slu-v3 --stages vq,tokens,bert,teacher,kd1,finetune"
        "  # the ablation",
        "    ondevice export slu --run runs/slu --ablation-run runs/slu-v3 --corpus data/slu \\",
        "        --out models/slu-intent-bcq --bench 100                        # measures this card",
        "    ondevice eval slu --corpus data/slu --split test [--one-pass]      # the shipped rows above",
        "    ondevice bench understand --corpus data/slu --torch-run runs/slu \\",
        "        --out benchmarks/slu-latency                                   # the latency table",
        ""]
