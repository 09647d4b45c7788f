"""Runs side by side: the settings in which they differ, then epochs, times and scores.

Reads only config.json and metrics.json, so it is instant (no Keras import) and works on runs whose models
were deleted to save space.
"""

from datetime import datetime
from pathlib import Path

from . import files
from .config import setting_text
from .errors import CnnlabError
from .pages import render
from .rundir import RunDir


def _seconds(value):
    return f"{value:.1f}"


def _count(value):
    return f"{value:,}"


def _loss(value):
    return f"{value:.4f}"


def _accuracy(value):
    return f"{value:.2%}"


RESULTS = (  # (metrics.json key, label, better: "min", "max" or None, format)
    ("epochs_run", "epochs run", None, str),
    ("best_epoch", "best epoch", None, str),
    ("stop_reason", "why training stopped", None, str),
    ("parameters", "parameters", None, _count),
    ("train_seconds", "training time (s)", "min", _seconds),
    ("total_seconds", "whole run (s)", "min", _seconds),
    ("val_loss", "validation loss", "min", _loss),
    ("val_accuracy", "validation accuracy", "max", _accuracy),
    ("test_loss", "test loss", "min", _loss),
    ("test_accuracy", "test accuracy", "max", _accuracy),
)


def _setting(value):
    return "—" if value is None else str(setting_text(value))


def compare_runs(run_dirs) -> dict:
    """{"runs": column names, "rows": [{"group", "label", "cells", "best"}]}, settings rows first.

    `best` is the index of the run that is best on a score (lowest loss or time, highest accuracy), or None
    when fewer than two runs have the score or the best is tied.
    """
    runs = [RunDir(path) for path in run_dirs]
    for run in runs:
        if not run.path.is_dir():
            raise CnnlabError(f"{run.path}: {'not a run directory' if run.path.exists() else 'no such run directory'}")
    configs = [run.read_config().to_dict() for run in runs]
    finished = [run.metrics.exists() for run in runs]  # an unfinished run (`runs/*` often has one) shows its settings
    metrics = [run.read_metrics() if done else {} for run, done in zip(runs, finished)]
    names = [run.path.name for run in runs]
    if len(set(names)) < len(names):
        names = [str(run.path) for run in runs]
    names = [name if done else f"{name} (unfinished)" for name, done in zip(names, finished)]
    rows = []
    for key in configs[0]:
        values = [config[key] for config in configs]
        if len(runs) == 1 or any(value != values[0] for value in values):
            rows.append({"group": "settings", "label": key, "cells": [_setting(v) for v in values], "best": None})
    for key, label, better, show in RESULTS:
        values = [m.get(key) for m in metrics]
        rows.append({"group": "results", "label": label, "best": _best(values, better),
                     "cells": ["—" if v is None else show(v) for v in values]})
    return {"runs": names, "rows": rows}


def _best(values, better):
    known = [v for v in values if isinstance(v, (int, float))]
    if not better or len(known) < 2:
        return None
    best = min(known) if better == "min" else max(known)
    return values.index(best) if known.count(best) == 1 else None


def comparison_text(comparison) -> str:
    """The comparison as an aligned plain-text table; '*' marks the best run on a score."""
    lines = [["", *comparison["runs"]]]
    for row in comparison["rows"]:
        lines.append([row["label"], *(cell + ("*" if i == row["best"] else "") for i, cell in enumerate(row["cells"]))])
    widths = [min(max(len(line[c]) for line in lines), 48) for c in range(len(lines[0]))]
    text = ["  ".join(cell[:48].ljust(width) for cell, width in zip(line, widths)).rstrip() for line in lines]
    text.insert(1, "  ".join("-" * width for width in widths))
    if not any(row["group"] == "settings" for row in comparison["rows"]):
        text.insert(2, "(the runs have the same settings)")
    return "\n".join(text) + "\n* best of the compared runs"


def write_comparison_html(comparison, out) -> Path:
    files.write_text(out, render("compare.html.j2", comparison=comparison, created=f"{datetime.now():%Y-%m-%d %H:%M}"))
    return Path(out)
