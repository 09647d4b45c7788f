"""The seed notebook's MNIST script (../shared/seed/*.txt), as faithful as it can be run here.

Changed, and only this: `keras.datasets.mnist.load_data()` reads the local IDX files instead of downloading,
matplotlib draws off screen (the figures go to --out instead of windows), `metrics='accuracy'` becomes
`metrics=['accuracy']` (Keras 3 refuses a bare string), the feature-map models are rebuilt layer by layer
(Keras 3 has no `.input` for a Sequential loaded from .h5), Keras 3's own `keras` where TensorFlow is not installed
(a GPU machine with JAX), and `--epochs`, `--batch-size`, `--train-only`, `--timing` let the benchmarks run a part
of it and time it. Everything that trains is the notebook's line
for line: float64 inputs, batch 32, Adam, ModelCheckpoint('best_model.h5'), EarlyStopping(patience=2).

    python benchmarks/peers/seed_script.py --data-dir ../shared/datasets/mnist
"""

import argparse
import gzip
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ for the timer

import matplotlib  # noqa: E402

matplotlib.use("Agg")  # no windows: plt.show() becomes a no-op, the figures are saved instead

import numpy as np  # noqa: E402


def load_data(data_dir):
    """keras.datasets.mnist.load_data(), from the four IDX files in `data_dir` (.gz or raw)."""
    def read(stem, offset):
        path = next(p for p in (Path(data_dir) / (stem + ".gz"), Path(data_dir) / stem) if p.exists())
        raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
        return np.frombuffer(raw, np.uint8, offset=offset)

    x_train = read("train-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    x_test = read("t10k-images-idx3-ubyte", 16).reshape(-1, 28, 28)
    return (x_train, read("train-labels-idx1-ubyte", 8)), (x_test, read("t10k-labels-idx1-ubyte", 8))


def upto(model, index):
    """Keras 3 cannot take `.input` of a Sequential loaded from .h5 (never called): the same model, rebuilt."""
    from tensorflow import keras

    x = image = keras.Input((28, 28, 1))
    for layer in model.layers[:index + 1]:
        x = layer(x)
    return keras.Model(image, x)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[3] / "shared/datasets/mnist"))
    parser.add_argument("--epochs", type=int, default=20, help="the notebook's 20 (early stopping ends it sooner)")
    parser.add_argument("--batch-size", type=int, default=32, help="the notebook's 32 (Keras's default)")
    parser.add_argument("--train-only", action="store_true", help="stop after training (skip plots and feature maps)")
    parser.add_argument("--timing", metavar="JSON", help="write per-epoch timings (and test accuracy) here")
    parser.add_argument("--test-each-epoch", action="store_true", help="score the test set after each epoch (untimed)")
    parser.add_argument("--out", default=".", help="folder for best_model.h5 and the figures (.)")
    args = parser.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    data_dir = Path(args.data_dir).resolve()  # before the chdir below
    os.chdir(args.out)

    # ---- the notebook, from here on
    import matplotlib.pyplot as plt
    np.random.seed(42)
    try:
        import tensorflow as tf
        from tensorflow import keras
        tf.random.set_seed(42)
    except ImportError:  # not in the notebook: a GPU machine with JAX and no TensorFlow runs Keras 3 itself
        import keras
        keras.utils.set_random_seed(42)
    from sklearn.model_selection import train_test_split
    (x_data, y_data), (t_x_data, t_y_data) = load_data(data_dir)

    # 1. the model
    x_data = x_data.reshape(-1, 28, 28, 1) / 255.0
    tt_x = t_x_data.reshape(-1, 28, 28, 1) / 255.0
    tt_y = t_y_data
    t_x, v_x, t_y, v_y = train_test_split(x_data, y_data, test_size=0.2, random_state=42)

    m = keras.Sequential()
    m.add(keras.layers.Conv2D(32, kernel_size=3, activation='relu', padding='same', input_shape=(28, 28, 1)))
    m.add(keras.layers.MaxPool2D(2))
    m.add(keras.layers.Conv2D(64, kernel_size=(3, 3), activation='relu', padding='same'))
    m.add(keras.layers.MaxPool2D(2))
    m.add(keras.layers.Flatten())
    m.add(keras.layers.Dense(100, activation='relu'))
    m.add(keras.layers.Dropout(0.4))
    m.add(keras.layers.Dense(10, activation='softmax'))
    m.compile(loss='sparse_categorical_crossentropy', optimizer='adam', metrics=['accuracy'])  # Keras 3 wants a list
    m.summary()

    # 2. training: keep the best model, stop early
    ck_p = keras.callbacks.ModelCheckpoint('best_model.h5', save_best_only=True)
    e_st = keras.callbacks.EarlyStopping(patience=2, restore_best_weights=True)
    callbacks = [ck_p, e_st]
    if args.timing:  # the benchmarks' stopwatch (not in the notebook)
        from common import EpochTimer

        callbacks.append(EpochTimer(tt_x, tt_y) if args.test_each_epoch else EpochTimer())
    hy = m.fit(t_x, t_y, epochs=args.epochs, validation_data=(v_x, v_y), callbacks=callbacks,
               batch_size=args.batch_size)  # the notebook leaves it at Keras's default, 32
    if args.timing:
        callbacks[-1].write(args.timing, peer="seed script", batch_size=args.batch_size, train_images=len(t_x))
    if args.train_only:
        return

    # 3. plots
    plt.plot(hy.history['loss'])
    plt.plot(hy.history['val_loss'])
    plt.xlabel('epoch')
    plt.ylabel('loss')
    plt.legend(['train', 'val'])
    plt.savefig('loss.png')
    plt.show()
    m.evaluate(v_x, v_y)

    end = list(np.unique(y_data))
    y_l = m.predict(tt_x)
    for i in range(len(y_l[100])):
        print(end[np.argmax(y_l[i:i + 1])])
        plt.imshow(tt_x[i].reshape(28, 28), cmap='gray_r')
        plt.show()

    # 4. the saved model, its filters and feature maps
    m_ck = keras.models.load_model('best_model.h5')
    w1 = m_ck.layers[0].weights[0].numpy()
    w2 = m_ck.layers[2].weights[0].numpy()
    fig, axs = plt.subplots(2, 16, figsize=(15, 2))
    for i in range(2):
        for j in range(16):
            axs[i, j].imshow(w1[:, :, 0, i * 16 + j])
            axs[i, j].axis('off')
    fig.savefig('filters_1.png')
    fig, axs = plt.subplots(4, 16, figsize=(15, 2))
    for i in range(4):
        for j in range(16):
            axs[i, j].imshow(w2[:, :, 0, i * 16 + j])
            axs[i, j].axis('off')
    fig.savefig('filters_2.png')
    plt.imshow(t_x_data[0], cmap='gray_r')

    cov_act1 = upto(m_ck, 0)  # the notebook: keras.Model(m_ck.input, m_ck.layers[0].output)
    f1_map = cov_act1.predict(tt_x[0:1])
    fig, axs = plt.subplots(4, 8, figsize=(15, 8))
    for i in range(4):
        for j in range(8):
            axs[i, j].imshow(f1_map[0, :, :, i * 8 + j])
            axs[i, j].axis('off')
    fig.savefig('feature_maps_1.png')
    cov_act2 = upto(m_ck, 2)  # the notebook: keras.Model(m_ck.input, m_ck.layers[2].output)
    f2_map = cov_act2.predict(tt_x[0:1])
    fig, axs = plt.subplots(8, 8, figsize=(12, 12))
    for i in range(8):
        for j in range(8):
            axs[i, j].imshow(f2_map[0, :, :, i * 8 + j])
            axs[i, j].axis('off')
    fig.savefig('feature_maps_2.png')
    plt.show()


if __name__ == "__main__":
    main()
