"""How fast can the seed architecture's float32 training step go on this CPU, with TensorFlow's kernels?

    python benchmarks/step_floor.py [--rounds 3] [--steps 320] [--json benchmarks/results/step_floor.json]

Issue 5 asks `seed` for 2x the seed script's images/s at batch 32 in float32. This bounds what any change to
the training loop can give, one process, cases taking turns each round (batch 32, 28x28x1 inputs; the values
are random, which dense float32 kernels do not care about):
  seed script's way   Keras fit, one step per backend call (the notebook's compile and fit)
  cnnlab seed         Keras fit, 32 steps per call (what the `seed` recipe does)
  fused Adam          forward, backward and TensorFlow's fused Adam op, the steps in one graph: no Keras
                      optimizer, no data pipeline, no Python between steps
  no update           forward and backward alone, steps still one after another: the floor for any optimizer
The last two are TensorFlow-specific on purpose (this measures the TensorFlow CPU backend); they are not cnnlab code.
"""

import argparse
import statistics
import time

import keras
import numpy as np
import tensorflow as tf

from cnnlab.config import Config
from cnnlab.model import build_model
from common import BENCHMARKS, EpochTimer, machine, print_table, write_json

BATCH = 32


def fit_rate(model, x, y, steps_per_execution):
    """Keras fit's steady images/s, as train_speed.py counts them: from the end of the first backend call (which
    traces) to the end of the last step."""
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    timer = EpochTimer()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[timer])
    epoch = timer.epochs[-1]
    return epoch["steady_batches"] * BATCH / epoch["steady_seconds"]


def graph_loops(model, x, y):
    """The two in-graph loops: forward + backward + fused Adam, and forward + backward alone."""
    xs, ys = tf.constant(x.reshape(-1, BATCH, 28, 28, 1)), tf.constant(y.reshape(-1, BATCH))
    variables = [v.value for v in model.trainable_variables]
    moments = [(tf.Variable(tf.zeros_like(v)), tf.Variable(tf.zeros_like(v))) for v in variables]
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    def gradients(i):
        with tf.GradientTape() as tape:
            loss = loss_fn(ys[i], model(xs[i], training=True))
        return tape.gradient(loss, variables)

    @tf.function
    def fused_adam():
        for i in tf.range(len(xs)):
            t = tf.cast(i + 1, tf.float32)
            for v, (m, s), g in zip(variables, moments, gradients(i)):
                tf.raw_ops.ResourceApplyAdam(var=v.handle, m=m.handle, v=s.handle, beta1_power=0.9 ** t,
                                             beta2_power=0.999 ** t, lr=1e-3, beta1=0.9, beta2=0.999, epsilon=1e-7, grad=g)
        return 0

    @tf.function
    def no_update():
        total = tf.constant(0.0)
        for i in tf.range(len(xs)):
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)  # one step after another, as in training
            total += tf.add_n([tf.reduce_sum(g) for g in gradients(i)])
        return total

    return fused_adam, no_update


def loop_rate(loop, images):
    """images/s of a loop's second call (the first traces)."""
    loop()
    started = time.perf_counter()
    loop()
    return images / (time.perf_counter() - started)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=320, help="steps per timed pass (320)")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "step_floor.json"))
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((args.steps * BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, args.steps * BATCH).astype(np.int32)
    model = build_model(Config())
    fused_adam, no_update = graph_loops(model, x, y)
    cases = {"seed script's way (fit, 1 step per call)": lambda: fit_rate(model, x, y, 1),
             "cnnlab seed (fit, 32 steps per call)": lambda: fit_rate(model, x, y, 32),
             "fused Adam, steps in one graph": lambda: loop_rate(fused_adam, len(x)),
             "no update (forward + backward only)": lambda: loop_rate(no_update, len(x))}
    rows = []
    for r in range(1, args.rounds + 1):
        rates = {name: measure() for name, measure in cases.items()}
        seed_way, cnnlab_seed = list(rates.values())[:2]
        rows += [{"round": r, "case": name, "images_per_s": rate, "vs_seed_script": rate / seed_way,
                  "vs_cnnlab_seed": rate / cnnlab_seed} for name, rate in rates.items()]
        print_table(rows[-len(cases):], COLUMNS, title=f"round {r}")
    medians = [{"case": name, **{key: statistics.median(row[key] for row in rows if row["case"] == name)
                                 for key in ("images_per_s", "vs_seed_script", "vs_cnnlab_seed")}} for name in cases]
    print_table(medians, COLUMNS[1:], title=f"Median of {args.rounds} rounds, batch {BATCH}, float32 "
                "(target: cnnlab seed >= 2x the seed script; 'no update' bounds any training loop)")
    write_json(args.json, {"benchmark": "step_floor", "machine": machine(), "tensorflow": tf.__version__,
                           "keras": keras.__version__, "steps": args.steps, "runs": rows, "medians": medians})


COLUMNS = [("round", "round", "{}"), ("case", "case", "{}"), ("images_per_s", "images/s", "{:,.0f}"),
           ("vs_seed_script", "vs seed script's way", "{:.2f}x"), ("vs_cnnlab_seed", "vs cnnlab seed", "{:.2f}x")]

if __name__ == "__main__":
    main()
