"""The synthetic Fluent-Speech-Commands-style corpus: voices split three ways, manifests, data card.

:func:`generate_corpus` writes::

    out/config.json                 what the corpus was generated with (a resumed run must match)
    out/{train,valid,test}/*.wav    16 kHz mono 16-bit PCM, one utterance each
    out/{train,valid,test}.jsonl    one JSON object per utterance (see :func:`manifest_record`)
    out/stats.json                  counts per split / voice / engine / intent / augmentation
    out/card.md                     the data card, from stats.json

**Split by voice.** espeak-ng voices are a base voice (accent rules) plus a variant (timbre);
both axes are split: a valid/test voice has a base voice *and* a variant that no training
voice uses, and flite voices are split whole (kal and kal16 are one speaker, kept together).
So no test or valid voice is heard in training, not even partially. festival's voices (added in
version 4) speak training utterances only. Held-out *phrasings*
(:mod:`.phrasings`) appear only in the test split, in about a third of its utterances.

Every utterance is a pure function of (seed, split, index) — intent, phrasing, voice, rate,
pitch and augmentation come from a random generator seeded by those three — so a run is
deterministic, a larger run extends a smaller one (the first N utterances are the same),
and an interrupted run resumes: existing valid WAVs are kept, missing ones rendered.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..atomic import atomic_write_bytes, atomic_write_text
from ..errors import DataError
from ..progress import Progress
from . import synth, timbre
from .intents import INTENT_KEYS, intent_from_key
from .phrasings import Phrasing, inventory, phrasings
from .synth import ENGINES, ESPEAK, FESTIVAL, FLITE, Augmentation, RenderJob, Voice

GENERATOR = "ondevice-slu-corpus/4"
SPLITS = ("train", "valid", "test")
DEFAULT_SIZES = {"train": 20000, "valid": 2000, "test": 3000}

#: espeak-ng base voices per split.
ESPEAK_BASE_SPLIT = {
    "train": ("en-us", "en-gb", "en-gb-x-rp", "en-gb-x-gbclan", "en-029"),
    "valid": ("en-gb-x-gbcwmd",),
    "test": ("en-gb-scotland", "en-us-nyc"),
}
#: espeak-ng variants of the valid and test voices; every other variant (and the plain base voice)
#: is a training variant. Numbered families (steph/steph2/steph3, Gene/Gene2, RicishayMax*) stay whole.
ESPEAK_VARIANT_SPLIT = {
    "valid": ("f2", "m5", "Andrea", "david", "linda", "marcelo", "RicishayMax", "RicishayMax2", "RicishayMax3"),
    "test": ("f4", "f5", "m3", "m6", "Annie", "belinda", "boris", "Gene", "Gene2", "Michael", "norbert",
             "quincy", "steph", "steph2", "steph3", "travis", "Henrique", "aunty"),
}
ESPEAK_VARIANT_SPLIT["train"] = tuple(
    v for v in synth.ESPEAK_VARIANTS if v not in ESPEAK_VARIANT_SPLIT["valid"] + ESPEAK_VARIANT_SPLIT["test"])
#: flite voices per split. flite has only two male cluster-unit voices (awb, rms): one trains, one
#: tests; the valid split has no flite voice (corpus v1 validated on awb and the model never heard a
#: male cluster-unit voice: 45 % on awb, 46 % on rms, ~89 % on new espeak-ng voices).
FLITE_SPLIT = {"train": ("awb", "kal", "kal16", "slt"), "valid": (), "test": ("rms",)}
#: festival voices per split (version 4): training only, so that valid and test stay exactly as in
#: version 3 (their numbers stay comparable). Corpus v3's model got 97 % of 60 clean commands right
#: spoken by festival's kal, 87 % by ked and 87 % by slt-hts (espeak-ng test voices: ~96 %): two of
#: the three are as new to it as the test split's flite rms (80 % clean).
FESTIVAL_SPLIT = {"train": synth.FESTIVAL_VOICES, "valid": (), "test": ()}

#: Sampling distribution (documented in docs/slu-data.md).
#: Share of utterances spoken by flite (when espeak-ng and flite are both used and the split has flite
#: voices; before festival re-speaks some of the training utterances: ~25 % of them stay flite's);
#: training leans on flite more because it has 4 voices against espeak-ng's 345.
P_FLITE = {"train": 0.3, "valid": 0.2, "test": 0.2}
#: Share of utterances re-spoken by festival (its own random stream, drawn after every other draw,
#: so that the other utterances are exactly version 3's); 1.0 when festival is the only engine.
P_FESTIVAL = {"train": 0.15, "valid": 0.0, "test": 0.0}
P_HELDOUT_TEST = 1 / 3        # share of test utterances with a held-out phrasing
ESPEAK_RATE = (130, 220)      # words per minute, uniform
FLITE_RATE = (135, 215)
ESPEAK_PITCH = (20, 80)       # 0-99, uniform
#: flite pitch (a sox shift that moves formants too); training spans a wider range so the few flite
#: speakers cover more vocal-tract lengths.
FLITE_PITCH = {"train": (15, 85), "valid": (25, 75), "test": (25, 75)}
#: Share of the espeak-ng utterances spoken with a mixed timbre (ondevice/slu/timbre.py), whose
#: parameters come from the training variants only; the voice is then ``BASE+mixed``.
P_MIXED_TIMBRE = {"train": 0.5, "valid": 0.0, "test": 0.0}
MIXED_VARIANT = "mixed"
P_SPEED = 0.3                 # speed or tempo perturbation (half each)
SPEED_FACTORS = (0.9, 0.95, 1.05, 1.1)
P_REVERB = 0.3
P_NOISE = 0.5
SNRS_DB = (5, 10, 15, 20)
SILENCE_S = (0.05, 0.4)       # leading and trailing silence, uniform each
PEAK_DB = (-12.0, -1.0)       # output peak level, uniform


def voices(split: str, engines: tuple[str, ...] = ENGINES) -> tuple[Voice, ...]:
    """The voices of a split (sorted), for the given engines (cached: every utterance spec asks)."""
    return _voices(split, tuple(engines))


@functools.lru_cache(maxsize=None)
def _voices(split: str, engines: tuple[str, ...]) -> tuple[Voice, ...]:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}: choose from {', '.join(SPLITS)}")
    out: list[Voice] = []
    if ESPEAK in engines:
        variants = ESPEAK_VARIANT_SPLIT[split] + ((MIXED_VARIANT,) if P_MIXED_TIMBRE[split] > 0 else ())
        out += [Voice.espeak(b, v) for b in ESPEAK_BASE_SPLIT[split] for v in variants]
    if FLITE in engines:
        out += [Voice.flite(n) for n in FLITE_SPLIT[split]]
    if FESTIVAL in engines:
        out += [Voice.festival(n) for n in FESTIVAL_SPLIT[split]]
    return tuple(sorted(out))


def voice_split(engines: tuple[str, ...] = ENGINES) -> dict[str, list[str]]:
    return {s: [v.id for v in voices(s, engines)] for s in SPLITS}


def _rng(seed: int, *key: object) -> random.Random:
    digest = hashlib.sha256("/".join(str(k) for k in (seed, *key)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


@dataclass(frozen=True)
class UtteranceSpec:
    split: str
    index: int
    intent: str
    phrasing: Phrasing
    job: RenderJob

    @property
    def name(self) -> str:
        return f"{self.split}_{self.index:06d}.wav"

    @property
    def relpath(self) -> str:
        return f"{self.split}/{self.name}"


def _phrasing_groups(intent: str, heldout: bool) -> list[list[Phrasing]]:
    groups: dict[int, list[Phrasing]] = {}
    for p in phrasings(intent):
        if p.heldout == heldout:
            groups.setdefault(p.template, []).append(p)
    return [groups[k] for k in sorted(groups)]


def utterance_spec(seed: int, split: str, index: int, engines: tuple[str, ...] = ENGINES) -> UtteranceSpec:
    """Everything about utterance ``index`` of ``split`` (a pure function of its arguments)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}")
    # Intents are exactly balanced: each block of 31 consecutive utterances holds every intent once.
    block, pos = divmod(index, len(INTENT_KEYS))
    order = list(INTENT_KEYS)
    _rng(seed, split, "block", block).shuffle(order)
    intent = order[pos]

    r = _rng(seed, split, index)
    heldout = split == "test" and r.random() < P_HELDOUT_TEST
    group = r.choice(_phrasing_groups(intent, heldout))   # template first, then one of its strings
    phrasing = r.choice(group)

    if not voices(split, engines):
        raise DataError(f"the {split} split has no voice of engine(s) {', '.join(engines)}")
    # The engine coin is drawn whenever both engines are on, even in a split without flite voices,
    # so the rest of each utterance's draws do not depend on which splits have flite voices.
    coin = r.random() if FLITE in engines and ESPEAK in engines else 0.0
    use_flite = FLITE in engines and bool(FLITE_SPLIT[split]) and coin < P_FLITE[split]
    engine = FLITE if use_flite else ESPEAK
    voice = r.choice([v for v in voices(split, (engine,)) if v.variant != MIXED_VARIANT])
    lo, hi = FLITE_RATE if use_flite else ESPEAK_RATE
    rate = r.randint(lo, hi)
    lo, hi = FLITE_PITCH[split] if use_flite else ESPEAK_PITCH
    pitch = r.randint(lo, hi)

    speed = tempo = None
    if r.random() < P_SPEED:
        factor = r.choice(SPEED_FACTORS)
        if r.random() < 0.5:
            speed = factor
        else:
            tempo = factor
    reverb = room = None
    if r.random() < P_REVERB:
        reverb, room = r.randint(20, 80), r.randint(20, 100)
    noise = snr = None
    if r.random() < P_NOISE:
        noise, snr = r.choice(synth.NOISE_COLOURS), float(r.choice(SNRS_DB))
    aug = Augmentation(speed=speed, tempo=tempo, reverb=reverb, room_scale=room, noise=noise, snr_db=snr,
                       noise_offset=round(r.random(), 6), lead_s=round(r.uniform(*SILENCE_S), 3),
                       trail_s=round(r.uniform(*SILENCE_S), 3), peak_db=round(r.uniform(*PEAK_DB), 1))
    mixed = None
    tr = _rng(seed, split, index, "timbre")  # its own stream: the draws above stay as in version 2
    if engine == ESPEAK and tr.random() < P_MIXED_TIMBRE[split]:
        mixed = timbre.draw(tr, ESPEAK_VARIANT_SPLIT[split])
        voice = Voice.espeak(voice.base, MIXED_VARIANT)
    fr = _rng(seed, split, index, "festival")  # its own stream: the draws above stay as in version 3
    only_festival = ESPEAK not in engines and FLITE not in engines
    if FESTIVAL in engines and FESTIVAL_SPLIT[split] and (only_festival or fr.random() < P_FESTIVAL[split]):
        # same text and augmentation; voice, rate and pitch drawn as for flite (a sox pitch shift)
        voice = fr.choice(voices(split, (FESTIVAL,)))
        rate = fr.randint(*FLITE_RATE)
        pitch = fr.randint(*FLITE_PITCH[split])
        mixed = None
    job = RenderJob(text=phrasing.text, voice=voice, rate=rate, pitch=pitch, aug=aug, timbre=mixed)
    return UtteranceSpec(split, index, intent, phrasing, job)


