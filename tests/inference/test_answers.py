"""Label groups: the reader's checks, group scores summing the right members, and the answer level."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from inference.answers import choose_answer, group_scores, groupings
from inference.artifact import ArtifactError, check_groups, read_artifact
from support import REPO_ROOT, manual_text

LABELS = ["Audi A4", "Audi A6", "BMW X5", "BMW M3", "Fiat Panda"]
MAKE = {"Audi A4": "Audi", "Audi A6": "Audi", "BMW X5": "BMW", "BMW M3": "BMW", "Fiat Panda": "Fiat"}
SEGMENT = {"Audi A4": "premium", "Audi A6": "premium", "BMW X5": "premium", "BMW M3": "premium",
           "Fiat Panda": "basic"}


def metadata(class_threshold=0.6, make_threshold=0.7, segment_threshold=0.8):
    return copy.deepcopy({
        "confidence": {"threshold": class_threshold},
        "groups": {
            # Declared least specific first: the answer must not depend on the file's order.
            "segment": {"labels": ["basic", "premium"], "of": SEGMENT, "confidence": {"threshold": segment_threshold}},
            "make": {"labels": ["Audi", "BMW", "Fiat"], "of": MAKE, "confidence": {"threshold": make_threshold}},
        },
    })


# -- validation ---------------------------------------------------------------------------------------

def test_well_formed_groups_pass():
    check_groups(metadata()["groups"], LABELS)


@pytest.mark.parametrize("breakage, message", [
    (lambda g: g["make"]["of"].pop("BMW M3"), "without a group"),
    (lambda g: g["make"]["of"].update({"Tesla S": "Tesla"}), "not one of the model's labels"),
    (lambda g: g["make"]["of"].update({"Fiat Panda": "Lancia"}), "not in make.labels"),
    (lambda g: g["make"]["labels"].append("Lada"), "no label maps to"),
    (lambda g: g["make"]["labels"].append("Audi"), "twice"),
    (lambda g: g["make"].update(labels=[]), "non-empty list"),
    (lambda g: g["make"].update(of=["Audi"]), "is not an object"),
    (lambda g: g.update({"class": g["make"]}), "reserved"),
])
def test_a_broken_grouping_is_refused(breakage, message):
    groups = metadata()["groups"]
    breakage(groups)
    with pytest.raises(ValueError, match=message):
        check_groups(groups, LABELS)


def test_the_reader_refuses_an_artifact_whose_groups_break_the_rules(tmp_path):
    document = {"format_version": 1, "image_size": [32, 32], **metadata()}
    document["groups"]["make"]["of"]["Fiat Panda"] = "Ferrari"
    (tmp_path / "metadata.json").write_text(json.dumps(document))
    (tmp_path / "labels.json").write_text(json.dumps(LABELS))
    with pytest.raises(ArtifactError, match="groups: make maps 'Fiat Panda' to 'Ferrari'"):
        read_artifact(tmp_path)
    document["groups"]["make"]["of"]["Fiat Panda"] = "Fiat"
    (tmp_path / "metadata.json").write_text(json.dumps(document))
    assert read_artifact(tmp_path)[1] == LABELS


# -- scores -------------------------------------------------------------------------------------------

def test_groupings_are_ordered_most_specific_first():
    assert [g.name for g in groupings(metadata(), LABELS)] == ["make", "segment"]


def test_group_scores_sum_exactly_the_members():
    probabilities = np.array([0.10, 0.25, 0.05, 0.20, 0.40])
    scores = group_scores(probabilities, groupings(metadata(), LABELS))
    assert scores["make"] == [{"label": "Fiat", "score": pytest.approx(0.40)},
                              {"label": "Audi", "score": pytest.approx(0.35)},
                              {"label": "BMW", "score": pytest.approx(0.25)}]
    assert scores["segment"] == [{"label": "premium", "score": pytest.approx(0.60)},
                                 {"label": "basic", "score": pytest.approx(0.40)}]


def test_group_scores_keep_the_best_three_of_a_large_grouping():
    labels = [f"model {i}" for i in range(10)]
    of = {label: f"make {i // 2}" for i, label in enumerate(labels)}
    meta = {"groups": {"make": {"labels": sorted(set(of.values())), "of": of, "confidence": {}}}}
    probabilities = np.array([0.01, 0.02, 0.3, 0.1, 0.05, 0.05, 0.2, 0.17, 0.06, 0.03])
    best = group_scores(probabilities, groupings(meta, labels))["make"]
    assert [entry["label"] for entry in best] == ["make 1", "make 3", "make 2"]
    assert best[0]["score"] == pytest.approx(0.4) and len(best) == 3


# -- answer level -------------------------------------------------------------------------------------

def answer_for(probabilities, verdict="ok", **thresholds):
    meta = metadata(**thresholds)
    groups = groupings(meta, LABELS)
    best = int(np.argmax(probabilities))
    top = {"label": LABELS[best], "score": float(probabilities[best])}
    return choose_answer(top, meta["confidence"]["threshold"], group_scores(np.asarray(probabilities), groups),
                         groups, verdict)


@pytest.mark.parametrize("top, expected", [(0.6, "class"), (0.6001, "class"), (0.5999, "make")])
def test_the_class_answers_at_and_above_its_threshold(top, expected):
    # Audi A4 at `top`, the rest of Audi just enough for the make to clear 0.7.
    rest = 0.7 - top if top < 0.7 else 0.0
    probabilities = [top, rest, 0.0, 0.0, 1.0 - top - rest]
    answer = answer_for(probabilities)
    assert answer["level"] == expected
    assert answer["label"] == ("Audi A4" if expected == "class" else "Audi")


@pytest.mark.parametrize("audi, expected", [(0.70, ("make", "Audi")), (0.6999, ("segment", "premium")),
                                            (0.71, ("make", "Audi"))])
def test_the_make_answers_at_and_above_its_threshold(audi, expected):
    # No model above 0.6; Audi's two models sum to `audi`; premium = Audi + BMW 0.15 clears 0.8.
    probabilities = [audi / 2, audi / 2, 0.15, 0.0, 0.85 - audi]
    answer = answer_for(probabilities)
    assert (answer["level"], answer["label"]) == expected
    assert answer["score"] == pytest.approx(audi if expected[0] == "make" else audi + 0.15)


@pytest.mark.parametrize("premium, answered", [(0.8, True), (0.7999, False)])
def test_the_segment_answers_at_its_threshold_and_nothing_below(premium, answered):
    probabilities = [premium / 4] * 4 + [1.0 - premium]
    answer = answer_for(probabilities)
    assert (answer == {"level": "segment", "label": "premium", "score": pytest.approx(premium)}) if answered \
        else answer is None


def test_not_a_car_has_no_answer_however_sure():
    assert answer_for([0.99, 0.01, 0, 0, 0], verdict="not_a_car") is None


def test_a_grouping_without_threshold_never_answers():
    probabilities = [0.3, 0.3, 0.2, 0.2, 0.0]
    assert answer_for(probabilities, make_threshold=None, segment_threshold=None) is None
    assert answer_for(probabilities, make_threshold=None)["level"] == "segment"


def test_without_a_class_threshold_the_class_always_answers():
    assert answer_for([0.3, 0.3, 0.2, 0.2, 0.0], class_threshold=None)["level"] == "class"


def test_the_readme_level_table_is_the_shipped_report():
    """The manual's val figures per level are copied from the artifact's report, never typed by hand."""
    report = REPO_ROOT / "model_artifacts" / "car-models-196" / "report" / "answers.md"
    readme = manual_text()
    block = readme.split("<!-- answers:car-models-196 -->\n")[1].split("<!-- /answers:car-models-196 -->")[0]
    assert block == report.read_text(encoding="utf-8")
    shipped = json.loads((report.parent.parent / "metadata.json").read_text(encoding="utf-8"))
    assert [g.name for g in groupings(shipped, json.loads((report.parent.parent / "labels.json").read_text()))] \
        == ["make", "segment"]


def test_the_premium_basic_artifact_is_the_segment_grouping_of_car_models_196():
    """Both weigh the same make output against the same summed classes over the same map: on real photos the
    premium-basic network's probabilities are car-models-196's segment scores (both float32)."""
    from PIL import Image

    from inference.classifier import load_classifier
    from support import stanford_photos

    artifacts = REPO_ROOT / "model_artifacts"
    fine = json.loads((artifacts / "car-models-196" / "metadata.json").read_text(encoding="utf-8"))
    coarse = json.loads((artifacts / "premium-basic" / "metadata.json").read_text(encoding="utf-8"))
    segment = fine["groups"]["segment"]
    assert json.loads((artifacts / "premium-basic" / "labels.json").read_text()) == segment["labels"]
    assert coarse["label_map"] == segment["label_map"]
    assert f"weighed {segment['blend']:g}" in coarse["training_config"]["method"]
    photos = stanford_photos(6)
    cars = load_classifier(artifacts / "car-models-196", runtime="litert", variant="float32")
    # premium-basic always averages both views; car-models-196 skips the mirror of a sure photo, which
    # moves its scores a little on those photos: compare the two on the same views.
    cars.metadata = {**cars.metadata, "tta_skip_above": None}
    groups = load_classifier(artifacts / "premium-basic", runtime="litert", variant="float32")
    for path in photos:
        image = Image.open(path).convert("RGB")
        scores = {row["label"]: row["score"] for row in cars.predict(image).groups["segment"]}
        direct = groups.predict(image).probabilities
        for label, probability in zip(segment["labels"], direct):
            assert probability == pytest.approx(scores[label], abs=2e-3)
