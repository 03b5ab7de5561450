"""``ondevice train qat``: quantization-aware retraining of a trained fp32 model in phases, resumable.

Quantizing the whole Transformer at once does the most damage; retraining block by block (by
default embedding, then decoder, then encoder, the order of Chung et al., 2020) lets each phase
recover from part of it while the still-fp32 rest of the network adapts around the quantized
part.  A :class:`QATConfig` lists such phases.  Phase ``k``:

* fake-quantizes (:mod:`ondevice.quant.fake_quant`) the matrices of its ``blocks`` with the
  plan's bits, starting from their current (already retrained) weights;
* keeps the matrices of earlier phases quantized and *frozen*: their latent weights (and
  scales) get no gradient and their parametrizations are never re-quantized, so the
  quantization an earlier phase settled on stays exactly as it was;
* trains, with a fresh Adam, the current phase's latent weights through the
  straight-through estimator (re-quantized every ``refresh_every`` updates, the paper's
  "regularization frequency") and, with ``train_other`` (default for ``"ste"`` phases), every
  parameter that is not a quantized matrix: biases, LayerNorms and not-yet-quantized matrices.
* An ``"alpha"`` phase (AlphaTuning) switches every quantized matrix to frozen signs with
  trainable scales and trains only those scales (plus the others with ``train_other``).

Learning rate: constant per phase after a linear warm-up over the phase's first
``warmup_updates`` updates (default ``min(100, updates // 10)``).  Retraining starts from a
converged model, so a decaying schedule buys little, while the warm-up keeps the fresh Adam
(no second-moment estimate yet) from kicking the weights right after quantization.

Files in ``save_dir``: ``checkpoint_last.pt`` (the resumable state: phase, updates, position in
the batch order, model state with its parametrizations, optimizer), ``phase<k>_<name>.pt`` at
each phase end, and at the end ``qat_final.pt`` (training-checkpoint format with the quantized
values baked in: ``ondevice eval nmt --model SAVE_DIR --checkpoint qat_final.pt`` scores it),
``qat_final.pt.json`` (plan, average bits, size report, validations) and ``qat_final_bcq.pt``
(the BCQ matrices for a packer, see :func:`read_bcq_export`).  ``spm.model`` and
``model_config.json`` are copied so ``save_dir`` is a model directory.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from .. import bcq
from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import ConfigError, DataError
from ..translator import MAX_THREADS
from ..json_config import read_json_object
from ..nmt.train import (CHECKPOINT_LAST, _batch_seed, _log_stderr, _StopFlag, atomic_torch_save, batch_loss,
                         evaluate_loss)
from ..progress import Progress
from .plan import BLOCK_OF_KIND, QuantPlan, average_bits, classify, size_report
from .ptq import _as_plan, resolve_frequencies

__all__ = ["Phase", "QATConfig", "qat_config_from_dict", "load_qat_config", "train_qat", "read_bcq_export",
           "BLOCKS", "FINAL_CHECKPOINT", "FINAL_BCQ"]

BLOCKS = ("embedding", "encoder", "decoder")
PHASE_MODES = ("ste", "alpha")
FINAL_CHECKPOINT = "qat_final.pt"
FINAL_BCQ = "qat_final_bcq.pt"
ADAM_BETAS = (0.9, 0.98)  # fairseq's Transformer setting, as the fp32 training uses by default
ADAM_EPS = 1e-8
_NAME = re.compile(r"[A-Za-z0-9_.-]+")  # phase names become file names


@dataclass(frozen=True)
class Phase:
    """One retraining phase (see the module docstring)."""

    name: str
    blocks: tuple[str, ...]
    updates: int
    lr: float
    refresh_every: int = 1  # ste: re-quantize every N updates (1 = every update)
    mode: str = "ste"
    train_other: bool | None = None  # None: True for "ste", False for "alpha"
    warmup_updates: int | None = None  # None: min(100, updates // 10)

    def __post_init__(self) -> None:
        if self.train_other is None:
            object.__setattr__(self, "train_other", self.mode == "ste")
        if self.warmup_updates is None:
            object.__setattr__(self, "warmup_updates", min(100, self.updates // 10))

    def lr_at(self, done: int) -> float:
        """Learning rate of the update after ``done`` updates of this phase (linear warm-up, then flat)."""
        w = int(self.warmup_updates or 0)
        return self.lr * min(1.0, (done + 1) / w) if w > 0 else self.lr

    def structure(self) -> dict[str, Any]:
        """What fixes which parametrizations exist and how they train: a resume must not change it."""
        return {"name": self.name, "blocks": list(self.blocks), "mode": self.mode,
                "refresh_every": self.refresh_every, "train_other": self.train_other}


def default_phases() -> list[dict[str, Any]]:
    """The paper's order: embedding, decoder, encoder (each with the straight-through estimator), then
    AlphaTuning of all scales.  Updates and learning rates are starting points, not tuned values."""
    return [{"name": "embedding", "blocks": ["embedding"], "updates": 2000, "lr": 1e-4},
            {"name": "decoder", "blocks": ["decoder"], "updates": 2000, "lr": 1e-4},
            {"name": "encoder", "blocks": ["encoder"], "updates": 2000, "lr": 1e-4},
            {"name": "alpha", "blocks": [], "updates": 1000, "lr": 1e-4, "mode": "alpha"}]


_PHASE_TYPES: dict[str, type | tuple[type, ...]] = {"name": str, "blocks": list, "updates": int, "lr": float,
                                                    "refresh_every": int, "mode": str, "train_other": bool,
                                                    "warmup_updates": int}


def _check_type(where: str, value: Any, expected: type | tuple[type, ...]) -> Any:
    """``value`` (ints accepted for floats) or ConfigError naming ``where``; bools are not ints."""
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    types = expected if isinstance(expected, tuple) else (expected,)
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        names = " or ".join("object" if t is dict else t.__name__ for t in types)
        raise ConfigError(f"{where} must be {names}, got {value!r}")
    return value


def phase_from_dict(d: Any, index: int) -> Phase:
    """A :class:`Phase` from its JSON object; errors name ``phases[index].key``."""
    where = f"phases[{index}]"
    if not isinstance(d, Mapping):
        raise ConfigError(f"{where} must be an object like {{\"name\": ..., \"blocks\": [...], \"updates\": ..., "
                          f"\"lr\": ...}}, got {d!r}")
    unknown = sorted(set(d) - set(_PHASE_TYPES))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_PHASE_TYPES)}")
    missing = [k for k in ("name", "blocks", "updates", "lr") if k not in d]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {missing}")
    kw = {k: _check_type(f"{where}.{k}", v, _PHASE_TYPES[k]) for k, v in d.items()}
    if not _NAME.fullmatch(kw["name"]):
        raise ConfigError(f"{where}.name must be letters, digits, '_', '.' or '-' (it names a file), "
                          f"got {kw['name']!r}")
    blocks = kw["blocks"]
    for b in blocks:
        if b not in BLOCKS:
            raise ConfigError(f"{where}.blocks: unknown block {b!r} (expected some of {', '.join(BLOCKS)})")
    if len(set(blocks)) != len(blocks):
        raise ConfigError(f"{where}.blocks lists a block twice: {blocks}")
    kw["blocks"] = tuple(blocks)
    mode = kw.get("mode", "ste")
    if mode not in PHASE_MODES:
        raise ConfigError(f"{where}.mode must be one of {', '.join(PHASE_MODES)}, got {mode!r}")
    if kw["updates"] < 1:
        raise ConfigError(f"{where}.updates must be >= 1, got {kw['updates']}")
    if not kw["lr"] > 0:
        raise ConfigError(f"{where}.lr must be > 0, got {kw['lr']}")
    if kw.get("refresh_every", 1) < 1:
        raise ConfigError(f"{where}.refresh_every must be >= 1, got {kw['refresh_every']}")
    if mode == "alpha" and kw.get("refresh_every", 1) != 1:
        raise ConfigError(f"{where}.refresh_every applies to 'ste' phases only (an 'alpha' phase keeps its signs)")
    if kw.get("warmup_updates", 0) < 0:
        raise ConfigError(f"{where}.warmup_updates must be >= 0, got {kw['warmup_updates']}")
    if mode == "ste" and not blocks:
        raise ConfigError(f"{where}: an 'ste' phase needs at least one block to quantize")
    return Phase(**kw)


@dataclass
class QATConfig:
    model_dir: str                     # fp32 training (or model) directory: spm.model + checkpoint
    data_dir: str                      # {split}.{src,tgt} text files, as for `ondevice train nmt`
    save_dir: str                      # checkpoints and final files of the retraining (not model_dir)
    plan: str | dict[str, Any]         # built-in plan name, plan JSON file, or the plan object itself
    checkpoint: str = "checkpoint_best.pt"  # in model_dir; an averaged checkpoint works too
    src: str = "en"
    tgt: str = "de"
    train_split: str = "train"
    valid_split: str = "valid"
    frequencies_split: str = "train"   # word counts for a frequency-clustered embedding (Algorithm 1)
    max_tokens: int = 4096             # per batch, padding included
    max_len: int = 256                 # longer training pairs (tokens, either side) are skipped
    label_smoothing: float = 0.1
    bf16: bool = False                 # bfloat16 autocast for training forwards (validation stays fp32)
    iters: int = 15                    # alternating-BCQ iterations per quantization
    validate_every: int = 500          # updates within a phase between validations (and at each phase end)
    save_every_minutes: float = 10.0
    max_minutes: float = 0.0           # wall-clock budget of this invocation (0 = none); the run stays resumable
    max_updates_this_run: int = 0      # stop after this many updates in this invocation (0 = no limit)
    seed: int = 1                      # batch order and dropout
    threads: int = 0                   # torch intra-op threads (0 = all usable cores)
    phases: list[dict[str, Any]] = field(default_factory=default_phases)

    def validate(self) -> None:
        """Range checks, the plan, and the phases (each block quantized by exactly one phase)."""
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(bool(self.src) and bool(self.tgt) and self.src != self.tgt, "src and tgt must be two different languages")
        need(self.max_tokens >= 16, "max_tokens must be >= 16")
        need(self.max_len >= 2, "max_len must be >= 2")
        need(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        need(self.iters >= 1, "iters must be >= 1")
        need(self.validate_every >= 1 and self.save_every_minutes > 0,
             "validate_every and save_every_minutes must be positive")
        need(min(self.max_minutes, self.max_updates_this_run, self.threads) >= 0,
             "max_minutes, max_updates_this_run and threads must be >= 0")
        need(self.threads <= MAX_THREADS, f"threads must be <= {MAX_THREADS}")
        need(Path(self.model_dir).resolve() != Path(self.save_dir).resolve(),
             "save_dir must differ from model_dir (both hold a checkpoint_last.pt)")
        _as_plan(self.plan)
        self.phase_list()

    def phase_list(self) -> list[Phase]:
        """The phases, validated: names unique, every block quantized by exactly one phase, and an
        'alpha' phase only once something is quantized."""
        if not isinstance(self.phases, list) or not self.phases:
            raise ConfigError("phases must be a non-empty list of phase objects")
        phases = [phase_from_dict(d, i) for i, d in enumerate(self.phases)]
        seen_names: set[str] = set()
        owner: dict[str, str] = {}
        for i, ph in enumerate(phases):
            if ph.name in seen_names:
                raise ConfigError(f"phases[{i}].name {ph.name!r} is used by another phase")
            seen_names.add(ph.name)
            if ph.mode == "alpha" and not ph.blocks and not owner:
                raise ConfigError(f"phases[{i}] ('alpha' without blocks) has nothing to tune: no earlier phase "
                                  "quantizes a block")
            for b in ph.blocks:
                if b in owner:
                    raise ConfigError(f"phases[{i}].blocks: {b} is already quantized by phase {owner[b]!r}")
                owner[b] = ph.name
        missing = [b for b in BLOCKS if b not in owner]
        if missing:
            raise ConfigError(f"no phase quantizes {', '.join(missing)}: every block of the plan must be in "
                              "exactly one phase's blocks")
        return phases


_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "model_dir": str, "data_dir": str, "save_dir": str, "plan": (str, dict), "checkpoint": str, "src": str,
    "tgt": str, "train_split": str, "valid_split": str, "frequencies_split": str, "max_tokens": int,
    "max_len": int, "label_smoothing": float, "bf16": bool, "iters": int, "validate_every": int,
    "save_every_minutes": float, "max_minutes": float, "max_updates_this_run": int, "seed": int, "threads": int,
    "phases": list}
_REQUIRED = ("model_dir", "data_dir", "save_dir", "plan")
_PATH_KEYS = ("model_dir", "data_dir", "save_dir")


def qat_config_from_dict(d: Mapping[str, Any], origin: str = "config") -> QATConfig:
    """A validated :class:`QATConfig`; unknown keys, wrong types and bad values raise ConfigError."""
    if not isinstance(d, Mapping):
        raise ConfigError(f"{origin}: the top level must be a JSON object")
    unknown = sorted(set(d) - set(_CONFIG_TYPES))
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {unknown}; allowed: {sorted(_CONFIG_TYPES)}")
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ConfigError(f"{origin}: missing required key(s) {missing}")
    try:
        cfg = QATConfig(**{k: _check_type(k, v, _CONFIG_TYPES[k]) for k, v in d.items()})
        cfg.validate()
    except ConfigError as e:
        raise ConfigError(f"{origin}: {e}") from None
    return cfg


def _is_plan_file(value: Any) -> bool:
    return isinstance(value, str) and value.endswith(".json")


def load_qat_config(path: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> QATConfig:
    """Reads a JSON config; ``overrides`` (``--set``) replace top-level keys.  Relative paths
    (model_dir, data_dir, save_dir, a plan file) are relative to the config file, those given
    as overrides to the current directory."""
    p = Path(path)
    d = read_json_object(p)
    for key in _PATH_KEYS + ("plan",):
        v = d.get(key)
        if isinstance(v, str) and not os.path.isabs(v) and (key != "plan" or _is_plan_file(v)):
            d[key] = str((p.parent / v).resolve())
    for key, value in (overrides or {}).items():
        if isinstance(value, str) and (key in _PATH_KEYS or (key == "plan" and _is_plan_file(value))):
            value = os.path.abspath(value)
        d[key] = value
    return qat_config_from_dict(d, str(p))


# --------------------------------------------------------------------------- model surgery


def _block_of(param_name: str) -> str:
    """embedding / encoder / decoder of a quantizable weight (a key of ``QuantPlan.assign``)."""
    c = classify(param_name.rsplit(".", 1)[0])
    if c is None:
        raise ConfigError(f"{param_name} is not a weight a quantization plan covers")
    return BLOCK_OF_KIND[c[0]]


def _parametrized(model, name: str):
    """(BCQFakeQuant, latent weight) of the fake-quantized weight ``name``."""
    from .fake_quant import BCQFakeQuant

    plist = model.get_submodule(name.rsplit(".", 1)[0]).parametrizations["weight"]
    return next(p for p in plist if isinstance(p, BCQFakeQuant)), plist.original


class _Phases:
    """Attaches the phases' parametrizations to a model and sets what trains in each phase."""

    def __init__(self, model, plan: QuantPlan, phases: list[Phase], assignment: Mapping[str, Any], iters: int):
        self.model, self.plan, self.phases, self.iters = model, plan, phases, iters
        self.names = [[n for n in assignment if _block_of(n) in ph.blocks] for ph in phases]
        self.assignment = assignment

    def attach(self, k: int) -> None:
        """Quantize phase ``k``'s matrices (from the current weights); an 'alpha' phase first switches
        every quantized matrix to AlphaTuning."""
        from .fake_quant import apply_fake_quant, to_alpha_tuning

        ph, plan = self.phases[k], self.plan
        if ph.mode == "alpha":
            to_alpha_tuning(self.model)
        part = {n: self.assignment[n] for n in self.names[k]}
        if part:
            apply_fake_quant(self.model, part, group_size=plan.group_size, method=plan.method, offset=plan.offset,
                             iters=self.iters, refresh_every=ph.refresh_every, mode=ph.mode,
                             alpha_dtype=plan.alpha_dtype)

    def set_trainable(self, k: int) -> list:
        """requires_grad for phase ``k`` (see the module docstring); returns the trainable parameters in
        ``model.parameters()`` order, so a rebuilt model lines up with a saved optimizer state."""
        from .fake_quant import alpha_parameters, fake_quant_modules

        ph, model = self.phases[k], self.model
        latents = {id(m.parametrizations["weight"].original) for _, m, _ in fake_quant_modules(model)}
        scales = alpha_parameters(model)
        for p in model.parameters():
            p.requires_grad_(False)
        if ph.mode == "alpha":
            for t in scales:
                t.requires_grad_(True)
        else:
            for n in self.names[k]:
                _parametrized(model, n)[1].requires_grad_(True)
        if ph.train_other:
            quantized = latents | {id(t) for t in scales}
            for p in model.parameters():
                if id(p) not in quantized:
                    p.requires_grad_(True)
        return [p for p in model.parameters() if p.requires_grad]

    def refreshing(self, k: int) -> list:
        """(parametrization, latent) pairs re-quantized during phase ``k`` (its ste matrices)."""
        return [_parametrized(self.model, n) for n in self.names[k]] if self.phases[k].mode == "ste" else []

    def quantized_names(self, upto: int) -> list[str]:
        return sorted(n for k in range(upto) for n in self.names[k])


