"""The classifier: loading artifacts, both runtimes, warm-up, errors, thread safety."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.classifier import ArtifactError, load_classifier, resolve_runtime
from support import COLOR_RGB, REPO_ROOT, stanford_photos


@pytest.mark.parametrize("runtime", ["litert", "keras"])
@pytest.mark.parametrize("color", ["red", "green", "blue"])
def test_both_runtimes_name_the_right_colour(color_artifact, runtime, color):
    classifier = load_classifier(color_artifact, runtime=runtime, num_threads=1)
    answers = classifier.classify(Image.new("RGB", (90, 60), COLOR_RGB[color]), top_k=3)
    assert classifier.runtime == runtime
    assert answers[0]["label"] == color
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert sum(a["score"] for a in answers) == pytest.approx(1.0, abs=1e-5)
    assert all(isinstance(a["score"], float) for a in answers)


def test_classifier_exposes_the_artifact(color_artifact):
    classifier = load_classifier(color_artifact)
    assert classifier.runtime == "litert"  # auto prefers LiteRT when the artifact has it
    assert classifier.name == "colors"
    assert classifier.version == "0.0.1-test"
    assert classifier.labels == ["red", "green", "blue"]
    assert classifier.image_size == (32, 32)
    assert classifier.resize_mode == "center_crop"
    assert classifier.metadata["metrics"] == {"val_accuracy": 1.0}


def test_runtimes_agree_within_tolerance_on_real_photos(random_artifact):
    litert = load_classifier(random_artifact, runtime="litert", num_threads=1)
    keras = load_classifier(random_artifact, runtime="keras")
    photos = [Image.open(path).convert("RGB") for path in stanford_photos(8)]
    rng = np.random.default_rng(0)
    photos += [Image.fromarray(rng.integers(0, 256, (100, 70, 3), dtype=np.uint8)) for _ in range(4)]
    for photo in photos:
        fast, reference = litert.classify(photo, top_k=5), keras.classify(photo, top_k=5)
        assert [a["label"] for a in fast] == [a["label"] for a in reference]
        np.testing.assert_allclose([a["score"] for a in fast], [a["score"] for a in reference], atol=1e-4)


@pytest.mark.parametrize("runtime", ["litert", "keras"])
def test_predict_batch_accepts_uint8_and_float_batches(random_artifact, runtime):
    classifier = load_classifier(random_artifact, runtime=runtime, num_threads=1)
    rng = np.random.default_rng(1)
    batch = rng.integers(0, 256, (3, 64, 48, 3), dtype=np.uint8)
    from_uint8 = classifier.predict_batch(batch)
    from_float = classifier.predict_batch(batch.astype(np.float32))
    assert from_uint8.shape == (3, 10)
    np.testing.assert_allclose(from_uint8, from_float, atol=1e-6)
    np.testing.assert_allclose(from_uint8.sum(axis=1), 1.0, atol=1e-5)
    single = classifier.predict_batch(batch[1:2])  # the batch size changes back and forth
    np.testing.assert_allclose(single[0], from_uint8[1], atol=1e-5)
    with pytest.raises(ValueError, match="expected pixels of shape"):
        classifier.predict_batch(np.zeros((1, 32, 32, 3), np.uint8))


def test_litert_is_safe_under_concurrent_requests(random_artifact):
    classifier = load_classifier(random_artifact, runtime="litert", num_threads=1)
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 256, (80, 60, 3), dtype=np.uint8)) for _ in range(6)]
    expected = [classifier.classify(img, top_k=3) for img in images]
    mismatches = []

    def worker(offset: int) -> None:
        for step in range(30):
            index = (offset + step) % len(images)
            if classifier.classify(images[index], top_k=3) != expected[index]:
                mismatches.append(index)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []


def test_top_k_is_capped_at_the_number_of_classes(color_artifact):
    classifier = load_classifier(color_artifact)
    assert len(classifier.classify(Image.new("RGB", (10, 10)), top_k=20)) == 3
    assert len(classifier.classify(Image.new("RGB", (10, 10)), top_k=1)) == 1


def test_auto_falls_back_to_keras_without_tflite(color_artifact, tmp_path):
    keras_only = shutil.copytree(color_artifact, tmp_path / "keras-only")
    (keras_only / "model.tflite").unlink()
    assert resolve_runtime(keras_only) == "keras"
    classifier = load_classifier(keras_only)
    assert classifier.runtime == "keras"
    assert classifier.classify(Image.new("RGB", (40, 40), COLOR_RGB["blue"]))[0]["label"] == "blue"
    with pytest.raises(ArtifactError, match="model.tflite is missing"):
        load_classifier(keras_only, runtime="litert")


def test_unknown_runtime_is_refused(color_artifact):
    with pytest.raises(ArtifactError, match="MODEL_RUNTIME='onnx'"):
        load_classifier(color_artifact, runtime="onnx")


def broken_copy(source: Path, target: Path, change) -> Path:
    folder = shutil.copytree(source, target)
    change(folder)
    return folder


BREAKAGES = {
    "missing labels": (lambda f: (f / "labels.json").unlink(), "labels.json is missing"),
    "bad json": (lambda f: (f / "metadata.json").write_text("{not json"), "metadata.json is unreadable"),
    "wrong format": (lambda f: _edit_metadata(f, format_version=99), "format_version"),
    "bad size": (lambda f: _edit_metadata(f, image_size=[32]), "image_size"),
    "bad resize mode": (lambda f: _edit_metadata(f, resize_mode="zoom"), "resize_mode"),
    "label count": (lambda f: (f / "labels.json").write_text('["a", "b"]'), "outputs 3 classes"),
    "corrupt tflite": (lambda f: (f / "model.tflite").write_bytes(b"\0" * 64), "model.tflite does not load"),
}


def _edit_metadata(folder: Path, **changes) -> None:
    path = folder / "metadata.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_broken_artifact_gives_one_line_naming_path_and_fix(color_artifact, tmp_path, breakage):
    change, problem = BREAKAGES[breakage]
    folder = broken_copy(color_artifact, tmp_path / "broken", change)
    with pytest.raises(ArtifactError) as info:
        load_classifier(folder, runtime="litert")
    message = str(info.value)
    assert "\n" not in message
    assert str(folder) in message and problem in message
    assert "python -m training train" in message and "MODEL_DIR" in message


def test_missing_artifact_message(tmp_path):
    with pytest.raises(ArtifactError) as info:
        load_classifier(tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message
    assert f"model artifact not found at {tmp_path / 'nowhere'}" in message
    assert f"--out {tmp_path / 'nowhere'}" in message and "MODEL_DIR" in message


def test_serving_with_litert_never_imports_tensorflow(color_artifact, make_image):
    """Load the app, classify through the API, and check which modules the process holds."""
    script = f"""
