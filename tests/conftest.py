"""Fixtures shared by several test files: train once per session, on small offline data."""

import pytest


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A finished 2-epoch `cnnlab run` on scikit-learn's digits: run directory with figures and report.html."""
    from cnnlab.config import make_config
    from cnnlab.pipeline import run

    out = tmp_path_factory.mktemp("runs")
    return run(make_config(dataset="digits", epochs=2), out=out, name="digits", verbose=0).path
