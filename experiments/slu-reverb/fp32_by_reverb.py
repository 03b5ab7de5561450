"""fp32 fine-tuned BERTs (on the fp32 tokenizer's test tokens) on the seen-phrasing test utterances
with and without the corpus's reverb: did reverb copies help where they were aimed?  Run from the
repository root: python experiments/slu-reverb/fp32_by_reverb.py runs/slu-v9 runs/slu-v13"""
import json
import sys

import numpy as np
import torch

from ondevice.slu.distill import evaluate
from ondevice.slu.train import Run, SLUTrainConfig, load_bert, read_tokens

torch.set_num_threads(1)
rows = [json.loads(line) for line in open("data/slu-v4/test.jsonl")]
reverb = np.array([r["augmentation"]["reverb"] is not None for r in rows])
seen = np.array([not r["heldout_phrasing"] for r in rows])
for run_dir in sys.argv[1:]:
    run = Run(SLUTrainConfig(corpus="data/slu-v4", out=run_dir))
    test = run.split("test")
    bert = load_bert(run.path("ft_stage1.pt"), run.model_cfg)
    tokens = [t.astype(np.int64) for t in read_tokens(run.path("tokens.npz"), "test")]
    out = {}
    for name, mask in (("seen, reverb", seen & reverb), ("seen, no reverb", seen & ~reverb)):
        idx = np.flatnonzero(mask)
        labels = {k: v[idx] for k, v in test.labels.items()}
        out[name] = round(100 * evaluate(bert, [tokens[i] for i in idx], labels)["intent_accuracy"], 2)
        out[name + " n"] = int(mask.sum())
    print(run_dir, json.dumps(out))
