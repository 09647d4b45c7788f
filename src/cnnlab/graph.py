"""A model's layers as one flat graph: nested models (a `Sequential` backbone inside a functional model, as transfer
learning writes it; an ensemble's networks) inlined, so that every layer's output can be read and changed.

Keras reaches a nested layer's output only inside its own model: `keras.Model(model.inputs, backbone.get_layer(
"conv").output)` fails. `rebuild` runs the model's graph again on a fresh Input, layer by layer, entering nested
models, and gives each layer's output tensor in that one graph:

    tapped = rebuild(model, taps=[conv])                    # conv may sit inside a nested backbone
    extractor = keras.Model(tapped.input, tapped.taps[conv])

`patch` replaces a layer's call (explain.py adds a zero input to a conv layer's output, to take gradients with
respect to it, and reads the class scores before the softmax). Relies on Functional's graph walk (a private Keras
method: pyproject.toml bounds Keras).
"""

from dataclasses import dataclass, field

import keras


@dataclass
class Rebuilt:
    input: object  # the fresh keras.Input
    output: object  # the model's output in the new graph
    taps: dict = field(default_factory=dict)  # layer -> its output tensor in the new graph


def leaf_layers(model) -> list:
    """Every layer that is not itself a model, in the order an input meets them, nested models entered."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += leaf_layers(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            found.append(layer)
    return found


def output_layer(model):
    """The layer (not a model) that gives the model's output: where a softmax may be taken off."""
    layer = model.layers[-1] if isinstance(model, keras.Sequential) else model.outputs[0]._keras_history[0]
    return output_layer(layer) if isinstance(layer, keras.Model) else layer


def rebuild(model, taps=(), patch=None) -> Rebuilt:
    """Run `model`'s graph on a fresh Input of its input shape. `taps`: layers whose outputs to keep; `patch`:
    {layer: function(layer, rebuilt, *args, **kwargs) -> output} calls that replace those layers' own."""
    patches, wanted = {id(layer): fn for layer, fn in (patch or {}).items()}, {id(layer) for layer in taps}
    rebuilt = Rebuilt(input=keras.Input(model.input_shape[1:], name="image"), output=None)

    def call(layer, *args, **kwargs):
        if isinstance(layer, keras.Model):
            return run(layer, args[0] if len(args) == 1 else list(args))
        kwargs.pop("training", None)  # inference: dropout, batch norm and augmentation as at prediction
        output = patches[id(layer)](layer, rebuilt, *args, **kwargs) if id(layer) in patches else layer(*args, **kwargs)
        if id(layer) in wanted:
            rebuilt.taps[layer] = output
        return output

    def run(net, inputs):
        if isinstance(net, keras.Sequential):
            x = inputs
            for layer in net.layers:
                x = call(layer, x)
            return x
        return net._run_through_graph(inputs, operation_fn=lambda operation: lambda *a, **k: call(operation, *a, **k))

    output = run(model, rebuilt.input)
    rebuilt.output = output[0] if isinstance(output, (list, tuple)) and len(output) == 1 else output
    return rebuilt
