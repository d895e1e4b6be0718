"""``python -m training group``: a coarser-label artifact made from a finer one, without retraining.

The fine model's probabilities are summed per label-map group by a frozen 0/1 ``Dense`` layer appended
to the network (a stock layer, so the artifact loads anywhere). For premium vs basic this keeps what
the 196-class model knows about each model: a separately trained two-class head has to rediscover
that "premium" is a union of dozens of unrelated car models.

A model with a make output is grouped from that output when the label map's folders are its make labels
(``training/label_maps/make_premium_basic.csv``): premium/basic is then derived from the make, which
knows recent cars and "Other make", not from the classes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training import data as data_lib
from training import evaluate as evaluate_lib
from training import export as export_lib
from training.commands import command, subcommand
from training.model import load_model


def grouping_matrix(labels: list[str], mapping: dict[str, str], groups: list[str] | None = None
                    ) -> tuple[np.ndarray, list[str]]:
    """The 0/1 matrix that sums fine-class probabilities into groups.

    Args:
        labels: The fine model's labels in output order.
        mapping: ``{fine label: group}`` from a label map.
        groups: The matrix's columns, when another matrix's order must be kept (default: the groups, sorted).

    Returns:
        ``(matrix of shape (len(labels), len(groups)), group names)``.
    """
    missing = [label for label in labels if label not in mapping]
    if missing:
        raise KeyError(f"{len(missing)} model labels are missing from the label map, e.g. {missing[0]!r}")
    groups = groups or sorted({mapping[label] for label in labels})
    matrix = np.zeros((len(labels), len(groups)), dtype="float32")
    for row, label in enumerate(labels):
        matrix[row, groups.index(mapping[label])] = 1.0
    return matrix, groups


def grouped_model(model: keras.Model, matrix: np.ndarray, name: str, output: int = 0,
                  class_matrix: np.ndarray | None = None, blend: float = 1.0) -> keras.Model:
    """``model`` followed by a frozen layer summing the probabilities of its ``output`` with ``matrix``.

    With ``class_matrix`` and ``blend`` below 1 (a make output weighed against the summed classes, as the
    artifact's make grouping does), a second frozen layer sums the class probabilities and the two are
    added, ``blend`` and ``1 - blend`` folded into their weights.
    """
    summing = keras.layers.Dense(matrix.shape[1], use_bias=False, trainable=False, name="group_sum")
    outputs = summing(model.outputs[output])
    if class_matrix is None or blend >= 1.0:
        summing.set_weights([matrix])
        return keras.Model(model.inputs, outputs, name=name)
    from_classes = keras.layers.Dense(matrix.shape[1], use_bias=False, trainable=False, name="group_sum_classes")
    added = keras.layers.Add(name="group_blend")([outputs, from_classes(model.outputs[0])])
    summing.set_weights([matrix * blend])
    from_classes.set_weights([class_matrix * (1.0 - blend)])
    return keras.Model(model.inputs, added, name=name)


def group_artifact(model_dir: str | Path, label_map: str | Path, data_path: str | Path, out: str | Path, *,
                   name: str | None = None, version: str | None = None, batch_size: int = 32,
                   target_precision: float | None = None, litert: bool = True) -> dict[str, Any]:
    """Write the grouped artifact, evaluated on the val split of ``data_path`` through ``label_map``.

    Args:
        model_dir: The fine artifact folder.
        label_map: ``folder,label`` CSV whose folders are the fine model's labels.
        data_path: The data folder the fine model was trained on.
        out: The new artifact folder.
        name: Model name (default: the label map's file name).
        version: Model version (default: the fine model's).
        batch_size: Prediction batch size.
        target_precision: For the confidence threshold (default: the fine model's).
        litert: Also write ``model.tflite``.

    Returns:
        ``{"artifact", "metrics", "wall_time_s"}``.
    """
    started = time.monotonic()
    model_dir, out = Path(model_dir), Path(out)
    source = json.loads((model_dir / export_lib.METADATA_FILE).read_text(encoding="utf-8"))
    labels = json.loads((model_dir / export_lib.LABELS_FILE).read_text(encoding="utf-8"))
    mapping = data_lib.read_label_map(label_map)
    name = name or Path(label_map).stem
    make_output = source.get("make_output") or {}
    from_makes = bool(make_output) and all(make in mapping for make in make_output["labels"])
    class_matrix, blend = None, 1.0
    config = source.get("training_config", {}).get("config", {})
    split_settings = {"split": config.get("data", {}).get("split"), "seed": config.get("seed", 42)}
    if from_makes:
        matrix, groups = grouping_matrix(make_output["labels"], mapping)
        # Weighed as the source artifact's make grouping is (measured by `training levels`), and each class
        # reaches its group through its make, in training data and in the class matrix alike.
        blend = float(((source.get("groups") or {}).get("make") or {}).get("blend", 1.0))
        group_of_class = {label: mapping[make_output["of"][label]] for label in labels}
        class_matrix, _ = grouping_matrix(labels, group_of_class, groups)
        dataset = data_lib.load_dataset(data_path, **split_settings)
        val = dataset.splits["val"]
        val = data_lib.Split(list(val.paths), [groups.index(group_of_class[dataset.class_names[label]])
                                               for label in val.labels])
    else:
        matrix, groups = grouping_matrix(labels, mapping)
        dataset = data_lib.load_dataset(data_path, label_map=label_map, **split_settings)
        if dataset.class_names != groups:
            raise ValueError(f"the data's groups {dataset.class_names} differ from the model's {groups}")
        val = dataset.splits["val"]
    model = grouped_model(load_model(model_dir / export_lib.KERAS_FILE), matrix, name, output=1 if from_makes else 0,
                          class_matrix=class_matrix, blend=blend)
    report_dir = out / "report"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True)
    if target_precision is None:
        target_precision = source.get("confidence", {}).get("target_precision", 0.95)
    evaluation = evaluate_lib.evaluate_model(
        model, groups, val.paths, val.labels, image_size=tuple(source["image_size"]),
        resize_mode=source["resize_mode"], batch_size=batch_size, report_dir=report_dir, split_name="val",
        target_precision=target_precision, tta=source.get("tta", "none"))
    wall_time = time.monotonic() - started
    metadata = export_lib.build_metadata(
        name=name, version=version or source.get("version", "1.0.0"), backbone=source["backbone"],
        image_size=tuple(source["image_size"]), labels=groups, resize_mode=source["resize_mode"],
        preprocessing=source.get("preprocessing", ""), metrics=evaluation["metrics"],
        dataset=data_lib.summarize(dataset),
        training_config={
            "derived_from": {"name": source.get("name"), "version": source.get("version"),
                             "created": source.get("created"), "metrics": source.get("metrics")},
            "method": (f"make-output probabilities summed per label-map group, weighed {blend:g} against the class "
                       "probabilities summed through each class's make (frozen Dense layers)" if from_makes
                       else "fine-model probabilities summed per label-map group (frozen 0/1 Dense layer)"),
            "config": config,
            "wall_time_s": round(wall_time, 1),
        },
        label_map=Path(label_map).name,
        # The grouped model answers as the fine one does, test-time augmentation included.
        extra={"confidence": evaluation["confidence"], "tta": source.get("tta", "none")})
    export_lib.export_artifact(model, groups, metadata, out, litert=litert)
    print(f"artifact written to {out} in {wall_time:.0f} s: "
          + ", ".join(f"{k} {v:.4f}" for k, v in evaluation["metrics"].items() if isinstance(v, float)))
    return {"artifact": out, "metrics": evaluation["metrics"], "wall_time_s": wall_time}


@command("group")
def add_group_parser(subparsers) -> None:
    """Register ``python -m training group``."""
    parser, required = subcommand(
        subparsers, "group", _run_group, summary="derive a coarser-label artifact (e.g. premium/basic) from a finer one",
        description="Sum a trained model's class probabilities per label-map group (no retraining), "
                    "evaluate on val through the label map and write the new artifact.")
    required.add_argument("--model", required=True, metavar="DIR", help="the fine artifact, e.g. model_artifacts/car-models-196")
    required.add_argument("--label-map", required=True, metavar="CSV", help="folder,label CSV over the model's labels")
    required.add_argument("--data", required=True, metavar="DIR", help="data folder the fine model was trained on")
    required.add_argument("--out", required=True, metavar="DIR", help="artifact folder to write")
    options = parser.add_argument_group("output")
    options.add_argument("--name", help="model name (default: the label map's file name)")
    options.add_argument("--version", help="model version (default: the fine model's)")
    options.add_argument("--target-precision", type=float, help="for the confidence threshold (default: the fine model's)")
    options.add_argument("--no-litert", action="store_true", help="skip the model.tflite serving copy")


def _run_group(args: argparse.Namespace) -> int:
    group_artifact(args.model, args.label_map, args.data, args.out, name=args.name, version=args.version,
                   target_precision=args.target_precision, litert=not args.no_litert)
    return 0
