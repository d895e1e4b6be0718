"""The model card at /model: what the artifact's metadata and report say, and only the report's files."""

from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from support import encode
from training.options import reproduce_command
from trust_support import dispose, make_app, post_image

FIGURES = ("training_curves.png", "confusion_matrix.png", "confidence.png", "robustness.png")


@pytest.fixture
def reported_artifact(color_artifact, tmp_path):
    """The colours model with a full evaluation report, as ``python -m training train`` writes it."""
    artifact = tmp_path / "colors-reported"
    shutil.copytree(color_artifact, artifact)
    report = artifact / "report"
    report.mkdir()
    for index, name in enumerate(FIGURES):
        Image.new("RGB", (320, 200), (40 * index, 90, 160)).save(report / name)
    (report / "metrics.json").write_text(json.dumps({
        "accuracy": 0.875, "top_confusions": [{"true": "red", "predicted": "blue", "count": 3, "share_of_true": 0.1}]}))
    (report / "robustness.json").write_text(json.dumps({
        "split": "val", "num_images": 40, "unit": "pixels (0..255)", "method": "FGSM",
        "results": [{"epsilon": 0.0, "fraction": 0.0, "accuracy": 0.875, "changed": 0.0},
                    {"epsilon": 2.0, "fraction": 0.00784, "accuracy": 0.5, "changed": 0.4}]}))
    (artifact / "secret.txt").write_text("outside the report folder")
    path = artifact / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata.update({
        "metrics": {"split": "val", "num_images": 40, "accuracy": 0.875, "macro_f1": 0.8612},
        "confidence": {"threshold": 0.731, "target_precision": 0.95, "coverage": 0.62, "accuracy": 0.952,
                       "curve": [{"threshold": t, "coverage": round(1 - t / 2, 4), "accuracy": round(0.8 + t / 5, 4)}
                                 for t in (0.0, 0.3, 0.5, 0.55, 0.9)]},
        "dataset": {"root": "../shared/datasets/colours", "num_classes": 3,
                    "counts": {"train": 120, "val": 40, "test": 0}, "file_list_sha256": "ab" * 32},
        "training_config": {"config": {"data": {"path": "../shared/datasets/colours"},
                                       "model": {"backbone": "mobilenet_v1_0.25"},
                                       "train": {"head_epochs": 7, "augment": True}},
                            "wall_time_s": 600.0},
    })
    metadata["training_config"]["command"] = reproduce_command(metadata["training_config"])
    path.write_text(json.dumps(metadata))
    return artifact


def test_model_card_shows_the_report(reported_artifact, tmp_path, database_url):
    application = make_app(reported_artifact, database_url)
    try:
        page = application.test_client().get("/model/").get_data(as_text=True)
    finally:
        dispose(application)
    assert "Model card: colors" in page
    assert "87.5 %" in page and "86.1 %" in page                         # metrics
    assert "0.731" in page and "95 %" in page and "62.0 %" in page       # threshold and what it buys
    table = page[page.index('id="threshold-table"'):page.index('id="gate"')]
    assert table.count("<tr><td>") == 4 and "<td>0.55</td>" not in table  # the chosen curve points only
    for name in FIGURES:
        assert f'src="/model/report/{name}"' in page
    assert "fgsm_examples.png" not in page                                # only figures that exist
    assert 'id="robustness-table"' in page and "50.0 %" in page
    assert "<td>red</td><td>blue</td>" in page                            # top confusions
    assert "120 train, 40 val, 0 test" in page
    assert "python -m training train" in page and "--data ../shared/datasets/colours" in page
    assert "--backbone mobilenet_v1_0.25" in page and "--epochs 7" in page
    assert "--no-augment" not in page                                     # switches only when they are on
    assert 'id="gate-table"' in page                                      # the shipped vehicle gate


def test_report_files_only_from_the_report_folder(reported_artifact, tmp_path, database_url):
    application = make_app(reported_artifact, database_url)
    try:
        client = application.test_client()
        figure = client.get("/model/report/confusion_matrix.png")
        assert figure.status_code == 200 and figure.mimetype == "image/png"
        assert client.get("/model/report/metrics.json").json["accuracy"] == 0.875
        for path in ("/model/report/../secret.txt", "/model/report/%2e%2e/secret.txt",
                     "/model/report/..%2fsecret.txt", "/model/report/../model.keras", "/model/report/nothing.png",
                     "/model/report/../labels.json"):
            response = client.get(path)
            assert response.status_code == 404, path
            assert b"outside the report folder" not in response.data
    finally:
        dispose(application)


