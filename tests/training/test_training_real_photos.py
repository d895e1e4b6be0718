"""One epoch of ImageNet MobileNet v1 0.25 on a handful of real car photos, served by the app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.training.conftest import REPO_ROOT, STANFORD

CLASSES = ("BMW M3 Coupe 2012", "Chevrolet Corvette ZR1 2012", "Toyota Camry Sedan 2012")


@pytest.fixture
def car_photos(tmp_path):
    """Five train and two val photos of three Stanford Cars classes, copied into a small data folder."""
    if not STANFORD.is_dir():
        pytest.skip(f"needs the Stanford Cars photos at {STANFORD} (../shared is absent)")
    root = tmp_path / "cars"
    for split, count in (("train", 5), ("val", 2)):
        for name in CLASSES:
            target = root / split / name
            target.mkdir(parents=True)
            for photo in sorted((STANFORD / split / name).glob("*.jpg"))[:count]:
                shutil.copy(photo, target / photo.name)
    return root


@pytest.mark.slow
def test_mobilenet_025_artifact_loads_in_the_app(car_photos, keras_home, tmp_path):
    from PIL import Image

    from inference.classifier import load_classifier

    # A child process: Keras reads KERAS_HOME once, when it is first imported.
    artifact = tmp_path / "artifact"
    command = [sys.executable, "-m", "training", "train", "--data", str(car_photos), "--name", "real-025",
               "--backbone", "mobilenet_v1_0.25", "--weights", "imagenet", "--image-size", "128", "128",
               "--resize-mode", "stretch", "--epochs", "1", "--fine-tune-epochs", "1", "--unfreeze-blocks", "1",
               "--batch-size", "8", "--quiet", "--runs-dir", str(tmp_path / "runs"), "--out", str(artifact)]
    env = {**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    completed = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    metadata = json.loads((artifact / "metadata.json").read_text())
    assert metadata["backbone"] == "mobilenet_v1_0.25" and metadata["metrics"]["num_images"] == 6
    for runtime in ("litert", "keras"):
        classifier = load_classifier(artifact, runtime=runtime)
        assert classifier.labels == sorted(CLASSES)
        photo = next((car_photos / "val" / CLASSES[0]).glob("*.jpg"))
        answers = classifier.classify(Image.open(photo).convert("RGB"), top_k=3)
        assert sorted(a["label"] for a in answers) == sorted(CLASSES)
        assert sum(a["score"] for a in answers) == pytest.approx(1.0, abs=1e-4)
