"""The vehicle gate: the shipped artifact, its measurement, and "not a car" through the app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from inference.classifier import ArtifactError
from inference.gate import VehicleGate
from support import REPO_ROOT, SHARED, stanford_photos
from trust_support import CARS_VS_PLANES, SHIPPED_GATE, dispose, make_app, post_image


def shipped_gate() -> VehicleGate:
    if not (SHIPPED_GATE / "model.tflite").is_file():
        pytest.skip(f"no gate artifact at {SHIPPED_GATE}: build it with `python -m training gate`")
    return VehicleGate(SHIPPED_GATE, num_threads=1)


def planes(count: int) -> list:
    folder = CARS_VS_PLANES / "val" / "planes"
    if not folder.is_dir():
        pytest.skip(f"plane photos not available: {folder} is missing")
    return sorted(folder.glob("*.jpg"))[:count]


def test_shipped_gate_is_small_and_records_its_measurement():
    gate = shipped_gate()
    assert (SHIPPED_GATE / "model.tflite").stat().st_size < 4 * 1024 * 1024
    measurement = gate.metadata["measurement"]
    assert 0.0 < gate.threshold < 1.0
    assert measurement["groups"]["cars"]["count"] >= 500 and measurement["groups"]["non_cars"]["count"] >= 50
    assert measurement["tpr"] >= 0.95 and measurement["fpr"] <= 0.05
    check = measurement["quantization_check"]  # the served copy decides as float32 does, nearly always
    assert check["decisions_changed"] <= 0.01 * check["images"]
    assert {"817", "511", "656"} <= set(gate.metadata["vehicle_classes"])  # sports car, convertible, minivan


def test_gate_passes_car_photos_and_stops_planes_and_plain_pictures():
    gate = shipped_gate()
    cars = [gate.score(Image.open(path).convert("RGB")) for path in stanford_photos(10)]
    flying = [gate.score(Image.open(path).convert("RGB")) for path in planes(10)]
    plain = [gate.score(Image.new("RGB", (200, 150), color)) for color in ((220, 30, 30), (240, 240, 240))]
    noise = gate.score(Image.fromarray(np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8)))
    assert sum(gate.is_vehicle(s) for s in cars) >= 9
    assert sum(gate.is_vehicle(s) for s in flying) <= 1
    assert not any(gate.is_vehicle(s) for s in [*plain, noise])


def test_a_plane_photo_is_not_a_car_in_the_api_and_on_the_page(color_artifact, tmp_path, database_url):
    shipped_gate()
    application = make_app(color_artifact, database_url)  # default: the shipped gate
    try:
        assert application.extensions["vehicle_gate"] is not None
        client = application.test_client()
        response = post_image(client, planes(1)[0].read_bytes(), "plane.jpg")
        assert response.status_code == 201
        assert response.json["verdict"] == "not_a_car"
        assert response.json["vehicle_score"] < application.extensions["vehicle_gate"].threshold
        page = client.get(f"/predictions/{response.json['id']}").get_data(as_text=True)
        assert 'data-verdict="not_a_car"' in page and "does not look like a car" in page

        car = post_image(client, stanford_photos(1)[0].read_bytes(), "car.jpg")
        assert car.json["verdict"] in ("ok", "uncertain")  # the colours model has no threshold: "ok"
        assert car.json["verdict"] == "ok"
    finally:
        dispose(application)


def test_gate_can_be_turned_off_and_a_named_gate_must_load(color_artifact, tmp_path, make_image, database_url):
    application = make_app(color_artifact, database_url, VEHICLE_GATE_DIR="none")
    try:
        assert application.extensions["vehicle_gate"] is None
        assert post_image(application.test_client(), make_image("red")).json["verdict"] == "ok"
    finally:
        dispose(application)
    with pytest.raises(ArtifactError, match="vehicle gate"):
        make_app(color_artifact, database_url, VEHICLE_GATE_DIR=str(tmp_path / "no-gate-here"))
    not_a_gate = tmp_path / "classifier-not-gate"
    shutil.copytree(color_artifact, not_a_gate)
    with pytest.raises(ArtifactError, match="not a vehicle gate"):
        make_app(color_artifact, database_url, VEHICLE_GATE_DIR=str(not_a_gate))


def test_gate_runs_without_tensorflow(color_artifact):
    """As on a serving-only install: the gate needs LiteRT only."""
    shipped_gate()
    script = f"""
