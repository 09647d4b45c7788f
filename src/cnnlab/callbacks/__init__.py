"""Keras callbacks that bring cnnlab to a training loop, one concept per file, as Keras's own callbacks/ are:

    recorder.py      RunRecorder: your own `model.fit`, recorded as a cnnlab run directory
    tensorboard.py   TensorBoard event files: Keras's scalars and histograms, cnnlab's images per epoch
    mlflow.py        MLflow: a run's settings, per-epoch metrics, test scores and files

    rec = cnnlab.RunRecorder("runs/mine", test_data=(x_test, y_test), class_names=names, tensorboard=True)
    model.fit(x, y, validation_data=(x_val, y_val), epochs=10, callbacks=[rec])

Names are imported on first use: cnnlab.pipeline uses tensorboard.py and mlflow.py, and recorder.py uses the pipeline.
"""

import importlib

_WHERE = {"RunRecorder": "recorder", "EpochImages": "tensorboard", "tensorboard_callbacks": "tensorboard",
          "MLflowLogger": "mlflow", "mlflow_run": "mlflow"}
__all__ = sorted(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'cnnlab.callbacks' has no attribute {name!r}")
