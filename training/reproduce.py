"""``python -m training reproduce``: does a second run of an artifact's training command land where it did?

A shipped artifact's figures are only as good as its recipe is repeatable. This command takes the
shipped artifact (REFERENCE) and a second one trained by the same command (RERUN), scores both on the
same split the same way - the artifact's own test-time augmentation, and without it - and records both
runs, their training time and the difference in ``REFERENCE/report/reproduction.json``:

    python -m training reproduce model_artifacts/car-models-196 /tmp/rerun \\
        --data ../shared/datasets/stanford-cars --tolerance 1.5

The run is reproduced when the rerun's top-1 (as served) is within ``--tolerance`` points of the
reference's. Both are scored here, by the same code, so neither number is copied from anywhere.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
from pathlib import Path
from typing import Any

import numpy as np

from inference import tta as tta_lib
from training import export as export_lib
from training.commands import command

DEFAULT_TOLERANCE_POINTS = 1.5
REPORT_FILE = "reproduction.json"


def score_artifact(model_dir: Path, data_path: Path, split: str, batch_size: int = 32) -> dict[str, Any]:
    """Top-1 and top-5 of an artifact on ``split``, with its test-time augmentation and without it.

    Args:
        model_dir: Artifact folder.
        data_path: The data folder it was trained on.
        split: Split to score.
        batch_size: Prediction batch size.

    Returns:
        ``{"tta", "top1", "top5", "top1_single_view", "images", "training_seconds", ...}``.
    """
    from training import data as data_lib
    from training.evaluate import predict
    from training.model import load_model

    metadata = json.loads((model_dir / export_lib.METADATA_FILE).read_text(encoding="utf-8"))
    class_names = json.loads((model_dir / export_lib.LABELS_FILE).read_text(encoding="utf-8"))
    part = data_lib.artifact_split(metadata, class_names, data_path, split)
    model = load_model(model_dir / export_lib.KERAS_FILE)
    options = dict(num_classes=len(class_names), image_size=tuple(metadata["image_size"]),
                   resize_mode=metadata.get("resize_mode", "center_crop"), batch_size=batch_size)
    tta = metadata.get("tta", "none")
    single = predict(model, part.paths, part.labels, **options)
    served = (predict(model, part.paths, part.labels, tta=tta, skip_above=tta_lib.skip_above(metadata), **options)
              if tta != "none" else single)
    truth = np.asarray(part.labels)
    top5 = np.argsort(-served, axis=1)[:, :5]
    training = metadata.get("training_config", {})
    return {
        "artifact": str(model_dir),
        "version": metadata.get("version"),
        "created": metadata.get("created"),
        "tta": tta,
        "images": int(len(truth)),
        "top1": round(100.0 * float((served.argmax(axis=1) == truth).mean()), 2),
        "top5": round(100.0 * float((top5 == truth[:, None]).any(axis=1).mean()), 2),
        "top1_single_view": round(100.0 * float((single.argmax(axis=1) == truth).mean()), 2),
        "training_seconds": training.get("wall_time_s"),
        "device": training.get("device"),
        "command": training.get("command"),
    }


def compare_runs(reference: str | Path, rerun: str | Path, data_path: str | Path, *, split: str = "val",
                 tolerance_points: float = DEFAULT_TOLERANCE_POINTS, out: str | Path | None = None,
                 device: str | None = None) -> dict[str, Any]:
    """Score both artifacts and write the comparison.

    Args:
        reference: The shipped artifact folder.
        rerun: An artifact trained again with the same command.
        data_path: The data folder both were trained on.
        split: Split to compare on.
        tolerance_points: Largest accepted top-1 difference, in percentage points.
        out: Where to write the JSON (default ``REFERENCE/report/reproduction.json``).
        device: What the rerun was trained on, in words (recorded as given).

    Returns:
        The written record.
    """
    reference, rerun = Path(reference), Path(rerun)
    runs = {"reference": score_artifact(reference, Path(data_path), split),
            "rerun": score_artifact(rerun, Path(data_path), split)}
    if device:  # the artifact records the machine kind; a rerun may add what else was running there
        runs["rerun"]["device"] = device
    difference = runs["rerun"]["top1"] - runs["reference"]["top1"]
    record = {
        "measured": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "split": split,
        "data": str(data_path),
        "machine": f"{platform.machine()}, {platform.python_implementation()} {platform.python_version()}",
        "runs": runs,
        "top1_difference_points": round(difference, 2),
        "top1_single_view_difference_points": round(runs["rerun"]["top1_single_view"]
                                                    - runs["reference"]["top1_single_view"], 2),
        "tolerance_points": tolerance_points,
        "reproduced": abs(difference) <= tolerance_points,
    }
    target = Path(out) if out else reference / "report" / REPORT_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    export_lib.write_json(target, record)
    return record


@command("reproduce")
def add_reproduce_parser(subparsers) -> None:
    """Register ``python -m training reproduce``."""
    parser = subparsers.add_parser(
        "reproduce", help="score a shipped artifact and a rerun of its training command, side by side",
        description="Score REFERENCE and RERUN on the same split the same way (with and without their test-time "
                    "augmentation), and record both runs and their difference in "
                    "REFERENCE/report/reproduction.json.")
    parser.add_argument("reference", metavar="REFERENCE", help="the shipped artifact folder")
    parser.add_argument("rerun", metavar="RERUN", help="an artifact trained again by the same command")
    parser.add_argument("--data", required=True, metavar="DIR", help="data folder both were trained on")
    parser.add_argument("--split", default="val", choices=["val", "test", "train"])
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE_POINTS, metavar="POINTS",
                        help="largest top-1 difference that counts as reproduced")
    parser.add_argument("--device", metavar="TEXT", help="what the rerun was trained on, recorded as given")
    parser.add_argument("--out", metavar="FILE", help="where to write the record")
    parser.set_defaults(handler=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    record = compare_runs(args.reference, args.rerun, args.data, split=args.split, tolerance_points=args.tolerance,
                          out=args.out, device=args.device)
    for name, run in record["runs"].items():
        print(f"{name}: top-1 {run['top1']:.2f}% (tta {run['tta']}; {run['top1_single_view']:.2f}% single view), "
              f"top-5 {run['top5']:.2f}% on {run['images']} {record['split']} images  [{run['artifact']}]")
    verdict = "reproduced" if record["reproduced"] else "NOT reproduced"
    print(f"difference {record['top1_difference_points']:+.2f} points (tolerance {record['tolerance_points']:g}): "
          f"{verdict}")
    return 0 if record["reproduced"] else 1
