"""How new is a synthetic room (ondevice/slu/reverb.py) to the shipped model?  200 training
utterances, one pass, as rendered and in the room that reverb copy 0 of seed 0 gives each.  Run
from the repository root with data/slu-v4."""
import json

import soundfile as sf

from ondevice import Understander
from ondevice.slu.reverb import reverb_transform

u = Understander(speed_ensemble=False)
rows = [json.loads(line) for line in open("data/slu-v4/train.jsonl")][5000:5200]
room = reverb_transform(0, 0, 16000)
for name in ("as rendered", "in a synthetic room"):
    ok = 0
    for i, r in enumerate(rows):
        x, sr = sf.read(f"data/slu-v4/{r['path']}", dtype="float32")
        it = u.understand(x if name == "as rendered" else room(i, x), sample_rate=sr)
        ok += (it.action, it.object, it.location) == (r["action"], r["object"], r["location"])
    print(f"{name}: {100 * ok / len(rows):.1f} %", flush=True)
