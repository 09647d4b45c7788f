"""Figures: arrays in, a matplotlib Figure out. Saving or showing it is the caller's choice.

Figures are made without pyplot, so they hold no global state: safe in a server thread, freed when the last
reference goes, and in a notebook they display as the cell's value (`Figure._repr_png_`).
"""

import io
import math

import matplotlib.figure
import numpy as np
from matplotlib import colormaps

from .data.dataset import DIGIT_STYLE, PHOTO_STYLE

MISTAKE = "#d62728"
CORRECT = "#1f1f1f"


class Figure(matplotlib.figure.Figure):
    """A matplotlib Figure that draws itself as a PNG in Jupyter: a bare Figure shows as text
    (`<Figure size 1000x380 with 2 Axes>`) until pyplot or `%matplotlib inline` has taught IPython to draw Figures.

        cnnlab.plots.learning_curves(run_dir.read_history())   # the last line of a cell: the plot, inline
    """

    def _repr_png_(self):
        png = io.BytesIO()
        self.savefig(png, format="png", bbox_inches="tight")
        return png.getvalue()


def shown_image(image, style=DIGIT_STYLE) -> np.ndarray:
    """An (H, W, C) or (H, W) image in [0, 1] as the figures draw it, 1 being white: colour as RGB (H, W, 3), grey
    as (H, W): a digit (`style` "digits", white ink on black) inverted to dark ink on white as printed, a grey photo
    as it is (inverted, it would look like a negative)."""
    if style not in (DIGIT_STYLE, PHOTO_STYLE):
        raise ValueError(f"style must be {DIGIT_STYLE!r} or {PHOTO_STYLE!r}, not {style!r}")
    image = np.clip(np.asarray(image, np.float64), 0, 1)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[-1] == 3:
        return image
    if image.ndim != 2:
        raise ValueError(f"an image must be (H, W), (H, W, 1) or (H, W, 3), not {image.shape}")
    return 1 - image if style == DIGIT_STYLE else image


def draw_image(ax, image, style=DIGIT_STYLE):
    """`image` drawn on `ax` as `shown_image` makes it (the grey map only applies to a grey image)."""
    return ax.imshow(shown_image(image, style), cmap="gray", vmin=0, vmax=1)


def _bare(ax):
    """An axes with no ticks and no frame, that still shows its labels."""
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _height_per_width(images) -> float:
    """Height over width of (N, H, W, ...) images: figures size their cells by it, for images of any shape."""
    return images.shape[1] / images.shape[2]


