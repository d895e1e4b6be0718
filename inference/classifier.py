"""A loaded artifact: labels, metadata, groupings and a runtime that maps pixels to probabilities.

:func:`load_classifier` reads and checks an artifact folder (:mod:`.artifact`), picks and warms a runtime
(:mod:`.runtimes`) and returns a :class:`Classifier`, which turns one photo into a :class:`Outcome`:
the top classes, the group scores and the full probability vector.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .answers import Grouping, group_scores, groupings
from .artifact import (KERAS_FILE, LITERT_FILE, LITERT_VARIANTS, ArtifactError, broken, make_labels_of,
                       public_metadata,
                       read_artifact)
from .batching import MicroBatcher
from .imaging import fit_to_input
from .runtimes import KerasRuntime, LiteRTRuntime, litert_available, resolve_runtime
from .tta import combine_views, confident, skip_above


@dataclass(frozen=True)
class Outcome:
    """What the model says about one photo.

    Attributes:
        top_k: The best classes, ``[{"label", "score"}, ...]`` best first.
        groups: Per grouping, the best group labels (:func:`.answers.group_scores`).
        probabilities: ``(num_classes,)`` float32, for explanations and tests.
        make: ``(num_makes,)`` float32 probabilities of the make output, ``None`` for a model without one.
        embedding: ``(channels,)`` float32, the L2-normalised average of the last feature map, when asked
            for and the served file has that output (:meth:`Classifier.predict`); else ``None``.
    """

    top_k: list[dict[str, Any]]
    groups: dict[str, list[dict[str, Any]]]
    probabilities: np.ndarray
    make: np.ndarray | None = None
    embedding: np.ndarray | None = None


class Classifier:
    """A loaded artifact: labels, metadata and a runtime that maps pixels to probabilities."""

    def __init__(self, model_dir: Path, metadata: dict[str, Any], labels: list[str], runtime,
                 variant: str = "float32"):
        self.model_dir = model_dir
        self.metadata = metadata
        self.labels = labels
        self.variant = variant  # which LiteRT file serves: float32, float16, int8 or int8-full
        self._runtime = runtime
        self.engine = runtime  # the runtime itself, also when ``_runtime`` is a micro-batcher around it
        self.warmup_ms: float | None = None  # the load-time warm-up inference, for /_ah/warmup
        self.make_labels: list[str] = make_labels_of(metadata)  # the make output's labels, [] without one
        self.groupings: list[Grouping] = groupings(metadata, labels)

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
        """Probabilities for a batch of model-sized RGB images: the classes, then the makes if any.

        Args:
            pixels: ``(N, H, W, 3)`` uint8 or float32 in 0..255.

        Returns:
            ``(N, num_classes + num_makes)`` float32 probabilities (:meth:`split` separates them).
        """
        batch = np.ascontiguousarray(pixels, dtype=np.float32)
        expected = (*self.image_size, 3)
        if batch.ndim != 4 or batch.shape[1:] != expected:
            raise ValueError(f"expected pixels of shape (N, {expected[0]}, {expected[1]}, 3), got {batch.shape}")
        return self._runtime(batch)

    @property
    def tta(self) -> str:
        """Test-time augmentation the artifact asks for: ``none`` or ``flip`` (photo and mirror image averaged)."""
        return str(self.metadata.get("tta") or "none")

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """``(class probabilities, make probabilities or None)`` of rows from :meth:`predict_batch`.

        Each part is scaled to sum to 1: an integer model's softmax is quantised, and its outputs can sum
        to a few percent less, which would show as group scores that do not add up.
        """
        width = len(self.labels)
        return _normalised(rows[..., :width]), (_normalised(rows[..., width:]) if self.make_labels else None)

    def outputs(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Class and make probabilities of one fitted photo, with the artifact's test-time augmentation.

        With ``tta: flip`` the photo and its mirror image go through the model as one batch of two (one
        invocation) and their probabilities are averaged, as they were when the artifact was evaluated.
        With ``tta_skip_above`` as well, the photo goes first alone, and its mirror image follows only
        when the photo's own top scores fall short of it (:mod:`.tta`).

        Args:
            pixels: ``(H, W, 3)`` model-sized RGB image.

        Returns:
            ``((num_classes,), (num_makes,) or None)`` float32 probabilities.
        """
        if self.tta != "flip" or self.skip_above is None:
            return self.split(self.predict_batch(self._views(pixels)).mean(axis=0))
        first = self.predict_batch(pixels[np.newaxis])
        if confident(first, len(self.labels), self.skip_above)[0]:
            return self.split(first[0])
        mirrored = self.predict_batch(np.ascontiguousarray(pixels[:, ::-1])[np.newaxis])
        return self.split(combine_views(first, mirrored, len(self.labels))[0])

    @property
    def skip_above(self) -> float | None:
        """The artifact's ``tta_skip_above``: how sure the photo alone must be to skip its mirror view."""
        return skip_above(self.metadata)

    def _views(self, pixels: np.ndarray) -> np.ndarray:
        """The batch one photo is run as: itself, and its mirror image with ``tta: flip``."""
        return np.stack([pixels, pixels[:, ::-1]]) if self.tta == "flip" else pixels[np.newaxis]

    @property
    def can_embed(self) -> bool:
        """Whether the served file also outputs the feature map that embeddings are pooled from."""
        return bool(getattr(self.engine, "has_features", False))

    def outputs_and_embedding(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """:meth:`outputs` plus the photo's embedding, all from one invocation.

        The embedding is the feature map averaged over its positions (with ``tta: flip``, over both
        images, whatever ``tta_skip_above`` says: taught photos and queries are embedded alike), scaled
        to unit length so that a dot product is a cosine similarity.

        Raises:
            LookupError: The served file has no feature-map output (:attr:`can_embed`).
        """
        batch = np.ascontiguousarray(self._views(pixels), dtype=np.float32)
        # The engine itself, not the micro-batcher: its batches carry no feature maps.
        rows, maps = self.engine.features(batch)
        probabilities, make = self.split(rows.mean(axis=0))
        return probabilities, make, normalised_embedding(maps.mean(axis=(0, 1, 2), dtype=np.float64))

    def embed(self, image: Image.Image) -> np.ndarray:
        """The embedding of one RGB image of any size (:meth:`outputs_and_embedding`)."""
        return self.outputs_and_embedding(fit_to_input(image, self.image_size, self.resize_mode))[2]

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities of one fitted photo, with the artifact's test-time augmentation (:meth:`outputs`)."""
        return self.outputs(pixels)[0]

    def classify(self, image: Image.Image, top_k: int = 5) -> list[dict[str, Any]]:
        """Top-``k`` labels for one RGB image, best first.

        Args:
            image: RGB image of any size; it is fitted to the input as the metadata says.
            top_k: How many answers to return (capped at the number of classes).

        Returns:
            ``[{"label": str, "score": float}, ...]`` sorted by descending score.
        """
        return self.predict(image, top_k).top_k

    def predict(self, image: Image.Image, top_k: int = 5, *, embed: bool = False) -> Outcome:
        """The top classes and the group scores of one RGB image.

        Args:
            image: RGB image of any size; it is fitted to the input as the metadata says.
            top_k: How many classes to return (capped at the number of classes).
            embed: Also return the embedding (same invocation), when the served file can give it.

        Returns:
            The :class:`Outcome`.
        """
        pixels = fit_to_input(image, self.image_size, self.resize_mode)
        embedding = None
        if embed and self.can_embed:
            probabilities, make, embedding = self.outputs_and_embedding(pixels)
        else:
            probabilities, make = self.outputs(pixels)
        k = max(1, min(int(top_k), len(self.labels)))
        best = np.argsort(-probabilities, kind="stable")[:k]
        top = [{"label": self.labels[i], "score": float(probabilities[i])} for i in best]
        return Outcome(top, group_scores(probabilities, self.groupings, make=make), probabilities, make, embedding)

    def describe(self) -> dict[str, Any]:
        """Name, version, labels, runtime, the LiteRT copy served and the publishable part of the metadata
        (:func:`.artifact.public_metadata`: no path of the machine that trained it), for the API and the CLI."""
        return {"name": self.name, "version": self.version, "runtime": self.runtime,
                "variant": self.variant if self.runtime == "litert" else None,
                "metadata": public_metadata(self.metadata), "labels": self.labels, "make_labels": self.make_labels}


def load_classifier(model_dir: str | Path, runtime: str = "auto", num_threads: int | None = None, *,
                    variant: str = "auto", batch_max_size: int = 1,
                    batch_timeout_ms: float = 2.0) -> Classifier:
    """Load an artifact folder and warm the model up with one inference.

    Args:
        model_dir: Artifact folder written by ``training.export.export_artifact``.
        runtime: ``auto`` (LiteRT when possible), ``litert`` or ``keras``.
        num_threads: Threads per inference; ``None`` lets the runtime decide.
        variant: LiteRT file to serve: ``float32`` (``model.tflite``), or ``float16`` / ``int8`` /
            ``int8-full`` written by ``python -m training quantize``; ``auto`` serves the artifact's
            ``serving_variant`` when LiteRT serves and that file is there, float32 otherwise.
        batch_max_size: Above 1, concurrent calls are merged into batches of up to this many images
            (:class:`.batching.MicroBatcher`).
        batch_timeout_ms: How long a batch waits for more calls after its first.

    Returns:
        A ready :class:`Classifier`.

    Raises:
        ArtifactError: The artifact is missing, broken, or the chosen runtime cannot load it.
    """
    if variant != "auto" and variant not in LITERT_VARIANTS:
        raise ArtifactError(f"MODEL_VARIANT={variant!r} is not one of auto, {', '.join(LITERT_VARIANTS)}")
    folder = Path(model_dir)
    metadata, labels = read_artifact(folder)
    chosen = resolve_runtime(folder, runtime)
    if variant == "auto":
        variant = recommended_variant(folder, metadata) if chosen == "litert" else "float32"
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
            raise broken(folder, f"{LITERT_FILE} is missing for MODEL_RUNTIME=litert")
        try:
            engine = LiteRTRuntime(path, num_threads)
        except Exception as exc:
            raise broken(folder, f"{filename} does not load ({_first_line(exc)})") from None
    else:
        if importlib.util.find_spec("tensorflow") is None:
            raise ArtifactError(f"serving {folder} with Keras needs TensorFlow: pip install -r "
                                f"requirements-train.txt, or serve an artifact that has {LITERT_FILE}")
        path = folder / KERAS_FILE
        if not path.is_file():
            raise broken(folder, f"{KERAS_FILE} is missing")
        try:
            engine = KerasRuntime(path, image_size, num_threads)
        except Exception as exc:
            raise broken(folder, f"{KERAS_FILE} does not load ({_first_line(exc)})") from None
    makes = len(make_labels_of(metadata))
    if engine.output_width != len(labels) + makes:
        also = f" plus {makes} makes in metadata.json make_output" if makes else ""
        raise broken(folder, f"the model outputs {engine.output_width} classes but labels.json "
                              f"has {len(labels)}{also}")
    classifier = Classifier(folder, metadata, labels, engine, variant)
    try:  # warm-up: allocates tensors / traces the graph before the first request
        started = time.perf_counter()
        classifier.predict_batch(np.zeros((1, *image_size, 3), dtype=np.float32))
        classifier.warmup_ms = round((time.perf_counter() - started) * 1000.0, 2)
    except Exception as exc:
        raise broken(folder, f"the warm-up inference failed ({_first_line(exc)})") from None
    if batch_max_size > 1:
        # Wrapped after the warm-up, so that no collector thread starts in a preloading gunicorn master.
        classifier._runtime = MicroBatcher(engine, batch_max_size, batch_timeout_ms)
    return classifier


def recommended_variant(folder: Path, metadata: dict[str, Any]) -> str:
    """The LiteRT copy an artifact recommends (``serving_variant``, set by ``training quantize --serve``).

    A recommendation whose file is missing falls back to float32: the artifact still serves, as measured.
    """
    variant = metadata.get("serving_variant")
    if variant in LITERT_VARIANTS and (folder / LITERT_VARIANTS[variant]).is_file():
        return str(variant)
    return "float32"


def normalised_embedding(vector: np.ndarray) -> np.ndarray:
    """``vector`` as float32 of unit length (a zero vector stays zero: it is similar to nothing)."""
    vector = np.asarray(vector, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(vector))
    return (vector / norm if norm > 0 else vector).astype(np.float32)


def _normalised(probabilities: np.ndarray) -> np.ndarray:
    """``probabilities`` scaled to sum to 1 along the last axis (rows that sum to 0 are left as they are)."""
    total = probabilities.sum(axis=-1, keepdims=True, dtype=np.float64)
    return np.divide(probabilities, total, out=np.array(probabilities, dtype=np.float32),
                     where=total > 0).astype(np.float32)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{exc.__class__.__name__}: {text[0]}" if text else exc.__class__.__name__