import io, sys
sys.modules["tensorflow"] = sys.modules["keras"] = None
from PIL import Image
from app import create_app
from app.extensions import db
app = create_app({{"MODEL_DIR": {str(color_artifact)!r}, "DATABASE_URL": "sqlite://", "WTF_CSRF_ENABLED": False,
                  "RATELIMIT_ENABLED": False}})
with app.app_context():
    db.create_all()
buffer = io.BytesIO()
Image.new("RGB", (64, 64), (0, 0, 255)).save(buffer, "PNG")
response = app.test_client().post("/api/v1/predictions", data={{"image": (io.BytesIO(buffer.getvalue()), "b.png")}})
print(response.status_code, response.json["verdict"])
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "201 not_a_car"


@pytest.mark.slow
@pytest.mark.parametrize("options, quantization, image_size", [
    ([], "float16", [224, 224]),
    (["--quantization", "int8", "--image-size", "160", "160"], "int8", [160, 160]),
], ids=["float16-224", "int8-160"])
def test_gate_command_builds_and_measures_a_gate(tmp_path, options, quantization, image_size):
    """``python -m training gate`` on a handful of photos with the small MobileNet."""
    weights = SHARED / "keras"
    if not (weights / "models" / "mobilenet_2_5_224_tf.h5").is_file():
        pytest.skip(f"ImageNet MobileNet weights not available under {weights}")
    cars, non_cars = tmp_path / "cars", tmp_path / "non-cars"
    cars.mkdir()
    non_cars.mkdir()
    for path in stanford_photos(6):
        shutil.copy(path, cars / path.name)
    for path in planes(4):
        shutil.copy(path, non_cars / path.name)
    keras_home = tmp_path / "keras"
    shutil.copytree(weights, keras_home)
    out = tmp_path / "gate"
    result = subprocess.run(
        [sys.executable, "-m", "training", "gate", "--cars", str(cars), "--non-cars", str(non_cars),
         "--no-skimage", "--alpha", "0.25", "--car-recall", "0.8", "--out", str(out), *options],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    metadata = json.loads((out / "metadata.json").read_text())
    groups = metadata["measurement"]["groups"]
    assert groups["cars"] == {"count": 6, "passed": groups["cars"]["passed"], "pass_rate": groups["cars"]["pass_rate"]}
    assert groups["cars"]["passed"] >= 5  # the rule lets at least 80 % through
    assert groups["non_cars"]["count"] == 4
    assert metadata["quantization"] == quantization and metadata["image_size"] == image_size
    if quantization == "int8":  # integer activations, calibrated on the --cars and --non-cars photos
        from ai_edge_litert.interpreter import Interpreter

        assert metadata["calibration"] == [str(cars), str(non_cars)]
        details = Interpreter(model_path=str(out / "model.tflite")).get_tensor_details()
        assert "int8" in {np.dtype(d["dtype"]).name for d in details}
        assert metadata["measurement"]["quantization_check"]["decisions_changed"] <= 2
    gate = VehicleGate(out, num_threads=1)
    assert gate.image_size == tuple(image_size)
    scores = [gate.score(Image.open(p).convert("RGB")) for p in sorted(cars.glob("*.jpg"))]
    assert sorted(scores)[1] == pytest.approx(metadata["threshold"], abs=1e-5)  # 1 of 6 may miss at 80 %
    assert "TPR" in result.stdout and "gate written to" in result.stdout
