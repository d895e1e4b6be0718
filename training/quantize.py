"""``python -m training quantize``: smaller LiteRT copies of an artifact, kept only when as accurate.

Two post-training variants of ``model.tflite`` can be written next to it:

* ``float16`` - weights stored as float16 (half the file); XNNPACK computes in float32.
* ``int8``    - dynamic-range quantisation: int8 weights, activations quantised on the fly.

Each candidate is run with the LiteRT interpreter on the validation split, fed exactly as in training,
next to the float32 ``model.tflite`` on the same inputs. The file is written only when its top-1 accuracy
is at most ``--max-drop`` points (default 0.5) below float32's; the comparison is recorded in
``metadata.json`` under ``litert_variants`` either way. The app serves a variant with ``MODEL_VARIANT``.

The variant file names belong to the artifact format (:data:`app.inference.artifact.LITERT_VARIANTS`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from training.export import (KERAS_FILE, LABELS_FILE, LITERT_FILE, LITERT_VARIANTS, METADATA_FILE, explainable_head,
                             serving_model, write_json)
QUANTIZED = ("float16", "int8")
DEFAULT_MAX_DROP_POINTS = 0.5


def convert(model, variant: str, path: Path) -> Path:
    """Write ``model`` as a post-training quantised LiteRT flatbuffer.

    Args:
        model: A built Keras model (the artifact's ``model.keras``).
        variant: ``float16`` or ``int8`` (dynamic range).
        path: Destination ``.tflite`` file.

    Returns:
        The written path.
    """
    import tensorflow as tf

    settings: dict[str, Any] = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if variant == "float16":
        settings["target_spec"] = {"supported_types": [tf.float16]}
    elif variant != "int8":
        raise ValueError(f"variant must be one of {', '.join(QUANTIZED)}, not {variant!r}")
    model.export(str(path), format="litert", verbose=False, **settings)
    return path


class LiteRTScorer:
    """Runs a ``.tflite`` file on batches with the app's own LiteRT runtime (one thread, as a worker would)."""

    def __init__(self, path: Path):
        from app.inference.runtimes import LiteRTRuntime  # measured exactly as served

        self._runtime = LiteRTRuntime(path, num_threads=1)

    def __call__(self, images):
        """Probabilities for a float32 ``(N, H, W, 3)`` batch."""
        return self._runtime(images)

    def milliseconds_per_image(self, image_shape, repeats: int = 20) -> float:
        """Median single-image invocation time (noisy on a shared machine; recorded for orientation)."""
        import numpy as np

        single = np.zeros((1, *image_shape), dtype=np.float32)
        self(single)
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            self(single)
            timings.append(time.perf_counter() - started)
        return statistics.median(timings) * 1000.0


def validation_batches(model_dir: Path, metadata: dict[str, Any], labels: list[str], data_path: Path,
                       split: str, batch_size: int, limit: int | None):
    """``(images, label ids)`` batches of a split, rebuilt from the artifact's recorded data settings."""
    from training.data import load_dataset
    from training.pipeline import make_dataset

    config = metadata.get("training_config", {}).get("config", {})
    data_cfg = config.get("data", {})
    dataset = load_dataset(data_path, label_map=data_cfg.get("label_map"), split=data_cfg.get("split"),
                           seed=config.get("seed", 42))
    if dataset.class_names != labels:
        raise ValueError(f"the labels of {data_path} differ from the model's ({len(dataset.class_names)} vs "
                         f"{len(labels)}); pass the data folder and label map the model was trained on")
    part = dataset.splits[split]
    paths, label_ids = part.paths[:limit], part.labels[:limit]
    if not paths:
        raise ValueError(f"the {split} split of {data_path} is empty")
    ds = make_dataset(paths, label_ids, num_classes=len(labels), image_size=tuple(metadata["image_size"]),
                      resize_mode=metadata.get("resize_mode", "center_crop"), batch_size=batch_size, cache=False)
    for images, one_hot in ds.as_numpy_iterator():
        yield images, one_hot.argmax(axis=1)


def quantize_artifact(model_dir: str | Path, data_path: str | Path, *, variants=QUANTIZED, split: str = "val",
                      max_drop_points: float = DEFAULT_MAX_DROP_POINTS, batch_size: int = 32,
                      limit: int | None = None) -> dict[str, dict[str, Any]]:
    """Convert, compare on ``split`` and keep the variants whose top-1 stays within ``max_drop_points``.

    Args:
        model_dir: Artifact folder with ``model.keras`` and ``model.tflite``.
        data_path: The data folder the model was trained on.
        variants: Any of ``float16``, ``int8``.
        split: Split to compare on.
        max_drop_points: Largest accepted top-1 drop against float32, in percentage points.
        batch_size: Evaluation batch size.
        limit: Compare on the first ``limit`` images only (quick checks).

    Returns:
        Per variant: file, kept, top-1 of float32 and of the variant, the drop, size and speed.
    """
    import keras
    import numpy as np

    model_dir = Path(model_dir)
    metadata = json.loads((model_dir / METADATA_FILE).read_text(encoding="utf-8"))
    labels = json.loads((model_dir / LABELS_FILE).read_text(encoding="utf-8"))
    if not (model_dir / LITERT_FILE).is_file():
        raise FileNotFoundError(f"{model_dir / LITERT_FILE} is missing: the float32 copy is the reference")
    unknown = set(variants) - set(QUANTIZED)
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(sorted(unknown))}: choose from {', '.join(QUANTIZED)}")
    model = keras.saving.load_model(model_dir / KERAS_FILE, compile=False)
    # The copies carry the feature-map output too, so heatmaps work whichever variant serves.
    model = serving_model(model, explainable_head(model))
    image_shape = (*metadata["image_size"], 3)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        candidates = {name: convert(model, name, Path(scratch) / LITERT_VARIANTS[name]) for name in variants}
        scorers = {"float32": LiteRTScorer(model_dir / LITERT_FILE)}
        scorers.update({name: LiteRTScorer(path) for name, path in candidates.items()})
        correct = dict.fromkeys(scorers, 0)
        agree = dict.fromkeys(candidates, 0)
        max_difference = dict.fromkeys(candidates, 0.0)
        seen = 0
        for images, truth in validation_batches(model_dir, metadata, labels, Path(data_path), split,
                                                batch_size, limit):
            images = np.ascontiguousarray(images, dtype=np.float32)
            outputs = {name: scorer(images) for name, scorer in scorers.items()}
            reference = outputs["float32"].argmax(axis=1)
            for name, probabilities in outputs.items():
                correct[name] += int((probabilities.argmax(axis=1) == truth).sum())
            for name in candidates:
                agree[name] += int((outputs[name].argmax(axis=1) == reference).sum())
                max_difference[name] = max(max_difference[name],
                                           float(np.abs(outputs[name] - outputs["float32"]).max()))
            seen += len(truth)
        float32_top1 = 100.0 * correct["float32"] / seen
        float32_ms = scorers["float32"].milliseconds_per_image(image_shape)
        for name, path in candidates.items():
            top1 = 100.0 * correct[name] / seen
            drop = float32_top1 - top1
            kept = drop <= max_drop_points
            target = model_dir / LITERT_VARIANTS[name]
            if kept:
                target.write_bytes(path.read_bytes())
                target.chmod(0o644)
            elif target.exists():
                target.unlink()  # an older copy that no longer passes must not be served
            results[name] = {
                "file": LITERT_VARIANTS[name], "kept": kept, "split": split, "images": seen,
                "top1_float32": round(float32_top1, 3), "top1": round(top1, 3), "drop_points": round(drop, 3),
                "max_drop_points": max_drop_points, "top1_agreement": round(agree[name] / seen, 4),
                "max_probability_difference": round(max_difference[name], 5),
                "size_bytes": path.stat().st_size, "float32_size_bytes": (model_dir / LITERT_FILE).stat().st_size,
                "ms_per_image": round(scorers[name].milliseconds_per_image(image_shape), 2),
                "float32_ms_per_image": round(float32_ms, 2),
            }
    metadata["litert_variants"] = {**metadata.get("litert_variants", {}), **results}
    write_json(model_dir / METADATA_FILE, metadata)
    return results


