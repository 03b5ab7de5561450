"""Embedding bits by word frequency: Algorithm 1 of Chung et al. (2020).

Words are ranked by their frequency in the training data (most frequent first)
and the ranked vocabulary is cut into as many clusters as there are bit values
(``bits = [4, 3, 2, 1]``: four clusters).  Cluster ``i`` gets ``bits[i]`` bits and
the cluster sizes grow geometrically by the ratio ``r``: they are proportional
to ``1, r, r^2, ..., r^(C-1)``, so a large ``r`` puts most of the vocabulary
into the 1-bit cluster.  With bits 4, 3, 2, 1 the average is::

    (4 + 3 r + 2 r^2 + r^3) / (1 + r + r^2 + r^3)

    r = 1: 2.5    r = 2: 1.733    r = 4: 1.318    r = 8: 1.142

which are the paper's 2.5 / 1.73 / 1.3 / 1.1 (the last two are reported there
with one decimal).  Integer cluster boundaries are the rounded cumulative
fractions ``round(V * (1 + r + ... + r^(j-1)) / (1 + r + ... + r^(C-1)))``, so the
sizes always add up to the vocabulary size ``V``.

Everything here is numpy; :func:`token_frequencies` needs sentencepiece (via
:class:`ondevice.nmt.tokenizer.Tokenizer`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import ConfigError, DataError

__all__ = ["DEFAULT_BITS", "cluster_sizes", "cluster_row_bits", "cluster_average_bits", "frequency_rank",
           "embedding_bits", "token_frequencies", "check_cluster_spec"]

DEFAULT_BITS = (4, 3, 2, 1)
MAX_BITS = 4


def check_cluster_spec(ratio, bits, key: str = "embedding") -> tuple[float, tuple[int, ...]]:
    """Validate a frequency-cluster spec; ConfigError names ``key.ratio`` / ``key.bits``."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float, np.integer, np.floating)) \
            or not np.isfinite(ratio) or ratio <= 0:
        raise ConfigError(f"{key}.ratio must be a positive number, got {ratio!r}")
    if isinstance(bits, (str, bytes)) or not isinstance(bits, (list, tuple, np.ndarray)) or len(bits) == 0:
        raise ConfigError(f"{key}.bits must be a non-empty list of bits (1..{MAX_BITS}), got {bits!r}")
    out = []
    for b in bits:
        if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)) or not 1 <= b <= MAX_BITS:
            raise ConfigError(f"{key}.bits values must be integers in 1..{MAX_BITS}, got {b!r}")
        out.append(int(b))
    if any(a < b for a, b in zip(out, out[1:])):
        raise ConfigError(f"{key}.bits must be non-increasing (the most frequent words come first), got {out}")
    return float(ratio), tuple(out)


def cluster_sizes(vocab_size: int, ratio: float, n_clusters: int) -> np.ndarray:
    """Sizes (int64, summing to ``vocab_size``) of ``n_clusters`` clusters proportional to 1, r, r^2, ..."""
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ConfigError(f"vocab_size must be an integer >= 1, got {vocab_size!r}")
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, (int, np.integer)) or n_clusters < 1:
        raise ConfigError(f"n_clusters must be an integer >= 1, got {n_clusters!r}")
    ratio, _ = check_cluster_spec(ratio, [1])
    weights = ratio ** np.arange(n_clusters, dtype=np.float64)
    cum = np.concatenate([[0.0], np.cumsum(weights)]) / weights.sum()
    bounds = np.floor(cum * vocab_size + 0.5).astype(np.int64)  # round half up: deterministic
    bounds[0], bounds[-1] = 0, vocab_size
    return np.diff(bounds)


def cluster_row_bits(vocab_size: int, ratio: float, bits: Sequence[int] = DEFAULT_BITS) -> np.ndarray:
    """Bits of each frequency *rank* (rank 0 = most frequent word): uint8 [vocab_size]."""
    ratio, bits = check_cluster_spec(ratio, bits)
    sizes = cluster_sizes(vocab_size, ratio, len(bits))
    return np.repeat(np.asarray(bits, dtype=np.uint8), sizes)


