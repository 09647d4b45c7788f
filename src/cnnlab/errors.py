"""The project's own error types: a problem the user can fix, told in one line.

Messages name what to change as a Python caller spells it (`data_dir=`, `image_size='28x28'`, `safe_mode=False`);
the CLI prints them with its flags instead (`--data-dir`, `--image-size 28x28`, `--unsafe`: `cli.flag_spelling`).
"""


class CnnlabError(Exception):
    """Base class: the CLI prints the message on one line and exits with status 2."""


def first_line(error) -> str:
    """Another library's exception as a reason to quote in one line: its message's first line (at most 200
    characters), or its type when it has no message."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def resume_call(run_dir, function="train_run") -> str:
    """The Python call that continues the run in `run_dir`; the CLI shows it as `cnnlab train --resume RUN_DIR`
    (`cnnlab run ...` for `function` "run")."""
    path = str(run_dir)
    return f"cnnlab.{function}(cnnlab.resume_config({path!r}), resume={path!r})"


class ConfigError(CnnlabError):
    """A configuration value or flag is out of its allowed range."""


class DataError(CnnlabError):
    """A dataset file is missing, unreadable or malformed."""


class ModelFileError(CnnlabError):
    """A model file cannot be loaded safely or is not usable here."""


class ImageError(CnnlabError):
    """An image file cannot be read or turned into a model input."""


class TrainingInterrupted(CnnlabError):
    """Ctrl-C: training stopped; what was saved is intact and the run can be resumed."""

    function = "train_run"  # what resumes it: pipeline.run sets "run", which scores the model too

    def __init__(self, run_dir, epochs_completed, network=None):
        super().__init__(run_dir, epochs_completed)
        self.run_dir, self.epochs_completed = run_dir, epochs_completed
        self.network = network  # in an ensemble: (the network that was training, how many there are)

    def __str__(self):
        done = self.epochs_completed
        of = f" of network {self.network[0]} of {self.network[1]}" if self.network else ""
        kept = (f"{'epoch 1' if done == 1 else f'epochs 1-{done}'}{of} and the best model are kept in {self.run_dir}"
                if done else f"no epoch{of} had completed in {self.run_dir}")
        return f"training interrupted; {kept}; resume with: {resume_call(self.run_dir, self.function)}"


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite; the last good best model is kept."""


class AlreadyComplete(CnnlabError):
    """A resume of a run that has nothing left to do: not a failure (scripts and schedulers retry), so the CLI says
    so and exits 0; a Python caller can catch it."""
