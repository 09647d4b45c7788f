"""cnnlab: build, train, score and look inside convolutional image classifiers, on any image-classification data.

    import cnnlab
    config = cnnlab.make_config(dataset="digits", epochs=3)   # or dataset="path/to/photos/", a .csv, an .npz
    run_dir = cnnlab.run(config)                       # everything, into runs/<name>/
    model = cnnlab.load_model(run_dir.best_model)
    fig = cnnlab.plots.learning_curves(run_dir.read_history())

Names are imported on first use, so `import cnnlab` (and `cnnlab --help`) does not wait for Keras.
"""

import importlib

_EXPORTS = {
    "callbacks": ["RunRecorder"],
    "config": ["Config", "make_config"],
    "data": ["Dataset", "load_dataset", "read_idx"],
    "errors": ["CnnlabError"],
    "evaluation": ["evaluate", "predict"],
    "export": ["export_model"],
    "explain.maximize": ["maximize"],
    "explain": ["attributions"],
    "inspection": ["conv_layers", "feature_maps", "filter_images", "load_model", "untrained_kernel"],
    "model": ["build_model", "summary_text"],
    "pipeline": ["evaluate_model", "inspect_model", "resume_config", "run", "train_run"],
    "rundir": ["RunDir"],
    "training": ["set_seeds", "train"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE) + ["plots", "tune"]


def __getattr__(name):
    if name in ("plots", "tune"):  # cnnlab.tune is the package cnnlab.tune, callable: cnnlab.tune(trials=...)
        return importlib.import_module(f".{name}", __name__)
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module 'cnnlab' has no attribute {name!r}")


def __dir__():  # a notebook's tab completion lists the API before its first use
    return sorted(set(globals()) | set(__all__))
