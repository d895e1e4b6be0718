"""The two runtimes that map a float32 ``(N, H, W, 3)`` batch to probabilities.

LiteRT (``model.tflite``, needs only ``ai-edge-litert``) is the serving runtime; Keras (``model.keras``
through a ``tf.function`` with a fixed input signature) is the fallback where LiteRT is missing.
TensorFlow is imported only inside the Keras runtime, so a LiteRT server never pays for it.

Both can also return the last convolutional feature map next to the probabilities
(:meth:`LiteRTRuntime.features`): a LiteRT file exported with that second output carries it, and the
Keras runtime cuts it out of the model. Class activation maps are computed from it.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
import weakref
from pathlib import Path

import numpy as np

from .artifact import ArtifactError, LITERT_FILE

RUNTIMES = ("auto", "litert", "keras")


def litert_available() -> bool:
    """Whether the ``ai_edge_litert`` package is installed (checked without importing it)."""
    return importlib.util.find_spec("ai_edge_litert") is not None


def tensorflow_available() -> bool:
    """Whether TensorFlow can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ValueError:  # a module set to None in sys.modules (how tests hide TensorFlow)
        return False


def resolve_runtime(model_dir: str | Path, runtime: str = "auto") -> str:
    """Pick the runtime that will serve ``model_dir`` without loading anything.

    Args:
        model_dir: Artifact folder.
        runtime: ``auto``, ``litert`` or ``keras``.

    Returns:
        ``"litert"`` or ``"keras"``.

    Raises:
        ArtifactError: Unknown runtime name.
    """
    if runtime not in RUNTIMES:
        raise ArtifactError(f"MODEL_RUNTIME={runtime!r} is not one of {', '.join(RUNTIMES)}")
    if runtime != "auto":
        return runtime
    has_litert = (Path(model_dir) / LITERT_FILE).is_file()
    return "litert" if has_litert and litert_available() else "keras"


class LiteRTRuntime:
    """Runs a ``.tflite`` file with the LiteRT interpreter, one invocation at a time.

    The interpreter keeps its tensors inside the object, so concurrent ``invoke`` calls would overwrite
    each other's inputs: a lock serialises them (threads still overlap decoding and I/O).

    The probabilities are the outputs of rank 2, in the network's output order (the class output, then
    the make output when there is one), joined into one row per image; an output of rank 4, when
    present, is the feature map.
    """

    name = "litert"

    def __init__(self, path: Path, num_threads: int | None):
        self.path = path
        self.num_threads = num_threads
        self._lock = threading.Lock()
        self._build()
        # Thread pools do not survive fork(): a gunicorn worker forked from a preloading master gets a
        # fresh interpreter (cheap: the flatbuffer is memory-mapped).
        # A weak reference, so that the hook does not keep replaced classifiers alive forever.
        alive = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: (runtime := alive()) and runtime._after_fork())

    def _build(self) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self._interpreter = Interpreter(model_path=str(self.path), num_threads=self.num_threads)
        self._input = self._interpreter.get_input_details()[0]
        outputs = ordered_outputs(self._interpreter)
        self._outputs = [o for o in outputs if len(o["shape"]) == 2] or outputs[:1]
        self._features = next((o for o in outputs if len(o["shape"]) == 4), None)
        self._batch = None

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._build()
        # Warm the new interpreter here so that the worker's first request does not allocate tensors.
        self(np.zeros([1, *self._input["shape"][1:]], dtype=np.float32))

    @property
    def output_width(self) -> int:
        """Width of a row of probabilities: the classes, plus the makes of a make output."""
        return sum(int(o["shape"][-1]) for o in self._outputs)

    @property
    def has_features(self) -> bool:
        """Whether the file has the feature-map output that class activation maps need."""
        return self._features is not None

    def _invoke(self, batch: np.ndarray, with_features: bool):
        with self._lock:
            if batch.shape[0] != self._batch:
                self._interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
                self._interpreter.allocate_tensors()
                self._batch = batch.shape[0]
            self._interpreter.set_tensor(self._input["index"], batch)
            self._interpreter.invoke()
            rows = [self._interpreter.get_tensor(o["index"]) for o in self._outputs]
            probabilities = rows[0].copy() if len(rows) == 1 else np.concatenate(rows, axis=1)
            if not with_features:
                return probabilities
            return probabilities, self._interpreter.get_tensor(self._features["index"]).copy()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a float32 ``(N, H, W, 3)`` batch."""
        return self._invoke(batch, with_features=False)

    def features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, feature maps (N, h, w, channels))`` for a float32 batch.

        Raises:
            LookupError: The file has no feature-map output.
        """
        if self._features is None:
            raise LookupError(f"{self.path.name} has no feature-map output")
        return self._invoke(batch, with_features=True)


