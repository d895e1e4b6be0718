"""The model artifact format: file names, the ``metadata.json`` schema, and the one reader that checks it.

An artifact folder holds:

* ``model.keras``    - the source of truth; float32 RGB pixels in [0, 255], shape ``(None, height, width, 3)``,
  with the backbone preprocessing inside the model; softmax probabilities ``(None, num_classes)`` out.
* ``model.tflite``   - the same network for the LiteRT runtime (float32), the fast serving copy. When the
  head is explainable it has a second output: the last convolutional feature map.
* ``model.fp16.tflite`` / ``model.int8.tflite`` / ``model.int8-full.tflite`` - optional quantised copies
  (:data:`LITERT_VARIANTS`); ``metadata["serving_variant"]`` may name the one the app serves by default.
* ``head.npz``       - optional: the dense layer after that feature map (``kernel``, ``bias``, and for a
  grouped model the 0/1 ``group_matrix`` that sums fine classes), for class activation maps.
* ``references.npy`` - optional: float16 ``(n, d)`` embeddings of the model's own training photos, as the
  served copy embeds them (``python -m training references``); taught labels (:mod:`.gallery`) answer only
  where a photo is nearer to their examples than to these.
* ``labels.json``    - the class names, in output-index order.
* ``metadata.json``  - what the app needs to feed the model (``image_size``, ``resize_mode``), the
  confidence threshold, optional label ``groups`` and provenance.

``groups`` maps a grouping name to ``{"labels": [...], "of": {fine label: group label}, "confidence":
{...}}``: every fine label belongs to exactly one group label of each grouping.

A model may have a second softmax output, the make output: ``make_output`` is ``{"labels": [...], "of":
{class label: make label}}`` (the make of each class; a make label may have no class, e.g. a make known
only from web photos, or :data:`OTHER_MAKE`). Its probabilities follow the class probabilities in the
runtime's rows. A grouping with ``"from": "make_output"`` groups the make labels instead of the classes:
its ``of`` maps every make label to a group label, and its scores come from the make output.

The training package writes artifacts with these names and checks them with :func:`check_groups`, so
writer and reader cannot drift apart. This module imports only the standard library.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from .tta import SKIP_KEY, check_skip_above

ARTIFACT_FORMAT_VERSION = 1
KERAS_FILE = "model.keras"
LITERT_FILE = "model.tflite"
LABELS_FILE = "labels.json"
METADATA_FILE = "metadata.json"
HEAD_FILE = "head.npz"
REFERENCES_FILE = "references.npy"
RESIZE_MODES = ("center_crop", "stretch", "pad")
# Test-time augmentation the app applies: none, or the photo and its mirror image averaged (one batch of 2).
TTA_MODES = ("none", "flip")
# Variant name -> file in the artifact folder. float32 is the copy every export writes.
# int8 is dynamic-range (int8 weights, float activations); int8-full computes in integers throughout (weights
# and activations, calibrated on training photos), which XNNPACK runs about twice as fast as float32.
LITERT_VARIANTS = {"float32": LITERT_FILE, "float16": "model.fp16.tflite", "int8": "model.int8.tflite",
                   "int8-full": "model.int8-full.tflite"}
CLASS_LEVEL = "class"  # the answer level of the model's own labels
MAKE_OUTPUT = "make_output"  # the metadata section of the second output, and a grouping's "from" value
OTHER_MAKE = "Other make"  # the make output's label for cars of makes the model was not taught

REPO_ROOT = Path(__file__).resolve().parents[1]


class ArtifactError(RuntimeError):
    """A model artifact that cannot be served; the message is one line naming the path and the fix."""


def train_hint(folder: Path) -> str:
    """The command that writes an artifact at ``folder`` (relative to the repository when inside it)."""
    try:
        out = folder.resolve().relative_to(REPO_ROOT)
    except ValueError:
        out = folder
    return ("python -m training train --config training/configs/stanford196_mobilenet.yaml "
            f"--data ../shared/datasets/stanford-cars --out {out}")


def broken(folder: Path, problem: str) -> ArtifactError:
    """The error for an artifact folder with ``problem``, with the command that rewrites it."""
    return ArtifactError(f"model artifact at {folder} is broken: {problem}; re-export it with "
                         f"`{train_hint(folder)}` or set MODEL_DIR to a good artifact folder")


def read_artifact(model_dir: str | Path) -> tuple[dict[str, Any], list[str]]:
    """Read and check ``metadata.json`` and ``labels.json`` of an artifact folder.

    Args:
        model_dir: Artifact folder.

    Returns:
        ``(metadata, labels)``.

    Raises:
        ArtifactError: The folder or a file is missing, unreadable or inconsistent.
    """
    folder = Path(model_dir)
    if not folder.is_dir():
        raise ArtifactError(f"model artifact not found at {folder}: train one with `{train_hint(folder)}` "
                            f"or set MODEL_DIR to an artifact folder")
    documents = {}
    for filename in (METADATA_FILE, LABELS_FILE):
        try:
            documents[filename] = json.loads((folder / filename).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise broken(folder, f"{filename} is missing") from None
        except (OSError, ValueError) as exc:
            raise broken(folder, f"{filename} is unreadable ({exc.__class__.__name__})") from None
    metadata, labels = documents[METADATA_FILE], documents[LABELS_FILE]
    if not isinstance(metadata, dict) or metadata.get("format_version") != ARTIFACT_FORMAT_VERSION:
        raise broken(folder, f"metadata.json format_version is not {ARTIFACT_FORMAT_VERSION}")
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise broken(folder, "labels.json is not a non-empty list of names")
    size = metadata.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise broken(folder, "metadata.json image_size is not [height, width]")
    if metadata.get("resize_mode", "center_crop") not in RESIZE_MODES:
        raise broken(folder, f"metadata.json resize_mode is not one of {', '.join(RESIZE_MODES)}")
    if metadata.get("tta", "none") not in TTA_MODES:
        raise broken(folder, f"metadata.json tta is not one of {', '.join(TTA_MODES)}")
    try:
        check_skip_above(metadata.get(SKIP_KEY))
    except ValueError as exc:
        raise broken(folder, f"metadata.json {exc}") from None
    try:
        make_labels = check_make_output(metadata.get(MAKE_OUTPUT), labels)
        check_groups(metadata.get("groups") or {}, labels, make_labels)
    except ValueError as exc:
        raise broken(folder, f"metadata.json groups: {exc}") from None
    return metadata, labels


def make_labels_of(metadata: dict[str, Any]) -> list[str]:
    """The make output's labels, ``[]`` for a model without one."""
    section = metadata.get(MAKE_OUTPUT)
    return list(section["labels"]) if isinstance(section, dict) else []


