"""``python -m training quantize``: smaller LiteRT copies of an artifact, kept only when as accurate.

Three post-training variants of ``model.tflite`` can be written next to it:

* ``float16``   - weights stored as float16 (half the file); XNNPACK computes in float32.
* ``int8``      - dynamic-range quantisation: int8 weights, activations quantised on the fly.
* ``int8-full`` - full-integer quantisation: weights and activations in int8, the activation ranges
  calibrated on ``--calibration-images`` training photos (and their mirror images when the artifact
  serves with ``tta: flip``); float32 in and out, so the app feeds it like the others. XNNPACK's integer
  kernels run it about twice as fast as float32 on a CPU.

Each candidate is run with the LiteRT interpreter on the validation split, fed exactly as in training,
next to the float32 ``model.tflite`` on the same inputs, and scored the way the app serves it (with the
artifact's test-time augmentation). The file is written only when its top-1 accuracy
is at most ``--max-drop`` points (default 0.5) below float32's; the comparison is recorded in
``metadata.json`` under ``litert_variants`` either way. The app serves a variant with ``MODEL_VARIANT``.

The variant file names belong to the artifact format (:data:`inference.artifact.LITERT_VARIANTS`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from training.commands import command
from training.export import (KERAS_FILE, LABELS_FILE, LITERT_FILE, LITERT_VARIANTS, METADATA_FILE, explainable_head,
                             serving_model, write_json)
QUANTIZED = ("float16", "int8", "int8-full")
DEFAULT_VARIANTS = ("float16", "int8")
DEFAULT_MAX_DROP_POINTS = 0.5
DEFAULT_CALIBRATION_IMAGES = 300


def convert(model, variant: str, path: Path, calibration=None) -> Path:
    """Write ``model`` as a post-training quantised LiteRT flatbuffer.

    Args:
        model: A built Keras model (the artifact's ``model.keras``).
        variant: ``float16``, ``int8`` (dynamic range) or ``int8-full`` (integer activations too).
        path: Destination ``.tflite`` file.
        calibration: For ``int8-full``: a callable returning an iterator of ``[float32 (1, H, W, 3)]``
            inputs whose activation ranges set the quantisation.

    Returns:
        The written path.
    """
    import tensorflow as tf

    settings: dict[str, Any] = {"optimizations": [tf.lite.Optimize.DEFAULT]}
    if variant == "float16":
        settings["target_spec"] = {"supported_types": [tf.float16]}
    elif variant == "int8-full":
        if calibration is None:
            raise ValueError("int8-full needs calibration images")
        settings["representative_dataset"] = calibration
    elif variant != "int8":
        raise ValueError(f"variant must be one of {', '.join(QUANTIZED)}, not {variant!r}")
    model.export(str(path), format="litert", verbose=False, **settings)
    return path


def calibration_inputs(model_dir: Path, metadata: dict[str, Any], labels: list[str], data_path: Path,
                       count: int, flip: bool):
    """A callable giving ``count`` training photos one by one, fitted as in training, for ``int8-full``.

    Args:
        model_dir: Artifact folder.
        metadata: Its metadata (data settings, input size).
        labels: Its labels.
        data_path: The data folder it was trained on.
        count: How many photos, spread evenly over the train split (so over its classes).
        flip: Mirror every other photo, as the app's flip averaging feeds the model.

    Returns:
        A zero-argument callable returning an iterator of ``[float32 (1, H, W, 3)]``.
    """
    import numpy as np

    def inputs():
        seen = 0
        for images, _ in _calibration_batches(model_dir, metadata, labels, data_path, count):
            for image in np.asarray(images, dtype=np.float32):
                if flip and seen % 2:
                    image = image[:, ::-1]
                seen += 1
                yield [np.ascontiguousarray(image[np.newaxis])]

    return inputs


def _calibration_batches(model_dir: Path, metadata: dict[str, Any], labels: list[str], data_path: Path, count: int):
    """Training photos for the activation ranges: with a make output, half of them make-only photos (scenes)."""
    from training.makes import load_for_config

    makes = load_for_config(metadata.get("training_config", {}).get("config", {"data": {}}), labels) \
        if metadata.get("make_output") else None
    scenes = makes.make_only("train") if makes is not None else None
    if not scenes or not len(scenes):
        yield from validation_batches(model_dir, metadata, labels, data_path, "train", 32, count, spread=True)
        return
    yield from validation_batches(model_dir, metadata, labels, data_path, "train", 32, count - count // 2, spread=True)
    yield from _batches_of(metadata, _spread(scenes, count // 2), 32)


def _spread(part, limit: int):
    """``limit`` photos of a split spread evenly over it (so over its labels)."""
    from training.data import Split

    if limit >= len(part):
        return part
    chosen = [round(i * (len(part) - 1) / max(1, limit - 1)) for i in range(limit)]
    return Split([part.paths[i] for i in chosen], [part.labels[i] for i in chosen])


def _batches_of(metadata: dict[str, Any], part, batch_size: int, num_classes: int | None = None):
    """``(images, label ids)`` batches of ``part``, fitted as the artifact's input says."""
    from training.pipeline import make_dataset

    ds = make_dataset(part.paths, part.labels, num_classes=num_classes or max(part.labels) + 1,
                      image_size=tuple(metadata["image_size"]), resize_mode=metadata.get("resize_mode", "center_crop"),
                      batch_size=batch_size, cache=False)
    for images, one_hot in ds.as_numpy_iterator():
        yield images, one_hot.argmax(axis=1)


def make_only_validation(metadata: dict[str, Any], labels: list[str], limit: int | None):
    """The make-only validation photos of an artifact with a make output (labels: make indices), or ``None``."""
    from training.makes import load_for_config

    if not metadata.get("make_output"):
        return None
    makes = load_for_config(metadata.get("training_config", {}).get("config", {"data": {}}), labels)
    part = makes.make_only("val") if makes is not None else None
    if not part or not len(part):
        return None
    return _spread(part, limit) if limit else part


def at_threshold(answered: list[tuple[float, bool]], threshold: float) -> dict[str, float | None]:
    """Share of photos whose top score reaches ``threshold`` (coverage) and the share of those that are right."""
    kept = [right for score, right in answered if score >= threshold]
    return {"coverage": round(len(kept) / max(1, len(answered)), 4),
            "accuracy": round(sum(kept) / len(kept), 4) if kept else None}


def served_rows(scorer: LiteRTScorer, images, flip: bool, skip_above: float | None):
    """What the app's answer is computed from: whole rows on ``images``, combined with the mirror images'
    rows as the artifact's test-time augmentation says (:func:`inference.tta.combine_views`)."""
    import numpy as np

    from inference.tta import combine_views

    mirrored = scorer.rows(np.ascontiguousarray(images[:, :, ::-1])) if flip else None
    return combine_views(scorer.rows(images), mirrored, scorer.num_classes, skip_above)


class LiteRTScorer:
    """Runs a ``.tflite`` file on batches with the app's own LiteRT runtime (one thread, as a worker would)."""

    def __init__(self, path: Path, num_classes: int | None = None):
        from inference.runtimes import LiteRTRuntime  # measured exactly as served

        self._runtime = LiteRTRuntime(path, num_threads=1)
        self.num_classes = num_classes

    def __call__(self, images):
        """Class probabilities for a float32 ``(N, H, W, 3)`` batch."""
        return self.rows(images)[:, :self.num_classes]

    def rows(self, images):
        """Whole rows of probabilities: the classes, then the makes of a make output."""
        return self._runtime(images)

    def invoke_seconds(self, images) -> float:
        """Seconds of one invocation on ``images``."""
        started = time.perf_counter()
        self(images)
        return time.perf_counter() - started


def milliseconds_per_image(scorers: dict[str, LiteRTScorer], image_shape, repeats: int = 20,
                           batch: int = 1) -> dict[str, float]:
    """Median invocation time per image of each scorer, taking turns within every round.

    Interleaved, so that a machine busy with other work slows them alike and the ratios hold.

    Args:
        scorers: Name -> scorer.
        image_shape: ``(H, W, 3)``.
        repeats: Timed rounds (after one untimed).
        batch: Images per invocation (2 is what the app's flip averaging runs).

    Returns:
        Name -> milliseconds per image.
    """
    import numpy as np

    inputs = np.zeros((batch, *image_shape), dtype=np.float32)
    timings: dict[str, list[float]] = {name: [] for name in scorers}
    for round_index in range(repeats + 1):
        for name, scorer in scorers.items():
            seconds = scorer.invoke_seconds(inputs)
            if round_index:
                timings[name].append(seconds / batch)
    return {name: statistics.median(values) * 1000.0 for name, values in timings.items()}


def validation_batches(model_dir: Path, metadata: dict[str, Any], labels: list[str], data_path: Path,
                       split: str, batch_size: int, limit: int | None, spread: bool = False):
    """``(images, label ids)`` batches of a split, rebuilt from the artifact's recorded data settings.

    ``limit`` takes the first images of the split, or with ``spread`` that many spread evenly over it.
    """
    from training.data import Split, artifact_split

    part = artifact_split(metadata, labels, data_path, split)
    if limit is not None:
        part = _spread(part, limit) if spread else Split(part.paths[:limit], part.labels[:limit])
    if not len(part):
        raise ValueError(f"the {split} split of {data_path} is empty")
    yield from _batches_of(metadata, part, batch_size, num_classes=len(labels))


def quantize_artifact(model_dir: str | Path, data_path: str | Path, *, variants=DEFAULT_VARIANTS, split: str = "val",
                      max_drop_points: float = DEFAULT_MAX_DROP_POINTS, batch_size: int = 32,
                      limit: int | None = None, calibration_images: int = DEFAULT_CALIBRATION_IMAGES,
                      serve: str | None = None) -> dict[str, dict[str, Any]]:
    """Convert, compare on ``split`` and keep the variants whose top-1 stays within ``max_drop_points``.

    Args:
        model_dir: Artifact folder with ``model.keras`` and ``model.tflite``.
        data_path: The data folder the model was trained on.
        variants: Any of ``float16``, ``int8``, ``int8-full``.
        split: Split to compare on.
        max_drop_points: Largest accepted top-1 drop against float32, in percentage points.
        batch_size: Evaluation batch size.
        limit: Compare on the first ``limit`` images only (quick checks).
        calibration_images: Training photos that calibrate ``int8-full``.
        serve: A variant to record as ``metadata["serving_variant"]`` (what the app serves by default) when
            it is kept; ``float32`` records the float32 file. ``None`` leaves the choice as it was.

    Returns:
        Per variant: file, kept, top-1 of float32 and of the variant, the drop, size and speed.
    """
    import keras
    import numpy as np

    from inference.tta import skip_above as tta_skip_above

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
    flip = metadata.get("tta") == "flip"
    skip = tta_skip_above(metadata)
    calibration = calibration_inputs(model_dir, metadata, labels, Path(data_path), calibration_images, flip)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        candidates = {name: convert(model, name, Path(scratch) / LITERT_VARIANTS[name], calibration)
                      for name in variants}
        scorers = {"float32": LiteRTScorer(model_dir / LITERT_FILE, len(labels))}
        scorers.update({name: LiteRTScorer(path, len(labels)) for name, path in candidates.items()})
        correct = dict.fromkeys(scorers, 0)
        # Top score and whether it was right, per photo: how the artifact's "not sure" threshold (chosen on
        # float32's scores) holds for each copy.
        answered: dict[str, list[tuple[float, bool]]] = {name: [] for name in scorers}
        agree = dict.fromkeys(candidates, 0)
        max_difference = dict.fromkeys(candidates, 0.0)
        seen = 0
        for images, truth in validation_batches(model_dir, metadata, labels, Path(data_path), split,
                                                batch_size, limit):
            images = np.ascontiguousarray(images, dtype=np.float32)
            outputs = {name: served_rows(scorer, images, flip, skip)[:, :len(labels)]
                       for name, scorer in scorers.items()}
            reference = outputs["float32"].argmax(axis=1)
            for name, probabilities in outputs.items():
                hits = probabilities.argmax(axis=1) == truth
                correct[name] += int(hits.sum())
                answered[name].extend(zip(probabilities.max(axis=1).tolist(), hits.tolist()))
            for name in candidates:
                agree[name] += int((outputs[name].argmax(axis=1) == reference).sum())
                max_difference[name] = max(max_difference[name],
                                           float(np.abs(outputs[name] - outputs["float32"]).max()))
            seen += len(truth)
        float32_top1 = 100.0 * correct["float32"] / seen
        make_top1 = make_accuracy(scorers, metadata, labels, flip, batch_size, limit, skip)
        timing = milliseconds_per_image(scorers, image_shape, batch=2 if flip else 1)
        float32_ms = timing["float32"]
        for name, path in candidates.items():
            top1 = 100.0 * correct[name] / seen
            drop = float32_top1 - top1
            make_drop = (make_top1["float32"] - make_top1[name]) if make_top1 else 0.0
            kept = drop <= max_drop_points and make_drop <= max_drop_points
            target = model_dir / LITERT_VARIANTS[name]
            if kept:
                target.write_bytes(path.read_bytes())
                target.chmod(0o644)
            elif target.exists():
                target.unlink()  # an older copy that no longer passes must not be served
            results[name] = {
                "file": LITERT_VARIANTS[name], "kept": kept, "split": split, "images": seen,
                "tta": "flip" if flip else "none",
                "tta_skip_above": skip,
                "top1_float32": round(float32_top1, 3), "top1": round(top1, 3), "drop_points": round(drop, 3),
                "max_drop_points": max_drop_points, "top1_agreement": round(agree[name] / seen, 4),
                "max_probability_difference": round(max_difference[name], 5),
                "size_bytes": path.stat().st_size, "float32_size_bytes": (model_dir / LITERT_FILE).stat().st_size,
                "ms_per_image": round(timing[name], 2),
                "float32_ms_per_image": round(float32_ms, 2),
                "timed_batch": 2 if flip else 1,
            }
            if make_top1:
                results[name].update({"make_top1_float32": round(make_top1["float32"], 3),
                                      "make_top1": round(make_top1[name], 3), "make_drop_points": round(make_drop, 3),
                                      "make_images": make_top1["images"]})
            if name == "int8-full":
                results[name]["calibration_images"] = calibration_images
            threshold = (metadata.get("confidence") or {}).get("threshold")
            if threshold is not None:
                results[name]["at_threshold"] = {"threshold": threshold, **at_threshold(answered[name], threshold),
                                                 "float32": at_threshold(answered["float32"], threshold)}
    metadata["litert_variants"] = {**metadata.get("litert_variants", {}), **results}
    if serve == "float32":
        metadata.pop("serving_variant", None)
    elif serve is not None:
        if not (serve in results and results[serve]["kept"]):
            raise ValueError(f"--serve {serve}: that variant was not written (not asked for, or not accurate enough)")
        metadata["serving_variant"] = serve
    elif metadata.get("serving_variant") in results and not results[metadata["serving_variant"]]["kept"]:
        metadata.pop("serving_variant")  # the recommended file is gone
    write_json(model_dir / METADATA_FILE, metadata)
    return results


def make_accuracy(scorers: dict[str, LiteRTScorer], metadata: dict[str, Any], labels: list[str], flip: bool,
                  batch_size: int, limit: int | None, skip: float | None = None) -> dict[str, float] | None:
    """Make-output top-1 (percent) of each copy on the make-only validation photos, ``None`` without them."""
    import numpy as np

    part = make_only_validation(metadata, labels, limit)
    if part is None:
        return None
    correct, seen = dict.fromkeys(scorers, 0), 0
    for images, truth in _batches_of(metadata, part, batch_size):
        images = np.ascontiguousarray(images, dtype=np.float32)
        for name, scorer in scorers.items():
            rows = served_rows(scorer, images, flip, skip)
            correct[name] += int((rows[:, len(labels):].argmax(axis=1) == truth).sum())
        seen += len(truth)
    return {**{name: 100.0 * hits / seen for name, hits in correct.items()}, "images": seen}


@command("quantize")
def add_quantize_parser(subparsers) -> None:
    """Register ``quantize`` on the ``python -m training`` command line."""
    parser = subparsers.add_parser(
        "quantize", help="write float16 / int8 / int8-full LiteRT copies that stay as accurate as float32",
        description="Convert ARTIFACT's model.keras to post-training quantised LiteRT files, compare their top-1 with "
        "model.tflite on the validation split (with the artifact's flip averaging), keep those within --max-drop "
        "points and record the comparison in metadata.json. Serve one with MODEL_VARIANT, or make it the "
        "artifact's default with --serve.")
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder (model.keras + model.tflite)")
    parser.add_argument("--data", required=True, metavar="DIR", help="data folder the model was trained on")
    parser.add_argument("--quantize", nargs="+", choices=QUANTIZED, default=list(DEFAULT_VARIANTS), metavar="VARIANT",
                        help="float16, int8 (dynamic range) and/or int8-full (integer activations, calibrated); "
                        "default float16 int8")
    parser.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES, metavar="N",
                        help="training photos that calibrate int8-full's activation ranges")
    parser.add_argument("--serve", choices=("float32", *QUANTIZED), metavar="VARIANT",
                        help="record this variant as the one the app serves by default (MODEL_VARIANT=auto); "
                        "it must be kept")
    parser.add_argument("--split", default="val", choices=["val", "test", "train"], help="split to compare on")
    parser.add_argument("--max-drop", type=float, default=DEFAULT_MAX_DROP_POINTS, metavar="POINTS",
                        help="largest top-1 drop against float32 that is kept, in percentage points")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, metavar="N", help="compare on the first N images only")
    parser.set_defaults(handler=_run_quantize)


def _run_quantize(args: argparse.Namespace) -> int:
    results = quantize_artifact(args.artifact, args.data, variants=args.quantize, split=args.split,
                                max_drop_points=args.max_drop, batch_size=args.batch_size, limit=args.limit,
                                calibration_images=args.calibration_images, serve=args.serve)
    for name, row in results.items():
        verdict = f"kept as {row['file']}" if row["kept"] else "not kept"
        print(f"{name}: top-1 {row['top1']:.2f}% vs float32 {row['top1_float32']:.2f}% on {row['images']} "
              f"{row['split']} images (drop {row['drop_points']:+.2f} points), {row['size_bytes'] / 1e6:.1f} MB, "
              f"{row['ms_per_image']:.1f} ms/image vs {row['float32_ms_per_image']:.1f}: {verdict}")
    return 0
