#!/bin/sh
# The same recipes on a GPU, with the JAX backend and no code change: KERAS_BACKEND=jax.
#   sh benchmarks/gpu.sh                 seed-architecture epoch time, time to 99.0% MNIST test accuracy
#   QUALITY=1 sh benchmarks/gpu.sh       ... and the `best` recipe's quality (Fashion-MNIST must be findable)
# Needs a Python with cnnlab and JAX for CUDA, e.g. python -m venv .venv && .venv/bin/pip install -e '.[jax]' 'jax[cuda12]'
# (PYTHON=... to use another). Issue 5's anchors on an H100: Keras+JAX seed model 1.25 s/epoch at batch 128,
# plain PyTorch 0.9 s; targets: seed-architecture epoch <= 0.2 s, time to 99.0% MNIST <= 1.0 s.
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA_DIR:-../shared/datasets/mnist}
OUT=${OUT:-benchmarks/results/gpu}
export KERAS_BACKEND=jax
mkdir -p "$OUT"
"$PY" -c "import jax; d = jax.devices()[0]; assert d.platform == 'gpu', f'JAX sees no GPU ({d})'; print('JAX on', d.device_kind)"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
# Seed architecture: the seed's batch 32 and batch 128 (the issue's anchor); 3 epochs, the last one reported (XLA compiles in the first)
"$PY" benchmarks/train_speed.py --cnnlab-only --pairs 1 --epochs 3 --data-dir "$DATA" --json "$OUT/train_speed_b32.json"
"$PY" benchmarks/train_speed.py --cnnlab-only --pairs 2 --epochs 3 --batch-size 128 --data-dir "$DATA" --json "$OUT/train_speed_b128.json"
# Time to 99.0% MNIST test accuracy with `fast` (compilation included, as a user waits for it)
"$PY" benchmarks/time_to_accuracy.py --cnnlab-only --pairs 2 --data-dir "$DATA" --json "$OUT/time_to_accuracy.json"
"$PY" benchmarks/inference.py --data-dir "$DATA" --json "$OUT/inference.json"
if [ "${QUALITY:-0}" = 1 ]; then
  "$PY" benchmarks/quality.py --data-dir "$DATA" --json "$OUT/quality.json"
fi
