"""Load a model artifact folder once and classify images with it.

Two runtimes read the same artifact: LiteRT (``model.tflite``, the fast serving copy, needs only
``ai-edge-litert``) and Keras (``model.keras`` through a ``tf.function`` with a fixed input signature).
TensorFlow is imported only inside the Keras runtime, so a LiteRT server never pays for it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from flask import current_app
from PIL import Image

# The artifact format has one definition, next to the code that writes it (stdlib-only module).
from training.export import (ARTIFACT_FORMAT_VERSION as FORMAT_VERSION, KERAS_FILE, LABELS_FILE,
                             LITERT_FILE, METADATA_FILE, RESIZE_MODES)

from training.quantize import LITERT_VARIANTS

from .batching import MicroBatcher
from .config import REPO_ROOT
from .imaging import fit_to_input

RUNTIMES = ("auto", "litert", "keras")
def train_hint(folder: Path) -> str:
    """The command that writes an artifact at ``folder`` (relative to the repository when inside it)."""
    try:
        out = folder.resolve().relative_to(REPO_ROOT)
    except ValueError:
        out = folder
    return ("python -m training train --config training/configs/stanford196_mobilenet.yaml "
            f"--data ../shared/datasets/stanford-cars --out {out}")


class ArtifactError(RuntimeError):
    """A model artifact that cannot be served; the message is one line naming the path and the fix."""


def litert_available() -> bool:
    """Whether the ``ai_edge_litert`` package is installed (checked without importing it)."""
    return importlib.util.find_spec("ai_edge_litert") is not None


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


def read_artifact(model_dir: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Read and check ``metadata.json`` and ``labels.json`` of an artifact folder.

    Args:
        model_dir: Artifact folder.

    Returns:
        ``(metadata, labels)``.

    Raises:
        ArtifactError: The folder or a file is missing, unreadable or inconsistent.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ArtifactError(f"model artifact not found at {folder}: train one with `{train_hint(folder)}` "
                            f"or set MODEL_DIR to an artifact folder")
    documents = {}
    for filename in (METADATA_FILE, LABELS_FILE):
        try:
            documents[filename] = json.loads((folder / filename).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise _broken(folder, f"{filename} is missing") from None
        except (OSError, ValueError) as exc:
            raise _broken(folder, f"{filename} is unreadable ({exc.__class__.__name__})") from None
    metadata, labels = documents[METADATA_FILE], documents[LABELS_FILE]
    if not isinstance(metadata, dict) or metadata.get("format_version") != FORMAT_VERSION:
        raise _broken(folder, f"metadata.json format_version is not {FORMAT_VERSION}")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise _broken(folder, "labels.json is not a non-empty list of names")
    size = metadata.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise _broken(folder, "metadata.json image_size is not [height, width]")
    if metadata.get("resize_mode", "center_crop") not in RESIZE_MODES:
        raise _broken(folder, f"metadata.json resize_mode is not one of {', '.join(RESIZE_MODES)}")
    return metadata, labels


def _broken(folder: Path, problem: str) -> ArtifactError:
    return ArtifactError(f"model artifact at {folder} is broken: {problem}; re-export it with "
                         f"`{train_hint(folder)}` or set MODEL_DIR to a good artifact folder")


class LiteRTRuntime:
    """Runs ``model.tflite`` with the LiteRT interpreter, one invocation at a time.

    The interpreter keeps its tensors inside the object, so concurrent ``invoke`` calls would overwrite
    each other's inputs: a lock serialises them (threads still overlap decoding and I/O).
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
        self._output = self._interpreter.get_output_details()[0]
        self._batch = None

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._build()
        # Warm the new interpreter here so that the worker's first request does not allocate tensors.
        self(np.zeros([1, *self._input["shape"][1:]], dtype=np.float32))

    @property
    def output_width(self) -> int:
        """Number of classes the network outputs."""
        return int(self._output["shape"][-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a float32 ``(N, H, W, 3)`` batch."""
        with self._lock:
            if batch.shape[0] != self._batch:
                self._interpreter.resize_tensor_input(self._input["index"], list(batch.shape))
                self._interpreter.allocate_tensors()
                self._batch = batch.shape[0]
            self._interpreter.set_tensor(self._input["index"], batch)
            self._interpreter.invoke()
            return self._interpreter.get_tensor(self._output["index"]).copy()


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
        spec = tf.TensorSpec([None, image_size[0], image_size[1], 3], tf.float32)
        self._call = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        self.output_width = int(model.outputs[0].shape[-1])

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for a float32 ``(N, H, W, 3)`` batch."""
        return self._call(batch).numpy()


class Classifier:
    """A loaded artifact: labels, metadata and a runtime that maps pixels to probabilities."""

    def __init__(self, model_dir: Path, metadata: dict[str, Any], labels: list[str], runtime,
                 variant: str = "float32"):
        self.model_dir = model_dir
        self.metadata = metadata
        self.labels = labels
        self.variant = variant  # which LiteRT file serves: float32, float16 or int8
        self._runtime = runtime

    @property
    def name(self) -> str:
        """Model name from the metadata (the folder name when absent)."""
        return str(self.metadata.get("name") or self.model_dir.name)

    @property
    def version(self) -> str:
        """Model version from the metadata."""
        return str(self.metadata.get("version") or "unversioned")

    @property
    def image_size(self) -> tuple[int, int]:
        """Model input ``(height, width)``."""
        height, width = self.metadata["image_size"]
        return int(height), int(width)

    @property
    def resize_mode(self) -> str:
        """How photos are fitted to the input: ``center_crop``, ``stretch`` or ``pad``."""
        return str(self.metadata.get("resize_mode") or "center_crop")

    @property
    def runtime(self) -> str:
        """``"litert"`` or ``"keras"``."""
        return self._runtime.name

    def predict_batch(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities for a batch of model-sized RGB images.

        Args:
            pixels: ``(N, H, W, 3)`` uint8 or float32 in 0..255.

        Returns:
            ``(N, num_classes)`` float32 probabilities.
        """
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        expected = (*self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"expected pixels of shape (N, {expected[0]}, {expected[1]}, 3), got {batch.shape}")
        return self._runtime(batch)

    def classify(self, image: Image.Image, top_k: int = 5) -> list[dict[str, Any]]:
        """Top-``k`` labels for one RGB image, best first.

        Args:
            image: RGB image of any size; it is fitted to the input as the metadata says.
            top_k: How many answers to return (capped at the number of classes).

        Returns:
            ``[{"label": str, "score": float}, ...]`` sorted by descending score.
        """
        pixels = fit_to_input(image, self.image_size, self.resize_mode)
        probabilities = self.predict_batch(pixels[np.newaxis])[0]
        k = max(1, min(int(top_k), len(self.labels)))
        best = np.argsort(-probabilities, kind="stable")[:k]
        return [{"label": self.labels[i], "score": float(probabilities[i])} for i in best]

    def describe(self) -> dict[str, Any]:
        """Metadata, labels, runtime and the LiteRT copy served, for the API and the CLI."""
        return {"name": self.name, "version": self.version, "runtime": self.runtime,
                "variant": self.variant if self.runtime == "litert" else None,
                "metadata": self.metadata, "labels": self.labels}


def load_classifier(model_dir: str | Path, runtime: str = "auto", num_threads: int | None = None, *,
                    variant: str = "float32", batch_max_size: int = 1,
                    batch_timeout_ms: float = 2.0) -> Classifier:
    """Load an artifact folder and warm the model up with one inference.

    Args:
        model_dir: Artifact folder written by ``training.export.export_artifact``.
        runtime: ``auto`` (LiteRT when possible), ``litert`` or ``keras``.
        num_threads: Threads per inference; ``None`` lets the runtime decide.
        variant: LiteRT file to serve: ``float32`` (``model.tflite``), or ``float16`` / ``int8`` written
            by ``python -m training quantize``.
        batch_max_size: Above 1, concurrent calls are merged into batches of up to this many images
            (:class:`app.batching.MicroBatcher`).
        batch_timeout_ms: How long a batch waits for more calls after its first.

    Returns:
        A ready :class:`Classifier`.

    Raises:
        ArtifactError: The artifact is missing, broken, or the chosen runtime cannot load it.
    """
    if variant not in LITERT_VARIANTS:
        raise ArtifactError(f"MODEL_VARIANT={variant!r} is not one of {', '.join(LITERT_VARIANTS)}")
    folder = Path(model_dir)
    metadata, labels = read_artifact(folder)
    chosen = resolve_runtime(folder, runtime)
    image_size = tuple(metadata["image_size"])
    if variant != "float32" and chosen != "litert":
        raise ArtifactError(f"MODEL_VARIANT={variant} is a LiteRT file: it needs MODEL_RUNTIME=auto or litert "
                            "with ai-edge-litert installed, or set MODEL_VARIANT=float32")
    if chosen == "litert":
        if not litert_available():
            raise ArtifactError("MODEL_RUNTIME=litert needs the ai-edge-litert package: "
                                "pip install -r requirements.txt, or set MODEL_RUNTIME=keras")
        filename = LITERT_VARIANTS[variant]
        path = folder / filename
        if not path.is_file() and variant != "float32":
            raise ArtifactError(
                f"model artifact at {folder} has no {filename} for MODEL_VARIANT={variant} (it is written only "
                f"when it stays as accurate as float32): run `python -m training quantize {folder} --data DIR "
                f"--quantize {variant}`, or set MODEL_VARIANT=float32")
        if not path.is_file():
            raise _broken(folder, f"{LITERT_FILE} is missing for MODEL_RUNTIME=litert")
        try:
            engine = LiteRTRuntime(path, num_threads)
        except Exception as exc:
            raise _broken(folder, f"{filename} does not load ({_first_line(exc)})") from None
    else:
        if importlib.util.find_spec("tensorflow") is None:
            raise ArtifactError(f"serving {folder} with Keras needs TensorFlow: pip install -r "
                                f"requirements-train.txt, or serve an artifact that has {LITERT_FILE}")
        path = folder / KERAS_FILE
        if not path.is_file():
            raise _broken(folder, f"{KERAS_FILE} is missing")
        try:
            engine = KerasRuntime(path, image_size, num_threads)
        except Exception as exc:
            raise _broken(folder, f"{KERAS_FILE} does not load ({_first_line(exc)})") from None
    if engine.output_width != len(labels):
        raise _broken(folder, f"the model outputs {engine.output_width} classes but labels.json "
                              f"has {len(labels)}")
    classifier = Classifier(folder, metadata, labels, engine, variant)
    try:  # warm-up: allocates tensors / traces the graph before the first request
        classifier.predict_batch(np.zeros((1, *image_size, 3), dtype=np.float32))
    except Exception as exc:
        raise _broken(folder, f"the warm-up inference failed ({_first_line(exc)})") from None
    if batch_max_size > 1:
        # Wrapped after the warm-up, so that no collector thread starts in a preloading gunicorn master.
        classifier._runtime = MicroBatcher(engine, batch_max_size, batch_timeout_ms)
    return classifier


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__


def get_classifier() -> Classifier:
    """The classifier loaded into the current app."""
    return current_app.extensions["classifier"]
