"""What `--devices` costs on one device: the default path against `--devices 1`, `--devices auto` (on a machine with
several devices, all of them: the scaling row) and Keras's distribution code path forced onto a one-device mesh
(what `--devices N` runs, sharded iterator and all, with N = 1).

    KERAS_BACKEND=jax python benchmarks/devices.py [--pairs 2] [--epochs 2] [--batch-size 128] [--limit-train 12000]
                                                   [--json benchmarks/results/devices.json] [--SETTING VALUE ...]

The seed recipe on MNIST, each peer in its own process, taking turns A B C D A B C D (common.py); the last epoch is
reported (the first compiles). Target: on one device every row within noise of the default (issue 18: on one GPU
the distribution code path must cost nothing).
Any other --setting VALUE changes every peer (the GPU row: --batch-size 512 --precision mixed_bfloat16
--steps-per-execution 24).
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "jax")  # keras.distribution is JAX-only

from common import BENCHMARKS, MNIST_DIR, PYTHON, machine, print_table, run_peer, write_json  # noqa: E402

PEERS = {"default": {}, "--devices 1": {"devices": "1"}, "--devices auto": {"devices": "auto"},
         "DataParallel, 1 device": {}}


def child(peer, timing, out, settings):
    """One peer's training, timed with the benchmarks' EpochTimer."""
    import contextlib

    import jax
    import keras

    from common import EpochTimer
    from cnnlab import environment
    from cnnlab.config import make_config
    from cnnlab.pipeline import train_run

    config = make_config(**settings, **PEERS[peer])
    scope = keras.distribution.DataParallel(devices=jax.devices()[:1]).scope() if peer.startswith("DataParallel") \
        else contextlib.nullcontext()
    timer = EpochTimer()
    with scope:
        _, _, data, metrics = train_run(config, out=Path(out).parent, name=Path(out).name, verbose=2, callbacks=[timer])
    timer.write(timing, peer=peer, batch_size=config.batch_size, train_images=len(data.x_train),
                devices=metrics["devices"], environment=environment.describe())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="rounds of every peer (2)")
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run; the last one is reported (2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--limit-train", type=int, default=12000, help="training images (12,000)")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "devices.json"))
    parser.add_argument("--child", choices=list(PEERS), help=argparse.SUPPRESS)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args(argv)
    if len(rest) % 2:
        parser.error(f"settings come in --name VALUE pairs, got {rest}")
    settings = {"recipe": "seed", "dataset": "mnist", "data_dir": args.data_dir, "epochs": args.epochs,
                "batch_size": args.batch_size, "limit_train": args.limit_train,
                **{name.lstrip("-").replace("-", "_"): value for name, value in zip(rest[::2], rest[1::2])}}
    if args.child:
        return child(args.child, args.timing, args.out, settings)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(1, args.pairs + 1):
            for j, peer in enumerate(PEERS):
                timing = Path(tmp) / f"t{j}.json"
                command = [PYTHON, __file__, "--child", peer, "--timing", str(timing), "--out", f"{tmp}/r{i}-{j}",
                           *(str(part) for part in argv or sys.argv[1:])]
                result = run_peer(command, timing, BENCHMARKS / "results" / f"devices_{j}.log")
                epoch = result["epochs"][-1]
                rows.append({"round": i, "peer": peer, "devices": result["devices"], "batch_size": result["batch_size"],
                             "step_images_per_s": epoch["steady_batches"] * result["batch_size"] / epoch["steady_seconds"]
                             if epoch["steady_seconds"] else None,
                             "epoch_seconds": epoch["seconds"], "val_accuracy": epoch["val_accuracy"]})
            print_table(rows[-len(PEERS):], COLUMNS, title=f"round {i}")
    default = [row["step_images_per_s"] for row in rows if row["peer"] == "default" and row["step_images_per_s"]]
    for row in rows:
        row["vs_default"] = row["step_images_per_s"] / (sum(default) / len(default)) if default and row["step_images_per_s"] else None
    print_table(rows, COLUMNS + [("vs_default", "vs default (mean)", "{:.2f}x")],
                title=f"Seed architecture on {args.limit_train:,} MNIST images, one device, batch {settings['batch_size']}")
    write_json(args.json, {"benchmark": "devices", "machine": machine(), "settings": settings, "runs": rows})


COLUMNS = [("round", "round", "{}"), ("peer", "peer", "{}"), ("devices", "devices", "{}"), ("batch_size", "batch", "{}"),
           ("step_images_per_s", "step images/s", "{:,.0f}"), ("epoch_seconds", "epoch s", "{:.1f}"),
           ("val_accuracy", "val acc", "{:.2%}")]

if __name__ == "__main__":
    sys.exit(main())
