"""Is the new-voice gap on espeak-ng the accent or the timbre?  The first N seen-phrasing espeak-ng
utterances of the test split's generator, re-spoken with the same text, rate, pitch and augmentation
by (test or training accent) x (test or training timbre), the training ones drawn at random; the
shipped model's intent accuracy on each.  Usage: python accent_timbre_probe.py N OUT_DIR."""
import dataclasses
import json
import random
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from ondevice import Understander
from ondevice.slu.corpus import ESPEAK_BASE_SPLIT, ESPEAK_VARIANT_SPLIT, _render_one, utterance_spec
from ondevice.slu.synth import Voice

n, out = int(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
specs, i = [], 0
while len(specs) < n:
    s = utterance_spec(0, "test", i)
    i += 1
    if s.job.voice.engine == "espeak-ng" and not s.phrasing.heldout:
        specs.append(s)
rng = random.Random(1)
jobs = {}
for k, s in enumerate(specs):
    accent, timbre = s.job.voice.base, s.job.voice.name.split("+", 1)[1]
    train_accent = rng.choice(ESPEAK_BASE_SPLIT["train"])
    train_timbre = rng.choice(ESPEAK_VARIANT_SPLIT["train"])
    for name, (a, t) in {"test accent + test timbre": (accent, timbre),
                         "test accent + training timbre": (accent, train_timbre),
                         "training accent + test timbre": (train_accent, timbre),
                         "training accent + training timbre": (train_accent, train_timbre)}.items():
        jobs[(name, k)] = dataclasses.replace(s.job, voice=Voice.espeak(a, t), timbre=None)
paths = {key: out / f"{key[0].replace(' ', '_')}_{key[1]}.wav" for key in jobs}
with ProcessPoolExecutor(2) as pool:
    list(pool.map(_render_one, [(job, str(paths[key])) for key, job in jobs.items()], chunksize=8))
u = Understander()
right: dict[str, list[bool]] = {}
for (name, k), path in paths.items():
    it = u.understand(str(path))
    right.setdefault(name, []).append(f"{it.action}_{it.object}_{it.location}" == specs[k].intent)
print(json.dumps({name: round(100 * sum(v) / len(v), 2) for name, v in right.items()} | {"n": n}, indent=1))
