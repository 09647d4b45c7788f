"""The `cnnlab` command: a thin shell over the Python API (cnnlab.pipeline and friends).

Errors a user can fix print one line and exit with status 2; Ctrl-C during training exits with 130
after saying how to resume.
"""

import argparse
import ast
import functools
import math
import os
import re
import shlex
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter hides the useful output

from .config import (ATTRIBUTION_METHODS, COLOR_MODES, DATASETS, FIELDS, JIT_COMPILE,  # noqa: E402  (light imports)
                     LR_SCHEDULES, PRECISIONS, RECIPES, TEST_TIME_AUGMENTATIONS)
from .errors import AlreadyComplete, CnnlabError, DataError, TrainingInterrupted  # noqa: E402

EXIT_USER_ERROR = 2
# the library's names, written here so that --help imports neither Keras nor Optuna (tests/test_api.py compares them)
EXPORT_FORMATS = ("onnx", "saved_model", "litert")  # export.FORMATS
TUNE_PRUNERS = ("median", "hyperband", "none")  # tune.study.PRUNERS
EXIT_INTERRUPTED = 130
# What TensorFlow 2.21 prints on import whatever TF_CPP_MIN_LOG_LEVEL says (tensorflow/tensorflow#100442): INFO
# lines from before its logging starts, and the warning that announces them.
TF_START_UP_LINE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to "
                              r"STDERR|I\d{4} .*|To enable the following instructions: .* rebuild TensorFlow .*)$")


class Parser(argparse.ArgumentParser):
    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message}; see {self.prog} --help\n")


DATASET_HELP = (f"a named dataset ({', '.join(DATASETS)}; digits is offline and small), or the path of a folder of "
                f"class folders (cats/, dogs/; or train/ and test/ of them), a CSV file (label and pixel columns), an "
                f".npz (x_train, y_train, x_test, y_test) or a folder of IDX files")


def add_data_options(g, default="mnist"):
    """Where the data comes from and how its images are read: the same flags for every command that reads data
    (`default` None: the dataset is a positional argument)."""
    if default:
        g.add_argument("--dataset", metavar="NAME_OR_PATH", help=f"{DATASET_HELP} (default: {default})")
    g.add_argument("--data-dir", metavar="DIR", help="folder with a named dataset's files (IDX .gz or raw, mnist.npz, "
                   "cifar-10-python.tar.gz); default: $CNNLAB_DATA_DIR, Keras's cache, Debian's dataset package, then "
                   "download")
    g.add_argument("--test-split", type=float, metavar="F", help="share cut off as the test set when the data has "
                   "none (a folder without test/, a CSV), stratified, with the seed (0.2)")
    g.add_argument("--image-size", metavar="H[xW]", help="resize every image to H x W (default: the most common "
                   "size in the data)")
    g.add_argument("--color-mode", choices=COLOR_MODES, help="grey or colour images (default: grayscale when every "
                   "image is grey)")
    g.add_argument("--class-names", metavar="A,B,...", help="names of the labels 0, 1, ... (default: the class "
                   "folders', the dataset's, else the numbers)")


