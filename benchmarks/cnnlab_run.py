"""Train one cnnlab recipe through the Python API with the benchmarks' stopwatch; the cnnlab side of each benchmark.

    python benchmarks/cnnlab_run.py --recipe fast --data-dir ../shared/datasets/mnist --timing t.json --out /tmp/r
    (any other --setting VALUE overrides the recipe, as on cnnlab's command line)
"""

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import EpochTimer  # noqa: E402

from cnnlab import environment  # noqa: E402
from cnnlab.config import make_config  # noqa: E402
from cnnlab.evaluation import scores, view_probabilities  # noqa: E402
from cnnlab.pipeline import load_data, train_run  # noqa: E402


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
    if args.test_each_epoch:
        test = load_data(config)
        timer = EpochTimer(test.x_test, test.y_test)
    else:
        timer = EpochTimer()
    started = time.perf_counter()
    out = Path(args.out)
    _, best, data, metrics = train_run(config, out=out.parent, name=out.name, verbose=2, callbacks=[timer])
    wall_seconds = time.perf_counter() - started  # training plus loading, building, and scoring the validation set
    # what `cnnlab run` reports (with the recipe's test-time augmentation), and the model alone
    per_view = view_probabilities(best, data.x_test, test_time_augmentation=config.test_time_augmentation)
    test, single_view = scores(data.y_test, np.mean(per_view, axis=0)), scores(data.y_test, per_view[0])
    timer.write(args.timing, peer=f"cnnlab {args.recipe}", batch_size=config.batch_size, train_images=len(data.x_train),
                wall_seconds=wall_seconds, best_epoch=metrics["best_epoch"], test_accuracy_of_best=test["accuracy"],
                test_accuracy_single_view=single_view["accuracy"],
                config=config.to_dict(), environment=environment.describe())


if __name__ == "__main__":
    sys.exit(main())