def manifest_record(spec: UtteranceSpec, duration_s: float) -> dict:
    intent = intent_from_key(spec.intent)
    j = spec.job
    return {
        "id": spec.name[:-4], "path": spec.relpath, "transcript": j.text,
        "intent": intent.key, "action": intent.action, "object": intent.object, "location": intent.location,
        "voice": j.voice.id, "engine": j.voice.engine, "rate": j.rate, "pitch": j.pitch,
        "augmentation": j.aug.to_json(), "timbre": j.timbre.to_json() if j.timbre else None,
        "duration_s": round(duration_s, 4),
        "heldout_phrasing": spec.phrasing.heldout, "indirect": spec.phrasing.indirect,
        "template": spec.phrasing.template,
    }


def _render_one(item: tuple[RenderJob, str]) -> float:
    job, path = item
    samples = synth.render(job)
    atomic_write_bytes(path, synth.wav_bytes(samples))
    return len(samples) / synth.SAMPLE_RATE


def _config(seed: int, engines: tuple[str, ...]) -> dict:
    return {"generator": GENERATOR, "seed": seed, "engines": list(engines),
            "voice_split": voice_split(engines)}


def _check_config(out: Path, config: dict) -> None:
    path = out / "config.json"
    if path.exists():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path} is unreadable ({e}); remove it or use a new --out directory") from None
        diff = [k for k in config if old.get(k) != config[k]]
        if diff:
            raise DataError(f"{out} holds a corpus generated with a different {', '.join(diff)} "
                            f"({', '.join(f'{k}={old.get(k)!r}' for k in diff if k != 'voice_split')}); "
                            "use a new --out directory or delete the old one")
    atomic_write_text(path, json.dumps(config, indent=1, ensure_ascii=False) + "\n")


