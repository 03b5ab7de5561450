"""Where does reverb hurt: the tokens or the BERT?  150 clean training utterances (no augmentation)
re-rendered with the corpus's sox reverb (reverberance and room scale drawn from the corpus's
reverberant training utterances) and put in a synthetic room (ondevice/slu/reverb.py); the share of
the fp32 tokenizer's tokens (runs/slu-v8, the shipped model's) that stay the same as the clean
utterance's, and the shipped model's intent accuracy (one pass) on each version.  Run from the
repository root with runs/slu-v8."""
import dataclasses
from pathlib import Path

import numpy as np
import torch

from ondevice import Understander
from ondevice.slu import synth
from ondevice.slu.corpus import utterance_spec
from ondevice.slu.reverb import reverb_transform
from ondevice.slu.train import load_tokenizer

N = 150
tok = load_tokenizer(Path("runs/slu-v8/tokenizer.pt"))
u = Understander(speed_ensemble=False)
clean, reverbs, i = [], [], 0
while len(clean) < N:
    s = utterance_spec(0, "train", i)
    i += 1
    if s.job.aug.reverb is not None:
        reverbs.append(s.job.aug)
    elif s.job.aug.kind == "clean" and s.job.timbre is None:
        clean.append(s)
room = reverb_transform(0, 0, 16000)
agree = {"sox reverb": [], "synthetic room": []}
right = {"clean": 0, "sox reverb": 0, "synthetic room": 0}
for k, s in enumerate(clean):
    a = reverbs[k % len(reverbs)]
    sox = dataclasses.replace(s.job, aug=dataclasses.replace(s.job.aug, reverb=a.reverb, room_scale=a.room_scale))
    versions = {"clean": synth.render(s.job).astype(np.float32) / 32768,
                "sox reverb": synth.render(sox).astype(np.float32) / 32768}
    versions["synthetic room"] = room(k, versions["clean"])
    with torch.no_grad():
        ids = {n: tok.tokenize(torch.from_numpy(w)[None])[0].numpy() for n, w in versions.items()}
    for n in agree:
        m = min(len(ids[n]), len(ids["clean"]))
        agree[n].append(float(np.mean(ids[n][:m] == ids["clean"][:m])))
    for n, w in versions.items():
        it = u.understand(w, sample_rate=16000)
        right[n] += f"{it.action}_{it.object}_{it.location}" == s.intent
print({f"tokens unchanged, {n}": round(100 * float(np.mean(v)), 1) for n, v in agree.items()}
      | {f"intent right, {n}": round(100 * v / N, 1) for n, v in right.items()} | {"n": N})
