"""The SLU corpus (ondevice.slu): FSC intents, phrasings, split by voice, and a tiny end-to-end render
(skipped cleanly where espeak-ng or sox is missing)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from ondevice.errors import DataError, OndeviceError
from ondevice.slu import corpus, synth
from ondevice.slu.intents import (ACTIONS, INTENT_KEYS, INTENTS, LOCATIONS, OBJECTS, intent_from_key,
                                  intent_index, label_vocabularies)
from ondevice.slu.phrasings import expand, heldout_phrasings, inventory, phrasings, seen_phrasings, templates

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
HAVE_SOX = shutil.which("sox") is not None
HAVE_FLITE = shutil.which("flite") is not None
HAVE_FESTIVAL = shutil.which("text2wave") is not None and all(
    synth.festival_voice_dir(v) is not None for v in synth.FESTIVAL_VOICES)
needs_render = pytest.mark.skipif(not (HAVE_ESPEAK and HAVE_SOX), reason="espeak-ng and sox are not installed")

# FSC's 31 intents as its label files spell them.
FSC = {
    "activate_lamp_none", "activate_lights_bedroom", "activate_lights_kitchen", "activate_lights_none",
    "activate_lights_washroom", "activate_music_none", "bring_juice_none", "bring_newspaper_none",
    "bring_shoes_none", "bring_socks_none", "change language_Chinese_none", "change language_English_none",
    "change language_German_none", "change language_Korean_none", "change language_none_none",
    "deactivate_lamp_none", "deactivate_lights_bedroom", "deactivate_lights_kitchen", "deactivate_lights_none",
    "deactivate_lights_washroom", "deactivate_music_none", "decrease_heat_bedroom", "decrease_heat_kitchen",
    "decrease_heat_none", "decrease_heat_washroom", "decrease_volume_none", "increase_heat_bedroom",
    "increase_heat_kitchen", "increase_heat_none", "increase_heat_washroom", "increase_volume_none",
}
ROOM_WORDS = ("kitchen", "bedroom", "washroom", "bathroom")


# ------------------------------------------------------------------------------------------ intents

def test_intents_are_fscs_31_valid_combinations():
    assert len(INTENTS) == 31 and set(INTENT_KEYS) == FSC
    assert list(INTENT_KEYS) == sorted(INTENT_KEYS)
    for i in INTENTS:
        assert i.action in ACTIONS and i.object in OBJECTS and i.location in LOCATIONS
        assert intent_from_key(i.key) == i and INTENT_KEYS[intent_index(i)] == i.key
        if i.location != "none":
            assert i.object in ("lights", "heat")
    # every slot value is used
    assert {i.action for i in INTENTS} == set(ACTIONS)
    assert {i.object for i in INTENTS} == set(OBJECTS)
    assert {i.location for i in INTENTS} == set(LOCATIONS)
    with pytest.raises(ValueError):
        intent_from_key("bring_lamp_kitchen")
    assert label_vocabularies()["intent"] == list(INTENT_KEYS)


# ---------------------------------------------------------------------------------------- phrasings

def test_template_grammar():
    assert expand("(turn|switch) on the [big] light") == [
        "turn on the big light", "turn on the light", "switch on the big light", "switch on the light"]
    assert expand("lights on[, please]") == ["lights on, please", "lights on"]
    assert expand("it's cold in the {room}", room="washroom") == [
        "it's cold in the washroom", "it's cold in the bathroom"]
    assert expand("speak {lang}", lang="German") == ["speak german"]
    for bad in ("(a|b", "a]", "a|b", "{room} x"):
        with pytest.raises(ValueError):
            expand(bad)


def test_every_intent_has_many_phrasings_incl_indirect_and_heldout():
    inv = inventory()
    total = sum(v["phrasings"] for v in inv.values())
    assert total / 31 >= 15
    for key in INTENT_KEYS:
        seen, held = seen_phrasings(key), heldout_phrasings(key)
        assert len(seen) >= 10, key
        assert len(held) >= 2, key
        assert any(p.indirect for p in seen), f"{key}: no indirect seen phrasing"
        assert not {p.text for p in seen} & {p.text for p in held}
        assert any(t.heldout for t in templates(key))


def test_phrasings_are_unambiguous_and_location_consistent():
    owner: dict[str, str] = {}
    for i in INTENTS:
        for p in phrasings(i.key):
            assert p.text == p.text.strip() and p.text == p.text.lower() and "  " not in p.text
            assert owner.setdefault(p.text, i.key) == i.key, f"{p.text!r} in {owner[p.text]} and {i.key}"
            has_room = [w for w in ROOM_WORDS if w in p.text]
            if i.location == "none":
                assert not has_room, (i.key, p.text)
            else:
                rooms = ("washroom", "bathroom") if i.location == "washroom" else (i.location,)
                assert has_room and set(has_room) <= set(rooms), (i.key, p.text)
            if i.action == "change language" and i.object != "none":
                assert i.object.lower() in p.text


def test_indirect_examples_from_the_brief():
    def intent_of(text):
        return next(i.key for i in INTENTS if text in {p.text for p in phrasings(i.key)})

    assert intent_of("it's too loud") == "decrease_volume_none"
    assert intent_of("i can't hear anything") == "increase_volume_none"
    assert intent_of("it's too cold in the bedroom") == "increase_heat_bedroom"
    assert intent_of("it's too dark in the kitchen") == "activate_lights_kitchen"


# ------------------------------------------------------------------------------------- voice split

def test_split_by_voice_is_disjoint_on_every_axis():
    sets = {s: set(corpus.voices(s)) for s in corpus.SPLITS}
    for a in corpus.SPLITS:
        assert sets[a], a
        for b in corpus.SPLITS:
            if a < b:
                assert not sets[a] & sets[b]
                espeak = {s: [v for v in sets[s] if v.engine == synth.ESPEAK] for s in (a, b)}
                assert not {v.base for v in espeak[a]} & {v.base for v in espeak[b]}
                assert not {v.variant for v in espeak[a]} & {v.variant for v in espeak[b]}
                flite = {s: {v.name for v in sets[s] if v.engine == synth.FLITE} for s in (a, b)}
                assert not flite[a] & flite[b]
    train_flite = {v.name for v in sets["train"] if v.engine == synth.FLITE}
    assert {"kal", "kal16"} <= train_flite  # one speaker, one side
    all_variants = {v for s in corpus.SPLITS for v in corpus.ESPEAK_VARIANT_SPLIT[s]}
    assert all_variants == set(synth.ESPEAK_VARIANTS)
    assert not all_variants & set(synth.ESPEAK_EXCLUDED_VARIANTS)
    assert {b for s in corpus.SPLITS for b in corpus.ESPEAK_BASE_SPLIT[s]} == set(synth.ESPEAK_BASES)
    assert {n for s in corpus.SPLITS for n in corpus.FLITE_SPLIT[s]} == set(synth.FLITE_VOICES)
    festival = {s: {v.name for v in sets[s] if v.engine == synth.FESTIVAL} for s in corpus.SPLITS}
    assert festival == {"train": set(synth.FESTIVAL_VOICES), "valid": set(), "test": set()}


def test_festival_respeaks_training_utterances_and_changes_nothing_else():
    """Version 4 = version 3 with ~15 % of the training utterances re-spoken by festival: same text,
    intent and augmentation; every other utterance (valid and test entirely) is exactly version 3's."""
    v3, v4 = ("espeak-ng", "flite"), ("espeak-ng", "flite", "festival")
    train = [(corpus.utterance_spec(0, "train", i, v3), corpus.utterance_spec(0, "train", i, v4)) for i in range(600)]
    respoken = [(a, b) for a, b in train if a != b]
    assert all(b.job.voice.engine == synth.FESTIVAL for _, b in respoken)
    assert 0.1 < len(respoken) / len(train) < 0.2  # P_FESTIVAL["train"] = 0.15
    assert {b.job.voice.name for _, b in respoken} == set(synth.FESTIVAL_VOICES)
    for a, b in respoken:
        assert (a.intent, a.phrasing, a.job.text, a.job.aug) == (b.intent, b.phrasing, b.job.text, b.job.aug)
        assert b.job.timbre is None and corpus.FLITE_RATE[0] <= b.job.rate <= corpus.FLITE_RATE[1]
    for split in ("valid", "test"):
        assert all(corpus.utterance_spec(0, split, i, v3) == corpus.utterance_spec(0, split, i, v4)
                   for i in range(300))
    only = [corpus.utterance_spec(0, "train", i, ("festival",)) for i in range(20)]
    assert {s.job.voice.engine for s in only} == {synth.FESTIVAL}
    with pytest.raises(DataError, match="test split has no voice"):
        corpus.utterance_spec(0, "test", 0, engines=("festival",))


