"""Peak memory of one worker answering one photo at the pixel limit, for each format the app takes.

For each of JPEG, PNG, WebP, GIF, HEIC and AVIF a 4:3 photo at that format's pixel limit (the defaults of
``MAX_IMAGE_PIXELS``, 40 million: 7303 x 5477, and ``MAX_WEBP_PIXELS`` for WebP) is written once, smooth
enough to stay under the 10 MB ``MAX_CONTENT_LENGTH`` like a real upload. Then, for each, a fresh Python process
builds the app as a gunicorn worker has it (the shipped model and vehicle gate, LiteRT, SQLite), warms it
up with a small photo, resets its peak resident memory (``/proc/self/clear_refs``) and posts the photo to
``POST /api/v1/predictions`` with the test client: the whole request path of a worker, from the bytes to
the stored row. It reports the process's peak resident memory (``VmHWM``) before and after, and the
time taken; then, in another fresh process, the peak with ``--concurrent`` such uploads at once (a worker's
threads), which the app's one-large-decode-at-a-time rule keeps from adding up. A fresh process per format keeps one format's freed-but-kept heap from hiding the next one's.

Writes ``benchmarks/results/memory_formats.json`` and ``.md``; the manual's sizing note quotes them.

Usage: ``python -m benchmarks.memory_formats [--repeat 2] [--concurrent 2] [--out-dir benchmarks/results]``;
``MAX_WEBP_PIXELS=40000000 python -m benchmarks.memory_formats --formats WEBP --pixels 40000000 --name
memory_webp_40mp`` measures what a WebP would cost at the general limit.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "HEIF", "AVIF")
ASPECT = 4 / 3
SAVE_OPTIONS = {"JPEG": {"quality": 90}, "PNG": {"optimize": False}, "WEBP": {"quality": 80},
                "GIF": {}, "HEIF": {"quality": 50}, "AVIF": {"quality": 50, "speed": 10}}


def photo_size(pixels: int) -> tuple[int, int]:
    """The largest 4:3 landscape ``(width, height)`` whose area is at most ``pixels``."""
    height = int(math.sqrt(pixels / ASPECT))
    return pixels // height, height


def test_picture(size: tuple[int, int]):
    """A smooth picture with some structure (gradients and bands): compresses like a plain photo."""
    import numpy as np
    from PIL import Image

    width, height = size
    x = np.linspace(0, 1, width, dtype=np.float32)[np.newaxis, :]
    y = np.linspace(0, 1, height, dtype=np.float32)[:, np.newaxis]
    red = (255 * x).repeat(height, axis=0)
    green = (255 * y).repeat(width, axis=1)
    blue = 128 + 100 * np.sin(12 * x + 7 * y)
    pixels = np.stack([red, green, blue], axis=-1).clip(0, 255).astype(np.uint8)
    return Image.fromarray(pixels, "RGB")


def pixel_limits() -> dict[str, int]:
    """Each format's pixel limit with the default settings."""
    from app.config import Config

    return {fmt: Config.MAX_WEBP_PIXELS.default if fmt == "WEBP" else Config.MAX_IMAGE_PIXELS.default
            for fmt in FORMATS}


