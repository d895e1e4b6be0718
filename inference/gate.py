"""When to trust an answer: the vehicle gate ("is this a car at all?") and the verdict of a prediction.

A prediction gets one of three verdicts:

* ``not_a_car`` - the vehicle gate, an ImageNet classifier, puts too little probability on vehicle
  classes (sports car, convertible, cab, pickup, grille, car wheel ...);
* ``uncertain`` - the car classifier's top score is below the confidence threshold chosen on the
  validation split (``metadata["confidence"]["threshold"]`` of the served artifact);
* ``ok`` - otherwise.

Without a gate the first verdict never happens; without a threshold the second never does.
The gate is a small LiteRT artifact (``model.tflite`` + ``metadata.json``, written by
``python -m training gate``) run by the same LiteRT runtime as the classifier, so no TensorFlow is needed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .answers import threshold_of
from .artifact import REPO_ROOT, ArtifactError
from .imaging import fit_to_input
from .runtimes import LiteRTRuntime, litert_available

VERDICTS = ("ok", "uncertain", "not_a_car")
GATE_MODEL_FILE = "model.tflite"
GATE_METADATA_FILE = "metadata.json"
GATE_KIND = "vehicle_gate"
SHIPPED_GATE_DIR = REPO_ROOT / "model_artifacts" / "vehicle-gate"


@dataclass(frozen=True)
class Verdict:
    """The verdict of one prediction and the numbers it was decided from.

    Attributes:
        verdict: ``ok``, ``uncertain`` or ``not_a_car``.
        vehicle_score: Gate score (summed ImageNet vehicle probability), ``None`` without a gate.
        threshold: Confidence threshold applied to the top score, ``None`` when the model has none.
    """

    verdict: str
    vehicle_score: float | None
    threshold: float | None


class VehicleGate:
    """Scores how much an image looks like a vehicle: ImageNet probability summed over vehicle classes.

    Args:
        folder: Gate artifact folder (``model.tflite`` + ``metadata.json``).
        num_threads: Threads per inference.

    Raises:
        ArtifactError: The folder is not a usable gate artifact, or LiteRT is missing.
    """

    def __init__(self, folder: str | Path, num_threads: int | None = None):
        self.folder = Path(folder)
        try:
            self.metadata = json.loads((self.folder / GATE_METADATA_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ArtifactError(f"vehicle gate at {self.folder} is unusable: {GATE_METADATA_FILE} cannot be "
                                f"read ({exc.__class__.__name__}); rebuild it with `python -m training gate` "
                                f"or unset VEHICLE_GATE_DIR") from None
        if self.metadata.get("kind") != GATE_KIND:
            raise ArtifactError(f"{self.folder} is not a vehicle gate artifact (metadata kind is not "
                                f"{GATE_KIND!r})")
        if not litert_available():
            raise ArtifactError("the vehicle gate needs the ai-edge-litert package: pip install -r "
                                "requirements.txt, or unset VEHICLE_GATE_DIR")
        self.class_indices = np.array(sorted(int(i) for i in self.metadata["vehicle_classes"]), dtype=np.int64)
        self.threshold = float(self.metadata["threshold"])
        self.image_size = tuple(int(v) for v in self.metadata["image_size"])
        self.resize_mode = str(self.metadata.get("resize_mode", "center_crop"))
        try:
            self._runtime = LiteRTRuntime(self.folder / GATE_MODEL_FILE, num_threads)
        except Exception as exc:
            raise ArtifactError(f"vehicle gate at {self.folder} does not load "
                                f"({exc.__class__.__name__}: {exc})") from None

    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Vehicle scores for a batch of gate-sized images.

        Args:
            pixels: ``(N, H, W, 3)`` RGB, 0..255.

        Returns:
            ``(N,)`` summed probability of the vehicle classes, 0..1.
        """
        probabilities = self._runtime(np.ascontiguousarray(pixels, dtype=np.float32))
        return probabilities[:, self.class_indices].sum(axis=1)

    def score(self, image: Image.Image) -> float:
        """Vehicle score of one RGB image of any size (fitted like the gate was measured)."""
        pixels = fit_to_input(image, self.image_size, self.resize_mode)
        return float(self.scores(pixels[np.newaxis])[0])

    def is_vehicle(self, score: float) -> bool:
        """Whether ``score`` passes the gate's threshold."""
        return score >= self.threshold


def decide(answers: list[dict[str, Any]], *, threshold: float | None, vehicle_score: float | None,
           vehicle_threshold: float | None) -> str:
    """The verdict from the top answer and the gate score.

    Args:
        answers: Top-k answers, best first (``[{"label", "score"}, ...]``).
        threshold: Confidence threshold of the classifier; ``None`` means never ``uncertain``.
        vehicle_score: Gate score; ``None`` (no gate) means never ``not_a_car``.
        vehicle_threshold: Gate threshold, used with ``vehicle_score``.

    Returns:
        ``ok``, ``uncertain`` or ``not_a_car``.
    """
    if vehicle_score is not None and vehicle_threshold is not None and vehicle_score < vehicle_threshold:
        return "not_a_car"
    if threshold is not None and answers and answers[0]["score"] < threshold:
        return "uncertain"
    return "ok"


def confidence_threshold(metadata: dict[str, Any]) -> float | None:
    """The classifier's confidence threshold from its metadata, ``None`` when absent or unusable."""
    return threshold_of(metadata.get("confidence"))


def judge(answers: list[dict[str, Any]], metadata: dict[str, Any], gate: VehicleGate | None,
          vehicle_score: float | None) -> Verdict:
    """Decide the verdict of one classified image.

    Args:
        answers: The classifier's answers, best first.
        metadata: The served artifact's metadata (holds the confidence threshold).
        gate: The loaded vehicle gate, or ``None`` when it is off.
        vehicle_score: The gate's score for the image (``None`` without a gate).

    Returns:
        The :class:`Verdict`.
    """
    threshold = confidence_threshold(metadata)
    verdict = decide(answers, threshold=threshold, vehicle_score=vehicle_score,
                     vehicle_threshold=gate.threshold if gate is not None else None)
    return Verdict(verdict=verdict, vehicle_score=vehicle_score, threshold=threshold)


def load_vehicle_gate(configured: str | None, num_threads: int | None = None) -> VehicleGate | None:
    """Load the gate named by the ``VEHICLE_GATE_DIR`` setting (``none`` turns it off).

    The default (setting unset) is the shipped gate when it is present; a folder named explicitly must
    load, so a typo fails at start-up instead of silently answering without the check.

    Args:
        configured: The setting's value (a folder, relative to the repository or absolute).
        num_threads: Threads per inference.

    Returns:
        The gate, or ``None`` when it is off.
    """
    configured = (configured or "").strip()
    if configured.lower() == "none":
        return None
    if not configured:
        if not (SHIPPED_GATE_DIR / GATE_MODEL_FILE).is_file():
            return None
        configured = str(SHIPPED_GATE_DIR)
    folder = Path(configured)
    return VehicleGate(folder if folder.is_absolute() else REPO_ROOT / folder, num_threads=num_threads)
