"""Write a trained Keras classifier as the artifact folder the web app loads.

The folder format (file names, ``metadata.json`` schema, LiteRT variants) is defined once, with its
reader, in :mod:`app.inference.artifact`; this module writes it. The format is versioned by
``format_version`` so that readers can refuse what they do not know.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from app.inference.artifact import (ARTIFACT_FORMAT_VERSION, HEAD_FILE, KERAS_FILE, LABELS_FILE,  # noqa: F401
                                    LITERT_FILE, LITERT_VARIANTS, METADATA_FILE, RESIZE_MODES)


def build_metadata(
    *,
    name: str,
    version: str,
    backbone: str,
    image_size: tuple[int, int],
    labels: list[str],
    resize_mode: str = "center_crop",
    preprocessing: str = "",
    metrics: dict[str, Any] | None = None,
    dataset: dict[str, Any] | None = None,
    training_config: dict[str, Any] | None = None,
    label_map: str | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Assemble the ``metadata.json`` document.

    Args:
        name: Short model name shown to users, e.g. ``car-models-196``.
        version: Model version string, e.g. ``1.0.0``.
        backbone: Backbone registry name, e.g. ``mobilenet_v1_0.75``.
        image_size: ``(height, width)`` of the model input.
        labels: Class names in output order.
        resize_mode: How the app fits a photo to ``image_size``: ``center_crop`` (shorter side to the
            input size, then a centred crop), ``stretch`` or ``pad`` (letterbox).
        preprocessing: Human-readable description of the in-model preprocessing.
        metrics: Evaluation figures (accuracy, top-5, ...).
        dataset: Dataset summary (counts per split, file-list hash).
        training_config: The resolved training configuration.
        label_map: Name of the label map that grouped the data folders, if any.
        extra: Further keys merged in last.

    Returns:
        The metadata dictionary, JSON-serialisable.
    """
    if resize_mode not in RESIZE_MODES:
        raise ValueError(f"resize_mode must be one of {RESIZE_MODES}, not {resize_mode!r}")
    metadata: dict[str, Any] = {
        "format_version": ARTIFACT_FORMAT_VERSION,
        "name": name,
        "version": version,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "backbone": backbone,
        "image_size": [int(image_size[0]), int(image_size[1])],
        "resize_mode": resize_mode,
        "input": {"dtype": "float32", "range": [0, 255], "channels": "RGB"},
        "preprocessing": preprocessing,
        "num_classes": len(labels),
        "label_map": label_map,
        "metrics": metrics or {},
        "dataset": dataset or {},
        "training_config": training_config or {},
        "files": {"keras": KERAS_FILE, "litert": LITERT_FILE, "labels": LABELS_FILE},
    }
    metadata.update(extra or {})
    if isinstance(metadata["training_config"].get("config"), dict):
        from training.cli import reproduce_command  # the option table lives with the command line

        metadata["training_config"] = {**metadata["training_config"],
                                       "command": reproduce_command(metadata["training_config"])}
    return metadata


def export_litert(model, path: Path) -> Path:
    """Export ``model`` as a float32 LiteRT flatbuffer at ``path``.

    Args:
        model: A built Keras model.
        path: Destination ``.tflite`` file.

    Returns:
        The written path.
    """
    model.export(str(path), format="litert", verbose=False)
    return path


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` as indented JSON atomically (temp file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as tmp:
        json.dump(document, tmp, indent=2, sort_keys=False, default=str)
        tmp.write("\n")
    os.chmod(tmp_name, 0o644)  # mkstemp creates 0600; artifacts are read by other users (web server)
    os.replace(tmp_name, path)


def export_artifact(model, labels: list[str], metadata: dict[str, Any], out_dir: str | Path,
                    *, litert: bool = True) -> Path:
    """Write ``model`` with its labels and metadata as an artifact folder.

    Args:
        model: Trained Keras model (uint8-range RGB in, probabilities out).
        labels: Class names in output order; must match the model's output width.
        metadata: Document from :func:`build_metadata`.
        out_dir: Artifact folder, created if missing.
        litert: Also write the LiteRT serving copy.

    Returns:
        The artifact folder path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    num_outputs = int(model.outputs[0].shape[-1])
    if num_outputs != len(labels):
        raise ValueError(f"model has {num_outputs} outputs but {len(labels)} labels were given")
    model.save(out / KERAS_FILE)
    if litert:
        export_litert(model, out / LITERT_FILE)
    else:
        metadata = {**metadata, "files": {k: v for k, v in metadata["files"].items() if k != "litert"}}
    write_json(out / LABELS_FILE, list(labels))
    write_json(out / METADATA_FILE, metadata)
    return out