def add_training_options(p, output=True):
    g = p.add_argument_group("data")
    add_data_options(g)
    g.add_argument("--validation-split", type=float, metavar="F", help="share of the training set held out (0.2)")
    g.add_argument("--limit-train", type=int, metavar="N", help="use only N training images (quick trials)")
    g = p.add_argument_group("model (defaults: the seed network)")
    g.add_argument("--conv-filters", metavar="N,N,...", help="filters of each conv block, >= 2 blocks (32,64)")
    g.add_argument("--kernel-size", type=int, metavar="K", help="conv kernel size (3)")
    g.add_argument("--dense-units", metavar="N,...", help="units of each hidden dense layer, >= 1 (100)")
    g.add_argument("--dropout", type=float, metavar="P", help="dropout after each dense layer, in [0, 1) (0.4)")
    g.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, help="batch normalisation after each conv block (off)")
    g.add_argument("--convs-per-block", type=int, metavar="N", help="conv layers before each pooling (1)")
    g.add_argument("--precision", choices=PRECISIONS, help="float32 (default) or mixed_bfloat16 (faster on CPUs "
                   "with AVX512-BF16 and on GPUs)")
    g.add_argument("--ensemble", type=int, metavar="N", help="train N networks one after another (seeds SEED, SEED+1, "
                   "...) and save one model that averages their probabilities (1; best on MNIST: 2)")
    g = p.add_argument_group("augmentation (training only; default: none)")
    g.add_argument("--augment-translate", type=float, metavar="F", help="random shifts up to F of the image size")
    g.add_argument("--augment-rotate", type=float, metavar="DEG", help="random rotations up to DEG degrees")
    g.add_argument("--augment-zoom", type=float, metavar="F", help="random zoom in or out by up to F")
    g.add_argument("--augment-flip", action=argparse.BooleanOptionalAction, help="random left-right mirror images")
    g = p.add_argument_group("training")
    g.add_argument("--config", metavar="FILE", help="TOML or JSON file of settings (flags win over it)")
    g.add_argument("--recipe", choices=list(RECIPES), help="named set of settings: seed (default, the notes' own), "
                   "fast (99%% MNIST test accuracy in seconds) or best (highest accuracy in 10 minutes on 2 cores)")
    g.add_argument("--optimizer", help="adam (default), adamw, rmsprop or sgd")
    g.add_argument("--learning-rate", type=float, metavar="LR", help="the peak one with a schedule (0.001)")
    g.add_argument("--lr-schedule", choices=LR_SCHEDULES, help="constant (default), one_cycle (warm-up, then cosine "
                   "decay to 0) or cosine (decay only)")
    g.add_argument("--warmup-fraction", type=float, metavar="F", help="share of the steps warming up, one_cycle (0.25)")
    g.add_argument("--batch-size", type=int, metavar="N", help="(32)")
    g.add_argument("--epochs", type=int, metavar="N", help="maximum number of epochs (20)")
    g.add_argument("--monitor", help="metric for the best model and early stopping: val_loss (default), "
                   "val_accuracy, loss or accuracy")
    g.add_argument("--patience", type=int, metavar="N", help="epochs without improvement before stopping (2)")
    g.add_argument("--min-delta", type=float, metavar="D", help="smallest change that counts as improvement (0)")
    g.add_argument("--seed", type=int, help="random seed for the split, initialisation and shuffling (42)")
    g = p.add_argument_group("execution (changes how fast, not what is computed)")
    g.add_argument("--steps-per-execution", type=int, metavar="N", help="training steps per backend call (32)")
    g.add_argument("--jit-compile", choices=JIT_COMPILE, help="XLA compilation: auto (default: Keras's choice), true, false")
    g.add_argument("--validation-freq", type=int, metavar="N", help="validate every N epochs and after the last (1)")
    g.add_argument("--eval-batch-size", type=int, metavar="N", help="batch size of validation passes (1024)")
    g.add_argument("--devices", metavar="auto|N", help="train data-parallel over N local devices (GPUs) or all "
                   "(auto), with KERAS_BACKEND=jax; --batch-size stays the global batch (1)")
    g = p.add_argument_group("scoring")
    add_test_time_augmentation_option(g, "none; best: shift")
    if not output:
        return
    g = p.add_argument_group("output")
    g.add_argument("--out", default="runs", metavar="DIR", help="where run directories go (runs)")
    g.add_argument("--name", help="run directory name (default: DATASET-RECIPE-TIMESTAMP)")
    g.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last completed epoch")
    g = p.add_argument_group("tracking (cnnlab.callbacks)")
    g.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, help="TensorBoard event files in "
                   "RUN_DIR/tensorboard/: epoch scalars, learning rate, weight histograms, and per epoch the confusion "
                   "matrix, first-layer filters and feature maps (needs cnnlab[tensorboard])")
    g.add_argument("--mlflow", nargs="?", const="local", metavar="URI", help="log params, epoch metrics, test scores "
                   "and files to MLflow: alone, a SQLite store beside the runs (OUT/mlflow.db); or a tracking URI "
                   "(needs cnnlab[mlflow])")
    g = p.add_argument_group("several machines (JAX; one process per machine, each started with the same flags)")
    g.add_argument("--coordinator", metavar="HOST:PORT", help="process 0's address and a free port (or Keras's "
                   "KERAS_DISTRIBUTION_* variables, or JAX's JAX_COORDINATOR_ADDRESS under SLURM or Open MPI); only "
                   "process 0 writes the run directory")
    g.add_argument("--num-processes", type=int, metavar="N", help="processes in all")
    g.add_argument("--process-id", type=int, metavar="K", help="this process, 0..N-1")


def add_test_time_augmentation_option(p, default):
    p.add_argument("--test-time-augmentation", choices=TEST_TIME_AUGMENTATIONS,
                   help=f"score the mean prediction over each test image and its mirror image (flip) or its 1-pixel "
                   f"shifts (shift), for models trained with those augmentations ({default})")


def add_unsafe_option(p):
    p.add_argument("--unsafe", action="store_true", help="load models with Lambda layers or layers from other Python "
                   "packages, whose code runs on loading (only files you trust; unknown custom objects stay refused)")


def add_model_options(p, what):
    p.add_argument("model", metavar="MODEL", help=f"saved Keras model to {what}: .keras, or legacy .h5")
    add_data_options(p.add_argument_group("data (default: the run's own)"), "the run's, else mnist")
    p.add_argument("--out", metavar="DIR", help="where figures go (default: a run's figures folder for its best.keras, "
                   "else MODEL-NAME-figures beside MODEL)")
    add_unsafe_option(p)


