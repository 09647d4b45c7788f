"""Export a trained model for deployment through Keras's own `model.export`, and check the file in its runtime.

Formats: `onnx` (a .onnx file, for onnxruntime), `saved_model` (a TensorFlow SavedModel folder, for TF Serving and
`tf.saved_model.load`) and `litert` (a .tflite file, LiteRT/TensorFlow Lite, for phones and small devices). The
exported model computes what the Keras model does, preprocessing layers included, so it takes the same input: 0..255
pixels for a model whose first layers rescale (`Rescaling(1/255)`), else [0, 1] (see `feeding`).

A file is verified by running it in its own runtime on test images beside Keras: it is kept only when their
probabilities agree within `tolerance`, and the figures (max abs difference, top-1 agreement, accuracies, the input
it takes) are written beside it as PATH.json. Writes are atomic: a failed export leaves nothing under PATH.

    model = cnnlab.load_model("runs/digits/best.keras", compile=False)
    data = cnnlab.load_dataset("digits")
    check = cnnlab.export_model(model, "onnx", "digits.onnx", verify_with=(data.x_test, data.y_test))
    print(check["max_abs_difference"], check["top1_agreement"], check["input"]["pixels"])

ONNX export and the onnxruntime and LiteRT runtimes are the optional extra `cnnlab[export]`.
"""

import importlib
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from . import files
from .errors import CnnlabError, ConfigError, ModelFileError, first_line
from .evaluation import as_images, as_probabilities, predict
from .feeding import model_input, to_model

BATCH = 256  # images per runtime call while verifying
TOLERANCE = 1e-3  # largest difference of a probability allowed between Keras and the exported file


@dataclass(frozen=True)
class Format:
    keras_name: str  # model.export's format=
    suffix: str  # "" for a folder
    title: str
    runtime: str  # the module that runs it, named (with its version) in the record
    needs: tuple  # modules the export and its runtime import, from cnnlab[export]


FORMATS = {
    "onnx": Format("onnx", ".onnx", "ONNX", "onnxruntime", ("tf2onnx", "onnxruntime")),
    "saved_model": Format("tf_saved_model", "", "TensorFlow SavedModel", "tensorflow", ()),
    "litert": Format("litert", ".tflite", "LiteRT (TensorFlow Lite)", "ai_edge_litert", ("ai_edge_litert",)),
}


def export_path(model_path, format) -> Path:
    """Where an export goes by default: beside the model, named after it (best.onnx, best.tflite,
    best_saved_model/)."""
    model_path = Path(model_path)
    suffix = FORMATS[format].suffix or "_saved_model"
    return model_path.with_name(model_path.stem + suffix)


def export_model(model, format, path, verify_with=None, tolerance=TOLERANCE) -> dict:
    """Export `model` to `path` in `format` (onnx, saved_model or litert) and, with `verify_with=(images, labels)`
    (images in [0, 1] as cnnlab gives them; labels may be None), check it in its runtime. Returns the record also
    written to PATH.json; raises ModelFileError, keeping nothing, when the export fails or disagrees with Keras."""
    spec = _check_format(format, path)
    path = Path(path)
    model, precision = float32_copy(model)
    with (files.atomic_folder(path) if not spec.suffix else files.atomic_path(path, suffix=spec.suffix)) as tmp:
        _export(model, spec, tmp, path)
        record = {"format": format, "file": path.name, "input": input_record(model), "precision": precision,
                  "size_bytes": size_of(tmp), "keras": keras.__version__, "backend": keras.backend.backend(),
                  "runtime": f"{spec.runtime} {importlib.import_module(spec.runtime).__version__}"}
        if verify_with is not None:
            try:
                record.update(verify(model, format, tmp, *verify_with))
            except CnnlabError:
                raise
            except Exception as e:  # the runtime cannot load or run what the converter wrote
                raise ModelFileError(f"{path}: the exported model does not run in {spec.runtime} "
                                     f"({first_line(e)}); nothing was written") from None
            if record["max_abs_difference"] > tolerance:
                raise ModelFileError(f"{path}: the exported model disagrees with Keras by up to "
                                     f"{record['max_abs_difference']:.3g} in a probability (tolerance {tolerance:g}; "
                                     f"top-1 agreement {record['top1_agreement']:.2%}); nothing was written")
    files.write_json(record_path(path), record)
    return {**record, "path": str(path)}


