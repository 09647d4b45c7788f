"""Train one cnnlab recipe through the Python API with the benchmarks' stopwatch; the cnnlab side of each benchmark.

    python benchmarks/cnnlab_run.py --recipe fast --data-dir ../shared/datasets/mnist --timing t.json --out /tmp/r
    (any other --setting VALUE overrides the recipe, as on cnnlab's command line)
"""

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import EpochTimer  # noqa: E402

from cnnlab import environment  # noqa: E402
from cnnlab.config import make_config  # noqa: E402
from cnnlab.evaluate import scores, view_probabilities  # noqa: E402
from cnnlab.inspection import load_model  # noqa: E402
from cnnlab.model import build_model  # noqa: E402
from cnnlab.pipeline import load_data  # noqa: E402
from cnnlab.rundir import RunDir  # noqa: E402
from cnnlab.train import set_seeds, steps_per_epoch, train  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="seed")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir")
    parser.add_argument("--timing", required=True, metavar="JSON")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--test-each-epoch", action="store_true")
    args, rest = parser.parse_known_args(argv)
    if len(rest) % 2:
        parser.error(f"settings come in --name VALUE pairs, got {rest}")
    overrides = {name.lstrip("-").replace("-", "_"): value for name, value in zip(rest[::2], rest[1::2])}
    config = make_config(recipe=args.recipe, dataset=args.dataset, data_dir=args.data_dir, **overrides)
    started = time.perf_counter()
    data = load_data(config)
    set_seeds(config.seed)
    model = build_model(config, steps_per_epoch=steps_per_epoch(config, data))
    setup_seconds = time.perf_counter() - started
    timer = EpochTimer(data.x_test, data.y_test) if args.test_each_epoch else EpochTimer()
    result = train(model, data, config, args.out, verbose=2, callbacks=[timer])
    # what `cnnlab run` reports (with the recipe's test-time augmentation), and the model alone
    per_view = view_probabilities(load_model(RunDir(args.out).best_model), data.x_test,
                                  test_time_augmentation=config.test_time_augmentation)
    best, single_view = scores(data.y_test, np.mean(per_view, axis=0)), scores(data.y_test, per_view[0])
    timer.write(args.timing, peer=f"cnnlab {args.recipe}", batch_size=config.batch_size, train_images=len(data.x_train),
                setup_seconds=setup_seconds, best_epoch=result.best_epoch, test_accuracy_of_best=best["accuracy"],
                test_accuracy_single_view=single_view["accuracy"],
                config=config.to_dict(), environment=environment.describe())


if __name__ == "__main__":
    sys.exit(main())