def _beyond(split_dir: Path, split: str, size: int) -> list[Path]:
    """The rendered WAVs of ``split_dir`` whose index is ``size`` or more."""
    extra = []
    for p in split_dir.iterdir() if split_dir.is_dir() else ():
        if p.name.startswith(f"{split}_") and p.suffix == ".wav":
            try:
                if int(p.stem[len(split) + 1:]) >= size:
                    extra.append(p)
            except ValueError:
                pass
    return extra


def _tidy(split_dir: Path, split: str, size: int) -> int:
    """Removes temporary files of an interrupted run and WAVs beyond the requested size."""
    removed = 0
    stale = [p for p in split_dir.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    for p in stale + _beyond(split_dir, split, size):
        p.unlink(missing_ok=True)
        removed += 1
    return removed


def generate_corpus(out_dir: str | os.PathLike, sizes: dict[str, int] | None = None, *, seed: int = 0,
                    workers: int = 1, engines: tuple[str, ...] = ENGINES, progress: bool = True,
                    command: str | None = None, prune: bool = False) -> dict:
    """Renders (or completes) the corpus under ``out_dir``; returns stats (also in stats.json).

    A corpus already there with more utterances in a split than asked for is refused unless
    ``prune`` (hours of rendering must not go to a mistyped size or a test-sized command run on
    the full corpus's directory); with ``prune`` the extra WAVs are deleted."""
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    for s in sizes:
        if s not in SPLITS:
            raise DataError(f"unknown split {s!r}: choose from {', '.join(SPLITS)}")
    for s in SPLITS:
        sizes.setdefault(s, 0)
        if sizes[s] < 0:
            raise DataError(f"{s} size must be >= 0, got {sizes[s]}")
    if sum(sizes.values()) == 0:
        raise DataError("nothing to generate: every split size is 0")
    if workers < 1:
        raise DataError(f"workers must be >= 1, got {workers}")
    engines = tuple(dict.fromkeys(engines))
    if not engines:
        raise DataError("no TTS engine selected")
    synth.check_engines(engines)
    for s in SPLITS:  # before anything is written
        if sizes[s] and not voices(s, engines):
            raise DataError(f"the {s} split has no voice of engine(s) {', '.join(engines)} "
                            f"(festival speaks training utterances only): use --{s} 0 or add an engine")
    # only the engines that speak some requested split need to be installed (CI renders test only)
    tools = synth.check_tools(tuple(e for e in engines if any(sizes[s] and voices(s, (e,)) for s in SPLITS)))
    if ESPEAK in engines:
        missing = sorted(set(v for s in SPLITS for v in ESPEAK_VARIANT_SPLIT[s] if v)
                         - synth.available_espeak_variants())
        if missing:
            raise DataError(f"this espeak-ng lacks the voice variants {', '.join(missing)} "
                            "(the corpus is defined for Debian 12's espeak-ng 1.51)")

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DataError(f"output {out} is a file, not a directory")
    extra = {s: len(_beyond(out / s, s, sizes[s])) for s in SPLITS}
    if any(extra.values()) and not prune:
        have = ", ".join(f"{n} {s} utterance(s) beyond --{s} {sizes[s]}" for s, n in extra.items() if n)
        raise DataError(f"{out} already holds {have}; they would be deleted. Use another --out directory, larger "
                        "sizes, or --prune to delete them")
    out.mkdir(parents=True, exist_ok=True)
    _check_config(out, _config(seed, engines))

    specs: list[UtteranceSpec] = []
    for split in SPLITS:
        d = out / split
        d.mkdir(exist_ok=True)
        _tidy(d, split, sizes[split])
        specs += [utterance_spec(seed, split, i, engines) for i in range(sizes[split])]

    start = time.monotonic()
    durations: dict[str, float] = {}
    todo: list[UtteranceSpec] = []
    for spec in specs:
        path = out / spec.relpath
        info = synth.wav_info(path) if synth.is_valid_output(path) else None
        if info is not None:
            durations[spec.relpath] = info["duration_s"]
        else:
            todo.append(spec)
    reused = len(durations)
    bar = Progress("slu corpus", total=len(specs), unit="utt", enabled=progress)
    bar.update(reused, rendered=0, reused=reused)
    items = [(s.job, str(out / s.relpath)) for s in todo]
    try:
        if workers == 1:
            results = map(_render_one, items)
            for spec, dur in zip(todo, results):
                durations[spec.relpath] = dur
                bar.update(1, rendered=len(durations) - reused, reused=reused)
        else:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(max_workers=workers) as pool:
                for spec, dur in zip(todo, pool.map(_render_one, items, chunksize=8)):
                    durations[spec.relpath] = dur
                    bar.update(1, rendered=len(durations) - reused, reused=reused)
    finally:
        bar.close()
    elapsed = time.monotonic() - start

    records: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for spec in specs:
        records[spec.split].append(manifest_record(spec, durations[spec.relpath]))
    for split in SPLITS:
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[split])
        atomic_write_text(out / f"{split}.jsonl", text)

    stats = corpus_stats(records, engines)
    stats.update({"generator": GENERATOR, "seed": seed, "engines": list(engines), "tools": tools,
                  "sizes": sizes, "workers": workers, "rendered": len(todo), "reused": reused,
                  "elapsed_s": round(elapsed, 1), "command": command})
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    atomic_write_text(out / "card.md", data_card(stats))
    return stats


