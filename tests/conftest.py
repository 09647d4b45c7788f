import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist"


@pytest.fixture(scope="session")
def mnist_dir():
    """Real MNIST beside the repository (../shared/datasets/mnist), as CI lays it out."""
    if not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {SHARED_MNIST}")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """One short real run through the CLI on the offline digits set, shared by the tests that read its outputs."""
    from cnnlab.cli import main

    out = tmp_path_factory.mktemp("runs")
    assert main(["run", "--dataset", "digits", "--epochs", "2", "--out", str(out), "--name", "digits"]) == 0
    return out / "digits"


@pytest.fixture(scope="session")
def classifier(digits_run):
    """The digits run's best model, loaded once for the prediction and web-app tests."""
    from cnnlab.prediction import Classifier

    return Classifier.load(digits_run / "best.keras")
