"""UI-text pairs from compiled GNU gettext catalogs (``.mo``), e.g. Debian's /usr/share/locale.

:func:`parse_mo` is a small validating reader of the GNU ``.mo`` format (magic 0x950412de in
either byte order; major revision 0 or 1; tables of (length, offset) uint32 pairs for the
original and translated strings; NUL-separated plural forms; ``msgctxt`` joined to the msgid by
``\\x04``). Anything inconsistent raises :class:`~ondevice.errors.DataError`.

:func:`clean_entry` turns one entry into a (source, target) pair or a drop reason, and
:func:`iter_ui_pairs` applies it to every catalog of a language. The rules are listed in
docs/data.md ("UI catalogs"). ``.mo`` files hold no fuzzy entries: ``msgfmt`` leaves them out
unless ``--use-fuzzy`` is given, so there is nothing to filter there.
"""

from __future__ import annotations

import codecs
import os
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import DataError
from .text import normalize

MO_MAGIC = 0x950412DE
#: Entries longer than this (characters, either side, after normalisation) are dropped:
#: they are --help blocks and long descriptions, not UI strings.
UI_MAX_CHARS = 200
#: Identical source/target with more than this many words is an untranslated copy -> dropped.
#: Short identical pairs ("OK", "Name", "Pause") are genuine translations and are kept.
IDENTICAL_MAX_WORDS = 3
#: Catalogs never used: long lists of proper nouns (territory subdivisions and ~8k language
#: names, mostly copied untranslated) and the legacy duplicate names of the iso-codes catalogs.
EXCLUDED_CATALOGS = frozenset({"iso_3166-2", "iso_3166_2", "iso_639-3", "iso_639_3",
                               "iso_3166", "iso_639", "iso_639_5"})


@dataclass(frozen=True)
class MoEntry:
    msgid: str                      # singular msgid, without context
    msgstr: str                     # first (or only) translation form
    msgctxt: str | None = None
    msgid_plural: str | None = None
    plural_forms: tuple[str, ...] = ()  # all msgstr forms when msgid_plural is set


@dataclass(frozen=True)
class MoCatalog:
    headers: dict[str, str]
    charset: str
    entries: tuple[MoEntry, ...]    # header entry (msgid "") excluded, in file order


def _parse_headers(raw: bytes) -> dict[str, str]:
    text = raw.decode("ascii", errors="replace")
    out: dict[str, str] = {}
    for line in text.split("\n"):
        k, sep, v = line.partition(":")
        if sep and k.strip():
            out[k.strip().lower()] = v.strip()
    return out


def _charset(headers: dict[str, str], name: str) -> str:
    m = re.search(r"charset\s*=\s*([A-Za-z0-9_.:-]+)", headers.get("content-type", ""))
    cs = m.group(1) if m else "UTF-8"
    if cs.upper() == "CHARSET":      # unfilled template value
        cs = "UTF-8"
    try:
        codecs.lookup(cs)
    except LookupError:
        raise DataError(f"{name}: unknown charset {cs!r} in the .mo header; recompile the catalog with msgfmt "
                        "from a .po file with a valid charset, or remove it from the locale directory") from None
    return cs


