"""Answers taught by example: a gallery of labelled embeddings beside the model.

An embedding is the model's last feature map averaged over its positions and scaled to unit length
(:meth:`.classifier.Classifier.outputs_and_embedding`), so the cosine similarity of a photo to every
taught example is one matrix-vector product. The nearest example's label becomes the answer when it is
close enough and the model's own answer is weaker (:func:`gallery_answer`); a model answer of
:data:`.artifact.OTHER_MAKE` ("a make this model does not know") counts as no answer.

"Close enough" is measured one of two ways:

* With **references** (``references.npy`` in the artifact, :func:`load_references`: embeddings of the
  model's own training photos), by the *margin*: the photo's similarity to the taught example minus its
  similarity to the nearest car the model already knows. A photo answers with a taught label only where
  it looks more like what was taught than like anything the model was trained on, which separates a new
  make from the known ones far better than any similarity level alone (``benchmarks/gallery.py``).
* Without, by the similarity itself.

The threshold (:func:`calibrate`) keeps two things rare. Leave-one-out over the gallery (each example
answered by the others) gives right and wrong matches between taught labels: the matches above the
threshold must be right at least ``target_precision`` of the time. Photos of the model's own cars (stored
negatives, and with references each reference against the others) must not be answered by the gallery:
with references at most ``max_false_rate`` of them may clear the threshold; without, they count as wrong
matches in the precision. The threshold is never below a floor (``floor`` for similarities, ``0`` for
margins: never nearer to a known car than to the taught one).

Pure NumPy: no web framework, no database. The app keeps one :class:`Gallery` per worker.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .artifact import CLASS_LEVEL, OTHER_MAKE, REFERENCES_FILE

LEVELS = (CLASS_LEVEL, "make")  # what a taught label names: one model of car, or a whole make
SOURCE_MODEL = "model"
SOURCE_GALLERY = "gallery"
# The floor: without it, false overrides rose past 1 % in benchmarks/gallery.py's floor study (2.0.0 and 3.1.0).
DEFAULT_MIN_SIMILARITY = 0.85
DEFAULT_TARGET_PRECISION = 0.98
# With references: the share of the model's own photos a taught label may answer. At 0.002 some random
# draws of taught photos let 1.1-1.2 % of known cars change to a taught make (benchmarks/gallery.py, 3.2.0);
# at 0.001 at most 0.6 %, for about 2 points fewer taught-make answers.
DEFAULT_MAX_FALSE_RATE = 0.001
MIN_MARGIN = 0.0


@dataclass(frozen=True)
class Match:
    """The taught label nearest to one photo.

    Attributes:
        label: The taught label.
        level: ``class`` or ``make``.
        score: Cosine similarity of the photo to the nearest example of that label.
        count: How many examples of the label the gallery holds.
        known: Similarity of the photo to the nearest reference (a car the model knows); ``None``
            without references.
    """

    label: str
    level: str
    score: float
    count: int
    known: float | None = None

    @property
    def strength(self) -> float:
        """What the threshold is compared with: the margin over the nearest known car, or the similarity."""
        return self.score if self.known is None else self.score - self.known


@dataclass(frozen=True)
class Gallery:
    """Taught examples as one matrix of unit embeddings, with their labels and levels.

    Attributes:
        embeddings: ``(n, d)`` float32, one unit row per example.
        labels: The label of each row.
        levels: The level of each row (``class`` or ``make``).
        threshold: The strength (:attr:`Match.strength`) a match must reach to answer.
        version: Which state of the store this was built from (the app's change counter).
        references: ``(m, d)`` unit embeddings of the model's own photos, or ``None``.
    """

    embeddings: np.ndarray
    labels: tuple[str, ...]
    levels: tuple[str, ...]
    threshold: float = DEFAULT_MIN_SIMILARITY
    version: int = 0
    counts: dict[str, int] = field(default_factory=dict, compare=False)
    references: np.ndarray | None = field(default=None, compare=False)

    @classmethod
    def build(cls, embeddings: Sequence[np.ndarray] | np.ndarray, labels: Sequence[str], levels: Sequence[str],
              *, threshold: float = DEFAULT_MIN_SIMILARITY, version: int = 0,
              references: np.ndarray | None = None) -> "Gallery":
        """A gallery from rows of embeddings (normalised here), their labels and levels, and optionally
        the references its matches are measured against (:func:`load_references`)."""
        matrix = unit_rows(embeddings, len(labels))
        if len(labels) != len(levels):
            raise ValueError("one level per label")
        if references is not None and len(labels) and references.shape[1] != matrix.shape[1]:
            references = None  # embedded by another model: matches fall back to their similarity
        return cls(matrix, tuple(labels), tuple(levels), float(threshold), int(version), dict(Counter(labels)),
                   references)

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
        known = None
        if self.references is not None:
            known = float(np.einsum("ij,j->i", self.references, np.asarray(embedding, dtype=np.float32)).max())
        return Match(label, self.levels[best], float(similarities[best]), self.counts.get(label, 0), known)

    def answer(self, embedding: np.ndarray | None, model_answer: dict[str, Any] | None,
               verdict: str) -> dict[str, Any] | None:
        """The answer with this gallery beside the model's (:func:`gallery_answer`)."""
        return gallery_answer(model_answer, self.nearest(embedding), self.threshold, verdict)


def gallery_answer(model_answer: dict[str, Any] | None, match: Match | None, threshold: float,
                   verdict: str) -> dict[str, Any] | None:
    """The model's answer, or the taught label when it is sure enough and the model's is weaker.

    A taught label answers when its :attr:`Match.strength` reaches ``threshold`` and the model has no
    answer, answers "a make it does not know" (:data:`.artifact.OTHER_MAKE`), or has a lower score than the
    match's similarity; a photo the vehicle check calls not a car gets no answer either way.

    Returns:
        The model's answer unchanged; or, when the gallery answers, ``{"level", "label", "score",
        "source": "gallery", "learned_from": <the label's example count>}``; ``None`` when nobody does.
    """
    if verdict == "not_a_car":
        return model_answer
    if match is not None and match.strength >= threshold and (
            model_answer is None or model_answer["label"] == OTHER_MAKE
            or float(model_answer["score"]) < match.score):
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


def unit_rows(vectors: Sequence[np.ndarray] | np.ndarray, count: int | None = None) -> np.ndarray:
    """``(n, d)`` float32 rows scaled to unit length (zero rows stay zero); ``(0, 0)`` when empty."""
    count = len(vectors) if count is None else count
    if not count:
        return np.zeros((0, 0), dtype=np.float32)
    matrix = np.asarray(vectors, dtype=np.float32).reshape(count, -1)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return np.ascontiguousarray(np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0))


