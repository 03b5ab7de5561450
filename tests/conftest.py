"""Shared test setup: the tests exercise the *installed* package (with its compiled core)."""

from __future__ import annotations

import numpy as np
import pytest

try:
    from ondevice import _core  # noqa: F401
except ImportError as e:  # pragma: no cover - a setup problem, not a test result
    raise ImportError(
        "ondevice._core is not importable: install the package first (pip install '.[test]') and run "
        "pytest from a directory where ./ondevice is not shadowing it (tests/run_all.sh does both)") from e


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
