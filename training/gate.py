"""The ``gate`` command: build, measure and write the vehicle gate the app uses to say "not a car".

The gate is the ImageNet MobileNet v1 1000-class classifier (pixels 0..255 in, the MobileNet scaling
inside the model) exported as a LiteRT flatbuffer: float16 weights, or (``--quantization int8``) integer
weights and activations calibrated on ``--calibrate`` photos, which XNNPACK runs about twice as fast; and
at 224 x 224 or a smaller ``--image-size`` (the network is convolutional up to its global pooling, so the
same ImageNet weights run at any size, and fewer pixels cost proportionally less). Its score for a photo is the probability it
puts on vehicle classes, summed. The threshold is chosen from measurement: the highest score that still
lets ``--car-recall`` of the Stanford Cars validation photos through; the metadata then records how many
car photos (from that split and a held-out set) pass and how many non-car photos (planes, scikit-image's
sample pictures and faces) are stopped.

    KERAS_HOME=/tmp/keras python -m training gate --cars ../shared/datasets/stanford-cars/val \\
        --held-out-cars ../shared/datasets/cars-vs-planes/val/cars --held-out-cars ../shared/datasets/cars-vs-planes/train/cars \\
        --non-cars ../shared/datasets/cars-vs-planes/val/planes --non-cars ../shared/datasets/cars-vs-planes/train/planes \\
        --out model_artifacts/vehicle-gate

The scores are computed with the app's own gate code (:class:`inference.gate.VehicleGate`) on the exported
file, so the measurement is of exactly what is served.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from PIL import Image

from training import export as export_lib
from training.commands import command

IMAGE_SIZE = (224, 224)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
# ImageNet indices of vehicles one sees in a car photo: the car body types, the parts that fill a
# close-up (grille, wheel), and the van / truck / bus classes that car photos of vans and SUVs land on.
# Chosen from the measurement in the manual: Stanford Cars val photos put their top-1 on these.
VEHICLE_CLASSES = {
    407: "ambulance", 436: "beach wagon", 468: "cab", 511: "convertible", 609: "jeep", 627: "limousine",
    654: "minibus", 656: "minivan", 661: "Model T", 675: "moving van", 717: "pickup", 734: "police van",
    751: "racer", 817: "sports car", 581: "grille", 479: "car wheel", 475: "car mirror", 864: "tow truck",
    867: "trailer truck", 569: "garbage truck", 555: "fire engine", 573: "go-kart", 575: "golfcart",
    757: "recreational vehicle", 586: "half track", 603: "horse cart", 705: "passenger car", 874: "trolleybus",
    779: "school bus", 535: "disk brake", 408: "amphibian", 870: "tricycle",
}
SKIMAGE_SAMPLES = ("astronaut", "brick", "camera", "chelsea", "clock", "coffee", "coins", "colorwheel", "grass",
                   "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo", "microaneurysms",
                   "moon", "page", "retina", "rocket", "text", "checkerboard", "cell")
FACES_FROM_LFW = 40


QUANTIZATIONS = ("float16", "dynamic", "int8", "float32")
CALIBRATION_IMAGES = 300


def build_imagenet_mobilenet(alpha: float, image_size: tuple[int, int] = IMAGE_SIZE):
    """MobileNet v1 with its ImageNet top, taking float32 RGB 0..255 like the app's classifiers.

    Args:
        alpha: Width multiplier whose ImageNet weights are in the Keras cache (0.25 or 0.75 offline).
        image_size: Input ``(height, width)``; the 224 x 224 ImageNet weights are copied into a network
            built for this size (Keras loads ImageNet tops only at 224).

    Returns:
        A Keras model ``(None, height, width, 3) -> (None, 1000)`` softmax.
    """
    import keras

    network = keras.applications.MobileNet(include_top=True, weights="imagenet", alpha=alpha)
    if tuple(image_size) != IMAGE_SIZE:
        resized = keras.applications.MobileNet(include_top=True, weights=None, alpha=alpha,
                                               input_shape=(*image_size, 3))
        resized.set_weights(network.get_weights())
        network = resized
    inputs = keras.Input((*image_size, 3), dtype="float32", name="image")
    scaled = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0, name="mobilenet_scaling")(inputs)
    return keras.Model(inputs, network(scaled), name=f"imagenet_mobilenet_{alpha}")


def calibration_inputs(folders: list[Path], image_size: tuple[int, int], count: int = CALIBRATION_IMAGES):
    """A callable giving ``count`` photos from ``folders`` (spread evenly), fitted as the gate is fed.

    Args:
        folders: Photo folders.
        image_size: Gate input ``(height, width)``.
        count: How many photos.

    Returns:
        A zero-argument callable returning an iterator of ``[float32 (1, H, W, 3)]``.
    """
    from inference.imaging import fit_to_input

    paths = sorted(p for folder in folders for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"no photos to calibrate on under {', '.join(map(str, folders))}")
    chosen = [paths[round(i * (len(paths) - 1) / max(1, count - 1))] for i in range(min(count, len(paths)))]

    def inputs():
        for path in chosen:
            with Image.open(path) as img:
                pixels = fit_to_input(img.convert("RGB"), image_size, "center_crop")
            yield [pixels[np.newaxis].astype(np.float32)]

    return inputs


def export_tflite(model, path: Path, quantization: str, calibration=None) -> Path:
    """Convert ``model`` to LiteRT.

    Args:
        model: The Keras gate network.
        path: Destination file.
        quantization: ``float32``, ``float16`` (weights), ``dynamic`` (int8 weights) or ``int8`` (weights and
            activations, float32 in and out).
        calibration: For ``int8``: a callable from :func:`calibration_inputs`.

    Returns:
        The written path.
    """
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as saved:
        model.export(saved, format="tf_saved_model", verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        if quantization in ("float16", "dynamic", "int8"):
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantization == "float16":
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            if calibration is None:
                raise ValueError("int8 needs calibration photos")
            converter.representative_dataset = calibration
        elif quantization not in ("float32", "dynamic"):
            raise ValueError(f"unknown quantization {quantization!r}")
        path.write_bytes(converter.convert())
    return path


def iter_images(folder: Path) -> Iterator[tuple[str, Image.Image]]:
    """``(name, RGB image)`` for every image file under ``folder``, sorted."""
    for path in sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES):
        with Image.open(path) as img:
            yield str(path), img.convert("RGB")


def skimage_images() -> list[tuple[str, Image.Image]]:
    """scikit-image's bundled sample pictures and some LFW faces (empty when it is not installed)."""
    try:
        from skimage import data
    except ImportError:
        return []
    images = []
    for name in SKIMAGE_SAMPLES:
        try:
            array = np.asarray(getattr(data, name)())
        except Exception:  # samples that need a download are skipped offline
            continue
        images.append((f"skimage:{name}", _to_image(array)))
    try:
        faces = data.lfw_subset()
    except Exception:
        faces = []
    for index, face in enumerate(faces[:FACES_FROM_LFW]):
        images.append((f"skimage:lfw_subset[{index}]", _to_image(face)))
    return images


