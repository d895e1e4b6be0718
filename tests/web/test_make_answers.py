"""Answers of a model with a make output: the make level from that output, the class only where it agrees,
premium/basic derived from the make, "Other make", and the headline that says why a make answer stops there."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from inference.answers import choose_answer, group_scores, groupings
from inference.artifact import OTHER_MAKE, check_groups, check_make_output

LABELS = ["Audi TT 2011", "BMW M3 2012", "BMW X5 2007"]
MAKES = ["Audi", "BMW", "Tesla", OTHER_MAKE]


def _metadata(make_threshold=0.6, segment_threshold=0.9) -> dict:
    segment_of = {"Audi": "premium", "BMW": "premium", "Tesla": "premium", OTHER_MAKE: "basic"}
    return {
        "make_output": {"labels": MAKES, "of": {"Audi TT 2011": "Audi", "BMW M3 2012": "BMW", "BMW X5 2007": "BMW"}},
        "groups": {
            "make": {"labels": sorted(MAKES), "of": {m: m for m in MAKES}, "from": "make_output",
                     "confidence": {"threshold": make_threshold}},
            "segment": {"labels": ["basic", "premium"], "of": segment_of, "from": "make_output",
                        "confidence": {"threshold": segment_threshold}},
        },
    }


def _answer(class_p, make_p, class_threshold=0.5, metadata=None):
    metadata = metadata or _metadata()
    groups = groupings(metadata, LABELS)
    class_p, make_p = np.asarray(class_p, dtype=np.float32), np.asarray(make_p, dtype=np.float32)
    best = int(class_p.argmax())
    top = {"label": LABELS[best], "score": float(class_p[best])}
    return choose_answer(top, class_threshold, group_scores(class_p, groups, make=make_p), groups, "ok")


def test_group_scores_come_from_the_make_output_not_from_the_classes():
    groups = groupings(_metadata(), LABELS)
    scores = group_scores(np.array([0.1, 0.8, 0.1]), groups, make=np.array([0.7, 0.1, 0.15, 0.05]))
    assert scores["make"][0] == {"label": "Audi", "score": pytest.approx(0.7)}
    assert scores["segment"][0] == {"label": "premium", "score": pytest.approx(0.95)}
    with pytest.raises(ValueError, match="make probabilities"):
        group_scores(np.array([0.1, 0.8, 0.1]), groups)


def test_a_sure_class_answers_at_the_class_level_when_its_make_agrees():
    assert _answer([0.05, 0.9, 0.05], [0.05, 0.9, 0.03, 0.02]) == {"level": "class", "label": "BMW M3 2012",
                                                                   "score": pytest.approx(0.9)}


def test_a_sure_class_of_another_make_gives_way_to_the_make_output():
    # The class head is sure of an old Audi; the make output, which knows recent cars, says BMW.
    answer = _answer([0.9, 0.05, 0.05], [0.1, 0.85, 0.03, 0.02])
    assert answer == {"level": "make", "label": "BMW", "score": pytest.approx(0.85)}


def test_a_make_answer_needs_its_own_threshold_then_segment_then_none():
    assert _answer([0.4, 0.3, 0.3], [0.45, 0.45, 0.05, 0.05])["level"] == "segment"
    assert _answer([0.4, 0.3, 0.3], [0.3, 0.3, 0.1, 0.3]) is None


def test_other_make_is_an_answer_and_is_basic():
    answer = _answer([0.4, 0.3, 0.3], [0.05, 0.05, 0.05, 0.85])
    assert answer == {"level": "make", "label": OTHER_MAKE, "score": pytest.approx(0.85)}
    assert _answer([0.4, 0.3, 0.3], [0.2, 0.1, 0.05, 0.65], metadata=_metadata(make_threshold=0.7,
                                                                                 segment_threshold=0.6)) == {
        "level": "segment", "label": "basic", "score": pytest.approx(0.65)}


def test_the_reader_checks_make_groupings_against_the_make_labels():
    metadata = _metadata()
    assert check_make_output(metadata["make_output"], LABELS) == MAKES
    check_groups(metadata["groups"], LABELS, MAKES)
    with pytest.raises(ValueError, match="make output"):
        check_groups(metadata["groups"], LABELS, [])
    broken = {**metadata["groups"]["segment"], "of": {"Audi": "premium"}}
    with pytest.raises(ValueError, match="without a group"):
        check_groups({"segment": broken}, LABELS, MAKES)
    with pytest.raises(ValueError, match="every class its make"):
        check_make_output({"labels": MAKES, "of": {"Audi TT 2011": "Audi"}}, LABELS)


def _prediction(level, label, top):
    return SimpleNamespace(answer={"level": level, "label": label, "score": 0.9}, groups={"make": [], "segment": []},
                           top_k=[{"label": top, "score": 0.3}])


def test_the_headline_says_when_the_exact_model_is_beyond_what_it_knows():
    from app.upload.headline import headline

    make_of = _metadata()["make_output"]["of"]
    beyond = headline(_prediction("make", "BMW", "Audi TT 2011"), make_of, 196)
    assert beyond == {"title": "A BMW", "doubt": "a model newer than the 196 it knows"}
    unsure = headline(_prediction("make", "BMW", "BMW X5 2007"), make_of, 196)
    assert unsure == {"title": "A BMW", "doubt": "the model is not sure which one"}
    other = headline(_prediction("make", OTHER_MAKE, "BMW X5 2007"), make_of, 196)
    assert other["title"] == "A car of a make this model does not know"


def test_integer_outputs_are_renormalised_so_shown_scores_add_up():
    from inference.classifier import _normalised

    quantised = np.array([[0.5, 0.3, 0.16], [0.0, 0.0, 0.0]], dtype=np.float32)
    fixed = _normalised(quantised)
    assert fixed[0].sum() == pytest.approx(1.0, abs=1e-6)
    assert fixed[0].argmax() == 0 and np.all(fixed[1] == 0)


def test_a_blended_make_grouping_weighs_the_make_output_against_the_summed_classes():
    metadata = _metadata()
    for group in metadata["groups"].values():
        group["blend"] = 0.5
    groups = groupings(metadata, LABELS)
    # Classes say BMW (0.2 + 0.6), the make output says Audi 0.7: half and half gives BMW 0.45, Audi 0.45.
    scores = group_scores(np.array([0.2, 0.6, 0.2]), groups, make=np.array([0.7, 0.1, 0.1, 0.1]))
    by_label = {row["label"]: row["score"] for row in scores["make"]}
    assert by_label["Audi"] == pytest.approx(0.5 * 0.7 + 0.5 * 0.2)
    assert by_label["BMW"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.8)
    assert scores["segment"][0] == {"label": "premium", "score": pytest.approx(0.5 * 0.9 + 0.5 * 1.0)}
