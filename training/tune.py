"""The ``tune`` command: a KerasTuner search over the training options that matter, affordable on a CPU.

Training the whole network once per trial is out of reach on a few CPU cores (one ``train`` run of the
shipped preset takes 35-50 minutes), so the search runs on cached features instead:

1. The backbone is cut below its top ``--max-unfreeze`` blocks. Every photo goes through the bottom
   part once, fitted to the input and augmented as the configuration says at each searched
   augmentation strength, and the activations at the cut are kept in memory (float16).
2. Each trial builds the top blocks (ImageNet weights, BatchNormalization frozen as in ``train``) and a
   fresh head on those cached activations, trains the head (phase 1), then unfreezes the top
   ``unfreeze_blocks`` of them (phase 2), exactly the two phases of ``train`` but shorter.

What this approximates, and so what ``--help`` states: augmentation is one fixed augmented copy of each
training photo per strength (not a fresh draw every epoch); blocks below the cut never train, so
``unfreeze_blocks`` is searched only up to ``--max-unfreeze``; each phase runs ``--trial-epochs``
epochs instead of the configuration's; ``--train-per-class`` may train on a subset. Scores are val
accuracies under this protocol: they rank configurations, they are not the accuracy ``train`` reaches.

The output folder gets ``trials.csv`` (one row per trial), ``trials.png`` (score against trial) and
``best.yaml``: the full configuration with the best trial's values, which ``python -m training train
--config best.yaml`` takes as it is.
"""

from __future__ import annotations

import argparse
import copy
import csv
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import functools
import hashlib
import json

import numpy as np

from training.commands import command
from training.config import resolve, save_config

# TensorFlow, Keras and KerasTuner are imported inside the functions: registering this command's
# parser must not slow down every other ``python -m training`` command.

TRIALS_CSV = "trials.csv"
TRIALS_PLOT = "trials.png"
BEST_CONFIG = "best.yaml"
# Augmentation settings scaled by the searched strength; flips and the fill mode are kept as configured.
SCALED_AUGMENT_KEYS = ("rotation", "width_shift", "height_shift", "shear", "zoom", "brightness", "contrast")
# The augment settings that shape a cached view (batch-level mixing such as mixup never reaches it).
EXTRACTION_AUGMENT_KEYS = ("enabled", *SCALED_AUGMENT_KEYS, "horizontal_flip", "fill_mode")
# (name, what it sets in the configuration) for every searched value, in the order of trials.csv.
SEARCHED = (
    ("head_lr", "train.head_lr"),
    ("fine_tune_lr", "train.fine_tune_lr"),
    ("dropout", "model.dropout"),
    ("label_smoothing", "train.label_smoothing"),
    ("unfreeze_blocks", "train.unfreeze_blocks"),
    ("augment_strength", "augment.* x strength"),
)


def scaled_augment(settings: dict[str, Any], strength: float) -> dict[str, Any]:
    """The ``augment`` section with its ranges multiplied by ``strength`` (0 turns augmentation off).

    Args:
        settings: The configuration's ``augment`` section.
        strength: Multiplier; 1 keeps the configuration's own ranges.

    Returns:
        A new ``augment`` section.
    """
    scaled = copy.deepcopy(settings)
    if strength <= 0:
        scaled["enabled"] = False
        return scaled
    for key in SCALED_AUGMENT_KEYS:
        if key in scaled and scaled[key]:
            scaled[key] = round(float(scaled[key]) * strength, 4)
    return scaled


def split_backbone(backbone, block_pattern: str, top_blocks: int) -> tuple[Any, Any, list[str]]:
    """Cut a headless backbone below its top ``top_blocks`` blocks.

    Args:
        backbone: The headless backbone (from the registry).
        block_pattern: The registry entry's ``block_pattern``.
        top_blocks: How many blocks go above the cut.

    Returns:
        ``(bottom, top, names)``: the model from the image to the cut, the model from the cut to the
        backbone output (sharing the backbone's layers) and the top blocks' names, lowest first.
    """
    import keras

    from training.backbones import block_names

    names = block_names(backbone, block_pattern)
    ordered = list(dict.fromkeys(n for n in names if n is not None))
    top_names = ordered[-top_blocks:] if top_blocks > 0 else []
    if top_blocks >= len(ordered):
        raise ValueError(f"--max-unfreeze {top_blocks} leaves nothing below the cut ({len(ordered)} blocks)")
    cut_index = max(i for i, name in enumerate(names) if name not in top_names)
    cut = backbone.layers[cut_index].output
    bottom = keras.Model(backbone.input, cut, name="bottom")
    top = keras.Model(cut, backbone.output, name="top")
    return bottom, top, top_names


