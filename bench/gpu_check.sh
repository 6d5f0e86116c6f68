#!/usr/bin/env bash
# The student's GPU paths on one CUDA GPU, in one go (bench/gpu_check.py says which).
# On a machine with no internet, the packages undo needs that it lacks travel as wheels in
# .whl/ (installed into /tmp/site below). For a Python 3.12 machine with torch, transformers,
# peft and accelerate, fetched where pip works:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl \
#     trl datasets dill multiprocess pydantic pydantic_core annotated-types typing-inspection \
#     math-verify latex2sympy2_extended antlr4-python3-runtime==4.13.2 sniffio gguf fsspec pyarrow
# Usage: bash bench/gpu_check.sh [OUT_DIR]        (OUT_DIR defaults to $OUT, else bench/out/gpu)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out/gpu}}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -d .whl ]; then
  wheels=$(ls .whl/*.whl | grep -v pyarrow)
  # datasets needs pyarrow >= 24; carry it only where the machine's is older
  python3 -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) < 24)" 2>/dev/null \
    || wheels="$wheels $(ls .whl/pyarrow-*.whl 2>/dev/null)"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site $wheels || exit 3
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout 420 python3 bench/gpu_check.py --out "$out" 2>&1 | grep -v -E "Warning|warn\(|^\s*$" | tee "$out/gpu_check.log"
