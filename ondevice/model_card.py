"""Machine-readable model cards (``models/<name>/card.json``) and the regression check against them.

A shipped model's quality and size thresholds live in one place, its card, next to the
human-readable ``README.md``.  CI decodes a small fixed subset of the held-out test sets
(committed beside the card, so CI needs neither the Bible database nor Debian's catalogs)
and fails when BLEU or chrF fall more than a tolerance below the card's figures, or when the
model's files grow beyond the card's byte count.  ``ondevice eval card DIR --write`` measures
and records those figures, so the thresholds are produced by a command, not typed in.

card.json::

    {"name": "nmt-en-de", "kind": "nmt-transformer", "src": "en", "tgt": "de",
     "format": "checkpoint",            # or "packed" (a packed bit-plane model directory)
     "checkpoint": "checkpoint.pt",     # format "checkpoint": the checkpoint file
     "packed": "model",                 # format "packed": the packed model's subdirectory
     "files": ["checkpoint.pt", "spm.model"],   # what the size check counts
     "size_bytes": 19930123,
     "results": [...],                  # free-form full test-set results, for people
     "regression": {"beam": 1, "bleu_tolerance": 0.5, "chrf_tolerance": 0.5,
                    "sets": [{"name": "ci_bible", "src": "eval/ci_bible.en", "ref": "eval/ci_bible.de",
                              "bleu": 12.3, "chrf": 40.1}]}}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .atomic import atomic_write_text
from .errors import ConfigError, DataError
from .json_config import read_json_object

__all__ = ["CARD_FILE", "load_card", "load_card_model", "measure", "check", "write_measurements", "CheckResult"]

CARD_FILE = "card.json"
FORMATS = ("checkpoint", "packed")
_TOP_KEYS = {"name", "kind", "src", "tgt", "format", "checkpoint", "packed", "files", "size_bytes", "results", "regression",
             "note"}
_REG_KEYS = {"beam", "bleu_tolerance", "chrf_tolerance", "sets", "max_len_a", "max_len_b"}
_SET_KEYS = {"name", "src", "ref", "bleu", "chrf"}


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def load_card(model_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads and validates ``model_dir/card.json`` (unknown keys and missing fields are errors)."""
    path = Path(model_dir) / CARD_FILE
    if not path.exists():
        raise DataError(f"{path} does not exist")
    card = read_json_object(path, "model card")
    if card.get("kind") == "slu-intent":
        raise DataError(f"{path} is a speech model's card: `eval card` checks translation models; the speech "
                        "model's card is checked by `ondevice eval slu` and tests/test_shipped_slu_model.py")
    unknown = sorted(set(card) - _TOP_KEYS)
    _need(not unknown, f"{path}: unknown key(s) {unknown}")
    for k in ("name", "kind", "src", "tgt", "format", "files", "regression"):
        _need(k in card, f"{path}: missing key {k!r}")
    _need(card["format"] in FORMATS, f"{path}: format must be one of {FORMATS}, got {card['format']!r}")
    _need(card["format"] != "checkpoint" or isinstance(card.get("checkpoint"), str),
          f"{path}: format 'checkpoint' needs a 'checkpoint' file name")
    _need(card["format"] != "packed" or isinstance(card.get("packed"), str),
          f"{path}: format 'packed' needs a 'packed' subdirectory name")
    _need(isinstance(card["files"], list) and card["files"] and all(isinstance(f, str) for f in card["files"]),
          f"{path}: files must be a non-empty list of file names")
    reg = card["regression"]
    _need(isinstance(reg, dict), f"{path}: regression must be an object")
    unknown = sorted(set(reg) - _REG_KEYS)
    _need(not unknown, f"{path}: regression: unknown key(s) {unknown}")
    _need(isinstance(reg.get("sets"), list) and reg["sets"], f"{path}: regression.sets must be a non-empty list")
    for s in reg["sets"]:
        _need(isinstance(s, dict) and not set(s) - _SET_KEYS and {"name", "src", "ref"} <= set(s),
              f"{path}: each regression set needs name, src, ref (and bleu, chrf once measured): {s!r}")
    return card