def read_manifest(path: str | os.PathLike) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read SLU manifest {path}: {e}") from None


# ------------------------------------------------------------------------------------- statistics

def _sorted_counts(c: Counter) -> dict:
    return dict(sorted(c.items(), key=lambda kv: (-kv[1], str(kv[0]))))


def corpus_stats(records: dict[str, list[dict]], engines: tuple[str, ...] = ENGINES) -> dict:
    splits = {}
    for split, rs in records.items():
        durs = [r["duration_s"] for r in rs]
        aug = Counter()
        for r in rs:
            a = r["augmentation"]
            aug["clean" if a["kind"] == "clean" else "augmented"] += 1
            for k in ("speed", "tempo", "reverb"):
                aug[k] += a[k] is not None
            if a["noise"]:
                aug[f"noise_{a['noise']}"] += 1
                aug[f"snr_{a['snr_db']:g}dB"] += 1
        splits[split] = {
            "utterances": len(rs),
            "hours": round(sum(durs) / 3600, 3),
            "duration_s": ({"mean": round(statistics.fmean(durs), 3), "min": round(min(durs), 3),
                            "max": round(max(durs), 3)} if durs else {}),
            "voices_used": len({r["voice"] for r in rs}),
            "voices_available": len(voices(split, engines)),
            "heldout_phrasing": sum(r["heldout_phrasing"] for r in rs),
            "indirect": sum(r["indirect"] for r in rs),
            "distinct_transcripts": len({r["transcript"] for r in rs}),
            "augmentation": {k: aug[k] for k in sorted(aug)},
            "by_engine": _sorted_counts(Counter(r["engine"] for r in rs)),
            "by_intent": {k: sum(r["intent"] == k for r in rs) for k in INTENT_KEYS},
            "by_action": _sorted_counts(Counter(r["action"] for r in rs)),
            "by_object": _sorted_counts(Counter(r["object"] for r in rs)),
            "by_location": _sorted_counts(Counter(r["location"] for r in rs)),
            "by_voice": _sorted_counts(Counter(r["voice"] for r in rs)),
        }
    return {"splits": splits, "voice_split": voice_split(engines), "phrasings": inventory()}


