"""From class probabilities to an answer at every level: the class, and each label grouping (make, segment).

A group's score is the sum of its member classes' probabilities - or, for a model with a make output and
a grouping ``"from": "make_output"``, the sum of its member makes' probabilities from that output, which
knows makes beyond the classes (recent cars, :data:`.artifact.OTHER_MAKE`). Such a model answers at the
class level only when the class also agrees with those groupings' best label (its make is the make the
make output names). The answer is the most specific level
whose best score clears that level's confidence threshold (chosen on the validation split at the target
precision): first the model's own classes, then the groupings from the most to the least specific
(more group labels = more specific). No answer when the photo is not a car or when no level is sure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .artifact import CLASS_LEVEL, MAKE_OUTPUT

GROUP_TOP_K = 3


@dataclass(frozen=True)
class Grouping:
    """One label grouping of a model, ready to sum probabilities.

    Attributes:
        name: The grouping's name (``make``, ``segment``).
        labels: Group labels, in the order of the matrix columns.
        matrix: ``(num_members, num_groups)`` 0/1, one 1 per row; the members are the classes, or the
            make output's labels when ``source`` is ``make_output``.
        threshold: Confidence threshold of the group's top score, ``None`` when the metadata has none.
        source: ``classes`` or ``make_output``: which probabilities the group scores sum.
        blend: For a ``make_output`` grouping, the weight of the make output in its scores; the rest comes
            from the class probabilities summed through each class's make (``1.0``: the make output alone).
        of_class: For a ``make_output`` grouping, the group label of each class (through its make), which a
            class answer must agree with.
    """

    name: str
    labels: tuple[str, ...]
    matrix: np.ndarray
    threshold: float | None
    source: str = "classes"
    of_class: dict[str, str] | None = None
    blend: float = 1.0
    class_matrix: np.ndarray | None = None

    def members(self, label: str) -> np.ndarray:
        """Indices of the classes that make up group ``label``."""
        return np.flatnonzero(self.matrix[:, self.labels.index(label)])


def threshold_of(confidence: Any) -> float | None:
    """The ``threshold`` of a confidence section, ``None`` when absent or unusable."""
    value = (confidence or {}).get("threshold") if isinstance(confidence, dict) else None
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def groupings(metadata: dict[str, Any], labels: list[str]) -> list[Grouping]:
    """The artifact's groupings (already checked by the reader), most specific first.

    Args:
        metadata: The artifact's metadata.
        labels: The model's labels in output order.

    Returns:
        One :class:`Grouping` per entry of ``metadata["groups"]``, by descending number of group labels
        (ties by name, so the order never depends on the file).
    """
    result = []
    make_output = metadata.get(MAKE_OUTPUT) or {}
    for name, group in (metadata.get("groups") or {}).items():
        names = tuple(group["labels"])
        source = group.get("from", "classes")
        members = list(make_output["labels"]) if source == MAKE_OUTPUT else labels
        matrix = np.zeros((len(members), len(names)), dtype=np.float32)
        column = {label: i for i, label in enumerate(names)}
        for row, label in enumerate(members):
            matrix[row, column[group["of"][label]]] = 1.0
        of_class = class_matrix = None
        blend = 1.0
        if source == MAKE_OUTPUT:
            of_class = {label: group["of"][make_output["of"][label]] for label in labels}
            blend = float(group.get("blend", 1.0))
            class_matrix = np.zeros((len(labels), len(names)), dtype=np.float32)
            for row, label in enumerate(labels):
                class_matrix[row, column[of_class[label]]] = 1.0
        result.append(Grouping(name, names, matrix, threshold_of(group.get("confidence")), source, of_class,
                               blend, class_matrix))
    return sorted(result, key=lambda g: (-len(g.labels), g.name))


def group_sums(group: Grouping, probabilities: np.ndarray, make: np.ndarray | None = None) -> np.ndarray:
    """A grouping's scores, ``(..., num_groups)``, for one photo's probabilities or a batch of them.

    Args:
        group: From :func:`groupings`.
        probabilities: ``(..., num_classes)`` class probabilities.
        make: ``(..., num_makes)`` make-output probabilities, for a ``make_output`` grouping.

    Returns:
        The summed scores, float64.
    """
    source = make if group.source == MAKE_OUTPUT else probabilities
    if source is None:
        raise ValueError(f"grouping {group.name} sums the make output, and no make probabilities were given")
    sums = np.asarray(source, dtype=np.float64) @ group.matrix
    if group.class_matrix is not None and group.blend < 1.0:
        # Cropped photos of known models are told apart best by the classes, whole scenes and recent
        # cars by the make output: the artifact weighs the two as measured on both kinds of photos.
        by_class = np.asarray(probabilities, dtype=np.float64) @ group.class_matrix
        sums = group.blend * sums + (1.0 - group.blend) * by_class
    return sums


def group_scores(probabilities: np.ndarray, groups: list[Grouping], top_k: int = GROUP_TOP_K, *,
                 make: np.ndarray | None = None) -> dict[str, list[dict[str, Any]]]:
    """Per grouping, the best group labels with their summed probability (:func:`group_sums`).

    Args:
        probabilities: ``(num_classes,)`` class probabilities of one image.
        groups: From :func:`groupings`.
        top_k: How many group labels to keep (all of them when a grouping has no more than that).
        make: ``(num_makes,)`` make-output probabilities, for the ``make_output`` groupings.

    Returns:
        ``{name: [{"label", "score"}, ...]}``, best first.
    """
    scores = {}
    for group in groups:
        sums = group_sums(group, probabilities, make)
        best = np.argsort(-sums, kind="stable")[:top_k]
        scores[group.name] = [{"label": group.labels[i], "score": float(sums[i])} for i in best]
    return scores


def choose_answer(top: dict[str, Any], class_threshold: float | None, scores: dict[str, list[dict[str, Any]]],
                  groups: list[Grouping], verdict: str) -> dict[str, Any] | None:
    """The most specific level that is sure enough (a class only where the make output agrees with it).

    Args:
        top: The best class ``{"label", "score"}``.
        class_threshold: The classes' confidence threshold (``None``: the class level always answers).
        scores: From :func:`group_scores`.
        groups: From :func:`groupings`, most specific first.
        verdict: The prediction's verdict; ``not_a_car`` never gets an answer.

    Returns:
        ``{"level", "label", "score"}`` or ``None``.
    """
    if verdict == "not_a_car":
        return None
    agrees = all(group.of_class[top["label"]] == scores[group.name][0]["label"]
                 for group in groups if group.of_class is not None)
    if agrees and (class_threshold is None or top["score"] >= class_threshold):
        return {"level": CLASS_LEVEL, "label": top["label"], "score": float(top["score"])}
    for group in groups:
        best = scores[group.name][0]
        # A grouping without a threshold was never measured on val: it cannot vouch for an answer.
        if group.threshold is not None and best["score"] >= group.threshold:
            return {"level": group.name, "label": best["label"], "score": float(best["score"])}
    return None
