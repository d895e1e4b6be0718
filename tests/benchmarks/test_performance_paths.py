"""The request-path shortcuts give the same results as the plain way, and the benchmark measures right.

Covered: the thumbnail made by box-reduce + bilinear against a high-quality reference, EXIF orientation
applied in place for all eight orientations, the thumbnail made on a side thread (also after fork and
under concurrent uploads), and the serving benchmark's payloads, request bodies, percentiles, floor and
report table. No timing is asserted: the benchmark reports timings, tests check correctness.
"""

from __future__ import annotations

import io
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image, ImageOps
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from inference.imaging import THUMBNAIL_MAX_SIDE, decode_upload, make_thumbnail
from benchmarks import serve
from support import COLOR_LABELS, COLOR_RGB, REPO_ROOT, encode, manual_text, stanford_photos

LIMIT = 40_000_000


def gradient(size=(1500, 1000)) -> Image.Image:
    """A smooth two-axis colour gradient with a sharp block: resampling errors show up on it."""
    x = np.linspace(0, 255, size[0])[None, :, None]
    y = np.linspace(0, 255, size[1])[:, None, None]
    pixels = np.concatenate([np.broadcast_to(x, (size[1], size[0], 1)), np.broadcast_to(y, (size[1], size[0], 1)),
                             np.broadcast_to((x + y) / 2, (size[1], size[0], 1))], axis=2).astype(np.uint8)
    pixels[400:600, 600:900] = (250, 10, 10)
    return Image.fromarray(np.ascontiguousarray(pixels))