def load_references(model_dir: str | Path, width: int | None = None) -> np.ndarray | None:
    """The artifact's references as unit float32 rows, ``None`` when it has none (or of another width).

    Args:
        model_dir: Artifact folder.
        width: The embedding width the served copy gives, when known.
    """
    path = Path(model_dir) / REFERENCES_FILE
    if not path.is_file():
        return None
    matrix = unit_rows(np.load(path, allow_pickle=False))
    if matrix.ndim != 2 or not len(matrix) or (width is not None and matrix.shape[1] != width):
        return None
    return matrix


def nearest_known(vectors: np.ndarray, references: np.ndarray, *, leave_out_self: bool = False) -> np.ndarray:
    """Each row's similarity to its nearest reference (``leave_out_self``: ``vectors`` are the references,
    and a row's own is skipped)."""
    similarities = np.asarray(vectors, dtype=np.float32) @ references.T
    if leave_out_self:
        np.fill_diagonal(similarities, -np.inf)
    return similarities.max(axis=1).astype(np.float64)


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
              floor: float = DEFAULT_MIN_SIMILARITY, references: np.ndarray | None = None,
              max_false_rate: float = DEFAULT_MAX_FALSE_RATE) -> Calibration:
    """Choose the gallery's threshold (see the module's docstring).

    Args:
        embeddings: ``(n, d)`` unit embeddings of the taught examples.
        labels: Their labels.
        negatives: ``(m, d)`` unit embeddings of photos of other cars (the model's validation photos),
            every match of which is wrong; ``None`` for leave-one-out alone.
        target_precision: Share of matches above the threshold that must be right.
        floor: The lowest similarity threshold allowed without references (few examples measure
            precision poorly).
        references: ``(r, d)`` unit embeddings of the model's own photos: the threshold is then a margin
            (:attr:`Match.strength`), see :func:`calibrate_margin`.
        max_false_rate: With references, the share of negatives and references allowed to clear it.

    Returns:
        The :class:`Calibration`.
    """
    if references is not None and len(labels) and references.shape[1] == np.shape(embeddings)[1]:
        return calibrate_margin(embeddings, labels, negatives, references, target_precision=target_precision,
                                max_false_rate=max_false_rate)
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
    return Calibration(threshold, precision_at, label_accuracy(labels, loo_scores, loo_right, threshold))


