"""Training configuration: defaults, loading from JSON/YAML, command-line overrides, saving.

A configuration is a nested dictionary with the sections ``data``, ``model``, ``augment``, ``train``
and ``export``. Values come, in increasing priority, from :data:`DEFAULTS`, the ``--config`` file and
the command-line options; the resolved result is written into the run folder so a run can be repeated.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "name": "car-classifier",
    "version": "1.0.0",
    "seed": 42,
    "data": {
        "path": None,               # DATA/<class>/*.jpg, optionally with train/ val/ test/ inside
        "label_map": None,          # CSV folder,label that groups folders into coarser labels
        "split": [0.7, 0.15, 0.15],  # used only when DATA has no train/ val/ sub-folders
        "cache": True,              # keep decoded, resized images in memory after the first epoch
        "max_per_class": None,      # cap on training images per class (quick experiments and tests)
        # A make output beside the classes (training/makes.py): the make of every class as a folder,label
        # CSV; photos labelled by make only (train/<Make>/, val/<Make>/); photos of makes to answer as
        # "Other make"; the share of each training batch drawn from those make-only photos.
        "class_makes": None,
        "make_data": None,
        "other_makes": None,
        "make_share": 0.5,
    },
    "model": {
        "backbone": "mobilenet_v1_0.75",
        "weights": "imagenet",      # imagenet | none | PATH (weights file or a model.keras to start from)
        "image_size": None,         # [height, width]; the backbone default when null
        "resize_mode": "center_crop",
        "dropout": 0.2,
        "l2": 0.0,
        "hidden_units": 0,          # a ReLU layer before the classifier; 0 = linear head
        "tta": "none",              # none | flip: the app averages the photo and its mirror image
        "tta_skip_above": None,     # with flip: no mirror view when the photo alone is this sure
    },
    "augment": {                    # defaults follow the first prototypes' ImageDataGenerator settings
        "enabled": True,
        "rotation": 40.0,           # degrees, +-
        "width_shift": 0.2,
        "height_shift": 0.2,
        "shear": 0.2,
        "zoom": 0.2,
        "horizontal_flip": True,
        "brightness": 0.2,
        "contrast": 0.2,
        "fill_mode": "reflect",
        "mixup": 0.0,               # Beta(a, a) mixing of image pairs and their labels; 0 = off
        "cutmix": 0.0,              # Beta(a, a) area of a pasted rectangle from another image; 0 = off
        # Runs with a make output: each photo is a random crop of itself covering this fraction of it,
        # before the warp above; make-only photos are whole scenes, so their crops reach further in.
        "scene_crop": {"class_area": [0.6, 1.0], "scene_area": [0.3, 1.0]},
    },
    "train": {
        "batch_size": 32,
        "optimizer": "adam",        # adam | adamw | sgd (momentum 0.9, Nesterov) | rmsprop
        "weight_decay": 0.0,        # decoupled weight decay (adamw, sgd)
        "clipnorm": None,           # clip each gradient to this global norm; null = off
        "label_smoothing": 0.0,
        "class_weights": True,
        "head_epochs": 5,           # phase 1: new head on the frozen backbone
        "head_on_features": False,  # phase 1 on cached backbone features (fast; flips only as augmentation)
        "head_lr": 1.0e-3,
        "fine_tune_epochs": 10,     # phase 2: top blocks unfrozen; 0 skips the phase
        "fine_tune_lr": 1.0e-4,
        "unfreeze_blocks": 4,
        "train_batchnorm": False,   # phase 2 also updates BatchNormalization (batch statistics and scale)
        "ema": 0.0,                 # exponential moving average of the weights (e.g. 0.999); 0 = off
        "schedule": "plateau",      # plateau (ReduceLROnPlateau) | cosine (per-step cosine decay)
        "warmup_epochs": 0,         # phase 2 linear warm-up (cosine schedule only)
        "monitor": "val_accuracy",
        "early_stopping_patience": 4,
        "reduce_lr_patience": 2,
        "reduce_lr_factor": 0.3,
        "min_lr": 1.0e-6,
        "adversarial_epsilon": 0.0,  # FGSM copy of every batch, pixel units 0..255; 0 = off
        "precision": "float32",     # float32 | mixed_float16 (GPUs) | mixed_bfloat16; export is float32
        "distribute": "none",       # none | mirrored (tf.distribute.MirroredStrategy over the local GPUs)
        "runs_dir": "runs",
        "verbose": 1,
    },
    # {name: folder,label CSV}: label groupings (make, segment) measured on val after training and stored
    # in the artifact (training/label_groupings.py); null for none.
    "groups": None,
    "export": {
        "out": None,
        "litert": True,
        "target_precision": 0.95,   # confidence threshold chosen on val for this precision
    },
}


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or YAML configuration file.

    Args:
        path: ``.json``, ``.yaml`` or ``.yml`` file.

    Returns:
        The parsed (partial) configuration.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    document = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ValueError(f"{path}: a configuration must be a mapping, got {type(document).__name__}")
    return document


def merge(base: dict[str, Any], override: dict[str, Any], *, where: str = "") -> dict[str, Any]:
    """Deep-merge ``override`` into a copy of ``base``, refusing keys that ``base`` does not know.

    Args:
        base: The defaults (or an earlier merge).
        override: Values to apply; ``None`` leaves nothing out - it is a value like any other.
        where: Dotted prefix used in error messages.

    Returns:
        The merged configuration.
    """
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in merged:
            raise KeyError(f"unknown configuration key {where + key!r}")
        if isinstance(merged[key], dict) and isinstance(value, dict):
            merged[key] = merge(merged[key], value, where=f"{where}{key}.")
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the full configuration: defaults, then the file, then explicit overrides.

    Args:
        config_file: Optional JSON/YAML file.
        overrides: Dotted keys (``"train.head_epochs"``) or nested dictionaries; ``None`` values skipped,
            which is how unset command-line options stay out.

    Returns:
        The resolved configuration.
    """
    config = copy.deepcopy(DEFAULTS)
    if config_file:
        config = merge(config, load_config_file(config_file))
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        nested: Any = value
        for part in reversed(dotted.split(".")):
            nested = {part: nested}
        config = merge(config, nested)
    return config


def complete(document: dict[str, Any]) -> dict[str, Any]:
    """Bring a configuration saved by an earlier version up to today's keys (for ``--resume`` and ``export``).

    Args:
        document: A resolved configuration read back from a run folder.

    Returns:
        The same configuration with renamed keys updated and keys added since filled from the defaults.
    """
    document = copy.deepcopy(document)
    train = document.get("train", {})
    if "mixed_precision" in train:  # a boolean before ``precision`` named the policy
        train["precision"] = "mixed_bfloat16" if train.pop("mixed_precision") else "float32"
    return merge(DEFAULTS, document)


def save_config(config: dict[str, Any], path: str | Path) -> Path:
    """Write the resolved configuration as YAML.

    Args:
        config: Resolved configuration.
        path: Destination file.

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
