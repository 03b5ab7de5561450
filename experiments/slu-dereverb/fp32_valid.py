"""fp32 fine-tuned BERTs (on their own run's tokenizer's validation tokens) on the validation utterances
with and without the corpus's reverb. Run from the repository root:
python experiments/slu-dereverb/fp32_valid.py runs/slu-v8 runs/slu-v9 runs/slu-v14"""
import json, sys
import numpy as np, torch
from ondevice.slu.distill import evaluate
from ondevice.slu.train import Run, SLUTrainConfig, load_bert, read_tokens
torch.set_num_threads(1)
rows = [json.loads(l) for l in open("data/slu-v4/valid.jsonl")]
reverb = np.array([r["augmentation"]["reverb"] is not None for r in rows])
for d in sys.argv[1:]:
    run = Run(SLUTrainConfig(corpus="data/slu-v4", out=d)); sp = run.split("valid")
    bert = load_bert(run.path("ft_stage1.pt"), run.model_cfg)
    tok = read_tokens(run.path("tokens.npz"), "valid")
    out = {}
    for n, m in (("reverb", reverb), ("no reverb", ~reverb)):
        idx = np.flatnonzero(m)
        out[n] = round(100*evaluate(bert, [tok[i] for i in idx], {k: v[idx] for k, v in sp.labels.items()})["intent_accuracy"], 2)
    print(d, out)