def detailed(size) -> Image.Image:
    """The gradient plus a noise patch and one-pixel stripes: a careless resampler aliases on those."""
    pixels = np.asarray(gradient(size)).copy()
    height, width = pixels.shape[:2]
    pixels[: height // 3, : width // 3] = np.random.default_rng(0).integers(0, 256, (height // 3, width // 3, 3))
    pixels[height // 2:, width // 2:] = ((np.arange(width - width // 2) % 2) * 255)[None, :, None]
    return Image.fromarray(pixels)


@pytest.mark.parametrize("size", [(1500, 1000), (999, 1333), (641, 321)])
def test_thumbnail_matches_a_high_quality_downscale(size):
    source = detailed(size)
    thumb = Image.open(io.BytesIO(make_thumbnail(source)))
    scale = THUMBNAIL_MAX_SIDE / max(size)
    assert max(thumb.size) == THUMBNAIL_MAX_SIDE
    assert thumb.size == (round(size[0] * scale), round(size[1] * scale))
    reference = np.asarray(source.resize(thumb.size, Image.Resampling.LANCZOS), dtype=int)
    difference = np.abs(np.asarray(thumb.convert("RGB"), dtype=int) - reference)
    # About 2-3 levels, as the full bilinear pass it replaced; sampling without filtering gives ~37.
    assert difference.mean() < 4.0, difference.mean()


def test_small_decoded_photo_is_not_enlarged_and_keeps_no_exif():
    exif = Image.Exif()
    exif[0x010F] = "CameraMaker"
    data = encode(Image.new("RGB", (200, 120), COLOR_RGB["blue"]), "JPEG", exif=exif.tobytes())
    decoded = decode_upload(data, max_pixels=LIMIT, target=(32, 32))
    thumb = Image.open(io.BytesIO(make_thumbnail(decoded.image)))
    assert thumb.size == (200, 120)
    assert len(thumb.getexif()) == 0 and "exif" not in thumb.info


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_applied_in_place_equals_pillows_transpose(orientation):
    stored = gradient((90, 60))
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(stored, "PNG", exif=exif.tobytes())
    decoded = decode_upload(data, max_pixels=LIMIT)
    reference = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    assert decoded.image.size == reference.size == (decoded.width, decoded.height)
    assert np.array_equal(np.asarray(decoded.image), np.asarray(reference))


# Runs in a fresh interpreter: this test process holds many models whose after-fork hooks would
# rebuild their interpreters in the child, which is slow and beside the point here.
FORK_CHECK = """
import os, signal
from inference.pipeline import SideWork
side_work = SideWork()
assert side_work.submit(pow, 2, 10).result(10) == 1024
read_end, write_end = os.pipe()
child = os.fork()
if child == 0:
    signal.alarm(30)  # a dead pool kills the child instead of hanging
    os.write(write_end, str(side_work.submit(pow, 3, 4).result()).encode())
    os._exit(0)
os.close(write_end)
_, status = os.waitpid(child, 0)
print(os.read(read_end, 10).decode(), os.waitstatus_to_exitcode(status))
"""


def test_side_work_runs_after_fork():
    """A pool used in the parent has no threads in a fork()ed child; the child must get a new one."""
    result = subprocess.run([sys.executable, "-c", FORK_CHECK], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["81", "0"]


def test_concurrent_uploads_each_store_their_own_thumbnail(app, make_image):
    """Thumbnails come back from the side pool: every row must hold the thumbnail of its own upload."""
    from app.extensions import db
    from app.models import Prediction

    colors = [COLOR_LABELS[i % 3] for i in range(9)]
    ids: list = [None] * len(colors)

    def upload(index: int) -> None:
        response = app.test_client().post(
            "/api/v1/predictions", content_type="multipart/form-data",
            data={"image": (io.BytesIO(make_image(colors[index], size=(700, 500))), "car.jpg")})
        assert response.status_code == 201
        ids[index] = response.json["id"]

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(colors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    with app.app_context():
        for prediction_id, color in zip(ids, colors):
            row = db.session.scalar(db.select(Prediction).filter_by(public_id=prediction_id))
            thumb = Image.open(io.BytesIO(row.thumbnail))
            assert thumb.size == (320, 229)
            mean = np.asarray(thumb.convert("RGB"), dtype=float).mean(axis=(0, 1))
            assert np.abs(mean - COLOR_RGB[color]).max() < 8, (color, mean)


def test_benchmark_payloads_are_the_originals_plus_1_to_3_megapixel_copies():
    originals = stanford_photos(2)
    payloads = serve.make_payloads(originals[0].parent.parent, 2)
    assert len(payloads) == 8
    for index in range(0, 8, 4):
        first = Image.open(io.BytesIO(payloads[index][1]))
        assert first.width * first.height < 1_000_000  # the original photo, unchanged bytes
        for offset, megapixels in enumerate(serve.UPSCALED_MEGAPIXELS, start=1):
            name, data = payloads[index + offset]
            upscaled = Image.open(io.BytesIO(data))
            assert upscaled.format == "JPEG" and name.endswith(f"-{megapixels}mp.jpg")
            assert abs(upscaled.width * upscaled.height / 1e6 - megapixels) < 0.01
            assert abs(upscaled.width / upscaled.height - first.width / first.height) < 0.01


def test_benchmark_request_body_parses_back_to_the_same_file():
    data = encode(Image.new("RGB", (64, 48), COLOR_RGB["green"]))
    body, content_type = serve.multipart("photo.jpg", data)
    request = Request(EnvironBuilder(method="POST", data=body, content_type=content_type).get_environ())
    upload = request.files["image"]
    assert upload.filename == "photo.jpg" and upload.read() == data


def test_benchmark_percentiles_interpolate():
    values = [5.0, 1.0, 3.0, 2.0, 4.0]
    assert serve.percentile(values, 50) == 3.0
    assert serve.percentile(values, 0) == 1.0 and serve.percentile(values, 100) == 5.0
    assert serve.percentile(values, 95) == pytest.approx(4.8)
    assert np.isnan(serve.percentile([], 50))


def test_benchmark_floor_runs_the_apps_model_work(color_artifact, monkeypatch):
    monkeypatch.setenv("VEHICLE_GATE_DIR", "none")
    payloads = [("red.jpg", encode(Image.new("RGB", (900, 600), COLOR_RGB["red"])))] * 2
    floor = serve.measure_floor(color_artifact, payloads, threads=1, repeats=2)
    assert floor["runtime"] == "litert" and floor["inference_threads"] == 1
    assert floor["vehicle_gate"] is False and floor["samples"] == 4
    assert 0 < floor["classifier_only_p50_ms"] <= floor["p50_ms"] <= floor["p95_ms"]


def test_benchmark_batch_invocation_covers_each_size(random_artifact):
    per_image = serve.measure_batch_invocation(random_artifact, [1, 3], threads=1, rounds=2)
    assert list(per_image) == ["1", "3"] and all(ms > 0 for ms in per_image.values())


def test_benchmark_report_table_has_a_row_per_server():
    def figures(label, p50, rps):
        return {"label": label, "cold_start_s": 0.5, "errors": 0, "worker_peak_rss_mb": [120.4, 121.6],
                "c1": {"p50_ms": p50, "p95_ms": p50 * 1.2, "p99_ms": p50 * 1.5},
                "c8": {"throughput_rps": rps, "p99_ms": 80.0}}

    report = {
        "measured_at": "2026-01-01 00:00 UTC", "model": "cars", "payload_count": 32,
        "machine": {"cpu": "Test CPU", "cores": 2, "memory_gib": 8.0, "python": "3.11.7",
                    "load_average_at_start": [0.5, 0.4, 0.3], "load_average_at_end": [1.5, 0.6, 0.35], "nice": -10},
        "settings": {"workers": 2, "threads": 4, "concurrency": 8, "requests_c1": 200, "requests_concurrent": 400},
        "servers": {"app": figures("app", 12.0, 100.0), "app_batching": figures("app, batching", 13.0, 90.0),
                    "baseline": figures("baseline (`model.predict`)", 80.0, 20.0)},
        "floor": {"runtime": "litert", "inference_threads": 1, "vehicle_gate": True, "p50_ms": 10.0,
                  "classifier_only_p50_ms": 6.0, "ms_per_image_by_batch_size": {"1": 4.0, "4": 4.25}},
        "ratios": {"app_p50_over_floor": 1.2, "baseline_p50_over_app_p50": 80 / 12,
                   "app_throughput_over_baseline": 5.0, "throughput_over_app": {"app_batching": 0.9}},
    }
    table = serve.render_markdown(report)
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[1] == "| app | 12.0 | 14.4 | 18.0 | 100.0 | 80 | 0 | 0.50 | 120, 122 |"
    assert rows[3].startswith("| baseline (`model.predict`) | 80.0 |")
    assert "load average 0.5, 0.4, 0.3 at the start, 1.5, 0.6, 0.35 at the end; run at nice -10)" in table
    assert "+ vehicle gate, 1 thread(s)): p50 **10.0 ms** (classifier alone 6.0 ms)" in table
    assert "App p50 / floor: **1.20x**" in table and "app throughput / baseline: **5.0x**" in table
    assert "app, batching: throughput 0.90x the app's, p50 1.08x." in table
    assert "Classifier invocation per image, in-process: batch 1: 4.00 ms, batch 4: 4.25 ms." in table


def test_benchmark_checks_each_serving_aim_against_its_target():
    def figures(p50, rps, cold=0.8, rss=(180.0, 190.0)):
        return {"cold_start_s": cold, "worker_peak_rss_mb": list(rss), "c1": {"p50_ms": p50},
                "c8": {"throughput_rps": rps}}

    report = {"settings": {"concurrency": 8},
              "servers": {"app": figures(20.0, 57.0), "app_no_gate": figures(19.0, 60.0),
                          "baseline": figures(110.0, 12.0)},
              "ratios": {"baseline_p50_over_app_p50": 5.5, "app_throughput_over_baseline": 57 / 12,
                         "app_p50_over_floor": 1.4}}
    aims = {row["aim"]: row for row in serve.check_aims(report)}
    assert aims["baseline_p50_over_app_p50"]["met"] is True
    assert aims["app_p50_over_floor"]["met"] is False  # 1.4 > 1.3
    assert aims["gate_throughput_cost"]["value"] == pytest.approx(0.05) and aims["gate_throughput_cost"]["met"]
    assert aims["cold_start_s"]["met"] and aims["peak_rss_mb"]["value"] == 190.0
    table = serve.render_markdown({**report, "aims": list(aims.values()), "floor": {
        "runtime": "litert", "variant": "int8-full", "inference_threads": 1, "vehicle_gate": True, "p50_ms": 15.0,
        "classifier_only_p50_ms": 12.0}, "measured_at": "now", "model": "cars", "payload_count": 4,
        "machine": {"cpu": "CPU", "cores": 2, "memory_gib": 8, "python": "3.11"},
        "settings": {"workers": 2, "threads": 4, "concurrency": 8, "requests_c1": 1, "requests_concurrent": 1},
        "servers": {key: {**value, "label": key, "errors": 0, "c1": {"p50_ms": value["c1"]["p50_ms"], "p95_ms": 1,
                                                                       "p99_ms": 1},
                          "c8": {"throughput_rps": value["c8"]["throughput_rps"], "p99_ms": 1}}
                    for key, value in report["servers"].items()},
        "ratios": {**report["ratios"], "throughput_over_app": {}}})
    assert "| throughput the vehicle gate costs at c=8 (at most) | 10% | 5% | yes |" in table
    assert "| app p50 at c=1 over the in-process floor (x, at most) | 1.3 | 1.40 | **no** |" in table
    assert "litert int8-full invoke + vehicle gate" in table


def test_update_readme_fills_only_the_blocks_that_have_results(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "serve.md").write_text("| a | b |\n|---|---|\n| 1 | 2 |\n")
    readme = tmp_path / "README.md"
    readme.write_text("# Title\n<!-- bench:serve -->\nold figures\n<!-- /bench:serve -->\ntext\n"
                      "<!-- bench:input_pipeline -->\n<!-- /bench:input_pipeline -->\nend\n")
    assert serve.update_readme(readme, results) == ["serve"]
    expected = ("# Title\n<!-- bench:serve -->\n| a | b |\n|---|---|\n| 1 | 2 |\n<!-- /bench:serve -->\ntext\n"
                "<!-- bench:input_pipeline -->\n<!-- /bench:input_pipeline -->\nend\n")
    assert readme.read_text() == expected
    serve.update_readme(readme, results)
    assert readme.read_text() == expected  # idempotent


def test_readme_shows_the_benchmark_tables_exactly_as_written():
    """Every figure in the manual's benchmark blocks is the benchmark's own output, never retyped."""
    import re

    readme = manual_text()
    blocks = dict(re.findall(r"<!-- bench:([\w-]+) -->\n(.*?)<!-- /bench:\1 -->", readme, re.S))
    assert "serve" in blocks
    for name, content in blocks.items():
        source = serve.RESULTS_DIR / f"{name}.md"
        expected = source.read_text(encoding="utf-8") if source.is_file() else ""
        assert content == expected, f"README block {name} differs from {source}: run `python -m benchmarks.serve " \
                                    "--readme-only`"