def learning_curves(history, best_epoch=None, monitor="val_loss") -> Figure:
    """Loss and accuracy per epoch, train vs validation, with the best epoch marked. `history` maps columns to
    per-epoch values: a run's history.csv, or Keras's `History.history`. An ensemble's history (with a `member`
    column) gets a train and a validation curve per network, and `best_epoch` one epoch per network. The History
    object that fit returns is taken too."""
    history = getattr(history, "history", history)
    metrics = [metric for metric in ("loss", "accuracy") if metric in history]
    if not metrics:
        raise ValueError(f"history has no 'loss' or 'accuracy' column, only {sorted(history)}")
    fig = Figure(figsize=(5 * len(metrics), 3.8), layout="constrained")
    epochs = np.asarray(history["epoch"]) if "epoch" in history else np.arange(1, len(history[metrics[0]]) + 1)
    members = np.asarray(history["member"]) if "member" in history else np.ones(len(epochs))
    networks = list(dict.fromkeys(members.tolist()))
    best_epochs = best_epoch if isinstance(best_epoch, (list, tuple)) else [best_epoch]
    networks_at = {}  # best epoch -> the networks whose best it is
    for k, epoch in enumerate(best_epochs, start=1):
        if epoch:
            networks_at.setdefault(epoch, []).append(k)
    for ax, metric in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        for network in networks:
            rows = members == network
            which = f" (network {network:g})" if len(networks) > 1 else ""
            ax.plot(epochs[rows], np.asarray(history[metric])[rows], "o-", label=f"train{which}")
            if f"val_{metric}" in history:
                ax.plot(epochs[rows], np.asarray(history[f"val_{metric}"])[rows], "o-", label=f"validation{which}")
        for epoch, whose in networks_at.items():
            which = f", network{'s' * (len(whose) > 1)} {' and '.join(map(str, whose))}" if len(best_epochs) > 1 else ""
            ax.axvline(epoch, color="grey", linestyle="--", label=f"best epoch ({epoch}{which}, by {monitor})")
        ax.set(xlabel="epoch", ylabel=metric, title=metric.capitalize())
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def prediction_grid(images, y_true, probabilities, class_names, columns=8, title=None, style=DIGIT_STYLE) -> Figure:
    """(N, H, W, C) images with predicted label, its probability and the true label; mistakes in red. `style` is the
    dataset's, for grey images (see `shown_image`)."""
    images = np.asarray(images)
    n = len(images)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(columns * 1.45, rows * (1.45 * _height_per_width(images) + 0.3)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    predicted = np.argmax(probabilities, axis=1)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        draw_image(ax, images[i], style)
        wrong = predicted[i] != y_true[i]
        ax.set_title(f"{class_names[predicted[i]]} {probabilities[i, predicted[i]]:.0%}\ntrue: {class_names[y_true[i]]}",
                     fontsize=8, color=MISTAKE if wrong else CORRECT)
        if wrong:
            ax.axis("on")
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(MISTAKE)
                spine.set_linewidth(2)
    if title:
        fig.suptitle(title)
    return fig


def image_grid(images, title=None, columns=8, cmap="viridis") -> Figure:
    """A grid of small images (filters or feature maps), one colour scale for all, with a colour bar."""
    images = np.asarray(images)
    n = len(images)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(columns * 1.1 + 0.8, rows * 1.1 * _height_per_width(images) + (0.5 if title else 0.1)),
                 layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    vmin, vmax = float(images.min()), float(images.max()) or 1.0
    shown = None
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            shown = ax.imshow(images[i], cmap=cmap, vmin=vmin, vmax=vmax)
    fig.colorbar(shown, ax=axes.tolist(), shrink=0.8, pad=0.01)
    if title:
        fig.suptitle(title)
    return fig


def trained_vs_untrained(trained, untrained, layer_name, caption) -> Figure:
    """Trained filters above the same layer freshly initialised, on one shared symmetric scale.

    Filters are (n, kh, kw) images, or (n, kh, kw, 3) for a colour model's first layer: each of those is drawn as
    one colour image (its weights for the input's R, G and B as a colour, zero grey), with its R, G and B weights
    in the rows below it, so that both what colour a filter looks for and how strongly show.
    """
    trained, untrained = np.asarray(trained), np.asarray(untrained)
    colour = trained.ndim == 4
    if colour and trained.shape[-1] != 3:
        raise ValueError(f"colour filters must be (n, kh, kw, 3), not {trained.shape}")
    row_names = ("RGB", "R", "G", "B") if colour else ("",)
    n = len(trained)
    columns = min(16, n)
    bands = math.ceil(n / columns)
    rows = bands * len(row_names)
    limit = float(max(np.abs(trained).max(), np.abs(untrained).max())) or 1.0
    fig = Figure(figsize=(columns * 0.7 + 1, 2 * rows * 0.7 + 1.2), layout="constrained")
    subfigs = fig.subfigures(2, 1)
    for sub, images, label in zip(subfigs, (trained, untrained), ("trained", "untrained (fresh initialisation)")):
        axes = sub.subplots(rows, columns, squeeze=False)
        for i in range(bands * columns):
            band, column = divmod(i, columns)
            for row, name in enumerate(row_names):
                ax = axes[band * len(row_names) + row, column]
                _bare(ax)
                if column == 0:
                    ax.set_ylabel(name, fontsize=8)
                if i >= n:
                    ax.axis("off")
                elif name == "RGB":
                    ax.imshow(np.clip(0.5 + images[i] / (2 * limit), 0, 1))
                else:
                    weights = images[i][..., row - 1] if colour else images[i]
                    shown = ax.imshow(weights, cmap="RdBu_r", vmin=-limit, vmax=limit)
        sub.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.8, pad=0.01)
        sub.suptitle(f"{layer_name} {label}", fontsize=10)
    fig.suptitle(f"{layer_name}: {n} filters ({caption})", fontsize=11)
    return fig


def feature_maps_figure(maps, layer_name, columns=8) -> Figure:
    """One panel per channel of a (h, w, channels) activation."""
    maps = np.asarray(maps)
    return image_grid(np.moveaxis(maps, -1, 0), columns=columns, cmap="viridis",
                      title=f"{layer_name}: {maps.shape[-1]} feature maps, {maps.shape[0]}x{maps.shape[1]}")


def input_figure(image, title, style=DIGIT_STYLE) -> Figure:
    """The (H, W, C) image whose feature maps are shown, as the other figures draw it."""
    image = np.asarray(image)
    fig = Figure(figsize=(2.2, 2.2 * _height_per_width(image[None]) + 0.3), layout="constrained")
    ax = fig.subplots()
    draw_image(ax, image, style)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    return fig


