"""Figures: arrays in, a matplotlib Figure out. Saving or showing it is the caller's choice.

Figures are made with `matplotlib.figure.Figure`, not pyplot, so they hold no global state: safe in a
server thread, and in a notebook they display as the cell's value.
"""

import math

import numpy as np
from matplotlib.figure import Figure

MISTAKE = "#d62728"
CORRECT = "#1f1f1f"


def learning_curves(history, best_epoch=None, monitor="val_loss") -> Figure:
    """Loss and accuracy per epoch, train vs validation, with the best epoch marked."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    epochs = history.get("epoch") or list(range(1, len(history["loss"]) + 1))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        ax.plot(epochs, history[metric], "o-", label="train")
        if f"val_{metric}" in history:
            ax.plot(epochs, history[f"val_{metric}"], "o-", label="validation")
        if best_epoch:
            ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best epoch ({best_epoch}, by {monitor})")
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


def image_grid(images, title=None, columns=8, cmap="viridis", symmetric=False, labels=None, size=1.1) -> Figure:
    """A grid of small images (filters or feature maps), one colour scale for all, with a colour bar."""
    images = np.asarray(images)
    n = len(images)
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    fig = Figure(figsize=(columns * size + 0.8, rows * size + (0.5 if title else 0.1)), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    if symmetric:
        limit = float(np.abs(images).max()) or 1.0
        vmin, vmax = -limit, limit
    else:
        vmin, vmax = float(images.min()), float(images.max()) or 1.0
    shown = None
    for i, ax in enumerate(axes):
        ax.axis("off")
        if i < n:
            shown = ax.imshow(images[i], cmap=cmap, vmin=vmin, vmax=vmax)
            if labels is not None:
                ax.set_title(str(labels[i]), fontsize=7)
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