def check_make_output(section: Any, labels: list[str]) -> list[str]:
    """Check the ``make_output`` section against the class labels.

    Returns:
        The make labels (``[]`` when the section is absent).

    Raises:
        ValueError: The section is malformed or leaves a class without a known make.
    """
    if section is None:
        return []
    if not isinstance(section, dict):
        raise ValueError(f"{MAKE_OUTPUT} is not an object")
    makes, of = section.get("labels"), section.get("of")
    if not (isinstance(makes, list) and makes and all(isinstance(x, str) for x in makes)) or len(set(makes)) != len(makes):
        raise ValueError(f"{MAKE_OUTPUT}.labels is not a list of distinct names")
    if not isinstance(of, dict) or any(label not in of for label in labels):
        raise ValueError(f"{MAKE_OUTPUT}.of does not give every class its make")
    strays = [label for label in labels if of[label] not in makes]
    if strays:
        raise ValueError(f"{MAKE_OUTPUT}.of maps {strays[0]!r} to a make not in {MAKE_OUTPUT}.labels")
    return list(makes)


def check_groups(groups: Any, labels: list[str], make_labels: list[str] | None = None) -> None:
    """Check the ``groups`` section of ``metadata.json`` against the model's labels.

    Args:
        groups: The section as read (``{name: {"labels", "of", "confidence"[, "from"]}}``).
        labels: The model's labels.
        make_labels: The make output's labels, which groupings ``"from": "make_output"`` group.

    Raises:
        ValueError: A grouping is malformed, misses a fine label, names an unknown one, or maps a fine
            label to a group label it does not list.
    """
    if not isinstance(groups, dict):
        raise ValueError("is not an object of named groupings")
    for name, group in groups.items():
        if not isinstance(name, str) or not name or name == CLASS_LEVEL:
            raise ValueError(f"grouping name {name!r} is empty or reserved")
        if not isinstance(group, dict):
            raise ValueError(f"{name} is not an object")
        source = group.get("from", "classes")
        if source not in ("classes", MAKE_OUTPUT) or (source == MAKE_OUTPUT and not make_labels):
            raise ValueError(f"{name}.from is {source!r}: use classes, or {MAKE_OUTPUT} for a model with a make output")
        members = list(make_labels or []) if source == MAKE_OUTPUT else labels
        fine = set(members)
        names, of = group.get("labels"), group.get("of")
        if not (isinstance(names, list) and names and all(isinstance(x, str) for x in names)):
            raise ValueError(f"{name}.labels is not a non-empty list of names")
        if len(set(names)) != len(names):
            raise ValueError(f"{name}.labels lists a group label twice")
        if not isinstance(of, dict):
            raise ValueError(f"{name}.of is not an object")
        missing = [label for label in members if label not in of]
        if missing:
            raise ValueError(f"{name} leaves {len(missing)} label(s) without a group, e.g. {missing[0]!r}")
        unknown = [label for label in of if label not in fine]
        if unknown:
            raise ValueError(f"{name} maps {unknown[0]!r}, which is not one of the model's labels")
        known = set(names)
        strays = [label for label, target in of.items() if target not in known]
        if strays:
            raise ValueError(f"{name} maps {strays[0]!r} to {of[strays[0]]!r}, which is not in {name}.labels")
        empty = known - set(of.values())
        if empty:
            raise ValueError(f"{name}.labels has {sorted(empty)[0]!r}, which no label maps to")
        confidence = group.get("confidence", {})
        if not isinstance(confidence, dict):
            raise ValueError(f"{name}.confidence is not an object")


