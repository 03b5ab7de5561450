"""Tokenized parallel data and token-count batching for NMT training."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .tokenizer import EOS, PAD, Tokenizer


def read_lines(path: Path) -> list[str]:
    """Lines split on "\n" only (a stray "\r" inside a sentence must not shift the alignment);
    a missing final newline does not lose the last line."""
    try:
        lines = path.read_bytes().decode("utf-8").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        return lines
    except FileNotFoundError:
        raise DataError(f"{path} does not exist (run `ondevice data prepare` first)") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not valid UTF-8: {e}") from None


def read_parallel(data_dir: str | Path, split: str, src: str, tgt: str) -> tuple[list[str], list[str]]:
    d = Path(data_dir)
    s, t = read_lines(d / f"{split}.{src}"), read_lines(d / f"{split}.{tgt}")
    if len(s) != len(t):
        raise DataError(f"{d}/{split}.{src} has {len(s)} lines but {split}.{tgt} has {len(t)}")
    if not s:
        raise DataError(f"{d}/{split}.{src} is empty")
    return s, t


@dataclass
class ParallelData:
    """Token ids (each ending with eos) of aligned sentence pairs."""

    src: list[np.ndarray]
    tgt: list[np.ndarray]

    @classmethod
    def load(cls, data_dir: str | Path, split: str, src: str, tgt: str, tok: Tokenizer,
             max_len: int | None = None) -> "ParallelData":
        s, t = read_parallel(data_dir, split, src, tgt)
        sid, tid = tok.encode(s), tok.encode(t)
        pairs = [(a, b) for a, b in zip(sid, tid) if max_len is None or (len(a) <= max_len and len(b) <= max_len)]
        if not pairs:
            raise DataError(f"no {split} pair of {data_dir} is within max_len={max_len} tokens")
        return cls([np.asarray(a, np.int64) for a, _ in pairs], [np.asarray(b, np.int64) for _, b in pairs])

    def __len__(self) -> int:
        return len(self.src)

    def num_target_tokens(self) -> int:
        return int(sum(len(t) for t in self.tgt))


def make_batches(data: ParallelData, max_tokens: int) -> list[np.ndarray]:
    """Groups sentence indices into batches of at most ``max_tokens`` padded tokens.

    Sentences are sorted by (target, source) length so batches waste little
    padding (fairseq's strategy); the order of batches is shuffled per epoch by the caller.
    """
    src_len = np.array([len(s) for s in data.src])
    tgt_len = np.array([len(t) for t in data.tgt])
    order = np.lexsort((src_len, tgt_len))
    batches: list[np.ndarray] = []
    cur: list[int] = []
    cur_max = 0
    for i in order:
        n = max(src_len[i], tgt_len[i])
        if cur and max(cur_max, n) * (len(cur) + 1) > max_tokens:
            batches.append(np.array(cur))
            cur, cur_max = [], 0
        cur.append(int(i))
        cur_max = max(cur_max, n)
    if cur:
        batches.append(np.array(cur))
    return batches


def collate(data: ParallelData, idx: np.ndarray):
    """Padded tensors: source, decoder input (eos + target[:-1], fairseq's convention) and target."""
    import torch

    srcs = [data.src[i] for i in idx]
    tgts = [data.tgt[i] for i in idx]
    s = torch.full((len(idx), max(map(len, srcs))), PAD, dtype=torch.long)
    t = torch.full((len(idx), max(map(len, tgts))), PAD, dtype=torch.long)
    prev = torch.full_like(t, PAD)
    for j, (a, b) in enumerate(zip(srcs, tgts)):
        s[j, : len(a)] = torch.from_numpy(a)
        t[j, : len(b)] = torch.from_numpy(b)
        prev[j, 0] = EOS
        prev[j, 1: len(b)] = torch.from_numpy(b[:-1])
    return s, prev, t
