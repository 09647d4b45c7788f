import os
import tempfile
from pathlib import Path

import pytest
from filelock import FileLock

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Downloads and decoded image folders go to a folder of the test session's, not to the user's ~/.keras
os.environ.setdefault("CNNLAB_CACHE_DIR", tempfile.mkdtemp(prefix="cnnlab-test-cache-"))

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "datasets" / "mnist"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


def missing(what):
    """Skip a test whose data or tool this machine lacks; in CI (CI=true) fail instead: a green run must have run it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what}; CI must have it (make test installs it)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def mnist_dir():
    """Real MNIST beside the repository (../shared/datasets/mnist), as CI lays it out."""
    if not (SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").exists():
        missing(f"real MNIST not found at {SHARED_MNIST}")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def fashion_dir():
    """Fashion-MNIST from Debian's dataset-fashion-mnist (make test installs it where it can)."""
    if not (DEBIAN_FASHION / "t10k-labels-idx1-ubyte.gz").exists():
        missing(f"Fashion-MNIST not found at {DEBIAN_FASHION} (apt-get install dataset-fashion-mnist)")
    return DEBIAN_FASHION


def built_once(tmp_path_factory, name, build) -> Path:
    """A folder `build(folder)` fills, made once per test session: the pytest-xdist workers of one session share it
    (xdist's FileLock recipe), so a run that several workers' tests read is trained once, not once per worker."""
    if "PYTEST_XDIST_WORKER" not in os.environ:  # one process: its own temporary folder
        folder = tmp_path_factory.mktemp(name)
        build(folder)
        return folder
    folder = tmp_path_factory.getbasetemp().parent / name  # the workers' common folder of this session
    with FileLock(f"{folder}.lock"):
        if not (folder / ".built").exists():
            folder.mkdir(exist_ok=True)
            build(folder)
            (folder / ".built").touch()
    return folder


def cli_run(*args):
    """`cnnlab run ARGS` in this process, which must succeed."""
    from cnnlab.cli import main

    assert main(["run", *map(str, args)]) == 0


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """One short real run through the CLI on the offline digits set, shared by the tests that read its outputs."""
    out = built_once(tmp_path_factory, "runs", lambda out: cli_run("--dataset", "digits", "--epochs", 2, "--out", out,
                                                                   "--name", "digits"))
    return out / "digits"


@pytest.fixture(scope="session")
def classifier(digits_run):
    """The digits run's best model, loaded once for the prediction and web-app tests."""
    from cnnlab.prediction import Classifier

    return Classifier.load(digits_run / "best.keras")


@pytest.fixture(scope="session")
def colour_folder(tmp_path_factory):
    """A 32x32 colour dataset as train/ and test/ class folders of PNGs: scikit-learn's digits in random ink and
    background colours (colour says nothing about the class), available on every machine."""
    from image_data import DIGIT_NAMES, coloured, digit_arrays, write_split_folders

    def build(folder):
        arrays = digit_arrays()
        arrays = {**arrays, "x_train": coloured(arrays["x_train"], seed=1), "x_test": coloured(arrays["x_test"], seed=2)}
        write_split_folders(folder / "colour_digits", arrays, DIGIT_NAMES)

    return built_once(tmp_path_factory, "colour", build) / "colour_digits"


@pytest.fixture(scope="session")
def colour_run(colour_folder, tmp_path_factory):
    """One short real run on the colour folder through the CLI (8 epochs: ~75% test accuracy, where chance is 10%),
    shared by the tests that read its outputs."""
    out = built_once(tmp_path_factory, "colour-runs", lambda out: cli_run("--dataset", colour_folder, "--epochs", 8,
                                                                          "--out", out, "--name", "colour"))
    return out / "colour"
