"""The options of ``python -m training train``, each bound to a configuration key, and the command line that
reproduces a configuration from them.

The export records that command in an artifact's metadata, so this table is read by the export as well as
by the command line; it imports only :mod:`training.config`.
"""

from __future__ import annotations

from typing import Any

from training.config import DEFAULTS

# (flag, config key, argparse keyword arguments) for every training option, by help group.
TRAIN_OPTIONS: dict[str, list[tuple[str, str, dict[str, Any]]]] = {
    "data": [
        ("--data", "data.path", {"metavar": "DIR", "help": "data folder: DIR/<class>/*.jpg, optionally "
                                 "with train/ val/ test/ sub-folders"}),
        ("--label-map", "data.label_map", {"metavar": "CSV", "help": "folder,label CSV grouping class "
                                           "folders into coarser labels"}),
        ("--split", "data.split", {"type": float, "nargs": "+", "metavar": "F",
                                   "help": "train val [test] fractions when DIR has no train/ val/ (default 0.7 0.15 0.15)"}),
        ("--seed", "seed", {"type": int, "help": "seed for the split, shuffling and augmentation (default 42)"}),
        ("--max-per-class", "data.max_per_class", {"type": int, "metavar": "N",
                                                   "help": "use at most N training images per class folder"}),
        ("--class-makes", "data.class_makes", {"metavar": "CSV", "help": "folder,label CSV giving each class its "
                                               "make: adds a make output beside the classes"}),
        ("--make-data", "data.make_data", {"metavar": "DIR", "help": "photos labelled by make only: DIR/train/<Make>/, "
                                           "DIR/val/<Make>/ (they teach the make output alone)"}),
        ("--other-makes", "data.other_makes", {"metavar": "DIR", "help": "photos of makes to answer as 'Other make': "
                                               "DIR/train/<Brand>/, DIR/val/<Brand>/"}),
        ("--make-share", "data.make_share", {"type": float, "metavar": "F",
                                             "help": "share of each training batch drawn from the make-only photos "
                                             "(default 0.5)"}),
    ],
    "model": [
        ("--backbone", "model.backbone", {"help": "backbone registry name (default mobilenet_v1_0.75)"}),
        ("--weights", "model.weights", {"metavar": "imagenet|none|PATH",
                                        "help": "initial backbone weights: ImageNet (Keras download / "
                                        "KERAS_HOME cache), none, a weights file or a model.keras to start from"}),
        ("--image-size", "model.image_size", {"type": int, "nargs": 2, "metavar": ("H", "W"),
                                              "help": "input size (default: the backbone's)"}),
        ("--resize-mode", "model.resize_mode", {"choices": ["center_crop", "stretch", "pad"],
                                                "help": "how photos are fitted to the input, in training and in the app"}),
        ("--dropout", "model.dropout", {"type": float, "help": "dropout before the classifier (default 0.2)"}),
        ("--l2", "model.l2", {"type": float, "help": "L2 penalty on the classifier kernel (default 0)"}),
        ("--hidden-units", "model.hidden_units", {"type": int, "help": "ReLU layer before the classifier (default 0: none)"}),
        ("--tta", "model.tta", {"choices": ["none", "flip"],
                                "help": "test-time augmentation the app applies: flip averages the photo "
                                "and its mirror image (one batch-of-2 invocation)"}),
        ("--tta-skip-above", "model.tta_skip_above", {
            "type": float, "metavar": "P", "help": "with --tta flip, skip the mirror image when the photo alone "
            "scores P or more in every output (default: never; `python -m training tta` chooses one)"}),
    ],
    "training": [
        ("--epochs", "train.head_epochs", {"type": int, "help": "phase 1 epochs: head on the frozen backbone"}),
        ("--head-on-features", "train.head_on_features", {"action": "store_const", "const": True,
                                                          "help": "phase 1 on backbone features computed once "
                                                          "(many head epochs for the price of one; flips are "
                                                          "the only augmentation it sees)"}),
        ("--fine-tune-epochs", "train.fine_tune_epochs", {"type": int, "help": "phase 2 epochs (0 skips it)"}),
        ("--unfreeze-blocks", "train.unfreeze_blocks", {"type": int, "metavar": "N",
                                                        "help": "top backbone blocks trained in phase 2"}),
        ("--train-batchnorm", "train.train_batchnorm", {"action": "store_const", "const": True,
                                                        "help": "phase 2 also trains BatchNormalization "
                                                        "(batch statistics); best with batches of 32 or more"}),
        ("--ema", "train.ema", {"type": float, "metavar": "MOMENTUM",
                                "help": "keep an exponential moving average of the weights, e.g. 0.999"}),
        ("--lr", "train.head_lr", {"type": float, "help": "phase 1 learning rate"}),
        ("--fine-tune-lr", "train.fine_tune_lr", {"type": float, "help": "phase 2 learning rate (lower)"}),
        ("--batch-size", "train.batch_size", {"type": int}),
        ("--optimizer", "train.optimizer", {"choices": ["adam", "adamw", "sgd", "rmsprop"],
                                            "help": "sgd uses Nesterov momentum 0.9"}),
        ("--weight-decay", "train.weight_decay", {"type": float, "help": "decoupled weight decay (adamw, sgd)"}),
        ("--clipnorm", "train.clipnorm", {"type": float, "help": "clip gradients to this global norm"}),
        ("--schedule", "train.schedule", {"choices": ["plateau", "cosine"],
                                          "help": "ReduceLROnPlateau or per-step cosine decay"}),
        ("--warmup-epochs", "train.warmup_epochs", {"type": int, "help": "phase 2 linear warm-up (cosine only)"}),
        ("--label-smoothing", "train.label_smoothing", {"type": float}),
        ("--patience", "train.early_stopping_patience", {"type": int, "help": "early-stopping patience (epochs)"}),
        ("--no-class-weights", "train.class_weights", {"action": "store_const", "const": False,
                                                       "help": "do not weight classes by inverse frequency"}),
        ("--no-augment", "augment.enabled", {"action": "store_const", "const": False,
                                             "help": "train without augmentation"}),
        ("--mixup", "augment.mixup", {"type": float, "metavar": "ALPHA",
                                      "help": "mix image pairs and their labels, weight ~ Beta(ALPHA, ALPHA)"}),
        ("--cutmix", "augment.cutmix", {"type": float, "metavar": "ALPHA",
                                        "help": "paste a rectangle of another image, area ~ Beta(ALPHA, ALPHA)"}),
        ("--precision", "train.precision", {"choices": ["float32", "mixed_float16", "mixed_bfloat16"],
                                            "help": "compute precision: mixed_float16 pays on GPUs, both mixed "
                                            "policies are slower on most CPUs; the exported model is float32"}),
        ("--distribute", "train.distribute", {"choices": ["none", "mirrored"],
                                              "help": "mirrored: data-parallel over every local GPU "
                                              "(tf.distribute.MirroredStrategy)"}),
        ("--adversarial", "train.adversarial_epsilon", {"type": float, "metavar": "EPS",
                                                       "help": "also train on an FGSM copy of every batch, "
                                                       "EPS in pixel units 0..255 (default 0: off)"}),
        ("--runs-dir", "train.runs_dir", {"metavar": "DIR", "help": "where run folders go (default runs/)"}),
        ("--quiet", "train.verbose", {"action": "store_const", "const": 2, "help": "one line per epoch, no progress bar"}),
    ],
    "output": [
        ("--out", "export.out", {"metavar": "DIR", "help": "artifact folder the app loads (default RUN/artifact)"}),
        ("--name", "name", {"help": "model name stored in the metadata"}),
        ("--version", "version", {"help": "model version stored in the metadata"}),
        ("--no-litert", "export.litert", {"action": "store_const", "const": False,
                                          "help": "skip the model.tflite serving copy"}),
        ("--target-precision", "export.target_precision", {"type": float,
                                                           "help": "precision the confidence threshold is chosen for on val (default 0.95)"}),
    ],
}


def reproduce_command(training_config: dict[str, Any]) -> str | None:
    """The ``python -m training train`` command line that reproduces the recorded configuration.

    Only options that differ from the defaults are written. The export records it in the metadata
    (``training_config.command``), where the model card shows it without importing this package.

    Args:
        training_config: The ``training_config`` section of the metadata (its ``config`` is read).

    Returns:
        The command, or ``None`` when no configuration was recorded.
    """
    config = training_config.get("config") if isinstance(training_config, dict) else None
    if not isinstance(config, dict):
        return None
    parts = ["python -m training train"]
    for options in TRAIN_OPTIONS.values():
        for flag, key, kwargs in options:
            value, default = _lookup(config, key), _lookup(DEFAULTS, key)
            if value is None or value == default:
                continue
            if "const" in kwargs:  # a switch such as --no-augment
                if value == kwargs["const"]:
                    parts.append(flag)
                continue
            shown = " ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else str(value)
            parts.append(f"{flag} {_quote(shown)}")
    return " \\\n    ".join(parts)


def _lookup(config: dict[str, Any], dotted: str) -> Any:
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _quote(text: str) -> str:
    return f"'{text}'" if any(ch in text for ch in " '\"$") else text
