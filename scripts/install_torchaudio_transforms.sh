#!/usr/bin/env bash
# Installs torchaudio's pure-PyTorch functions for tests/test_slu_audio.py, which checks our
# numpy resampler against torchaudio.functional.resample (the same Kaiser-windowed sinc).
# Every x86-64 torchaudio wheel links CUDA builds of its compiled parts, which do not load beside
# the CPU build of torch 2.13: install the wheel alone (--no-deps: pip must not replace torch) and
# remove its compiled libraries; resample and the other transforms are pure PyTorch and still work.
# Only tests use it; the package never imports torchaudio.
set -euo pipefail
PY=${PYTHON:-python3}
if $PY -c "import torchaudio.functional" 2>/dev/null; then
  exit 0
fi
$PY -m pip install -q --no-deps "torchaudio==2.11.0"
lib=$($PY -c "import importlib.util, os; print(os.path.join(os.path.dirname(importlib.util.find_spec('torchaudio').origin), 'lib'))")
rm -f "$lib"/*.so
$PY -c "import torch, torchaudio.functional as F; assert F.resample(torch.zeros(480), 48000, 16000).shape == (160,); print('torchaudio', 'transforms only')"
