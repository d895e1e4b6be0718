"""Command line: ``python -m training train|evaluate|export|group|tools|quantize|reproduce|gate|groups|tune|visualize``.

Every ``train`` option is also a configuration key (shown in brackets in ``--help``); an option given
on the command line beats the ``--config`` file, which beats the defaults in :mod:`training.config`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from training.export import add_refresh_parser
from training.gate import add_gate_parser
from training.label_groupings import add_groups_parser
from training.quantize import add_quantize_parser
from training.reproduce import add_reproduce_parser
from training.tools import add_tools_parser
from training.tune import add_tune_parser
from training.visualize import add_visualize_parser

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


def _add_train_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train", help="train a classifier and write the artifact the app loads",
        description="Two-phase transfer learning (head on the frozen backbone, then the top blocks), "
                    "evaluation on val, export to --out. Options override the --config file; the "
                    "[bracketed] name is the configuration key each option sets. Every epoch is "
                    "checkpointed with its optimizer state: --resume RUN continues a stopped run.")
    parser.add_argument("--config", metavar="FILE", help="JSON or YAML configuration (see training/configs/)")
    parser.add_argument("--resume", metavar="RUN", help="continue the run folder RUN from its last finished "
                        "epoch, with its own config.yaml (other options are ignored)")
    for group_name, options in TRAIN_OPTIONS.items():
        group = parser.add_argument_group(group_name)
        for flag, key, kwargs in options:
            described = {**kwargs, "help": f"{kwargs.get('help', '')} [{key}]".lstrip()}
            group.add_argument(flag, dest=key, default=None, **described)
    parser.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from training.config import resolve
    from training.train import run_training

    if args.resume:
        from training.train import resume_training

        resume_training(args.resume)
        return 0
    overrides = {key: getattr(args, key) for options in TRAIN_OPTIONS.values() for _, key, _ in options}
    config = resolve(args.config, overrides)
    run_training(config)
    return 0


def _subcommand(subparsers, name: str, handler, *, summary: str, description: str
                ) -> tuple[argparse.ArgumentParser, argparse._ArgumentGroup]:
    """Add a command; returns its parser and its "required" option group."""
    parser = subparsers.add_parser(name, help=summary, description=description)
    parser.set_defaults(handler=handler)
    return parser, parser.add_argument_group("required")


def _add_evaluate_parser(subparsers) -> None:
    parser, required = _subcommand(
        subparsers, "evaluate", _run_evaluate, summary="evaluate an artifact on a data split and write report/ beside it",
        description="Accuracy, top-5, classification report, confusion matrix, confidence threshold and "
                    "training curves, written to MODEL/report/.")
    required.add_argument("--model", required=True, metavar="DIR", help="artifact folder")
    required.add_argument("--data", required=True, metavar="DIR", help="data folder the model was trained on")
    options = parser.add_argument_group("evaluation")
    options.add_argument("--split", default="val", choices=["val", "test", "train"], help="split to evaluate")
    options.add_argument("--batch-size", type=int, default=32)
    options.add_argument("--target-precision", type=float, default=None,
                         help="precision for the confidence threshold (default: the artifact's)")
    options.add_argument("--update-metadata", action="store_true",
                         help="also store the new metrics and threshold in metadata.json")
    options.add_argument("--fgsm", metavar="EPS[,EPS...]", type=_epsilons, default=None,
                         help="also measure accuracy under FGSM perturbations of these sizes, in pixel units "
                              "0..255 (e.g. 0.5,1,2,4); writes robustness.json and example images")
    options.add_argument("--fgsm-limit", type=int, default=None, metavar="N",
                         help="run FGSM on the first N images of the split only")


def _run_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_artifact

    result = evaluate_artifact(args.model, args.data, split=args.split, batch_size=args.batch_size,
                               target_precision=args.target_precision, update_metadata=args.update_metadata,
                               fgsm=args.fgsm, fgsm_limit=args.fgsm_limit)
    metrics = result["metrics"]
    print(", ".join(f"{k}: {v:.4f}" if isinstance(v, float) else f"{k}: {v}" for k, v in metrics.items()))
    confidence = result["confidence"]
    if confidence["threshold"] is not None:
        print(f"confidence threshold {confidence['threshold']:.3f} keeps {confidence['coverage']:.1%} of answers "
              f"at {confidence['accuracy']:.1%} accuracy (target {confidence['target_precision']:.0%})")
    for row in result.get("robustness", {}).get("results", []):
        print(f"FGSM epsilon {row['epsilon']:g} ({row['fraction']:.4f} of the range): accuracy {row['accuracy']:.1%}, "
              f"{row['changed']:.1%} of answers changed")
    print(f"report written to {args.model}/report/")
    return 0


def _add_export_parser(subparsers) -> None:
    parser, required = _subcommand(
        subparsers, "export", _run_export, summary="write the artifact from the best checkpoint of a run folder",
        description="Evaluate and export the best checkpoint of RUN (for a run stopped before its last "
                    "epoch); configuration and data come from RUN/config.yaml.")
    required.add_argument("--run", required=True, metavar="RUN", help="run folder, e.g. runs/car-models-196-...")
    options = parser.add_argument_group("export")
    options.add_argument("--out", metavar="DIR", help="artifact folder (default: the run's export.out)")


def _run_export(args: argparse.Namespace) -> int:
    from training.train import export_run

    export_run(args.run, args.out)
    return 0


def _epsilons(text: str) -> list[float]:
    from training.robustness import parse_epsilons

    try:
        return parse_epsilons(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_group_parser(subparsers) -> None:
    parser, required = _subcommand(
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
    from training.grouped_artifact import group_artifact

    group_artifact(args.model, args.label_map, args.data, args.out, name=args.name, version=args.version,
                   target_precision=args.target_precision, litert=not args.no_litert)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with the ``train``, ``evaluate``, ``tools`` and ``gate`` commands."""
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train, evaluate and prepare data for the car-photo classifier.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_train_parser(subparsers)
    _add_evaluate_parser(subparsers)
    _add_export_parser(subparsers)
    _add_group_parser(subparsers)
    add_tools_parser(subparsers)
    add_quantize_parser(subparsers)
    add_reproduce_parser(subparsers)
    add_gate_parser(subparsers)
    add_groups_parser(subparsers)
    add_refresh_parser(subparsers)
    add_tune_parser(subparsers)
    add_visualize_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; returns the exit status."""
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


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
    from training.config import DEFAULTS
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
