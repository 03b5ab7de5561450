"""Training configuration for ``ondevice train nmt``: a JSON file validated strictly.

Unknown keys, wrong types and out-of-range values raise ConfigError naming the
key, because a silently ignored typo in a multi-hour training run is expensive.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..translator import MAX_THREADS
from ..json_config import read_json_object

MODEL_KEYS = {"d_model", "ffn_dim", "heads", "encoder_layers", "decoder_layers", "dropout", "attention_dropout",
              "activation_dropout", "norm", "max_positions", "share_all_embeddings"}


@dataclass
class TrainConfig:
    data_dir: str                      # output of `ondevice data prepare`: {split}.{src,tgt} text files
    save_dir: str                      # checkpoints, tokenizer, config copy, logs
    src: str = "en"
    tgt: str = "de"
    train_split: str = "train"
    valid_split: str = "valid"
    vocab_size: int = 8000             # joint SentencePiece vocabulary
    tokenizer_type: str = "unigram"
    model: dict = field(default_factory=dict)  # TransformerConfig fields (vocab and special ids come from the tokenizer)
    max_tokens: int = 4096             # per batch: batch size x longest (source or target) sequence, padding included
    update_freq: int = 1               # batches accumulated per update
    lr: float = 7e-4
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    adam_betas: tuple = (0.9, 0.98)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    clip_norm: float = 0.0             # 0 = no clipping
    label_smoothing: float = 0.1
    max_len: int = 256                 # training pairs longer than this (in tokens, either side) are skipped
    max_updates: int = 0               # 0 = no limit
    max_epochs: int = 0                # 0 = no limit
    max_minutes: float = 0.0           # wall-clock budget of this run (0 = none); the run stays resumable
    validate_every: int = 1000         # updates between validations (also at every epoch end)
    save_every_minutes: float = 10.0
    patience: int = 0                  # stop after this many validations without a better valid loss (0 = off)
    keep_checkpoints: int = 5          # per-validation checkpoints kept for averaging
    seed: int = 1
    threads: int = 0                   # torch intra-op threads (0 = all usable cores)
    bf16: bool = False                 # bfloat16 autocast for the forward pass (fp32 master weights and loss):
                                       # ~1.8x faster on CPUs with AVX512-BF16/AMX, slower on others

    def validate(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ConfigError(msg)

        need(bool(self.src) and bool(self.tgt) and self.src != self.tgt, "src and tgt must be two different languages")
        need(self.vocab_size >= 32, "vocab_size must be >= 32")
        need(self.tokenizer_type in ("unigram", "bpe"), "tokenizer_type must be 'unigram' or 'bpe'")
        unknown = set(self.model) - MODEL_KEYS
        need(not unknown, f"unknown model key(s) {sorted(unknown)}; allowed: {sorted(MODEL_KEYS)}")
        need(self.max_tokens >= 16 and self.update_freq >= 1, "max_tokens must be >= 16 and update_freq >= 1")
        need(self.lr > 0 and self.warmup_updates >= 0 and self.warmup_init_lr >= 0, "lr must be > 0, warmups >= 0")
        need(len(self.adam_betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.adam_betas),
             "adam_betas: two numbers in [0, 1)")
        need(0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)")
        need(self.max_len >= 2, "max_len must be >= 2")
        need(min(self.max_updates, self.max_epochs, self.max_minutes, self.patience, self.threads) >= 0,
             "max_updates, max_epochs, max_minutes, patience and threads must be >= 0")
        need(self.threads <= MAX_THREADS, f"threads must be <= {MAX_THREADS}")
        need(self.validate_every >= 1 and self.save_every_minutes > 0 and self.keep_checkpoints >= 1,
             "validate_every, save_every_minutes and keep_checkpoints must be positive")


def config_from_dict(d: dict[str, Any], origin: str = "config") -> TrainConfig:
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = set(d) - set(fields)
    if unknown:
        raise ConfigError(f"{origin}: unknown key(s) {sorted(unknown)}; allowed: {sorted(fields)}")
    missing = [k for k in ("data_dir", "save_dir") if k not in d]
    if missing:
        raise ConfigError(f"{origin}: missing required key(s) {missing}")
    kwargs = {}
    for name, value in d.items():
        default = fields[name].default
        expected = type(default) if default is not dataclasses.MISSING else str
        if fields[name].default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            expected = dict
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if expected is tuple and isinstance(value, list):
            value = tuple(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"{origin}: {name} must be {expected.__name__}, got {value!r}")
        kwargs[name] = value
    cfg = TrainConfig(**kwargs)
    cfg.validate()
    return cfg


def load_config(path: str | os.PathLike, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Reads a JSON config; ``overrides`` (e.g. from the command line) replace top-level keys.

    Relative data_dir/save_dir are taken relative to the config file's directory.
    """
    p = Path(path)
    d = read_json_object(p)
    for key in ("data_dir", "save_dir"):  # paths in the file are relative to the file
        if isinstance(d.get(key), str) and not os.path.isabs(d[key]):
            d[key] = str((p.parent / d[key]).resolve())
    for key, value in (overrides or {}).items():
        if key.startswith("model."):  # --set model.dropout=0.3 changes one model key
            d["model"] = {**d.get("model", {}), key[len("model."):]: value}
        elif key in ("data_dir", "save_dir") and isinstance(value, str):
            d[key] = os.path.abspath(value)  # paths on the command line are relative to the cwd
        else:
            d[key] = value
    return config_from_dict(d, str(p))