@dataclass
class FeatureCache:
    """Activations at the cut for every training view and the val photos.

    Attributes:
        train: ``{augment strength: float16 array (n, ...)}``; strength 0 is the un-augmented view.
        train_labels: Label index per training photo.
        val: float16 array of the val photos (never augmented).
        val_labels: Label index per val photo.
        sample_weights: Per training photo (class weights), or ``None``.
        num_classes: Output width.
        seconds: Time spent extracting.
    """

    train: dict[float, np.ndarray]
    train_labels: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray
    sample_weights: np.ndarray | None
    num_classes: int
    seconds: float


def extract(bottom, paths: list[str], labels: list[int], *, num_classes: int,
            image_size: tuple[int, int], resize_mode: str, batch_size: int, augment: dict[str, Any] | None,
            seed: int, verbose: int) -> np.ndarray:
    """Run photos through the bottom of the backbone once, optionally augmented, as ``train`` feeds them.

    Args:
        bottom: From :func:`split_backbone`, with the in-model preprocessing in front.
        paths: Image files.
        labels: Label per file.
        num_classes: For the pipeline's one-hot labels (unused here).
        image_size: ``(height, width)``.
        resize_mode: As in training.
        batch_size: Batch size of the pass.
        augment: An ``augment`` section, or ``None`` for the photos as they are.
        seed: Augmentation seed.
        verbose: Keras progress display.

    Returns:
        float16 activations, one row per photo, in order.
    """
    import keras
    import tensorflow as tf

    from training.pipeline import build_augmenter, make_dataset

    # Not the training mode of make_dataset: that shuffles, and the rows must stay in label order.
    ds = make_dataset(paths, labels, num_classes=num_classes, image_size=image_size, resize_mode=resize_mode,
                      batch_size=batch_size, cache=False, seed=seed)
    augmenter = build_augmenter(augment, seed=seed) if augment else None
    if augmenter is not None:
        ds = ds.map(lambda x, y: (tf.clip_by_value(augmenter(x, training=True), 0.0, 255.0), y))
    bar = keras.utils.Progbar(math.ceil(len(paths) / batch_size), verbose=verbose)
    parts = []
    for step, (images, _) in enumerate(ds, start=1):
        parts.append(np.asarray(bottom(images, training=False)).astype(np.float16))
        bar.update(step)
    return np.concatenate(parts)


