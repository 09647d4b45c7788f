"""Figures: arrays in, a matplotlib Figure out. Saving or showing it is the caller's choice.

Figures are made with `matplotlib.figure.Figure`, not pyplot, so they hold no global state: safe in a
server thread, and in a notebook they display as the cell's value.
"""

import math

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

MISTAKE = "#d62728"
CORRECT = "#1f1f1f"


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


def prediction_grid(images, y_true, probabilities, class_names, columns=8, title=None) -> Figure:
    """Images with predicted label, its probability and the true label; mistakes in red."""
    images = np.asarray(images)
    n = len(images)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(columns * 1.45, rows * 1.75), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False)).ravel()
    predicted = np.argmax(probabilities, axis=1)
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i >= n:
            continue
        ax.imshow(images[i].squeeze(), cmap="gray_r", vmin=0, vmax=1)
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
    fig = Figure(figsize=(columns * 1.1 + 0.8, rows * 1.1 + (0.5 if title else 0.1)), layout="constrained")
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
    """Trained filters above the same layer freshly initialised, on one shared symmetric scale."""
    trained, untrained = np.asarray(trained), np.asarray(untrained)
    n = len(trained)
    columns = min(16, n)
    rows = math.ceil(n / columns)
    limit = float(max(np.abs(trained).max(), np.abs(untrained).max())) or 1.0
    fig = Figure(figsize=(columns * 0.7 + 1, 2 * rows * 0.7 + 1.2), layout="constrained")
    subfigs = fig.subfigures(2, 1)
    for sub, images, label in zip(subfigs, (trained, untrained), ("trained", "untrained (fresh initialisation)")):
        axes = sub.subplots(rows, columns, squeeze=False).ravel()
        for i, ax in enumerate(axes):
            ax.axis("off")
            if i < n:
                shown = ax.imshow(images[i], cmap="RdBu_r", vmin=-limit, vmax=limit)
        sub.colorbar(shown, ax=axes.tolist(), shrink=0.8, pad=0.01)
        sub.suptitle(f"{layer_name} {label}", fontsize=10)
    fig.suptitle(f"{layer_name}: {n} filters ({caption})", fontsize=11)
    return fig


def feature_maps_figure(maps, layer_name, columns=8) -> Figure:
    """One panel per channel of a (h, w, channels) activation."""
    maps = np.asarray(maps)
    return image_grid(np.moveaxis(maps, -1, 0), columns=columns, cmap="viridis",
                      title=f"{layer_name}: {maps.shape[-1]} feature maps, {maps.shape[0]}x{maps.shape[1]}")


def input_figure(image, title) -> Figure:
    fig = Figure(figsize=(2.2, 2.4), layout="constrained")
    ax = fig.subplots()
    ax.imshow(np.asarray(image).squeeze(), cmap="gray_r", vmin=0, vmax=1)
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


def _heat_overlay(ax, image, heat, cmap="jet"):
    """A heat map drawn over a grey image, opaque where the heat is high, transparent where it is zero."""
    ax.imshow(np.asarray(image).squeeze(), cmap="gray_r", vmin=0, vmax=1)
    heat = np.clip(np.asarray(heat, np.float64), 0, 1)
    return ax.imshow(heat, cmap=cmap, vmin=0, vmax=1, alpha=0.8 * heat)


def explanation_grid(images, cams, saliencies, titles, wrong, columns=8) -> Figure:
    """Per image a column of three: the input, its Grad-CAM and its saliency map overlaid; mistakes in red."""
    n = len(images)
    columns = min(columns, n)
    bands = math.ceil(n / columns)
    fig = Figure(figsize=(columns * 1.35 + 1.4, bands * (3 * 1.3 + 0.4)), layout="constrained")
    axes = fig.subplots(3 * bands, columns, squeeze=False)
    row_names = ("input", "Grad-CAM", "saliency")
    shown = None
    for i in range(bands * columns):
        band, column = divmod(i, columns)
        for row in range(3):
            ax = axes[3 * band + row, column]
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if column == 0:
                ax.set_ylabel(row_names[row], fontsize=9)
            if i >= n:
                ax.axis("off")
                continue
            if row == 0:
                ax.imshow(np.asarray(images[i]).squeeze(), cmap="gray_r", vmin=0, vmax=1)
                ax.set_title(titles[i], fontsize=8, color=MISTAKE if wrong[i] else CORRECT)
            else:
                shown = _heat_overlay(ax, images[i], (cams, saliencies)[row - 1][i])
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.5, pad=0.01, label="importance (0 to 1)")
    return fig


MOSAIC_PIXELS = 600  # data pixels across a feature map mosaic before it wraps into another band


def mosaic(tiles, rows, columns):
    """Tiles (k, h, w) laid out row by row with one blank (NaN) pixel between them."""
    tiles = np.asarray(tiles, np.float64)
    h, w = tiles.shape[1:3]
    out = np.full((rows * (h + 1) - 1, columns * (w + 1) - 1), np.nan)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        out[r * (h + 1):r * (h + 1) + h, c * (w + 1):c * (w + 1) + w] = tile
    return out


def feature_maps_by_class(inputs, maps, row_labels, layer_name) -> Figure:
    """One row per input image, one column per channel of a layer's (n, h, w, channels) activations.

    Each channel is scaled to its own largest value over all rows, so reading down a column compares how
    strongly that channel responds to each input.
    """
    inputs = np.asarray(inputs, np.float64)
    inputs = inputs.reshape(inputs.shape[:3])
    input_size = inputs.shape[1]
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
    input_cmap = colormaps["gray_r"].with_extremes(bad="white")
    for band, (input_ax, maps_ax) in enumerate(axes):
        first, last = band * per_band, min(channels, (band + 1) * per_band)
        input_ax.imshow(mosaic(inputs, n, 1), cmap=input_cmap, vmin=0, vmax=1)
        input_ax.set_yticks([r * (input_size + 1) + (input_size - 1) / 2 for r in range(n)],
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
    """An image as read beside the 28x28 input made from it (white ink on black, as MNIST), and its top classes.

    `top` is [(class name, probability)], most probable first.
    """
    fig = Figure(figsize=(8, 2.8), layout="constrained")
    ax_read, ax_input, ax_top = fig.subplots(1, 3, width_ratios=[1, 1, 1.3])
    ax_read.imshow(original, cmap="gray", vmin=0, vmax=1)
    ax_read.set_title("as read", fontsize=9)
    ax_input.imshow(np.asarray(model_input).squeeze(), cmap="gray", vmin=0, vmax=1)
    ax_input.set_title("model input (28x28)", fontsize=9)
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