def package_version() -> str:
    """The installed distribution's version (pyproject.toml's, in the wheel's metadata)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("cnnlab")
    except PackageNotFoundError:
        return "(not installed: pip install . to give it a version)"


def build_parser():
    parser = Parser(prog="cnnlab", description="Build, train, score and look inside CNN image classifiers: "
                    "MNIST, Fashion-MNIST, CIFAR-10, or your own images (a folder of class folders, a CSV, an NPZ).")
    parser.add_argument("--version", action="version", version=f"cnnlab {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser, metavar="COMMAND")

    p = sub.add_parser("run", help="the whole job: train, evaluate on the test set, draw every figure",
                       description="Train with early stopping, keep the best model, score it on the test set and write "
                       "figures (learning curves, predictions, filters, feature maps) into runs/NAME/.")
    add_training_options(p)
    p = sub.add_parser("train", help="train only: best model, history, validation score, learning curves",
                       description="Train a model and keep the best one by the validation score (runs/NAME/best.keras).")
    add_training_options(p)

    p = sub.add_parser("build", help="build the model the settings describe and print its layers and shapes",
                       description="Build the model that run and train would train with these settings, and print "
                       "model.summary(): each layer's output shape and parameters. Nothing is trained or written.")
    add_training_options(p, output=False)

    p = sub.add_parser("data", help="where a dataset is found, what it holds (and download it if asked)",
                       description="Look for a dataset and say where it is, its splits, classes and image shape, and "
                       "what was skipped; with --download, fetch a named one (checksum-verified) into Keras's cache "
                       "when it is not found.")
    p.add_argument("dataset", metavar="NAME_OR_PATH", help=DATASET_HELP)
    add_data_options(p.add_argument_group("data"), default=None)
    p.add_argument("--download", action="store_true", help="download it when it is not found locally")
    p.add_argument("--quiet", action="store_true", help="print nothing; the exit status says whether it was found")

    p = sub.add_parser("evaluate", help="test score of a saved model, and its predictions as a figure",
                       description="Score a saved model on a dataset's test set and draw test images with predicted "
                       "and true labels.")
    add_model_options(p, "score")
    add_test_time_augmentation_option(p, "default: the run's own setting, else none")

    p = sub.add_parser("inspect", help="filters and feature maps of a saved model's conv layers",
                       description="Draw every conv layer's filters (trained beside a fresh, untrained initialisation) "
                       "and the feature maps of each conv layer for one input image.")
    add_model_options(p, "look inside")
    p.add_argument("--index", type=int, default=0, metavar="N", help="test image to feed in (0)")
    p.add_argument("--image", metavar="FILE", help="feed in your own image instead (made MNIST-like first for a "
                   "digit-style model, else resized to the model's input)")
    p.add_argument("--no-preprocess", action="store_true", help="--image is already MNIST-style: only resize it")
    p.add_argument("--pooling", action="store_true", help="also draw the pooling layers' feature maps")
    p.add_argument("--maximize", action="store_true", help="also draw the input each conv filter, and each class of "
                   "the output layer, responds to most (activation maximisation), trained beside untrained")
    p.add_argument("--maximize-steps", type=int, metavar="N", help="--maximize: steps of gradient ascent (128)")

    p = sub.add_parser("explain", help="attribution maps of one input by every method, and how far to trust each",
                       description="Explain one input's class by attribution methods side by side (Grad-CAM, "
                       "Grad-CAM++, Score-CAM, saliency, SmoothGrad, Integrated Gradients, occlusion): a figure of the "
                       "maps over the input, the maps as an .npz and a JSON of each method's time and its deletion and "
                       "insertion areas (how fast the class probability falls as the pixels it ranks first are "
                       "removed, and rises as they are added).")
    add_model_options(p, "explain")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--index", type=int, default=0, metavar="N", help="test image to explain (0)")
    source.add_argument("--image", metavar="FILE", help="explain your own image instead (made MNIST-like first for "
                        "a digit-style model, else resized to the model's input)")
    p.add_argument("--no-preprocess", action="store_true", help="--image is already MNIST-style: only resize it")
    p.add_argument("--method", default="all", metavar="M[,M...]|all",
                   help=f"{', '.join(ATTRIBUTION_METHODS)}, several joined by commas, or all (default)")
    p.add_argument("--class", dest="class_index", type=int, metavar="C", help="class index to explain (default: "
                   "the predicted one)")
    g = p.add_argument_group("method options")
    g.add_argument("--steps", type=int, metavar="N", help="integrated_gradients: steps along the path (64)")
    g.add_argument("--baseline", metavar="black|blur|FILE", help="integrated_gradients: the image the path starts "
                   "from: black (default), the input blurred, or an image file")
    g.add_argument("--patch", type=int, metavar="P", help="occlusion: side of the square covered (a 7th of the image)")
    g.add_argument("--stride", type=int, metavar="S", help="occlusion: pixels between squares (half a patch)")

    p = sub.add_parser("report", help="one self-contained HTML page about a run or a saved model",
                       description="Build report.html: run summary, scores, learning curves, confusion matrix, "
                       "predictions and mistakes, filters, feature maps, Grad-CAM. From a run directory it reads "
                       "config.json, metrics.json, history.csv and best.keras; from a model file it scores the "
                       "model on --dataset's test set (no training history).")
    p.add_argument("model", metavar="RUN_DIR|MODEL", help="a run directory, or a saved Keras model (.keras, .h5)")
    add_data_options(p.add_argument_group("data (for a MODEL; default: the run's own)"), "the run's, else mnist")
    p.add_argument("--out", metavar="FILE", help="where the page goes (default: RUN_DIR/report.html, "
                   "or MODEL's folder/MODEL-NAME-report.html)")
    add_test_time_augmentation_option(p, "for a MODEL; default: the run's own setting, else none")
    add_unsafe_option(p)

    p = sub.add_parser("compare", help="runs side by side: settings that differ, epochs, time, scores",
                       description="Print a table of runs side by side: the settings in which they differ, "
                       "epochs, training time, validation and test scores (* marks the best).")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories to compare")
    p.add_argument("--html", metavar="OUT", help="also write the table as an HTML page")

    p = sub.add_parser("predict", help="predict your own images (photos, scans, drawings) with a saved model",
                       description="Read each image (PNG, JPEG, BMP, GIF, TIFF; upright by its EXIF orientation) "
                       "and predict it. For a grey digit-style model (its run's data was digits, as MNIST; or, "
                       "outside a run, a 28x28 grey input) each image is made MNIST-like first (invert a light "
                       "background, crop, fit into a 20/28 box, centre by mass); any other model gets it as it is, "
                       "in the model's colours, resized to the model's input. A folder with class sub-folders (0/, "
                       "1/, ... or class names) also gets an accuracy and a confusion matrix. Exit status 1 when any "
                       "file could not be read.")
    p.add_argument("model", metavar="MODEL", help="saved Keras model (.keras or .h5); class names come from its run")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_FOLDER", help="image files and folders of them")
    output = p.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="print JSON instead of a table")
    output.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    p.add_argument("--show", metavar="DIR", help="write a figure per image: as read, as fed to the model, top 3")
    p.add_argument("--no-preprocess", action="store_true", help="for a digit-style model: images are already "
                   "MNIST-style (white ink on black), only resize them (other models' images are only resized anyway)")
    p.add_argument("--top", type=int, default=3, metavar="K", help="most probable classes to list (3)")
    add_unsafe_option(p)

    p = sub.add_parser("serve", help="a local web app: upload an image (or draw a digit) and watch the network think",
                       description="Serve a page to upload an image, take a photo (on a phone) or, for a grey "
                       "digit-style model, draw a digit, and see the class probabilities, the input as the model "
                       "takes it, every conv layer's feature maps and a Grad-CAM map, with a JSON API beside it "
                       "(/docs). Binds 127.0.0.1 (this computer only) unless --host says otherwise.")
    p.add_argument("model", metavar="MODEL", help="saved Keras model (.keras or .h5)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1; 0.0.0.0 opens it to the network)")
    p.add_argument("--port", type=int, default=8000, help="(8000)")
    p.add_argument("--max-upload-mb", type=float, default=5.0, metavar="MB", help="largest request body accepted (5)")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes, each with its own copy of "
                   "the model: for a machine with cores to spare (1)")
    p.add_argument("--decoders", type=int, metavar="N", help="processes beside each server process that decode and "
                   "preprocess the uploaded images; 0 decodes in the server's threads (default: the CPUs, at most 4)")
    add_unsafe_option(p)

    p = sub.add_parser("export", help="a saved model as ONNX, a TensorFlow SavedModel or LiteRT, checked in its runtime",
                       description="Export a saved model through Keras's model.export (preprocessing layers "
                       "included: the file takes what the model takes, 0..255 or 0..1 pixels), run the file in its "
                       "own runtime (onnxruntime, TensorFlow, the LiteRT interpreter) on test images and compare its "
                       "probabilities with Keras's. The file is kept only when they agree; the figures go beside it "
                       "(PATH.json). ONNX and LiteRT need pip install 'cnnlab[export]'.")
    p.add_argument("model", metavar="MODEL", help="saved Keras model (.keras or .h5)")
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS, help="onnx (.onnx), saved_model (a folder) or "
                   "litert (.tflite)")
    p.add_argument("--out", metavar="PATH", help="where the export goes (default: beside MODEL, MODEL-NAME.onnx, "
                   "MODEL-NAME_saved_model/ or MODEL-NAME.tflite)")
    add_data_options(p.add_argument_group("data to verify on (default: the run's own)"), "the run's, else mnist")
    p.add_argument("--images", type=int, metavar="N", help="verify on the first N test images (default: all)")
    add_unsafe_option(p)

    p = sub.add_parser("tune", help="hyper-parameter search with Optuna: each trial a run, the best as a config file",
                       description="Search the network's and training's settings with an Optuna study: each trial is "
                       "a run directory in --out, pruned after an epoch when it is worse than the others were; the "
                       "best settings are printed and written as OUT/best-config.json (cnnlab run --config takes "
                       "it), and OUT/tune.html shows the trials. The same command on the same folder continues the "
                       "study. Flags below fix what every trial shares. Needs pip install 'cnnlab[tune]'.")
    g = p.add_argument_group("search")
    g.add_argument("--trials", type=int, required=True, metavar="N", help="trials in all (completed and pruned; a "
                   "continued study runs the ones it lacks)")
    g.add_argument("--out", metavar="DIR", help="the tune folder: trials, study.db, best-config.json, tune.html "
                   "(runs/tune-DATASET)")
    g.add_argument("--space", metavar="FILE", help="TOML or JSON search space: name = {low = A, high = B, log = "
                   "true}, name = [choices] or name = value (default: OUT/space.json shows it)")
    g.add_argument("--workers", type=int, default=1, metavar="W", help="processes on this machine sharing the study, "
                   "each with its share of the cores (1)")
    g.add_argument("--storage", metavar="URL", help="database URL Optuna accepts, such as postgresql://user:pw@host/db, "
                   "for workers on other machines (each runs cnnlab tune with an --out folder of the same name); "
                   "default: sqlite in OUT")
    g.add_argument("--pruner", choices=TUNE_PRUNERS, help="stop bad trials after an epoch: median "
                   "(default: below the median of earlier trials at that epoch), hyperband, or none")
    g.add_argument("--startup-trials", type=int, default=5, metavar="K", help="trials before the median pruner "
                   "prunes (5)")
    add_training_options(p, output=False)
    return parser


def training_config(args):
    from .config import make_config

    overrides = {name: getattr(args, name, None) for name in FIELDS if name != "recipe"}
    overrides["recipe"] = args.recipe
    if getattr(args, "resume", None):
        placed = [flag for flag, value in (("--out", args.out != "runs"), ("--name", args.name), ("--config", args.config))
                  if value]
        if placed:
            raise CnnlabError(f"--resume continues {args.resume} in place, with its own settings; "
                              f"drop {', '.join(placed)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        # the same data may have moved to another folder; tracking and devices change nothing trained
        changed = sorted(set(given) - {"epochs", "data_dir", "devices", "tensorboard", "mlflow"})
        if changed:
            raise CnnlabError(f"--resume continues a run with its own settings; only --epochs, --data-dir, "
                              f"--devices and the tracking flags may change, not "
                              f"{', '.join('--' + k.replace('_', '-') for k in changed)}")
        import_keras_quietly()  # the pipeline imports Keras
        from .pipeline import resume_config

        return resume_config(args.resume, **given)
    return make_config(file=args.config, **overrides)


def command_run(args):
    config = training_config(args)  # before Keras is imported: a bad flag costs no start-up time
    import_keras_quietly()
    from . import pipeline
    from .distribution import initialize

    initialize(args.coordinator, args.num_processes, args.process_id)  # several machines, when asked

    if args.command == "run":
        pipeline.run(config, args.out, args.name, args.resume)
    else:
        run, *_ = pipeline.train_run(config, args.out, args.name, args.resume)
        print(f"Run directory: {run.path}")


def command_build(args):
    config = training_config(args)
    import_keras_quietly()
    from .data.catalogue import NAMED
    from .model import build_model, ensemble_line, summary_text

    if config.dataset in NAMED and not (config.image_size or config.color_mode or config.class_names):
        shape, classes = NAMED[config.dataset].image_shape, len(NAMED[config.dataset].class_names)
    else:  # the data says its shape and classes
        from .pipeline import load_data

        data = load_data(config)
        shape, classes = data.image_shape, len(data.class_names)
    # the steps only size a learning-rate schedule
    print(summary_text(build_model(config, classes, steps_per_epoch=1, input_shape=shape)))
    if config.ensemble > 1:
        print(ensemble_line(config))


def command_data(args):
    from .config import make_config
    from .data import load_dataset

    config = make_config(dataset=args.dataset, data_dir=args.data_dir, test_split=args.test_split,
                         image_size=args.image_size, color_mode=args.color_mode, class_names=args.class_names)
    data = load_dataset(config.dataset, config.data_dir, config.validation_split, config.seed,
                        allow_download=args.download, test_split=config.test_split, image_size=config.image_size,
                        color_mode=config.color_mode, class_names=config.class_names)
    if not args.quiet:
        print(f"{data.name}: {data.source} (" + ", ".join(f"{k} {v:,}" for k, v in data.sizes().items()) + ")")
        print(f"  images {'x'.join(map(str, data.image_shape))}, {len(data.class_names)} classes: "
              f"{', '.join(data.class_names[:20])}{', ...' if len(data.class_names) > 20 else ''}")
        for note in data.notes:
            print(f"  {flag_spelling(note)}")


DATA_FLAGS = ("data_dir", "test_split", "image_size", "color_mode", "class_names")


def model_config(args, model=None):
    """The settings of the run a model file sits in (when --dataset does not name another dataset), else the flags'.
    A folder of images is read at the `model`'s input size and colour unless the flags say otherwise."""
    import dataclasses

    from .config import make_config
    from .data import source_kind
    from .rundir import run_config_of

    flags = {name: getattr(args, name, None) for name in DATA_FLAGS}
    run_config = run_config_of(args.model)
    if args.dataset is None and run_config.is_file():
        return make_config(file=run_config, **flags)
    config = make_config(dataset=args.dataset or "mnist", **flags)
    if model is not None and source_kind(config.dataset) == "folder":
        from .feeding import model_input

        spec = model_input(model, args.model)
        config = dataclasses.replace(config, image_size=config.image_size or "x".join(map(str, spec.size)),
                                     color_mode=config.color_mode or ("rgb" if spec.channels == 3 else "grayscale"))
    return config