#: sha256 of the manifest records (duration aside) of the first 60 train, 10 valid and 10 test
#: utterances of corpus version 3 (seed 0), as written by the version-3 generator.
V3_FINGERPRINT = "da154d3c80bafa8c87d1c311739cef4ff316a2c4c2dc33d487e2629608de25a3"


def test_espeak_and_flite_alone_still_give_version_3s_utterances():
    recs = [corpus.manifest_record(corpus.utterance_spec(0, s, i, ("espeak-ng", "flite")), 0.0)
            for s, n in (("train", 60), ("valid", 10), ("test", 10)) for i in range(n)]
    blob = json.dumps([{k: v for k, v in r.items() if k != "duration_s"} for r in recs], sort_keys=True)
    assert hashlib.sha256(blob.encode()).hexdigest() == V3_FINGERPRINT


def test_a_split_no_engine_speaks_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(DataError, match="valid split has no voice.*--valid 0"):
        corpus.generate_corpus(tmp_path / "f", {"train": 1, "valid": 1, "test": 0}, engines=("festival",))
    assert not (tmp_path / "f").exists()


def test_only_the_engines_that_speak_a_requested_split_must_be_installed(monkeypatch, tmp_path):
    asked = []

    def check_tools(engines):
        asked.append(engines)
        raise DataError("stop here")

    monkeypatch.setattr(synth, "check_tools", check_tools)
    for sizes in ({"train": 0, "valid": 0, "test": 1}, {"train": 1, "valid": 0, "test": 0}):
        with pytest.raises(DataError, match="stop here"):
            corpus.generate_corpus(tmp_path / "g", sizes)
    assert asked == [("espeak-ng", "flite"), ("espeak-ng", "flite", "festival")]


