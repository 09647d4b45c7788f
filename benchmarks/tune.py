"""A 20-trial `cnnlab tune` study on real MNIST with 1 and 2 worker processes: best validation accuracy, trials
pruned, wall time.

    .venv/bin/python benchmarks/tune.py                      # 20 trials, 3 epochs on 3,000 images, 1 and 2 workers
    .venv/bin/python benchmarks/tune.py --trials 8 --workers 1

Each study is a fresh folder and the default search space (OUT/space.json), the median pruner after 5 trials; the
workers split the machine's cores between them (cnnlab tune --workers). The two studies run one after the other.
"""

import argparse
import subprocess
import time
from pathlib import Path

import optuna
from common import MNIST_DIR, PYTHON, REPO, WORK_DIR, machine, print_table, write_json


def study_figures(out):
    study = optuna.load_study(study_name=out.name, storage=f"sqlite:///{out / 'study.db'}")
    states = [trial.state.name for trial in study.trials]
    complete = [trial for trial in study.trials if trial.state.name == "COMPLETE"]
    best = max(complete, key=lambda trial: trial.value) if complete else None
    return {"trials": len(states), "complete": states.count("COMPLETE"), "pruned": states.count("PRUNED"),
            "failed": states.count("FAIL"), "best_val_accuracy": best and round(best.value, 4),
            "best_params": best and best.params, "best_trial": best and best.number,
            "workers_used": len({trial.user_attrs.get("worker") for trial in study.trials})}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--limit-train", type=int, default=3000)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure, one study each (1,2)")
    parser.add_argument("--work", default=str(WORK_DIR / "tune"), help="where the studies' folders go")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "tune.json"))
    args = parser.parse_args()
    rows = []
    for workers in map(int, args.workers.split(",")):
        out = Path(args.work) / f"mnist-{args.trials}trials-{workers}workers-{time.strftime('%H%M%S')}"
        command = [PYTHON, "-m", "cnnlab", "tune", "--dataset", "mnist", "--data-dir", str(MNIST_DIR),
                   "--trials", str(args.trials), "--epochs", str(args.epochs), "--limit-train", str(args.limit_train),
                   "--workers", str(workers), "--out", str(out)]
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        (out / "tune.log").write_text(done.stdout + done.stderr)
        if done.returncode:
            raise SystemExit(f"cnnlab tune failed ({done.returncode}); see {out / 'tune.log'}")
        rows.append({"workers": workers, "wall_seconds": round(wall, 1), **study_figures(out), "folder": str(out)})
    print_table(rows, [("workers", "workers", "{}"), ("trials", "trials", "{}"), ("complete", "complete", "{}"),
                       ("pruned", "pruned", "{}"), ("failed", "failed", "{}"),
                       ("best_val_accuracy", "best val accuracy", "{:.2%}"), ("wall_seconds", "wall (s)", "{:.0f}")],
                title=f"cnnlab tune: {args.trials} trials on MNIST ({args.limit_train:,} training images, "
                      f"{args.epochs} epochs)")
    write_json(args.json, {"machine": machine(), "trials": args.trials, "epochs": args.epochs,
                           "limit_train": args.limit_train, "studies": rows,
                           "note": "the machine's 2 cores were shared with other agents' work while it ran"})


if __name__ == "__main__":
    main()
