"""One input explained by several attribution methods side by side: the figure, the maps and how far each can be
trusted, as `cnnlab explain` writes them.

    from cnnlab.explanation import explain_input
    explain_input(model, image, "figures/attributions", ["gradcam", "integrated_gradients"], class_names=names)
    # -> figures/attributions.png, .npz (the maps, one array per method) and .json (times, deletion/insertion areas)
"""

from pathlib import Path

import numpy as np

from . import files, plots
from .data import DIGIT_STYLE
from .evaluation import as_probabilities
from .explain.faithfulness import STEPS, compare_methods
from .explain.scores import explained_classes, model_image


def explain_input(model, image, out_stem, methods, class_index=None, class_names=None, title="input", options=None,
                  style=DIGIT_STYLE, true_class=None, source=None) -> list:
    """Explain the (H, W, C) `image`'s class (the predicted one unless `class_index`) by each of `methods`, with
    `options` {method: its options}; write `out_stem` .png, .npz and .json. Returns the paths written."""
    out_stem = Path(out_stem)
    image = np.asarray(image, np.float32)
    probabilities = as_probabilities(model.predict_on_batch(model_image(model, image)))[0]
    classes = explained_classes(model, image[None], int(probabilities.argmax()) if class_index is None else class_index)
    explained = int(classes[0])
    names = list(class_names) if class_names else [str(c) for c in range(len(probabilities))]
    options = {method: option for method, option in (options or {}).items() if method in methods and option}
    results = compare_methods(model, image[None], classes, methods, options)
    heading = (f"{title}: explaining class {names[explained]} (probability {probabilities[explained]:.0%}"
               f"{'' if true_class is None else f'; true class {names[true_class]}'})")
    figure = plots.attribution_grid(image[None], {results[m]["name"]: results[m]["heat"] for m in methods},
                                    [f"{names[explained]} {probabilities[explained]:.0%}"],
                                    [true_class is not None and true_class != explained], style)
    figure.suptitle(heading, fontsize=10)
    paths = [out_stem.with_suffix(suffix) for suffix in (".png", ".npz", ".json")]
    files.save_figure(figure, paths[0])
    with files.atomic_path(paths[1], ".npz") as temporary:
        np.savez_compressed(temporary, **{m: results[m]["maps"][0] for m in methods})
    files.write_json(paths[2], {
        "source": source, "input": title, "class_index": explained, "class_name": names[explained],
        "probability": float(probabilities[explained]), "true_class": true_class, "maps": paths[1].name,
        "figure": paths[0].name, "deletion_insertion_steps": STEPS,
        "methods": {m: {"name": results[m]["name"], "map_shape": list(results[m]["maps"].shape[1:]),
                        "options": {k: v if isinstance(v, (int, float, str)) else "an image"
                                    for k, v in options.get(m, {}).items()},
                        "seconds": round(results[m]["seconds_per_image"], 4),
                        "deletion_area": results[m]["deletion_area"], "insertion_area": results[m]["insertion_area"]}
                    for m in methods},
        "random_ranking": {key: results["random"][key] for key in ("deletion_area", "insertion_area")},
    })
    return paths
