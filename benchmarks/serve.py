"""Serving benchmark: the app under gunicorn against a ``model.predict``-per-request baseline, in one run.

Both servers serve the same artifact (``model_artifacts/default`` unless ``--model-dir``) and receive the
same real car photos: originals from ``../shared/datasets/stanford-cars/val`` plus 1-3 megapixel JPEGs
made from them by upscaling (phones upload photos that size). For each server it measures

* cold start - process start to the first ``201`` (the median of ``--cold-starts`` starts);
* latency p50/p95/p99 at concurrency 1;
* throughput and p99 at concurrency 8, with the error count;
* peak RSS of each gunicorn worker (``VmHWM``).

Besides the app as configured by default it runs the app with micro-batching on (``BATCH_MAX_SIZE``) and
with each quantised LiteRT copy the artifact has (``MODEL_VARIANT``), so that those switches are judged
by figures measured the same way.

It also measures the floor - the model work of one request in-process: decode + resize + invoke of the
classifier, plus the vehicle gate when the app runs one; no HTTP, no database, no thumbnail - with as many
inference threads as one app worker gets. It writes ``benchmarks/results/serve.json`` plus
``benchmarks/results/serve.md`` (the table the manual includes).

Usage: ``python -m benchmarks.serve [--requests 200] [--concurrent-requests 400]``.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import io
import json
import os
import platform
import random
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_PHOTOS = REPO_ROOT.parent / "shared" / "datasets" / "stanford-cars" / "val"
UPSCALED_MEGAPIXELS = (1.2, 2.0, 3.0)


def parse_args(argv=None) -> argparse.Namespace:
    """Command line: what to serve, what to send and how much."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument("--model-dir", type=Path, default=REPO_ROOT / "model_artifacts" / "default",
                        help="artifact both servers load")
    inputs.add_argument("--photos", type=Path, default=DEFAULT_PHOTOS, help="folder of real car photos")
    inputs.add_argument("--photo-count", type=int, default=8, help="originals taken (each also upscaled 3x)")
    load = parser.add_argument_group("load")
    load.add_argument("--requests", type=int, default=200, help="requests at concurrency 1, per server")
    load.add_argument("--concurrent-requests", type=int, default=400, help="requests at concurrency 8")
    load.add_argument("--concurrency", type=int, default=8)
    load.add_argument("--workers", type=int, default=2, help="gunicorn workers for both servers")
    load.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker, both servers")
    load.add_argument("--cold-starts", type=int, default=3,
                      help="process starts timed per server (the median is reported: one start is noisy)")
    variants = parser.add_argument_group("app variants also measured")
    variants.add_argument("--batch-max-size", type=int, default=4,
                          help="BATCH_MAX_SIZE of the micro-batching run (1 skips that run)")
    variants.add_argument("--batch-timeout-ms", type=float, default=2.0, help="BATCH_TIMEOUT_MS of that run")
    variants.add_argument("--no-model-variants", action="store_true",
                          help="skip the runs with model.fp16.tflite / model.int8.tflite")
    output = parser.add_argument_group("output")
    output.add_argument("--out", type=Path, default=RESULTS_DIR, help="folder for serve.json and serve.md "
                        "(the manual's tables are refreshed when it is the default)")
    output.add_argument("--readme-only", action="store_true",
                        help="measure nothing: copy the results/*.md tables into the manual (README.md, docs/) and exit")
    return parser.parse_args(argv)