import io, sys
from app import create_app
app = create_app({{"MODEL_DIR": {str(color_artifact)!r}, "DATABASE_URL": "sqlite://", "WTF_CSRF_ENABLED": False}})
from app.extensions import db
with app.app_context():
    db.create_all()
body = {make_image("blue")!r}
response = app.test_client().post("/api/v1/predictions", data={{"image": (io.BytesIO(body), "b.jpg")}})
assert response.status_code == 201, response.data
print(app.extensions["classifier"].runtime, response.json["predictions"][0]["label"])
print(sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")))
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "litert blue"
    assert lines[-1] == "[]"


def test_forked_worker_gets_a_working_interpreter(color_artifact):
    """What a gunicorn worker does: inherit a loaded classifier through fork() and use it."""
    import os
    import signal

    classifier = load_classifier(color_artifact, runtime="litert", num_threads=2)
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        signal.alarm(30)  # a hung interpreter kills the child instead of hanging the suite
        label = classifier.classify(Image.new("RGB", (20, 20), COLOR_RGB["green"]))[0]["label"]
        os.write(write_end, label.encode())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    assert os.read(read_end, 100).decode() == "green"
    assert os.waitstatus_to_exitcode(status) == 0


def test_serving_works_with_tensorflow_absent(color_artifact):
    """As on a server installed from requirements.txt only: TensorFlow and Keras cannot be imported."""
    script = f"""
import sys
sys.modules["tensorflow"] = sys.modules["keras"] = None  # import fails, find_spec says not installed
from PIL import Image
from inference.classifier import ArtifactError, load_classifier
classifier = load_classifier({str(color_artifact)!r})
print(classifier.runtime, classifier.classify(Image.new("RGB", (9, 9), (0, 0, 255)))[0]["label"])
try:
    load_classifier({str(color_artifact)!r}, runtime="keras")
except ArtifactError as exc:
    print(exc)
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-2] == "litert blue"
    assert "needs TensorFlow" in lines[-1] and "requirements-train.txt" in lines[-1]


def test_missing_default_artifact_names_the_command_that_makes_it():
    with pytest.raises(ArtifactError, match=r"--out model_artifacts/no-such-model` or set MODEL_DIR"):
        load_classifier(REPO_ROOT / "model_artifacts" / "no-such-model")