def confusion_matrix_figure(counts, shares, class_names) -> Figure:
    """Counts beside each true class's shares (rows sum to 100%): where the mistakes are, and how much they weigh."""
    counts, shares = np.asarray(counts), np.asarray(shares)
    n = len(class_names)
    side = max(3.5, 0.42 * n + 1.6)
    fig = Figure(figsize=(2 * side + 1.2, side), layout="constrained")
    long_names = max(len(str(name)) for name in class_names) > 2
    panels = ((counts, "Counts", lambda v: f"{int(v)}"),
              (shares, "Share of each true class", lambda v: f"{v:.0%}" if v >= 0.01 else "<1%"))
    for ax, (values, title, label) in zip(fig.subplots(1, 2), panels):
        shown = ax.imshow(values, cmap="Blues", vmin=0)
        threshold = values.max() / 2
        for (i, j), value in np.ndenumerate(values):
            if value:
                ax.text(j, i, label(value), ha="center", va="center", fontsize=7,
                        color="white" if value > threshold else "black")
        ax.set_xticks(range(n), [str(name) for name in class_names], rotation=45 if long_names else 0,
                      ha="right" if long_names else "center", fontsize=8)
        ax.set_yticks(range(n), [str(name) for name in class_names], fontsize=8)
        ax.set(xlabel="predicted class", ylabel="true class", title=title)
        fig.colorbar(shown, ax=ax, shrink=0.8)
    return fig


def per_class_scores_figure(class_names, precision, recall, f1) -> Figure:
    """Precision, recall and F1 per class as bars, in the order given (the first class on top)."""
    n = len(class_names)
    fig = Figure(figsize=(5.5, 0.32 * n + 1.2), layout="constrained")
    ax = fig.subplots()
    rows = np.arange(n)
    for offset, (values, label) in zip((-0.27, 0, 0.27), ((precision, "precision"), (recall, "recall"), (f1, "F1"))):
        ax.barh(rows + offset, values, height=0.27, label=label)
    ax.set_yticks(rows, [str(name) for name in class_names])
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="score")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncols=3, fontsize=8, frameon=False)
    return fig


def _heat_overlay(ax, image, heat, cmap="jet", style=DIGIT_STYLE):
    """A heat map drawn over an image, opaque where the heat is high, transparent where it is zero."""
    draw_image(ax, image, style)
    heat = np.clip(np.asarray(heat, np.float64), 0, 1)
    return ax.imshow(heat, cmap=cmap, vmin=0, vmax=1, alpha=0.8 * heat)


def explanation_grid(images, cams, saliencies, titles, wrong, columns=8, style=DIGIT_STYLE) -> Figure:
    """Per (H, W, C) image a column of three: the input, its Grad-CAM and its saliency map overlaid; mistakes in
    red. `style` is the dataset's, for grey images (see `shown_image`)."""
    images = np.asarray(images)
    n = len(images)
    columns = min(columns, n)
    bands = math.ceil(n / columns)
    fig = Figure(figsize=(columns * 1.35 + 1.4, bands * (3 * 1.3 * _height_per_width(images) + 0.4)),
                 layout="constrained")
    axes = fig.subplots(3 * bands, columns, squeeze=False)
    row_names = ("input", "Grad-CAM", "saliency")
    shown = None
    for i in range(bands * columns):
        band, column = divmod(i, columns)
        for row in range(3):
            ax = axes[3 * band + row, column]
            _bare(ax)
            if column == 0:
                ax.set_ylabel(row_names[row], fontsize=9)
            if i >= n:
                ax.axis("off")
                continue
            if row == 0:
                draw_image(ax, images[i], style)
                ax.set_title(titles[i], fontsize=8, color=MISTAKE if wrong[i] else CORRECT)
            else:
                shown = _heat_overlay(ax, images[i], (cams, saliencies)[row - 1][i], style=style)
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.5, pad=0.01, label="importance (0 to 1)")
    return fig


MOSAIC_PIXELS = 600  # data pixels across a feature map mosaic before it wraps into another band


def mosaic(tiles, rows, columns, blank=np.nan):
    """Tiles (k, h, w) or (k, h, w, 3) laid out row by row with one `blank` pixel between them (NaN: a colour
    map's "bad" colour; 1: white in a shown image)."""
    tiles = np.asarray(tiles, np.float64)
    h, w = tiles.shape[1:3]
    out = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1, *tiles.shape[3:]), blank)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = tile
    return out


