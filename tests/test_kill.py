"""kill -9 at random moments: a real short training is killed; what it leaves loads, and --resume finishes it.

Five kills with a fixed seed: the first during start-up (imports, data, model), the others while training,
where they can land in an epoch, in validation or in the middle of writing a checkpoint.
benchmarks/kill_test.py runs the same cycle 20 times and reports the figure.
"""

import random

import pytest
from robustness_helpers import calibrate, kill_and_recover

KILLS = 5


@pytest.fixture(scope="module")
def windows(tmp_path_factory):
    return calibrate(tmp_path_factory.mktemp("calibration"))


@pytest.mark.parametrize("kill", range(KILLS))
def test_kill_minus_nine_never_loses_the_run(kill, windows, tmp_path):
    startup_s, training_s = windows
    # kill_and_recover asserts, after the kill and again after the recovery, everything the docstring promises
    print(kill_and_recover(tmp_path, f"kill-{kill}", random.Random(6000 + kill), startup_s, training_s,
                           during_startup=kill == 0))
