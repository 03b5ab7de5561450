"""``ondevice train nmt``: label-smoothed cross-entropy training of the Transformer, resumable.

A run can be stopped at any moment (Ctrl-C, SIGTERM, a time budget) and
continued with the same command: ``checkpoint_last.pt`` holds the model,
optimizer, learning-rate step, the position inside the epoch's batch order
so an interrupted-and-resumed run computes the same updates as an
uninterrupted one (dropout is seeded per batch, not from a running RNG).

Data-parallel training: launch the same command with ``torchrun
--nproc_per_node N`` (or across machines); each update's ``N * update_freq``
batches are split over the processes and their gradients summed with
torch.distributed (gloo on CPU), so N processes compute the same updates as
one process with ``update_freq`` multiplied by N.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic import atomic_write_text
from ..errors import ConfigError, DataError, OndeviceError
from ..progress import Progress
from .config import TrainConfig
from .data import ParallelData, collate, make_batches
from .tokenizer import PAD, Tokenizer, train_sentencepiece

CHECKPOINT_LAST = "checkpoint_last.pt"
CHECKPOINT_BEST = "checkpoint_best.pt"


def inverse_sqrt_lr(cfg: TrainConfig, update: int) -> float:
    """fairseq's inverse_sqrt schedule after ``update`` finished updates: linear warm-up from
    warmup_init_lr, then lr * sqrt(warmup / update). Update number u (1-based) uses f(u - 1), as in
    fairseq, so the first update runs at warmup_init_lr."""
    if cfg.warmup_updates > 0 and update < cfg.warmup_updates:
        return cfg.warmup_init_lr + (cfg.lr - cfg.warmup_init_lr) * update / cfg.warmup_updates
    return cfg.lr * math.sqrt(max(cfg.warmup_updates, 1) / max(update, 1))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Writes via a temporary file, fsync and rename: a crash or a full disk never leaves a
    truncated checkpoint in place (the previous one survives)."""
    import torch

    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        tmp.unlink(missing_ok=True)
        raise OndeviceError(f"could not write {path} (disk full?): {e}") from None


def prepare_tokenizer(cfg: TrainConfig, save_dir: Path) -> Tokenizer:
    model = save_dir / "spm.model"
    if not model.exists():
        d = Path(cfg.data_dir)
        train_sentencepiece([d / f"{cfg.train_split}.{cfg.src}", d / f"{cfg.train_split}.{cfg.tgt}"], model,
                            vocab_size=cfg.vocab_size, model_type=cfg.tokenizer_type)
    return Tokenizer(model)


def build_model(cfg: TrainConfig, tok: Tokenizer):
    from .model import TransformerConfig, TransformerModel

    try:
        mcfg = TransformerConfig(vocab_size=tok.vocab_size, **cfg.model)
    except TypeError as e:
        raise ConfigError(f"model: {e}") from None
    mcfg.validate()
    return TransformerModel.from_config(mcfg)


def batch_loss(model, batch, epsilon: float, bf16: bool = False):
    """(loss sum, nll sum, target tokens) of one batch; with ``bf16`` the model runs under
    bfloat16 autocast while the loss is computed in float32."""
    import torch

    from .loss import label_smoothed_nll_loss

    src, prev, tgt = batch
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(src, prev)
    lprobs = torch.log_softmax(logits.float(), dim=-1).view(-1, logits.size(-1))
    loss, nll = label_smoothed_nll_loss(lprobs, tgt.view(-1), epsilon, ignore_index=PAD)
    return loss, nll, int((tgt != PAD).sum())


def evaluate_loss(model, data: ParallelData, batches: list[np.ndarray], epsilon: float,
                  bf16: bool = False) -> dict[str, float]:
    import torch

    was_training = model.training
    model.eval()
    tot_loss = tot_nll = 0.0
    tokens = 0
    with torch.no_grad():
        for idx in batches:
            loss, nll, n = batch_loss(model, collate(data, idx), epsilon, bf16)
            tot_loss += float(loss)
            tot_nll += float(nll)
            tokens += n
    model.train(was_training)
    nll_tok = tot_nll / max(tokens, 1)
    return {"loss": tot_loss / max(tokens, 1) / math.log(2), "nll": nll_tok / math.log(2), "ppl": 2 ** (nll_tok / math.log(2))}


# Settings that fix the order of batches and the global batch: changing them under a running
# schedule would silently skip or repeat data, so a resume refuses it.
_ORDER_KEYS = ("src", "tgt", "train_split", "max_tokens", "max_len", "seed", "vocab_size", "tokenizer_type")


