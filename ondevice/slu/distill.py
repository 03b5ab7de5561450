"""Two-stage textual knowledge distillation (Kim et al. 2021) into the speech BERT.

* The **text teacher** is a pre-trained text encoder fine-tuned on transcripts -> slots.  No BERT
  checkpoint can be downloaded here; the closest pre-trained English text encoder we have is the
  encoder of our own NMT model (models/nmt-en-de: 6 layers, d 256, trained on ~120k English
  sentences), with its SentencePiece tokenizer.  Utterance vector = mean of its outputs.
* **Stage 1 (pre-training KD)**: the student's [CLS] output, through a linear map to the teacher's
  width, regresses onto the teacher's utterance vector of the paired transcript (MSE; no labels).
* **Stage 2 (fine-tuning KD)**: cross-entropy on the slots plus the L1 distance between student and
  teacher slot logits.
* Augmentation while fine-tuning: token span masking ([MASK] spans) and time/channel masking of
  the embedded sequence (SpecAugment-style, on BERT inputs).
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..progress import Progress
from .model import SLOTS, SLUConfig, SpeechBert
from .evaluate import by_phrasing
from .pretrain import _lr, pad_batch, span_mask

LogFn = Callable[[str], None]


class TextTeacher(nn.Module):
    """NMT encoder (pre-trained) -> mean over tokens -> one linear head per slot."""

    def __init__(self, encoder: nn.Module, d_model: int):
        super().__init__()
        self.encoder = encoder
        self.d_model = d_model
        self.heads = nn.ModuleDict({slot: nn.Linear(d_model, len(v)) for slot, v in SLOTS.items()})

    def represent(self, tokens: Tensor) -> Tensor:
        enc = self.encoder(tokens)
        keep = (~enc.padding_mask).unsqueeze(-1).to(enc.out.dtype)
        return (enc.out * keep).sum(1) / keep.sum(1).clamp(min=1)

    def forward(self, tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        r = self.represent(tokens)
        return r, {slot: head(r) for slot, head in self.heads.items()}


def load_text_encoder(model_dir: str | Path):
    """(encoder module, tokenizer, pad id, d_model) of the NMT checkpoint in ``model_dir``."""
    from ..nmt.evaluate import load_model

    model, tok = load_model(model_dir, "checkpoint.pt")
    return model.encoder, tok, model.config.pad_id, model.config.d_model


def slot_targets(labels: dict[str, np.ndarray], idx) -> dict[str, Tensor]:
    return {s: torch.from_numpy(labels[s][idx]) for s in SLOTS}


def _intent_table() -> Tensor:
    """[31, 3] slot indices of the valid intents."""
    from .intents import INTENTS

    return torch.tensor([[SLOTS[s].index(getattr(it, s)) for s in SLOTS] for it in INTENTS])


def decode_intents(logits: dict[str, Tensor]) -> dict[str, Tensor]:
    """Per utterance, the slot indices of the valid intent with the highest summed log-probability
    (as :func:`ondevice.slu.intents.best_valid_intent` and the Understander decode)."""
    table = _intent_table()
    score = sum(torch.log_softmax(logits[s].float(), -1)[:, table[:, i]] for i, s in enumerate(SLOTS))
    best = table[score.argmax(-1)]
    return {s: best[:, i] for i, s in enumerate(SLOTS)}


def intent_correct(logits: dict[str, Tensor], targets: dict[str, Tensor]) -> Tensor:
    """Bool per utterance: every slot right (FSC's intent accuracy), decoding over the valid intents."""
    pred = decode_intents(logits)
    ok = None
    for s in SLOTS:
        hit = pred[s].eq(targets[s])
        ok = hit if ok is None else ok & hit
    return ok


def train_teacher(encoder: nn.Module, tokenizer, pad_id: int, d_model: int, transcripts: list[str],
                  labels: dict[str, np.ndarray], epochs: int = 30, batch: int = 32, seed: int = 0,
                  log: LogFn = print, progress: bool = True) -> TextTeacher:
    """Fine-tune the text teacher on the distinct training transcripts (each has one intent)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    first = {}
    for i, t in enumerate(transcripts):
        first.setdefault(t, i)
    idx = np.array(sorted(first.values()))
    texts = [transcripts[i] for i in idx]
    ids = tokenizer.encode(texts)
    teacher = TextTeacher(copy.deepcopy(encoder), d_model)
    opt = torch.optim.AdamW([{"params": teacher.encoder.parameters(), "lr": 1e-4},
                             {"params": teacher.heads.parameters(), "lr": 1e-3}], weight_decay=0.01)
    teacher.train()
    steps = epochs * ((len(idx) + batch - 1) // batch)
    with Progress("text teacher", total=steps, unit="step", enabled=progress) as bar:
        for epoch in range(epochs):
            order = rng.permutation(len(idx))
            for b in range(0, len(order), batch):
                sel = order[b:b + batch]
                x = pad_batch([np.array(ids[i]) for i in sel], pad_id)
                _, logits = teacher(x)
                tgt = slot_targets(labels, idx[sel])
                loss = sum(F.cross_entropy(logits[s], tgt[s]) for s in SLOTS)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                bar.update(1, loss=loss.item())
            if (epoch + 1) % 10 == 0:
                log(f"teacher epoch {epoch + 1}/{epochs} loss {loss.item():.4f}")
    teacher.eval()
    return teacher


@torch.no_grad()
def teacher_outputs(teacher: TextTeacher, tokenizer, pad_id: int, transcripts: list[str]) -> tuple[Tensor, Tensor]:
    """(utterance vectors ``[n, d]``, concatenated slot logits ``[n, sum(slot sizes)]``) per utterance,
    computed once per distinct transcript."""
    distinct = sorted(set(transcripts))
    ids = tokenizer.encode(distinct)
    reps, logits = [], []
    for b in range(0, len(distinct), 256):
        r, lg = teacher(pad_batch([np.array(x) for x in ids[b:b + 256]], pad_id))
        reps.append(r)
        logits.append(torch.cat([lg[s] for s in SLOTS], -1))
    reps, logits = torch.cat(reps), torch.cat(logits)
    where = {t: i for i, t in enumerate(distinct)}
    sel = torch.tensor([where[t] for t in transcripts])
    return reps[sel], logits[sel]


@torch.no_grad()
def evaluate_teacher(teacher: TextTeacher, tokenizer, pad_id: int, transcripts: list[str],
                     labels: dict[str, np.ndarray], heldout: np.ndarray | None = None) -> dict:
    """Intent accuracy of the text teacher on transcripts (overall and by held-out phrasing)."""
    ok = np.zeros(len(transcripts), dtype=bool)
    ids = tokenizer.encode(transcripts)
    for b in range(0, len(ids), 256):
        _, lg = teacher(pad_batch([np.array(x) for x in ids[b:b + 256]], pad_id))
        ok[b:b + 256] = intent_correct(lg, slot_targets(labels, np.arange(b, min(b + 256, len(ids))))).numpy()
    return {"n": len(ok), "intent_accuracy": float(ok.mean()), **by_phrasing(ok, heldout, counts=False)}


def split_logits(cat: Tensor) -> dict[str, Tensor]:
    out, i = {}, 0
    for s, v in SLOTS.items():
        out[s] = cat[..., i:i + len(v)]
        i += len(v)
    return out


def feature_mask(b: int, n: int, d: int, rng: np.random.Generator, time_prob: float = 0.05, time_span: int = 5,
                 channels: int = 8) -> Tensor:
    """0/1 ``[b, n, d]`` over the embedded token frames: time masks (spans of frames) and one channel
    band per row (SpecAugment-style)."""
    m = np.ones((b, n, d), dtype=np.float32)
    m[span_mask([n] * b, n, time_prob, time_span, rng)] = 0.0
    for i in range(b):
        w = int(rng.integers(0, channels + 1))
        c0 = int(rng.integers(0, d - w + 1))
        m[i, :, c0:c0 + w] = 0.0
    return torch.from_numpy(m)


def time_warp(tokens: np.ndarray, rng: np.random.Generator, amount: float) -> np.ndarray:
    """The token sequence resampled in time by a random factor in [1 - amount, 1 + amount] (frames
    repeated or dropped at even spacing): speaking rate differs between voices, and a held-out voice
    may be faster or slower than every training voice."""
    if amount <= 0 or len(tokens) < 2:
        return tokens
    n = max(1, int(round(len(tokens) * rng.uniform(1 - amount, 1 + amount))))
    return tokens[np.minimum((np.arange(n) * len(tokens) / n).astype(np.int64), len(tokens) - 1)]


def _augment(x: Tensor, lengths: list[int], cfg: SLUConfig, rng: np.random.Generator) -> Tensor:
    m = torch.from_numpy(span_mask(lengths, x.shape[1], 0.03, 5, rng))
    return x.masked_fill(m, cfg.mask_id)


def distill_stage1(bert: SpeechBert, tokens: list[np.ndarray], teacher_reps: Tensor, steps: int = 1500,
                   batch: int = 32, lr: float = 3e-4, seed: int = 0, log: LogFn = print,
                   progress: bool = True) -> SpeechBert:
    """Stage 1: MSE between ``kd_proj([CLS])`` and the teacher's utterance vector (no labels)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    bert = copy.deepcopy(bert)
    opt = torch.optim.AdamW(bert.parameters(), lr=lr, weight_decay=0.01)
    bert.train()
    scale = teacher_reps.pow(2).mean()
    with Progress("stage-1 KD", total=steps, unit="step", enabled=progress) as bar:
        for step in range(steps):
            for g in opt.param_groups:
                g["lr"] = _lr(step, steps, lr, max(1, steps // 20))
            sel = rng.integers(0, len(tokens), batch)
            seqs = [tokens[i] for i in sel]
            x = _augment(pad_batch(seqs, bert.cfg.pad_id), [len(s) for s in seqs], bert.cfg, rng)
            pred = bert.kd_proj(bert.encode(x)[:, 0])
            loss = F.mse_loss(pred, teacher_reps[sel]) / scale
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(bert.parameters(), 5.0)
            opt.step()
            bar.update(1, loss=loss.item())
            if (step + 1) % 250 == 0 or step + 1 == steps:
                log(f"kd1 step {step + 1}/{steps} normalized mse {loss.item():.4f}")
    bert.eval()
    return bert


@torch.no_grad()
def evaluate(bert: SpeechBert, tokens: list[np.ndarray], labels: dict[str, np.ndarray],
             heldout: np.ndarray | None = None, batch: int = 64) -> dict:
    """Intent accuracy (all slots right) and per-slot accuracy; split by held-out phrasing if given."""
    bert.eval()
    order = np.argsort([len(t) for t in tokens])
    ok = np.zeros(len(tokens), dtype=bool)
    slot_ok = {s: np.zeros(len(tokens), dtype=bool) for s in SLOTS}
    for b in range(0, len(order), batch):
        sel = order[b:b + batch]
        logits = bert(pad_batch([tokens[i] for i in sel], bert.cfg.pad_id))
        tgt = slot_targets(labels, sel)
        ok[sel] = intent_correct(logits, tgt).numpy()
        pred = decode_intents(logits)
        for s in SLOTS:
            slot_ok[s][sel] = pred[s].eq(tgt[s]).numpy()
    return {"n": len(tokens), "intent_accuracy": float(ok.mean()),
            **{f"{s}_accuracy": float(v.mean()) for s, v in slot_ok.items()}, **by_phrasing(ok, heldout)}


#: Softening of the teacher's slot distributions on transfer sentences (Hinton et al. 2015): the
#: teacher is confident on most sentences it was never trained on; at T = 2 the runner-up slots
#: (what a sentence is *almost* about) carry weight too.
TRANSFER_TEMPERATURE = 2.0


def transfer_loss(student: dict[str, Tensor], teacher_cat: Tensor, temperature: float = TRANSFER_TEMPERATURE) -> Tensor:
    """Sum over slots of KL(teacher || student) at ``temperature``, times T^2 (so its gradient
    keeps the scale of a T = 1 loss): the student matches the teacher's reading of a sentence
    it hears, with no label."""
    t = split_logits(teacher_cat)
    total = student[next(iter(SLOTS))].new_zeros(())
    for s in SLOTS:
        target = F.log_softmax(t[s].float() / temperature, -1)
        pred = F.log_softmax(student[s] / temperature, -1)
        total = total + F.kl_div(pred, target, log_target=True, reduction="batchmean")
    return total * temperature ** 2


def rep_loss(bert: SpeechBert, h: Tensor, target: Tensor, scale: Tensor) -> Tensor:
    """Stage-1 KD's objective: MSE between ``kd_proj([CLS])`` and a text-encoder vector, over
    ``scale`` (the targets' mean square, so that 1.0 means "no better than zero")."""
    return F.mse_loss(bert.kd_proj(h[:, 0]), target) / scale


def _running_mean(mean: dict[str, Tensor] | None, state: dict[str, Tensor], n: int) -> dict[str, Tensor]:
    """The mean of n + 1 state dicts from the mean of the first n; integer buffers are taken as is."""
    if mean is None:
        return {k: v.detach().clone() for k, v in state.items()}
    return {k: (m * (n / (n + 1)) + state[k].detach() / (n + 1)) if m.is_floating_point() else state[k].detach().clone()
            for k, m in mean.items()}


def finetune(bert: SpeechBert, tokens: list[np.ndarray], labels: dict[str, np.ndarray],
             teacher_logits: Tensor | None, valid: tuple[list[np.ndarray], dict[str, np.ndarray]],
             epochs: int = 4, batch: int = 32, lr: float = 3e-4, kd_weight: float = 1.0, seed: int = 0,
             log: LogFn = print, progress: bool = True, step_hook: Callable[[], None] | None = None,
             params: list | None = None, warp: float = 0.0,
             copies: list[list[np.ndarray]] = (),
             transfer: tuple[list[np.ndarray], Tensor] | None = None, transfer_weight: float = 1.0,
             transfer_batch: int = 16, rep_targets: Tensor | None = None,
             average_last: int = 0) -> tuple[SpeechBert, list[dict]]:
    """Fine-tune on slots (CE), plus ``kd_weight`` x L1(student, teacher logits) when teacher logits
    are given (stage 2); ``warp``: :func:`time_warp` amount (augmentation).  ``copies``: other
    token sequences of the same utterances (each list parallel to ``tokens``: the speed-perturbed
    copies); every time an utterance is drawn, one of its versions is, uniformly (the epoch keeps
    its number of steps), the utterance itself where the drawn copy has no frame.  ``transfer``:
    (token sequences, teacher slot logits) of unlabelled sentences (ondevice/slu/transfer.py); every
    step also draws ``transfer_batch`` of them, augmented alike, and adds ``transfer_weight`` x
    :func:`transfer_loss`.  With ``rep_targets`` (text-encoder vectors of the labelled utterances'
    transcripts, parallel to ``tokens``), the transfer targets are such vectors too, and both batches
    add ``transfer_weight`` x :func:`rep_loss` instead (stage-1 KD's objective kept up while
    fine-tuning).  Keeps the weights of the best validation epoch.  ``average_last`` > 0: also the
    mean of the weights at the end of the last ``average_last`` epochs (stochastic weight averaging,
    Izmailov et al. 2018: a flat point between the snapshots of the decaying schedule, which is
    what ensembling cycles gained here, in one model); it is validated like an epoch (history entry
    ``"epoch": "average"``) and kept when it beats the best epoch."""
    for c in copies:
        if len(c) != len(tokens):
            raise ValueError(f"a copy has {len(c)} utterances, the tokens {len(tokens)}")
    if transfer is not None and len(transfer[0]) != len(transfer[1]):
        raise ValueError(f"transfer: {len(transfer[0])} token sequences, {len(transfer[1])} teacher logits")
    if rep_targets is not None and (transfer is None or len(rep_targets) != len(tokens)):
        raise ValueError("rep_targets needs a transfer set and one vector per training utterance")
    if not 0 <= average_last <= epochs:
        raise ValueError(f"average_last: 0..{epochs} epochs, got {average_last}")
    rep_scale = torch.cat([rep_targets, transfer[1]]).pow(2).mean() if rep_targets is not None else None
    versions = [tokens, *copies]
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(params if params is not None else bert.parameters(), lr=lr, weight_decay=0.01)
    per_epoch = (len(tokens) + batch - 1) // batch
    steps = epochs * per_epoch
    best, best_state, history = -1.0, None, []
    mean_state, n_mean = None, 0
    step = 0
    t0 = time.monotonic()
    with Progress("fine-tuning", total=steps, unit="step", enabled=progress) as bar:
        for epoch in range(epochs):
            bert.train()
            order = rng.permutation(len(tokens))
            for b in range(0, len(order), batch):
                for g in opt.param_groups:
                    g["lr"] = _lr(step, steps, lr, max(1, steps // 20))
                sel = order[b:b + batch]
                pick = rng.integers(len(versions), size=len(sel)) if copies else np.zeros(len(sel), dtype=np.int64)
                seqs = [time_warp(versions[k][i] if len(versions[k][i]) else tokens[i], rng, warp)
                        for k, i in zip(pick, sel)]
                x = _augment(pad_batch(seqs, bert.cfg.pad_id), [len(s) for s in seqs], bert.cfg, rng)
                fm = feature_mask(x.shape[0], x.shape[1], bert.cfg.d_model, rng)
                h = bert.encode(x, fm)
                logits = bert.slot_logits(h)
                tgt = slot_targets(labels, sel)
                loss = sum(F.cross_entropy(logits[s], tgt[s]) for s in SLOTS)
                if teacher_logits is not None:
                    t = split_logits(teacher_logits[sel])
                    loss = loss + kd_weight * sum(F.l1_loss(logits[s], t[s]) for s in SLOTS)
                if rep_targets is not None:
                    loss = loss + transfer_weight * rep_loss(bert, h, rep_targets[sel], rep_scale)
                if transfer is not None:
                    tsel = rng.integers(0, len(transfer[0]), transfer_batch)
                    tseqs = [time_warp(transfer[0][i], rng, warp) for i in tsel]
                    tx = _augment(pad_batch(tseqs, bert.cfg.pad_id), [len(s) for s in tseqs], bert.cfg, rng)
                    th = bert.encode(tx, feature_mask(tx.shape[0], tx.shape[1], bert.cfg.d_model, rng))
                    loss = loss + transfer_weight * (
                        rep_loss(bert, th, transfer[1][tsel], rep_scale) if rep_targets is not None
                        else transfer_loss(bert.slot_logits(th), transfer[1][tsel]))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(bert.parameters(), 5.0)
                opt.step()
                if step_hook is not None:
                    step_hook()
                step += 1
                bar.update(1, loss=loss.item())
            v = evaluate(bert, valid[0], valid[1])
            v["epoch"] = epoch + 1
            v["seconds"] = round(time.monotonic() - t0, 1)
            history.append(v)
            log(f"fine-tune epoch {epoch + 1}/{epochs} loss {loss.item():.4f} valid intent acc "
                f"{v['intent_accuracy']:.4f}")
            if v["intent_accuracy"] > best:
                best, best_state = v["intent_accuracy"], copy.deepcopy(bert.state_dict())
            if epochs - epoch <= average_last:
                mean_state, n_mean = _running_mean(mean_state, bert.state_dict(), n_mean), n_mean + 1
    if mean_state is not None:
        bert.load_state_dict(mean_state)
        v = evaluate(bert, valid[0], valid[1])
        v["epoch"], v["seconds"] = "average", round(time.monotonic() - t0, 1)
        history.append(v)
        log(f"fine-tune: mean of the last {n_mean} epochs' weights: valid intent acc {v['intent_accuracy']:.4f} "
            f"(best epoch {best:.4f})")
        if v["intent_accuracy"] > best:
            best_state = mean_state
    bert.load_state_dict(best_state)
    bert.eval()
    return bert, history
