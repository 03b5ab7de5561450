"""Reference decoders (greedy and beam search) for :class:`~ondevice.nmt.model.TransformerModel`.

They follow fairseq's ``SequenceGenerator`` (with its defaults ``min_len=1``, ``normalize_scores``):

* the decoder input starts with ``eos`` (fairseq uses eos as the decoder's bos);
* ``pad`` and ``bos`` are never produced (fairseq masks only ``pad``; a trained model never
  predicts ``bos``, so outputs agree -- the interop tests compare them), ``eos`` is not allowed as
  the first token;
* at most ``max_len = int(max_len_a * src_len + max_len_b)`` tokens (capped at
  ``max_positions - 1``), after which ``eos`` is forced.  ``src_len`` is the number of non-pad
  tokens of *each* sentence (fairseq uses the padded batch width), so results do not depend on
  how sentences are batched;
* beam search scores a finished hypothesis by ``sum(log p) / len ** lenpen`` where ``len`` counts
  the ``eos``; each step keeps the ``2 * beam`` best candidates, finalizes those among the top
  ``beam`` that end in ``eos`` and continues with the ``beam`` best others, until a sentence has
  ``beam`` finished hypotheses (or reaches ``max_len``).

Decoding is incremental (KV cache), batched over sentences, under ``torch.no_grad()`` in eval mode
(the model's previous train/eval mode is restored afterwards); finished sentences leave the batch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..errors import ConfigError
from .model import TransformerModel

__all__ = ["greedy_search", "beam_search", "beam_search_nbest"]

_MIN_LEN = 1  # fairseq SequenceGenerator default: no empty hypotheses


def _check_src(src_tokens: Tensor) -> Tensor:
    if not isinstance(src_tokens, Tensor) or src_tokens.dim() != 2 or src_tokens.dtype not in (
            torch.int64, torch.int32):
        raise ConfigError("src_tokens must be an integer tensor of shape [batch, src_len]")
    if src_tokens.size(0) == 0:
        raise ConfigError("src_tokens is an empty batch")
    return src_tokens.long()


def _max_lens(model: TransformerModel, src_tokens: Tensor, max_len_a: float, max_len_b: float) -> list[int]:
    cfg = model.config
    src_len = src_tokens.ne(cfg.pad_id).sum(dim=1).tolist()
    cap = cfg.max_positions - 1
    return [max(0, min(cap, int(max_len_a * n + max_len_b))) for n in src_len]


def _mask_lprobs(lprobs: Tensor, model: TransformerModel, step: int, at_max: Tensor) -> Tensor:
    """Apply the token constraints to ``lprobs`` ``[R, V]`` (``at_max``: rows where eos is forced)."""
    cfg = model.config
    eos_raw = lprobs[:, cfg.eos_id].clone()
    lprobs[:, cfg.pad_id] = -math.inf
    lprobs[:, cfg.bos_id] = -math.inf
    if step < _MIN_LEN:
        lprobs[:, cfg.eos_id] = -math.inf
    if bool(at_max.any()):
        lprobs[at_max] = -math.inf
        lprobs[at_max, cfg.eos_id] = eos_raw[at_max]
    return lprobs


class _ModeGuard:
    def __init__(self, model: torch.nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        self.model.train(self.was_training)
        return False


def greedy_search(model: TransformerModel, src_tokens: Tensor, max_len_a: float = 1.2,
                  max_len_b: float = 10) -> list[list[int]]:
    """Greedy decoding; one token list (without bos/eos) per row of ``src_tokens`` ``[B, S]``."""
    src_tokens = _check_src(src_tokens)
    cfg = model.config
    with _ModeGuard(model):
        device = next(model.parameters()).device
        src_tokens = src_tokens.to(device)
        bsz = src_tokens.size(0)
        max_lens = _max_lens(model, src_tokens, max_len_a, max_len_b)
        enc = model.encode(src_tokens)
        cache = model.new_cache()
        hyps: list[list[int]] = [[] for _ in range(bsz)]
        active = list(range(bsz))  # original sentence of each batch row
        last = torch.full((bsz, 1), cfg.eos_id, dtype=torch.long, device=device)
        step = 0
        while active:
            logits = model.decode(last, enc, cache)[:, -1, :]
            lprobs = torch.log_softmax(logits.float(), dim=-1)
            at_max = torch.tensor([step >= max_lens[s] for s in active], device=device)
            lprobs = _mask_lprobs(lprobs, model, step, at_max)
            nxt = lprobs.argmax(dim=-1).tolist()
            keep = []
            for row, (sid, tok) in enumerate(zip(active, nxt)):
                if tok != cfg.eos_id:
                    hyps[sid].append(tok)
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(active):
                order = torch.tensor(keep, device=device)
                cache.reorder(order)
                enc = enc.reorder(order)
            active = [active[r] for r in keep]
            last = torch.tensor([[nxt[r]] for r in keep], dtype=torch.long, device=device)
            step += 1
        return hyps


def beam_search_nbest(model: TransformerModel, src_tokens: Tensor, beam: int = 4, lenpen: float = 1.0,
                      max_len_a: float = 1.2, max_len_b: float = 10) -> list[list[tuple[float, list[int]]]]:
    """Beam search; per sentence, its ``beam`` finished hypotheses as ``(score, tokens)``, best first
    (``score`` = sum of log-probs including eos / ``len ** lenpen``; tokens without bos/eos)."""
    src_tokens = _check_src(src_tokens)
    cfg = model.config
    if isinstance(beam, bool) or not isinstance(beam, int) or beam < 1:
        raise ConfigError(f"beam must be a positive integer, got {beam!r}")
    if 2 * beam > cfg.vocab_size:
        raise ConfigError(f"beam {beam} too large for a vocabulary of {cfg.vocab_size} (needs 2 * beam <= V)")
    K, V = beam, cfg.vocab_size
    with _ModeGuard(model):
        device = next(model.parameters()).device
        src_tokens = src_tokens.to(device)
        bsz = src_tokens.size(0)
        max_lens = _max_lens(model, src_tokens, max_len_a, max_len_b)
        enc = model.encode(src_tokens)
        order = torch.arange(bsz, device=device).repeat_interleave(K)
        enc = enc.reorder(order)
        cache = model.new_cache()
        finalized: list[list[tuple[float, list[int]]]] = [[] for _ in range(bsz)]
        active = list(range(bsz))  # original sentence of each group of K rows
        tokens = torch.full((bsz * K, 1), cfg.eos_id, dtype=torch.long, device=device)
        scores = torch.zeros(bsz * K, device=device)
        step = 0
        while active:
            n = len(active)
            logits = model.decode(tokens[:, -1:], enc, cache)[:, -1, :]
            lprobs = torch.log_softmax(logits.float(), dim=-1)
            at_max = torch.tensor([step >= max_lens[s] for s in active], device=device).repeat_interleave(K)
            lprobs = _mask_lprobs(lprobs, model, step, at_max).view(n, K, V)
            if step == 0:  # all K rows of a sentence are identical: expand the first only
                cand_total = lprobs[:, 0, :]
            else:
                cand_total = (lprobs + scores.view(n, K, 1)).view(n, K * V)
            c = 2 * K
            cand_scores, cand_idx = cand_total.topk(c, dim=1)
            cand_beams = torch.div(cand_idx, V, rounding_mode="floor")
            cand_toks = cand_idx % V
            is_eos = cand_toks.eq(cfg.eos_id) & torch.isfinite(cand_scores)

            # finalize hypotheses ending in eos among the top K candidates
            norm = float(step + 1) ** lenpen
            for i, j in is_eos[:, :K].nonzero().tolist():
                sid = active[i]
                if len(finalized[sid]) < K:
                    row = i * K + int(cand_beams[i, j])
                    finalized[sid].append((float(cand_scores[i, j]) / norm, tokens[row, 1:].tolist()))
            keep = [i for i, sid in enumerate(active)
                    if len(finalized[sid]) < K and step < max_lens[sid]]
            if not keep:
                break

            # continue with the K best candidates that do not end in eos
            key = is_eos.long() * c + torch.arange(c, device=device)
            sel = key.topk(K, dim=1, largest=False).indices  # ascending: best non-eos first
            sel_beams = cand_beams.gather(1, sel)
            sel_toks = cand_toks.gather(1, sel)
            sel_scores = cand_scores.gather(1, sel)
            keep_t = torch.tensor(keep, device=device)
            rows = (keep_t.unsqueeze(1) * K + sel_beams.index_select(0, keep_t)).reshape(-1)
            tokens = torch.cat([tokens.index_select(0, rows), sel_toks.index_select(0, keep_t).reshape(-1, 1)],
                               dim=1)
            scores = sel_scores.index_select(0, keep_t).reshape(-1)
            cache.reorder(rows)
            enc = enc.reorder(rows)
            active = [active[i] for i in keep]
            step += 1
        for hyps in finalized:
            hyps.sort(key=lambda h: h[0], reverse=True)
        return finalized


def beam_search(model: TransformerModel, src_tokens: Tensor, beam: int = 4, lenpen: float = 1.0,
                max_len_a: float = 1.2, max_len_b: float = 10) -> list[list[int]]:
    """Beam search; the best hypothesis (tokens without bos/eos) for each row of ``src_tokens``."""
    nbest = beam_search_nbest(model, src_tokens, beam=beam, lenpen=lenpen, max_len_a=max_len_a,
                              max_len_b=max_len_b)
    return [hyps[0][1] if hyps else [] for hyps in nbest]
