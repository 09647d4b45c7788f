#!/bin/sh
# The same recipes on a GPU, with the JAX backend and no code change: KERAS_BACKEND=jax.
#   sh benchmarks/gpu.sh               training speed, time to 99.0% MNIST test accuracy, inference
#   QUALITY=1 sh benchmarks/gpu.sh     ... and the `best` recipe's quality (Fashion-MNIST must be findable; on an H100
#                                      Keras's augmentation layers stalled it: benchmarks/augmentation_jax.py says why)
# Needs a Python with cnnlab and JAX for CUDA, e.g. python -m venv .venv && .venv/bin/pip install -e '.[jax]' 'jax[cuda13]'
# (PYTHON=... to use another; torch for the PyTorch peer). Issue 5's anchors on an H100: Keras+JAX seed model
# 1.25 s/epoch at batch 128, plain PyTorch 0.9 s; targets: seed-architecture epoch <= 0.2 s, time to 99.0% <= 1.0 s.
# A failed step is reported and the others still run; the exit status says whether any failed.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=${DATA_DIR:-../shared/datasets/mnist}
RESULTS=${RESULTS:-benchmarks/results/gpu}
export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
mkdir -p "$RESULTS"
failed=0
step() { echo "== $*"; "$@" || { echo "!! failed: $*"; failed=1; }; }

"$PY" -c "import jax; d = jax.devices()[0]; print('JAX', jax.__version__, 'on', d.device_kind)
assert d.platform == 'gpu' or '${ALLOW_CPU:-0}' == '1', f'JAX sees no GPU ({d})'" || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# In order of what matters, each step's JSON written as it ends. Seed architecture at batch 128 (the issue's anchor),
# 3 epochs each, the last reported (XLA compiles in the first). Peers: the seed script (the notebook's Keras fit, on
# JAX here), cnnlab `seed` with Keras's own step loop (steps_per_execution=1) and with longer scans, plain PyTorch.
# The last --also: the seed architecture in larger batches (the 0.2 s target names the architecture, not the batch;
# at 128 a step is bound by launching its small kernels, so fewer, larger steps should take an epoch under it).
step "$PY" benchmarks/train_speed.py --pairs 1 --epochs 3 --batch-size 128 --torch --bfloat16 \
  --also steps_per_execution=1 --also steps_per_execution=375 --also batch_size=512,precision=mixed_bfloat16,steps_per_execution=24 \
  --data-dir "$DATA" --json "$RESULTS/train_speed_b128.json"
# --devices on this GPU (issue 18): the default path, --devices 1, --devices auto (all GPUs: on one, the default path)
# and Keras's distribution code path on a one-device mesh, at batch 128 and in the 512-batch bfloat16 row above; on
# one GPU every row must train as fast as the default.
step "$PY" benchmarks/devices.py --pairs 1 --epochs 3 --limit-train 48000 --data-dir "$DATA" --json "$RESULTS/devices_b128.json"
step "$PY" benchmarks/devices.py --pairs 1 --epochs 3 --limit-train 48000 --batch-size 512 --precision mixed_bfloat16 \
  --steps-per-execution 24 --data-dir "$DATA" --json "$RESULTS/devices_b512_bf16.json"
# Time to 99.0% MNIST test accuracy with `fast`: the first run compiles its steps, the second finds them in the cache.
step "$PY" benchmarks/time_to_accuracy.py --pairs 1 --cnnlab-only --data-dir "$DATA" --json "$RESULTS/time_to_accuracy.json"
step "$PY" benchmarks/time_to_accuracy.py --pairs 1 --cnnlab-only --data-dir "$DATA" --json "$RESULTS/time_to_accuracy_cached.json"
# The seed's own batch of 32
step "$PY" benchmarks/train_speed.py --pairs 1 --epochs 3 --torch --data-dir "$DATA" --json "$RESULTS/train_speed_b32.json"
step "$PY" benchmarks/inference.py --data-dir "$DATA" --json "$RESULTS/inference.json"
step "$PY" benchmarks/augmentation_jax.py --data-dir "$DATA" --json "$RESULTS/augmentation_jax.json"
if [ "${QUALITY:-0}" = 1 ]; then
  step "$PY" benchmarks/quality.py --data-dir "$DATA" --json "$RESULTS/quality.json"
fi
exit $failed
