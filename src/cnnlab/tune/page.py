"""The study's page, tune.html: the trials table and Optuna's own figures (optimisation history, validation score
per epoch, parameter importances, parallel coordinates), with plotly.js inline, so that it opens offline."""

import os
from datetime import datetime
from pathlib import Path

import optuna
import plotly.offline
from optuna.trial import TrialState

from .. import files
from ..pages import render

FIGURES = (  # (id, heading, what it shows, Optuna's function)
    ("history", "Optimisation history", "each trial's score and the best so far",
     optuna.visualization.plot_optimization_history),
    ("epochs", "Score per epoch", "what the pruner saw: a pruned trial's line stops at the epoch it was stopped",
     optuna.visualization.plot_intermediate_values),
    ("importances", "Parameter importances", "how much of the completed trials' scores each setting explains",
     optuna.visualization.plot_param_importances),
    ("parallel", "Parallel coordinates", "each trial a line through its settings to its score",
     optuna.visualization.plot_parallel_coordinate),
)


def trial_rows(study, folder) -> list:
    """One row per trial: number, state, score, epochs reported, seconds, parameters, and its run directory as a link
    relative to the page's `folder` where it is on this machine."""
    rows, best = [], _best_value(study)
    for trial in study.get_trials(deepcopy=False):
        run = trial.user_attrs.get("run_dir")
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() \
            if trial.datetime_complete and trial.datetime_start else None
        rows.append({"number": trial.number, "state": trial.state.name.lower(), "value": trial.value,
                     "epochs": len(trial.intermediate_values), "seconds": seconds,
                     "params": {name: shown(value) for name, value in trial.params.items()},
                     "seed": trial.user_attrs.get("seed"), "run": run and os.path.relpath(run, folder),
                     "best": trial.state == TrialState.COMPLETE and trial.value == best})
    return rows


def shown(value) -> str:
    """A parameter as the page and the summary line show it: floats to 3 significant digits."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _best_value(study):
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return max(trial.value for trial in complete) if complete else None


def write_page(study, out, objective="val_accuracy") -> Path:
    out = Path(out)
    parameters = sorted({name for trial in study.get_trials(deepcopy=False) for name in trial.params})
    figures = []
    for id, heading, caption, plot in FIGURES:
        figure = plot(study, target_name=objective) if plot is not optuna.visualization.plot_intermediate_values \
            else plot(study)
        figures.append({"id": id, "heading": heading, "caption": caption,
                        "html": figure.to_html(full_html=False, include_plotlyjs=False, default_width="100%")})
    html = render("tune.html.j2", study=study.study_name, objective=objective, rows=trial_rows(study, out.parent),
                  parameters=parameters, figures=figures, plotly_js=plotly.offline.get_plotlyjs(),
                  created=f"{datetime.now():%Y-%m-%d %H:%M}")
    files.write_text(out, html)
    return out
