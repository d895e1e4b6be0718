"""Write a trained Keras classifier as the artifact folder the web app loads.

The folder format (file names, ``metadata.json`` schema, LiteRT variants) is defined once, with its
reader, in :mod:`inference.artifact`; this module writes it. The format is versioned by
``format_version`` so that readers can refuse what they do not know.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from inference.artifact import (ARTIFACT_FORMAT_VERSION, HEAD_FILE, KERAS_FILE, LABELS_FILE,  # noqa: F401
                                    LITERT_FILE, LITERT_VARIANTS, METADATA_FILE, RESIZE_MODES)
from training.options import reproduce_command


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
        metadata["training_config"] = {**metadata["training_config"],
                                       "command": reproduce_command(metadata["training_config"])}
    return metadata


def explainable_head(model) -> dict[str, Any] | None:
    """The parts a class activation map needs, when the head after the last feature map allows one.

    The head must be global average pooling, any dropout, one dense layer (softmax, or linear followed by
    a softmax activation) and optionally a bias-free 0/1 dense layer summing classes into groups (the
    grouped artifacts of ``python -m training group``). Then ``F @ kernel[:, k]`` is the exact map of
    class ``k``; the head is re-run in NumPy on a probe image and must give the model's probabilities.

    Args:
        model: A built Keras classifier.

    Returns:
        ``{"feature_layer", "kernel", "bias", "group_matrix"}`` (``group_matrix`` ``None`` for a plain
        classifier), or ``None`` for a head the map cannot explain.
    """
    import keras
    import numpy as np

    from inference.runtimes import feature_layer, outer_output

    layer = feature_layer(model)
    if layer is None:
        return None
    # A make output is a second head beside the class head; the map explains the class head.
    head = [h for h in model.layers[model.layers.index(layer) + 1:] if not h.name.startswith("make_")]
    if not head or not isinstance(head[0], keras.layers.GlobalAveragePooling2D):
        return None
    rest = [h for h in head[1:] if not isinstance(h, keras.layers.Dropout)]
    dense = rest.pop(0) if rest and isinstance(rest[0], keras.layers.Dense) else None
    if dense is None or not dense.use_bias:
        return None
    activation = getattr(dense.activation, "__name__", "")
    if activation == "linear" and rest and isinstance(rest[0], keras.layers.Activation):
        activation = getattr(rest.pop(0).activation, "__name__", "")
    if activation != "softmax":
        return None
    group_matrix = None
    if rest:
        summing = rest.pop(0)
        if rest or not isinstance(summing, keras.layers.Dense) or summing.use_bias:
            return None
        group_matrix = np.asarray(summing.get_weights()[0], dtype="float32")
        if not np.isin(group_matrix, (0.0, 1.0)).all() or not (group_matrix.sum(axis=1) == 1).all():
            return None
    kernel, bias = (np.asarray(w, dtype="float32") for w in dense.get_weights())
    # Check the NumPy head against the model itself on a probe image.
    shape = (1, *model.inputs[0].shape[1:])
    probe = np.linspace(0, 255, num=int(np.prod(shape)), dtype="float32").reshape(shape)
    both = keras.Model(model.inputs, [model.outputs[0], outer_output(layer)])
    with warnings.catch_warnings():  # a model saved with a list of inputs warns about a bare tensor
        warnings.simplefilter("ignore", UserWarning)
        expected, features = (np.asarray(t) for t in both(probe, training=False))
    logits = features[0].mean(axis=(0, 1), dtype="float64") @ kernel + bias
    probabilities = np.exp(logits - logits.max())
    probabilities /= probabilities.sum()
    if group_matrix is not None:
        probabilities = probabilities @ group_matrix
    if not np.allclose(probabilities, expected[0], atol=1e-4):
        return None
    return {"feature_layer": layer, "kernel": kernel, "bias": bias, "group_matrix": group_matrix}


def serving_model(model, head: dict[str, Any] | None):
    """The network the LiteRT files hold: ``model`` (class, then make output), plus the feature map when explainable."""
    if head is None:
        return model
    import keras

    from inference.runtimes import outer_output

    return keras.Model(model.inputs, [*model.outputs, outer_output(head["feature_layer"])], name=model.name)


def write_head(head: dict[str, Any], path: Path) -> Path:
    """Write the dense head of :func:`explainable_head` as ``head.npz``."""
    import numpy as np

    arrays = {"kernel": head["kernel"], "bias": head["bias"]}
    if head["group_matrix"] is not None:
        arrays["group_matrix"] = head["group_matrix"]
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    os.chmod(path, 0o644)
    return path


def export_litert(model, path: Path) -> Path:
    """Export ``model`` as a float32 LiteRT flatbuffer at ``path``.

    Args:
        model: A built Keras model (pass it through :func:`serving_model` for the feature-map output).
        path: Destination ``.tflite`` file.

    Returns:
        The written path.
    """
    model.export(str(path), format="litert", verbose=False)
    return path


def explanation_record(head: dict[str, Any] | None) -> dict[str, Any]:
    """The ``explanation`` entry of ``metadata.json``."""
    if head is None:
        return {"method": None, "reason": "the head is not global average pooling -> dense softmax"}
    return {"method": "class_activation_map", "head": HEAD_FILE, "feature_layer": head["feature_layer"].name,
            "feature_output": "second output of the LiteRT files"}


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
    head = explainable_head(model)
    if head is not None:
        write_head(head, out / HEAD_FILE)
    metadata = {**metadata, "explanation": explanation_record(head)}
    if litert:
        export_litert(serving_model(model, head), out / LITERT_FILE)
    else:
        metadata = {**metadata, "files": {k: v for k, v in metadata["files"].items() if k != "litert"}}
    write_json(out / LABELS_FILE, list(labels))
    write_json(out / METADATA_FILE, metadata)
    return out