def parse_mo(data: bytes, name: str = "<bytes>") -> MoCatalog:
    """Parse a GNU ``.mo`` file's bytes; raise DataError if it is not a consistent catalog."""
    size = len(data)
    what = f"{name} is not a valid GNU .mo catalog"
    fix = "; recompile it with msgfmt or remove it from the locale directory"
    if size < 28:
        raise DataError(f"{what} (only {size} bytes){fix}")
    magic_le = struct.unpack_from("<I", data, 0)[0]
    if magic_le == MO_MAGIC:
        end = "<"
    elif struct.unpack_from(">I", data, 0)[0] == MO_MAGIC:
        end = ">"
    else:
        raise DataError(f"{what} (bad magic 0x{magic_le:08x}){fix}")
    revision, n, orig_off, trans_off = struct.unpack_from(end + "4I", data, 4)
    if revision >> 16 not in (0, 1):
        raise DataError(f"{what} (unsupported major revision {revision >> 16}){fix}")
    for label, off in (("original", orig_off), ("translation", trans_off)):
        if off > size or n > (size - off) // 8:
            raise DataError(f"{what} ({label} string table of {n} entries at offset {off} exceeds the "
                            f"{size}-byte file){fix}")

    def string(table: int, i: int) -> bytes:
        length, off = struct.unpack_from(end + "2I", data, table + 8 * i)
        if off > size or length >= size - off:   # length + terminating NUL must fit
            raise DataError(f"{what} (string {i} at offset {off} with length {length} exceeds the "
                            f"{size}-byte file){fix}")
        return data[off:off + length]

    raw = [(string(orig_off, i), string(trans_off, i)) for i in range(n)]
    headers: dict[str, str] = {}
    for k, v in raw:
        if k == b"":
            headers = _parse_headers(v)
            break
    charset = _charset(headers, name)
    entries = []
    for i, (k, v) in enumerate(raw):
        if k == b"":
            continue
        try:
            ks, vs = k.decode(charset), v.decode(charset)
        except UnicodeDecodeError as e:
            raise DataError(f"{what} (entry {i} is not valid {charset}: {e.reason}){fix}") from None
        ctxt = None
        if "\x04" in ks:
            ctxt, ks = ks.split("\x04", 1)
        if "\x00" in ks:
            singular, plural = ks.split("\x00", 1)
            forms = tuple(vs.split("\x00"))
            entries.append(MoEntry(singular, forms[0], ctxt, plural, forms))
        else:
            entries.append(MoEntry(ks, vs, ctxt))
    return MoCatalog(headers, charset, tuple(entries))