def cluster_average_bits(vocab_size: int, ratio: float, bits: Sequence[int] = DEFAULT_BITS) -> float:
    """Average bits per embedding row under Algorithm 1 (independent of which word is where)."""
    return float(cluster_row_bits(vocab_size, ratio, bits).mean(dtype=np.float64))


def frequency_rank(frequencies, demote_ids: Iterable[int] = ()) -> np.ndarray:
    """Vocabulary ids ordered most frequent first; ties by ascending id (deterministic).

    ``demote_ids`` (e.g. the padding id, whose embedding row is never looked up by
    a real token) rank after every other id, whatever their counts.
    """
    f = np.asarray(frequencies)
    if f.ndim != 1 or f.size == 0 or f.dtype.kind not in "iuf":
        raise ConfigError(f"frequencies must be a non-empty 1-D array of counts, got shape {f.shape} "
                          f"dtype {f.dtype}")
    if f.dtype.kind == "f" and not np.isfinite(f).all():
        raise ConfigError("frequencies contain NaN or inf")
    demoted = np.zeros(f.size, dtype=bool)
    for i in demote_ids:
        if 0 <= int(i) < f.size:
            demoted[int(i)] = True
    ids = np.arange(f.size)
    # lexsort: the last key is the primary one
    return np.lexsort((ids, -f.astype(np.float64), demoted))


def embedding_bits(frequencies, ratio: float = 1.0, bits: Sequence[int] = DEFAULT_BITS,
                   demote_ids: Iterable[int] = ()) -> np.ndarray:
    """Algorithm 1: per-row bits (uint8, one per vocabulary id) from word frequencies.

    ``frequencies[i]`` is the count of id ``i`` in the training data (see
    :func:`token_frequencies`).  More frequent ids never get fewer bits than less
    frequent ones (``bits`` must be non-increasing).
    """
    ratio, bits = check_cluster_spec(ratio, bits)
    order = frequency_rank(frequencies, demote_ids)
    out = np.empty(order.size, dtype=np.uint8)
    out[order] = cluster_row_bits(order.size, ratio, bits)
    return out


def token_frequencies(tokenizer, text_files: Iterable[str | os.PathLike], batch_lines: int = 4096,
                      max_lines: int | None = None) -> np.ndarray:
    """Counts of every vocabulary id over ``text_files`` (one sentence per line), int64 [vocab].

    Ids come from ``tokenizer.encode`` (:class:`ondevice.nmt.tokenizer.Tokenizer`), which
    appends eos once per sentence, so eos counts one per non-empty line (it is among the
    most frequent ids, as it is in training).  Empty lines are skipped.  Ids that never
    occur in text (pad, bos) keep a count of 0; :func:`embedding_bits` ranks ties by id,
    and ``demote_ids=(pad_id,)`` puts pad last.  ``max_lines`` caps the lines read per file.
    """
    vocab = int(tokenizer.vocab_size)
    counts = np.zeros(vocab, dtype=np.int64)
    files = [Path(f) for f in text_files]
    if not files:
        raise DataError("token_frequencies needs at least one text file")

    def flush(batch: list[str]) -> None:
        if not batch:
            return
        seqs = tokenizer.encode(batch)
        flat = np.fromiter((i for s in seqs for i in s), dtype=np.int64)
        if flat.size and (flat.min() < 0 or flat.max() >= vocab):
            raise DataError(f"tokenizer produced an id outside 0..{vocab - 1}")
        counts[:] += np.bincount(flat, minlength=vocab)

    for f in files:
        if not f.is_file():
            raise DataError(f"text file {f} does not exist")
        batch: list[str] = []
        with open(f, encoding="utf-8") as fh:
            for n, line in enumerate(fh):
                if max_lines is not None and n >= max_lines:
                    break
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                batch.append(line)
                if len(batch) >= batch_lines:
                    flush(batch)
                    batch = []
        flush(batch)
    return counts
