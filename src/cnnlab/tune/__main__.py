"""A worker of a study (started by `cnnlab tune --workers W`):
python -m cnnlab.tune TUNE_DIR STORAGE TRIALS INDEX [DATA_DIR]."""

import sys

from ..errors import CnnlabError, TrainingInterrupted


def main(out, storage, trials, index, data_dir=""):
    from .study import run_worker

    try:
        run_worker(out, storage, int(trials), int(index), data_dir or None)
    except (KeyboardInterrupt, TrainingInterrupted):
        return 130
    except CnnlabError as e:
        print(f"cnnlab tune worker {index}: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
