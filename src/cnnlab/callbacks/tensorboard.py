"""TensorBoard: event files in RUN_DIR/tensorboard/, for those who watch training there.

Keras's own `keras.callbacks.TensorBoard` writes what it knows (train/ and validation/: the epoch scalars, the
learning rate, the weight histograms); `EpochImages` adds what a cnnlab user looks at, per epoch (images/): the
confusion matrix on fixed images, the first conv layer's filters and every conv layer's feature maps of the first
of those images. Both write with TensorFlow's summary writer (tf.summary, from the tensorboard package), whatever
the Keras backend: TensorFlow is installed with cnnlab, and its event files are what TensorBoard reads.

    callbacks = tensorboard_callbacks("runs/mine/tensorboard", x_val[:1000], y_val[:1000], class_names)
    model.fit(x, y, validation_data=(x_val, y_val), epochs=5, callbacks=callbacks)
    # then: tensorboard --logdir runs/mine/tensorboard
"""

from pathlib import Path

import keras
import numpy as np

from .. import plots
from ..distribution import predict as padded_predict
from ..errors import CnnlabError
from ..evaluation import as_images, confusion_matrix, normalise_rows, predict
from ..feeding import model_input, to_model
from ..inspection import conv_layers, feature_map_model, filter_images, output_list, trained_kernel

TENSORBOARD_IMAGES = 2000  # validation images the per-epoch confusion matrix counts: the first ones, a fixed set
TILE_IMAGE_WIDTH = 512  # pixels across a filters or feature maps image, about


def require_tensorboard():
    """tf.summary's image and histogram writers come with the tensorboard package, an optional dependency."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise CnnlabError("TensorBoard logging needs the tensorboard package: pip install 'cnnlab[tensorboard]'") \
            from None


def tensorboard_callbacks(log_dir, images, labels, class_names) -> list:
    """Keras's TensorBoard callback (scalars, learning rate, weight histograms each epoch) and `EpochImages` of
    `images` (N, H, W, C) in [0, 1] with their integer `labels`, all under `log_dir`."""
    require_tensorboard()
    log_dir = Path(log_dir)
    return [keras.callbacks.TensorBoard(log_dir=str(log_dir), histogram_freq=1, write_graph=False),
            EpochImages(log_dir / "images", images, labels, class_names)]


def figure_pixels(fig) -> np.ndarray:
    """A matplotlib Figure drawn as an (H, W, 3) uint8 image, without a PNG in between."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def tiles_image(tiles, columns=8, width=TILE_IMAGE_WIDTH) -> np.ndarray:
    """(k, h, w) filters or feature maps as one (H, W, 3) uint8 viridis image, one colour scale for all (as
    `plots.image_grid` draws them), each pixel repeated until the image is about `width` pixels wide: no matplotlib
    figure, which would cost most of an epoch's images."""
    from matplotlib import colormaps

    tiles = np.asarray(tiles, np.float64)
    columns = min(columns, len(tiles))
    grid = plots.mosaic(tiles, -(-len(tiles) // columns), columns)  # NaN between tiles: drawn black
    low, high = np.nanmin(grid), np.nanmax(grid)
    shown = colormaps["viridis"]((grid - low) / ((high - low) or 1.0))[..., :3]
    zoom = max(1, width // grid.shape[1])
    return np.uint8(np.round(255 * shown.repeat(zoom, axis=0).repeat(zoom, axis=1)))


class EpochImages(keras.callbacks.Callback):
    """Per epoch, as TensorBoard images (step = epoch, as Keras's scalars): `confusion_matrix` of the model's
    predictions for `images`, `filters/LAYER` of the first conv layer (their mean over the input channels for a
    colour image) and `feature_maps/LAYER` of `images[0]` for every conv layer, each on its own colour scale."""

    def __init__(self, log_dir, images, labels, class_names):
        super().__init__()
        self.log_dir, self.class_names = Path(log_dir), list(class_names)
        self.images, self.labels = as_images(images), np.asarray(labels, np.int64)
        self.writer = self.extractor = None

    def on_train_begin(self, logs=None):
        import tensorflow as tf  # TensorBoard's writer: this callback's job is TensorFlow event files

        self.writer = tf.summary.create_file_writer(str(self.log_dir))
        self.extractor, self.layer_names = feature_map_model(self.model) if conv_layers(self.model) else (None, [])

    def pictures(self, model) -> dict:
        """{tag: (H, W, 3) uint8 image} of the model as it is now."""
        predicted = predict(model, self.images).argmax(axis=1)
        counts = confusion_matrix(self.labels, predicted, len(self.class_names))
        pictures = {"confusion_matrix": figure_pixels(
            plots.confusion_matrix_figure(counts, normalise_rows(counts), self.class_names))}
        layers = conv_layers(model)
        if layers:
            pictures[f"filters/{layers[0].name}"] = tiles_image(filter_images(trained_kernel(layers[0]))[0])
            # through distribution.predict: one image does not split over several devices, a padded batch does
            maps = output_list(padded_predict(self.extractor, to_model(model_input(model), self.images[:1])))
            for name, layer_maps in zip(self.layer_names, maps):
                pictures[f"feature_maps/{name}"] = tiles_image(np.moveaxis(np.asarray(layer_maps[0]), -1, 0))
        return pictures

    def on_epoch_end(self, epoch, logs=None):
        import tensorflow as tf

        with self.writer.as_default():
            for tag, picture in self.pictures(self.model).items():
                tf.summary.image(tag, picture[None], step=epoch)
        self.writer.flush()

    def on_train_end(self, logs=None):
        if self.writer is not None:
            self.writer.close()
