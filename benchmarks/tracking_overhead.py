"""What --tensorboard and --mlflow cost: seconds per epoch and per run, against the same training without them.

    python benchmarks/tracking_overhead.py [--pairs 2] [--limit-train 3000] [--epochs 3]
                                           [--json benchmarks/results/tracking_overhead.json]

The seed network on MNIST's first --limit-train images, each peer in its own process, taking turns (plain,
tensorboard, mlflow, plain, ...) so that other load on the machine falls on all alike. Per peer:
  epoch s         an epoch as a user waits for it (training, validation, every callback's end of epoch), epochs 2..N
  end of epoch s  from the last training step to the end of the epoch: where the tracking callbacks' work falls
  process s       the whole process: start-up (importing MLflow, making its SQLite store) included
"""

import argparse
import statistics
import tempfile
from pathlib import Path

from common import BENCHMARKS, MNIST_DIR, cnnlab_command, machine, print_table, run_peer, write_json

PEERS = {"plain": {}, "tensorboard": {"tensorboard": "true"}, "mlflow": {"mlflow": "local"}}


def measure(name, result):
    later = result["epochs"][1:] or result["epochs"]  # the first epoch also compiles
    return {"peer": name, "epoch_seconds": statistics.mean(e["seconds"] for e in later),
            "end_of_epoch_seconds": statistics.mean(e["end_of_epoch_seconds"] for e in later),
            "process_seconds": result["process_seconds"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--limit-train", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data-dir", default=MNIST_DIR)
    parser.add_argument("--json", default=BENCHMARKS / "results" / "tracking_overhead.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for round_ in range(args.pairs):
            for name, settings in PEERS.items():
                out = Path(work) / f"{name}-{round_}"  # a fresh runs folder: MLflow makes its store each time
                timing = Path(work) / f"{name}-{round_}.json"
                command = cnnlab_command("seed", timing, out / "run", data_dir=args.data_dir, epochs=args.epochs,
                                         limit_train=args.limit_train, patience=args.epochs, **settings)
                rows.append(measure(name, run_peer(command, timing, Path(work) / f"{name}-{round_}.log")))
                print(rows[-1], flush=True)
    summary = []
    plain = [row for row in rows if row["peer"] == "plain"]
    for name in PEERS:
        mine = [row for row in rows if row["peer"] == name]
        summary.append({"peer": name, **{key: statistics.mean(row[key] for row in mine) for key in
                                         ("epoch_seconds", "end_of_epoch_seconds", "process_seconds")}})
        summary[-1]["extra_per_epoch"] = summary[-1]["epoch_seconds"] - statistics.mean(r["epoch_seconds"] for r in plain)
        summary[-1]["extra_per_run"] = summary[-1]["process_seconds"] - statistics.mean(r["process_seconds"] for r in plain)
    print_table(summary, [("peer", "peer", "{}"), ("epoch_seconds", "epoch s", "{:.2f}"),
                          ("end_of_epoch_seconds", "end of epoch s", "{:.2f}"),
                          ("extra_per_epoch", "extra s/epoch", "{:+.2f}"), ("process_seconds", "process s", "{:.1f}"),
                          ("extra_per_run", "extra s/run", "{:+.1f}")],
                title=f"seed network, MNIST {args.limit_train} images (80% trained on), {args.epochs} epochs, "
                      f"mean of {args.pairs}")
    write_json(args.json, {"machine": machine(), "settings": {key: str(value) for key, value in vars(args).items()},
                           "runs": rows, "summary": summary})


if __name__ == "__main__":
    main()