def _voice_table(by_voice: dict) -> str:
    """Per base voice (rows) the variants with their counts."""
    rows: dict[str, list[str]] = {}
    for vid, n in sorted(by_voice.items()):
        engine, name = vid.split(":", 1)
        base, _, variant = name.partition("+")
        key = f"{engine} {base}" if engine == ESPEAK else engine
        label = (variant or "(plain)") if engine == ESPEAK else name
        rows.setdefault(key, []).append(f"{label} {n}")
    lines = ["| voice | utterances | variants (utterances) |", "|---|---:|---|"]
    for key in sorted(rows):
        total = sum(int(x.rsplit(" ", 1)[1]) for x in rows[key])
        lines.append(f"| {key} | {total} | {', '.join(rows[key])} |")
    return "\n".join(lines)


def data_card(stats: dict) -> str:
    sp = stats["splits"]
    L = ["# SLU corpus data card (generated)", "",
         "A Fluent-Speech-Commands-style spoken command corpus rendered offline with espeak-ng, flite "
         "and festival and augmented with sox; see docs/slu-data.md for the method.", ""]
    if stats.get("command"):
        L += ["Command:", "", f"    {stats['command']}", ""]
    engines = ", ".join(stats.get("engines", []))
    L += [f"Generator {stats.get('generator')}, seed {stats.get('seed')}, engines {engines}; "
          f"tools: {'; '.join(f'{k} = {v}' for k, v in stats.get('tools', {}).items())}.", "",
          f"This run: {stats.get('rendered')} utterances rendered, {stats.get('reused')} reused from an earlier "
          f"run, {stats.get('elapsed_s')} s with {stats.get('workers')} worker(s).", "",
          "## Splits", "",
          "| split | utterances | hours | mean s | voices used / available | held-out phrasing | indirect "
          "| distinct transcripts | clean | noise | reverb | speed | tempo |",
          "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in SPLITS:
        x = sp.get(s)
        if not x:
            continue
        a = x["augmentation"]
        noise = sum(v for k, v in a.items() if k.startswith("noise_"))
        L.append(f"| {s} | {x['utterances']} | {x['hours']} | {x['duration_s'].get('mean', 0)} | "
                 f"{x['voices_used']} / {x['voices_available']} | {x['heldout_phrasing']} | {x['indirect']} | "
                 f"{x['distinct_transcripts']} | {a.get('clean', 0)} | {noise} | {a.get('reverb', 0)} | "
                 f"{a.get('speed', 0)} | {a.get('tempo', 0)} |")
    L += ["", "Noise colours and SNRs:", ""]
    for s in SPLITS:
        if s in sp:
            a = sp[s]["augmentation"]
            L.append(f"* {s}: " + ", ".join(f"{k} {v}" for k, v in a.items()
                                            if k.startswith(("noise_", "snr_"))))
    L += ["", "Engines: " + "; ".join(f"{s} " + ", ".join(f"{k} {v}" for k, v in sp[s]["by_engine"].items())
                                      for s in SPLITS if s in sp), "",
          "## Intents", "",
          "| intent | action | object | location | train | valid | test | phrasings seen / held-out |",
          "|---|---|---|---|---:|---:|---:|---:|"]
    inv = stats["phrasings"]
    for k in INTENT_KEYS:
        i = intent_from_key(k)
        L.append(f"| {k} | {i.action} | {i.object} | {i.location} | "
                 + " | ".join(str(sp[s]["by_intent"][k]) if s in sp else "0" for s in SPLITS)
                 + f" | {inv[k]['seen']} / {inv[k]['heldout']} |")
    L += ["", f"Phrasings: {sum(v['phrasings'] for v in inv.values())} distinct strings "
              f"({sum(v['seen'] for v in inv.values())} seen, {sum(v['heldout'] for v in inv.values())} "
              f"test-only), {sum(v['phrasings'] for v in inv.values()) / len(inv):.1f} per intent on average.", ""]
    L += ["## Voices", "", "Valid and test voices never occur in training: their espeak-ng base voice *and* "
          "variant are unused by training voices; flite voices are split whole; festival speaks training "
          "utterances only.", ""]
    for s in SPLITS:
        if s not in sp:
            continue
        L += [f"### {s}", "", _voice_table(sp[s]["by_voice"]), ""]
    return "\n".join(L)
