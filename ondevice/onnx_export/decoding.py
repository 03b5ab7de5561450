"""Greedy and beam search in numpy over a decoder-step function: :mod:`ondevice.nmt.search`, ported.

The rules are the reference decoder's, step for step, so an ONNX model decodes exactly what the
PyTorch model decodes whenever their log-probabilities agree on the order of candidates: decoding
starts from eos, pad and bos are never produced, eos is not allowed first, each sentence stops at
``int(max_len_a * src_len + max_len_b)`` tokens (``src_len`` = its non-pad tokens, capped at
max_positions - 1) where eos is forced, and beam search keeps the ``2 * beam`` best candidates per
step, finalizes eos candidates among the top ``beam`` with score ``sum(log p) / len ** lenpen``.

The state is a dict of arrays whose first axis is the hypothesis, so reordering beams (or dropping
finished sentences) is one ``take`` per array, whatever the runtime keeps in it (the KV cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["Special", "greedy_search", "beam_search_nbest", "log_softmax"]

State = dict[str, np.ndarray]
StepFn = Callable[[np.ndarray, State], tuple[np.ndarray, State]]  # (tokens [R, 1], state) -> (logits [R, V], state)
_MIN_LEN = 1


@dataclass(frozen=True)
class Special:
    """What decoding needs to know about the model."""

    bos: int
    pad: int
    eos: int
    vocab_size: int
    max_positions: int


def log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float32, copy=False)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _reorder(state: State, rows: np.ndarray) -> State:
    return {k: np.take(v, rows, axis=0) for k, v in state.items()}


def _max_lens(src_tokens: np.ndarray, sp: Special, a: float, b: float) -> list[int]:
    cap = sp.max_positions - 1
    return [max(0, min(cap, int(a * int(n) + b))) for n in (src_tokens != sp.pad).sum(axis=1)]


def _mask(lprobs: np.ndarray, sp: Special, step: int, at_max: np.ndarray) -> np.ndarray:
    eos_raw = lprobs[:, sp.eos].copy()
    lprobs[:, sp.pad] = -np.inf
    lprobs[:, sp.bos] = -np.inf
    if step < _MIN_LEN:
        lprobs[:, sp.eos] = -np.inf
    if at_max.any():
        lprobs[at_max] = -np.inf
        lprobs[at_max, sp.eos] = eos_raw[at_max]
    return lprobs


def greedy_search(step_fn: StepFn, state: State, src_tokens: np.ndarray, sp: Special, max_len_a: float = 1.2,
                  max_len_b: float = 10) -> list[list[int]]:
    """One token list (without eos) per row of ``src_tokens``; ``state`` is the encoded batch."""
    bsz = src_tokens.shape[0]
    max_lens = _max_lens(src_tokens, sp, max_len_a, max_len_b)
    hyps: list[list[int]] = [[] for _ in range(bsz)]
    active = list(range(bsz))
    last = np.full((bsz, 1), sp.eos, dtype=np.int64)
    step = 0
    while active:
        logits, state = step_fn(last, state)
        at_max = np.array([step >= max_lens[s] for s in active])
        nxt = _mask(log_softmax(logits), sp, step, at_max).argmax(axis=-1)
        keep = []
        for row, (sid, tok) in enumerate(zip(active, nxt.tolist())):
            if tok != sp.eos:
                hyps[sid].append(tok)
                keep.append(row)
        if not keep:
            break
        if len(keep) < len(active):
            state = _reorder(state, np.array(keep))
        active = [active[r] for r in keep]
        last = nxt[keep].reshape(-1, 1).astype(np.int64)
        step += 1
    return hyps


def beam_search_nbest(step_fn: StepFn, state: State, src_tokens: np.ndarray, sp: Special, beam: int = 4,
                      lenpen: float = 1.0, max_len_a: float = 1.2,
                      max_len_b: float = 10) -> list[list[tuple[float, list[int]]]]:
    """Per sentence its ``beam`` finished hypotheses ``(score, tokens)``, best first."""
    bsz, k, v = src_tokens.shape[0], beam, sp.vocab_size
    max_lens = _max_lens(src_tokens, sp, max_len_a, max_len_b)
    state = _reorder(state, np.repeat(np.arange(bsz), k))
    finalized: list[list[tuple[float, list[int]]]] = [[] for _ in range(bsz)]
    active = list(range(bsz))
    tokens = np.full((bsz * k, 1), sp.eos, dtype=np.int64)
    scores = np.zeros(bsz * k, dtype=np.float32)
    step = 0
    while active:
        n = len(active)
        logits, state = step_fn(tokens[:, -1:], state)
        at_max = np.repeat(np.array([step >= max_lens[s] for s in active]), k)
        lprobs = _mask(log_softmax(logits), sp, step, at_max).reshape(n, k, v)
        total = lprobs[:, 0, :] if step == 0 else (lprobs + scores.reshape(n, k, 1)).reshape(n, k * v)
        c = 2 * k
        cand_idx = np.argsort(-total, axis=1, kind="stable")[:, :c]
        cand_scores = np.take_along_axis(total, cand_idx, axis=1)
        cand_beams, cand_toks = cand_idx // v, cand_idx % v
        is_eos = (cand_toks == sp.eos) & np.isfinite(cand_scores)

        norm = float(step + 1) ** lenpen
        for i, j in np.argwhere(is_eos[:, :k]).tolist():
            sid = active[i]
            if len(finalized[sid]) < k:
                row = i * k + int(cand_beams[i, j])
                finalized[sid].append((float(cand_scores[i, j]) / norm, tokens[row, 1:].tolist()))
        keep = np.array([i for i, sid in enumerate(active) if len(finalized[sid]) < k and step < max_lens[sid]],
                        dtype=np.int64)
        if keep.size == 0:
            break

        sel = np.argsort(is_eos * c + np.arange(c), axis=1, kind="stable")[:, :k]  # best non-eos first
        sel_beams = np.take_along_axis(cand_beams, sel, axis=1)[keep]
        sel_toks = np.take_along_axis(cand_toks, sel, axis=1)[keep]
        rows = (keep[:, None] * k + sel_beams).reshape(-1)
        tokens = np.concatenate([tokens[rows], sel_toks.reshape(-1, 1)], axis=1)
        scores = np.take_along_axis(cand_scores, sel, axis=1)[keep].reshape(-1)
        state = _reorder(state, rows)
        active = [active[i] for i in keep.tolist()]
        step += 1
    for hyps in finalized:
        hyps.sort(key=lambda h: h[0], reverse=True)
    return finalized