# What ``GET /api/v1/model`` may publish of ``metadata.json``: what the model is and how good it is.
# Everything else (the training run's configuration and command, its run folder and checkpoints, the
# dataset's location, the artifact's file layout) describes the machine it was made on.
PUBLIC_METADATA_KEYS = ("format_version", "name", "version", "created", "backbone", "image_size", "resize_mode",
                        "input", "preprocessing", "num_classes", "metrics", "confidence", "tta", SKIP_KEY, "groups",
                        "serving_variant", "robustness", "make_output", "answer_levels")
PUBLIC_DATASET_KEYS = ("presplit", "num_classes", "counts", "per_class", "file_list_sha256")
_PATH_LIKE = re.compile(r"^(?:/|~|\.{1,2}/|[A-Za-z]:[\\/])|/(?:runs|checkpoints|home|work|tmp)/")


def looks_like_path(value: str) -> bool:
    """Whether a metadata string is a file-system path (absolute, home- or dot-relative, or a run folder)."""
    return bool(_PATH_LIKE.search(value))


def public_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """The part of an artifact's metadata fit to publish: :data:`PUBLIC_METADATA_KEYS`, the dataset's
    counts without its location, and no string anywhere that looks like a path."""
    public = {key: metadata[key] for key in PUBLIC_METADATA_KEYS if key in metadata}
    if isinstance(metadata.get("dataset"), dict):
        public["dataset"] = {key: metadata["dataset"][key] for key in PUBLIC_DATASET_KEYS
                             if key in metadata["dataset"]}
    return _without_paths(public)


def _without_paths(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_paths(item) for key, item in value.items()
                if not (isinstance(item, str) and looks_like_path(item))}
    if isinstance(value, list):
        return [_without_paths(item) for item in value if not (isinstance(item, str) and looks_like_path(item))]
    return value
