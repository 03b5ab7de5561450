"""One-off probe (session 14): would WORLD-vocoder formant warping make new voices for training?
200 training utterances through the shipped model (one pass): as rendered, resynthesised by WORLD
unchanged, and with the spectral envelope (formants) scaled by 0.88 or 1.12, with and without a
pitch change.  Needs `pip install pyworld` (0.3.5 imports pkg_resources, absent from recent
setuptools, so its compiled module is loaded directly).  Run from the repository root."""
import glob
import importlib.util
import json
import os

import numpy as np
import soundfile as sf

from ondevice import Understander

spec = importlib.util.find_spec("pyworld")
so = glob.glob(os.path.join(os.path.dirname(spec.origin), "pyworld*.so"))[0]
mod = importlib.util.spec_from_file_location("pyworld.pyworld", so)
pw = importlib.util.module_from_spec(mod)
mod.loader.exec_module(pw)


def warp(x: np.ndarray, sr: int, alpha: float, pitch: float) -> np.ndarray:
    """Formants scaled by ``alpha`` (the envelope at bin k is the old one at k / alpha), F0 by ``pitch``."""
    x = x.astype(np.float64)
    f0, t = pw.dio(x, sr, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, sr)
    sp, ap = pw.cheaptrick(x, f0, t, sr), pw.d4c(x, f0, t, sr)
    bins = np.arange(sp.shape[1])
    src = np.clip(bins / alpha, 0, bins[-1])
    sp = np.stack([np.interp(src, bins, s) for s in sp])
    ap = np.stack([np.interp(src, bins, a) for a in ap])
    return pw.synthesize(f0 * pitch, sp, ap, sr, 5.0).astype(np.float32)


u = Understander(speed_ensemble=False)
rows = [json.loads(line) for line in open("data/slu-v4/train.jsonl")][5000:5200]
for name, alpha, pitch in (("as rendered", None, 1.0), ("WORLD resynthesis", 1.0, 1.0),
                           ("formants x0.88", 0.88, 1.0), ("formants x1.12", 1.12, 1.0),
                           ("formants x1.12, pitch x1.2", 1.12, 1.2), ("formants x0.88, pitch x0.8", 0.88, 0.8)):
    ok = 0
    for r in rows:
        x, sr = sf.read(f"data/slu-v4/{r['path']}", dtype="float32")
        it = u.understand(x if alpha is None else warp(x, sr, alpha, pitch), sample_rate=sr)
        ok += (it.action, it.object, it.location) == (r["action"], r["object"], r["location"])
    print(f"{name}: {100 * ok / len(rows):.1f} %", flush=True)