def _baked_state(model) -> dict:
    """A plain state dict with the quantized values in place of the fake-quantized weights."""
    from .fake_quant import remove_fake_quant

    plain = copy.deepcopy(model)
    remove_fake_quant(plain, bake=True)
    return plain.state_dict()


# --------------------------------------------------------------------------- BCQ export


def _bcq_export(results: Mapping[str, bcq.BCQResult]) -> dict[str, dict[str, Any]]:
    """Tensor form of ``export_bcq``'s results (signs packed 8 per byte, numpy's bitorder='little')."""
    import torch

    out = {}
    for name, r in results.items():
        out[name] = {"signs": torch.from_numpy(np.packbits(r.signs, axis=2, bitorder="little")),
                     "cols": int(r.signs.shape[2]), "alpha": torch.from_numpy(np.ascontiguousarray(r.alpha)),
                     "offset": None if r.offset is None else torch.from_numpy(np.ascontiguousarray(r.offset)),
                     "row_bits": torch.from_numpy(np.ascontiguousarray(r.row_bits)), "group_size": int(r.group_size)}
    return out


def read_bcq_export(path: str | os.PathLike) -> dict[str, bcq.BCQResult]:
    """``{weight name: BCQResult}`` from a ``qat_final_bcq.pt`` (ready for ``BCQMatrix.from_result``).

    The file is ``{"matrices": {name: {signs (uint8 [N, q, ceil(K/8)], bitorder little), cols, alpha,
    offset, row_bits, group_size}}, "tied": {alias: name}, "plan": ..., "model_config": ...}``; a tied
    embedding / output projection is stored once under its first name (see ``tied``)."""
    import torch

    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
        out = {}
        for name, m in d["matrices"].items():
            signs = np.unpackbits(m["signs"].numpy(), axis=2, count=m["cols"], bitorder="little").astype(bool)
            off = None if m["offset"] is None else m["offset"].numpy()
            out[name] = bcq.BCQResult(signs, m["alpha"].numpy(), off, m["row_bits"].numpy(), m["group_size"])
    except (KeyError, RuntimeError, TypeError, EOFError, OSError, AttributeError) as e:
        raise DataError(f"{path} is not a QAT BCQ export: {e}") from None
    return out