def record_path(path) -> Path:
    """The verification record beside an export: best.onnx.json, best_saved_model.json."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _check_format(format, path) -> Format:
    if format not in FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, not {format!r}")
    spec = FORMATS[format]
    if spec.suffix and Path(path).suffix != spec.suffix:
        raise ConfigError(f"{path}: an export to {spec.title} must end in {spec.suffix}")
    if not spec.suffix and Path(path).is_file():
        raise ConfigError(f"{path}: a {spec.title} is a folder, and a file has that name; choose another path")
    if not spec.suffix and Path(path).is_dir() and any(Path(path).iterdir()) and \
            not (Path(path) / "saved_model.pb").is_file():  # it would be replaced whole
        raise ConfigError(f"{path}: a folder that is not a SavedModel is there; choose another path")
    if format == "litert" and keras.backend.backend() != "tensorflow":
        raise ConfigError(f"Keras exports LiteRT on the TensorFlow backend only, not {keras.backend.backend()}; "
                          f"set KERAS_BACKEND=tensorflow")
    missing = [name for name in spec.needs if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"exporting to {spec.title} needs {' and '.join(missing)}: pip install 'cnnlab[export]'")
    return spec


def _export(model, spec, tmp, path):
    try:
        with warnings.catch_warnings():  # Keras's tf2onnx patch for NumPy 2 probes np.object, which warns
            warnings.filterwarnings("ignore", message=".*np.object.*", category=FutureWarning)
            # the signature given: a model loaded from a file has not been called, and Keras's ONNX export then
            # refuses to infer one; one named input, "image", for whoever deploys it
            signature = [keras.InputSpec(shape=model.input_shape, dtype="float32", name="image")]
            model.export(str(tmp), format=spec.keras_name, verbose=False, input_signature=signature)
    except Exception as e:  # the converters raise anything from ValueError to their own error types
        raise ModelFileError(f"{path}: Keras could not export the model to {spec.title} ({first_line(e)})") from None


def float32_copy(model):
    """(`model`, "float32"), or for a mixed-precision model (`--precision mixed_bfloat16`) a float32 copy with the
    same weights and what it was: ONNX Runtime cannot run bfloat16 convolutions and LiteRT's builtin kernels have
    none. The copy's probabilities differ from the original's by bfloat16's rounding; the export is checked
    against the copy."""
    config = model.get_config()
    replaced = _float32_policies(config)
    if not replaced:
        return model, "float32"
    copy = model.__class__.from_config(config)
    copy.set_weights(model.get_weights())
    return copy, f"float32 (a copy of the {', '.join(sorted(replaced))} model)"


def _float32_policies(node) -> set:
    """Replace every mixed-precision dtype policy in a model config by float32, in place; the names replaced."""
    replaced = set()
    if isinstance(node, dict):
        policy = node.get("config", {}).get("name") if node.get("class_name") in ("DTypePolicy",
                                                                                   "FloatDTypePolicy") else None
        if isinstance(policy, str) and policy.startswith("mixed_"):
            node["config"]["name"] = "float32"
            return {policy}
        for key, value in node.items():
            if key == "dtype" and isinstance(value, str) and value.startswith("mixed_"):
                node[key] = "float32"
                replaced.add(value)
            else:
                replaced |= _float32_policies(value)
    elif isinstance(node, list):
        for value in node:
            replaced |= _float32_policies(value)
    return replaced


def input_record(model) -> dict:
    """What the exported model takes, for the record and for whoever deploys it."""
    spec = model_input(model)
    shape = [None, *spec.shape] if spec.channel_axis else [None, *spec.size]
    return {"shape": shape, "dtype": "float32", "pixels": "0..255" if spec.pixel_scale == 255 else "0..1",
            "why": spec.reason}


def verify(model, format, path, images, labels=None) -> dict:
    """Keras's and the exported file's probabilities on the same images: their largest difference, how often their
    top-1 classes agree, and with labels each one's accuracy."""
    spec = model_input(model)
    images = as_images(images, spec.shape)
    expected = predict(model, images)
    run = runtime(format, path)
    fed = np.ascontiguousarray(to_model(spec, images))
    got = np.concatenate([as_probabilities(run(fed[start:start + BATCH])) for start in range(0, len(fed), BATCH)])
    record = {"images": len(images), "max_abs_difference": float(np.max(np.abs(got - expected))),
              "top1_agreement": float(np.mean(got.argmax(axis=1) == expected.argmax(axis=1)))}
    if labels is not None:
        labels = np.asarray(labels)
        record["keras_accuracy"] = float(np.mean(expected.argmax(axis=1) == labels))
        record["exported_accuracy"] = float(np.mean(got.argmax(axis=1) == labels))
    return record


def runtime(format, path):
    """A function from a float32 batch, as the model takes it (see `input_record`), to the exported model's
    outputs, run by the format's own runtime (onnxruntime, TensorFlow's SavedModel loader, the LiteRT
    interpreter), without Keras."""
    path = str(path)
    if format == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda batch: session.run(None, {name: batch})[0]
    if format == "saved_model":
        import tensorflow as tf

        loaded = tf.saved_model.load(path)  # kept: its functions need the variables it holds
        return lambda batch: loaded.serve(batch).numpy()  # the endpoint Keras's export writes
    if format == "litert":
        from ai_edge_litert.interpreter import Interpreter

        return LiteRTRunner(Interpreter(model_path=path))
    raise ConfigError(f"export format must be one of {', '.join(FORMATS)}, not {format!r}")


class LiteRTRunner:
    """The LiteRT interpreter as a function: its input is resized, and its buffers allocated, only when the batch
    shape changes (a single-image loop pays for that once)."""

    def __init__(self, interpreter):
        self.interpreter = interpreter
        self.input = interpreter.get_input_details()[0]["index"]
        self.output = interpreter.get_output_details()[0]["index"]
        self.shape = None

    def __call__(self, batch):
        if batch.shape != self.shape:
            self.interpreter.resize_tensor_input(self.input, batch.shape)
            self.interpreter.allocate_tensors()
            self.shape = batch.shape
        self.interpreter.set_tensor(self.input, batch)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output).copy()


def size_of(path) -> int:
    """Bytes of a file, or of every file in a folder (a SavedModel)."""
    path = Path(path)
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
