"""The result page's headline: the prediction's answer in words, at the level the model is sure of."""

from __future__ import annotations

from typing import Any

from inference.artifact import CLASS_LEVEL


def with_article(label: str) -> str:
    """``label`` with "A" or "An"; a lower-case label is a kind of car ("A premium car")."""
    noun = label if label[:1].isupper() else f"{label} car"
    return f"{'An' if noun[:1].lower() in 'aeiou' else 'A'} {noun}"


def headline(prediction: Any) -> dict[str, str] | None:
    """What the page says first about ``prediction``.

    Args:
        prediction: A stored prediction with ``answer`` and ``groups``.

    Returns:
        ``{"title", "doubt"}`` - e.g. ``"Audi 100 Wagon 1994"`` and ``""``; ``"An Audi"`` and ``"the model is
        not sure which one"``; ``"A premium car"`` and ``"not sure of the make"`` - or ``None`` when the
        prediction has no answer.
    """
    answer = prediction.answer
    if not answer:
        return None
    if answer["level"] == CLASS_LEVEL:
        return {"title": answer["label"], "doubt": ""}
    # The stored groups are in the model's order, most specific first: the level just finer than the
    # answer is what the model could not tell.
    levels = list(prediction.groups or {})
    position = levels.index(answer["level"]) if answer["level"] in levels else 0
    if position == 0:
        doubt = "the model is not sure which one"
    else:
        doubt = f"not sure of the {levels[position - 1]}"
    return {"title": with_article(answer["label"]), "doubt": doubt}
