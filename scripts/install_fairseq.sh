#!/usr/bin/env bash
# Installs fairseq (the fairseq-fixed fork: 0.12.2 does not build on Python 3.11) for the
# fairseq interop tests, without letting pip replace the CPU build of torch:
# --no-deps, then the few runtime dependencies fairseq imports. Compiles C++ (~4 min on 2 cores).
set -euo pipefail
PY=${PYTHON:-python3}
if $PY -c "import fairseq" 2>/dev/null; then
  exit 0
fi
$PY -m pip install -q "cython==3.3.1"
MAX_JOBS=2 $PY -m pip install -q --no-build-isolation --no-deps "fairseq-fixed==0.12.3.1" "hydra-core==1.3.2" \
  "omegaconf==2.3.0" "antlr4-python3-runtime==4.9.3" bitarray tqdm
# What fairseq (and omegaconf/hydra) import at run time; scikit-learn: fairseq.tasks imports it.
$PY -m pip install -q "scikit-learn==1.9.1" PyYAML cffi packaging regex "sacrebleu>=2.4" typing_extensions
$PY -c "import fairseq; print('fairseq', fairseq.__version__)"
