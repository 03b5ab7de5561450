"""Text normalisation, length filters and the overlap key shared by the data pipeline.

Every rule here is documented in docs/data.md ("Normalisation and filters"); keep the two in sync.
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata

# Length limits applied to every pair (both sides), after normalisation.
MIN_CHARS = 1
MAX_CHARS = 300
MAX_WORDS = 64
# Character-length ratio limit (longer / shorter side); only applied when the longer
# side has at least RATIO_MIN_CHARS characters (very short UI strings such as
# "Up" -> "Nach oben" legitimately differ by more than 3x).
MAX_RATIO = 3.0
RATIO_MIN_CHARS = 20

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """NFC, drop control/format characters (incl. zero-width and soft hyphen), collapse
    every run of Unicode whitespace (incl. NBSP, U+202F, line/paragraph separators) to one
    ASCII space, strip. The result never contains a line break."""
    text = unicodedata.normalize("NFC", text)
    if not text.isprintable():   # fast path: printable text has no Cc/Cf character
        text = "".join(ch for ch in text
                       if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cf"))
    return _WS.sub(" ", text).strip()


@functools.cache
def _punct_table() -> dict[int, str]:
    return {cp: " " for cp in range(sys.maxunicode + 1) if unicodedata.category(chr(cp)).startswith("P")}


def overlap_key(text: str) -> str:
    """Key used for the train/held-out overlap check: normalised, case-folded, with every
    Unicode punctuation character removed and whitespace collapsed."""
    text = normalize(text).casefold().translate(_punct_table())
    return _WS.sub(" ", text).strip()


def length_reject_reason(src: str, tgt: str) -> str | None:
    """None if the (normalised) pair passes the length filters, else the name of the
    first failed filter: ``empty``, ``too_long_chars``, ``too_long_words`` or ``ratio``."""
    ls, lt = len(src), len(tgt)
    if ls < MIN_CHARS or lt < MIN_CHARS:
        return "empty"
    if ls > MAX_CHARS or lt > MAX_CHARS:
        return "too_long_chars"
    if len(src.split()) > MAX_WORDS or len(tgt.split()) > MAX_WORDS:
        return "too_long_words"
    longer, shorter = max(ls, lt), min(ls, lt)
    if longer >= RATIO_MIN_CHARS and longer > MAX_RATIO * shorter:
        return "ratio"
    return None


def filter_rules() -> dict:
    """The filter constants, for stats.json."""
    return {"normalization": "NFC; control/format chars removed; whitespace collapsed; stripped",
            "min_chars": MIN_CHARS, "max_chars": MAX_CHARS, "max_words": MAX_WORDS,
            "max_char_ratio": MAX_RATIO, "ratio_applies_from_chars": RATIO_MIN_CHARS,
            "overlap_key": "normalised, casefolded, Unicode punctuation (P*) removed"}
