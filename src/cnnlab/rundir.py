"""The run directory: everything one run produced, so that it can be reproduced, reported and resumed.

runs/<name>/
  config.json        the settings (seed included) - reusable with --config
  data.json          the data: where from, class names, image shape, sizes, fingerprint, files skipped
  summary.txt        model.summary()
  history.csv        one row per completed epoch
  best.keras         the best model by the monitored metric, saved while training
  metrics.json       validation and test scores of the best model, timings, versions
  figures/*.png      learning curves, predictions, filters, feature maps
  report.html        all of it on one self-contained page (cnnlab.report)
  checkpoint/        the last completed epoch, for --resume: epoch-NNNN.keras (model + optimizer) and
                     state.json (history, best score, early-stopping and dropout state), the commit point
  .cnnlab-lock       locked while a process trains here, so that a second one is refused (files.exclusive)
  members/K/         an ensemble's networks, each trained as a run of its own (history.csv, best.keras,
                     checkpoint/); the run's best.keras averages them, and its history.csv has a member column
"""

import csv
import html
import io
import json
import os
import urllib.parse
from pathlib import Path

from . import files
from .config import make_config
from .errors import CnnlabError, ConfigError, resume_call


def run_config_of(model_path) -> Path:
    """The config.json of the run a model file belongs to: beside it, or for an ensemble's network
    (RUN/members/K/best.keras) the ensemble's, whose dataset and split the network was trained on."""
    folder = Path(model_path).parent
    if folder.parent.name == "members" and not (folder / "config.json").exists():
        return folder.parent.parent / "config.json"
    return folder / "config.json"


class RunDir:
    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self):
        return f"RunDir('{self.path}')"

    def _repr_html_(self):
        """What a notebook shows for `cnnlab.run(...)`: the run's name, data and scores, and a link to its report."""
        escape = html.escape
        lines = [f"<b>{escape(self.path.name)}</b> <code>{escape(str(self.path))}</code>"]
        try:
            metrics = self.read_metrics() if self.metrics.exists() else None
        except CnnlabError as e:
            metrics, lines = None, [*lines, f"<br>{escape(str(e))}"]
        if metrics:
            best = metrics.get("best_epoch")
            lines.append(f"<br>{escape(str(metrics.get('dataset')))}, recipe {escape(str(metrics.get('recipe')))}, "
                         f"best epoch {escape(str(best))} of {escape(str(metrics.get('epochs_run')))} "
                         f"({escape(str(metrics.get('stop_reason', '')))})")
            rows = [(split, metrics.get(f"{key}_accuracy"), metrics.get(f"{key}_loss"))
                    for split, key in (("validation", "val"), ("test", "test")) if f"{key}_accuracy" in metrics]
            lines.append("<table><tr><th></th><th>accuracy</th><th>loss</th></tr>" + "".join(
                f"<tr><td>{split}</td><td>{accuracy:.2%}</td><td>{loss:.4f}</td></tr>" for split, accuracy, loss in rows)
                         + "</table>")
        elif not self.path.is_dir():
            lines.append("<br>no such run directory yet")
        else:
            lines.append(f"<br>not finished: {len(self.read_history().get('epoch', []))} epoch(s) completed, "
                         f"no metrics.json yet")
        if self.report.exists():  # relative: Jupyter serves the notebook's folder, not the file system
            link = urllib.parse.quote(Path(os.path.relpath(self.report)).as_posix())
            lines.append(f'<br><a href="{escape(link)}" target="_blank">report.html</a> (scores, confusion matrix, '
                         f'mistakes, filters, feature maps, Grad-CAM)')
        return "<div>" + "\n".join(lines) + "</div>"

    config = property(lambda self: self.path / "config.json")
    data = property(lambda self: self.path / "data.json")
    summary = property(lambda self: self.path / "summary.txt")
    history = property(lambda self: self.path / "history.csv")
    best_model = property(lambda self: self.path / "best.keras")
    metrics = property(lambda self: self.path / "metrics.json")
    figures = property(lambda self: self.path / "figures")
    checkpoints = property(lambda self: self.path / "checkpoint")
    report = property(lambda self: self.path / "report.html")
    state = property(lambda self: self.path / "checkpoint" / "state.json")

    def figure(self, name):
        return self.figures / f"{name}.png"

    def member(self, k):
        """The run directory of an ensemble's k-th network (from 1)."""
        return RunDir(self.path / "members" / str(k))

    def checkpoint_model(self, epoch):
        return self.checkpoints / f"epoch-{epoch:04d}.keras"

    def holds_model(self):
        return self.best_model.exists() or self.state.exists() or (self.path / "members").exists()

    def read_state(self):
        """The training state of the last completed epoch, or None when no epoch has completed."""
        return self.read_json(self.state) if self.state.exists() else None

    def read_json(self, path):
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CnnlabError(f"{path} is missing; is {self.path} a cnnlab run directory?") from None
        except (OSError, ValueError) as e:
            raise CnnlabError(f"{path} is corrupt ({e}); rebuild it or start a new run") from None

    def read_config(self):
        """The run's validated Config; a missing, unreadable or invalid config.json is named in the error."""
        values = self.read_json(self.config)
        if not isinstance(values, dict):
            raise CnnlabError(f"{self.config} is corrupt (not a JSON object); rebuild it or start a new run")
        try:
            return make_config(**values)
        except ConfigError as e:
            raise CnnlabError(f"{self.config} is corrupt ({e}); rebuild it or start a new run") from None

    def read_metrics(self, required=()):
        """metrics.json as a dict that has at least the `required` keys."""
        if not self.metrics.exists() and (self.state.exists() or (self.path / "members").exists()):
            raise CnnlabError(f"{self.path} has not finished training (it has no metrics.json yet); finish it with "
                              f"{resume_call(self.path, 'run')}, or leave it out")
        metrics = self.read_json(self.metrics)
        missing = [key for key in required if key not in metrics] if isinstance(metrics, dict) else ["all"]
        if missing:
            raise CnnlabError(f"{self.metrics} is corrupt (lacks {', '.join(missing)}); rebuild it with cnnlab run, "
                              f"or start a new run")
        return metrics

    def read_history(self):
        """history.csv as {column: [values]} (empty when no epoch has completed)."""
        if not self.history.exists():
            return {}
        try:
            rows = list(csv.DictReader(io.StringIO(self.history.read_text(encoding="utf-8"))))
            return {key: [float(row[key]) for row in rows] for key in (rows[0] if rows else {})}
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise CnnlabError(f"{self.history} is corrupt ({e}); delete it or start a new run") from None

    def write_history(self, history):
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        keys = sorted(history, key=_column_order)
        writer.writerow(keys)
        for row in zip(*(history[k] for k in keys)):
            writer.writerow([f"{v:.6g}" if isinstance(v, float) else v for v in row])
        files.write_text(self.history, out.getvalue())


def _column_order(name):
    """epoch, the metrics (train before val_), then learning_rate and seconds: stable across a JSON round trip."""
    return (0 if name == "epoch" else 2 if name in ("learning_rate", "seconds") else 1, name)