def feature_maps_by_class(inputs, maps, row_labels, layer_name, style=DIGIT_STYLE) -> Figure:
    """One row per (H, W, C) input image, one column per channel of a layer's (n, h, w, channels) activations.

    Each channel is scaled to its own largest value over all rows, so reading down a column compares how
    strongly that channel responds to each input. `style` is the dataset's, for grey inputs (see `shown_image`).
    """
    inputs = np.stack([shown_image(image, style) for image in inputs])
    input_height = inputs.shape[1]
    maps = np.asarray(maps, np.float64)
    n, h, w, channels = maps.shape
    top = np.abs(maps).max(axis=(0, 1, 2))
    scaled = np.moveaxis(maps / np.where(top > 0, top, 1), -1, 1)  # (n, channels, h, w)
    bands = math.ceil(channels * (w + 1) / MOSAIC_PIXELS)
    per_band = math.ceil(channels / bands)
    width = 13.0
    band_height = width * n * (h + 1) / ((per_band + 1) * (w + 1))
    fig = Figure(figsize=(width, bands * band_height + 0.8), layout="constrained")
    axes = fig.subplots(bands, 2, squeeze=False, width_ratios=[1, per_band])
    maps_cmap = colormaps["viridis"].with_extremes(bad="white")
    for band, (input_ax, maps_ax) in enumerate(axes):
        first, last = band * per_band, min(channels, (band + 1) * per_band)
        input_ax.imshow(mosaic(inputs, n, 1, blank=1.0), cmap="gray", vmin=0, vmax=1)
        input_ax.set_yticks([r * (input_height + 1) + (input_height - 1) / 2 for r in range(n)],
                            [str(label) for label in row_labels], fontsize=8)
        input_ax.set_xticks([])
        input_ax.set_title("input", fontsize=8)
        shown = maps_ax.imshow(mosaic(scaled[:, first:last].reshape(-1, h, w), n, last - first),
                               cmap=maps_cmap, vmin=0 if scaled.min() >= 0 else -1, vmax=1, aspect="equal")
        step = 8 if last - first > 16 else 1
        maps_ax.set_xticks([(c - first) * (w + 1) + (w - 1) / 2 for c in range(first, last, step)],
                           [str(c) for c in range(first, last, step)], fontsize=7)
        maps_ax.set_yticks([])
        maps_ax.set_title(f"channels {first}-{last - 1}", fontsize=8)
        for ax in (input_ax, maps_ax):
            for spine in ax.spines.values():
                spine.set_visible(False)
    fig.colorbar(shown, ax=axes[:, 1].tolist(), shrink=0.6, pad=0.01, label="share of the channel's maximum")
    fig.suptitle(f"{layer_name}: {channels} feature maps of {h}x{w} for each input", fontsize=11)
    return fig


def preprocessing_figure(original, model_input, top, title) -> Figure:
    """An image as read beside the (H, W, C) input made from it (for a digit-style model white ink on black, as
    MNIST), drawn as the model sees it, and its top classes.

    `top` is [(class name, probability)], most probable first.
    """
    fig = Figure(figsize=(8, 2.8), layout="constrained")
    ax_read, ax_input, ax_top = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    ax_read.imshow(original, cmap="gray", vmin=0, vmax=1)
    ax_read.set_title("as read", fontsize=9)
    model_input = np.asarray(model_input)
    ax_input.imshow(model_input.squeeze(), cmap="gray", vmin=0, vmax=1)
    ax_input.set_title(f"model input ({model_input.shape[0]}x{model_input.shape[1]})", fontsize=9)
    for ax in (ax_read, ax_input):
        ax.set_xticks([]), ax.set_yticks([])
    names, probabilities = zip(*top)
    rows = np.arange(len(top))
    ax_top.barh(rows, probabilities, color=["#1f77b4"] + ["#9ecae1"] * (len(top) - 1))
    ax_top.set_yticks(rows, [str(n) for n in names])
    ax_top.invert_yaxis()
    ax_top.set_xlim(0, 1.15)
    ax_top.set_title(f"top {len(top)}", fontsize=9)
    for row, p in zip(rows, probabilities):
        ax_top.text(p + 0.02, row, f"{p:.1%}", va="center", fontsize=8)
    ax_top.spines[["top", "right"]].set_visible(False)
    fig.suptitle(title, fontsize=10)
    return fig