@pytest.mark.skipif(not (HAVE_FESTIVAL and HAVE_SOX), reason="festival (and its voices) or sox not installed")
def test_festival_voices_render_16k_speech_at_the_asked_rate():
    durations = {}
    for name in synth.FESTIVAL_VOICES:
        for rate in (135, 215):
            job = synth.RenderJob("turn the lights on in the kitchen", synth.Voice.festival(name), rate, 70,
                                  synth.Augmentation(lead_s=0.0, trail_s=0.0))
            x = synth.render(job)
            assert x.dtype == np.int16 and synth.speech_power(x.astype(np.float64)) > 1.0
            durations[name, rate] = len(x) / synth.SAMPLE_RATE
        assert durations[name, 135] > 1.3 * durations[name, 215], name  # Duration_Stretch took effect
    with pytest.raises(DataError, match="unknown festival voice"):
        synth.render(synth.RenderJob("hello", synth.Voice.festival("nope"), 170, 50, synth.Augmentation()))


def test_missing_festival_voices_raise_data_error(monkeypatch, tmp_path):
    monkeypatch.setattr(synth, "FESTIVAL_VOICE_ROOT", str(tmp_path))
    monkeypatch.setattr(synth.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    with pytest.raises(DataError, match="festival lacks the voice.*festvox-kdlpc16k"):
        synth.check_tools(("festival",))


@pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed")
def test_no_two_variants_in_different_splits_render_identical_audio():
    assert set(v for v in synth.ESPEAK_VARIANTS if v) <= synth.available_espeak_variants()
    split_of = {v: s for s in corpus.SPLITS for v in corpus.ESPEAK_VARIANT_SPLIT[s]}
    seen: dict[str, str] = {}
    for v in synth.ESPEAK_VARIANTS:
        name = f"en-us+{v}" if v else "en-us"
        audio = subprocess.run(["espeak-ng", "-v", name, "-s", "170", "--stdout", "bring me my socks"],
                               capture_output=True, check=True).stdout
        h = hashlib.sha256(audio).hexdigest()
        if h in seen:
            assert split_of[seen[h]] == split_of[v], f"{v} sounds exactly like {seen[h]}"
        seen.setdefault(h, v)


def test_specs_are_deterministic_balanced_and_respect_the_split():
    a = [corpus.utterance_spec(0, "test", i) for i in range(62)]
    b = [corpus.utterance_spec(0, "test", i) for i in range(62)]
    assert a == b
    assert a != [corpus.utterance_spec(1, "test", i) for i in range(62)]
    assert sorted(s.intent for s in a) == sorted(list(INTENT_KEYS) * 2)  # two full blocks
    test_voices = set(corpus.voices("test"))
    assert all(s.job.voice in test_voices for s in a)
    assert any(s.phrasing.heldout for s in a)
    train = [corpus.utterance_spec(0, "train", i) for i in range(200)]
    assert not any(s.phrasing.heldout for s in train)
    assert all(s.job.voice in set(corpus.voices("train")) for s in train)
    assert {s.job.voice.engine for s in train} == {"espeak-ng", "flite", "festival"}
    only = [corpus.utterance_spec(0, "valid", i, engines=("espeak-ng",)) for i in range(40)]
    assert {s.job.voice.engine for s in only} == {"espeak-ng"}


def test_flite_split_keeps_a_male_cluster_unit_voice_on_each_side():
    # v1 validated on awb and tested on rms, so training never heard a male cluster-unit voice
    assert corpus.FLITE_SPLIT["valid"] == () and "awb" in corpus.FLITE_SPLIT["train"]
    assert corpus.FLITE_SPLIT["test"] == ("rms",)
    valid = [corpus.utterance_spec(0, "valid", i) for i in range(100)]
    assert {s.job.voice.engine for s in valid} == {"espeak-ng"}
    with pytest.raises(DataError, match="valid split has no voice"):
        corpus.utterance_spec(0, "valid", 0, engines=("flite",))
    train = [corpus.utterance_spec(0, "train", i) for i in range(400)]
    flite = [s for s in train if s.job.voice.engine == "flite"]
    assert 0.2 < len(flite) / len(train) < 0.4  # P_FLITE["train"] = 0.3
    lo, hi = corpus.FLITE_PITCH["train"]
    assert all(lo <= s.job.pitch <= hi for s in flite) and any(s.job.pitch < 25 or s.job.pitch > 75 for s in flite)


def test_missing_tools_raise_data_error(monkeypatch, tmp_path):
    monkeypatch.setattr(synth.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="apt-get install") as e:
        corpus.generate_corpus(tmp_path / "c", {"train": 1, "valid": 0, "test": 0})
    assert isinstance(e.value, OndeviceError) and isinstance(e.value, ValueError)
    with pytest.raises(DataError, match="festvox-kdlpc16k"):
        synth.check_tools(("festival",))
    with pytest.raises(DataError, match="unknown TTS engine"):
        synth.check_tools(("mbrola",))


def test_a_tool_timeout_is_retried_once(monkeypatch):
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        if len(calls) == 1:  # e.g. the job was suspended past the timeout
            raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))
        return subprocess.CompletedProcess(cmd, 0, b"ok", b"")

    monkeypatch.setattr(synth.subprocess, "run", fake_run)
    assert synth._run(["sox", "x"], "test") == b"ok" and len(calls) == 2

    def always_late(cmd, **kw):
        raise subprocess.TimeoutExpired(cmd, kw.get("timeout"))

    monkeypatch.setattr(synth.subprocess, "run", always_late)
    with pytest.raises(DataError, match="timed out twice"):
        synth._run(["sox", "x"], "test")