def _to_image(array: np.ndarray) -> Image.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif array.dtype.kind == "f":
        array = np.clip(array * (255.0 if array.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    return image.convert("RGB")


def score_images(gate, images) -> dict[str, float]:
    """Gate score of every ``(name, image)``."""
    return {name: gate.score(image) for name, image in images}


def choose_threshold(car_scores: np.ndarray, car_recall: float) -> float:
    """The highest threshold that lets at least ``car_recall`` of ``car_scores`` through."""
    ordered = np.sort(car_scores)
    allowed_misses = int(np.floor(len(ordered) * (1.0 - car_recall)))
    return float(ordered[allowed_misses])


def rates(scores: dict[str, float], threshold: float) -> dict[str, Any]:
    """How many of ``scores`` pass ``threshold``."""
    values = np.array(list(scores.values()))
    passed = int((values >= threshold).sum())
    return {"count": len(values), "passed": passed, "pass_rate": round(passed / max(1, len(values)), 4)}


def write_gate(model_file: Path, out: Path, *, alpha: float, quantization: str, threshold: float,
               measurement: dict[str, Any], image_size: tuple[int, int] = IMAGE_SIZE,
               calibration: list[str] | None = None) -> Path:
    """Write the gate artifact folder: ``model.tflite`` + ``metadata.json``."""
    from inference.gate import GATE_KIND, GATE_METADATA_FILE, GATE_MODEL_FILE

    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, out / GATE_MODEL_FILE)
    os.chmod(out / GATE_MODEL_FILE, 0o644)
    export_lib.write_json(out / GATE_METADATA_FILE, {
        "kind": GATE_KIND,
        "name": "vehicle-gate",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": f"mobilenet_v1_{alpha} (ImageNet, 1000 classes)",
        "quantization": quantization,
        **({"calibration": calibration} if quantization == "int8" else {}),
        "image_size": list(image_size),
        "resize_mode": "center_crop",
        "input": {"dtype": "float32", "range": [0, 255], "channels": "RGB"},
        "score": "sum of the ImageNet probabilities of vehicle_classes",
        "vehicle_classes": {str(k): v for k, v in sorted(VEHICLE_CLASSES.items())},
        "threshold": round(threshold, 6),
        "measurement": measurement,
    })
    return out


def build_gate(*, cars: list[Path], held_out_cars: list[Path], non_cars: list[Path], out: Path,
               alpha: float = 0.75, quantization: str = "float16", car_recall: float = 0.98,
               use_skimage: bool = True, num_threads: int | None = None,
               image_size: tuple[int, int] = IMAGE_SIZE, calibrate: list[Path] | None = None) -> dict[str, Any]:
    """Build, measure and write the gate.

    Args:
        cars: Folders of car photos the threshold is chosen on.
        held_out_cars: Further car photos, only measured.
        non_cars: Folders of photos without cars, only measured.
        out: Gate artifact folder.
        alpha: MobileNet width (ImageNet weights for 0.25 and 0.75 are in the offline cache).
        quantization: ``float16`` (default), ``dynamic``, ``int8`` or ``float32``.
        car_recall: Share of ``cars`` the threshold must let through.
        use_skimage: Also measure scikit-image's sample pictures as non-cars.
        num_threads: LiteRT threads.
        image_size: Gate input ``(height, width)``.
        calibrate: Photo folders that calibrate ``int8`` (default: ``cars`` and ``non_cars``).

    Returns:
        The measurement written into the metadata.
    """
    from inference.gate import GATE_MODEL_FILE, VehicleGate

    image_size = tuple(image_size)
    model = build_imagenet_mobilenet(alpha, image_size)
    calibrate = list(calibrate or [*cars, *non_cars])
    calibration = calibration_inputs(calibrate, image_size) if quantization == "int8" else None
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        exported = {}
        for kind in dict.fromkeys(("float32", quantization)):
            exported[kind] = export_tflite(model, work / f"{kind}.tflite", kind, calibration)
        gates = {}
        for kind, path in exported.items():
            folder = work / kind
            write_gate(path, folder, alpha=alpha, quantization=kind, threshold=0.5, measurement={},
                       image_size=image_size)
            gates[kind] = VehicleGate(folder, num_threads=num_threads)

        groups = {
            "cars": [image for folder in cars for image in iter_images(folder)],
            "held_out_cars": [image for folder in held_out_cars for image in iter_images(folder)],
            "non_cars": [image for folder in non_cars for image in iter_images(folder)],
        }
        if use_skimage:
            groups["skimage"] = skimage_images()
        scores = {kind: {group: score_images(gate, images) for group, images in groups.items()}
                  for kind, gate in gates.items()}
        served = scores[quantization]
        threshold = choose_threshold(np.array(list(served["cars"].values())), car_recall)
        reference = scores["float32"]
        differences = np.array([abs(served[g][n] - reference[g][n]) for g in served for n in served[g]])
        flips = sum((served[g][n] >= threshold) != (reference[g][n] >= threshold) for g in served for n in served[g])
        measurement = {
            "threshold_rule": f"highest score that passes {car_recall:.0%} of the 'cars' photos",
            "sources": {"cars": [str(p) for p in cars], "held_out_cars": [str(p) for p in held_out_cars],
                        "non_cars": [str(p) for p in non_cars],
                        "skimage": "scikit-image sample pictures and LFW faces" if use_skimage else None},
            "groups": {group: rates(values, threshold) for group, values in served.items()},
            "quantization_check": {
                "reference": "float32",
                "size_bytes": {kind: path.stat().st_size for kind, path in exported.items()},
                "max_abs_score_difference": round(float(differences.max(initial=0.0)), 6),
                "mean_abs_score_difference": round(float(differences.mean()) if differences.size else 0.0, 6),
                "decisions_changed": int(flips),
                "images": int(differences.size),
            },
            "non_car_scores_passing": sorted(
                ([n, round(s, 4)] for g in ("non_cars", "skimage") for n, s in served.get(g, {}).items()
                 if s >= threshold), key=lambda item: -item[1]),
        }
        car_total = sum(measurement["groups"][g]["count"] for g in ("cars", "held_out_cars"))
        car_passed = sum(measurement["groups"][g]["passed"] for g in ("cars", "held_out_cars"))
        non_total = sum(measurement["groups"][g]["count"] for g in ("non_cars", "skimage") if g in served)
        non_passed = sum(measurement["groups"][g]["passed"] for g in ("non_cars", "skimage") if g in served)
        measurement["tpr"] = round(car_passed / max(1, car_total), 4)
        measurement["fpr"] = round(non_passed / max(1, non_total), 4)
        write_gate(exported[quantization], out, alpha=alpha, quantization=quantization, threshold=threshold,
                   measurement=measurement, image_size=image_size, calibration=[str(p) for p in calibrate])
    return {"threshold": threshold, **measurement}


@command("gate")
def add_gate_parser(subparsers) -> None:
    """Register ``python -m training gate``."""
    parser = subparsers.add_parser(
        "gate", help="build and measure the vehicle gate (\"not a car\") the app loads",
        description="Export the ImageNet MobileNet v1 as a small LiteRT gate, score car and non-car photos, "
                    "choose the threshold and write OUT/model.tflite + OUT/metadata.json. Needs the ImageNet "
                    "weights in the Keras cache (KERAS_HOME).")
    parser.add_argument("--cars", action="append", required=True, type=Path, metavar="DIR",
                        help="car photos the threshold is chosen on (repeatable)")
    parser.add_argument("--held-out-cars", action="append", default=[], type=Path, metavar="DIR",
                        help="more car photos, only measured (repeatable)")
    parser.add_argument("--non-cars", action="append", default=[], type=Path, metavar="DIR",
                        help="photos without cars, only measured (repeatable)")
    parser.add_argument("--no-skimage", action="store_true", help="do not measure scikit-image's sample pictures")
    parser.add_argument("--out", type=Path, default=Path("model_artifacts/vehicle-gate"), metavar="DIR")
    parser.add_argument("--alpha", type=float, default=0.75, choices=[0.25, 0.5, 0.75, 1.0])
    parser.add_argument("--quantization", default="float16", choices=QUANTIZATIONS,
                        help="float16 weights (default), dynamic (int8 weights), int8 (weights and activations, "
                        "calibrated; the fastest) or float32")
    parser.add_argument("--calibrate", action="append", type=Path, metavar="DIR",
                        help="photos that calibrate --quantization int8 (repeatable; default the --cars and "
                        "--non-cars folders)")
    parser.add_argument("--image-size", type=int, nargs=2, default=list(IMAGE_SIZE), metavar=("H", "W"),
                        help="gate input size; the ImageNet weights run at any size, fewer pixels cost less")
    parser.add_argument("--car-recall", type=float, default=0.98,
                        help="share of --cars photos the threshold lets through (default 0.98)")
    parser.set_defaults(handler=_run_gate)


def _run_gate(args) -> int:
    result = build_gate(cars=args.cars, held_out_cars=args.held_out_cars, non_cars=args.non_cars, out=args.out,
                        alpha=args.alpha, quantization=args.quantization, car_recall=args.car_recall,
                        use_skimage=not args.no_skimage, image_size=tuple(args.image_size),
                        calibrate=args.calibrate)
    for group, row in result["groups"].items():
        print(f"{group}: {row['passed']}/{row['count']} pass ({row['pass_rate']:.1%})")
    check = result["quantization_check"]
    print(f"threshold {result['threshold']:.4f}: TPR {result['tpr']:.1%}, FPR {result['fpr']:.1%}; "
          f"{args.quantization} vs float32: max score change {check['max_abs_score_difference']:.4f}, "
          f"{check['decisions_changed']} of {check['images']} decisions changed; sizes {check['size_bytes']}")
    print(f"gate written to {args.out}")
    return 0
