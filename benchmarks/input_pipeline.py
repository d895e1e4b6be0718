"""Training input benchmark: the ``tf.data`` pipeline against ``ImageDataGenerator``, in one run.

Both read the same class-per-folder images (default ``../shared/datasets/stanford-cars/val``) at the
same size with the same augmentation and batch size, and are timed over whole epochs with nothing but
the input pipeline running (no model), so the figures are images per second the pipeline can feed.

* ``tf.data`` - :func:`training.pipeline.make_dataset`: parallel decode, in-memory cache, augmentation
  with Keras preprocessing layers on whole batches, prefetch. Epoch 1 fills the cache; later epochs
  are the steady state a training run sees.
* ``ImageDataGenerator.flow_from_directory`` - the first prototypes' loader, when the installed Keras
  still has it (Keras 3 removed it; the legacy ``tf_keras`` package keeps it). Where it is absent the
  result says so, and a plain Python loader (Pillow decode of every file every epoch, one thread, the
  same Keras augmentation layers) stands in as the sequential baseline.

Writes ``benchmarks/results/input_pipeline.json`` and ``benchmarks/results/input_pipeline.md``.
Usage: ``python -m benchmarks.input_pipeline [--data DIR] [--epochs 3] [--batch-size 32]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "stanford-cars" / "val"
# The first prototypes' ImageDataGenerator arguments; build_augmenter takes the same numbers.
AUGMENT = {"enabled": True, "rotation": 40.0, "width_shift": 0.2, "height_shift": 0.2, "shear": 0.2,
           "zoom": 0.2, "horizontal_flip": True, "brightness": 0.2, "contrast": 0.2, "fill_mode": "nearest"}


def _time_epochs(make_iterator, epochs: int, images_per_epoch: int) -> list[float]:
    """Images per second of each epoch; ``make_iterator()`` yields batches of one epoch."""
    rates = []
    for _ in range(epochs):
        started = time.perf_counter()
        seen = 0
        for batch in make_iterator():
            seen += int(batch[0].shape[0])
        rates.append(seen / (time.perf_counter() - started))
        assert seen == images_per_epoch, (seen, images_per_epoch)
    return rates


def bench_tf_data(data: Path, size: int, batch_size: int, epochs: int) -> dict:
    """The training package's pipeline on ``data``."""
    from training.data import load_dataset
    from training.pipeline import build_augmenter, make_dataset

    dataset = load_dataset(data, split=[0.999, 0.001])
    files = dataset.splits["train"].paths + dataset.splits["val"].paths
    labels = dataset.splits["train"].labels + dataset.splits["val"].labels
    ds = make_dataset(files, labels, num_classes=len(dataset.class_names), image_size=(size, size),
                      resize_mode="stretch", batch_size=batch_size, training=True,
                      augmenter=build_augmenter(AUGMENT, seed=1))
    rates = _time_epochs(lambda: iter(ds), epochs, len(files))
    return {"name": "tf.data (training.pipeline)", "images": len(files), "epoch_images_per_s": rates}


def image_data_generator():
    """``ImageDataGenerator`` from the installed Keras, or ``None`` with the reason."""
    import keras

    generator = getattr(getattr(keras, "preprocessing", None), "image", None)
    generator = getattr(generator, "ImageDataGenerator", None)
    if generator is not None:
        return generator, None
    try:
        from tf_keras.preprocessing.image import ImageDataGenerator  # legacy Keras 2 package

        return ImageDataGenerator, None
    except ImportError:
        return None, (f"keras {keras.__version__} has no ImageDataGenerator (removed in Keras 3) and the "
                      "legacy tf_keras package is not installed")


