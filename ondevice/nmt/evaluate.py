"""``ondevice eval nmt``: translate a held-out split with the PyTorch reference decoder and score it.

BLEU and chrF come from sacrebleu with their signatures, so numbers are
comparable; the translations are written out for inspection.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..atomic import atomic_write_text
from ..errors import ConfigError, DataError
from ..progress import Progress
from .data import read_parallel
from .tokenizer import PAD, Tokenizer


PACKED = "packed"  # the ``checkpoint`` value that names a packed model directory (docs/packed-model.md)


def resolve_checkpoint(model_dir: str | os.PathLike, checkpoint: str | None = None) -> str:
    """What :func:`load_model` loads: ``checkpoint`` as given, or for None the packed model when
    ``model_dir`` holds a manifest.json (a directory made by ``save_packed``), else checkpoint_best.pt."""
    if checkpoint is not None:
        return checkpoint
    return PACKED if (Path(model_dir) / "manifest.json").is_file() else "checkpoint_best.pt"


def load_model(model_dir: str | os.PathLike, checkpoint: str | None = None):
    """Loads (model, tokenizer) from a training directory, a shipped model directory or a packed model
    directory (``checkpoint="packed"``, or None with a manifest.json there; see :func:`resolve_checkpoint`)."""
    import torch

    from .model import TransformerConfig, TransformerModel

    d = Path(model_dir)
    checkpoint = resolve_checkpoint(d, checkpoint)
    if checkpoint == PACKED:
        from ..quant.packed_model import load_packed

        model, tok, _ = load_packed(d)
        return model, tok
    path = d / checkpoint
    if not path.exists():
        raise DataError(f"{path} does not exist")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=False)
        model = TransformerModel.from_config(TransformerConfig(**ck["model_config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck["model"].items()})
    except (KeyError, RuntimeError, TypeError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise DataError(f"{path} is not a usable checkpoint: {e}") from None
    model.eval()
    return model, Tokenizer(d / "spm.model")


def translate(model, tok: Tokenizer, sentences: Sequence[str], beam: int = 4, lenpen: float = 1.0,
              max_tokens: int = 2048, progress: bool = False, max_len_a: float = 1.2,
              max_len_b: int = 10) -> list[str]:
    """Translates in length-sorted batches (restoring the input order); beam=1 is greedy search.

    Outputs are at most ``max_len_a * source_tokens + max_len_b`` tokens (fairseq-generate's
    defaults are 0 and 200)."""
    import torch

    from .search import beam_search, greedy_search

    ids = tok.encode(sentences)
    order = np.argsort([len(x) for x in ids], kind="stable")
    out: list[str] = [""] * len(ids)
    bar = Progress("translate", total=len(ids), unit="sent", enabled=progress)
    i = 0
    with torch.no_grad():
        while i < len(order):
            j = i + 1
            while j < len(order) and len(ids[order[j]]) * (j - i + 1) * max(beam, 1) <= max_tokens:
                j += 1
            idx = order[i:j]
            src = torch.full((len(idx), max(len(ids[k]) for k in idx)), PAD, dtype=torch.long)
            for r, k in enumerate(idx):
                src[r, : len(ids[k])] = torch.tensor(ids[k])
            hyps = (greedy_search(model, src, max_len_a=max_len_a, max_len_b=max_len_b) if beam == 1 else
                    beam_search(model, src, beam=beam, lenpen=lenpen, max_len_a=max_len_a, max_len_b=max_len_b))
            for k, text in zip(idx, tok.decode(hyps)):
                out[k] = text
            bar.update(len(idx))
            i = j
    bar.close()
    return out


def score(hypotheses: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    import sacrebleu

    bleu = sacrebleu.metrics.BLEU()
    chrf = sacrebleu.metrics.CHRF()
    b = bleu.corpus_score(list(hypotheses), [list(references)])
    c = chrf.corpus_score(list(hypotheses), [list(references)])
    return {"bleu": round(b.score, 2), "chrf": round(c.score, 2), "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "sentences": len(hypotheses)}


def evaluate(model_dir: str | os.PathLike, data_dir: str | os.PathLike, split: str, src: str, tgt: str,
             beam: int = 4, lenpen: float = 1.0, limit: int | None = None, output: str | os.PathLike | None = None,
             checkpoint: str | None = None, progress: bool = True, max_len_a: float = 1.2,
             max_len_b: int = 10) -> dict[str, Any]:
    """Scores ``split`` of ``data_dir``; writes translations (one per line) to ``output`` if given.

    ``checkpoint``: see :func:`resolve_checkpoint` (None: the packed model or checkpoint_best.pt)."""
    sources, refs = read_parallel(data_dir, split, src, tgt)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"limit must be a positive number of sentences, got {limit}")
        sources, refs = sources[:limit], refs[:limit]
    checkpoint = resolve_checkpoint(model_dir, checkpoint)
    model, tok = load_model(model_dir, checkpoint)
    hyps = translate(model, tok, sources, beam=beam, lenpen=lenpen, progress=progress, max_len_a=max_len_a,
                     max_len_b=max_len_b)
    result = score(hyps, refs)
    result.update({"split": split, "pair": f"{src}-{tgt}", "beam": beam, "lenpen": lenpen,
                   "max_len_a": max_len_a, "max_len_b": max_len_b, "checkpoint": checkpoint})
    if output:
        atomic_write_text(output, "".join(h + "\n" for h in hyps))
        atomic_write_text(str(output) + ".json", json.dumps(result, indent=1) + "\n")
    return result