def _check_resumable(cfg: TrainConfig, ck: dict, world: int, train_pairs: int) -> None:
    old = ck.get("config", {})
    changed = [k for k in _ORDER_KEYS if k in old and old[k] != getattr(cfg, k)]
    old_global = old.get("update_freq", cfg.update_freq) * ck.get("world_size", 1)
    if old_global != cfg.update_freq * world:
        changed.append(f"global batch (update_freq x processes: {old_global} -> {cfg.update_freq * world})")
    if ck.get("train_pairs", train_pairs) != train_pairs:
        changed.append(f"training data ({ck['train_pairs']} -> {train_pairs} pairs)")
    if changed:
        raise ConfigError("cannot resume: these settings differ from the run being continued: " +
                          ", ".join(changed) + "; restore them or start a new save_dir")


class _Dist:
    """This process's place in a torchrun job (world 1 when launched directly)."""

    def __init__(self) -> None:
        import torch.distributed as dist

        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.dist = dist if self.world > 1 else None
        if self.dist is not None and not dist.is_initialized():
            dist.init_process_group("gloo")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    def sum_(self, t) -> None:
        if self.dist is not None:
            self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM)

    def any(self, flag: bool) -> bool:
        """True on every process if it is True on any (keeps stop/save decisions in lockstep)."""
        if self.dist is None:
            return flag
        import torch

        t = torch.tensor([1.0 if flag else 0.0])
        self.dist.all_reduce(t, op=self.dist.ReduceOp.MAX)
        return bool(t.item() > 0)


def _batch_seed(cfg: TrainConfig, epoch: int, batch: int) -> int:
    """Dropout seed of one batch: independent of process count, resume and update_freq."""
    return (cfg.seed * 1_000_003 + epoch * 100_003 + batch) % (2**63)


