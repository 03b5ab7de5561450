"""Mixed espeak-ng timbres (ondevice/slu/timbre.py): drawn from training variants only, deterministic,
and really spoken (espeak-ng silently falls back to the plain voice for an unknown variant)."""

from __future__ import annotations

import dataclasses
import random
import shutil

import pytest

from ondevice.errors import DataError
from ondevice.slu import corpus, synth, timbre

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed")


def test_draw_is_deterministic_and_uses_only_the_given_variants():
    train = corpus.ESPEAK_VARIANT_SPLIT["train"]
    a = timbre.draw(random.Random(3), train)
    assert a == timbre.draw(random.Random(3), train)
    assert a != timbre.draw(random.Random(4), train)
    assert [g for g, _ in a.sources] == list(timbre.GROUPS)
    held_out = set(corpus.ESPEAK_VARIANT_SPLIT["valid"] + corpus.ESPEAK_VARIANT_SPLIT["test"])
    for seed in range(200):
        t = timbre.draw(random.Random(seed), train)
        assert not {s for _, s in t.sources} & held_out
        assert timbre.FORMANT_SCALE[0] <= t.formant_scale <= timbre.FORMANT_SCALE[1]
    with pytest.raises(DataError):
        timbre.draw(random.Random(0), ())


def test_only_training_utterances_get_mixed_timbres():
    train = [corpus.utterance_spec(0, "train", i) for i in range(400)]
    mixed = [s for s in train if s.job.timbre is not None]
    espeak = [s for s in train if s.job.voice.engine == "espeak-ng"]
    assert 0.35 < len(mixed) / len(espeak) < 0.65  # P_MIXED_TIMBRE["train"] = 0.5
    assert all(s.job.voice.variant == corpus.MIXED_VARIANT and s.job.voice.engine == "espeak-ng" for s in mixed)
    assert all(s.job.voice in set(corpus.voices("train")) for s in train)
    assert all(corpus.manifest_record(s, 1.0)["timbre"]["sources"] for s in mixed)
    for split in ("valid", "test"):
        specs = [corpus.utterance_spec(0, split, i) for i in range(200)]
        assert not any(s.job.timbre for s in specs)
        assert corpus.MIXED_VARIANT not in {v.variant for v in corpus.voices(split)}


@needs_espeak
def test_variant_text_takes_each_group_from_its_source_and_scales_formants():
    groups = timbre.variant_groups("f1")
    assert any(k.startswith("formant") for k in groups) and "pitch" in groups
    sources = tuple((g, "f1" if g in ("pitch", "formant 1") else "") for g in timbre.GROUPS)
    text = timbre.MixedTimbre(sources, 1.1).variant_text()
    assert groups["pitch"][0] in text
    f1 = groups["formant 1"][0].split()
    assert f"formant 1 {round(int(f1[2]) * 1.1)} {' '.join(f1[3:])}" in text
    assert "formant 0 110 100 100" in text  # formants no source sets move with the scale too
    assert timbre.MixedTimbre(sources, 1.0).variant_text().count("formant") == 1
    with pytest.raises(DataError, match="variant"):
        timbre.variant_groups("no-such-variant")


@needs_espeak
def test_a_mixed_timbre_is_really_spoken(tmp_path):
    spec = next(s for s in (corpus.utterance_spec(0, "train", i) for i in range(100)) if s.job.timbre)
    job = dataclasses.replace(spec.job, aug=synth.Augmentation())
    mixed = synth.render(job, tmpdir=str(tmp_path))
    assert not list(tmp_path.iterdir())  # the overlay lived in the render's temporary directory
    plain = synth.render(dataclasses.replace(job, timbre=None, voice=synth.Voice.espeak(job.voice.base)))
    other = synth.render(dataclasses.replace(job, timbre=timbre.draw(random.Random(99), ("f1", "m2"))))
    assert len({mixed.tobytes(), plain.tobytes(), other.tobytes()}) == 3
    assert (synth.render(job) == mixed).all()  # deterministic
    with pytest.raises(DataError, match="needs espeak-ng"):
        synth.render(dataclasses.replace(job, voice=synth.Voice.flite("slt")))
