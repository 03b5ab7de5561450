"""The 31 intents of Fluent Speech Commands (FSC) and their slot vocabularies.

FSC (Lugosch et al., "Speech Model Pre-training for End-to-End Spoken Language Understanding",
Interspeech 2019) labels each utterance with three slots, action / object / location; a
combination of the three is an *intent*, and only 31 of the 6 x 14 x 4 combinations occur.
The list below is FSC's: the same 31 ``action_object_location`` keys appear in the label
maps of public FSC recipes (e.g. a ``label2idx`` table of an FSC intent classifier, and the
slot grammar of voice2json's ``recipes/fluent_dataset/sentences.ini``), and it follows from
FSC's published description (lights and heat take a location; every other object has
location ``none``; "change language" takes a language or ``none``). See docs/slu-data.md.

Label ids are the position in :data:`INTENTS`, which is sorted by key, so they never
depend on generation order.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Slot vocabularies, as FSC spells them (``change language`` has a space; languages are capitalised).
ACTIONS = ("activate", "bring", "change language", "deactivate", "decrease", "increase")
OBJECTS = ("none", "music", "lights", "volume", "heat", "lamp", "newspaper", "juice", "socks", "shoes",
           "Chinese", "Korean", "English", "German")
LOCATIONS = ("none", "kitchen", "bedroom", "washroom")

ROOMS = ("kitchen", "bedroom", "washroom")
LANGUAGES = ("Chinese", "Korean", "English", "German")


@dataclass(frozen=True, order=True)
class Intent:
    action: str
    object: str
    location: str

    @property
    def key(self) -> str:
        """FSC's label string, e.g. ``activate_lights_kitchen`` or ``change language_none_none``."""
        return f"{self.action}_{self.object}_{self.location}"

    def as_dict(self) -> dict[str, str]:
        return {"action": self.action, "object": self.object, "location": self.location}


def _fsc_intents() -> list[Intent]:
    out = []
    for action in ("activate", "deactivate"):
        out.append(Intent(action, "music", "none"))
        out.append(Intent(action, "lamp", "none"))
        for loc in LOCATIONS:
            out.append(Intent(action, "lights", loc))
    for action in ("increase", "decrease"):
        out.append(Intent(action, "volume", "none"))
        for loc in LOCATIONS:
            out.append(Intent(action, "heat", loc))
    for obj in ("newspaper", "juice", "socks", "shoes"):
        out.append(Intent("bring", obj, "none"))
    for obj in ("none",) + LANGUAGES:
        out.append(Intent("change language", obj, "none"))
    return sorted(out, key=lambda i: i.key)


#: The 31 FSC intents, sorted by key (label id = index).
INTENTS: tuple[Intent, ...] = tuple(_fsc_intents())
INTENT_KEYS: tuple[str, ...] = tuple(i.key for i in INTENTS)
_BY_KEY = {i.key: i for i in INTENTS}
assert len(INTENTS) == 31 and len(_BY_KEY) == 31


def intent_from_key(key: str) -> Intent:
    """The intent of an FSC label string; ValueError for anything else."""
    try:
        return _BY_KEY[key]
    except KeyError:
        raise ValueError(f"not one of the 31 FSC intents: {key!r}") from None


def intent_index(intent: Intent | str) -> int:
    key = intent if isinstance(intent, str) else intent.key
    return INTENT_KEYS.index(intent_from_key(key).key)


def label_vocabularies() -> dict[str, list[str]]:
    """Per-slot label lists (for slot-wise classifiers) and the intent list."""
    return {"action": list(ACTIONS), "object": list(OBJECTS), "location": list(LOCATIONS),
            "intent": list(INTENT_KEYS)}


def best_valid_intent(log_probs: dict[str, "np.ndarray"], intents=None,
                      labels: dict[str, "list[str]"] | None = None) -> tuple[Intent, float]:
    """The one of the valid intents with the highest summed slot log-probability (``log_probs[slot]``:
    1-D over that slot's labels), and that sum; the first in list order on ties.  Slot-wise argmax can
    combine slots into an intent that does not exist (e.g. "bring lights"); decoding over the intent
    table cannot.  ``intents``: the valid combinations, :class:`Intent` or ``(action, object,
    location)`` (a manifest's ``"intents"``); default the 31 of :data:`INTENTS`.  ``labels``: each
    slot's label list, in ``log_probs`` order (a manifest's ``"slots"``); default the FSC vocabularies.
    The native runtime (``ondevice::Understander``) decodes the same way."""
    table = INTENTS if intents is None else [it if isinstance(it, Intent) else Intent(*it) for it in intents]
    vocab = {"action": ACTIONS, "object": OBJECTS, "location": LOCATIONS} if labels is None else labels
    best, score = None, -float("inf")
    for it in table:
        s = (float(log_probs["action"][vocab["action"].index(it.action)])
             + float(log_probs["object"][vocab["object"].index(it.object)])
             + float(log_probs["location"][vocab["location"].index(it.location)]))
        if s > score:
            best, score = it, s
    return best, score
