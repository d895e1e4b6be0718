"""The result page's headline: the prediction's answer in words, at the level the model is sure of."""

from __future__ import annotations

from typing import Any

from inference.artifact import CLASS_LEVEL, OTHER_MAKE


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
