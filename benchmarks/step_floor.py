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
  second conv alone   the largest layer's forward pass and both its gradients, nothing else, in the same loop
  SGEMM peak          one large float32 matrix product, the most arithmetic TensorFlow gets from these cores
The last four are TensorFlow-specific on purpose (this measures the TensorFlow CPU backend); they are not cnnlab
code. Each case's images/s is also given as GFLOP/s of the step's convolutions and matrix products (counted from
the layers' shapes) and as a share of the SGEMM peak, so the target can be set against what the hardware does.
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
SGEMM_SIZE = 2048


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
    """The in-graph loops: forward + backward + fused Adam, forward + backward alone, and the second convolution
    alone (its forward pass, input gradient and kernel gradient)."""
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

    second_conv = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)][1]
    conv_inputs = tf.random.uniform((BATCH, *second_conv.input.shape[1:]))

    @tf.function
    def second_conv_alone():
        total = tf.constant(0.0)
        for _ in tf.range(len(xs)):
            tf.autograph.experimental.set_loop_options(parallel_iterations=1)
            with tf.GradientTape() as tape:
                inputs = conv_inputs + total * 0
                tape.watch(inputs)
                loss = tf.reduce_sum(tf.nn.conv2d(inputs, second_conv.kernel.value, 1, "SAME"))
            conv_gradients = tape.gradient(loss, [inputs, second_conv.kernel.value])
            total += loss + tf.add_n([tf.reduce_sum(g) for g in conv_gradients])  # with the loss, or its pass is pruned
        return total

    return fused_adam, no_update, second_conv_alone


def forward_flops_per_image(model):
    """Each convolution's and matrix product's floating-point operations in one image's forward pass."""
    flops = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            height, width, filters = layer.output.shape[1:]
            flops.append(2 * height * width * filters * int(np.prod(layer.kernel.shape[:-1])))
        elif isinstance(layer, keras.layers.Dense):
            flops.append(2 * int(np.prod(layer.kernel.shape)))
    return flops


def training_flops_per_image(model):
    """One image's training step in the convolutions and matrix products (pooling, activations and the update add
    a little more): forward, the weights' gradient, and the inputs' gradient for every layer but the first, which
    has no input to pass it to."""
    flops = forward_flops_per_image(model)
    return 3 * sum(flops) - flops[0]


def sgemm_gflops(repeats=20):
    """GFLOP/s of a large float32 matrix product: the arithmetic these cores give TensorFlow at best."""
    a = tf.random.uniform((SGEMM_SIZE, SGEMM_SIZE))

    @tf.function
    def products():
        total = tf.constant(0.0)
        for _ in tf.range(repeats):
            total += tf.reduce_sum(tf.matmul(a + total * 0, a))
        return total

    products()
    started = time.perf_counter()
    products()
    return 2 * SGEMM_SIZE ** 3 * repeats / (time.perf_counter() - started) / 1e9


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
    fused_adam, no_update, second_conv_alone = graph_loops(model, x, y)
    cases = {"seed script's way (fit, 1 step per call)": lambda: fit_rate(model, x, y, 1),
             "cnnlab seed (fit, 32 steps per call)": lambda: fit_rate(model, x, y, 32),
             "fused Adam, steps in one graph": lambda: loop_rate(fused_adam, len(x)),
             "no update (forward + backward only)": lambda: loop_rate(no_update, len(x)),
             "second conv alone (forward + both gradients)": lambda: loop_rate(second_conv_alone, len(x))}
    flops = training_flops_per_image(model)
    case_flops = {"second conv alone (forward + both gradients)": 3 * forward_flops_per_image(model)[1]}
    rows = []
    for r in range(1, args.rounds + 1):
        rates = {name: measure() for name, measure in cases.items()}
        seed_way, cnnlab_seed = list(rates.values())[:2]
        peak = sgemm_gflops()
        rates["2x the seed script's way (the target)"] = 2 * seed_way
        rows += [{"round": r, "case": name, "images_per_s": rate, "vs_seed_script": rate / seed_way,
                  "vs_cnnlab_seed": rate / cnnlab_seed, "gflops": rate * case_flops.get(name, flops) / 1e9,
                  "of_sgemm_peak": rate * case_flops.get(name, flops) / 1e9 / peak} for name, rate in rates.items()]
        rows.append({"round": r, "case": f"SGEMM peak ({SGEMM_SIZE}x{SGEMM_SIZE} float32 matmul)", "gflops": peak,
                     "of_sgemm_peak": 1.0})
        print_table(rows[-len(rates) - 1:], COLUMNS, title=f"round {r}")
    medians = []
    for case in dict.fromkeys(row["case"] for row in rows):
        runs = [row for row in rows if row["case"] == case]
        medians.append({"case": case, **{key: statistics.median(run[key] for run in runs)
                                         for key in runs[0] if key not in ("round", "case")}})
    print_table(medians, COLUMNS[1:], title=f"Median of {args.rounds} rounds, batch {BATCH}, float32, "
                f"{flops / 1e6:.1f} MFLOP per image (target: cnnlab seed >= 2x the seed script; 'no update' "
                "bounds any training loop)")
    write_json(args.json, {"benchmark": "step_floor", "machine": machine(), "tensorflow": tf.__version__,
                           "keras": keras.__version__, "steps": args.steps, "training_flops_per_image": flops,
                           "runs": rows, "medians": medians})


COLUMNS = [("round", "round", "{}"), ("case", "case", "{}"), ("images_per_s", "images/s", "{:,.0f}"),
           ("vs_seed_script", "vs seed script's way", "{:.2f}x"), ("vs_cnnlab_seed", "vs cnnlab seed", "{:.2f}x"),
           ("gflops", "GFLOP/s", "{:.0f}"), ("of_sgemm_peak", "of SGEMM peak", "{:.0%}")]

if __name__ == "__main__":
    main()
