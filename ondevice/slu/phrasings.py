"""Natural phrasings of the 31 FSC intents, as templates.

Each intent has a list of :class:`Template` s written in a tiny grammar:

* ``(a|b|c)`` — one of the alternatives (they may be empty: ``(please|)``);
* ``[x]`` — optional ``x`` (same as ``(x|)``);
* ``{room}`` — the room of the intent's location (``washroom`` is also said as ``bathroom``);
* ``{lang}`` — the language of a ``change language`` intent.

Groups nest. :func:`expand` turns a template into every distinct string it can produce
(whitespace normalised). A template marked ``indirect`` does not name the action directly
("it's too loud" → decrease volume; "i'm freezing" → increase heat). A template marked
``heldout`` is used **only in the test split** (phrasings never seen in training or
validation); a string that a held-out template shares with a seen template of the same
intent stays on the seen side.

Invariants (checked by tests/test_slu_data.py): every intent has seen and held-out phrasings
and at least one indirect seen phrasing; no string belongs to two intents; phrasings of
location-``none`` intents name no room and those with a location always do.

Spelling: lower case, apostrophes kept ("it's"), no other punctuation except commas that
mark a pause for the TTS engines; transcripts are exactly the strings spoken.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .intents import INTENTS, Intent


@dataclass(frozen=True)
class Template:
    text: str
    indirect: bool = False
    heldout: bool = False


def T(text: str) -> Template:
    return Template(text)


def I(text: str) -> Template:  # noqa: E743 - short names keep the tables readable
    """An indirect phrasing."""
    return Template(text, indirect=True)


def H(text: str, indirect: bool = False) -> Template:
    """A held-out (test-only) phrasing."""
    return Template(text, indirect=indirect, heldout=True)


# --------------------------------------------------------------------------------------- grammar

def _parse(text: str, pos: int, close: str | None) -> tuple[list[str], int]:
    """Expands text[pos:] up to the closing bracket ``close``; returns (alternatives, next pos)."""
    alternatives: list[list[str]] = [[""]]
    i = pos
    while i < len(text):
        c = text[i]
        if c in "([":
            inner, i = _parse(text, i + 1, ")" if c == "(" else "]")
            if c == "[":
                inner = inner + [""]
            alternatives[-1] = [a + b for a in alternatives[-1] for b in inner]
            continue
        if c == close:
            return [s for alt in alternatives for s in alt], i + 1
        if c in ")]":
            raise ValueError(f"unbalanced {c!r} at {i} in template {text!r}")
        if c == "|":
            if close != ")":
                raise ValueError(f"'|' outside (...) at {i} in template {text!r}")
            alternatives.append([""])
        else:
            alternatives[-1] = [a + c for a in alternatives[-1]]
        i += 1
    if close is not None:
        raise ValueError(f"missing {close!r} in template {text!r}")
    return [s for alt in alternatives for s in alt], i


def _clean(s: str) -> str:
    s = re.sub(r"\s+", " ", s).strip()
    s = re.sub(r"\s+,", ",", s)
    return s.strip(" ,")


def expand(template: str, room: str | None = None, lang: str | None = None) -> list[str]:
    """Every distinct string of a template, in first-seen order."""
    if "{room}" in template:
        if room is None:
            raise ValueError(f"template needs a room: {template!r}")
        template = template.replace("{room}", "(washroom|bathroom)" if room == "washroom" else room)
    if "{lang}" in template:
        if lang is None:
            raise ValueError(f"template needs a language: {template!r}")
        template = template.replace("{lang}", lang.lower())
    if "{" in template:
        raise ValueError(f"unknown placeholder in template {template!r}")
    out, _ = _parse(template, 0, None)
    return list(dict.fromkeys(_clean(s) for s in out if _clean(s)))


# ---------------------------------------------------------------------------------- the templates
# Lights / heat come in a no-location and a with-room version; {room} is filled per intent.

_LIGHTS_ON = [
    T("(turn|switch|put) on the (lights|light)"),
    T("(turn|switch) the (lights|light) on"),
    T("lights on[, please]"),
    T("(can|could) you (turn|switch) on the lights"),
    T("please turn the lights on"),
    T("i'd like the lights on"),
    I("it's (too|so|really) dark in here"),
    I("i can't see (anything|a thing) in here"),
    I("i need some light [in here]"),
    I("let there be light"),
    H("it's pitch black in here", indirect=True),
    H("could we have some light [in here]", indirect=True),
    H("light up the place"),
]
_LIGHTS_ON_ROOM = [
    T("(turn|switch) on the (lights|light) in the {room}"),
    T("(turn|switch) the (lights|light) on in the {room}"),
    T("(turn|switch|put) on the {room} (lights|light)"),
    T("{room} lights on"),
    T("lights on in the {room}"),
    T("(can|could) you turn on the {room} lights"),
    I("it's (too|so|really) dark in the {room}"),
    I("i can't see (anything|a thing) in the {room}"),
    I("i need some light in the {room}"),
    T("light up the {room}"),
    H("the {room} is pitch black", indirect=True),
    H("could we get some light in the {room}", indirect=True),
    H("brighten up the {room}"),
]
_LIGHTS_OFF = [
    T("(turn|switch|shut) off the (lights|light)"),
    T("(turn|switch|shut) the (lights|light) off"),
    T("lights off[, please]"),
    T("(can|could) you turn off the lights"),
    T("(kill|cut) the lights"),
    I("it's (too|way too) bright in here"),
    I("i don't need the lights anymore"),
    I("we don't need the lights on"),
    I("why are the lights still on"),
    H("lights out"),
    H("the lights are hurting my eyes", indirect=True),
    H("make it dark in here", indirect=True),
]
_LIGHTS_OFF_ROOM = [
    T("(turn|switch|shut) off the (lights|light) in the {room}"),
    T("(turn|switch) the (lights|light) off in the {room}"),
    T("(turn|switch|shut) off the {room} (lights|light)"),
    T("{room} lights off"),
    T("lights off in the {room}"),
    T("(kill|cut) the lights in the {room}"),
    I("nobody is in the {room}, turn the lights off"),
    I("it's (too|way too) bright in the {room}"),
    I("the lights in the {room} are still on"),
    I("we don't need the lights in the {room}"),
    H("you left the {room} lights on", indirect=True),
    H("make the {room} dark", indirect=True),
    H("shut down the lights in the {room}"),
]
_HEAT_UP = [
    T("(turn|crank) up the (heat|heating)"),
    T("turn the (heat|heating) up"),
    T("(increase|raise) the (heat|heating|temperature)"),
    T("heat up[, please]"),
    T("more heat[, please]"),
    T("make it warmer [in here]"),
    T("warm it up [in here]"),
    I("it's (too|so|really) cold in here"),
    I("i'm (cold|freezing)"),
    I("it's freezing in here"),
    I("it's chilly in here"),
    H("bump up the thermostat"),
    H("i'm shivering", indirect=True),
    H("it feels like winter in here", indirect=True),
]
_HEAT_UP_ROOM = [
    T("turn up the (heat|heating) in the {room}"),
    T("turn the (heat|heating) up in the {room}"),
    T("(increase|raise) the (heat|temperature) in the {room}"),
    T("(increase|raise) the {room} temperature"),
    T("turn up the {room} heat"),
    T("make the {room} warmer"),
    T("(warm|heat) up the {room}"),
    T("{room} heat up"),
    I("it's (too|so|really) cold in the {room}"),
    I("the {room} is freezing"),
    I("it's chilly in the {room}"),
    H("the {room} needs to be warmer", indirect=True),
    H("bump up the thermostat in the {room}"),
    H("i'm shivering in the {room}", indirect=True),
]
_HEAT_DOWN = [
    T("turn down the (heat|heating)"),
    T("turn the (heat|heating) down"),
    T("(decrease|lower|reduce) the (heat|heating|temperature)"),
    T("heat down[, please]"),
    T("less heat[, please]"),
    T("make it cooler [in here]"),
    T("cool it down [in here]"),
    I("it's (too|so|really) hot in here"),
    I("i'm (sweating|too hot)"),
    I("it's boiling in here"),
    I("it's stuffy in here"),
    H("it's like an oven in here", indirect=True),
    H("bring the thermostat down"),
    H("make it colder"),
]
_HEAT_DOWN_ROOM = [
    T("turn down the (heat|heating) in the {room}"),
    T("turn the (heat|heating) down in the {room}"),
    T("(decrease|lower|reduce) the (heat|temperature) in the {room}"),
    T("(decrease|lower) the {room} temperature"),
    T("turn down the {room} heat"),
    T("make the {room} cooler"),
    T("cool down the {room}"),
    T("{room} heat down"),
    I("it's (too|so|really) hot in the {room}"),
    I("the {room} is boiling"),
    I("it's stuffy in the {room}"),
    H("the {room} is like a sauna", indirect=True),
    H("bring the thermostat down in the {room}"),
    H("the {room} needs to be cooler", indirect=True),
]

_FIXED: dict[tuple[str, str], list[Template]] = {
    ("activate", "lamp"): [
        T("(turn|switch|put) on the lamp"),
        T("(turn|switch) the lamp on"),
        T("lamp on[, please]"),
        T("(can|could) you turn on the lamp"),
        T("light the lamp"),
        I("i want to read, turn on the lamp"),
        I("i need the lamp"),
        I("the lamp should be on"),
        I("why is the lamp off"),
        H("i'd like the lamp on", indirect=True),
        H("power up the lamp"),
        H("get the lamp going"),
    ],
    ("deactivate", "lamp"): [
        T("(turn|switch|shut) off the lamp"),
        T("(turn|switch) the lamp off"),
        T("lamp off[, please]"),
        T("(can|could) you turn off the lamp"),
        T("kill the lamp"),
        I("i'm done reading, turn off the lamp"),
        I("the lamp is still on"),
        I("i don't need the lamp anymore"),
        H("power down the lamp"),
        H("the lamp can go off now", indirect=True),
        H("i'd like the lamp off", indirect=True),
    ],
    ("activate", "music"): [
        T("play (some|the) music"),
        T("play music[, please]"),
        T("(turn|switch|put) on the music"),
        T("(turn|switch) the music on"),
        T("put on some music"),
        T("(start|resume) the music"),
        T("music on[, please]"),
        T("music, please"),
        T("i want to listen to (some|) music"),
        I("let's have some music"),
        I("i'm in the mood for some tunes"),
        I("i'd love to hear some songs"),
        H("play me a song"),
        H("how about some music", indirect=True),
        H("could we get some tunes going", indirect=True),
    ],
    ("deactivate", "music"): [
        T("(stop|pause) the music"),
        T("(turn|switch) off the music"),
        T("(turn|switch) the music off"),
        T("music off[, please]"),
        T("(kill|cut) the music"),
        T("no more music[, please]"),
        I("that's enough music [for now]"),
        I("i'm tired of this music"),
        I("i've had enough of this song"),
        H("shut the music off"),
        H("stop playing"),
        H("i've heard enough songs for today", indirect=True),
    ],
    ("increase", "volume"): [
        T("turn up the (volume|sound)"),
        T("turn the (volume|sound|music) up"),
        T("(increase|raise) the volume"),
        T("volume up[, please]"),
        T("louder[, please]"),
        T("make it louder"),
        T("crank up the volume"),
        I("i can't hear (anything|that|the music)"),
        I("it's too quiet"),
        I("i can barely hear it"),
        I("that's way too soft"),
        H("pump up the volume"),
        H("max volume"),
        H("the sound is so faint", indirect=True),
    ],
    ("decrease", "volume"): [
        T("turn down the (volume|sound)"),
        T("turn the (volume|sound|music) down"),
        T("(decrease|lower|reduce) the volume"),
        T("volume down[, please]"),
        T("quieter[, please]"),
        T("make it quieter"),
        I("it's too loud"),
        I("that's (way|much) too loud"),
        I("my ears hurt"),
        I("the music is too loud"),
        H("keep it down"),
        H("softer, please"),
        H("the music is deafening", indirect=True),
    ],
    ("bring", "newspaper"): [
        T("bring [me] the (newspaper|paper)"),
        T("(get|fetch) [me] the newspaper"),
        T("(can|could) you bring me the newspaper"),
        T("newspaper, please"),
        T("i want (the newspaper|to read the newspaper)"),
        T("hand me the newspaper"),
        T("go get the newspaper"),
        I("where's the (newspaper|paper)"),
        I("i'd like to read the news"),
        H("i'd like today's paper"),
        H("could i have the morning paper"),
        H("grab the newspaper for me"),
    ],
    ("bring", "juice"): [
        T("bring me (some|a glass of) juice"),
        T("(get|fetch) me some juice"),
        T("juice, please"),
        T("i want [some] juice"),
        T("i'd like a glass of (orange|apple) juice"),
        T("can i have some juice"),
        T("pour me some juice"),
        I("i'm (so|really) thirsty"),
        I("i'm thirsty, bring me some juice"),
        H("grab me a juice"),
        H("a glass of juice would be nice"),
        H("i could use something to drink", indirect=True),
    ],
    ("bring", "socks"): [
        T("bring me [my] socks"),
        T("bring me (some|a pair of) socks"),
        T("(get|fetch) [me] my socks"),
        T("socks, please"),
        T("i need (my|some) socks"),
        T("hand me my socks"),
        T("(can|could) you bring my socks"),
        I("where are my socks"),
        I("my feet are (cold|freezing)"),
        H("grab me a pair of socks"),
        H("i can't find my socks"),
        H("my toes are freezing", indirect=True),
    ],
    ("bring", "shoes"): [
        T("bring me [my] shoes"),
        T("(get|fetch) [me] my shoes"),
        T("shoes, please"),
        T("i need my shoes"),
        T("hand me my shoes"),
        T("(can|could) you bring my shoes"),
        I("where are my shoes"),
        I("i'm going out, bring my shoes"),
        I("i'm ready to go, i just need my shoes"),
        H("grab my shoes for me"),
        H("i can't find my shoes"),
        H("i'm heading out and my feet are bare", indirect=True),
    ],
    ("change language", "none"): [
        T("(change|switch) the language"),
        T("switch languages"),
        T("[open the] language settings"),
        T("(use|i want) a different language"),
        T("change the system language"),
        T("set the language"),
        T("i'd like to change the language"),
        I("i don't understand this language"),
        I("can we (speak|use) another language"),
        H("pick a new language"),
        H("this is the wrong language", indirect=True),
        H("let me choose another language"),
    ],
}

_LANG_TEMPLATES = [
    T("(change|switch|set) the language to {lang}"),
    T("switch to {lang}"),
    T("{lang}, please"),
    T("speak {lang}"),
    T("use {lang}"),
    T("i (want|would like) to use {lang}"),
    T("language {lang}"),
    T("set my phone to {lang}"),
    I("i need to practice my {lang}"),
    I("can you talk to me in {lang}"),
    I("i'd rather read this in {lang}"),
    H("let's go with {lang}"),
    H("i'd prefer {lang}"),
    H("make everything {lang}"),
]


def _templates_for(intent: Intent) -> tuple[list[Template], dict]:
    a, o, loc = intent.action, intent.object, intent.location
    if o == "lights":
        table = {("activate", False): _LIGHTS_ON, ("activate", True): _LIGHTS_ON_ROOM,
                 ("deactivate", False): _LIGHTS_OFF, ("deactivate", True): _LIGHTS_OFF_ROOM}
        return table[(a, loc != "none")], {"room": loc}
    if o == "heat":
        table = {("increase", False): _HEAT_UP, ("increase", True): _HEAT_UP_ROOM,
                 ("decrease", False): _HEAT_DOWN, ("decrease", True): _HEAT_DOWN_ROOM}
        return table[(a, loc != "none")], {"room": loc}
    if a == "change language" and o != "none":
        return _LANG_TEMPLATES, {"lang": o}
    return _FIXED[(a, o)], {}


@dataclass(frozen=True)
class Phrasing:
    text: str
    template: int       # index of the template in the intent's list
    indirect: bool
    heldout: bool


@lru_cache(maxsize=None)
def phrasings(intent_key: str) -> tuple[Phrasing, ...]:
    """Every distinct phrasing of an intent (seen ones first, then held-out ones)."""
    intent = next(i for i in INTENTS if i.key == intent_key)
    templates, slots = _templates_for(intent)
    room = slots.get("room") if slots.get("room") not in (None, "none") else None
    seen: dict[str, Phrasing] = {}
    held: dict[str, Phrasing] = {}
    for k, t in enumerate(templates):
        for s in expand(t.text, room=room, lang=slots.get("lang")):
            target = held if t.heldout else seen
            target.setdefault(s, Phrasing(s, k, t.indirect, t.heldout))
    for s in seen:  # a string said by a seen template is seen, whatever else produces it
        held.pop(s, None)
    return tuple(seen.values()) + tuple(held.values())


def seen_phrasings(intent_key: str) -> list[Phrasing]:
    return [p for p in phrasings(intent_key) if not p.heldout]


def heldout_phrasings(intent_key: str) -> list[Phrasing]:
    return [p for p in phrasings(intent_key) if p.heldout]


def templates(intent_key: str) -> list[Template]:
    intent = next(i for i in INTENTS if i.key == intent_key)
    return list(_templates_for(intent)[0])


def inventory() -> dict[str, dict[str, int]]:
    """Per intent: templates and distinct phrasings, seen / held-out / indirect."""
    out = {}
    for intent in INTENTS:
        ps = phrasings(intent.key)
        ts = templates(intent.key)
        out[intent.key] = {
            "templates": len(ts), "heldout_templates": sum(t.heldout for t in ts),
            "phrasings": len(ps), "seen": sum(not p.heldout for p in ps),
            "heldout": sum(p.heldout for p in ps), "indirect": sum(p.indirect for p in ps),
        }
    return out
