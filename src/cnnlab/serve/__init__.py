"""`cnnlab serve`: a local web app to draw a digit and watch the network think, with a JSON API (FastAPI).

Names are imported on first use: the image decoders' processes import `serve.decoding` without Keras.
"""

import importlib

__all__ = ["bind", "create_app", "serve"]


def __getattr__(name):
    if name in __all__:
        return getattr(importlib.import_module(".app", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