def load_card_model(model_dir: str | os.PathLike, card: dict[str, Any] | None = None):
    """(model, tokenizer) of the card's model, whatever its storage format."""
    card = card or load_card(model_dir)
    if card["format"] == "checkpoint":
        from .nmt.evaluate import load_model

        return load_model(model_dir, card["checkpoint"])
    from .quant.packed_model import load_packed

    model, tok, _ = load_packed(Path(model_dir) / card["packed"])
    return model, tok


def model_bytes(model_dir: str | os.PathLike, card: dict[str, Any]) -> int:
    """Total size of the card's files (the on-disk cost of shipping the model)."""
    total = 0
    for name in card["files"]:
        p = Path(model_dir) / name
        if not p.exists():
            raise DataError(f"{p} (listed in {CARD_FILE}) does not exist")
        total += sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
    return total


def measure(model_dir: str | os.PathLike, model=None, tokenizer=None) -> dict[str, Any]:
    """Decodes every regression set with the card's settings; ``{"size_bytes", "sets": {name: scores}}``.

    ``model``/``tokenizer`` replace the card's own model (to show that a worse model fails)."""
    from .nmt.evaluate import score, translate

    d = Path(model_dir)
    card = load_card(d)
    if model is None:
        model, tokenizer = load_card_model(d, card)
    reg = card["regression"]
    out: dict[str, Any] = {"size_bytes": model_bytes(d, card), "sets": {}}
    for s in reg["sets"]:
        src = (d / s["src"]).read_text(encoding="utf-8").splitlines()
        ref = (d / s["ref"]).read_text(encoding="utf-8").splitlines()
        if not src or len(src) != len(ref):
            raise DataError(f"{d / s['src']} and {d / s['ref']} must be non-empty and have equal line counts")
        hyp = translate(model, tokenizer, src, beam=int(reg.get("beam", 1)), max_len_a=float(reg.get("max_len_a", 1.2)),
                        max_len_b=int(reg.get("max_len_b", 10)))
        out["sets"][s["name"]] = score(hyp, ref)
    return out


@dataclass
class CheckResult:
    """One threshold of the card compared with a measurement."""

    what: str
    measured: float
    threshold: float
    ok: bool

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what}: measured {self.measured:g}, threshold {self.threshold:g}"


def check(model_dir: str | os.PathLike, measured: dict[str, Any] | None = None) -> list[CheckResult]:
    """Compares a measurement (default: :func:`measure` of the card's own model) with the card:
    each score must be >= card figure - tolerance, the size <= the card's size_bytes."""
    card = load_card(model_dir)
    m = measured or measure(model_dir)
    reg = card["regression"]
    results = []
    if "size_bytes" in card:
        results.append(CheckResult("size_bytes", m["size_bytes"], card["size_bytes"],
                                   m["size_bytes"] <= card["size_bytes"]))
    for s in reg["sets"]:
        for metric in ("bleu", "chrf"):
            if metric not in s:
                raise ConfigError(f"{model_dir}/{CARD_FILE}: set {s['name']} has no {metric} yet; "
                                  f"run `ondevice eval card {model_dir} --write`")
            thr = float(s[metric]) - float(reg.get(f"{metric}_tolerance", 0.5))
            got = float(m["sets"][s["name"]][metric])
            results.append(CheckResult(f"{s['name']} {metric}", got, round(thr, 2), got >= thr))
    return results


def write_measurements(model_dir: str | os.PathLike, measured: dict[str, Any]) -> dict[str, Any]:
    """Records a measurement as the card's thresholds (size and per-set scores); atomic."""
    d = Path(model_dir)
    card = load_card(d)
    card["size_bytes"] = int(measured["size_bytes"])
    for s in card["regression"]["sets"]:
        got = measured["sets"][s["name"]]
        s["bleu"], s["chrf"] = float(got["bleu"]), float(got["chrf"])
    atomic_write_text(d / CARD_FILE, json.dumps(card, indent=1, ensure_ascii=False) + "\n")
    return card