class KerasRuntime:
    """Runs ``model.keras`` through a ``tf.function`` traced once for ``(None, H, W, 3)`` float32."""

    name = "keras"

    def __init__(self, path: Path, image_size: tuple[int, int], num_threads: int | None):
        import tensorflow as tf  # only this runtime needs TensorFlow
        import keras

        if num_threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(num_threads)
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:  # already initialised by an earlier model in this process
                pass
        model = keras.saving.load_model(path, compile=False)
        self._spec = tf.TensorSpec([None, image_size[0], image_size[1], 3], tf.float32)
        self._tf, self._model = tf, model
        self._call = tf.function(lambda x: _joined(model(x, training=False), tf), input_signature=[self._spec])
        self._call_features = None
        self.output_width = sum(int(output.shape[-1]) for output in model.outputs)

    @property
    def has_features(self) -> bool:
        """Whether the model has a spatial feature map before its head."""
        return feature_layer(self._model) is not None

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a float32 ``(N, H, W, 3)`` batch."""
        return self._call(batch).numpy()

    def features(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(probabilities, feature maps)`` for a float32 batch (traced on first use).

        Raises:
            LookupError: The model has no spatial feature map.
        """
        if self._call_features is None:
            import keras

            layer = feature_layer(self._model)
            if layer is None:
                raise LookupError("the model has no convolutional feature map")
            both = keras.Model(self._model.inputs, [*self._model.outputs, outer_output(layer)])
            tf = self._tf
            self._call_features = tf.function(lambda x: (lambda out: (_joined(out[:-1], tf), out[-1]))(
                both(x, training=False)), input_signature=[self._spec])
        probabilities, maps = self._call_features(batch)
        return probabilities.numpy(), maps.numpy()


def _joined(outputs, tf):
    """One row of probabilities per image from a model's output or outputs (class, then make)."""
    if isinstance(outputs, (list, tuple)):
        return outputs[0] if len(outputs) == 1 else tf.concat(list(outputs), axis=1)
    return outputs


def ordered_outputs(interpreter) -> list[dict]:
    """A LiteRT interpreter's output details in the exported network's output order.

    ``get_output_details`` lists tensors in the flatbuffer's order, which need not be the network's; the
    serving signature names its outputs ``output_0``, ``output_1``, ... in the network's order.
    """
    details = interpreter.get_output_details()
    try:
        signature = interpreter.get_signature_runner().get_output_details()
        by_index = {o["index"]: o for o in details}
        ordered = [by_index[d["index"]] for _, d in sorted(signature.items(), key=lambda kv: _natural(kv[0]))]
        if len(ordered) == len(details):
            return ordered
    except (ValueError, KeyError, AttributeError):
        pass
    return sorted(details, key=lambda o: _natural(o["name"]))


def _natural(name: str) -> tuple:
    """Sort key that orders ``x:2`` before ``x:10``."""
    return tuple(int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name))


def feature_layer(model):
    """The last top-level layer of a Keras model whose output is a spatial map (batch, h, w, channels).

    For the classifiers trained here that is the backbone (its last convolution block); for small
    networks, the last convolution. ``None`` when there is no such layer.
    """
    for layer in reversed(model.layers):
        try:
            shape = outer_output(layer).shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4 and (shape[1] or 0) > 1 and (shape[2] or 0) > 1:
            return layer
    return None


def outer_output(layer):
    """The tensor ``layer`` produced in the enclosing model's graph.

    For a nested model (the backbone) ``layer.output`` is the output of its own inner graph, which the
    enclosing model's inputs do not reach; the node of its call in the enclosing graph has the right one.
    """
    nodes = getattr(layer, "_inbound_nodes", None)
    return nodes[-1].outputs[0] if nodes else layer.output
