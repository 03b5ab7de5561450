"""CI regression of the shipped speech-intent model against its card (models/slu-intent-bcq/card.json):
held-out-voice intent accuracy on a fixed subset of the test split (rendered here by the corpus
generator, which is a pure function of (seed, split, index), so the subset is the same utterances
the card was measured on), the size limit, and native/onnxruntime agreement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MODEL = REPO / "models" / "slu-intent-bcq"


@pytest.fixture(scope="module")
def card() -> dict:
    path = MODEL / "card.json"
    if not path.is_file():
        pytest.fail(f"{path} is missing: the speech model must be shipped")
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def subset(card, tmp_path_factory) -> Path:
    from ondevice.slu import corpus

    reg = card["regression"]
    if not all(shutil.which(t) for t in ("espeak-ng", "flite", "sox")):
        pytest.fail("espeak-ng, flite and sox are required to render the regression subset "
                    "(scripts/install_system_deps.sh installs them)")
    out = tmp_path_factory.mktemp("slu") / "c"
    corpus.generate_corpus(out, {"train": 0, "valid": 0, "test": reg["limit"]}, seed=reg["seed"], progress=False)
    return out


def _files(d: Path) -> int:
    m = json.loads((d / "onnx" / "manifest.json").read_text())
    return sum((d / "onnx" / f["path"]).stat().st_size for f in m["files"]) + (d / "onnx" / "manifest.json").stat().st_size


def test_size_matches_the_card_and_the_2mb_budget(card):
    size = _files(MODEL)
    assert size == card["size_bytes"], "the shipped files changed size: re-measure and update the card"
    assert size <= card["max_size_bytes"] <= 2_000_000


@pytest.mark.parametrize("backend", ["native", "onnxruntime"])
def test_held_out_voice_accuracy_meets_the_card(card, subset, backend):
    from ondevice.slu.evaluate import evaluate_understander
    from ondevice.understander import Understander

    reg = card["regression"]
    r = evaluate_understander(Understander(None, threads=1, backend=backend), subset, "test", progress=False)
    assert r["n"] == reg["limit"]
    assert r["intent_accuracy"] >= reg["intent_accuracy"] - reg["tolerance"], r
    assert r["seen_phrasing_intent_accuracy"] >= reg["seen_phrasing_intent_accuracy"] - reg["tolerance"], r


def test_default_understander_is_the_shipped_model(card):
    from ondevice.understander import Understander

    assert Understander(None, threads=1).manifest["model_kind"] == "slu-intent"
    m = json.loads((MODEL / "onnx" / "manifest.json").read_text())
    assert m["quantized"] and m["training"]["average_bits"] <= 3.0


def test_card_readme_is_rendered_from_card_json(card):
    """The README is what ``render_readme`` makes of card.json (numbers edited by hand would drift
    from the measured ones); a fine-tuning in cycles is described as such, with the command that
    repeats it."""
    from ondevice.slu.card import render_readme

    assert (MODEL / "README.md").read_text(encoding="utf-8") == render_readme(card)
    cycled = render_readme({**card, "shipped_epochs": 120, "shipped_cycles": 3})
    assert "3 cycles of 40 epochs" in cycled
    assert "--set finetune_epochs=40 --set finetune_cycles=3 " in cycled
    single = render_readme({**card, "shipped_epochs": 40, "shipped_cycles": 1})
    train_line = next(line for line in single.splitlines() if "--set finetune_epochs=" in line)
    assert "40 epochs" in single and "--set finetune_epochs=40 --set 'speed_copies" in train_line
    averaged = render_readme({**card, "shipped_epochs": 40, "shipped_cycles": 1, "shipped_average": 10})
    assert "--set finetune_epochs=40 --set finetune_average=10 --set 'speed_copies" in averaged


def test_card_readme_reproduce_follows_the_recorded_settings(card):
    """The "Reproduce" command is made from what the card records: a dereverb stage and quantization
    settings that differ from the defaults appear in it, default ones do not, and the provenance text
    (how the run was really made) is printed."""
    from ondevice.slu.card import render_readme
    from ondevice.slu.train import SLUTrainConfig

    d = SLUTrainConfig()
    tr = {**card["training"], "qat_epochs": d.qat_epochs, "dereverb": None,
          "front_end_retraining": {**(card["training"].get("front_end_retraining") or {}),
                                   "steps": d.front_qat_steps}}
    plain = render_readme({**card, "training": tr, "provenance": ""})
    assert "--stages vq,tokens,bert,teacher,kd1,finetune,quantize " in plain
    assert "dereverb" not in plain and "front_qat_steps" not in plain and "qat_epochs" not in plain
    changed = render_readme({**card, "provenance": "Chained runs: runs/a then runs/b.", "training": {
        **tr, "qat_epochs": d.qat_epochs + 3, "dereverb": {"steps": 1500},
        "front_end_retraining": {**tr["front_end_retraining"], "steps": 1200}}})
    assert "--stages vq,dereverb,tokens," in changed and "--set dereverb_steps=1500" in changed
    assert "--set front_qat_steps=1200" in changed and f"--set qat_epochs={d.qat_epochs + 3}" in changed
    assert "Chained runs: runs/a then runs/b." in changed
    for readme in (plain, changed, (MODEL / "README.md").read_text(encoding="utf-8")):
        _parses_as_train_slu(readme)


def _parses_as_train_slu(readme: str) -> None:
    """The README's training command is one valid `ondevice train slu` line: its continuation lines
    join, the shell splits it, and the CLI's parser accepts every setting."""
    import shlex

    from ondevice.cli import _overrides, build_parser
    from ondevice.slu.train import STAGES, SLUTrainConfig

    lines = readme.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("ondevice train slu --corpus data/slu "
                                                                             "--out runs/slu \\"))
    command = []
    for line in lines[start:]:
        command.append(line.strip().removesuffix("\\"))
        if not line.endswith("\\"):
            break
    argv = shlex.split(" ".join(command))
    args = build_parser().parse_args(argv[1:])
    assert set(args.stages.split(",")) <= set(STAGES)
    defaults = SLUTrainConfig()
    for key, value in _overrides(args.set).items():  # parsed as `train slu` parses them
        assert isinstance(value, type(getattr(defaults, key))) or (isinstance(value, list) and
                                                                   isinstance(getattr(defaults, key), tuple)), key