def model_data(args, model):
    """The config and the dataset to score or feed `model` with: the flag's, else the run's own, else mnist; for the
    run's own, a warning when it changed since the run; a one-line error when its images do not fit the model."""
    from .feeding import check_fits, model_input
    from .pipeline import load_data
    from .rundir import RunDir, run_config_of

    config = model_config(args, model)
    run = RunDir(run_config_of(args.model).parent) if args.dataset is None else None
    data = load_data(config, run)
    check_fits(model_input(model, args.model), data.image_shape, args.model, f"dataset {data.name}")
    return config, data


def figures_folder(args) -> Path:
    """--out, else a run's own figures folder for its best model, else one named after the model file, so that no
    two models share one. A dataset other than the run's, and an --image, get a folder of their own inside it, so
    that they do not overwrite the run's own figures."""
    from .config import make_config
    from .data import short_name

    model = Path(args.model)
    if args.out:
        return Path(args.out)
    run_config = model.parent / "config.json"
    if model.name == "best.keras" and run_config.is_file():
        folder = model.parent / "figures"
        if args.dataset and short_name(args.dataset) != short_name(make_config(file=run_config).dataset):
            folder = folder / short_name(args.dataset)
    else:
        folder = model.with_name(f"{model.stem}{'' if model.suffix == '.keras' else model.suffix.replace('.', '-')}"
                                 f"-figures")
    image = getattr(args, "image", None)
    return folder / Path(image).stem if image else folder


