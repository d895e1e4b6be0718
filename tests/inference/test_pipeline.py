"""The one photo -> answer pipeline (``inference.pipeline.answer_photo``) and its callers agreeing on it."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from inference.classifier import load_classifier
from inference.errors import ImageRejected, InferenceError
from inference.pipeline import PhotoAnswer, answer_photo


class StubGate:
    """A vehicle gate that gives every photo the same score."""

    def __init__(self, score: float, threshold: float = 0.5):
        self._score, self.threshold = score, threshold

    def score(self, image) -> float:
        return self._score


@pytest.fixture(scope="module")
def colors(color_artifact):
    return load_classifier(color_artifact, num_threads=1)


def test_a_photo_becomes_an_answer_with_its_facts_and_thumbnail(colors, make_image):
    data = make_image("red", size=(640, 480))
    result = answer_photo(data, colors, None, max_pixels=10_000_000, top_k=2)
    assert isinstance(result, PhotoAnswer)
    assert [a["label"] for a in result.top_k][0] == "red" and len(result.top_k) == 2
    assert (result.photo.width, result.photo.height, result.photo.content_type) == (640, 480, "image/jpeg")
    assert result.verdict.verdict == "ok" and result.verdict.vehicle_score is None
    assert result.answer == {"level": "class", "label": "red", "score": result.top_k[0]["score"]}
    with Image.open(io.BytesIO(result.thumbnail)) as thumbnail:
        assert thumbnail.format == "JPEG" and max(thumbnail.size) == 320
    assert result.latency_ms > 0


def test_the_vehicle_gate_decides_before_the_answer(colors, make_image):
    data = make_image("green")
    refused = answer_photo(data, colors, StubGate(0.1), max_pixels=10_000_000, top_k=1)
    assert refused.verdict.verdict == "not_a_car" and refused.verdict.vehicle_score == 0.1
    assert refused.answer is None and refused.top_k[0]["label"] == "green"
    passed = answer_photo(data, colors, StubGate(0.9), max_pixels=10_000_000, top_k=1, thumbnail=False)
    assert passed.verdict.verdict == "ok" and passed.answer["label"] == "green" and passed.thumbnail is None


def test_a_refused_photo_carries_a_code_and_a_message_but_no_http_status(colors):
    with pytest.raises(ImageRejected) as info:
        answer_photo(b"\xff\xd8\xff\xe0 not really a jpeg", colors, None, max_pixels=10_000_000, top_k=1)
    assert isinstance(info.value, InferenceError)
    assert info.value.code == "corrupt_image" and info.value.message.endswith(".")
    assert not hasattr(info.value, "status")


def test_flask_classify_and_the_api_give_the_same_answer(client, runner, tmp_path, make_image):
    """Both go through the pipeline: same top classes, same verdict, same answer."""
    data = make_image("blue", fmt="PNG")
    photo = tmp_path / "blue.png"
    photo.write_bytes(data)
    printed = runner.invoke(args=["classify", str(photo), "--top-k", "2"])
    assert printed.exit_code == 0, printed.output
    body = client.post("/api/v1/predictions?top_k=2", data={"image": (io.BytesIO(data), "blue.png")},
                       content_type="multipart/form-data").get_json()
    top = ", ".join(f"{a['label']} {a['score']:.3f}" for a in body["predictions"])
    answer = body["answer"]  # none here: the shipped vehicle gate sees no car in a plain blue square
    said = f"{answer['level']} {answer['label']} {answer['score']:.3f}" if answer else "none"
    assert printed.output.strip() == f"{photo}: {top} | verdict {body['verdict']}, answer {said}", json.dumps(body)
