"""The Keras callback through which Optuna's pruner stops a bad trial after an epoch.

It reports the validation score of each validated epoch to the trial and, when the pruner says the trial is worse
than the others were at that epoch, stops training at the epoch's end, after cnnlab's own callbacks have saved it:
the trial's run directory stays complete (best model, history, metrics), and the objective then raises
optuna.TrialPruned.
"""

import keras


class PruningCallback(keras.callbacks.Callback):
    def __init__(self, trial, monitor="val_accuracy"):
        super().__init__()
        self.trial, self.monitor = trial, monitor
        self.pruned_after = None  # the 1-based epoch after which the pruner stopped the trial
        self.last_value = None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:  # not validated this epoch (validation_freq > 1)
            return
        self.last_value = float(value)
        self.trial.report(self.last_value, step=epoch + 1)
        if self.trial.should_prune():
            self.pruned_after = epoch + 1
            self.model.stop_training = True
