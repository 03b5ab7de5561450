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
Run from the repository root: python experiments/slu-dereverb/dereverb_front_end.py OUT_DIR [steps] [lr]"""
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ondevice.slu.distill import evaluate
from ondevice.slu.model import standardize
from ondevice.slu.pretrain import tokenize_split
from ondevice.slu.train import Run, SLUTrainConfig, load_bert, load_tokenizer, load_torch, read_tokens

torch.manual_seed(0)
out_dir = Path(sys.argv[1])
steps = int(sys.argv[2]) if len(sys.argv) > 2 else 1500
lr = float(sys.argv[3]) if len(sys.argv) > 3 else 1e-4
out_dir.mkdir(parents=True, exist_ok=True)
run = Run(SLUTrainConfig(corpus="data/slu-v4", out="runs/slu-v8"))
cfg = run.model_cfg
teacher = load_tokenizer(Path("runs/slu-v8/tokenizer.pt"))
for p in teacher.parameters():
    p.requires_grad_(False)
rng = np.random.default_rng(0)


def rows(split: str) -> list[dict]:
    return [json.loads(line) for line in open(f"data/slu-v4/{split}.jsonl")]


def sox_reverb(x: np.ndarray, reverb: int, room: int) -> np.ndarray:
    """``x`` (float, 16 kHz) through the corpus's reverb effect, cut or padded to its length."""
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
    fmt = ["-t", "raw", "-r", "16000", "-e", "signed-integer", "-b", "16", "-c", "1", "-L"]
    y = subprocess.run(["sox", "-q", *fmt, "-", *fmt, "-", "reverb", str(reverb), "50", str(room), "channels", "1",
                        "gain", "-n", "-1"], input=pcm, capture_output=True, check=True).stdout
    y = np.frombuffer(y, "<i2").astype(np.float32) / 32768
    return np.pad(y[:len(x)], (0, max(0, len(x) - len(y))))


def pairs(split_name: str, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    split = run.split(split_name)
    dry_idx = [i for i, r in enumerate(rows(split_name)) if r["augmentation"]["kind"] == "clean"][:n]
    dry = [split.wave(i) for i in dry_idx]
    wet = [sox_reverb(w, int(rng.integers(20, 81)), int(rng.integers(20, 101))) for w in dry]
    return dry, wet


t0 = time.monotonic()
train_dry, train_wet = pairs("train", 4000)
valid_dry, valid_wet = pairs("valid", 150)
print(f"{len(train_dry)} training pairs, {len(valid_dry)} validation pairs ({time.monotonic() - t0:.0f} s)",
      flush=True)


def agreement(tok, inputs: list[np.ndarray], refs: list[np.ndarray]) -> float:
    agree = []
    for x, r in zip(inputs, refs):
        a = tok.tokenize(torch.from_numpy(x)[None])[0]
        b = teacher.tokenize(torch.from_numpy(r)[None])[0]
        m = min(len(a), len(b))
        agree.append(float((a[:m] == b[:m]).float().mean()))
    return round(100 * float(np.mean(agree)), 1)


student = copy.deepcopy(teacher)
params = list(student.encoder.parameters()) + list(student.vq_logits.parameters())
for p in params:
    p.requires_grad_(True)
print("before:", {"wet->dry": agreement(student, valid_wet, valid_dry),
                  "dry->dry": agreement(student, valid_dry, valid_dry)}, flush=True)
opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
batch, samples, wet_share = 16, 24000, 0.75
student.train()
t0 = time.monotonic()
for step in range(steps):
    for g in opt.param_groups:
        g["lr"] = lr * (1.0 - 0.9 * step / steps)
    x_in = np.zeros((batch, samples), np.float32)
    x_ref = np.zeros((batch, samples), np.float32)
    for b, i in enumerate(rng.integers(0, len(train_dry), batch)):
        n = len(train_dry[i])
        s = int(rng.integers(0, max(1, n - samples + 1)))
        src = train_wet[i] if rng.random() < wet_share else train_dry[i]
        x_in[b, :min(samples, n - s)] = src[s:s + samples]
        x_ref[b, :min(samples, n - s)] = train_dry[i][s:s + samples]
    with torch.no_grad():
        target = teacher.vq_logits(teacher.encoder(standardize(torch.from_numpy(x_ref))))
        target = target.unflatten(-1, (cfg.vq_groups, -1)).argmax(-1)
    logits = student.vq_logits(student.encoder(standardize(torch.from_numpy(x_in))))
    logits = logits.unflatten(-1, (cfg.vq_groups, -1))
    loss = F.cross_entropy(logits.flatten(0, 2), target.flatten())
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if (step + 1) % 100 == 0:
        student.eval()
        print(f"step {step + 1}/{steps} loss {loss.item():.3f} ({time.monotonic() - t0:.0f} s) valid",
              {"wet->dry": agreement(student, valid_wet, valid_dry),
               "dry->dry": agreement(student, valid_dry, valid_dry)}, flush=True)
        student.train()
student.eval()
state = load_torch(Path("runs/slu-v8/tokenizer.pt"))
state["encoder"], state["vq_logits"] = student.encoder.state_dict(), student.vq_logits.state_dict()
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
