"""Self-supervised pre-training of the speech model: vq-wav2vec's contrastive stage, tokenization of a
corpus with the frozen tokenizer, and BERT's masked-span prediction over the tokens.

Both stages use unlabelled audio only (the training split's; its labels are never read here).
"""

from __future__ import annotations

import math
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..progress import Progress
from .audio import resample
from .dataset import SLUSplit
from .model import (SAMPLE_RATE, SLUConfig, SpeechBert, SpeechTokenizer, contrastive_loss, kmeans_codebooks,
                    kmeans_logits, num_frames, standardize)

LogFn = Callable[[str], None]


def _lr(step: int, total: int, peak: float, warmup: int) -> float:
    """Linear warm-up then cosine decay to 5 % of the peak."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def random_crops(split: SLUSplit, batch: int, samples: int, rng: np.random.Generator) -> torch.Tensor:
    """``[batch, samples]`` float crops at random utterances and offsets (zero-padded if shorter)."""
    out = np.zeros((batch, samples), dtype=np.float32)
    lens = split.lengths()
    for b, i in enumerate(rng.integers(0, len(split), batch)):
        n = int(lens[i])
        start = int(rng.integers(0, max(1, n - samples + 1)))
        w = split.wave(i)[start:start + samples]
        out[b, : len(w)] = w
    return torch.from_numpy(out)


def pretrain_tokenizer(split: SLUSplit, cfg: SLUConfig, steps: int = 1500, batch: int = 16,
                       crop_seconds: float = 1.5, lr: float = 1e-3, pred_steps: int = 8, negatives: int = 10,
                       seed: int = 0, log: LogFn = print, state: dict | None = None,
                       checkpoint: Callable[[dict], None] | None = None, checkpoint_every: int = 250,
                       kmeans_frames: int = 100_000, progress: bool = True) -> SpeechTokenizer:
    """vq-wav2vec contrastive training of the feature encoder on random crops, then k-means
    codebooks on its features of ``kmeans_frames`` random training frames.

    ``state`` resumes a run saved by ``checkpoint`` (model, optimizer, step, rng)."""
    torch.manual_seed(seed)
    tok = SpeechTokenizer(cfg, pred_steps)
    opt = torch.optim.AdamW(tok.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    start = 0
    if state is not None:
        tok.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        start = state["step"]
    samples = int(crop_seconds * 16000)
    tok.train()
    t0, seen = time.monotonic(), 0
    with Progress("vq-wav2vec pre-training", total=steps, unit="step", enabled=progress) as bar:
        bar.update(start)
        for step in range(start, steps):
            for g in opt.param_groups:
                g["lr"] = _lr(step, steps, lr, max(1, steps // 20))
            wave = random_crops(split, batch, samples, rng)
            loss, info = contrastive_loss(tok, wave, negatives)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(tok.parameters(), 5.0)
            opt.step()
            seen += batch * crop_seconds
            bar.update(1, loss=loss.item(), acc=info["acc"])
            if (step + 1) % 50 == 0 or step + 1 == steps:
                log(f"vq step {step + 1}/{steps} loss {loss.item():.4f} acc {info['acc']:.3f} "
                    f"audio/s {seen / (time.monotonic() - t0):.1f}")
            if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
                checkpoint({"model": tok.state_dict(), "optimizer": opt.state_dict(), "step": step + 1,
                            "rng": rng.bit_generator.state, "torch_rng": torch.get_rng_state()})
    tok.eval()
    fit_codebooks(tok, split, kmeans_frames, seed, log)
    return tok


@torch.no_grad()
def fit_codebooks(tok: SpeechTokenizer, split: SLUSplit, frames: int, seed: int, log: LogFn) -> None:
    """k-means codebooks on the frozen features of random training frames -> ``tok.vq_logits``."""
    rng = np.random.default_rng(seed + 1)
    feats, have = [], 0
    for i in rng.permutation(len(split)):
        z = tok.encoder(standardize(torch.from_numpy(split.wave(int(i)))[None]))[0]
        feats.append(z)
        have += z.shape[0]
        if have >= frames:
            break
    x = torch.cat(feats)[:frames]
    books = kmeans_codebooks(x, tok.cfg.vq_groups, tok.cfg.vq_codewords, seed=seed)
    w, b = kmeans_logits(books)
    tok.vq_logits.weight.copy_(w)
    tok.vq_logits.bias.copy_(b)
    idx = tok.vq_logits(x).unflatten(-1, (tok.cfg.vq_groups, -1)).argmax(-1)
    used = [int(torch.unique(idx[:, g]).numel()) for g in range(idx.shape[1])]
    log(f"k-means on {x.shape[0]} frames: codewords used per group {used}")


@torch.no_grad()
def tokenize_split(tokenize: Callable[[torch.Tensor], torch.Tensor], split: SLUSplit, cfg: SLUConfig,
                   progress: bool = True, rate: int = SAMPLE_RATE,
                   transform: Callable[[int, np.ndarray], np.ndarray] | None = None,
                   label: str = "") -> list[np.ndarray]:
    """Token ids (int16 arrays) of every utterance by ``tokenize`` (waveforms ``[1, T]`` -> ids
    ``[1, N]``: the tokenizer's, or the quantized model's), one at a time: exactly what the
    exported graph computes on that utterance alone (no padding effects).  ``rate`` other than
    16 kHz: each utterance is first resampled to ``rate`` and read as 16 kHz, the speed change
    (pitch, formants and tempo together) of the runtime's speed ensemble, here for training copies.
    ``transform(index, wave)``: applied to each 16 kHz waveform first (reverb copies); ``label``
    names that in the progress line."""
    out = []
    what = split.name + (f" {label}" if label else "") + (f" at {rate} Hz" if rate != SAMPLE_RATE else "")
    with Progress(f"tokenizing {what}", total=len(split), unit="utt", enabled=progress) as bar:
        for i in range(len(split)):
            wave = split.wave(i)
            if transform is not None:
                wave = transform(i, wave)
            if rate != SAMPLE_RATE:
                wave = resample(wave, SAMPLE_RATE, rate)
            w = torch.from_numpy(wave)[None]
            if num_frames(w.shape[1], cfg) < 1:
                out.append(np.zeros(0, np.int16))
            else:
                out.append(tokenize(w)[0].numpy().astype(np.int16))
            bar.update()
    return out


def pad_batch(seqs: list[np.ndarray], pad_id: int) -> torch.Tensor:
    n = max(1, max(len(s) for s in seqs))
    out = np.full((len(seqs), n), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def span_mask(lengths: list[int], n: int, prob: float, span: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean ``[B, n]``: spans of ``span`` frames starting at a ``prob`` fraction of positions
    (vq-wav2vec BERT: p = 0.05 starts, spans of 10 frames at 10 ms; here 5 frames at 20 ms)."""
    m = np.zeros((len(lengths), n), dtype=bool)
    for b, L in enumerate(lengths):
        if L == 0:
            continue
        starts = np.flatnonzero(rng.random(L) < prob)
        if starts.size == 0:
            starts = rng.integers(0, L, 1)
        for s in starts:
            m[b, s:min(L, s + span)] = True
    return m


