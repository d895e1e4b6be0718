"""Decompression-bomb benchmark: how fast, and with how little memory, a bomb upload is refused.

Each bomb is a small file whose header promises a huge canvas: real PNG bombs (every row compressed,
a few hundred KB that inflate to hundreds of MB) and GIFs whose screen or frame claims 65535 x 65535.
``decode_upload`` must refuse them from the header, before a pixel buffer exists. For each bomb this
measures, over ``--repeat`` calls:

* the time to the ``ImageRejected`` (median and worst), the median against a 100 ms budget (the worst
  call mostly measures how long the scheduler kept the process waiting on a busy machine);
* the peak Python allocation during the call (``tracemalloc``);
* the growth of the process's peak resident memory (``VmHWM``, reset before each bomb through
  ``/proc/self/clear_refs``), which also sees the C allocations Pillow makes for pixels.

A control decodes a genuine 4000 x 3000 photo the same way, to show that the memory probe does see
pixel buffers when they are made. Writes ``benchmarks/results/bomb.json``.

Usage: ``python -m benchmarks.bomb [--repeat 20] [--out benchmarks/results/bomb.json]``.
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import statistics
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import PIL
from PIL import Image

from app.errors import status_of
from inference.errors import ImageRejected
from inference.imaging import decode_upload

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
MAX_PIXELS = 40_000_000  # the MAX_IMAGE_PIXELS default
BUDGET_MS = 100.0
# Refusing from the header needs no more than a few MB of bookkeeping; a decoded bomb needs hundreds.
RSS_BUDGET_KB = 16 * 1024


def png_chunk(kind: bytes, body: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A real PNG bomb: ``width x height`` 8-bit grey zeros, streamed row by row into zlib.

    Every chunk and checksum is valid, so only the size betrays it. Building it never holds the pixels.
    """
    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + width)  # filter byte + one byte per pixel
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def gif_bomb(width: int, height: int, frame: tuple[int, int] | None = None) -> bytes:
    """A GIF whose logical screen (and first frame, unless ``frame`` says otherwise) is ``width x height``.

    The frame holds three LZW codes, so the file is a few dozen bytes whatever it claims.
    """
    frame_w, frame_h = frame or (width, height)
    header = b"GIF89a" + struct.pack("<HHBBB", width, height, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    descriptor = b"," + struct.pack("<HHHHB", 0, 0, frame_w, frame_h, 0)
    return header + descriptor + b"\x02\x02\x4c\x01\x00" + b";"


def bombs() -> dict[str, tuple[bytes, tuple[int, int]]]:
    """name -> (file bytes, declared width x height)."""
    return {
        "png 20000x20000 zeros": (png_bomb(20_000, 20_000), (20_000, 20_000)),
        "png 7000x7000 zeros (under Pillow's own limit)": (png_bomb(7_000, 7_000), (7_000, 7_000)),
        "gif screen 65535x65535": (gif_bomb(65_535, 65_535), (65_535, 65_535)),
        "gif 16x16 screen, 65535x65535 frame": (gif_bomb(16, 16, frame=(65_535, 65_535)), (65_535, 65_535)),
    }


def peak_rss_kb() -> int:
    """The process's peak resident set size since the last reset, in KB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def current_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); ``False`` where the kernel refuses."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(data: bytes, repeat: int) -> dict:
    """Decode ``data`` ``repeat`` times; time, Python peak and resident-memory growth of the worst call."""
    times_ms, outcome = [], None
    reset_peak_rss()
    rss_before = current_rss_kb()
    tracemalloc.start()
    for _ in range(repeat):
        started = time.perf_counter()
        try:
            decoded = decode_upload(data, max_pixels=MAX_PIXELS, target=(224, 224))
            outcome = {"status": 201, "decoded_size": list(decoded.image.size)}
            del decoded
        except ImageRejected as rejection:
            outcome = {"status": status_of(rejection), "code": rejection.code, "message": rejection.message}
        times_ms.append((time.perf_counter() - started) * 1000.0)
    python_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {**outcome, "median_ms": round(statistics.median(times_ms), 3), "max_ms": round(max(times_ms), 3),
            "python_peak_kb": round(python_peak / 1024, 1), "rss_growth_kb": peak_rss_kb() - rss_before}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table, write the JSON results, return them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=20, help="decodes per file")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "bomb.json")
    args = parser.parse_args(argv)

    # Warm Pillow's plugin registry first, so the first bomb is not charged for importing it.
    for warm_up in (png_bomb(2, 2), gif_bomb(2, 2)):
        try:
            decode_upload(warm_up, max_pixels=MAX_PIXELS)
        except ImageRejected:
            pass
    results = {}
    for name, (data, (width, height)) in bombs().items():
        row = measure(data, args.repeat)
        row.update(file_bytes=len(data), declared=f"{width}x{height}",
                   decoded_rgb_would_need_mb=round(width * height * 3 / 2**20),
                   within_budget=row["status"] == 413 and row["median_ms"] < BUDGET_MS
                   and row["rss_growth_kb"] < RSS_BUDGET_KB)
        results[name] = row
    control = Image.new("RGB", (4000, 3000), (120, 60, 30))
    buffer = io.BytesIO()
    control.save(buffer, "PNG", compress_level=1)
    results["control: genuine 4000x3000 png, decoded"] = {
        **measure(buffer.getvalue(), 3), "file_bytes": buffer.tell(), "declared": "4000x3000",
        "decoded_rgb_would_need_mb": round(4000 * 3000 * 3 / 2**20)}

    report = {
        "what": "time and memory to refuse decompression bombs in app.imaging.decode_upload",
        "max_pixels": MAX_PIXELS, "budget_ms": BUDGET_MS, "rss_budget_kb": RSS_BUDGET_KB,
        "repeat": args.repeat, "peak_rss_resettable": reset_peak_rss(),
        "pillow": PIL.__version__, "python": platform.python_version(), "machine": platform.machine(),
        "results": results,
        "all_bombs_within_budget": all(row.get("within_budget") for name, row in results.items()
                                       if not name.startswith("control")),
    }
    print(f"{'file':48s} {'bytes':>8s} {'status':>6s} {'median ms':>10s} {'max ms':>8s} "
          f"{'py peak KB':>10s} {'RSS +KB':>8s} {'would need MB':>13s}")
    for name, row in results.items():
        print(f"{name:48s} {row['file_bytes']:8d} {row['status']:6d} {row['median_ms']:10.2f} "
              f"{row['max_ms']:8.2f} {row['python_peak_kb']:10.1f} {row['rss_growth_kb']:8d} "
              f"{row['decoded_rgb_would_need_mb']:13d}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"all bombs refused within {BUDGET_MS:g} ms and {RSS_BUDGET_KB // 1024} MB: "
          f"{report['all_bombs_within_budget']}  -> {args.out}")
    return report


if __name__ == "__main__":
    main()