def command_evaluate(args):
    from . import files
    from .inspection import check_classifier, check_image_model, load_model
    from .pipeline import evaluate_model

    model = load_model(args.model, safe_mode=not args.unsafe, compile=False)
    check_image_model(model, args.model, looked_inside=False)
    out = files.check_writable(figures_folder(args))
    config, data = model_data(args, model)
    check_classifier(model, len(data.class_names), args.model)
    metrics = evaluate_model(model, data, out, args.test_time_augmentation or config.test_time_augmentation)
    files.write_json(out / "evaluation.json", {"model": str(args.model), "dataset": data.name, **metrics})
    print(f"Figures: {out}")


def command_inspect(args):
    from . import files
    from .inspection import check_class_scores, check_image_model, load_model
    from .pipeline import inspect_model

    if args.maximize_steps is not None and not args.maximize:
        raise CnnlabError("--maximize-steps is an option of --maximize; add --maximize")
    if args.maximize_steps is not None and not 1 <= args.maximize_steps <= 1000:
        raise CnnlabError(f"--maximize-steps must be in 1..1000, not {args.maximize_steps}")
    model = check_image_model(load_model(args.model, safe_mode=not args.unsafe, compile=False), args.model)
    if args.maximize:  # the output layer's patterns are one per class
        check_class_scores(model, args.model)
    out = files.check_writable(figures_folder(args))
    if args.image:
        from .prediction import style_for

        image, title, style = own_image(args, model, args.image), Path(args.image).name, style_for(model, args.model)
    else:
        try:
            _, data = model_data(args, model)
        except DataError as e:  # the filters need no data: draw them, and say how to get the feature maps
            if args.dataset or args.data_dir:  # the data asked for must be there
                raise
            data, image, title, style = None, None, None, "digits"
            print(f"cnnlab: filters only: {flag_spelling(str(e).split(' (')[0])}; for feature maps give --image FILE, "
                  f"or --dataset NAME_OR_PATH (--data-dir DIR)", file=sys.stderr)
        if data is not None:
            if not 0 <= args.index < len(data.x_test):
                raise CnnlabError(f"--index must be in 0..{len(data.x_test) - 1}, not {args.index}")
            image = data.x_test[args.index]
            title, style = f"{data.name} test image {args.index}: {data.class_names[data.y_test[args.index]]}", data.style
    steps, class_names = 0, None
    if args.maximize:
        from .explain.maximize import STEPS
        from .prediction import class_names_for

        steps, class_names = args.maximize_steps or STEPS, class_names_for(model, args.model)
    written = inspect_model(model, image, out, title, args.pooling, style, steps, class_names)
    print("\n".join(str(p) for p in written))


