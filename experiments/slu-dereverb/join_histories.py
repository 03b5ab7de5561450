"""Join the fine-tuning histories of chained runs into one ft_stage1.json, as `train slu` with
`finetune_cycles` would have written it, so that `ondevice export slu` counts every cycle the shipped
BERT went through (card.json's shipped_epochs / shipped_cycles).

Run from the repository root:
    python experiments/slu-dereverb/join_histories.py OUT.json --corpus DESC --tokenizer DESC \
        EARLIER.json RUN_DIR/ft_stage1.json [...]
EARLIER.json may itself be joined: its "chained_runs" list is kept; every other file adds one entry
(its run directory, the checkpoint it started from, and the --corpus / --tokenizer descriptions).
The result keeps the last file's final measurements (valid, test) and settings and renumbers the
cycles in order. When OUT is the last file, that file is first kept as ft_stage1.last-cycle.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ondevice.atomic import atomic_write_text


def join(parts: list[tuple[Path, dict]], corpus: str, tokenizer: str) -> dict:
    history, runs, cycle = [], [], 0
    for path, part in parts:
        runs += part.get("chained_runs") or [{"run": str(path.parent), "from": part["from"], "corpus": corpus,
                                              "tokenizer": tokenizer}]
        history += [{**h, "cycle": cycle + h.get("cycle", 1)} for h in part["history"]]
        cycle += part.get("cycles", 1)
    return {**parts[-1][1], "from": parts[0][1]["from"], "cycles": cycle, "history": history, "chained_runs": runs}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("inputs", type=Path, nargs="+")
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--tokenizer", required=True)
    a = ap.parse_args()
    parts = [(p, json.loads(p.read_text())) for p in a.inputs]
    joined = join(parts, a.corpus, a.tokenizer)
    if a.out.exists() and a.out.resolve() == a.inputs[-1].resolve():
        atomic_write_text(a.out.with_name("ft_stage1.last-cycle.json"), json.dumps(parts[-1][1], indent=1) + "\n")
    atomic_write_text(a.out, json.dumps(joined, indent=1) + "\n")
    print(f"{a.out}: {len(joined['history'])} epochs in {joined['cycles']} cycles, {len(joined['chained_runs'])} runs")