def bench_image_data_generator(data: Path, size: int, batch_size: int, epochs: int) -> dict:
    """``flow_from_directory`` with the prototypes' augmentation, when available."""
    generator_class, reason = image_data_generator()
    if generator_class is None:
        return {"name": "ImageDataGenerator.flow_from_directory", "available": False, "reason": reason}
    generator = generator_class(rotation_range=40, width_shift_range=0.2, height_shift_range=0.2,
                                shear_range=0.2, zoom_range=0.2, horizontal_flip=True,
                                brightness_range=(0.8, 1.2), fill_mode="nearest")
    flow = generator.flow_from_directory(str(data), target_size=(size, size), batch_size=batch_size,
                                         class_mode="categorical", seed=1)
    steps = len(flow)

    def one_epoch():
        for _ in range(steps):
            yield next(flow)

    rates = _time_epochs(one_epoch, epochs, flow.samples)
    return {"name": "ImageDataGenerator.flow_from_directory", "available": True, "images": flow.samples,
            "epoch_images_per_s": rates}


def bench_sequential(data: Path, size: int, batch_size: int, epochs: int) -> dict:
    """Pillow decode of every file each epoch in one thread, then the same augmentation layers."""
    import numpy as np
    from PIL import Image

    from training.data import class_folders, list_images
    from training.pipeline import build_augmenter

    files = [path for folder in class_folders(data) for path in list_images(folder)]
    augmenter = build_augmenter(AUGMENT, seed=1)
    order = np.random.default_rng(1)

    def one_epoch():
        shuffled = [files[i] for i in order.permutation(len(files))]
        for start in range(0, len(shuffled), batch_size):
            batch = np.stack([np.asarray(Image.open(p).convert("RGB").resize((size, size), Image.BILINEAR),
                                         dtype="float32") for p in shuffled[start:start + batch_size]])
            yield (np.asarray(augmenter(batch, training=True)),)

    rates = _time_epochs(one_epoch, epochs, len(files))
    return {"name": "sequential Pillow loader + same Keras augmentation", "images": len(files),
            "epoch_images_per_s": rates}


def markdown(results: dict) -> str:
    """The results table."""
    def later_epochs(run: dict) -> float:
        rates = run["epoch_images_per_s"]
        return sum(rates[1:]) / (len(rates) - 1) if len(rates) > 1 else rates[0]

    lines = [f"Input pipeline, {results['images']} images of `{results['data']}` at {results['size']} px, "
             f"batch {results['batch_size']}, augmentation as the first prototypes; "
             f"{results['cpu_count']} CPU cores (load average {results['load_average_1_5_15'][0]} at the end), "
             f"{results['epochs']} epochs each.", "",
             "| loader | epoch 1 img/s | later epochs img/s (mean) |", "|---|---:|---:|"]
    for run in results["runs"]:
        if not run.get("available", True):
            lines.append(f"| {run['name']} | not run | {run['reason']} |")
            continue
        lines.append(f"| {run['name']} | {run['epoch_images_per_s'][0]:.0f} | {later_epochs(run):.0f} |")
    measured = [run for run in results["runs"] if run.get("available", True)]
    if len(measured) > 1:
        lines += ["", f"tf.data / {measured[1]['name']}, later epochs: "
                      f"**{later_epochs(measured[0]) / later_epochs(measured[1]):.1f}x**."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run every loader once and write the JSON and markdown results."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.input_pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="class-per-folder images (default: val)")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loader (default 3)")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        parser.error(f"{args.data} does not exist; pass --data DIR with one sub-folder per class")

    runs = [bench_tf_data(args.data, args.size, args.batch_size, args.epochs),
            bench_image_data_generator(args.data, args.size, args.batch_size, args.epochs)]
    if not runs[1].get("available", True):
        runs.append(bench_sequential(args.data, args.size, args.batch_size, args.epochs))
    results = {"data": str(args.data.relative_to(REPO_ROOT.parent) if args.data.is_relative_to(REPO_ROOT.parent)
                           else args.data),
               "images": runs[0]["images"], "size": args.size, "batch_size": args.batch_size,
               "epochs": args.epochs, "cpu_count": os.cpu_count(), "platform": platform.platform(),
               # Other processes on the machine slow every loader alike; the load says how busy it was.
               "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()], "runs": runs}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "input_pipeline.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = markdown(results)
    (RESULTS_DIR / "input_pipeline.md").write_text(table, encoding="utf-8")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