class _StopFlag:
    """Turns SIGINT/SIGTERM/SIGHUP into a request to save and stop after the current update."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handlers
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _log_stderr(*args: object) -> None:
    print(*args, file=sys.stderr, flush=True)


def train(cfg: TrainConfig, resume: bool = True, progress: bool = True, log=_log_stderr) -> dict[str, Any]:
    """Trains (or continues training) per ``cfg``; returns a summary of the run.

    Messages go to ``log`` (stderr by default), so a caller's stdout carries only results.
    """
    import torch

    cfg.validate()
    dist = _Dist()
    save_dir = Path(cfg.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    cores = max(1, len(os.sched_getaffinity(0)))
    torch.set_num_threads(cfg.threads or max(1, cores // dist.world))
    if not dist.main:
        log = lambda *_: None  # noqa: E731 - one process reports
        progress = False
    if dist.main:
        prepare_tokenizer(cfg, save_dir)
    dist.barrier()
    tok = prepare_tokenizer(cfg, save_dir)
    train_data = ParallelData.load(cfg.data_dir, cfg.train_split, cfg.src, cfg.tgt, tok, cfg.max_len)
    valid_data = ParallelData.load(cfg.data_dir, cfg.valid_split, cfg.src, cfg.tgt, tok, None)
    batches = make_batches(train_data, cfg.max_tokens)
    valid_batches = make_batches(valid_data, cfg.max_tokens)

    torch.manual_seed(cfg.seed)
    model = build_model(cfg, tok)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.adam_betas), eps=cfg.adam_eps,
                           weight_decay=cfg.weight_decay)
    state = {"updates": 0, "epoch": 1, "batch_in_epoch": 0, "best_valid": float("inf"), "bad_validations": 0,
             "train_seconds": 0.0, "validations": []}
    last = save_dir / CHECKPOINT_LAST
    if resume and last.exists():
        try:
            ck = torch.load(last, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise DataError(f"{last} is not a readable checkpoint ({e}); restore it or use a new save_dir") from None
        if ck.get("model_config") != dataclasses.asdict(model.config):
            raise ConfigError(f"{last} was trained with a different model configuration; use a new save_dir")
        _check_resumable(cfg, ck, dist.world, len(train_data))
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        for g in opt.param_groups:  # the config's optimizer settings win over the saved ones
            g.update(betas=tuple(cfg.adam_betas), eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        state.update(ck["state"])
        log(f"resumed from {last}: update {state['updates']}, epoch {state['epoch']}, "
            f"batch {state['batch_in_epoch']}/{len(batches)}")
    elif not resume and last.exists():
        raise ConfigError(f"{save_dir} already holds a run; pass resume or choose another save_dir")
    dist.barrier()  # every process has read checkpoint_last before anyone rewrites it
    if dist.main:
        atomic_write_text(save_dir / "config.json", json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
        atomic_write_text(save_dir / "model_config.json",
                          json.dumps(dataclasses.asdict(model.config), indent=1) + "\n")

    def checkpoint(path: Path) -> None:
        if dist.main:
            atomic_torch_save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                               "config": dataclasses.asdict(cfg), "world_size": dist.world,
                               "train_pairs": len(train_data),
                               "model_config": dataclasses.asdict(model.config)}, path)

    def validate() -> bool:
        """Returns True when training should stop early."""
        # fp32 even when training in bf16: best-checkpoint and early-stopping decisions need exact losses
        metrics = evaluate_loss(model, valid_data, valid_batches, cfg.label_smoothing, bf16=False)
        metrics["update"] = state["updates"]
        state["validations"].append(metrics)
        improved = metrics["loss"] < state["best_valid"]
        if improved:
            state["best_valid"] = metrics["loss"]
            state["bad_validations"] = 0
        else:
            state["bad_validations"] += 1
        if dist.main:
            if improved:
                atomic_torch_save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                                   "update": state["updates"], "valid": metrics}, save_dir / CHECKPOINT_BEST)
            # Keep the last few validated weights for checkpoint averaging.
            atomic_torch_save({"model": model.state_dict(), "model_config": dataclasses.asdict(model.config),
                               "update": state["updates"]}, save_dir / f"checkpoint_u{state['updates']}.pt")
            kept = sorted(save_dir.glob("checkpoint_u*.pt"), key=lambda p: int(p.stem[len("checkpoint_u"):]))
            for old in kept[: -cfg.keep_checkpoints]:
                old.unlink()
        log(f"valid at update {state['updates']}: loss {metrics['loss']:.3f} nll {metrics['nll']:.3f} "
            f"ppl {metrics['ppl']:.2f}{' (best)' if improved else ''}")
        return cfg.patience > 0 and state["bad_validations"] >= cfg.patience

    run_start = time.monotonic()
    last_save = run_start
    stop_reason = ""
    tokens_this_run = 0
    bar = Progress("train", total=cfg.max_updates or None, unit="upd", enabled=progress)
    if cfg.max_updates and state["updates"] >= cfg.max_updates:
        stop_reason = f"reached max_updates={cfg.max_updates} (nothing to do)"
    elif cfg.patience and state["bad_validations"] >= cfg.patience:
        stop_reason = f"stopped early before (no valid improvement in {cfg.patience} validations)"
    with _StopFlag() as stop:
        while not stop_reason:
            if cfg.max_epochs and state["epoch"] > cfg.max_epochs:
                stop_reason = f"reached max_epochs={cfg.max_epochs}"
                break
            order = np.random.default_rng(cfg.seed + state["epoch"]).permutation(len(batches))
            pos = state["batch_in_epoch"]
            while pos < len(order):
                span = cfg.update_freq * dist.world
                group = range(pos, min(pos + span, len(order)))
                opt.zero_grad(set_to_none=True)
                tot_tokens, tot_loss, tot_nll = 0, 0.0, 0.0
                for k in group[dist.rank::dist.world]:
                    torch.manual_seed(_batch_seed(cfg, state["epoch"], k))
                    loss, nll, n = batch_loss(model, collate(train_data, batches[order[k]]), cfg.label_smoothing,
                                              cfg.bf16)
                    loss.backward()
                    tot_tokens += n
                    tot_loss += float(loss.detach())
                    tot_nll += float(nll.detach())
                params = [p for p in model.parameters() if p.requires_grad]
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                if dist.world > 1:  # one flat all-reduce of gradients and counts
                    flat = torch.cat([p.grad.reshape(-1) for p in params] +
                                     [torch.tensor([tot_tokens, tot_loss, tot_nll], dtype=torch.float32)])
                    dist.sum_(flat)
                    offset = 0
                    for p in params:
                        p.grad.copy_(flat[offset: offset + p.numel()].view_as(p))
                        offset += p.numel()
                    tot_tokens, tot_loss, tot_nll = int(flat[-3].item()), float(flat[-2]), float(flat[-1])
                for p in params:  # gradients of the summed loss -> per target token
                    p.grad.div_(max(tot_tokens, 1))
                if cfg.clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_norm)
                state["updates"] += 1
                for g in opt.param_groups:
                    g["lr"] = inverse_sqrt_lr(cfg, state["updates"] - 1)
                opt.step()
                pos = group.stop
                state["batch_in_epoch"] = pos
                tokens_this_run += tot_tokens
                elapsed = time.monotonic() - run_start
                bar.update(1, epoch=state["epoch"], loss=tot_loss / max(tot_tokens, 1) / math.log(2),
                           lr=opt.param_groups[0]["lr"], tok_s=tokens_this_run / max(elapsed, 1e-9))
                if state["updates"] % cfg.validate_every == 0 and dist.any(validate()):
                    stop_reason = f"no valid improvement in {cfg.patience} validations"
                if cfg.max_updates and state["updates"] >= cfg.max_updates:
                    stop_reason = stop_reason or f"reached max_updates={cfg.max_updates}"
                if cfg.max_minutes and elapsed >= 60 * cfg.max_minutes:
                    stop_reason = stop_reason or f"reached max_minutes={cfg.max_minutes}"
                if dist.any(stop.requested):
                    stop_reason = stop_reason or "interrupted (resume with the same command)"
                if dist.world > 1 and dist.any(bool(stop_reason)) and not stop_reason:
                    stop_reason = "another process stopped"
                now = time.monotonic()
                if dist.any(bool(stop_reason) or now - last_save >= 60 * cfg.save_every_minutes):
                    state["train_seconds"] += now - last_save
                    last_save = now
                    checkpoint(last)
                if stop_reason:
                    break
            else:
                state["epoch"] += 1
                state["batch_in_epoch"] = 0
                validated_now = bool(state["validations"]) and state["validations"][-1]["update"] == state["updates"]
                if not validated_now and dist.any(validate()):
                    stop_reason = f"no valid improvement in {cfg.patience} validations"
                now = time.monotonic()
                state["train_seconds"] += now - last_save
                last_save = now
                checkpoint(last)
    bar.close()
    dist.barrier()
    elapsed = time.monotonic() - run_start
    summary = {"stop_reason": stop_reason, "updates": state["updates"], "epoch": state["epoch"],
               "best_valid_loss": state["best_valid"] if math.isfinite(state["best_valid"]) else None, "run_seconds": elapsed, "train_seconds": state["train_seconds"],
               "target_tokens_per_second": tokens_this_run / max(elapsed, 1e-9),
               "train_pairs": len(train_data), "train_target_tokens": train_data.num_target_tokens(),
               "parameters": sum(p.numel() for p in model.parameters()), "world_size": dist.world}
    log(f"stopped: {stop_reason}; {state['updates']} updates, {summary['target_tokens_per_second']:.0f} target tok/s")
    return summary


def average_checkpoints(paths: list[Path], out: Path, dtype: str = "float32") -> Path:
    """Averages the model weights of several checkpoints (fairseq's average_checkpoints).

    ``dtype="float16"`` stores the averaged floats as float16: half the bytes for a shipped
    model, and :func:`ondevice.nmt.evaluate.load_model` widens them back to float32."""
    import torch

    if not paths:
        raise DataError("no checkpoints to average")
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"dtype must be float32 or float16, got {dtype!r}")
    store = torch.float16 if dtype == "float16" else torch.float32
    avg: dict[str, Any] = {}
    meta = None
    for p in paths:
        try:
            ck = torch.load(p, map_location="cpu", weights_only=False)
            ck["model"], ck["model_config"]
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged or foreign file
            raise DataError(f"{p} is not a readable checkpoint ({e})") from None
        meta = meta or ck["model_config"]
        if ck["model_config"] != meta:
            raise ConfigError(f"{p} has a different model configuration")
        for k, v in ck["model"].items():
            avg[k] = avg.get(k, 0) + v.double() / len(paths) if v.is_floating_point() else v
    model = {k: (v.to(store) if torch.is_tensor(v) and v.is_floating_point() else v) for k, v in avg.items()}
    # Tied weights (shared embeddings / output projection) share storage in the checkpoints; keep them
    # one tensor so the file stores them once.
    first = torch.load(paths[0], map_location="cpu", weights_only=False)["model"]
    owner: dict[int, str] = {}
    for k, v in first.items():
        if torch.is_tensor(v) and v.numel():
            canonical = owner.setdefault(v.untyped_storage().data_ptr(), k)
            if canonical != k and v.shape == first[canonical].shape:
                model[k] = model[canonical]
    atomic_torch_save({"model": model, "model_config": meta, "averaged": [Path(p).name for p in paths],
                       "dtype": dtype}, out)
    return out


def last_checkpoints(run_dir: str | os.PathLike, n: int) -> list[Path]:
    """The ``n`` per-validation checkpoints (``checkpoint_u<update>.pt``) with the highest update numbers."""
    if n < 1:
        raise ConfigError(f"the number of checkpoints to average must be >= 1, got {n}")
    kept = sorted(Path(run_dir).glob("checkpoint_u*.pt"), key=lambda p: int(p.stem[len("checkpoint_u"):]))
    if len(kept) < n:
        raise DataError(f"{run_dir} holds {len(kept)} checkpoint_u*.pt file(s), fewer than the {n} asked for")
    return kept[-n:]