def build_cache(config: dict[str, Any], bottom, strengths: list[float], *,
                train_per_class: int | None, verbose: int, cut: str = "",
                cache_dir: str | Path | None = None) -> FeatureCache:
    """Load the data as ``train`` does and extract the activations at the cut for every view.

    Args:
        config: Resolved configuration, ``model.image_size`` included
            (:func:`training.backbones.resolve_image_size`).
        bottom: The model up to the cut (preprocessing included).
        strengths: Augmentation strengths to cache a training view for.
        train_per_class: Training photos per class (``None``: the configuration's ``max_per_class``).
        verbose: Progress display.
        cut: Name of the layer at the cut (part of the disk cache's key).
        cache_dir: Where each view is also kept as ``.npy`` as soon as it is extracted, under a key of
            everything that shapes it (file list, backbone, weights, input, cut, augmentation, seed), so
            a later search over the same data starts from the disk; ``None`` keeps nothing.

    Returns:
        The :class:`FeatureCache`.
    """
    from training import data as data_lib

    started = time.monotonic()
    data_cfg, model_cfg, train_cfg = config["data"], config["model"], config["train"]
    dataset = data_lib.load_dataset(data_cfg["path"], label_map=data_cfg["label_map"], split=data_cfg["split"],
                                    seed=config["seed"],
                                    max_per_class=train_per_class or data_cfg["max_per_class"])
    num_classes = len(dataset.class_names)
    train_split, val_split = dataset.splits["train"], dataset.splits["val"]
    if not len(val_split):
        raise ValueError("the validation split is empty; tuning needs val photos to score trials")
    image_size = tuple(model_cfg["image_size"])
    common = dict(num_classes=num_classes, image_size=image_size, resize_mode=model_cfg["resize_mode"],
                  batch_size=train_cfg["batch_size"], seed=config["seed"], verbose=verbose)
    print(f"caching activations: {num_classes} classes, {len(train_split)} train photos x {len(strengths)} "
          f"augmentation strengths, {len(val_split)} val photos")
    folder = None
    if cache_dir is not None:
        key = {"files": data_lib.file_list_hash(dataset), "backbone": model_cfg["backbone"],
               "weights": str(model_cfg["weights"]), "image_size": list(image_size),
               "resize_mode": model_cfg["resize_mode"], "cut": cut,
               "augment": {k: v for k, v in config["augment"].items() if k in EXTRACTION_AUGMENT_KEYS},
               "seed": config["seed"]}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        folder = Path(cache_dir) / digest
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "key.json").write_text(json.dumps(key, indent=2) + "\n", encoding="utf-8")

    def view(name: str, paths: list[str], labels: list[int], augment: dict[str, Any] | None) -> np.ndarray:
        stored = folder / f"{name}.npy" if folder is not None else None
        if stored is not None and stored.is_file():
            print(f"{name}: read from {stored}")
            return np.load(stored)
        print(name)
        features = extract(bottom, paths, labels, augment=augment, **common)
        if stored is not None:
            np.save(stored, features)
        return features

    train = {}
    for strength in strengths:
        augment = scaled_augment(config["augment"], strength)
        train[strength] = view(f"train_strength_{strength:g}", train_split.paths, train_split.labels,
                               augment if augment.get("enabled", True) else None)
    val = view("val", val_split.paths, val_split.labels, None)
    weights = None
    if train_cfg["class_weights"]:
        table = data_lib.class_weights(train_split.labels, num_classes)
        weights = np.asarray([table[label] for label in train_split.labels], dtype="float32")
    return FeatureCache(train=train, train_labels=np.asarray(train_split.labels), val=val,
                        val_labels=np.asarray(val_split.labels), sample_weights=weights,
                        num_classes=num_classes, seconds=time.monotonic() - started)


def _search_space(hp, max_unfreeze: int, strengths: list[float]) -> dict[str, Any]:
    """Declare the searched values on ``hp`` and return this trial's choice of each."""
    return {
        "head_lr": hp.Float("head_lr", 3e-4, 1e-2, sampling="log"),
        "fine_tune_lr": hp.Float("fine_tune_lr", 1e-5, 3e-4, sampling="log"),
        "dropout": hp.Float("dropout", 0.0, 0.5, step=0.1),
        "label_smoothing": hp.Float("label_smoothing", 0.0, 0.2, step=0.05),
        "unfreeze_blocks": hp.Int("unfreeze_blocks", 0, max_unfreeze),
        "augment_strength": hp.Choice("augment_strength", strengths),
    }


