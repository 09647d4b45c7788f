"""Time to 99.0% MNIST test accuracy: cnnlab's `fast` recipe against the seed notebook's script, in one run.

    python benchmarks/time_to_accuracy.py [--pairs 1] [--target 0.99] [--json benchmarks/results/time_to_accuracy.json]

Each peer trains in its own process; after every epoch the test set is scored with the clock stopped. The time
to the target is the training wall time (compilation, steps, validation, checkpoints) summed up to the first epoch
whose model scores the target; a peer that never does is reported with its best score and the time to it.
The seed script runs as written: up to 20 epochs, early stopping with patience 2. Target (issue 5): `fast` <= 15 s.
"of it compiling" is the first backend call's time beyond what its batches take at the steady rate (tracing and
XLA compilation, or loading them from JAX's cache); "without compiling" is the time to the target without it.
"""

import argparse
import tempfile
from pathlib import Path

from common import (BENCHMARKS, MNIST_DIR, changed_settings, cnnlab_command, machine, print_table, run_peer,
                    seed_script_command, write_json)


def summarise(name, result, target):
    elapsed, reached, best = 0.0, None, (0.0, 0.0, 0)
    for epoch in result["epochs"]:
        elapsed += epoch["seconds"]
        if epoch["test_accuracy"] > best[0]:
            best = (epoch["test_accuracy"], elapsed, epoch["epoch"])
        if reached is None and epoch["test_accuracy"] >= target:
            reached = (elapsed, epoch["epoch"])
    first = result["epochs"][0]
    # Tracing and compiling: the first backend call's time beyond what its batches take at the steady rate
    compile_seconds = (first["first_call_seconds"] - first["first_call_batches"] * first["steady_seconds"] / first["steady_batches"]
                       if first["steady_batches"] else None)
    return {"peer": name, "seconds_to_target": reached[0] if reached else None, "epochs_to_target": reached[1] if reached else None,
            "compile_seconds": compile_seconds,
            "seconds_to_target_without_compiling": reached[0] - compile_seconds if reached and compile_seconds is not None else None,
            "best_test_accuracy": best[0], "seconds_to_best": best[1], "best_epoch": best[2],
            "epochs_run": len(result["epochs"]), "train_seconds": elapsed, "per_epoch": result["epochs"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--recipe", default="fast")
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--cnnlab-only", action="store_true", help="cnnlab alone (a GPU machine: KERAS_BACKEND=jax)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                        help="also the recipe with these settings changed (repeatable)")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "time_to_accuracy.json"))
    args = parser.parse_args(argv)
    logs = BENCHMARKS / "results"
    logs.mkdir(exist_ok=True)
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(1, args.pairs + 1):
            pair = []
            if not args.cnnlab_only:
                command = seed_script_command(tmp / "a.json", tmp / f"a{i}", args.data_dir, test_each_epoch=True)
                pair.append(summarise("seed script", run_peer(command, tmp / "a.json", logs / "tta_seed_script.log"), args.target))
            command = cnnlab_command(args.recipe, tmp / "b.json", tmp / f"b{i}", args.data_dir, test_each_epoch=True)
            pair.append(summarise(f"cnnlab {args.recipe}", run_peer(command, tmp / "b.json", logs / "tta_cnnlab.log"), args.target))
            rows += [{"round": i, **row} for row in pair]
            for j, also in enumerate(args.also):
                changed = changed_settings(also)
                command = cnnlab_command(args.recipe, tmp / "c.json", tmp / f"c{i}_{j}", args.data_dir, test_each_epoch=True,
                                         **changed)
                result = run_peer(command, tmp / "c.json", logs / f"tta_cnnlab_also{j}.log")
                rows.append({"round": i, **summarise(f"cnnlab {args.recipe}, {also}", result, args.target)})
            print_table([row for row in rows if row["round"] == i], COLUMNS, title=f"round {i}")
            if len(pair) == 2:
                seed, ours = pair
                ratios.append({"round": i,
                               # the seed script may never reach the target: compare with its time to its own best
                               "speedup": (seed["seconds_to_target"] or seed["seconds_to_best"]) / ours["seconds_to_target"]
                               if ours["seconds_to_target"] else None,
                               "seed_reached_target": seed["seconds_to_target"] is not None})
    print_table(rows, COLUMNS, title=f"Seconds of training to {args.target:.1%} MNIST test accuracy")
    if ratios:
        print_table(ratios, [("round", "round", "{}"), ("speedup", "seed time / cnnlab time", "{:.1f}x"),
                             ("seed_reached_target", "seed reached target", "{}")],
                    title="Speed-up (when the seed never reaches the target: its time to its own best epoch)")
    write_json(args.json, {"benchmark": "time_to_accuracy", "target": args.target, "machine": machine(),
                           "runs": rows, "ratios": ratios})


COLUMNS = [("round", "round", "{}"), ("peer", "peer", "{}"), ("seconds_to_target", "s to target", "{:.1f}"),
           ("epochs_to_target", "epochs", "{}"), ("compile_seconds", "of it compiling", "{:.1f}"),
           ("seconds_to_target_without_compiling", "without compiling", "{:.2f}"), ("best_test_accuracy", "best test acc", "{:.2%}"),
           ("seconds_to_best", "s to best", "{:.1f}"), ("epochs_run", "epochs run", "{}"),
           ("train_seconds", "train s", "{:.1f}")]

if __name__ == "__main__":
    main()