def add_quantize_parser(subparsers) -> None:
    """Register ``quantize`` on the ``python -m training`` command line."""
    parser = subparsers.add_parser(
        "quantize", help="write float16 / int8 LiteRT copies that stay as accurate as float32",
        description="Convert ARTIFACT's model.keras to post-training quantised LiteRT files, compare their top-1 with "
        "model.tflite on the validation split, keep those within --max-drop points and record the "
        "comparison in metadata.json. Serve one with MODEL_VARIANT=float16|int8.")
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder (model.keras + model.tflite)")
    parser.add_argument("--data", required=True, metavar="DIR", help="data folder the model was trained on")
    parser.add_argument("--quantize", nargs="+", choices=QUANTIZED, default=list(QUANTIZED), metavar="VARIANT",
                        help="float16 and/or int8 (dynamic range); default both")
    parser.add_argument("--split", default="val", choices=["val", "test", "train"], help="split to compare on")
    parser.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP_POINTS, metavar="POINTS",
                        help="largest top-1 drop against float32 that is kept, in percentage points")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, metavar="N", help="compare on the first N images only")
    parser.set_defaults(handler=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    results = quantize_artifact(args.artifact, args.data, variants=args.quantize, split=args.split,
                                max_drop_points=args.max_drop, batch_size=args.batch_size, limit=args.limit)
    for name, row in results.items():
        verdict = f"kept as {row['file']}" if row["kept"] else "not kept"
        print(f"{name}: top-1 {row['top1']:.2f}% vs float32 {row['top1_float32']:.2f}% on {row['images']} "
              f"{row['split']} images (drop {row['drop_points']:+.2f} points), {row['size_bytes'] / 1e6:.1f} MB, "
              f"{row['ms_per_image']:.1f} ms/image vs {row['float32_ms_per_image']:.1f}: {verdict}")
    return 0
