"""The seed network trained the plain Keras way on a folder of class folders: the peer of cnnlab in colour_peer.py.

    python benchmarks/peers/colour_keras.py FOLDER [--epochs 20] [--seed 42] [--image-size 32] [--result JSON]

FOLDER holds train/ and test/, each of class folders. What a user writes from Keras's and TensorFlow's guides:
image_dataset_from_directory (colour, batch 32, validation_split 0.2 with the seed), the training batches
.cache().shuffle(1000).prefetch(AUTOTUNE) and the others .cache().prefetch(AUTOTUNE), as TensorFlow's
image-classification tutorial does, Rescaling(1/255) in the model, then the seed network and its training:
Conv2D(32, 3, relu, same), MaxPool, Conv2D(64, 3, relu, same), MaxPool, Flatten, Dense(100, relu), Dropout(0.4),
Dense(classes, softmax); Adam 1e-3, batch 32, EarlyStopping(patience=2, restore_best_weights=True) on the validation
loss. Then its accuracy on test/.
"""

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--result", metavar="JSON", help="write test accuracy and seconds here")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(args.seed)
    started = time.perf_counter()
    size, folder = (args.image_size, args.image_size), Path(args.folder)
    train, val = keras.utils.image_dataset_from_directory(folder / "train", image_size=size, batch_size=32,
                                                          validation_split=0.2, subset="both", seed=args.seed)
    test = keras.utils.image_dataset_from_directory(folder / "test", image_size=size, batch_size=32, shuffle=False)
    classes = len(train.class_names)
    train = train.cache().shuffle(1000, seed=args.seed).prefetch(tf.data.AUTOTUNE)
    val, test = (ds.cache().prefetch(tf.data.AUTOTUNE) for ds in (val, test))

    model = keras.Sequential([
        keras.Input((*size, 3)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(32, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu", padding="same"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(100, activation="relu"),
        keras.layers.Dropout(0.4),
        keras.layers.Dense(classes, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    fit_started = time.perf_counter()
    history = model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[stop], verbose=2)
    fit_seconds = time.perf_counter() - fit_started
    _, test_accuracy = model.evaluate(test, verbose=0)
    losses = history.history["val_loss"]
    result = {"peer": "plain Keras", "test_accuracy": float(test_accuracy), "fit_seconds": fit_seconds,
              "total_seconds": time.perf_counter() - started, "epochs_run": len(losses),
              "best_epoch": losses.index(min(losses)) + 1, "val_loss": min(losses)}
    print(f"Test accuracy {test_accuracy:.2%}; fit {fit_seconds:.1f} s, {len(losses)} epochs")
    if args.result:
        Path(args.result).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
