"""Test-time augmentation: which views of a photo the model sees, and how their outputs are combined.

With ``tta: flip`` a photo's answer is the mean of the model's outputs on the photo and on its mirror
image. The mirror image changes little when the model is already sure, so an artifact may set
``tta_skip_above``: when every output's top probability on the photo alone reaches it, the mirror view
is not run and the photo's own outputs are the answer. ``python -m training tta`` chooses the value on
validation photos. Serving (:class:`.classifier.Classifier`), evaluation, quantisation and the
threshold calibration all combine views through :func:`combine_views`, so the figures an artifact
reports are those of the answers it serves.
"""

from __future__ import annotations

from typing import Any

import numpy as np

SKIP_KEY = "tta_skip_above"


def skip_above(metadata: dict[str, Any]) -> float | None:
    """The artifact's ``tta_skip_above`` (``None``: the mirror view is always run with ``tta: flip``)."""
    value = metadata.get(SKIP_KEY)
    return None if value is None else float(value)


def check_skip_above(value: Any) -> None:
    """Raise ``ValueError`` unless ``value`` is ``None`` or a number in (0, 1]."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{SKIP_KEY} is {value!r}, not a probability in (0, 1]")


def confident(rows: np.ndarray, num_classes: int, threshold: float | None) -> np.ndarray:
    """Whether each row is sure enough to skip its mirror view.

    Args:
        rows: ``(N, num_classes [+ num_makes])`` model outputs of single views, classes first.
        num_classes: Width of the class part; any columns after it are the make output.
        threshold: ``tta_skip_above``; ``None`` is never sure enough.

    Returns:
        ``(N,)`` bool: the top class probability, and the top make probability when there is a make
        output, both reach ``threshold`` (each part is scaled to sum to 1 first, as the answer is).
    """
    rows = np.asarray(rows, dtype=np.float64)
    if threshold is None:
        return np.zeros(rows.shape[0], dtype=bool)
    sure = np.ones(rows.shape[0], dtype=bool)
    for part in (rows[:, :num_classes], rows[:, num_classes:]):
        if part.shape[1]:
            total = part.sum(axis=1)
            top = np.divide(part.max(axis=1), total, out=np.zeros_like(total), where=total > 0)
            sure &= top >= threshold
    return sure


def combine_views(first: np.ndarray, mirrored: np.ndarray | None, num_classes: int,
                  threshold: float | None = None) -> np.ndarray:
    """What each photo's answer is computed from, given its outputs on itself and on its mirror image.

    Args:
        first: ``(N, width)`` outputs on the photos.
        mirrored: ``(N, width)`` outputs on their mirror images, or ``None`` without flip averaging.
        num_classes: Width of the class part (see :func:`confident`).
        threshold: ``tta_skip_above``: rows of ``first`` sure at this level are kept as they are.

    Returns:
        ``(N, width)``: the mean of both views, or the first view alone where it is sure.
    """
    if mirrored is None:
        return np.asarray(first)
    averaged = (np.asarray(first, dtype=np.float64) + np.asarray(mirrored, dtype=np.float64)) / 2.0
    keep = confident(first, num_classes, threshold)
    return np.where(keep[:, None], np.asarray(first, dtype=np.float64), averaged).astype(np.asarray(first).dtype)