METHOD_FLAGS = {"steps": "integrated_gradients", "baseline": "integrated_gradients", "patch": "occlusion",
                "stride": "occlusion"}


def explain_methods(args) -> list:
    """The methods --method names, checked with the method flags before Keras is imported."""
    methods = list(ATTRIBUTION_METHODS) if args.method == "all" else args.method.split(",")
    unknown = [m for m in methods if m not in ATTRIBUTION_METHODS]
    if unknown or not methods:
        raise CnnlabError(f"--method must be all or one or more of {', '.join(ATTRIBUTION_METHODS)} joined by "
                          f"commas, not {args.method!r}")
    for flag, method in METHOD_FLAGS.items():
        if getattr(args, flag) is not None and method not in methods:
            raise CnnlabError(f"--{flag} is an option of {method}, which --method {args.method} does not include")
    for flag in ("steps", "patch", "stride"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise CnnlabError(f"--{flag} must be at least 1, not {getattr(args, flag)}")
    return methods


def command_explain(args):
    from . import files
    from .explain.attributions import usable_methods
    from .explanation import explain_input
    from .inspection import check_class_scores, check_image_model, conv_layers, load_model
    from .prediction import class_names_for, style_for

    methods = explain_methods(args)
    if args.baseline not in (None, "black", "blur") and not Path(args.baseline).is_file():
        raise CnnlabError(f"--baseline must be black, blur or an image file, not {args.baseline} (not a file)")
    model = check_image_model(load_model(args.model, safe_mode=not args.unsafe, compile=False), args.model,
                              looked_inside=False)
    check_class_scores(model, args.model)
    out = files.check_writable(figures_folder(args))
    if not conv_layers(model):
        methods = usable_methods(model, methods)
        if not methods:
            raise CnnlabError(f"{args.model}: model has no conv layer, so the CAM methods have nothing to weigh; "
                              f"choose saliency, smoothgrad, integrated_gradients or occlusion")
        print("cnnlab: the model has no conv layer: Grad-CAM, Grad-CAM++ and Score-CAM left out", file=sys.stderr)
    style, true_class = style_for(model, args.model), None
    if args.image:
        image, names, title, stem = own_image(args, model, args.image), class_names_for(model, args.model), \
            Path(args.image).name, "attributions"
    else:
        _, data = model_data(args, model)
        if not 0 <= args.index < len(data.x_test):
            raise CnnlabError(f"--index must be in 0..{len(data.x_test) - 1}, not {args.index}")
        image, names, style = data.x_test[args.index], data.class_names, data.style
        true_class, title, stem = int(data.y_test[args.index]), f"{data.name} test image {args.index}", \
            f"attributions_{args.index}"
    options = {"integrated_gradients": {key: value for key, value in (
                   ("steps", args.steps),
                   ("baseline", own_image(args, model, args.baseline) if args.baseline not in (None, "black", "blur")
                    else args.baseline)) if value is not None},
               "occlusion": {key: getattr(args, key) for key in ("patch", "stride") if getattr(args, key) is not None}}
    written = explain_input(model, image, out / stem, methods, args.class_index, names, title, options, style,
                            true_class, source=str(args.image or args.model))
    print("\n".join(str(p) for p in written))


def own_image(args, model, path):
    """An image file as the model takes it, as `inspect --image` reads one."""
    from .feeding import model_input
    from .prediction import style_for
    from .preprocess import prepare

    return prepare(path, preprocess=style_for(model, args.model) == "digits" and not args.no_preprocess,
                   shape=model_input(model, args.model).shape).input


def command_report(args):
    from . import report

    target = Path(args.model)
    if target.is_dir():
        given = [f"--{name.replace('_', '-')}" for name in ("dataset", "unsafe", "test_time_augmentation", *DATA_FLAGS)
                 if getattr(args, name) and name != "data_dir"]
        if given:
            raise CnnlabError(f"a run directory's report uses the run's own dataset, model and scoring; "
                              f"{', '.join(given)} are for a MODEL file")
        print(f"Report: {report.report_from_run(target, args.out, data_dir=args.data_dir)}")
        return
    if not target.exists():
        raise CnnlabError(f"{target}: no such run directory or model file")
    from .inspection import load_model

    model = load_model(target, safe_mode=not args.unsafe, compile=False)
    config, data = model_data(args, model)
    out = Path(args.out) if args.out else target.with_name(f"{target.stem}-report.html")
    path = report.report_for_model(model, data, out, target,
                                   args.test_time_augmentation or config.test_time_augmentation)
    print(f"Report: {path}")


def command_compare(args):
    from . import compare, files

    if args.html:
        files.check_writable(Path(args.html).parent, flag="--html")
    comparison = compare.compare_runs(args.runs)
    print(compare.comparison_text(comparison))
    if args.html:
        print(f"HTML: {compare.write_comparison_html(comparison, args.html)}")


def command_predict(args):
    """Exit status 1 when any file failed (the others are still predicted)."""
    import json

    from .prediction import (Classifier, confusion_table, csv_text, find_images, predict_files, records, save_figures,
                             score, table)

    if args.top < 1:
        raise CnnlabError(f"--top must be at least 1, not {args.top}")
    if args.show:
        from . import files

        files.check_writable(args.show, flag="--show")
    classifier = Classifier.load(args.model, safe_mode=not args.unsafe)
    names = classifier.class_names
    results = predict_files(classifier, find_images(args.inputs, names), not args.no_preprocess,
                            keep_images=bool(args.show))
    scored = score(results, len(names))
    failed = [r for r in results if r.error]
    if args.json:
        print(json.dumps({"model": str(args.model), "preprocess": classifier.mnist_like and not args.no_preprocess,
                          "image_shape": list(classifier.input.shape), "style": classifier.style, "class_names": names,
                          "results": records(results, names, args.top), "score": scored, "failed": len(failed)}, indent=2))
    elif args.csv:
        print(csv_text(results, names, args.top), end="")
    else:
        print(table(results, names, args.top))
        if scored:
            print(f"\nAccuracy: {scored['accuracy']:.1%} ({scored['correct']} of {scored['images']} images in class folders)")
            print(confusion_table(scored["confusion_matrix"], names))
    if args.show:
        save_figures(results, names, args.show, args.top)
        print(f"Figures: {args.show}", file=sys.stderr)
    if failed:
        print(f"cnnlab: {len(failed)} of {len(results)} files could not be predicted", file=sys.stderr)
        return 1
    return 0


def command_serve(args):
    from .serve import serve

    if not (math.isfinite(args.max_upload_mb) and args.max_upload_mb > 0):
        raise CnnlabError(f"--max-upload-mb must be a number of megabytes above 0, not {args.max_upload_mb}")
    if not 1 <= args.workers <= 64:
        raise CnnlabError(f"--workers must be in 1..64 (processes; 1 is one process), not {args.workers}")
    if args.decoders is not None and not 0 <= args.decoders <= 64:
        raise CnnlabError(f"--decoders must be in 0..64 (processes; 0 decodes in threads), not {args.decoders}")
    decoders = {} if args.decoders is None else {"decoders": args.decoders}
    serve(args.model, host=args.host, port=args.port, safe_mode=not args.unsafe,
          max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), workers=args.workers, **decoders)


