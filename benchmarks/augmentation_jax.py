"""Why `best` stalls on a GPU with JAX: Keras's augmentation layers alone, then inside `best`'s training steps.

    KERAS_BACKEND=jax python benchmarks/augmentation_jax.py [--timeout 45] [--data-dir DIR] [--json PATH]

Each case runs in its own process (no compilation cache), trains `best` for one epoch of 6,000 MNIST images (50
steps) and is stopped after --timeout seconds: a stopped case has no time, only "stopped after s". On CPUs every
case finishes; on an H100 only the one without augmentation did (benchmarks/README.md).
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import BENCHMARKS, MNIST_DIR, machine, print_table, write_json

CASES = {
    "without augmentation": {"augment_translate": 0, "augment_rotate": 0, "augment_zoom": 0},
    "only RandomTranslation": {"augment_rotate": 0, "augment_zoom": 0},
    "Keras's own step loop": {"steps_per_execution": 1},
    "float32": {"precision": "float32"},
    "augmentation under stop_gradient": {"stop_gradient": True},
}

LAYERS_ALONE = """
import json, time
import jax, jax.numpy as jnp, numpy as np
from cnnlab.config import make_config
from cnnlab.model import augmentation_layers
x = jnp.asarray(np.random.default_rng(0).random((120, 28, 28, 1), np.float32))
rows = []
for layer in augmentation_layers(make_config(recipe="best")):
    layer.build(x.shape)
    lowered = jax.jit(lambda x, layer=layer: layer(x, training=True)).lower(x)
    started = time.perf_counter(); compiled = lowered.compile(); compile_seconds = time.perf_counter() - started
    compiled(x).block_until_ready()
    started = time.perf_counter()
    for _ in range(10):
        compiled(x).block_until_ready()
    rows.append({"case": layer.name + " alone", "compile_seconds": compile_seconds,
                 "seconds": (time.perf_counter() - started) / 10})
print(json.dumps(rows))
"""

ONE_EPOCH = """
import json, sys, time
import keras
settings = json.loads(sys.argv[1])
if settings.pop("stop_gradient", False):  # is it the gradient through the augmentation? cut it off
    for cls in (keras.layers.RandomTranslation, keras.layers.RandomRotation, keras.layers.RandomZoom):
        def call(self, data, training=True, _call=cls.call):
            out = _call(self, data, training=training)
            return out if isinstance(out, keras.KerasTensor) else keras.ops.stop_gradient(out)
        cls.call = call
from cnnlab.config import make_config
from cnnlab.model import build_model
from cnnlab.pipeline import load_data
from cnnlab import training
config = make_config(recipe="best", data_dir=sys.argv[2], epochs=1, limit_train=6000, **settings)
data = load_data(config)
model = build_model(config, steps_per_epoch=training.steps_per_epoch(config, data))
started = time.perf_counter()
training.train(model, data, config, sys.argv[3], verbose=0)
print(json.dumps(time.perf_counter() - started))
"""


def run(code, args, timeout, tmp):
    """`code` in a fresh process with an empty compilation cache; its last line of output as JSON, None if stopped."""
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_COMPILATION_CACHE_DIR": tempfile.mkdtemp(dir=tmp),
           "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode:
        raise SystemExit(f"failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timeout", type=float, default=45, help="seconds before a case is stopped (45)")
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "augmentation_jax.json"))
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(LAYERS_ALONE, [], args.timeout, tmp) or [{"case": "augmentation layers alone", "stopped_after": args.timeout}]
        for i, (name, settings) in enumerate(CASES.items()):
            started = time.perf_counter()
            seconds = run(ONE_EPOCH, [json.dumps(settings), os.path.abspath(args.data_dir), str(Path(tmp) / f"run{i}")],
                          args.timeout, tmp)
            rows.append({"case": f"best, 1 epoch (50 steps), {name}", "seconds": seconds,
                         "stopped_after": None if seconds is not None else time.perf_counter() - started})
    print_table(rows, COLUMNS, title="Keras augmentation layers on JAX, each case in its own process")
    write_json(args.json, {"benchmark": "augmentation_jax", "timeout": args.timeout, "machine": machine(), "results": rows})


COLUMNS = [("case", "case", "{}"), ("compile_seconds", "compile s", "{:.2f}"), ("seconds", "s", "{:.3g}"),
           ("stopped_after", "stopped after s", "{:.0f}")]

if __name__ == "__main__":
    main()
