"""Writes expected_en_de.tsv: the Python API's translations that the Java test
(ai/ondevice/TranslatorTest.java) must reproduce exactly through JNI.

    python3 cpp_runtime/jni/test/make_expected.py      # from the repository root

Uses the installed `ondevice` package (its default backend is the same C++
runtime, reached through the Python bindings) on the shipped model
models/nmt-en-de-bcq/onnx. Lines: beam size, source, translation, tab-separated;
sources are held-out text (models/nmt-en-de/eval/ci_*.en, not in the training data)
plus a few non-ASCII lines (accents, CJK, emoji, characters outside the BMP) that
check the UTF-16 <-> UTF-8 conversion at the JNI boundary.
"""
from pathlib import Path

from ondevice import Translator

ROOT = Path(__file__).resolve().parents[3]
MODEL = ROOT / "models/nmt-en-de-bcq/onnx"
EVAL = ROOT / "models/nmt-en-de/eval"
OUT = Path(__file__).resolve().parent / "expected_en_de.tsv"


def lines(name: str, n: int) -> list[str]:
    return (EVAL / name).read_text(encoding="utf-8").splitlines()[:n]


def main() -> None:
    unicode_lines = [
        "The café is naïve, über 100 € per night.",
        "Open the file 日本語.txt now.",
        "I love pizza 🍕 and music 🎵!",
        "The symbols 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and 😀 are outside the BMP.",
    ]
    cases = {
        4: lines("ci_ui.en", 20) + lines("ci_bible.en", 5) + ["The house is small."] + unicode_lines,
        1: lines("ci_ui.en", 5) + ["The house is small.", "And God said, Let there be light: and there was light."]
        + unicode_lines[:2],
    }
    t = Translator(MODEL, threads=1)
    rows = []
    for beam, sources in cases.items():
        for src, hyp in zip(sources, t.translate_batch(sources, beam_size=beam)):
            for s in (src, hyp):
                if "\t" in s or "\n" in s or "\r" in s:
                    raise SystemExit(f"cannot store {s!r} in a TSV line")
            rows.append(f"{beam}\t{src}\t{hyp}\n")
    OUT.write_text("".join(rows), encoding="utf-8")
    print(f"wrote {len(rows)} lines to {OUT}")


if __name__ == "__main__":
    main()