def _tied_aliases(model, names: list[str]) -> dict[str, str]:
    """alias weight name -> stored name, for weights shared by several modules (the tied embedding)."""
    from .fake_quant import fake_quant_modules

    by_p: dict[int, list[str]] = {}
    for mname, _, p in fake_quant_modules(model):
        by_p.setdefault(id(p), []).append(mname + ".weight")
    out = {}
    for aliases in by_p.values():
        stored = next(a for a in aliases if a in names)
        out.update({a: stored for a in aliases if a != stored})
    return out


# --------------------------------------------------------------------------- training


_ORDER_KEYS = ("src", "tgt", "train_split", "frequencies_split", "max_tokens", "max_len", "seed", "iters")


def _check_resumable(cfg: QATConfig, plan: QuantPlan, phases: list[Phase], ck: dict, train_pairs: int) -> None:
    """Refuse a resume under settings that would change the batch order, the quantization or the phases
    already (partly) done."""
    old = ck.get("config", {})
    changed = [k for k in _ORDER_KEYS if old.get(k) != getattr(cfg, k)]
    if ck.get("plan") != plan.to_dict():
        changed.append("plan")
    if ck.get("phases") != [ph.structure() for ph in phases]:
        changed.append("phases (names, blocks, modes, refresh_every, train_other)")
    if ck.get("train_pairs") != train_pairs:
        changed.append(f"training data ({ck.get('train_pairs')} -> {train_pairs} pairs)")
    if changed:
        raise ConfigError("cannot resume: these settings differ from the run being continued: " + ", ".join(changed)
                          + "; restore them or start a new save_dir")