def command_export(args):
    from .export import export_model, export_path, record_path
    from .inspection import check_classifier, check_image_model, load_model

    if args.images is not None and args.images < 1:
        raise CnnlabError(f"--images must be at least 1, not {args.images}")
    model = check_image_model(load_model(args.model, safe_mode=not args.unsafe, compile=False), args.model,
                              looked_inside=False)
    _, data = model_data(args, model)
    check_classifier(model, len(data.class_names), args.model)
    count = min(args.images or len(data.x_test), len(data.x_test))
    check = export_model(model, args.format, args.out or export_path(args.model, args.format),
                         verify_with=(data.x_test[:count], data.y_test[:count]))
    pixels = check["input"]
    print(f"Exported: {check['path']} ({check['size_bytes'] / 1e6:.2f} MB); it takes float32 "
          f"{tuple(pixels['shape'])} images in {pixels['pixels']} ({pixels['why']})")
    print(f"Verified with {check['runtime']} on {check['images']:,} test images of {data.name}: max abs difference "
          f"of probabilities {check['max_abs_difference']:.2g}, top-1 agreement {check['top1_agreement']:.2%}, "
          f"accuracy {check['exported_accuracy']:.2%} (Keras: {check['keras_accuracy']:.2%})")
    print(f"Check: {record_path(check['path'])}")


