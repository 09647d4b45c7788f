"""The project's own error types: a problem the user can fix, told in one line."""


class CnnlabError(Exception):
    """Base class: the CLI prints the message on one line and exits with status 2."""


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

    command = "train"  # the CLI names the command that was running (train, or run), for the resume line

    def __init__(self, run_dir, epochs_completed, network=None):
        super().__init__(run_dir, epochs_completed)
        self.run_dir, self.epochs_completed = run_dir, epochs_completed
        self.network = network  # in an ensemble: (the network that was training, how many there are)

    def __str__(self):
        done = self.epochs_completed
        of = f" of network {self.network[0]} of {self.network[1]}" if self.network else ""
        kept = (f"{'epoch 1' if done == 1 else f'epochs 1-{done}'}{of} and the best model are kept in {self.run_dir}"
                if done else f"no epoch{of} had completed in {self.run_dir}")
        return f"training interrupted; {kept}; resume with: cnnlab {self.command} --resume {self.run_dir}"


class TrainingDiverged(CnnlabError):
    """The loss became NaN or infinite; the last good best model is kept."""


class AlreadyComplete(CnnlabError):
    """A resume of a run that has nothing left to do: not a failure (scripts and schedulers retry), so the CLI says
    so and exits 0; a Python caller can catch it."""