def maximized_patterns(trained, untrained, layer_name, labels=None, units="filters", style=DIGIT_STYLE) -> Figure:
    """The (n, H, W, C) input patterns that excite each filter (or class) of a layer most, of the trained model above
    those of the same model freshly initialised (`untrained`; None: the trained ones alone): what training taught each
    filter to look for. Drawn as the inputs are (`style`, see `shown_image`), as one mosaic each (one image, not n
    axes: fast for 64 filters). `labels` name the `units` of a one-row mosaic (default: their numbers); a larger one
    numbers its columns and the first of each row."""
    panels = [(np.asarray(trained), "trained")]
    if untrained is not None:
        panels.append((np.asarray(untrained), "untrained (fresh initialisation)"))
    n, h, w = panels[0][0].shape[:3]
    columns = min(16, n)
    rows = math.ceil(n / columns)
    labels = [str(k) for k in range(n)] if labels is None or rows > 1 else [str(label) for label in labels]
    width = min(13.0, columns * 0.8 + 1.0)
    band = width * rows * (h + 1) / (columns * (w + 1))
    fig = Figure(figsize=(width, len(panels) * (band + 0.5) + 0.4), layout="constrained")
    for ax, (images, label) in zip(np.atleast_1d(fig.subplots(len(panels), 1)), panels):
        tiles = np.stack([shown_image(image, style) for image in images])
        ax.imshow(mosaic(tiles, rows, columns, blank=1.0), cmap="gray", vmin=0, vmax=1)
        ax.set_xticks([c * (w + 1) + (w - 1) / 2 for c in range(columns)], labels[:columns], fontsize=7)
        ax.set_yticks([r * (h + 1) + (h - 1) / 2 for r in range(rows)],
                      [f"{r * columns}+" for r in range(rows)] if rows > 1 else [], fontsize=7)
        ax.tick_params(length=0)
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_title(f"{layer_name} {label}", fontsize=9)
    fig.suptitle(f"{layer_name}: the input each of its {n} {units} responds to most", fontsize=11)
    return fig


def attribution_grid(images, heats, titles, wrong=None, style=DIGIT_STYLE) -> Figure:
    """One row per (H, W, C) image: the input, then each method's (H, W) map over it, side by side. `heats` maps a
    method's name to its (N, H, W) maps; each map is scaled to its own largest magnitude. Maps with negative values
    (Integrated Gradients, occlusion) are drawn red for evidence for the class and blue against it; the others red
    for important. Titles of `wrong` predictions in red."""
    images = np.asarray(images)
    n, names = len(images), list(heats)
    wrong = np.zeros(n, bool) if wrong is None else np.asarray(wrong)
    cell = 1.5
    fig = Figure(figsize=(cell * (len(names) + 1) + 0.4, n * (cell * _height_per_width(images) + 0.45) + 0.3),
                 layout="constrained")
    axes = fig.subplots(n, len(names) + 1, squeeze=False)
    for i in range(n):
        _bare(axes[i, 0])
        draw_image(axes[i, 0], images[i], style)
        axes[i, 0].set_title(titles[i], fontsize=8, color=MISTAKE if wrong[i] else CORRECT)
        for ax, name in zip(axes[i, 1:], names):
            _bare(ax)
            heat = np.nan_to_num(np.asarray(heats[name][i], np.float64))
            scale = np.abs(heat).max() or 1.0
            if heat.min() < 0:
                draw_image(ax, images[i], style)
                ax.imshow(heat / scale, cmap="RdBu_r", vmin=-1, vmax=1, alpha=np.clip(0.85 * np.abs(heat) / scale, 0, 1))
            else:
                _heat_overlay(ax, images[i], heat / scale, style=style)
            if i == 0:
                ax.set_title(name, fontsize=9)
    return fig


def faithfulness_curves(fractions, deletion, insertion) -> Figure:
    """Deletion and insertion curves side by side: the class probability (one curve per method, `deletion` and
    `insertion` map its name to the mean curve) as the share `fractions` of the most important pixels is removed
    from the input, or added to a blank one; the area under each curve is in the legend."""
    fractions = np.asarray(fractions, np.float64)
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    for ax, curves, title in zip(fig.subplots(1, 2), (deletion, insertion),
                                 ("Deletion: most important pixels removed first (lower is better)",
                                  "Insertion: most important pixels added first (higher is better)")):
        for name, curve in curves.items():
            curve = np.asarray(curve, np.float64)
            area = float(((curve[1:] + curve[:-1]) / 2 * np.diff(fractions)).sum())
            ax.plot(fractions, curve, "--" if name == "random" else "-", label=f"{name} ({area:.2f})")
        ax.set(xlabel="share of pixels", ylabel="class probability", title=title, ylim=(0, 1.02), xlim=(0, 1))
        ax.title.set_fontsize(9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig
