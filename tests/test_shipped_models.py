"""Regression of the shipped models against their cards (models/*/card.json).

Each card's fixed regression subsets are decoded with the committed model; BLEU/chrF must stay
within the card's tolerance and the files must not grow beyond the card's size.  A deliberately
damaged copy of each model must fail the same check, so the check can catch a worse model.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sacrebleu")

from ondevice.errors import ConfigError, DataError  # noqa: E402
from ondevice.model_card import check, load_card, load_card_model, measure  # noqa: E402

MODELS = Path(__file__).resolve().parent.parent / "models"
# translation cards; the speech model's card (kind "slu-intent") has its own test: test_shipped_slu_model.py
CARDS = sorted(p.parent for p in MODELS.glob("*/card.json")
               if json.loads(p.read_text(encoding="utf-8")).get("kind") != "slu-intent")


def test_some_model_is_shipped():
    assert CARDS, f"no models/*/card.json under {MODELS}"


@pytest.fixture(scope="module", params=CARDS, ids=[p.name for p in CARDS])
def shipped(request):
    d = request.param
    card = load_card(d)
    model, tok = load_card_model(d, card)
    return d, card, model, tok


def test_shipped_model_meets_its_card(shipped):
    d, card, model, tok = shipped
    results = check(d, measure(d, model, tok))
    assert all(r.ok for r in results), "\n".join(map(str, results))
    assert {r.what for r in results} >= {f"{s['name']} bleu" for s in card["regression"]["sets"]}


def test_a_worse_model_fails_the_card(shipped):
    """Rounding every decoder matrix to 1-bit BCQ (no retraining) must trip the BLEU thresholds."""
    from ondevice.quant.plan import QuantPlan, classify
    from ondevice.quant.ptq import quantize_model_

    d, card, model, tok = shipped
    worse = copy.deepcopy(model)
    names = [n for n, p in worse.named_parameters()
             if p.dim() == 2 and n.startswith("decoder.layers") and classify(n.rsplit(".", 1)[0]) is not None]
    assert names
    quantize_model_(worse, {n: 1 for n in names}, QuantPlan.uniform(1))
    worse.eval()
    results = check(d, measure(d, worse, tok))
    failed = [r for r in results if not r.ok]
    assert any(r.what.endswith("bleu") for r in failed), "\n".join(map(str, results))


def test_a_grown_model_fails_the_size_check(shipped, tmp_path):
    d, card, model, tok = shipped
    measured = {"size_bytes": card["size_bytes"] + 1,
                "sets": {s["name"]: {"bleu": s["bleu"], "chrf": s["chrf"]} for s in card["regression"]["sets"]}}
    results = check(d, measured)
    assert [r.what for r in results if not r.ok] == ["size_bytes"]


def _write_card(tmp_path: Path, **changes) -> Path:
    card = {"name": "x", "kind": "nmt-transformer", "src": "en", "tgt": "de", "format": "checkpoint",
            "checkpoint": "c.pt", "files": ["c.pt"],
            "regression": {"beam": 1, "sets": [{"name": "s", "src": "s.en", "ref": "s.de"}]}}
    card.update(changes)
    (tmp_path / "card.json").write_text(json.dumps(card))
    return tmp_path


def test_card_validation_errors(tmp_path):
    assert load_card(_write_card(tmp_path))["name"] == "x"
    with pytest.raises(ConfigError, match="unknown key"):
        load_card(_write_card(tmp_path, bleu_threshold=3))
    with pytest.raises(ConfigError, match="format"):
        load_card(_write_card(tmp_path, format="onnx"))
    with pytest.raises(ConfigError, match="'packed' subdirectory"):
        load_card(_write_card(tmp_path, format="packed"))
    with pytest.raises(ConfigError, match="regression.sets"):
        load_card(_write_card(tmp_path, regression={"sets": []}))
    (tmp_path / "card.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_card(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_card(tmp_path / "missing")


def test_card_without_measurements_asks_for_write(tmp_path):
    d = _write_card(tmp_path)
    with pytest.raises(ConfigError, match="eval card"):
        check(d, {"size_bytes": 1, "sets": {"s": {"bleu": 1.0, "chrf": 1.0}}})


@pytest.mark.parametrize("d", [p for p in CARDS if (p / "onnx" / "manifest.json").is_file()],
                         ids=lambda p: p.name)
def test_committed_onnx_export_is_current(d, tmp_path):
    """A card's onnx/ directory is exactly what `ondevice export nmt` writes for its packed model today,
    and stock onnxruntime translates with it as the PyTorch reference does."""
    pytest.importorskip("onnxruntime")
    from ondevice.onnx_export import export_nmt, read_manifest
    from ondevice.translator import Translator

    card = load_card(d)
    export_nmt(d / card["packed"], tmp_path / "onnx")
    for f in read_manifest(d / "onnx")["files"]:
        assert (tmp_path / "onnx" / f["path"]).read_bytes() == (d / "onnx" / f["path"]).read_bytes(), f["path"]
    src = (d / card["regression"]["sets"][0]["src"]).read_text(encoding="utf-8").splitlines()[:5]
    by_ort = Translator(d, threads=1, backend="onnxruntime", beam_size=1).translate_batch(src)
    assert by_ort == Translator(d, threads=1, backend="torch", beam_size=1).translate_batch(src)
    assert by_ort == Translator(d, threads=1, backend="native", beam_size=1).translate_batch(src)