def pretrain_bert(tokens: list[np.ndarray], cfg: SLUConfig, steps: int = 2000, batch: int = 32, lr: float = 5e-4,
                  mask_prob: float = 0.05, span: int = 5, seed: int = 0, log: LogFn = print,
                  progress: bool = True) -> SpeechBert:
    """BERT pre-training by masked-span prediction over the speech tokens: masked token frames are
    [MASK] in the input and each position predicts the G codewords of the ``frames_per_position``
    token frames behind it (the loss on masked frames only)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    bert = SpeechBert(cfg)
    opt = torch.optim.AdamW(bert.parameters(), lr=lr, weight_decay=0.01)
    bert.train()
    r = cfg.frames_per_position
    t0 = time.monotonic()
    with Progress("BERT masked-span pre-training", total=steps, unit="step", enabled=progress) as bar:
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = _lr(step, steps, lr, max(1, steps // 20))
            seqs = [tokens[i] for i in rng.integers(0, len(tokens), batch)]
            x = pad_batch(seqs, cfg.pad_id)
            m = torch.from_numpy(span_mask([len(s) for s in seqs], x.shape[1], mask_prob, span, rng))
            logits = bert.mlm_logits(bert.encode(x.masked_fill(m, cfg.mask_id)))  # [B, M, r, G, V]
            covered = logits.shape[1] * r
            if covered == 0:  # a batch of utterances too short for one position
                continue
            target = bert.group_ids(x[:, :covered]).unflatten(1, (-1, r))      # [B, M, r, G]
            sel = m[:, :covered].unflatten(1, (-1, r))                           # [B, M, r]
            logits, target = logits[sel].flatten(0, 1), target[sel].flatten()
            if target.numel() == 0:  # every masked frame fell behind the last position
                continue
            loss = F.cross_entropy(logits, target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(bert.parameters(), 5.0)
            opt.step()
            acc = float((logits.argmax(-1) == target).float().mean())
            bar.update(1, loss=loss.item(), acc=acc)
            if (step + 1) % 100 == 0 or step + 1 == steps:
                log(f"bert step {step + 1}/{steps} mlm loss {loss.item():.4f} acc {acc:.3f} "
                    f"{(step + 1) / (time.monotonic() - t0):.2f} steps/s")
    bert.eval()
    return bert
