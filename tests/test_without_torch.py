"""The shipped models' user commands with what `pip install .` alone gives (numpy; the README's
first command): `ondevice translate` and `ondevice understand` must not import PyTorch, onnx or
sentencepiece; with `--backend onnxruntime`, the [export] extra is enough. CI has them all installed, so each run here makes them unimportable in a fresh
interpreter (``sys.modules[name] = None`` makes ``import name`` raise ImportError). Until session
18, reading the speech model's manifest imported the exporter and with it torch."""

from __future__ import annotations

import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

HIDDEN = ("torch", "torchaudio", "onnx", "onnxscript", "sentencepiece", "sacrebleu", "fairseq")
RUN = f"""
import sys
for name in {HIDDEN!r}:
    sys.modules[name] = None
from ondevice.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _ondevice(*args: str, stdin: bytes | None = None, hide: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    code = RUN if not hide else RUN.replace(f"{HIDDEN!r}", repr(HIDDEN + hide))
    return subprocess.run([sys.executable, "-c", code, *args], input=stdin, capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def command_wav(tmp_path_factory) -> Path:
    """One second of a 16-bit 22.05 kHz tone: what it means does not matter here, only that it runs."""
    path = tmp_path_factory.mktemp("wav") / "tone.wav"
    t = np.arange(22050) / 22050
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(22050)
        w.writeframes((0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes())
    return path


def test_translate_needs_no_torch():
    r = _ondevice("translate", "--threads", "1", "The house is small.", hide=("onnxruntime",))
    assert r.returncode == 0 and r.stdout.strip(), r.stderr.decode()[-2000:]


def test_understand_needs_no_torch(command_wav):
    r = _ondevice("understand", "--threads", "1", str(command_wav), hide=("onnxruntime",))
    assert r.returncode == 0 and r.stdout.decode().startswith(f"{command_wav}\taction="), r.stderr.decode()[-2000:]
    r = _ondevice("understand", "--threads", "1", "--json", "-", stdin=command_wav.read_bytes(),
                  hide=("onnxruntime",))
    assert r.returncode == 0 and b'"action"' in r.stdout, r.stderr.decode()[-2000:]


def test_onnxruntime_backends_need_only_the_export_extra(command_wav):
    """`--backend onnxruntime` needs the [export] extra (onnx, onnxruntime, sentencepiece), not torch."""
    pytest.importorskip("onnxruntime")
    code = RUN.replace(f"{HIDDEN!r}", repr(("torch", "torchaudio", "fairseq")))
    for args in (["understand", str(command_wav)], ["translate", "The house is small."]):
        r = subprocess.run([sys.executable, "-c", code, args[0], "--threads", "1", "--backend", "onnxruntime",
                            *args[1:]], capture_output=True, timeout=300)
        assert r.returncode == 0 and r.stdout.strip(), r.stderr.decode()[-2000:]
