"""Shipped-path intent accuracy (quantized export, speed ensemble, native runtime) by the corpus's
sox reverb, for several exported models on one split.  Run from the repository root:
python experiments/slu-dereverb/by_reverb.py data/slu-valid6k valid models/slu-intent-bcq/onnx runs/slu-v14/onnx"""
import json
import sys

from ondevice import Understander

corpus, split, models = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = [json.loads(line) for line in open(f"{corpus}/{split}.jsonl")]
for model in models:
    u = Understander(model)
    right = {}
    for r in rows:
        it = u.understand(f"{corpus}/{r['path']}")
        ok = (it.action, it.object, it.location) == (r["action"], r["object"], r["location"])
        for key in ("reverb" if r["augmentation"]["reverb"] is not None else "dry",
                    "held-out phrasing" if r.get("heldout_phrasing") else "seen phrasing"):
            n, k = right.get(key, (0, 0))
            right[key] = (n + 1, k + ok)
    print(model, json.dumps({key: {"n": n, "right": round(100 * k / n, 2)} for key, (n, k) in sorted(right.items())}),
          flush=True)