def train_qat(cfg: QATConfig, resume: bool = True, progress: bool = True,
              log: Callable[..., None] = _log_stderr) -> dict[str, Any]:
    """Runs (or continues) the phased retraining per ``cfg``; returns a summary of this invocation.

    Stops after the last phase, on Ctrl-C/SIGTERM, ``max_minutes`` or ``max_updates_this_run``,
    always leaving a ``checkpoint_last.pt`` that the same call continues bit-identically.
    """
    import torch

    from ..nmt.data import ParallelData, collate, make_batches
    from ..nmt.evaluate import load_model
    from ..nmt.model import TransformerConfig, TransformerModel
    from ..nmt.tokenizer import Tokenizer
    from .fake_quant import export_bcq

    cfg.validate()
    plan, phases = _as_plan(cfg.plan), cfg.phase_list()
    save_dir = Path(cfg.save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads or max(1, len(os.sched_getaffinity(0))))
    last = save_dir / CHECKPOINT_LAST
    ck = None
    if last.exists():
        if not resume:
            raise ConfigError(f"{save_dir} already holds a run; pass resume or choose another save_dir")
        try:
            ck = torch.load(last, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - any unpickling failure means a damaged file
            raise DataError(f"{last} is not a readable checkpoint ({e}); restore it or use a new save_dir") from None
    if ck is None:
        model, _ = load_model(cfg.model_dir, cfg.checkpoint)
        spm = Path(cfg.model_dir) / "spm.model"
        if not spm.is_file():
            raise DataError(f"{spm} does not exist: model_dir must hold the tokenizer of its checkpoint")
        atomic_write_bytes(save_dir / "spm.model", spm.read_bytes())
    else:
        if ck.get("kind") != "qat" or "model_config" not in ck:
            raise ConfigError(f"{last} is not from `ondevice train qat`; use another save_dir")
        model = TransformerModel.from_config(TransformerConfig(**ck["model_config"]))
    model_config = dataclasses.asdict(model.config)
    tok = Tokenizer(save_dir / "spm.model")
    train_data = ParallelData.load(cfg.data_dir, cfg.train_split, cfg.src, cfg.tgt, tok, cfg.max_len)
    valid_data = ParallelData.load(cfg.data_dir, cfg.valid_split, cfg.src, cfg.tgt, tok, None)
    batches = make_batches(train_data, cfg.max_tokens)
    valid_batches = make_batches(valid_data, cfg.max_tokens)
    freq_spec = (cfg.data_dir, cfg.frequencies_split, [cfg.src, cfg.tgt])
    freqs = resolve_frequencies(plan, tok, freq_spec)
    stages = _Phases(model, plan, phases, plan.assign(model, freqs), cfg.iters)

    # phase: index of the running phase; attached: phases whose parametrizations exist;
    # phase_updates: updates done in the running phase; (epoch, batch_in_epoch): the data position.
    state: dict[str, Any] = {"phase": 0, "attached": 0, "phase_updates": 0, "updates": 0, "epoch": 1,
                             "batch_in_epoch": 0, "train_seconds": 0.0, "validations": [], "phases_done": []}
    opt_state = None
    if ck is not None:
        _check_resumable(cfg, plan, phases, ck, len(train_data))
        state.update(ck["state"])
        if state["phase"] < len(phases):  # a finished run needs no model
            for k in range(state["attached"]):
                stages.attach(k)
            model.load_state_dict(ck["model"])
            opt_state = ck["optimizer"]
            log(f"resumed from {last} at phase {state['phase'] + 1}/{len(phases)} ({phases[state['phase']].name}), "
                f"update {state['phase_updates']}")
    model.train()
    atomic_write_text(save_dir / "qat_config.json", json.dumps(dataclasses.asdict(cfg), indent=1) + "\n")
    atomic_write_text(save_dir / "model_config.json", json.dumps(model_config, indent=1) + "\n")

    opt = None

    def checkpoint() -> None:
        atomic_torch_save({"kind": "qat", "model": model.state_dict(),
                           "optimizer": None if opt is None else opt.state_dict(), "state": state,
                           "config": dataclasses.asdict(cfg), "plan": plan.to_dict(),
                           "phases": [ph.structure() for ph in phases], "model_config": model_config,
                           "train_pairs": len(train_data)}, last)

    def validate(k: int) -> dict[str, Any]:
        # fp32 even when training in bf16, as in `train nmt`: phases are compared on exact losses
        metrics = evaluate_loss(model, valid_data, valid_batches, cfg.label_smoothing, bf16=False)
        metrics.update(update=state["updates"], phase=phases[k].name, phase_update=state["phase_updates"])
        state["validations"].append(metrics)
        log(f"valid in phase {phases[k].name} at update {state['phase_updates']}/{phases[k].updates}: "
            f"loss {metrics['loss']:.3f} nll {metrics['nll']:.3f} ppl {metrics['ppl']:.2f}")
        return metrics

    def quantization_meta(upto: int) -> dict[str, Any]:
        return {"plan": plan.to_dict(), "method": "qat", "source_model_dir": str(cfg.model_dir),
                "source_checkpoint": cfg.checkpoint, "phases": [ph.name for ph in phases[:upto]],
                "quantized_blocks": [b for ph in phases[:upto] for b in ph.blocks]}

    def end_phase(k: int) -> None:
        """Settle phase ``k``: final re-quantization, validation, the phase file (and the final files)."""
        for p, w in stages.refreshing(k):
            if p.due():  # quantize the latest latent weights: this is what later phases keep frozen
                p.refresh(w)
        metrics = validate(k)
        baked = _baked_state(model)
        meta = quantization_meta(k + 1)
        atomic_torch_save({"model": baked, "model_config": model_config, "quantization": meta,
                           "qat_model": model.state_dict(), "update": state["updates"], "valid": metrics},
                          save_dir / f"phase{k + 1}_{phases[k].name}.pt")
        state["phases_done"].append({"name": phases[k].name, "updates": state["phase_updates"], "valid": metrics})
        if k == len(phases) - 1:
            write_final(baked, metrics)
        state["phase"], state["phase_updates"] = k + 1, 0
        checkpoint()

    def write_final(baked: dict, metrics: dict[str, Any]) -> None:
        names = stages.quantized_names(len(phases))
        results = export_bcq(model)
        report = size_report(plan, model.config, freqs)
        avg = report.average_bits if freqs is not None else average_bits(plan, model.config)
        quant = dict(quantization_meta(len(phases)), average_bits=float(avg))
        atomic_torch_save({"model": baked, "model_config": model_config, "quantization": quant,
                           "update": state["updates"], "valid": metrics}, save_dir / FINAL_CHECKPOINT)
        atomic_torch_save({"matrices": _bcq_export(results), "tied": _tied_aliases(model, list(results)),
                           "plan": plan.to_dict(), "model_config": model_config}, save_dir / FINAL_BCQ)
        fr = None
        if freqs is not None:
            fr = {"data_dir": str(cfg.data_dir), "split": cfg.frequencies_split, "langs": [cfg.src, cfg.tgt]}
        meta = {"plan": plan.to_dict(), "average_bits": float(avg), "size_report": report.to_dict(),
                "checkpoint": FINAL_CHECKPOINT, "bcq_export": FINAL_BCQ, "source_model_dir": str(cfg.model_dir),
                "source_checkpoint": cfg.checkpoint, "quantized": names, "frequencies_from": fr,
                "phases": [dict(dataclasses.asdict(ph), blocks=list(ph.blocks)) for ph in phases],
                "phase_results": state["phases_done"], "updates": state["updates"]}
        atomic_write_text(save_dir / (FINAL_CHECKPOINT + ".json"), json.dumps(meta, indent=1) + "\n")
        log(f"wrote {save_dir / FINAL_CHECKPOINT} ({avg:.3f} bits on average), {FINAL_BCQ} and "
            f"{FINAL_CHECKPOINT}.json")

    run_start = time.monotonic()
    last_save = run_start
    updates_this_run = tokens_this_run = 0
    stop_reason = "" if state["phase"] < len(phases) else "all phases done (nothing to do)"
    bar = Progress("qat", total=sum(ph.updates for ph in phases[state["phase"]:]) - state["phase_updates"] or None,
                   unit="upd", enabled=progress)
    order_epoch, order = -1, np.empty(0, dtype=np.int64)
    with _StopFlag() as stop:
        for k in range(state["phase"], len(phases)):
            if stop_reason:
                break
            ph = phases[k]
            if state["attached"] <= k:
                stages.attach(k)
                state["attached"] = k + 1
                log(f"phase {k + 1}/{len(phases)} ({ph.name}): {ph.mode}, quantizing "
                    f"{', '.join(ph.blocks) or 'nothing new'}; {ph.updates} updates at lr {ph.lr:g}")
            params = stages.set_trainable(k)
            opt = torch.optim.Adam(params, lr=ph.lr, betas=ADAM_BETAS, eps=ADAM_EPS)
            if opt_state is not None:
                opt.load_state_dict(opt_state)
                opt_state = None
            refreshing = stages.refreshing(k)
            while state["phase_updates"] < ph.updates and not stop_reason:
                if state["batch_in_epoch"] >= len(batches):
                    state["epoch"] += 1
                    state["batch_in_epoch"] = 0
                if order_epoch != state["epoch"]:
                    order_epoch = state["epoch"]
                    order = np.random.default_rng(cfg.seed + order_epoch).permutation(len(batches))
                b = state["batch_in_epoch"]
                torch.manual_seed(_batch_seed(cfg, state["epoch"], b))
                opt.zero_grad(set_to_none=True)
                loss, _, n = batch_loss(model, collate(train_data, batches[order[b]]), cfg.label_smoothing, cfg.bf16)
                (loss / max(n, 1)).backward()
                for g in opt.param_groups:
                    g["lr"] = ph.lr_at(state["phase_updates"])
                opt.step()
                for p, _ in refreshing:
                    p.advance()
                state["phase_updates"] += 1
                state["updates"] += 1
                state["batch_in_epoch"] = b + 1
                updates_this_run += 1
                tokens_this_run += n
                elapsed = time.monotonic() - run_start
                bar.update(1, phase=f"{k + 1}:{ph.name}", loss=float(loss.detach()) / max(n, 1) / math.log(2),
                           lr=opt.param_groups[0]["lr"], tok_s=tokens_this_run / max(elapsed, 1e-9))
                in_phase = state["phase_updates"] < ph.updates  # the phase end validates anyway
                if in_phase and state["phase_updates"] % cfg.validate_every == 0:
                    validate(k)
                if cfg.max_updates_this_run and updates_this_run >= cfg.max_updates_this_run:
                    stop_reason = f"reached max_updates_this_run={cfg.max_updates_this_run}"
                if cfg.max_minutes and elapsed >= 60 * cfg.max_minutes:
                    stop_reason = stop_reason or f"reached max_minutes={cfg.max_minutes}"
                if stop.requested:
                    stop_reason = stop_reason or "interrupted (resume with the same command)"
                now = time.monotonic()
                if in_phase and (stop_reason or now - last_save >= 60 * cfg.save_every_minutes):
                    state["train_seconds"] += now - last_save
                    last_save = now
                    checkpoint()
            if state["phase_updates"] >= ph.updates:
                now = time.monotonic()
                state["train_seconds"] += now - last_save
                last_save = now
                opt = None  # the next phase starts with a fresh optimizer
                end_phase(k)
    bar.close()
    finished = state["phase"] >= len(phases)
    if finished and not stop_reason:
        stop_reason = "all phases done"
    elapsed = time.monotonic() - run_start
    summary = {"stop_reason": stop_reason, "finished": finished,
               "phase": None if finished else phases[state["phase"]].name,
               "phase_updates": state["phase_updates"], "updates": state["updates"],
               "updates_this_run": updates_this_run, "phases_done": state["phases_done"],
               "final_checkpoint": str(save_dir / FINAL_CHECKPOINT) if finished else None,
               "run_seconds": elapsed, "train_seconds": state["train_seconds"],
               "target_tokens_per_second": tokens_this_run / max(elapsed, 1e-9)}
    log(f"stopped: {stop_reason}; {updates_this_run} updates this run, "
        f"{summary['target_tokens_per_second']:.0f} target tok/s")
    return summary