def test_bad_sizes_raise_data_error(tmp_path):
    with pytest.raises(DataError):
        corpus.generate_corpus(tmp_path, {"train": 0, "valid": 0, "test": 0})
    with pytest.raises(DataError):
        corpus.generate_corpus(tmp_path, {"train": -1})
    with pytest.raises(DataError):
        corpus.generate_corpus(tmp_path, {"dev": 3})
    with pytest.raises(DataError):
        corpus.generate_corpus(tmp_path, {"train": 2}, workers=0)


# ------------------------------------------------------------------------------------- end to end

SIZES = {"train": 3, "valid": 1, "test": 2}
FIELDS = {"id", "path", "transcript", "intent", "action", "object", "location", "voice", "engine", "rate",
          "pitch", "augmentation", "timbre", "duration_s", "heldout_phrasing", "indirect", "template"}


def _engines():
    return ("espeak-ng",) + (("flite",) if HAVE_FLITE else ()) + (("festival",) if HAVE_FESTIVAL else ())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and p.name not in ("stats.json", "card.md")}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("slu")
    stats = corpus.generate_corpus(root / "a", SIZES, seed=2, engines=_engines(), progress=False)
    return root, stats


@needs_render
def test_tiny_corpus_wavs_and_manifests(tiny):
    root, stats = tiny
    out = root / "a"
    assert stats["rendered"] == 6 and stats["reused"] == 0
    for split, n in SIZES.items():
        recs = corpus.read_manifest(out / f"{split}.jsonl")
        assert len(recs) == n and stats["splits"][split]["utterances"] == n
        allowed = {v.id for v in corpus.voices(split, _engines())}
        for r in recs:
            assert set(r) == FIELDS
            assert r["path"].startswith(f"{split}/") and r["voice"] in allowed
            assert r["voice"].split(":")[0] == r["engine"]
            i = intent_from_key(r["intent"])
            assert (r["action"], r["object"], r["location"]) == (i.action, i.object, i.location)
            assert r["transcript"] in {p.text for p in phrasings(r["intent"])}
            assert r["heldout_phrasing"] is False or split == "test"
            with wave.open(str(out / r["path"]), "rb") as w:
                assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (16000, 1, 2)
                assert w.getnframes() / 16000 == pytest.approx(r["duration_s"], abs=1e-3)
            assert 0.3 <= r["duration_s"] <= 15
            assert synth.is_valid_output(out / r["path"])
    if HAVE_FESTIVAL and HAVE_FLITE:  # seed 2's three training utterances: one per engine
        assert [r["engine"] for r in corpus.read_manifest(out / "train.jsonl")] == ["espeak-ng", "flite", "festival"]
    assert json.loads((out / "stats.json").read_text())["sizes"] == SIZES
    card = (out / "card.md").read_text()
    assert "## Intents" in card and "## Voices" in card


