"""Diagnostic (session 14): would lexical substitution (WordNet synonyms of the seen phrasings' words)
put the held-out phrasings' new words into training?  Counts how many of the words that only held-out
phrasings use are a WordNet lemma sharing a synset with some seen-phrasing word.  Needs Debian's
``wordnet-base`` (the dictionary files under /usr/share/wordnet); run from the repository root."""
import collections
import re

from ondevice.slu.intents import INTENTS
from ondevice.slu.phrasings import phrasings

WORDNET = "/usr/share/wordnet"
POS = ("noun", "verb", "adj", "adv")
SUFFIXES = (("ies", "y"), ("es", ""), ("s", ""), ("ing", ""), ("ing", "e"), ("ed", ""), ("ed", "e"),
            ("er", ""), ("est", ""))

index: dict[str, set] = collections.defaultdict(set)  # lemma -> {(pos, synset offset)}
synsets: dict[tuple, list[str]] = {}                  # (pos, offset) -> its lemmas
for pos in POS:
    for line in open(f"{WORDNET}/index.{pos}"):
        if not line.startswith(" "):
            f = line.split()
            index[f[0]].update((pos, o) for o in f[4 + int(f[3]) + 2:])
    for line in open(f"{WORDNET}/data.{pos}"):
        if not line.startswith(" "):
            f = line.split()
            synsets[(pos, f[0])] = [f[4 + 2 * i].lower() for i in range(int(f[3], 16))]


def lemmas(word: str) -> list[str]:
    """The word and its suffix-stripped forms that WordNet knows (a crude morphology)."""
    forms = [word] + [word[:-len(s)] + r for s, r in SUFFIXES if word.endswith(s) and len(word) > len(s) + 2]
    return [w for w in forms if w in index] or [word]


def synonyms(word: str) -> set[str]:
    return {re.sub(r"\(.*\)", "", lemma) for b in lemmas(word) for k in index.get(b, ())
            for lemma in synsets[k] if "_" not in lemma}


seen, held = set(), set()
for intent in INTENTS:
    for p in phrasings(intent.key):
        (held if p.heldout else seen).update(p.text.replace(",", "").split())
novel = sorted(held - seen)
reachable = set().union(*(synonyms(w) for w in seen))
covered = [w for w in novel if any(b in reachable for b in [w] + lemmas(w))]
print(f"{len(seen)} seen words; {len(novel)} words only in held-out phrasings; {len(covered)} reachable as synonyms")
print("reachable:", covered)
print("not reachable:", [w for w in novel if w not in covered])
