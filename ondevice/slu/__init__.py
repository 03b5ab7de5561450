"""Spoken-language understanding (SLU): the Fluent-Speech-Commands-style corpus and, later, the model.

Data (docs/slu-data.md):
    intents     the 31 FSC intents and the slot vocabularies
    phrasings   natural phrasings of each intent as templates (seen / held-out, direct / indirect)
    synth       espeak-ng / flite / festival TTS + sox effects + noise at an SNR -> 16 kHz mono WAV
    corpus      voices split three ways, deterministic per-utterance sampling, manifests, data card

``generate_corpus(out_dir, sizes, seed=0, workers=1)`` is what ``ondevice data slu`` runs.
"""

from __future__ import annotations

from .intents import ACTIONS, INTENT_KEYS, INTENTS, LOCATIONS, OBJECTS, Intent, intent_from_key, intent_index


def generate_corpus(*args, **kwargs):
    from .corpus import generate_corpus as _generate

    return _generate(*args, **kwargs)


__all__ = ["ACTIONS", "OBJECTS", "LOCATIONS", "INTENTS", "INTENT_KEYS", "Intent", "intent_from_key",
           "intent_index", "generate_corpus"]