def write_photos(folder: Path, limits: dict[str, int]) -> dict[str, dict]:
    """One file per format in ``folder``; returns format -> {path, bytes, size, encode_s}."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    pictures = {}
    written = {}
    for fmt, pixels in limits.items():
        size = photo_size(pixels)
        if size not in pictures:
            pictures = {size: test_picture(size)}
        picture = pictures[size]
        started = time.perf_counter()
        image = picture.convert("P", palette=1, colors=256) if fmt == "GIF" else picture  # 1 = adaptive
        buffer = io.BytesIO()
        image.save(buffer, fmt, **SAVE_OPTIONS[fmt])
        path = folder / f"photo.{fmt.lower()}"
        path.write_bytes(buffer.getvalue())
        written[fmt] = {"path": str(path), "bytes": path.stat().st_size, "size": list(size),
                        "encode_s": round(time.perf_counter() - started, 1)}
    return written


def vm_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(path: str, database: str, concurrent: int = 1) -> dict:
    """In a fresh process: the app as a worker has it, one warm-up request, then the photo
    (``concurrent`` times at once, each from its own thread, as a worker's threads would)."""
    from PIL import Image

    from app import create_app

    app = create_app({"DATABASE_URL": f"sqlite:///{database}", "RATELIMIT_ENABLED": False,
                      "SECRET_KEY": "benchmark-secret-key-of-enough-length", "INFERENCE_THREADS": 1})
    with app.app_context():
        from flask_migrate import upgrade

        upgrade()
    client = app.test_client()
    small = io.BytesIO()
    Image.new("RGB", (640, 480), (90, 90, 90)).save(small, "JPEG")
    warm = client.post("/api/v1/predictions", data={"image": (io.BytesIO(small.getvalue()), "warm.jpg")})
    assert warm.status_code == 201, warm.get_json()
    data = Path(path).read_bytes()
    baseline_rss, baseline_peak = vm_kb("VmRSS"), vm_kb("VmHWM")
    try:
        Path("/proc/self/clear_refs").write_text("5")
        resettable = True
    except OSError:
        resettable = False
    before = vm_kb("VmHWM")
    started = time.perf_counter()

    def post(_):
        return app.test_client().post("/api/v1/predictions", data={"image": (io.BytesIO(data), Path(path).name)})

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(concurrent) as pool:
        responses = list(pool.map(post, range(concurrent)))
    seconds = time.perf_counter() - started
    response = responses[0]
    assert len({r.status_code for r in responses}) == 1, [r.status_code for r in responses]
    body = response.get_json()
    return {"status": response.status_code, "seconds": round(seconds, 2),
            "image": body.get("image") if response.status_code == 201 else body.get("error"),
            "baseline_rss_kb": baseline_rss, "baseline_peak_kb": baseline_peak, "peak_before_kb": before,
            "peak_kb": vm_kb("VmHWM"), "peak_resettable": resettable}


def measure(path: str, repeat: int, concurrent: int = 1) -> dict:
    """``repeat`` fresh processes for one file; the median of their figures."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as folder:
            result = subprocess.run([sys.executable, "-m", "benchmarks.memory_formats", "--child", path,
                                     "--database", str(Path(folder) / "p.db"), "--concurrent", str(concurrent)],
                                    cwd=REPO_ROOT, capture_output=True, text=True, timeout=900,
                                    env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "LOG_LEVEL": "WARNING"})
        if result.returncode != 0:
            raise SystemExit(f"error: measuring {path} failed:\n{result.stderr[-3000:]}")
        runs.append(json.loads(result.stdout.strip().splitlines()[-1]))
    mib = lambda kb: round(kb / 1024, 1)  # noqa: E731
    return {
        "status": runs[0]["status"], "image": runs[0]["image"],
        "worker_before_mib": mib(statistics.median(r["baseline_rss_kb"] for r in runs)),
        "worker_peak_mib": mib(statistics.median(r["peak_kb"] for r in runs)),
        "worker_peak_max_mib": mib(max(r["peak_kb"] for r in runs)),
        "growth_mib": mib(statistics.median(r["peak_kb"] - r["baseline_rss_kb"] for r in runs)),
        "seconds": statistics.median(r["seconds"] for r in runs),
        "peak_resettable": all(r["peak_resettable"] for r in runs), "runs": runs,
    }


def markdown(report: dict) -> str:
    concurrent = report["concurrent"]
    lines = [f"| format | file | pixels | status | worker before | worker peak | growth | time | "
             f"peak, {concurrent} at once |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for fmt, row in report["results"].items():
        photo = report["photos"][fmt]
        width, height = photo["size"]
        together = report["results_concurrent"].get(fmt)
        lines.append(f"| {fmt} | {photo['bytes'] / 1e6:.2f} MB | {width} x {height} | {row['status']} | "
                     f"{row['worker_before_mib']:.0f} MiB | **{row['worker_peak_mib']:.0f} MiB** | "
                     f"+{row['growth_mib']:.0f} MiB | {row['seconds']:.1f} s | "
                     + (f"{together['worker_peak_mib']:.0f} MiB |" if together else "- |"))
    lines += ["", f"Peak resident memory (`VmHWM`) of a fresh process holding the app as a gunicorn worker "
                  f"has it ({report['model']}, vehicle gate, LiteRT, one inference thread), after a warm-up "
                  f"request, answering one `POST /api/v1/predictions` of the photo (median of "
                  f"{report['repeat']} processes per format), and {report['concurrent']} of them at once from "
                  f"as many threads (one process). {report['machine']}. From "
                  f"`benchmarks/results/{report['name']}.json` (`python -m benchmarks.memory_formats`)."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pixels", type=int, default=None,
                        help="Pixels per photo (default: each format's limit with the default settings).")
    parser.add_argument("--repeat", type=int, default=2, help="Fresh processes per format.")
    parser.add_argument("--concurrent", type=int, default=2, help="Uploads at once in the second measurement.")
    parser.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    parser.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    parser.add_argument("--name", default="memory_formats", help="Stem of the results files.")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.database, args.concurrent)))
        return {}
    limits = {fmt: args.pixels or limit for fmt, limit in pixel_limits().items() if fmt in args.formats}
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        photos = write_photos(Path(folder), limits)
        results = {fmt: measure(photo["path"], args.repeat) for fmt, photo in photos.items()}
        together = ({fmt: measure(photo["path"], 1, args.concurrent) for fmt, photo in photos.items()}
                    if args.concurrent > 1 else {})
    for photo in photos.values():
        photo.pop("path")
    metadata = json.loads((REPO_ROOT / "model_artifacts" / "default" / "metadata.json").read_text())
    load = os.getloadavg()[0]
    report = {
        "what": "peak resident memory of one app process answering one photo at the pixel limit, per format",
        "name": args.name, "pixel_limits": limits, "repeat": args.repeat, "concurrent": args.concurrent,
        "model": f"{metadata['name']} {metadata['version']}",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average {load:.1f} at the end",
        "python": platform.python_version(),
        "photos": photos, "results": results, "results_concurrent": together,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"{args.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.out_dir / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))
    return report


if __name__ == "__main__":
    main()
