"""kill -9 a real short training at N random moments (fixed seed) and count how many runs recover.

After each kill: best.keras (if any) loads, state and history are whole, then `cnnlab train --resume` (or a fresh
run, when the kill came before the run directory had a config) finishes the run with epochs 1..N in its history.

    .venv/bin/python benchmarks/kill_test.py            # 20 kills; prints a table, writes benchmarks/kill_test.json
    .venv/bin/python benchmarks/kill_test.py --kills 5 --seed 7
"""

import argparse
import collections
import json
import random
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from robustness_helpers import calibrate, kill_and_recover  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--json", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    rng = random.Random(args.seed)
    started = time.monotonic()
    records = []
    with tempfile.TemporaryDirectory(prefix="cnnlab-kill-") as workdir:
        startup_s, training_s = calibrate(Path(workdir))
        print(f"windows: start-up {startup_s:.1f} s, training {training_s:.1f} s")
        print(f"{'kill':>4}  {'phase':9} {'at s':>6}  {'epochs done':>11}  {'temporaries':>11}  {'recovery':10} result")
        for kill in range(args.kills):
            name = f"kill-{kill:02d}"
            try:
                record = {**kill_and_recover(Path(workdir), name, rng, startup_s, training_s), "recovered": True}
            except Exception as e:  # a failed check is the figure this script exists to count
                record = {"name": name, "recovered": False, "traceback": traceback.format_exc(),
                          "error": " ".join(str(e).split())[:3000] or type(e).__name__}
                kept = Path(args.json).with_name(f"kill_test-{name}")  # the run directory, to see what went wrong
                shutil.copytree(Path(workdir) / name, kept, dirs_exist_ok=True)
            records.append(record)
            print(f"{kill:>4}  {record.get('phase', '?'):9} {record.get('killed_after_s', float('nan')):>6.2f}  "
                  f"{record.get('epochs_done_at_kill', '?'):>11}  {len(record.get('leftover_temporaries', [])):>11}  "
                  f"{record.get('recovery', '-' if record['recovered'] else '?'):10} "
                  f"{'recovered' if record['recovered'] else 'FAILED: ' + record['error']}", flush=True)
    recovered = sum(r["recovered"] for r in records)
    summary = {
        "kills": len(records), "recovered": recovered, "failures": len(records) - recovered,
        "by_phase": dict(collections.Counter(r.get("phase", "?") for r in records)),
        "by_epochs_done_at_kill": dict(sorted(collections.Counter(r.get("epochs_done_at_kill", -1)
                                                                  for r in records).items())),
        "kills_that_left_temporaries": sum(bool(r.get("leftover_temporaries")) for r in records),
        "windows_missed_and_retried": sum(r.get("attempts", 1) - 1 for r in records),
        "seed": args.seed, "seconds": round(time.monotonic() - started, 1),
        "window_seconds": {"start-up": round(startup_s, 2), "training": round(training_s, 2)},
    }
    print(f"\n{summary['kills']} kills, {summary['recovered']} recovered, {summary['failures']} failures "
          f"({summary['kills_that_left_temporaries']} kills landed mid-write and left a temporary file; "
          f"epochs done at kill: {summary['by_epochs_done_at_kill']})")
    Path(args.json).write_text(json.dumps({"summary": summary, "kills": records}, indent=2) + "\n")
    print(f"written: {args.json}")
    return 0 if summary["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
