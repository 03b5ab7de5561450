"""The shipped model's seen-phrasing test errors by engine, augmentation kind, noise SNR, reverb and
speed (the default `ondevice understand` path, speed ensemble on).  Run from the repository root
with the corpus in data/slu-v4 (`ondevice data slu --out data/slu-v4`)."""
import collections
import json

from ondevice import Understander

CORPUS = "data/slu-v4"
rows = [json.loads(line) for line in open(f"{CORPUS}/test.jsonl")]
u = Understander()
stats: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
for r in rows:
    if r["heldout_phrasing"]:
        continue
    it = u.understand(f"{CORPUS}/{r['path']}")
    ok = (it.action, it.object, it.location) == (r["action"], r["object"], r["location"])
    a = r["augmentation"]
    keys = [("all", ""), ("engine", r["voice"] if r["engine"] == "flite" else r["engine"]),
            ("kind", str(a["kind"])), ("noise_snr_db", str(a["snr_db"] if a["noise"] else None)),
            ("reverb", str(a["reverb"] is not None)), ("speed", str(a["speed"] or a["tempo"]))]
    for k in keys:
        stats[k][0] += ok
        stats[k][1] += 1
for k in sorted(stats):
    ok, n = stats[k]
    print(f"{k[0]:13s} {k[1]:22s} n={n:5d} right={100 * ok / n:6.2f} % errors={n - ok}")