def command_tune(args):
    overrides = {name: getattr(args, name, None) for name in FIELDS}
    from .tune import space  # the extra's one-line error, and a bad --space, before Keras starts

    if args.space:
        from .config import known_image_size

        config = training_config(args)
        space.check_space(space.read_space(args.space), config, known_image_size(config), f"--space {args.space}")
    import_keras_quietly()
    from . import tune

    tune(args.trials, args.out, args.workers, args.storage, args.space, args.pruner, args.startup_trials,
         config_file=args.config, **overrides)


COMMANDS = {
    "run": command_run, "train": command_run, "build": command_build, "data": command_data,
    "evaluate": command_evaluate, "inspect": command_inspect, "explain": command_explain,
    "report": command_report,
    "compare": command_compare, "predict": command_predict, "serve": command_serve,
    "export": command_export,
    "tune": command_tune,
}


def import_keras_quietly():
    """Import Keras, and so its backend, with TensorFlow's start-up INFO lines left out of stderr when
    TF_CPP_MIN_LOG_LEVEL asks for that (TensorFlow 2.21 prints them regardless). Every other line the import writes
    is passed on, in order: a real failure still shows."""
    if "keras" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0") in ("", "0"):
        import keras  # noqa: F401

        return
    with tempfile.TemporaryFile() as captured:  # a file, not a pipe: the import's output cannot fill it and block
        sys.stderr.flush()
        stderr = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(stderr, 2)
            os.close(stderr)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not TF_START_UP_LINE.match(line.rstrip("\n"))))


# The Python API's names that are not the flags' own (store_true flags and BooleanOptionalActions come from the parser)
API_SPELLINGS = {"allow_download=True": "--download", "safe_mode=False": "--unsafe"}
API_COMMANDS = {"run": "run", "train_run": "train"}  # errors.resume_call's functions, as the commands that do the same
# a setting as a Python caller writes it, not inside a path nor as a call's keyword (Layer(name=...) in a Keras error)
SETTING = re.compile(r"(?<![\w./\\(-])([a-z][a-z0-9_]*)=('[^']*'|\"[^\"]*\"|[^\s,;:)]+)?")
RESUME_CALL = re.compile(r"cnnlab\.(run|train_run)\(cnnlab\.resume_config\(('[^']*'|\"[^\"]*\")\), resume=\2\)")


@functools.cache
def flag_table() -> dict:
    """{Python spelling: flag} from the parser: data_dir -> --data-dir, batch_norm=False -> --no-batch-norm,
    allow_download=True -> --download."""
    table, parsers = dict(API_SPELLINGS), [build_parser()]
    for parser in parsers:
        for action in parser._actions:  # argparse has no public list of a parser's actions
            if isinstance(action, argparse._SubParsersAction):
                parsers.extend(action.choices.values())
            flags = [option for option in action.option_strings if option.startswith("--")]
            if not flags or action.dest == "help":
                continue
            if isinstance(action, argparse.BooleanOptionalAction):
                table.setdefault(f"{action.dest}=True", flags[0])
                table.setdefault(f"{action.dest}=False", flags[1])
            elif isinstance(action, argparse._StoreTrueAction):
                table.setdefault(f"{action.dest}=True", flags[0])
            else:
                table.setdefault(action.dest, flags[0])
    return table


def unquoted(value: str) -> str:
    """'runs/a' (a Python string in a message) -> runs/a; a bare word (DIR, 6) as it is."""
    return ast.literal_eval(value) if value[0] in "'\"" else value


def flag_spelling(message: str) -> str:
    """An error told to a Python caller (`data_dir=`, `image_size='28x28'`, `cnnlab.run(...resume=...)`) as the CLI
    spells it (`--data-dir`, `--image-size 28x28`, `cnnlab run --resume RUN_DIR`); other text is left as it is."""
    table = flag_table()

    def setting(match):
        name, value = match.groups()
        if f"{name}={value}" in table:  # a boolean flag
            return table[f"{name}={value}"]
        if name not in table or value in ("True", "False"):  # not a flag, or a Python-only setting
            return match.group(0)
        if value is None:
            return table[name]
        return f"{table[name]} {shlex.quote(unquoted(value))}"

    message = RESUME_CALL.sub(lambda m: f"cnnlab {API_COMMANDS[m[1]]} --resume {shlex.quote(unquoted(m[2]))}",
                              message)
    return SETTING.sub(setting, message)


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.command not in ("run", "train", "build", "tune"):  # those check their settings first, before any import
            import_keras_quietly()
        status = COMMANDS[args.command](args)
    except AlreadyComplete as e:  # a retried resume: nothing to do is success
        print(f"cnnlab: {flag_spelling(str(e))}")
        return 0
    except CnnlabError as e:
        if isinstance(e, TrainingInterrupted):
            print(f"cnnlab: {flag_spelling(str(e))}", file=sys.stderr)
            return EXIT_INTERRUPTED
        if not getattr(args, "quiet", False):
            print(f"cnnlab: error: {flag_spelling(str(e))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OSError, MemoryError) as e:
        print(f"cnnlab: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    return status or 0
