"""Training speed of the seed architecture: cnnlab's `seed` recipe against the seed notebook's script.

    python benchmarks/train_speed.py [--pairs 2] [--torch] [--bfloat16] [--also steps_per_execution=1]
                                     [--batch-size 128] [--json benchmarks/results/train_speed.json]

Same network, same hyper-parameters (batch 32, Adam 1e-3), same 48,000 training images, one epoch each (--epochs), each
in its own process, taking turns A B A B so that other load on the machine falls on both. Two figures per run:
  step images/s   training steps only, from the end of the first step to the start of validation
  epoch images/s  48,000 / the whole epoch as a user waits for it: compilation, training, validation, checkpoint
and the ratio cnnlab / seed script of each pair. Target (issue 5): cnnlab >= 2x the seed script.
"""

import argparse
import tempfile
from pathlib import Path

from common import (BENCHMARKS, MNIST_DIR, PYTHON, changed_settings, cnnlab_command, machine, print_table, run_peer,
                    seed_script_command, write_json)


def measure(name, command, timing, log):
    result = run_peer(command, timing, log)
    epoch = result["epochs"][-1]  # with --epochs 2 or more, the last one: compilation done (a GPU's XLA takes seconds)
    return {"peer": name, "batch_size": result["batch_size"], "epoch": epoch["epoch"],
            "step_images_per_s": epoch["steady_batches"] * result["batch_size"] / epoch["steady_seconds"]
            if epoch["steady_seconds"] else None,  # one backend call per epoch leaves no steady stretch to time
            "epoch_images_per_s": result["train_images"] / epoch["seconds"], "epoch_seconds": epoch["seconds"],
            "val_accuracy": epoch["val_accuracy"], "process_seconds": result["process_seconds"]}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="A B rounds (2)")
    parser.add_argument("--data-dir", default=str(MNIST_DIR))
    parser.add_argument("--torch", action="store_true", help="also time plain PyTorch (benchmarks/peers/torch_seed.py)")
    parser.add_argument("--bfloat16", action="store_true", help="also the `seed` recipe with precision mixed_bfloat16 "
                        "(the same hyper-parameters, bfloat16 arithmetic: not bit-for-bit the seed)")
    parser.add_argument("--cnnlab-only", action="store_true", help="cnnlab alone (a GPU machine: KERAS_BACKEND=jax)")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=VALUE[,NAME=VALUE]",
                        help="one more cnnlab `seed` row with these settings changed (repeatable)")
    parser.add_argument("--batch-size", type=int, default=32, help="every peer's batch size (the seed's 32)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per run; the last one is reported (1)")
    parser.add_argument("--json", default=str(BENCHMARKS / "results" / "train_speed.json"))
    args = parser.parse_args(argv)
    overrides = {"epochs": args.epochs, "batch_size": args.batch_size}
    logs = BENCHMARKS / "results"
    logs.mkdir(exist_ok=True)
    rows, ratios = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i in range(1, args.pairs + 1):
            pair = {}
            if not args.cnnlab_only:
                pair["seed script"] = measure("seed script", seed_script_command(tmp / "a.json", tmp / f"a{i}", args.data_dir,
                                                                                      epochs=args.epochs, batch_size=args.batch_size),
                                              tmp / "a.json", logs / "train_speed_seed_script.log")
            pair["cnnlab seed"] = measure("cnnlab seed", cnnlab_command("seed", tmp / "b.json", tmp / f"b{i}", args.data_dir, **overrides),
                                          tmp / "b.json", logs / "train_speed_cnnlab.log")
            if args.bfloat16:
                command = cnnlab_command("seed", tmp / "d.json", tmp / f"d{i}", args.data_dir, precision="mixed_bfloat16", **overrides)
                pair["cnnlab seed bf16"] = measure("cnnlab seed, bfloat16", command, tmp / "d.json", logs / "train_speed_cnnlab_bf16.log")
            for j, also in enumerate(args.also):
                changed = changed_settings(also)
                command = cnnlab_command("seed", tmp / f"e{j}.json", tmp / f"e{j}-{i}", args.data_dir, **(overrides | changed))
                pair[also] = measure(f"cnnlab seed, {also}", command, tmp / f"e{j}.json", logs / f"train_speed_cnnlab_also{j}.log")
            if args.torch:
                command = [PYTHON, str(BENCHMARKS / "peers" / "torch_seed.py"), "--data-dir", args.data_dir,
                           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--timing", str(tmp / "c.json")]
                pair["torch"] = measure("plain PyTorch", command, tmp / "c.json", logs / "train_speed_torch.log")
            for row in pair.values():
                rows.append({"round": i, **row})
            print_table(rows[-len(pair):], COLUMNS, title=f"round {i}")
            if "seed script" in pair:
                a = pair["seed script"]
                for key, b in pair.items():
                    if key != "seed script":
                        ratios.append({"round": i, "peer": b["peer"], "step_ratio": b["step_images_per_s"] / a["step_images_per_s"]
                                       if b["step_images_per_s"] and a["step_images_per_s"] else None,
                                       "epoch_ratio": b["epoch_images_per_s"] / a["epoch_images_per_s"]})
    print_table(rows, COLUMNS, title=f"Seed architecture, one epoch of 48,000 MNIST images, batch {args.batch_size}")
    if ratios:
        print_table(ratios, [("round", "round", "{}"), ("peer", "peer", "{}"),
                             ("step_ratio", "vs seed script, step images/s", "{:.2f}x"),
                             ("epoch_ratio", "vs seed script, epoch images/s", "{:.2f}x")], title="Ratios per pair (target >= 2x)")
    write_json(args.json, {"benchmark": "train_speed", "machine": machine(), "runs": rows, "ratios": ratios})


COLUMNS = [("round", "round", "{}"), ("peer", "peer", "{}"), ("batch_size", "batch", "{}"), ("epoch", "epoch", "{}"),
           ("step_images_per_s", "step images/s", "{:,.0f}"), ("epoch_images_per_s", "epoch images/s", "{:,.0f}"),
           ("epoch_seconds", "epoch s", "{:.1f}"), ("val_accuracy", "val acc", "{:.2%}")]

if __name__ == "__main__":
    main()
