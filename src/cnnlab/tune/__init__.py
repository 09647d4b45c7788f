"""Hyper-parameter search with Optuna: `cnnlab.tune(...)` (see cnnlab.tune.study.tune) and `cnnlab tune`.

    result = cnnlab.tune(trials=8, dataset="digits", epochs=2, out="runs/tune-digits")
    print(result.best_params, result.best_config, result.page)

The search space (cnnlab.tune.space), the study and its trials (cnnlab.tune.study), the pruning callback
(cnnlab.tune.pruning) and the result page (cnnlab.tune.page) are a module each. Needs the `tune` extra.
"""

import sys
import types

from ..errors import CnnlabError

try:
    import optuna  # noqa: F401
    import plotly  # noqa: F401
except ImportError as e:
    raise CnnlabError(f"cnnlab tune needs {e.name}, which is not installed: pip install 'cnnlab[tune]'") from None


class _Package(types.ModuleType):
    """The package is also the function, so that `cnnlab.tune(...)` calls it whether or not the package (named like
    the function) has been imported; the study module, and so Keras, is imported on the first call."""

    def __call__(self, *args, **kwargs):
        from .study import tune

        return tune(*args, **kwargs)


sys.modules[__name__].__class__ = _Package
