"""The headline of a prediction: its answer in words, at the level the model is sure of.

The result page, the batch cards (through the JSON), the admin pages and the CSV all lead with it, so one
photo reads the same everywhere."""

from __future__ import annotations

from typing import Any

from inference.artifact import CLASS_LEVEL, OTHER_MAKE

from ..serving import get_classifier


def with_article(label: str) -> str:
    """``label`` with "A" or "An"; a lower-case label is a kind of car ("A premium car")."""
    noun = label if label[:1].isupper() else f"{label} car"
    return f"{'An' if noun[:1].lower() in 'aeiou' else 'A'} {noun}"


def headline(prediction: Any, make_of: dict[str, str] | None = None, known_classes: int | None = None
             ) -> dict[str, str] | None:
    """What the page says first about ``prediction``.

    Args:
        prediction: A stored prediction with ``answer``, ``groups`` and ``top_k``.
        make_of: The serving model's make of each class, when it has a make output: a make answer whose
            best class is of another make is a car beyond the classes the model knows.
        known_classes: How many classes the model knows, for that sentence.

    Returns:
        ``{"title", "doubt"}`` - e.g. ``"Audi 100 Wagon 1994"`` and ``""``; ``"An Audi"`` and ``"the model is
        not sure which one"``; ``"A BMW"`` and ``"a model newer than the 196 it knows"``; ``"A premium car"``
        and ``"not sure of the make"`` - or ``None`` when the prediction has no answer.
    """
    answer = prediction.answer
    if not answer:
        return None
    if answer.get("source") == "gallery":
        count = answer.get("learned_from")
        photos = f"{count} photo{'' if count == 1 else 's'}" if count else "photos"
        title = answer["label"] if answer["level"] == CLASS_LEVEL else with_article(answer["label"])
        return {"title": title, "doubt": f"learned from {photos} you added"}
    if answer["level"] == CLASS_LEVEL:
        return {"title": answer["label"], "doubt": ""}
    if answer["label"] == OTHER_MAKE:
        return {"title": "A car of a make this model does not know", "doubt": "it knows the makes it was taught"}
    top = (prediction.top_k or [{}])[0].get("label")
    if answer["level"] == "make" and make_of and top in make_of and make_of[top] != answer["label"]:
        # The make output names the make, and no class of that make fits: the exact model is not one it knows.
        count = f"the {known_classes}" if known_classes else "those"
        return {"title": with_article(answer["label"]), "doubt": f"a model newer than {count} it knows"}
    # The stored groups are in the model's order, most specific first: the level just finer than the
    # answer is what the model could not tell.
    levels = list(prediction.groups or {})
    position = levels.index(answer["level"]) if answer["level"] in levels else 0
    if position == 0:
        doubt = "the model is not sure which one"
    else:
        doubt = f"not sure of the {levels[position - 1]}"
    return {"title": with_article(answer["label"]), "doubt": doubt}


NOT_A_CAR = "not_a_car"
UNSURE = "unsure"
ANSWERED = "answer"
TOP_LABEL = "top_label"


def summary(prediction: Any, make_of: dict[str, str] | None = None, known_classes: int | None = None
            ) -> dict[str, Any]:
    """The one sentence every surface leads with (result page, batch card, admin, CSV, JSON).

    Returns:
        ``{"kind", "text", "doubt", "level", "label", "score"}``. ``kind`` is ``not_a_car`` when the
        vehicle check said so (whatever the car guesses are), ``answer`` for an answer at some level,
        ``unsure`` when no level clears its threshold, and ``top_label`` for predictions stored before
        answers existed that were not unsure, which can only be described by their top-1 label.
    """
    if prediction.verdict == NOT_A_CAR:
        return {"kind": NOT_A_CAR, "text": "This does not look like a car",
                "doubt": "the vehicle check found no car in this photo", "level": None, "label": None,
                "score": None}
    found = headline(prediction, make_of, known_classes)
    if found is not None:
        answer = prediction.answer
        return {"kind": ANSWERED, "text": found["title"], "doubt": found["doubt"], "level": answer["level"],
                "label": answer["label"], "score": answer["score"]}
    # Stored before answers existed: a sure top-1 (or one logged before verdicts) is all there is to say.
    if prediction.verdict in (None, "ok"):
        return {"kind": TOP_LABEL, "text": prediction.top_label, "doubt": "", "level": None, "label": None,
                "score": None}
    return {"kind": UNSURE, "text": "Not sure", "doubt": "no answer clears this model's thresholds",
            "level": None, "label": None, "score": None}


def served_makes() -> tuple[dict[str, str] | None, int]:
    """The serving model's make of each class (``None`` without a make grouping) and its class count."""
    classifier = get_classifier()
    make_of = next((g.of_class for g in classifier.groupings if g.name == "make" and g.of_class), None)
    return make_of, len(classifier.labels)


def served_summary(prediction: Any) -> dict[str, Any]:
    """:func:`summary` with what the serving model knows (its makes, its class count)."""
    return summary(prediction, *served_makes())


def prediction_json(prediction: Any) -> dict[str, Any]:
    """The API body of ``prediction``: its ``headline`` first, then the answer, then the detail."""
    body = prediction.to_dict()
    lead = {"id": body.pop("id"), "headline": served_summary(prediction), "answer": body.pop("answer"),
            "verdict": body.pop("verdict")}
    return {**lead, **body}


def in_words(lead: dict[str, Any]) -> str:
    """One line for a table cell or a CSV field: ``"A BMW - the model is not sure which one"``."""
    return f"{lead['text']} - {lead['doubt']}" if lead["doubt"] else lead["text"]


class StoredAnswer:
    """The columns :func:`summary` reads, for callers that select plain rows instead of predictions."""

    def __init__(self, verdict, answer_level, answer_label, answer_score, groups, top_k, top_label):
        self.verdict, self.groups, self.top_k, self.top_label = verdict, groups, top_k, top_label
        self.answer = None if answer_level is None else {"level": answer_level, "label": answer_label,
                                                         "score": answer_score}


def listed_summary(prediction: Any, makes: tuple[dict[str, str] | None, int]) -> dict[str, Any]:
    """:func:`summary` of a prediction loaded without its top-k (the admin list defers it): the top-1
    label, which is all the headline reads of the top-k, is a column of its own."""
    return summary(StoredAnswer(prediction.verdict, prediction.answer_level, prediction.answer_label,
                                prediction.answer_score, prediction.groups, [{"label": prediction.top_label}],
                                prediction.top_label), *makes)


def served_group_of() -> dict[str, dict[str, str]]:
    """``{grouping: {class label: group label}}`` of the serving model, for judging answers at their level."""
    classifier = get_classifier()
    group_of = {}
    for grouping in classifier.groupings:
        if grouping.of_class:
            group_of[grouping.name] = dict(grouping.of_class)
        elif grouping.source == "classes":
            group_of[grouping.name] = {label: grouping.labels[int(row.argmax())]
                                       for label, row in zip(classifier.labels, grouping.matrix)}
    return group_of