@functools.cache
def _keras_classes():
    """The Keras callback and the KerasTuner hypermodel of this command, defined on first use."""
    import keras
    import keras_tuner

    from training.backbones import block_names

    class Deadline(keras.callbacks.Callback):
        """Stops training at a wall-clock deadline (``time.monotonic()`` value), so the search ends on time."""

        def __init__(self, deadline: float):
            super().__init__()
            self.deadline = deadline

        def on_train_batch_end(self, batch, logs=None):
            if time.monotonic() >= self.deadline:
                self.model.stop_training = True

    class CachedFeatureHyperModel(keras_tuner.HyperModel):
        """Builds and trains one trial on the cached activations (a ``keras_tuner.HyperModel``).

        Args:
            top: The backbone above the cut (its weights are copied into every trial's own layers).
            top_names: The top blocks, lowest first.
            block_pattern: The backbone's block regex, to find each layer's block.
            cache: The cached activations.
            pretrained: Whether the backbone has learned weights (then BatchNormalization stays frozen).
            config: Resolved configuration (batch size, optimizer).
            trial_epochs: Epochs of each phase.
            max_unfreeze: Upper bound of ``unfreeze_blocks``.
            deadline: ``time.monotonic()`` at which training stops.
            verbose: Keras progress display per epoch.
        """

        def __init__(self, top, top_names: list[str], block_pattern: str, cache: FeatureCache, *,
                     pretrained: bool, config: dict[str, Any], trial_epochs: int, max_unfreeze: int,
                     deadline: float, verbose: int):
            super().__init__(name="cached_features", tunable=True)
            self.top_weights = top.get_weights()
            self.top = top
            self.top_names = top_names
            self.block_pattern = block_pattern
            self.cache = cache
            self.pretrained = pretrained
            self.config = config
            self.trial_epochs = trial_epochs
            self.max_unfreeze = max_unfreeze
            self.deadline = deadline
            self.verbose = verbose

        def build(self, hp) -> keras.Model:
            """A fresh copy of the top blocks plus a new head, compiled for phase 1 (top blocks frozen)."""
            values = _search_space(hp, self.max_unfreeze, sorted(self.cache.train))
            top = keras.models.clone_model(self.top)
            top.set_weights(self.top_weights)
            top.trainable = False
            inputs = keras.Input(self.cache.val.shape[1:], name="activations")
            x = top(inputs, training=False) if self.pretrained else top(inputs)
            x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
            if values["dropout"]:
                x = keras.layers.Dropout(values["dropout"], name="dropout")(x)
            x = keras.layers.Dense(self.cache.num_classes, name="logits")(x)
            outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(x)
            model = keras.Model(inputs, outputs, name="trial")
            self._compile(model, values["head_lr"], values["label_smoothing"])
            return model

        def _compile(self, model: keras.Model, learning_rate: float, label_smoothing: float) -> None:
            from training.train import _optimizer

            model.compile(optimizer=_optimizer(self.config["train"], learning_rate),
                          loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
                          metrics=["accuracy"])

        def _unfreeze(self, model: keras.Model, blocks: int) -> None:
            top = next(layer for layer in model.layers if isinstance(layer, keras.Model))
            chosen = set(self.top_names[-blocks:]) if blocks > 0 else set()
            top.trainable = bool(chosen)
            for layer, block in zip(top.layers, block_names(top, self.block_pattern)):
                is_norm = isinstance(layer, keras.layers.BatchNormalization)
                layer.trainable = block in chosen and not (is_norm and self.pretrained)

        def fit(self, hp, model: keras.Model, *args, **kwargs) -> float:
            """Phase 1 (head), then phase 2 (top ``unfreeze_blocks`` opened); returns the best val accuracy."""
            values = _search_space(hp, self.max_unfreeze, sorted(self.cache.train))
            features = self.cache.train[values["augment_strength"]]
            labels = keras.utils.to_categorical(self.cache.train_labels, self.cache.num_classes)
            val = (self.cache.val, keras.utils.to_categorical(self.cache.val_labels, self.cache.num_classes))
            batch_size = self.config["train"]["batch_size"]
            common = dict(x=features, y=labels, sample_weight=self.cache.sample_weights, validation_data=val,
                          batch_size=batch_size, shuffle=True, verbose=self.verbose,
                          callbacks=[Deadline(self.deadline), *kwargs.get("callbacks", [])])
            history = model.fit(epochs=self.trial_epochs, **common)
            scores = list(history.history.get("val_accuracy", []))
            if values["unfreeze_blocks"] > 0 and time.monotonic() < self.deadline:
                self._unfreeze(model, values["unfreeze_blocks"])
                self._compile(model, values["fine_tune_lr"], values["label_smoothing"])
                history = model.fit(epochs=2 * self.trial_epochs, initial_epoch=self.trial_epochs, **common)
                scores += list(history.history.get("val_accuracy", []))
            return float(max(scores)) if scores else 0.0

    return Deadline, CachedFeatureHyperModel