def read_mo(path: str | os.PathLike) -> MoCatalog:
    """Read and parse one ``.mo`` file (DataError if unreadable or corrupt)."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read gettext catalog {path}: {e.strerror}; check the path and permissions") from None
    return parse_mo(data, str(path))


# ---------------------------------------------------------------------------------------------
# cleaning

#: printf conversions (C/glibc incl. positional %1$s and %m), python %(name)s, {name}/{0}/{} fields.
#: The ' ' flag is deliberately not accepted: '100% sure' must not read as the conversion '% s'.
_PRINTF = re.compile(
    r"%(?:\d+\$)?[-+#0'I]*(?:\d+|\*(?:\d+\$)?)?(?:\.(?:\d+|\*(?:\d+\$)?))?"
    r"(?:hh|h|ll|l|L|q|j|z|Z|t)?[diouxXeEfFgGaAcCsSpnm]"
    r"|%\([A-Za-z_][A-Za-z0-9_]*\)[-+ #0]*\d*(?:\.\d+)?[diouxXeEfFgGrsa]"
    r"|%<[A-Za-z0-9_]+>"                       # system-dependent string segments (%<PRIu64>)
    r"|\{[A-Za-z_0-9]*(?:\.[A-Za-z_0-9]+)*(?:![rsa])?(?::[^{}]*)?\}")
_POSITIONAL = re.compile(r"^%\d+\$")
_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9:_-]*(?:\s[^<>]*)?/?>|&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);")
_ENTITY = re.compile(r"&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);")


def placeholders(text: str) -> Counter:
    """Multiset of placeholders, with printf positional indices ('%2$s' -> '%s') removed so
    that reordering by translators is not a mismatch. '%%' is a literal, not a placeholder."""
    text = text.replace("%%", "")
    return Counter(_POSITIONAL.sub("%", m.group(0)) for m in _PRINTF.finditer(text))


def _letters_outside_markup(text: str) -> int:
    text = _PRINTF.sub(" ", text.replace("%%", " "))
    text = _TAG.sub(" ", text)
    return sum(ch.isalpha() for ch in text)


_PIPE_CTX = re.compile(r"^\|[^|\s]*\|\s*")
_WORD = re.compile(r"[^\W\d_]+")


def build_vocab(texts: Iterable[str]) -> frozenset[str]:
    """Case-folded letter words of the texts that contain no mnemonic marker at all; used by
    :func:`strip_mnemonics` to tell 'C_onnect' (-> 'Connect', a known word) from an identifier
    such as 'max_connections' or 'O_DIRECT' ('maxconnections'/'odirect' are not words)."""
    vocab: set[str] = set()
    for t in texts:
        if "_" not in t and "&" not in t:
            vocab.update(w.casefold() for w in _WORD.findall(t))
    return frozenset(vocab)


def _marker_pos(text: str, marker: str) -> int | None:
    """Index of the single accelerator candidate of this kind, or None."""
    work = _ENTITY.sub(lambda m: "\0" * len(m.group(0)), text) if marker == "&" else text
    hits = [i for i, ch in enumerate(work) if ch == marker]
    if len(hits) != 1:
        return None                       # none, or several: not a single accelerator
    i = hits[0]
    if i + 1 >= len(text) or not (text[i + 1].isalpha() or text[i + 1].isdigit()):
        return None
    return i


def _is_mnemonic(text: str, i: int, vocab: frozenset[str]) -> bool:
    left = re.search(r"[^\W_]*$", text[:i]).group(0)
    right = re.match(r"[^\W_]*", text[i + 1:]).group(0)
    j = i - len(left)                         # start of the word carrying the marker
    if j > 0 and text[j - 1] in "._$\\/-":  # '.debug_info', '$foo', path parts: identifiers
        return False
    if text[i + 1 + len(right):i + 2 + len(right)] == "(":  # 'in_tr(': a function name
        return False
    if left and right and (left + right).upper() == left + right:  # 'O_DIRECT', 'HOME_DIR'
        return False
    if len(left) >= 2 and len(right) >= 2 and left.islower() and right.islower():
        return False                          # snake_case identifier: 'job_spec', 'nom_fichier'
    if (left + right).casefold() in vocab:
        return True
    return not left and right[:1].isupper() and any(ch.islower() for ch in right)


def strip_mnemonics(src: str, tgt: str, src_vocab: frozenset[str] = frozenset(),
                    tgt_vocab: frozenset[str] = frozenset()) -> tuple[str, str]:
    """Remove GTK ('_File', 'C_onnect') and Qt/KDE ('&File') accelerator markers.

    A side's marker is removed only if it is the only one of its kind on that side (HTML
    entities such as '&amp;' do not count) and precedes a letter or digit; the word carrying it
    is not an upper-case identifier ('O_DIRECT', 'AT&T'), a snake_case identifier ('job_spec',
    'nom_fichier'), a '.section'/'$var'/path part or a function name ('in_tr(%s)'); and either
    the word without the marker is a known word of that language (``*_vocab``, see
    :func:`build_vocab`) or the marker starts a capitalised word ('_Abbrechen').
    Known miss: a mnemonic inside an all-lower-case word ('Page or_dering') is kept.
    """
    for marker in ("_", "&"):
        pos = {"s": _marker_pos(src, marker), "t": _marker_pos(tgt, marker)}
        if pos["s"] is not None and _is_mnemonic(src, pos["s"], src_vocab):
            src = src[:pos["s"]] + src[pos["s"] + 1:]
        if pos["t"] is not None and _is_mnemonic(tgt, pos["t"], tgt_vocab):
            tgt = tgt[:pos["t"]] + tgt[pos["t"] + 1:]
    return src, tgt


def clean_entry(entry: MoEntry, src_vocab: frozenset[str] = frozenset(),
                tgt_vocab: frozenset[str] = frozenset()) -> tuple[str, str] | str:
    """A cleaned (source, target) pair, or the name of the rule that drops the entry.

    Order: untranslated -> multiline -> placeholder_mismatch -> mnemonics removed ->
    normalised -> no_text (placeholders/markup/punctuation only) -> too_long -> identical_copy.
    Plural entries use the singular msgid and the first msgstr form (form 0 is the singular in
    German and French); the context (msgctxt) is dropped, and so is GnuPG's in-string
    '|context|' prefix ('|pinentry-label|_Cancel', '|FILE|read options from FILE').
    """
    src, tgt = entry.msgid, entry.msgstr
    if _PIPE_CTX.match(src):               # GnuPG's '|ctx|text' / '|METAVAR|help' convention
        src, tgt = _PIPE_CTX.sub("", src, count=1), _PIPE_CTX.sub("", tgt, count=1)
    if not tgt.strip() or (entry.plural_forms and not all(f.strip() for f in entry.plural_forms)):
        return "untranslated"
    # formatted multi-line blocks (--help option tables, usage texts): a line break other than
    # a trailing one on either side
    if "\n" in src.strip("\n") or "\n" in tgt.strip("\n"):
        return "multiline"
    if placeholders(src) != placeholders(tgt):
        return "placeholder_mismatch"
    src, tgt = strip_mnemonics(src, tgt, src_vocab, tgt_vocab)
    src, tgt = normalize(src), normalize(tgt)
    if _letters_outside_markup(src) < 2 or _letters_outside_markup(tgt) < 2:
        return "no_text"
    if len(src) > UI_MAX_CHARS or len(tgt) > UI_MAX_CHARS:
        return "too_long"
    if src == tgt and len(src.split()) > IDENTICAL_MAX_WORDS:
        return "identical_copy"
    return src, tgt


@dataclass(frozen=True)
class UiPair:
    src: str
    tgt: str
    package: str   # catalog file stem, e.g. "coreutils"


def catalog_paths(lang: str, locale_dir: str | os.PathLike) -> list[Path]:
    """Sorted ``.mo`` files of ``locale_dir/LANG/LC_MESSAGES`` minus :data:`EXCLUDED_CATALOGS`."""
    d = Path(locale_dir) / lang / "LC_MESSAGES"
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if p.suffix == ".mo" and p.is_file() and p.stem not in EXCLUDED_CATALOGS)


def iter_ui_pairs(lang: str, locale_dir: str | os.PathLike = "/usr/share/locale", *,
                  report: dict | None = None, paths: Iterable[Path] | None = None) -> Iterator[UiPair]:
    """Cleaned (msgid, msgstr, package) pairs of every catalog of ``lang``, catalogs in name order,
    entries in file order. A corrupt catalog is skipped and recorded in ``report['skipped']``
    (one broken system file should not stop the pipeline; use :func:`read_mo` to get the error).
    ``report`` also receives per-catalog entry/kept counts and drop counts per rule."""
    rep = report if report is not None else {}
    rep.setdefault("catalogs", {})
    rep.setdefault("skipped", {})
    rep.setdefault("dropped", {})
    catalogs: list[tuple[Path, MoCatalog]] = []
    for path in (catalog_paths(lang, locale_dir) if paths is None else paths):
        try:
            catalogs.append((path, read_mo(path)))
        except DataError as e:
            rep["skipped"][path.stem] = str(e)
    src_vocab = build_vocab(e.msgid for _, cat in catalogs for e in cat.entries)
    tgt_vocab = build_vocab(e.msgstr for _, cat in catalogs for e in cat.entries)
    for path, cat in catalogs:
        kept = 0
        for entry in cat.entries:
            r = clean_entry(entry, src_vocab, tgt_vocab)
            if isinstance(r, str):
                rep["dropped"][r] = rep["dropped"].get(r, 0) + 1
                continue
            kept += 1
            yield UiPair(r[0], r[1], path.stem)
        rep["catalogs"][path.stem] = {"file": str(path), "entries": len(cat.entries), "kept": kept,
                                      "charset": cat.charset,
                                      "project": cat.headers.get("project-id-version", "")}
