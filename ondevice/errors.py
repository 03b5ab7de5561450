"""Typed exceptions of the ondevice package.

Every error a user can cause (a bad argument, a corrupt model file) is raised
as a subclass of :class:`OndeviceError`, so applications can catch one type;
each also derives from the built-in type that best describes it (``ValueError``)
so generic handlers keep working.
"""

from __future__ import annotations


class OndeviceError(Exception):
    """Base class of every error raised by ondevice."""


class BCQFormatError(OndeviceError, ValueError):
    """A bit-plane (``.bcq``) file or buffer violates docs/bitplane-format.md, or a packed model
    directory violates docs/packed-model.md."""


class KernelArgumentError(OndeviceError, ValueError):
    """Arguments to a quantized matrix or kernel call cannot be valid."""


class DataError(OndeviceError, ValueError):
    """Training/evaluation data is missing, corrupt or unusable (e.g. a bad database or an empty corpus)."""


class AudioError(DataError):
    """Speech input cannot be used: a missing, empty, truncated or non-audio file, an unsupported
    encoding, non-finite samples, or audio too short / too long / at a sample rate out of range for
    spoken-intent recognition (``ondevice.slu.audio``). A :class:`DataError`, so handlers of bad input
    data in general catch it too."""


class ConfigError(OndeviceError, ValueError):
    """A configuration file or option is invalid (unknown keys, wrong types, out-of-range values)."""
