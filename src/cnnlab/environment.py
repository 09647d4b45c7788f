"""What a run ran on: backend, device and library versions, recorded with every run."""

import importlib.metadata
import platform
import sys

import keras

BACKEND_PACKAGES = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "jax": ("jax",), "torch": ("torch",)}


def _version(*packages):
    for package in packages:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def device() -> str:
    """The accelerator the backend computes on, or 'cpu'. Asks the backend library itself."""
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            return str(jax.devices()[0].device_kind)
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        if backend == "tensorflow":
            import tensorflow as tf

            gpus = tf.config.list_physical_devices("GPU")
            return gpus[0].name if gpus else "cpu"
    except Exception:  # a half-installed accelerator stack must not stop a run from being recorded
        pass
    return "cpu"


def live_output() -> bool:
    """A terminal or a Jupyter kernel, where Keras's progress bars redraw themselves; a log file gets a line each."""
    return sys.stdout.isatty() or type(sys.stdout).__module__.startswith("ipykernel")


def describe() -> dict:
    backend = keras.backend.backend()
    return {
        "backend": backend,
        "device": device(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {
            "cnnlab": _version("cnnlab"),
            "keras": keras.__version__,
            backend: _version(*BACKEND_PACKAGES.get(backend, (backend,))),
            "numpy": _version("numpy"),
        },
    }
