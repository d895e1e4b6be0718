"""Answers taught by example: a gallery of labelled embeddings beside the model.

An embedding is the model's last feature map averaged over its positions and scaled to unit length
(:meth:`.classifier.Classifier.outputs_and_embedding`), so the cosine similarity of a photo to every
taught example is one matrix-vector product. The nearest example's label becomes the answer when its
similarity clears the gallery's threshold and the model's own answer is weaker (:func:`gallery_answer`).

The threshold is chosen for precision (:func:`calibrate`): leave-one-out over the gallery (each example
answered by the others) gives right and wrong matches, photos of the model's own classes (when given)
are matches that must not happen; the lowest similarity at which the matches above it are right at
least ``target_precision`` of the time is the threshold, never below a configured floor.

Pure NumPy: no web framework, no database. The app keeps one :class:`Gallery` per worker.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .artifact import CLASS_LEVEL

LEVELS = (CLASS_LEVEL, "make")  # what a taught label names: one model of car, or a whole make
SOURCE_MODEL = "model"
SOURCE_GALLERY = "gallery"
# The floor: without it, false overrides rose past 1 % in benchmarks/gallery.py's floor study (2.0.0 and 3.1.0).
DEFAULT_MIN_SIMILARITY = 0.85
DEFAULT_TARGET_PRECISION = 0.98


@dataclass(frozen=True)
class Match:
    """The taught label nearest to one photo.

    Attributes:
        label: The taught label.
        level: ``class`` or ``make``.
        score: Cosine similarity of the photo to the nearest example of that label.
        count: How many examples of the label the gallery holds.
    """

    label: str
    level: str
    score: float
    count: int


@dataclass(frozen=True)
class Gallery:
    """Taught examples as one matrix of unit embeddings, with their labels and levels.

    Attributes:
        embeddings: ``(n, d)`` float32, one unit row per example.
        labels: The label of each row.
        levels: The level of each row (``class`` or ``make``).
        threshold: Similarity a match must reach to answer.
        version: Which state of the store this was built from (the app's change counter).
    """

    embeddings: np.ndarray
    labels: tuple[str, ...]
    levels: tuple[str, ...]
    threshold: float = DEFAULT_MIN_SIMILARITY
    version: int = 0
    counts: dict[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, embeddings: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str], levels: Sequence[str],
              *, threshold: float = DEFAULT_MIN_SIMILARITY, version: int = 0) -> "Gallery":
        """A gallery from rows of embeddings (normalised here) and their labels and levels."""
        matrix = np.asarray(embeddings, dtype=np.float32).reshape(len(labels), -1) if len(labels) else \
            np.zeros((0, 0), dtype=np.float32)
        if len(labels) != len(levels):
            raise ValueError("one level per label")
        norms = np.linalg.norm(matrix, axis=1, keepdims=True) if len(labels) else None
        if norms is not None:
            matrix = np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)
        return cls(np.ascontiguousarray(matrix), tuple(labels), tuple(levels), float(threshold), int(version),
                   dict(Counter(labels)))

    @classmethod
    def empty(cls, version: int = 0) -> "Gallery":
        """A gallery that answers nothing."""
        return cls.build([], [], [], version=version)

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def is_empty(self) -> bool:
        """Whether nothing was taught (the pipeline then skips the embedding altogether)."""
        return not self.labels

    def nearest(self, embedding: np.ndarray | None) -> Match | None:
        """The taught label nearest to ``embedding`` (whatever its similarity), ``None`` when empty.

        Args:
            embedding: ``(d,)`` unit embedding of the photo.
        """
        if self.is_empty or embedding is None or self.embeddings.shape[1] != np.shape(embedding)[-1]:
            return None
        # einsum's own loop, not BLAS: a threaded BLAS wakes its threads for a product this size, which
        # costs milliseconds on a busy machine against a tenth of one on the request's own core.
        similarities = np.einsum("ij,j->i", self.embeddings, np.asarray(embedding, dtype=np.float32))
        best = int(np.argmax(similarities))
        label = self.labels[best]
        return Match(label, self.levels[best], float(similarities[best]), self.counts.get(label, 0))

    def answer(self, embedding: np.ndarray | None, model_answer: dict[str, Any] | None,
               verdict: str) -> dict[str, Any] | None:
        """The answer with this gallery beside the model's (:func:`gallery_answer`)."""
        return gallery_answer(model_answer, self.nearest(embedding), self.threshold, verdict)


def gallery_answer(model_answer: dict[str, Any] | None, match: Match | None, threshold: float,
                   verdict: str) -> dict[str, Any] | None:
    """The model's answer, or the taught label when it is sure enough and the model's is weaker.

    A taught label answers when its similarity reaches ``threshold`` and the model has no answer or a
    lower score; a photo the vehicle check calls not a car gets no answer either way.

    Returns:
        The model's answer unchanged; or, when the gallery answers, ``{"level", "label", "score",
        "source": "gallery", "learned_from": <the label's example count>}``; ``None`` when nobody does.
    """
    if verdict == "not_a_car":
        return model_answer
    if match is not None and match.score >= threshold and (
            model_answer is None or float(model_answer["score"]) < match.score):
        return {"level": match.level, "label": match.label, "score": match.score, "source": SOURCE_GALLERY,
                "learned_from": match.count}
    return model_answer


@dataclass(frozen=True)
class Calibration:
    """A threshold chosen for precision, and what leave-one-out measured at it.

    Attributes:
        threshold: The similarity a match must reach.
        precision: Share of right matches among those at or above it (1.0 when there are none).
        accuracy: Per label, the share of its examples that the others answer with it at the threshold.
    """

    threshold: float
    precision: float
    accuracy: dict[str, float]


def leave_one_out(embeddings: np.ndarray, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """For each example, the similarity of its nearest other example and whether that one has its label.

    Returns:
        ``(similarities (n,), right (n,) bool)``; an example alone in the gallery gets ``-inf``.
    """
    n = len(labels)
    if n == 0:
        return np.zeros(0), np.zeros(0, dtype=bool)
    matrix = np.asarray(embeddings, dtype=np.float32)
    similarities = matrix @ matrix.T
    np.fill_diagonal(similarities, -np.inf)
    best = np.argmax(similarities, axis=1)
    names = np.asarray(labels, dtype=object)
    return similarities[np.arange(n), best].astype(np.float64), names[best] == names


def calibrate(embeddings: np.ndarray, labels: Sequence[str], negatives: np.ndarray | None = None, *,
              target_precision: float = DEFAULT_TARGET_PRECISION,
              floor: float = DEFAULT_MIN_SIMILARITY) -> Calibration:
    """Choose the gallery's threshold for precision (see the module's docstring).

    Args:
        embeddings: ``(n, d)`` unit embeddings of the taught examples.
        labels: Their labels.
        negatives: ``(m, d)`` unit embeddings of photos of other cars (the model's validation photos),
            every match of which is wrong; ``None`` for leave-one-out alone.
        target_precision: Share of matches above the threshold that must be right.
        floor: The lowest threshold allowed (few examples measure precision poorly).

    Returns:
        The :class:`Calibration`.
    """
    loo_scores, loo_right = leave_one_out(embeddings, labels)
    scores, right = [loo_scores], [loo_right]
    if negatives is not None and len(negatives) and len(labels):
        negative_scores = (np.asarray(negatives, dtype=np.float32) @ np.asarray(embeddings, dtype=np.float32).T)
        scores.append(negative_scores.max(axis=1).astype(np.float64))
        right.append(np.zeros(len(negatives), dtype=bool))
    all_scores, all_right = np.concatenate(scores), np.concatenate(right)
    finite = np.isfinite(all_scores)
    all_scores, all_right = all_scores[finite], all_right[finite]
    threshold = float(floor)
    order = np.argsort(-all_scores, kind="stable")
    if len(order):
        ranked, hits = all_scores[order], np.cumsum(all_right[order])
        precision = hits / np.arange(1, len(order) + 1)
        # Precision over the matches at or above each candidate: the lowest right match at which it still
        # reaches the target is the threshold (none: above every match, the gallery then never answers).
        good = np.flatnonzero((precision >= target_precision) & all_right[order])
        threshold = max(threshold, float(ranked[good[-1]]) if len(good) else float(ranked[0]) + 1e-6)
    above = all_scores >= threshold
    precision_at = float(all_right[above].mean()) if above.any() else 1.0
    accuracy = {}
    for label in dict.fromkeys(labels):
        mine = np.asarray([name == label for name in labels])
        answered = loo_right[mine] & (loo_scores[mine] >= threshold)
        accuracy[label] = float(answered.mean()) if mine.any() else 0.0
    return Calibration(threshold, precision_at, accuracy)
