"""Mixed espeak-ng timbres: new training voices recombined from the training variants' parameters.

An espeak-ng voice variant (``espeak-ng-data/voices/!v/NAME``) is a short text file of timbre
parameters: a pitch base and range, nine formant lines (frequency, height and width, in percent
of the base voice's), spectral tone, flutter, roughness, breathiness, voicing, the Klatt
synthesiser. The corpus's held-out voices use variants never heard in training, and models fail
most on those whose parameters lie far from every training variant (corpus v2: 62 % on one test
variant, 97 % on another). A *mixed timbre* takes each parameter group from a training variant drawn
at random (formant by formant), then scales every formant frequency by one factor (a vocal-tract
length change), so training covers combinations no single variant has. Only training variants are
sources; valid and test variants are never read.

espeak-ng reads variants only from its data directory, so :func:`write_overlay` builds a private
copy of that directory made of symbolic links, in the render's temporary directory, whose
``voices/!v`` also holds the mixed timbre's file; ``espeak-ng --path=OVERLAY -v BASE+NAME`` then
speaks with it.
"""

from __future__ import annotations

import functools
import hashlib
import os
import random
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError

#: Parameter groups taken whole from one source variant (a formant line is its own group).
GROUPS = ("pitch", "tone", "flutter", "roughness", "voicing", "breath", "consonants", "echo", "klatt",
          *(f"formant {k}" for k in range(9)))
#: Range of the common formant-frequency factor (uniform).
FORMANT_SCALE = (0.9, 1.12)
_KEY = re.compile(r"^[A-Za-z]+")


def espeak_data_dir() -> Path:
    """The system espeak-ng data directory (``espeak-ng --version`` names it)."""
    return _espeak_data_dir()


@functools.lru_cache(maxsize=None)
def _espeak_data_dir() -> Path:
    try:
        out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise DataError(f"cannot run espeak-ng --version ({e}); install the espeak-ng package") from None
    m = re.search(r"Data at:\s*(\S+)", out)
    if m is None or not (Path(m.group(1)) / "voices" / "!v").is_dir():
        raise DataError(f"espeak-ng --version names no data directory with voices/!v: {out.strip()!r}")
    return Path(m.group(1))


@functools.lru_cache(maxsize=None)
def variant_groups(name: str) -> dict[str, tuple[str, ...]]:
    """The parameter lines of a system variant, by group (``breathw`` goes with ``breath``)."""
    path = espeak_data_dir() / "voices" / "!v" / name
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise DataError(f"cannot read the espeak-ng variant {path}: {e}") from None
    groups: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.split("//", 1)[0].strip()
        m = _KEY.match(line)
        if not m or line.startswith("#"):
            continue
        key = m.group(0)
        if key == "formant":
            parts = line.split()
            if len(parts) < 3 or not parts[1].isdigit():
                continue
            key = f"formant {int(parts[1])}"
        elif key == "breathw":
            key = "breath"
        if key in GROUPS:
            groups.setdefault(key, []).append(" ".join(line.split()))
    return {k: tuple(v) for k, v in groups.items()}


@dataclass(frozen=True)
class MixedTimbre:
    """Which training variant each parameter group comes from ("" = the base voice's default), and
    the formant-frequency factor."""
    sources: tuple[tuple[str, str], ...]   # (group, variant) in GROUPS order
    formant_scale: float

    def variant_text(self) -> str:
        lines = ["language variant", "name mixed"]
        for group, src in self.sources:
            for line in (variant_groups(src).get(group, ()) if src else ()):
                if group.startswith("formant"):
                    p = line.split()
                    p[2] = str(max(1, round(int(p[2]) * self.formant_scale))) if p[2].isdigit() else p[2]
                    line = " ".join(p)
                lines.append(line)
        if self.formant_scale != 1.0:  # formants the sources leave at 100 % move too
            defined = {g for g, s in self.sources if s and g in variant_groups(s)}
            lines += [f"formant {k} {round(100 * self.formant_scale)} 100 100" for k in range(9)
                      if f"formant {k}" not in defined]
        return "\n".join(lines) + "\n"

    @property
    def name(self) -> str:
        """The variant's file name: a hash of its text (equal mixes share a file)."""
        return "mix" + hashlib.sha256(self.variant_text().encode()).hexdigest()[:12]

    def to_json(self) -> dict:
        return {"formant_scale": self.formant_scale, "sources": {g: s for g, s in self.sources}}


def draw(rng: random.Random, variants: tuple[str, ...]) -> MixedTimbre:
    """A mixed timbre whose groups come from ``variants`` (the training variants), uniformly."""
    if not variants:
        raise DataError("no source variants to mix a timbre from")
    sources = tuple((g, rng.choice(variants)) for g in GROUPS)
    return MixedTimbre(sources, round(rng.uniform(*FORMANT_SCALE), 3))


def write_overlay(parent: str | os.PathLike, timbre: MixedTimbre) -> str:
    """Builds, under ``parent`` (the render's temporary directory), an espeak-ng data directory of
    symbolic links to the system one plus the timbre's variant file; returns what ``--path`` takes.
    About 350 links: a few milliseconds, and nothing outlives the render."""
    src = espeak_data_dir()
    data = Path(parent) / "espeak-ng-data"
    data.mkdir()
    for entry in src.iterdir():
        if entry.name != "voices":
            (data / entry.name).symlink_to(entry)
    (data / "voices").mkdir()
    for entry in (src / "voices").iterdir():
        if entry.name != "!v":
            (data / "voices" / entry.name).symlink_to(entry)
    vdir = data / "voices" / "!v"
    vdir.mkdir()
    for entry in (src / "voices" / "!v").iterdir():
        (vdir / entry.name).symlink_to(entry)
    (vdir / timbre.name).write_text(timbre.variant_text(), encoding="utf-8")
    return str(parent)
