"""Join the fine-tuning histories of chained runs into one ft_stage1.json, as `train slu` with
`finetune_cycles` would have written it, so that `ondevice export slu` counts every cycle the shipped
BERT went through (card.json's shipped_epochs / shipped_cycles).

Run from the repository root:
    python experiments/slu-dereverb/join_histories.py OUT.json --corpus DESC --tokenizer DESC \
        [--run RUN ...] EARLIER.json RUN_DIR/ft_stage1.json [...]
EARLIER.json may itself be joined: its "chained_runs" list is kept; every other file adds one entry
(the run that trained it: the next --run name, else the file's directory; the checkpoint it started
from; the --corpus / --tokenizer descriptions). Only the first file may be a joined one, so that a
second invocation cannot count cycles twice. The result keeps the last file's final measurements
(valid, test) and settings and renumbers the cycles in order. When OUT is the last file, that file is
first kept as ft_stage1.last-cycle.json (refused if that copy exists already).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ondevice.atomic import atomic_write_text


def join(parts: list[tuple[Path, dict]], corpus: str, tokenizer: str, names: list[str]) -> dict:
    if any("chained_runs" in part for _, part in parts[1:]):
        raise SystemExit("only the first input may be a joined history (is this one joined already?)")
    history, runs, cycle, names = [], [], 0, list(names)
    for path, part in parts:
        runs += part.get("chained_runs") or [{"run": names.pop(0) if names else str(path.parent),
                                              "from": part["from"], "corpus": corpus, "tokenizer": tokenizer}]
        history += [{**h, "cycle": cycle + h.get("cycle", 1)} for h in part["history"]]
        cycle += part.get("cycles", 1)
    return {**parts[-1][1], "from": parts[0][1]["from"], "cycles": cycle, "history": history, "chained_runs": runs}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("inputs", type=Path, nargs="+")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--run", action="append", default=[], help="the run that trained the next input that is not "
                    "joined (repeat in order)")
    a = ap.parse_args()
    parts = [(p, json.loads(p.read_text())) for p in a.inputs]
    joined = join(parts, a.corpus, a.tokenizer, a.run)
    if a.out.exists() and a.out.resolve() == a.inputs[-1].resolve():
        if a.out.with_name("ft_stage1.last-cycle.json").exists():
            raise SystemExit(f"{a.out.with_name('ft_stage1.last-cycle.json')} exists: joined already?")
        atomic_write_text(a.out.with_name("ft_stage1.last-cycle.json"), json.dumps(parts[-1][1], indent=1) + "\n")
    atomic_write_text(a.out, json.dumps(joined, indent=1) + "\n")
    print(f"{a.out}: {len(joined['history'])} epochs in {joined['cycles']} cycles, {len(joined['chained_runs'])} runs")
