"""A reverb-invariant tokenizer: retrain the shipped fp32 front end (feature encoder + quantizer map)
so that an utterance put through the corpus's sox reverb gives the tokens its dry version gives.

Why: only 42.6 % of the tokens survive sox reverb (token_stability_probe.txt in slu-reverb), and
reverberant utterances are 47 % of the shipped model's seen-phrasing test errors.  The frozen fp32
front end of runs/slu-v8 is the teacher; pairs are the dry ("clean") training utterances and the
same audio through ``sox reverb R 50 S`` (R, S drawn as the corpus draws them); dry crops also
train towards their own tokens so that the vocabulary the BERT knows stays where it is.  Loss:
cross-entropy per codebook group against the teacher's argmax on the dry crop, as
``ondevice.slu.quantize.retrain_front_end`` does for quantization.

Measures before and after: token agreement on 150 validation pairs (reverberant vs dry, and dry vs
the old tokenizer), and the shipped fp32 BERT's intent accuracy on the test split with each
tokenizer (seen phrasings with and without reverb, held-out phrasings).
Run from the repository root: python experiments/slu-dereverb/dereverb_front_end.py OUT_DIR [steps] [lr]

dr1.log was made by this script's first version (commit e020c2f: its own copy of the training loop,
which also printed the agreement every 100 steps); it now calls ondevice.slu.dereverb, the same
method with other random streams for pairing and cropping, so a rerun gives close, not identical,
numbers."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

from ondevice.slu.dereverb import reverb_pairs, token_agreement, train_dereverb
from ondevice.slu.distill import evaluate
from ondevice.slu.pretrain import tokenize_split
from ondevice.slu.train import Run, SLUTrainConfig, load_bert, load_tokenizer, load_torch, read_tokens

out_dir = Path(sys.argv[1])
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
out_dir.mkdir(parents=True, exist_ok=True)
run = Run(SLUTrainConfig(corpus="data/slu-v4", out="runs/slu-v8"))
cfg = run.model_cfg
teacher = load_tokenizer(Path("runs/slu-v8/tokenizer.pt"))


def rows(split: str) -> list[dict]:
    return [json.loads(line) for line in open(f"data/slu-v4/{split}.jsonl")]


def dry(split: str) -> np.ndarray:
    return np.array([r["augmentation"]["kind"] == "clean" for r in rows(split)])


train_dry, train_wet = reverb_pairs(run.split("train"), dry("train"), 4000, seed=0)
valid_dry, valid_wet = reverb_pairs(run.split("valid"), dry("valid"), 150, seed=1)
print("before:", {"wet->dry": token_agreement(teacher, teacher, valid_wet, valid_dry)}, flush=True)
student = train_dereverb(teacher, train_dry, train_wet, steps, lr=lr)
print("after:", {"wet->dry": token_agreement(student, teacher, valid_wet, valid_dry),
                 "dry->dry": token_agreement(student, teacher, valid_dry, valid_dry)}, flush=True)
state = load_torch(Path("runs/slu-v8/tokenizer.pt"))
state["encoder"], state["vq_logits"] = student.encoder.state_dict(), student.vq_logits.state_dict()
# marked as train slu's dereverb stage marks it, so that a run using it does not retrain it again
state["dereverb"] = {"steps": steps, "requested_pairs": 4000, "pairs": len(train_dry), "script": __file__}
torch.save(state, out_dir / "tokenizer.pt")

# the shipped fp32 BERT on the validation (decides) and test splits, old tokens vs new tokens
bert = load_bert(Path("runs/slu-v8/ft_stage1.pt"), cfg)
result = {}
for split_name in ("valid", "test"):
    split = run.split(split_name)
    reverb = np.array([r["augmentation"]["reverb"] is not None for r in rows(split_name)])
    seen = ~split.heldout_phrasing
    new = [t.astype(np.int64) for t in tokenize_split(student.tokenize, split, cfg, progress=False)]
    for name, tokens in (("old tokenizer", read_tokens(Path("runs/slu-v8/tokens.npz"), split_name)),
                         ("new tokenizer", new)):
        r = {}
        for part, mask in (("seen, reverb", seen & reverb), ("seen, no reverb", seen & ~reverb),
                           ("held-out phrasings", ~seen), ("all", np.ones(len(split), bool))):
            idx = np.flatnonzero(mask)
            if len(idx):
                labels = {k: v[idx] for k, v in split.labels.items()}
                r[part] = round(100 * evaluate(bert, [tokens[i] for i in idx], labels)["intent_accuracy"], 2)
        result[f"{split_name}, {name}"] = r
        print(split_name, name, r, flush=True)
json.dump(result, open(out_dir / "fp32_eval.json", "w"), indent=1)