def test_model_card_without_a_report_or_gate(color_artifact, tmp_path, database_url):
    application = make_app(color_artifact, database_url, VEHICLE_GATE_DIR="none")
    try:
        page = application.test_client().get("/model/").get_data(as_text=True)
    finally:
        dispose(application)
    assert "never says \"not sure\"" in page.replace("&#34;", '"')
    assert "No vehicle gate is loaded" in page and "Not measured for this model" in page
    assert "<figure" not in page


def test_every_page_links_the_model_card(color_artifact, tmp_path, make_image, database_url):
    application = make_app(color_artifact, database_url, VEHICLE_GATE_DIR="none")
    try:
        client = application.test_client()
        created = post_image(client, make_image("red")).json["id"]
        for path in ("/", f"/predictions/{created}", "/model/", "/no-such-page", "/admin/login"):
            page = client.get(path, headers={"Accept": "text/html"}).get_data(as_text=True)
            assert 'href="/model/"' in page, path
    finally:
        dispose(application)


def test_model_card_shows_what_the_network_looks_at(reported_artifact, database_url):
    """The pictures listed by ``python -m training visualize`` in report/visualize.json, and only those."""
    report = reported_artifact / "report"
    for name in ("activations_0_conv1.png", "filters_0_conv1.png", "filters_1_conv9.png"):
        Image.new("RGB", (200, 200), (90, 90, 90)).save(report / name)
    (report / "visualize.json").write_text(json.dumps({"photo": "audi.jpg", "images": [
        {"file": "activations_0_conv1.png", "kind": "activations", "layer": "conv1", "caption": "Early maps."},
        {"file": "filters_0_conv1.png", "kind": "filters", "layer": "conv1", "caption": "Early patterns."},
        {"file": "filters_1_conv9.png", "kind": "filters", "layer": "conv9", "caption": "Late patterns."},
        {"file": "../secret.txt", "kind": "filters", "caption": "climbs out"},
        {"file": "missing.png", "kind": "filters", "caption": "not written"},
        {"file": "confusion_matrix.png", "kind": "other", "caption": "unknown kind"}]}))
    application = make_app(reported_artifact, database_url)
    try:
        client = application.test_client()
        page = client.get("/model/").get_data(as_text=True)
        section = page[page.index('id="visualize"'):]
        for name in ("activations_0_conv1.png", "filters_0_conv1.png", "filters_1_conv9.png"):
            assert f'src="/model/report/{name}"' in section
            assert client.get(f"/model/report/{name}").mimetype == "image/png"
        assert "Early maps." in section and "Late patterns." in section and "(audi.jpg)" in section
        assert "secret" not in section and "missing.png" not in section and "unknown kind" not in section
    finally:
        dispose(application)


def test_model_card_without_visualize_pictures_has_no_such_section(reported_artifact, database_url):
    application = make_app(reported_artifact, database_url)
    try:
        page = application.test_client().get("/model/").get_data(as_text=True)
    finally:
        dispose(application)
    assert 'id="visualize"' not in page


def test_model_card_says_which_quantised_copy_serves_and_how_it_measured(color_artifact, tmp_path, database_url):
    artifact = shutil.copytree(color_artifact, tmp_path / "colors-served-copy")
    # A byte-identical "float16" copy keeps the answers the same; what matters here is what the card says.
    (artifact / "model.fp16.tflite").write_bytes((artifact / "model.tflite").read_bytes())
    path = artifact / "metadata.json"
    metadata = json.loads(path.read_text())
    metadata["serving_variant"] = "float16"
    metadata["litert_variants"] = {"float16": {
        "file": "model.fp16.tflite", "kept": True, "split": "val", "images": 40, "top1": 86.25,
        "top1_float32": 87.5, "drop_points": 1.25, "ms_per_image": 2.5, "float32_ms_per_image": 5.0}}
    path.write_text(json.dumps(metadata))
    pages = {}
    for variant in ("auto", "float32"):
        application = make_app(artifact, database_url, VEHICLE_GATE_DIR="none", MODEL_VARIANT=variant)
        try:
            assert application.extensions["classifier"].variant == ("float16" if variant == "auto" else "float32")
            pages[variant] = application.test_client().get("/model/").get_data(as_text=True)
        finally:
            dispose(application)
    text = " ".join(pages["auto"].split())
    assert "serves its <strong>float16</strong> LiteRT copy: top-1 86.2 % against 87.5 % for float32" in text
    assert "2.5 ms per photo against 5.0 ms" in text
    assert 'id="served-copy"' not in pages["float32"]