def make_payloads(photo_dir: Path, count: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """Real photos as JPEG bytes: each original plus upscaled 1.2, 2 and 3 megapixel copies.

    Args:
        photo_dir: Folder of class folders of JPEGs.
        count: How many originals to take (seeded choice).
        seed: Random seed for the choice.

    Returns:
        ``(name, jpeg_bytes)`` pairs.
    """
    photos = sorted(photo_dir.glob("*/*.jpg"))
    if not photos:
        raise SystemExit(f"error: no photos under {photo_dir}; pass --photos DIR")
    chosen = random.Random(seed).sample(photos, min(count, len(photos)))
    payloads = []
    for path in chosen:
        original = path.read_bytes()
        payloads.append((path.name, original))
        image = Image.open(io.BytesIO(original)).convert("RGB")
        for megapixels in UPSCALED_MEGAPIXELS:
            scale = (megapixels * 1e6 / (image.width * image.height)) ** 0.5
            size = (round(image.width * scale), round(image.height * scale))
            buffer = io.BytesIO()
            image.resize(size, Image.Resampling.LANCZOS).save(buffer, "JPEG", quality=90)
            payloads.append((f"{path.stem}-{megapixels}mp.jpg", buffer.getvalue()))
    return payloads


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    """Encode one file as a ``multipart/form-data`` body under the field ``image``."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    return head + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post_once(port: int, body: bytes, content_type: str, timeout: float = 60.0) -> tuple[int, float]:
    """POST one prediction; returns ``(status, seconds)``, status 0 on a connection error."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", "/api/v1/predictions", body=body, headers={"Content-Type": content_type})
        response = connection.getresponse()
        response.read()
        status = response.status
    except OSError:
        status = 0
    finally:
        connection.close()
    return status, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def worker_pids(master_pid: int) -> list[int]:
    """The gunicorn workers: processes whose parent is the master."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master_pid:
            children.append(int(stat.parent.name))
    return children


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a process in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """One gunicorn server started for the benchmark and stopped after it."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int):
        self.name, self.argv, self.env, self.port = name, argv, env, port
        self.process: subprocess.Popen | None = None
        self.started_at = 0.0

    def start(self) -> None:
        """Start the process and remember when."""
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen(self.argv, env=self.env, cwd=REPO_ROOT,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_first_created(self, body: bytes, content_type: str, timeout: float = 120.0) -> float:
        """Seconds from process start to the first 201 answer."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"error: {self.name} server exited: {self.process.stderr.read().decode()[-2000:]}")
            status, _ = post_once(self.port, body, content_type, timeout=30)
            if status == 201:
                return time.perf_counter() - self.started_at
            time.sleep(0.02)
        self.stop()
        raise SystemExit(f"error: {self.name} server gave no 201 within {timeout:.0f}s: "
                         f"{self.process.stderr.read().decode()[-2000:]}")

    def stop(self) -> None:
        """Terminate gunicorn and wait for it."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()


def measure_server(server: Server, bodies: list[tuple[bytes, str]], args: argparse.Namespace) -> dict:
    """Cold start, c=1 latency, c=N throughput and worker memory for one server.

    Args:
        server: A server not yet started.
        bodies: Encoded request bodies, cycled through.
        args: Parsed command line.

    Returns:
        The figures for this server.
    """
    cold_starts = []
    for _ in range(max(0, args.cold_starts - 1)):  # extra starts, only timed
        server.start()
        try:
            cold_starts.append(server.wait_first_created(*bodies[0]))
        finally:
            server.stop()
    server.start()
    try:
        cold_starts.append(server.wait_first_created(*bodies[0]))
        cold_start = statistics.median(cold_starts)
        # One pass over every payload so each worker has seen every image size before timing.
        for body in bodies:
            post_once(server.port, *body)

        sequential = [post_once(server.port, *bodies[i % len(bodies)]) for i in range(args.requests)]
        latencies = [seconds for _, seconds in sequential]

        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            concurrent_results = list(pool.map(lambda i: post_once(server.port, *bodies[i % len(bodies)]),
                                               range(args.concurrent_requests)))
        elapsed = time.perf_counter() - started

        workers = worker_pids(server.process.pid)
        rss = [peak_rss_mb(pid) for pid in workers]
    finally:
        server.stop()
    errors = sum(status != 201 for status, _ in sequential + concurrent_results)
    return {
        "cold_start_s": cold_start,
        "cold_starts_s": [round(value, 3) for value in cold_starts],
        "c1": {"requests": args.requests, "p50_ms": percentile(latencies, 50) * 1e3,
               "p95_ms": percentile(latencies, 95) * 1e3, "p99_ms": percentile(latencies, 99) * 1e3},
        f"c{args.concurrency}": {
            "requests": args.concurrent_requests,
            "throughput_rps": args.concurrent_requests / elapsed,
            "p99_ms": percentile([s for _, s in concurrent_results], 99) * 1e3,
        },
        "errors": errors,
        "worker_peak_rss_mb": rss,
    }


def inference_threads(workers: int) -> int:
    """Threads per model invocation in each app worker, as ``gunicorn.conf.py`` sets them."""
    return int(os.environ.get("INFERENCE_THREADS") or max(1, (os.cpu_count() or 1) // workers))


def measure_floor(model_dir: Path, payloads: list[tuple[str, bytes]], threads: int, repeats: int = 3) -> dict:
    """The model work of one request, in-process with the app's own code and one worker's threads.

    Args:
        model_dir: Artifact folder.
        payloads: ``(name, jpeg_bytes)`` pairs.
        threads: Inference threads, as in one app worker.
        repeats: Passes over the payloads (after one untimed pass).

    Returns:
        p50/p95 of a request's model work as the app does it (:func:`inference.pipeline.answer_photo`:
        decode, thumbnail and vehicle gate beside the classifier, verdict, answer), and the p50 of decode +
        resize + classifier invocation alone.
    """
    from app import create_app
    from app.serving import get_classifier
    from inference.imaging import decode_upload
    from inference.pipeline import answer_photo

    app = create_app({"MODEL_DIR": str(model_dir), "DATABASE_URL": "sqlite://", "SECRET_KEY": secrets.token_hex(32),
                      "INFERENCE_THREADS": threads, "BATCH_MAX_SIZE": 1, "MODEL_VARIANT": "auto"})
    with app.app_context():
        classifier = get_classifier()
        gate = app.extensions.get("vehicle_gate")
        classifier_only, request_work = [], []
        for repeat in range(repeats + 1):
            for _, data in payloads:
                start = time.perf_counter()
                upload = decode_upload(data, max_pixels=app.config["MAX_IMAGE_PIXELS"], target=classifier.image_size,
                                       resize_mode=classifier.resize_mode)
                classifier.classify(upload.image, top_k=5)
                classified = time.perf_counter()
                answer_photo(data, classifier, gate, max_pixels=app.config["MAX_IMAGE_PIXELS"], top_k=5)
                if repeat:  # the first pass only warms caches
                    classifier_only.append(classified - start)
                    request_work.append(time.perf_counter() - classified)
    return {"runtime": classifier.runtime, "variant": classifier.variant, "inference_threads": threads,
            "vehicle_gate": gate is not None,
            "samples": len(request_work), "p50_ms": percentile(request_work, 50) * 1e3,
            "p95_ms": percentile(request_work, 95) * 1e3,
            "classifier_only_p50_ms": percentile(classifier_only, 50) * 1e3}


def measure_batch_invocation(model_dir: Path, batch_sizes: list[int], threads: int, rounds: int = 15) -> dict:
    """Classifier invocation time per image at each batch size, in-process: what micro-batching can gain.

    The sizes take turns within every round, so that a machine busy with other work slows them alike.

    Returns:
        ``{str(batch size): median ms per image}``.
    """
    from inference.classifier import load_classifier

    classifier = load_classifier(model_dir, num_threads=threads)
    batches = {size: np.random.default_rng(size).uniform(0, 255, (size, *classifier.image_size, 3))
               .astype(np.float32) for size in batch_sizes}
    timings: dict[int, list[float]] = {size: [] for size in batch_sizes}
    for round_index in range(rounds + 1):
        for size, batch in batches.items():
            start = time.perf_counter()
            classifier.predict_batch(batch)
            if round_index:  # the first round allocates each batch size's tensors
                timings[size].append((time.perf_counter() - start) / size)
    return {str(size): statistics.median(values) * 1e3 for size, values in timings.items()}


def machine_description() -> dict:
    """What the figures were measured on."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(memory_kb / 2**20, 1),
            "python": platform.python_version(), "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()], "nice": os.nice(0)}


def like_for_like(results: dict, concurrency: str) -> dict[str, float] | None:
    """Baseline ratios of the app run without the vehicle gate (same single network as the baseline)."""
    if "app_no_gate" not in results:
        return None
    app, baseline = results["app_no_gate"], results["baseline"]
    return {"baseline_p50_over_app_p50": baseline["c1"]["p50_ms"] / app["c1"]["p50_ms"],
            "app_throughput_over_baseline": (app[concurrency]["throughput_rps"]
                                             / baseline[concurrency]["throughput_rps"])}


def app_configurations(args: argparse.Namespace) -> dict[str, tuple[str, dict[str, str]]]:
    """The app runs: key -> (label, settings). The first is the app as shipped (defaults)."""
    from inference.artifact import LITERT_VARIANTS

    # The load generator is one client: limits are raised rather than switched off, so their checks still
    # run on every request as in production.
    defaults = {"BATCH_MAX_SIZE": "1", "MODEL_VARIANT": "auto", "RATELIMIT_UPLOAD": "1000000 per minute",
                "RATELIMIT_API": "1000000 per minute"}
    runs = {"app": ("app", defaults)}
    if (REPO_ROOT / "model_artifacts" / "vehicle-gate").is_dir():
        # Like for like with the baseline, which runs the classifier only: the same app without the
        # second network that answers "not a car".
        runs["app_no_gate"] = ("app, vehicle gate off", {**defaults, "VEHICLE_GATE_DIR": "none"})
    if args.batch_max_size > 1:
        runs["app_batching"] = (f"app, micro-batching {args.batch_max_size} / {args.batch_timeout_ms:g} ms",
                                {**defaults, "BATCH_MAX_SIZE": str(args.batch_max_size),
                                 "BATCH_TIMEOUT_MS": str(args.batch_timeout_ms)})
    if not args.no_model_variants:
        served = served_variant(args.model_dir)
        for variant, filename in LITERT_VARIANTS.items():
            if variant != served and (args.model_dir / filename).is_file():
                runs[f"app_{variant}"] = (f"app, {variant} LiteRT", {**defaults, "MODEL_VARIANT": variant})
    return runs


def served_variant(model_dir: Path) -> str:
    """The LiteRT copy the app serves ``model_dir`` with by default (``MODEL_VARIANT=auto``)."""
    from inference.classifier import recommended_variant

    return recommended_variant(model_dir, json.loads((model_dir / "metadata.json").read_text(encoding="utf-8")))


# The serving aims the report checks, as (key, description, target): ratios against the baseline and the
# floor, the vehicle gate's share of throughput, start-up and memory.
AIMS = (
    ("baseline_p50_over_app_p50", "app p50 at c=1 vs the baseline's (x faster)", 5.0),
    ("app_throughput_over_baseline", "app throughput at c=8 vs the baseline's (x)", 4.0),
    ("app_p50_over_floor", "app p50 at c=1 over the in-process floor (x, at most)", 1.3),
    ("gate_throughput_cost", "throughput the vehicle gate costs at c=8 (at most)", 0.10),
    ("cold_start_s", "cold start, process start to first answer (s, at most)", 1.0),
    ("peak_rss_mb", "peak RSS per worker (MiB, at most)", 200.0),
)


def check_aims(report: dict) -> list[dict]:
    """Each aim of :data:`AIMS` with the measured value and whether it is met."""
    concurrency = f"c{report['settings']['concurrency']}"
    servers, ratios = report["servers"], report["ratios"]
    app = servers["app"]
    values = {
        "baseline_p50_over_app_p50": ratios["baseline_p50_over_app_p50"],
        "app_throughput_over_baseline": ratios["app_throughput_over_baseline"],
        "app_p50_over_floor": ratios["app_p50_over_floor"],
        "gate_throughput_cost": (1.0 - app[concurrency]["throughput_rps"]
                                 / servers["app_no_gate"][concurrency]["throughput_rps"])
        if "app_no_gate" in servers else None,
        "cold_start_s": app["cold_start_s"],
        "peak_rss_mb": max(app["worker_peak_rss_mb"], default=None),
    }
    rows = []
    for key, description, target in AIMS:
        value = values[key]
        at_least = key in ("baseline_p50_over_app_p50", "app_throughput_over_baseline")
        met = None if value is None else (value >= target if at_least else value <= target)
        rows.append({"aim": key, "description": description, "target": target, "value": value, "met": met})
    return rows


def load_average(machine: dict, when: str, prefix: str = "") -> str:
    """``"a, b, c"`` from ``machine["load_average_at_<when>"]``, or nothing when it was not recorded."""
    values = machine.get(f"load_average_at_{when}")
    return f"{prefix}{', '.join(f'{x:g}' for x in values)}{' at the end' if when == 'end' else ''}" if values else ""


def render_markdown(report: dict) -> str:
    """The manual table: one row per server, then the in-process floor and the ratios."""
    servers, floor = report["servers"], report["floor"]
    concurrency = f"c{report['settings']['concurrency']}"

    def row(figures: dict) -> str:
        rss = ", ".join(f"{value:.0f}" for value in figures["worker_peak_rss_mb"])
        return (f"| {figures['label']} | {figures['c1']['p50_ms']:.1f} | {figures['c1']['p95_ms']:.1f} | "
                f"{figures['c1']['p99_ms']:.1f} | {figures[concurrency]['throughput_rps']:.1f} | "
                f"{figures[concurrency]['p99_ms']:.0f} | {figures['errors']} | "
                f"{figures['cold_start_s']:.2f} | {rss} |")

    ratios = report["ratios"]
    machine = report["machine"]
    settings = report["settings"]
    gate = " + vehicle gate" if floor["vehicle_gate"] else ""
    # A benchmark sharing the machine with a long job may be run at a higher priority: say so.
    priority = f"; run at nice {machine['nice']}" if machine.get("nice") else ""
    lines = [
        f"Measured {report['measured_at']} on {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory_gib']} GiB, Python {machine['python']} (1/5/15-minute load average "
        f"{load_average(machine, 'start')} at the start{load_average(machine, 'end', ', ')}{priority}); model "
        f"`{report['model']}`, {settings['workers']} workers x {settings['threads']} threads x "
        f"{floor['inference_threads']} inference thread(s); {report['payload_count']} real photos (originals + "
        f"1.2/2/3 MP upscales); {settings['requests_c1']} requests at c=1, {settings['requests_concurrent']} "
        f"at c={settings['concurrency']}"
        + (f"; cold start is the median of {settings['cold_starts']} starts." if settings.get("cold_starts", 1) > 1
           else "."),
        "",
        f"| server | p50 ms (c=1) | p95 ms | p99 ms | req/s ({concurrency}) | p99 ms ({concurrency}) | errors "
        "| cold start s | peak RSS per worker MiB |",
        "|---|---|---|---|---|---|---|---|---|",
        *[row(figures) for figures in servers.values()],
        "",
        f"In-process floor (decode + resize + {floor['runtime']} {floor.get('variant', 'float32')} invoke{gate}, "
        f"{floor['inference_threads']} "
        f"thread(s)): p50 **{floor['p50_ms']:.1f} ms** (classifier alone {floor['classifier_only_p50_ms']:.1f} ms). "
        f"App p50 / floor: **{ratios['app_p50_over_floor']:.2f}x**; baseline p50 / app p50: "
        f"**{ratios['baseline_p50_over_app_p50']:.1f}x**; app throughput / baseline: "
        f"**{ratios['app_throughput_over_baseline']:.1f}x**.",
    ]
    same_work = ratios.get("like_for_like")
    if same_work:
        lines.append(f"Like for like (app without the vehicle gate, one network as in the baseline): baseline "
                     f"p50 / app p50 **{same_work['baseline_p50_over_app_p50']:.1f}x**, app throughput / "
                     f"baseline **{same_work['app_throughput_over_baseline']:.1f}x**.")
    by_batch = floor.get("ms_per_image_by_batch_size") or {}
    if len(by_batch) > 1:
        lines.append("Classifier invocation per image, in-process: " + ", ".join(
            f"batch {size}: {ms:.2f} ms" for size, ms in by_batch.items()) + ".")
    for key, ratio in ratios.get("throughput_over_app", {}).items():
        lines.append(f"{servers[key]['label']}: throughput {ratio:.2f}x the app's, p50 "
                     f"{servers[key]['c1']['p50_ms'] / servers['app']['c1']['p50_ms']:.2f}x.")
    aims = report.get("aims") or []
    if aims:
        lines += ["", "| aim | target | measured | met |", "|---|---|---|---|"]
        for aim in aims:
            value = "-" if aim["value"] is None else (f"{aim['value']:.0%}" if aim["aim"] == "gate_throughput_cost"
                                                      else f"{aim['value']:.2f}")
            target = f"{aim['target']:.0%}" if aim["aim"] == "gate_throughput_cost" else f"{aim['target']:g}"
            met = {True: "yes", False: "**no**", None: "-"}[aim["met"]]
            lines.append(f"| {aim['description']} | {target} | {value} | {met} |")
    variants = report.get("litert_variants") or {}
    if variants:
        lines += ["", "Quantised LiteRT copies (`python -m training quantize`, from the artifact's metadata):", "",
                  "| variant | top-1 | float32 top-1 | drop, points | agreement with float32 | MB | ms/image "
                  "| kept |", "|---|---|---|---|---|---|---|---|"]
        for name, row in variants.items():
            lines.append(f"| {name} | {row['top1']:.2f}% | {row['top1_float32']:.2f}% | {row['drop_points']:+.2f} | "
                         f"{row['top1_agreement']:.1%} | {row['size_bytes'] / 1e6:.1f} (of "
                         f"{row['float32_size_bytes'] / 1e6:.1f}) | {row['ms_per_image']:.1f} (float32 "
                         f"{row['float32_ms_per_image']:.1f}) | {'yes' if row['kept'] else 'no'} |")
    return "\n".join(lines) + "\n"


def manual_pages(root: Path = REPO_ROOT) -> list[Path]:
    """README.md and the pages of the MkDocs manual in ``docs/``: where generated blocks may sit."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def update_readme(readme: Path | None = None, results_dir: Path = RESULTS_DIR) -> list[str]:
    """Copy each ``results/NAME.md`` between ``<!-- bench:NAME -->`` markers of ``readme``, or of every manual page.

    The manual shows benchmark figures only this way, so that none is ever typed by hand; a block is found
    by its marker, so moving it to another page needs no change here.

    Returns:
        The names of the blocks that were filled.
    """
    filled = []
    for page in [readme] if readme is not None else manual_pages():
        text = page.read_text(encoding="utf-8")
        before = text
        for name in re.findall(r"<!-- bench:([\w-]+) -->", text):
            source = results_dir / f"{name}.md"
            if source.is_file():
                block = re.compile(rf"(<!-- bench:{name} -->\n).*?(<!-- /bench:{name} -->)", re.S)
                text = block.sub(lambda m: m.group(1) + source.read_text(encoding="utf-8") + m.group(2), text)
                filled.append(name)
        if text != before:
            page.write_text(text, encoding="utf-8")
    return filled


def main(argv=None) -> None:
    """Run the servers one after the other under the same load and write the results."""
    args = parse_args(argv)
    if args.readme_only:
        print(f"Manual blocks filled: {', '.join(update_readme()) or 'none'}")
        return
    if not (args.model_dir / "model.keras").exists():
        raise SystemExit(f"error: no model.keras in {args.model_dir}; pass --model-dir")
    payloads = make_payloads(args.photos, args.photo_count)
    bodies = [multipart(name, data) for name, data in payloads]
    print(f"{len(payloads)} payloads, {sum(len(d) for _, d in payloads) / 1e6:.1f} MB in all", flush=True)
    machine = machine_description()
    started = time.perf_counter()
    # Measured first, next to the app's c=1 run it is compared with: a busy machine drifts over minutes.
    print("measuring the in-process floor ...", flush=True)
    floor = measure_floor(args.model_dir, payloads, inference_threads(args.workers))
    batch_sizes = sorted({1, max(1, args.batch_max_size)})
    floor["ms_per_image_by_batch_size"] = measure_batch_invocation(args.model_dir, batch_sizes,
                                                                   inference_threads(args.workers))

    python_bin = Path(sys.executable).parent
    with tempfile.TemporaryDirectory() as scratch:
        base_env = {**os.environ, "MODEL_DIR": str(args.model_dir.resolve()),
                    "WEB_CONCURRENCY": str(args.workers), "GUNICORN_THREADS": str(args.threads)}
        template_db = Path(scratch) / "template.db"
        subprocess.run([python_bin / "flask", "--app", "wsgi", "db", "upgrade"], cwd=REPO_ROOT, check=True,
                       capture_output=True, env={**base_env, "DATABASE_URL": f"sqlite:///{template_db}"})
        servers = {}
        labels = {}
        for key, (label, settings) in app_configurations(args).items():
            database = Path(scratch) / f"{key}.db"
            shutil.copyfile(template_db, database)
            port = free_port()
            env = {**base_env, **settings, "PORT": str(port), "DATABASE_URL": f"sqlite:///{database}"}
            servers[key] = Server(key, [str(python_bin / "gunicorn"), "--config", "gunicorn.conf.py", "wsgi:app"],
                                  env, port)
            labels[key] = label
        baseline_port = free_port()
        servers["baseline"] = Server(
            "baseline", [str(python_bin / "gunicorn"), "--config", "/dev/null", "--workers", str(args.workers),
                         "--threads", str(args.threads), "--bind", f"127.0.0.1:{baseline_port}",
                         "benchmarks.baseline_app:app"],
            {**base_env, "PORT": str(baseline_port)}, baseline_port)
        labels["baseline"] = "baseline (`model.predict`)"
        results = {}
        for key, server in servers.items():
            print(f"measuring {labels[key]} ...", flush=True)
            results[key] = {"label": labels[key], **measure_server(server, bodies, args)}
            print(json.dumps(results[key], indent=2), flush=True)

    concurrency = f"c{args.concurrency}"
    app_figures, baseline_figures = results["app"], results["baseline"]
    metadata = json.loads((args.model_dir / "metadata.json").read_text())
    report = {
        "measured_at": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {**machine, "load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "model": metadata["name"],
        "litert_variants": metadata.get("litert_variants", {}),
        "payload_count": len(payloads),
        "settings": {"workers": args.workers, "threads": args.threads, "concurrency": args.concurrency,
                     "requests_c1": args.requests, "requests_concurrent": args.concurrent_requests,
                     "cold_starts": args.cold_starts},
        "servers": results,
        "floor": floor,
        "ratios": {
            "app_p50_over_floor": app_figures["c1"]["p50_ms"] / floor["p50_ms"],
            "baseline_p50_over_app_p50": baseline_figures["c1"]["p50_ms"] / app_figures["c1"]["p50_ms"],
            "app_throughput_over_baseline": (app_figures[concurrency]["throughput_rps"]
                                             / baseline_figures[concurrency]["throughput_rps"]),
            "like_for_like": like_for_like(results, concurrency),
            "throughput_over_app": {
                key: figures[concurrency]["throughput_rps"] / app_figures[concurrency]["throughput_rps"]
                for key, figures in results.items() if key not in ("app", "baseline")},
        },
        "duration_s": round(time.perf_counter() - started, 1),
    }
    report["aims"] = check_aims(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serve.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out / "serve.md").write_text(render_markdown(report))
    print(render_markdown(report))
    if args.out.resolve() == RESULTS_DIR:
        print(f"Manual blocks filled: {', '.join(update_readme())}")


if __name__ == "__main__":
    main()
