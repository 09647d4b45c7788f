"""Models as Keras tutorials write them (tests/test_model_family.py), scored by plain Keras and by `cnnlab evaluate`
of one or more cnnlab source trees: the accuracy each gives, or the error it prints.

    git worktree add /tmp/cnnlab-before aa9833a       # the code before, for a before/after table
    .venv/bin/python benchmarks/model_family.py --src before=/tmp/cnnlab-before/src --src after=src

Each model is trained for 4 epochs on the digits, saved as .keras and .h5, and scored on the digits' test set.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from common import PYTHON, REPO, machine, write_json

sys.path.insert(0, str(REPO / "tests"))


def cnnlab_accuracy(src, model, out):
    """`cnnlab evaluate MODEL --dataset digits` with the cnnlab of `src`: its test accuracy, or its error line."""
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([PYTHON, "-m", "cnnlab", "evaluate", str(model), "--dataset", "digits", "--out", str(out)],
                            capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    if result.returncode == 0:
        return json.loads((Path(out) / "evaluation.json").read_text())["test_accuracy"]
    errors = [line for line in result.stderr.splitlines() if line.startswith("cnnlab")]
    return (errors or result.stderr.splitlines()[-1:] or ["failed"])[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", default=[], metavar="LABEL=PATH",
                        help="a cnnlab source tree to score with (repeatable; default: after=src)")
    parser.add_argument("--json", default=str(REPO / "benchmarks" / "results" / "model_family.json"))
    args = parser.parse_args()
    sources = dict(item.split("=", 1) for item in args.src) or {"after": str(REPO / "src")}
    work = Path(tempfile.mkdtemp(prefix="cnnlab-family-"))
    from test_model_family import saved_family

    rows = []
    for name, built in saved_family(work).items():
        for suffix, path in built["paths"].items():
            rows.append(score_row(name, suffix, path, built["keras_accuracy"], sources, work))
    write_json(args.json, {"machine": machine(), "sources": sources, "rows": rows})


def score_row(name, suffix, path, keras_accuracy, sources, work):
    """One model file scored by each source tree, printed as it comes."""
    row = {"model": name, "format": suffix, "keras": keras_accuracy}
    for label, src in sources.items():
        row[label] = cnnlab_accuracy(src, path, work / f"{name}{suffix}-{label}")
    shown = "  ".join(f"{label} {v:.2%}" if isinstance(v, float) else f"{label}: {v}"
                      for label, v in row.items() if label in sources)
    print(f"{name:20} {suffix:7} keras {keras_accuracy:.2%}  {shown}", flush=True)
    return row


if __name__ == "__main__":
    main()
