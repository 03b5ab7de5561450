"""A reverb-invariant front end (``train slu --set dereverb_steps=N``, stage ``dereverb``).

Why: the corpus's sox reverb keeps only 42.6 % of the tokenizer's tokens, and reverberant utterances
held 47 % of the seen-phrasing test errors of the model shipped in session 12 (86.6 % right against
92.9 % without reverb; experiments/slu-reverb/README.md).  The BERT only sees tokens, so the place to
remove the variation is the front end: after the vq stage, a copy of the tokenizer's feature encoder
and quantizer map is trained so that a dry training utterance put through the corpus's reverb gives
the tokens the original front end gives on the dry audio (cross-entropy per codebook group against
its argmax: the loss of :func:`ondevice.slu.quantize.retrain_front_end`), while dry crops keep
their own tokens.

Measured on the session-12 tokenizer (experiments/slu-dereverb/README.md; per-utterance means over
150 validation pairs): 1,500 steps take the reverberant frames that get the dry token from 35.6 to
50.2 % but move a third of the dry tokens, so the BERT must be (re)trained on the new tokens. One
fine-tuning cycle on them, against the same cycle on the old tokens (fp32, seen-phrasing test
utterances): reverberant 86.76 -> 89.72 %, dry 93.02 -> 91.72 %.  The encoder sees 59 ms
of audio per frame while the reverb tails last hundreds of milliseconds: it can only learn which
codeword a smeared frame most likely came from, not undo the room.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import ConfigError, DataError
from ..progress import Progress
from .dataset import SLUSplit
from .model import SpeechTokenizer, standardize
from .synth import SAMPLE_RATE, sox_reverb

REVERBERANCE = (20, 80)   # what the corpus draws (corpus.py), inclusive
ROOM_SCALE = (20, 100)


def reverb_pairs(split: SLUSplit, dry: np.ndarray, n: int, seed: int,
                 progress: bool = True) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The first ``n`` utterances of ``split`` marked ``dry`` (no augmentation) and each through the
    corpus's sox reverb with a seeded random reverberance and room scale: (dry, wet) waveforms of
    equal length (empty lists when there is no dry utterance)."""
    idx = np.flatnonzero(dry)[:n]
    rng = np.random.default_rng(seed)
    dry_w, wet_w = [], []
    with Progress("adding reverb", total=len(idx), unit="utt", enabled=progress) as bar:
        for i in idx:
            w = split.wave(int(i))
            dry_w.append(w)
            wet_w.append(sox_reverb(w, int(rng.integers(REVERBERANCE[0], REVERBERANCE[1] + 1)),
                                    int(rng.integers(ROOM_SCALE[0], ROOM_SCALE[1] + 1))))
            bar.update()
    return dry_w, wet_w


def token_agreement(tok: SpeechTokenizer, reference: SpeechTokenizer, inputs: list[np.ndarray],
                    refs: list[np.ndarray]) -> float | None:
    """Share of frames where ``tok`` on ``inputs[i]`` gives the token ``reference`` gives on ``refs[i]``
    (None without frames)."""
    same = total = 0
    for x, r in zip(inputs, refs):
        a = tok.tokenize(torch.from_numpy(x)[None])[0]
        b = reference.tokenize(torch.from_numpy(r)[None])[0]
        m = min(len(a), len(b))
        same += int((a[:m] == b[:m]).sum())
        total += m
    return same / total if total else None


def train_dereverb(teacher: SpeechTokenizer, dry: list[np.ndarray], wet: list[np.ndarray], steps: int,
                   batch: int = 16, crop_seconds: float = 1.5, lr: float = 1e-4, wet_share: float = 0.75,
                   seed: int = 0, log: Callable[[str], None] = print,
                   progress: bool = True) -> SpeechTokenizer:
    """A copy of ``teacher`` whose front end maps reverberant crops (share ``wet_share`` of each
    batch) and dry crops to the tokens ``teacher`` gives on the dry crops.  Random aligned crops of
    the pairs; AdamW, lr decaying linearly to 10 %.  The teacher is not modified."""
    if steps <= 0:
        raise ConfigError(f"dereverb_steps must be positive, got {steps}")
    if not dry or len(dry) != len(wet):
        raise DataError("dereverb training needs the same number (> 0) of dry and reverberant utterances: no "
                        "unaugmented training utterance in the corpus (or within the run's limit)")
    cfg = teacher.cfg
    teacher.eval()
    student = copy.deepcopy(teacher)
    params = list(student.encoder.parameters()) + list(student.vq_logits.parameters())
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed + 11)
    samples = int(crop_seconds * SAMPLE_RATE)
    student.train()
    t0 = time.monotonic()
    with Progress("dereverb front-end training", total=steps, unit="step", enabled=progress) as bar:
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = lr * (1.0 - 0.9 * step / steps)
            x_in = np.zeros((batch, samples), np.float32)
            x_ref = np.zeros((batch, samples), np.float32)
            for b, i in enumerate(rng.integers(0, len(dry), batch)):
                n = len(dry[i])
                start = int(rng.integers(0, max(1, n - samples + 1)))
                k = min(samples, n - start)
                x_in[b, :k] = (wet[i] if rng.random() < wet_share else dry[i])[start:start + k]
                x_ref[b, :k] = dry[i][start:start + k]
            with torch.no_grad():
                target = teacher.vq_logits(teacher.encoder(standardize(torch.from_numpy(x_ref))))
                target = target.unflatten(-1, (cfg.vq_groups, -1)).argmax(-1)
            logits = student.vq_logits(student.encoder(standardize(torch.from_numpy(x_in))))
            loss = F.cross_entropy(logits.unflatten(-1, (cfg.vq_groups, -1)).flatten(0, 2), target.flatten())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            bar.update(1, loss=loss.item())
            if (step + 1) % 100 == 0 or step + 1 == steps:
                log(f"dereverb step {step + 1}/{steps} loss {loss.item():.4f} ({time.monotonic() - t0:.0f} s)")
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return student