def precision_threshold(scores: np.ndarray, right: np.ndarray, target_precision: float) -> float | None:
    """The lowest right score at which the matches at or above it are right at least ``target_precision``
    of the time (``None`` when there is none)."""
    finite = np.isfinite(scores)
    scores, right = scores[finite], right[finite]
    order = np.argsort(-scores, kind="stable")
    precision = np.cumsum(right[order]) / np.arange(1, len(order) + 1)
    good = np.flatnonzero((precision >= target_precision) & right[order])
    return float(scores[order][good[-1]]) if len(good) else None


def calibrate_margin(embeddings: np.ndarray, labels: Sequence[str], negatives: np.ndarray | None,
                     references: np.ndarray, *, target_precision: float = DEFAULT_TARGET_PRECISION,
                     max_false_rate: float = DEFAULT_MAX_FALSE_RATE) -> Calibration:
    """The margin threshold: at most ``max_false_rate`` of the model's own photos clear it (of the references,
    each against the others, and of the stored negatives, each set on its own), the taught labels' leave-one-out matches above it are right
    at least ``target_precision`` of the time, and it is never below :data:`MIN_MARGIN`."""
    matrix = np.asarray(embeddings, dtype=np.float32)
    loo_scores, loo_right = leave_one_out(matrix, labels)
    loo_margins = loo_scores - nearest_known(matrix, references)
    foreign = [references]
    if negatives is not None and len(negatives):
        foreign.append(np.asarray(negatives, dtype=np.float32))
    # Each set on its own: a handful of stored negatives must not drown in thousands of references.
    threshold = MIN_MARGIN
    for index, rows in enumerate(foreign):
        wrong = (rows @ matrix.T).max(axis=1) - nearest_known(rows, references, leave_out_self=index == 0)
        # Just above the quantile: a photo exactly at it (a single stored negative is its own quantile) is out.
        threshold = max(threshold, float(np.quantile(wrong, 1.0 - max_false_rate)) + 1e-6)
    among_taught = precision_threshold(loo_margins, loo_right, target_precision)
    if among_taught is None and np.isfinite(loo_margins).any() and not loo_right.any():
        among_taught = float(np.max(loo_margins[np.isfinite(loo_margins)])) + 1e-6  # every match is wrong
    threshold = max(threshold, among_taught or MIN_MARGIN)
    above = loo_margins >= threshold
    precision_at = float(loo_right[above].mean()) if above.any() else 1.0
    return Calibration(threshold, precision_at, label_accuracy(labels, loo_margins, loo_right, threshold))


def label_accuracy(labels: Sequence[str], scores: np.ndarray, right: np.ndarray, threshold: float) -> dict[str, float]:
    """Per label, the share of its examples that leave-one-out answers with it at ``threshold``."""
    names = np.asarray(labels, dtype=object)
    return {label: float((right[names == label] & (scores[names == label] >= threshold)).mean())
            for label in dict.fromkeys(labels)}
