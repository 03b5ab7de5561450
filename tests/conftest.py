"""Shared test setup.

The suite is meant to run against the *installed* package (``tests/run_all.sh``
installs it and runs pytest from tests/). Pure-Python parts (data, training)
also run from a source checkout with PYTHONPATH; the kernel tests then fail to
import ``ondevice._core``, which the header below points out.
"""

from __future__ import annotations

import numpy as np
import pytest


def pytest_report_header(config) -> str:
    try:
        from ondevice import _core

        return f"ondevice core: {_core.cpu_description()}"
    except ImportError:
        return "ondevice core: NOT importable (install the package: pip install '.[test]')"


@pytest.fixture(autouse=True)
def _torch_single_thread():
    """Tests that use torch run it on one thread: fast on 2 cores, and reproducible."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