def best_config(config: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """The configuration with a trial's values in place (what ``best.yaml`` holds).

    Args:
        config: The resolved configuration the search started from.
        values: One trial's hyperparameter values.

    Returns:
        A full configuration for ``train``.
    """
    best = copy.deepcopy(config)
    best["train"]["head_lr"] = float(f"{values['head_lr']:.3g}")
    best["train"]["fine_tune_lr"] = float(f"{values['fine_tune_lr']:.3g}")
    best["model"]["dropout"] = round(float(values["dropout"]), 3)
    best["train"]["label_smoothing"] = round(float(values["label_smoothing"]), 3)
    best["train"]["unfreeze_blocks"] = int(values["unfreeze_blocks"])
    best["augment"] = scaled_augment(config["augment"], float(values["augment_strength"]))
    return best


def write_trials(rows: list[dict[str, Any]], out_dir: Path, baseline: float | None) -> tuple[Path, Path]:
    """Write ``trials.csv`` and ``trials.png`` (score of each trial, the best so far, the baseline).

    Args:
        rows: One dictionary per trial (``trial``, ``score``, ``seconds`` and the searched values).
        out_dir: Output folder.
        baseline: The starting configuration's score under the same protocol, drawn as a line.

    Returns:
        The two paths.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    csv_path = out_dir / TRIALS_CSV
    fields = ["trial", "score", "seconds", *[name for name, _ in SEARCHED]]
    with open(csv_path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({key: row.get(key) for key in fields})
    numbers = [row["trial"] for row in rows]
    scores = [row["score"] for row in rows]
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    axis.plot(numbers, scores, "o", label="trial")
    axis.plot(numbers, np.maximum.accumulate(scores) if scores else [], "-", label="best so far")
    if baseline is not None:
        axis.axhline(baseline, color="grey", linestyle="--", label="starting configuration")
    axis.set_xlabel("trial")
    axis.set_ylabel("val accuracy (search protocol)")
    axis.set_title("Hyper-parameter search")
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize="small")
    figure.tight_layout()
    plot_path = out_dir / TRIALS_PLOT
    figure.savefig(plot_path)
    plt.close(figure)
    return csv_path, plot_path


def run_tune(config: dict[str, Any], out_dir: str | Path, *, trials: int, max_minutes: float,
             max_unfreeze: int = 2, trial_epochs: int = 3, train_per_class: int | None = None,
             strengths: tuple[float, ...] = (0.0, 0.5, 1.0), baseline: bool = True,
             cache_dir: str | Path | None = None, verbose: int = 1) -> dict[str, Any]:
    """Run the search and write ``trials.csv``, ``trials.png``, ``best.yaml`` and ``summary.json``.

    Args:
        config: Resolved configuration (``data.path`` set).
        out_dir: Output folder (KerasTuner's own trial files go to ``out_dir/tuner``).
        trials: Most trials.
        max_minutes: Wall-clock budget of the whole command, feature extraction included.
        max_unfreeze: Blocks above the cut, the upper bound of ``unfreeze_blocks``.
        trial_epochs: Epochs of each phase of a trial.
        train_per_class: Training photos per class (``None``: all, or the configuration's cap).
        strengths: Augmentation strengths searched (a cached view each).
        baseline: Also score the starting configuration's own values under the same protocol.
        cache_dir: Keep the activations on disk here and reuse them (see :func:`build_cache`).
        verbose: Keras progress display (1: a bar per epoch, 2: a line per epoch).

    Returns:
        ``{"best": values, "best_score", "baseline_score", "trials": rows, "wall_time_s", "out_dir"}``.
    """
    import keras
    import keras_tuner

    from training.backbones import get_backbone, preprocessing_layer, resolve_image_size
    from training.model import _backbone_weights, _copy_backbone_weights, is_pretrained

    _, CachedFeatureHyperModel = _keras_classes()
    started = time.monotonic()
    deadline = started + max_minutes * 60
    if not config["data"]["path"]:
        raise ValueError("no data folder: pass --data or set data.path in the config")
    config = resolve_image_size(config)  # best.yaml then names the size the trials ran at
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config["seed"])
    model_cfg = config["model"]
    entry = get_backbone(model_cfg["backbone"])
    image_size = tuple(model_cfg["image_size"])
    pretrained = is_pretrained(model_cfg["weights"])
    backbone = entry.build(_backbone_weights(model_cfg["weights"]), (*image_size, 3))
    if model_cfg["weights"] and str(model_cfg["weights"]).endswith(".keras"):
        _copy_backbone_weights(backbone, str(model_cfg["weights"]))
    bottom, top, top_names = split_backbone(backbone, entry.block_pattern, max_unfreeze)
    images = keras.Input((*image_size, 3), name="image")
    preprocess = preprocessing_layer(entry.preprocessing)
    bottom_with_preprocessing = keras.Model(images, bottom(preprocess(images) if preprocess else images))
    cache = build_cache(config, bottom_with_preprocessing, sorted(set(strengths)),
                        train_per_class=train_per_class, verbose=verbose, cut=bottom.layers[-1].name,
                        cache_dir=cache_dir)
    print(f"activations cached in {cache.seconds:.0f} s: {cache.val.shape[1:]} per photo at the cut below "
          f"blocks {', '.join(top_names) or '(none)'}")

    hypermodel = CachedFeatureHyperModel(top, top_names, entry.block_pattern, cache, pretrained=pretrained,
                                         config=config, trial_epochs=trial_epochs, max_unfreeze=max_unfreeze,
                                         deadline=deadline, verbose=verbose)
    baseline_score = None
    if baseline:
        start_values = {"head_lr": config["train"]["head_lr"], "fine_tune_lr": config["train"]["fine_tune_lr"],
                        "dropout": config["model"]["dropout"],
                        "label_smoothing": config["train"]["label_smoothing"],
                        "unfreeze_blocks": min(config["train"]["unfreeze_blocks"], max_unfreeze),
                        "augment_strength": 1.0 if config["augment"].get("enabled", True) else 0.0}
        hp = keras_tuner.HyperParameters()
        _search_space(hp, max_unfreeze, sorted(cache.train))
        for name, value in start_values.items():
            hp.values[name] = value
        if start_values["augment_strength"] in cache.train:
            print(f"scoring the starting configuration: {start_values}")
            baseline_score = hypermodel.fit(hp, hypermodel.build(hp))
            print(f"starting configuration: val accuracy {baseline_score:.4f} (search protocol)")

    tuner = keras_tuner.BayesianOptimization(
        hypermodel, objective=keras_tuner.Objective("val_accuracy", direction="max"), max_trials=trials,
        seed=config["seed"], directory=str(out_dir), project_name="tuner", overwrite=True)
    tuner.search_space_summary()
    timing: dict[str, float] = {}
    # Wrapped rather than subclassed: each trial's seconds are recorded, and once the budget is spent
    # the oracle is told that the trials so far were all it may hand out.
    original_begin, original_end = tuner.on_trial_begin, tuner.on_trial_end

    def on_trial_begin(trial):
        timing[trial.trial_id] = time.monotonic()
        original_begin(trial)

    def on_trial_end(trial):
        timing[trial.trial_id] = time.monotonic() - timing[trial.trial_id]
        original_end(trial)
        if time.monotonic() >= deadline:
            # The oracle hands out no trial beyond max_trials: the search ends after this one.
            tuner.oracle.max_trials = len(tuner.oracle.trials)
            print(f"time budget of {max_minutes:g} min spent: search stopped")

    tuner.on_trial_begin, tuner.on_trial_end = on_trial_begin, on_trial_end
    if time.monotonic() < deadline:
        tuner.search()

    rows = []
    for number, trial in enumerate(sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id)), start=1):
        if trial.score is None:
            continue
        rows.append({"trial": number, "score": round(float(trial.score), 4),
                     "seconds": round(timing.get(trial.trial_id, 0.0), 1), **trial.hyperparameters.values})
    if not rows:
        raise RuntimeError(f"no trial finished within {max_minutes:g} minutes; raise --max-minutes")
    write_trials(rows, out_dir, baseline_score)
    best_row = max(rows, key=lambda row: row["score"])
    best = best_config(config, best_row)
    save_config(best, out_dir / BEST_CONFIG)
    wall_time = time.monotonic() - started
    summary = {"best": {name: best_row[name] for name, _ in SEARCHED}, "best_trial": best_row["trial"],
               "best_score": best_row["score"], "baseline_score": baseline_score, "trials": len(rows),
               "wall_time_s": round(wall_time, 1), "feature_cache_s": round(cache.seconds, 1),
               "train_photos": int(len(cache.train_labels)), "val_photos": int(len(cache.val_labels)),
               "max_unfreeze": max_unfreeze, "trial_epochs": trial_epochs,
               "augment_strengths": sorted(cache.train)}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    verdict = ("" if baseline_score is None else
               f"; starting configuration {baseline_score:.4f}")
    print(f"{len(rows)} trials in {wall_time:.0f} s; best trial {best_row['trial']}: val accuracy "
          f"{best_row['score']:.4f}{verdict}; wrote {out_dir / TRIALS_CSV}, {out_dir / TRIALS_PLOT}, "
          f"{out_dir / BEST_CONFIG}")
    return {**summary, "out_dir": out_dir, "rows": rows}


@command("tune")
def add_tune_parser(subparsers) -> None:
    """Register ``python -m training tune``."""
    parser = subparsers.add_parser(
        "tune", help="search learning rates, dropout, label smoothing, unfrozen blocks and augmentation",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "KerasTuner Bayesian optimisation over head_lr, fine_tune_lr, dropout, label_smoothing,\n"
            "unfreeze_blocks (0..--max-unfreeze) and the augmentation strength (a multiplier on the\n"
            "config's augment ranges), starting from --config.\n\n"
            "What is approximated, to make a search affordable on a few CPU cores:\n"
            "  - the backbone below its top --max-unfreeze blocks runs once per photo; trials train on\n"
            "    those cached activations, so unfreeze_blocks is searched only up to --max-unfreeze;\n"
            "  - augmentation is ONE fixed augmented copy of each training photo per strength, not a\n"
            "    fresh draw every epoch;\n"
            "  - each phase runs --trial-epochs epochs (not the config's), with a constant learning rate;\n"
            "  - --train-per-class N trains on a subset.\n"
            "Scores are val accuracies under this protocol: they rank configurations, they are not what\n"
            "train reaches. Writes OUT/trials.csv, OUT/trials.png and OUT/best.yaml, which\n"
            "'python -m training train --config OUT/best.yaml' takes as it is."))
    required = parser.add_argument_group("required")
    required.add_argument("--config", required=True, metavar="FILE", help="starting configuration (JSON or YAML)")
    required.add_argument("--data", required=True, metavar="DIR", help="data folder, as for train")
    search = parser.add_argument_group("search")
    search.add_argument("--trials", type=int, default=10, metavar="N", help="most trials (default 10)")
    search.add_argument("--max-minutes", type=float, default=20.0, metavar="M",
                        help="wall-clock budget, feature caching included; the running trial is cut "
                             "short at the limit (default 20)")
    search.add_argument("--max-unfreeze", type=int, default=2, metavar="B",
                        help="backbone blocks above the cut: unfreeze_blocks is searched in 0..B (default 2)")
    search.add_argument("--trial-epochs", type=int, default=3, metavar="E", help="epochs per phase (default 3)")
    search.add_argument("--train-per-class", type=int, default=None, metavar="N",
                        help="at most N training photos per class (default: all)")
    search.add_argument("--strengths", type=float, nargs="+", default=[0.0, 0.5, 1.0], metavar="S",
                        help="augmentation strengths to choose from (default 0 0.5 1)")
    search.add_argument("--cache-dir", metavar="DIR",
                        help="also keep the cached activations here (.npy, float16) and reuse them on the "
                             "next search over the same data, backbone, input and augmentation")
    search.add_argument("--no-baseline", action="store_true",
                        help="skip scoring the starting configuration under the same protocol")
    model = parser.add_argument_group("model")
    model.add_argument("--weights", metavar="imagenet|none|PATH", help="override model.weights of the config")
    model.add_argument("--backbone", help="override model.backbone of the config")
    model.add_argument("--image-size", type=int, nargs=2, metavar=("H", "W"), help="override model.image_size")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default="runs/tune", metavar="DIR", help="output folder (default runs/tune)")
    output.add_argument("--quiet", action="store_const", const=2, default=1, dest="verbose",
                        help="one line per epoch, no progress bar")
    parser.set_defaults(handler=_run_tune)


def _run_tune(args: argparse.Namespace) -> int:
    overrides = {"data.path": args.data, "model.weights": args.weights, "model.backbone": args.backbone,
                 "model.image_size": args.image_size}
    config = resolve(args.config, overrides)
    run_tune(config, args.out, trials=args.trials, max_minutes=args.max_minutes, max_unfreeze=args.max_unfreeze,
             trial_epochs=args.trial_epochs, train_per_class=args.train_per_class, strengths=tuple(args.strengths),
             baseline=not args.no_baseline, cache_dir=args.cache_dir, verbose=args.verbose)
    return 0