@needs_render
def test_tiny_corpus_is_deterministic(tiny):
    root, _ = tiny
    corpus.generate_corpus(root / "b", SIZES, seed=2, engines=_engines(), progress=False)
    a, b = _files(root / "a"), _files(root / "b")
    assert a.keys() == b.keys() and len([k for k in a if k.endswith(".wav")]) == 6
    assert a == b


@needs_render
def test_tiny_corpus_resumes_and_refuses_other_settings(tiny):
    root, _ = tiny
    out = root / "c"
    corpus.generate_corpus(out, SIZES, seed=2, engines=_engines(), progress=False)
    before = _files(out)
    (out / "train" / "train_000001.wav").unlink()
    wav = out / "test" / "test_000000.wav"
    wav.write_bytes(wav.read_bytes()[:100])  # a truncated file from a killed run
    (out / "train" / ".train_000002.wav.abc.tmp").write_bytes(b"junk")
    stats = corpus.generate_corpus(out, SIZES, seed=2, engines=_engines(), progress=False)
    assert (stats["rendered"], stats["reused"]) == (2, 4)
    assert _files(out) == before
    # a smaller run is refused (rendered utterances would be deleted) unless told to prune them
    with pytest.raises(DataError, match=r"already holds 1 train utterance\(s\) beyond --train 2; they would be "
                                        r"deleted.*--prune"):
        corpus.generate_corpus(out, {"train": 2, "valid": 1, "test": 2}, seed=2, engines=_engines(), progress=False)
    assert _files(out) == before
    stats = corpus.generate_corpus(out, {"train": 2, "valid": 1, "test": 2}, seed=2, engines=_engines(),
                                   progress=False, prune=True)
    assert stats["rendered"] == 0 and not (out / "train" / "train_000002.wav").exists()
    with pytest.raises(DataError, match="different seed"):
        corpus.generate_corpus(out, SIZES, seed=8, engines=_engines(), progress=False)


@needs_render
def test_cli_data_slu(tmp_path, capsys):
    from ondevice.cli import main

    args = ["data", "slu", "--out", str(tmp_path / "cli"), "--train", "1", "--valid", "1", "--test", "1",
            "--engines", ",".join(_engines()), "--quiet"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["rendered"] == 3 and summary["splits"]["test"]["utterances"] == 1
    assert "ondevice data slu --out" in json.loads((tmp_path / "cli" / "stats.json").read_text())["command"]
    assert main(args[:-1] + ["--seed", "5", "--quiet"]) == 1  # another seed into the same directory
    assert "different seed" in capsys.readouterr().err
