"""The ``train`` command: data -> two-phase transfer learning -> evaluation on val -> artifact.

A run folder (``runs/<name>-<timestamp>/``) receives the resolved configuration, the split file list,
the best checkpoint of each phase, the CSV history and the TensorBoard logs; the artifact folder given
by ``--out`` receives only what the app needs plus ``report/``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from training import data as data_lib
from training import evaluate as evaluate_lib
from training import export as export_lib
from training import makes as makes_lib
from training.backbones import describe_preprocessing, get_backbone, resolve_image_size
from training.commands import command, subcommand
from training.config import save_config
from training.model import (CLASS_OUTPUT, MAKE_OUTPUT, build_model, count_params, has_make_head, inference_copy,
                            is_pretrained, load_weights_into, unfreeze_model)
from training.options import TRAIN_OPTIONS
from training.pipeline import build_augmenter, make_dataset, make_multitask_dataset
from training.robustness import enable_adversarial_training

HISTORY_FILE = "history.csv"


def _optimizer(train_cfg: dict[str, Any], learning_rate) -> keras.optimizers.Optimizer:
    """The configured optimizer, with optional weight EMA and gradient clipping."""
    name = train_cfg["optimizer"]
    common: dict[str, Any] = {"clipnorm": train_cfg.get("clipnorm")}
    if train_cfg.get("ema"):
        common.update(use_ema=True, ema_momentum=float(train_cfg["ema"]))
    decay = train_cfg.get("weight_decay") or None
    if name == "adam":
        return keras.optimizers.Adam(learning_rate, **common)
    if name == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=decay or 0.004, **common)
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True, weight_decay=decay, **common)
    if name == "rmsprop":
        return keras.optimizers.RMSprop(learning_rate, **common)
    raise ValueError(f"unknown optimizer {name!r}; use adam, adamw, sgd or rmsprop")


def _compile(model: keras.Model, train_cfg: dict[str, Any], learning_rate, num_classes: int) -> None:
    metrics: list[Any] = ["accuracy"]
    if num_classes > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5"))
    if has_make_head(model):
        # Sample weights carry the partial labels (a photo without a class weighs 0 for the class output),
        # so the metrics are weighted too: class accuracy counts only photos that have a class.
        smoothing = train_cfg["label_smoothing"]
        model.compile(optimizer=_optimizer(train_cfg, learning_rate),
                      loss=[keras.losses.CategoricalCrossentropy(label_smoothing=smoothing),
                            keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)],
                      weighted_metrics=[metrics, ["accuracy"]])
        return
    model.compile(
        optimizer=_optimizer(train_cfg, learning_rate),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=train_cfg["label_smoothing"]),
        metrics=metrics,
    )


def _learning_rate(train_cfg: dict[str, Any], peak: float, epochs: int, steps_per_epoch: int,
                   warmup_epochs: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """A constant rate (plateau schedule) or a per-step cosine decay with an optional linear warm-up.

    The warm-up matters when blocks are unfrozen: Adam's first steps are full-size for every weight,
    which knocks pretrained layers off before the moment estimates settle.
    """
    if train_cfg["schedule"] != "cosine":
        return peak
    warmup_steps = warmup_epochs * steps_per_epoch
    decay_steps = max(1, epochs * steps_per_epoch - warmup_steps)
    alpha = min(1.0, train_cfg["min_lr"] / peak)
    if warmup_steps:
        return keras.optimizers.schedules.CosineDecay(peak * 0.01, decay_steps, alpha=alpha,
                                                      warmup_target=peak, warmup_steps=warmup_steps)
    return keras.optimizers.schedules.CosineDecay(peak, decay_steps, alpha=alpha)


class BothOutputsScore(keras.callbacks.Callback):
    """Logs ``val_score``: the mean of the class and the make output's validation accuracy.

    It must come before the callbacks that read the monitored value (they share the ``logs`` dict), so
    that early stopping and the best checkpoint weigh both outputs.
    """

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        parts = [logs.get(f"val_{CLASS_OUTPUT}_accuracy"), logs.get(f"val_{MAKE_OUTPUT}_accuracy")]
        if all(part is not None for part in parts):
            logs["val_score"] = float(sum(parts) / 2)


def _callbacks(run_dir: Path, phase: str, train_cfg: dict[str, Any], best_so_far: float | None = None
               ) -> tuple[list[keras.callbacks.Callback], Path]:
    """Backup, early stopping, best checkpoint, LR schedule, CSV and TensorBoard logs for one phase.

    Args:
        run_dir: The run folder.
        phase: ``head`` or ``fine_tune``.
        train_cfg: The ``train`` section.
        best_so_far: The monitored value of the phase's best epoch before a resume, so the best
            checkpoint is only replaced by a better epoch.

    Returns:
        The callbacks and the path of the phase's best checkpoint.
    """
    monitor = train_cfg["monitor"]
    mode = "max" if higher_is_better(monitor) else "min"
    checkpoint = run_dir / "checkpoints" / f"{phase}.best.weights.h5"
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    callbacks: list[keras.callbacks.Callback] = [BothOutputsScore()] if monitor == "val_score" else []
    callbacks += [
        # Every epoch, with the optimizer state and the epoch number: what --resume continues from.
        keras.callbacks.BackupAndRestore(str(run_dir / "backup" / phase), save_freq="epoch"),
        keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=train_cfg["early_stopping_patience"],
                                      restore_best_weights=True, verbose=1),
    ]
    if train_cfg.get("ema"):
        # Validation and the checkpoints below see the averaged weights, the ones that get exported.
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    callbacks += [
        keras.callbacks.ModelCheckpoint(str(checkpoint), monitor=monitor, mode=mode, save_best_only=True,
                                        save_weights_only=True, verbose=0, initial_value_threshold=best_so_far),
        keras.callbacks.CSVLogger(str(run_dir / HISTORY_FILE), append=True),
        keras.callbacks.TensorBoard(log_dir=str(run_dir / "tensorboard" / phase), histogram_freq=0,
                                    write_graph=False, profile_batch=0),
    ]
    if train_cfg["schedule"] == "plateau":
        callbacks.append(keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, mode=mode, factor=train_cfg["reduce_lr_factor"], patience=train_cfg["reduce_lr_patience"],
            min_lr=train_cfg["min_lr"], verbose=1))
    elif train_cfg["schedule"] != "cosine":  # cosine lives in the optimizer, see _learning_rate
        raise ValueError(f"unknown schedule {train_cfg['schedule']!r}; use plateau or cosine")
    return callbacks, checkpoint


def head_options(model_cfg: dict[str, Any], makes: makes_lib.MakeData | None = None) -> dict[str, Any]:
    """The head arguments of :func:`training.model.build_model` from the ``model`` section (and the makes)."""
    return {"dropout": model_cfg["dropout"], "l2": model_cfg["l2"], "hidden_units": model_cfg["hidden_units"],
            "make_classes": len(makes.labels) if makes else 0}


def higher_is_better(monitor: str) -> bool:
    """Whether a larger value of the monitored quantity is better (accuracies and ``val_score``)."""
    return "acc" in monitor or monitor.endswith("score")


def _best(history: keras.callbacks.History, monitor: str) -> float:
    values = history.history.get(monitor, [])
    if not values:
        return -math.inf
    return max(values) if higher_is_better(monitor) else -min(values)


def _logged_epochs(run_dir: Path, monitor: str) -> list[dict[str, float]]:
    """The epochs already in the run's ``history.csv`` (epoch number and the monitored value)."""
    history = run_dir / HISTORY_FILE
    if not history.exists():
        return []
    with open(history, encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [{"epoch": int(row["epoch"]), "value": float(row[monitor])} for row in rows
            if row.get("epoch", "").isdigit() and row.get(monitor) not in (None, "")]


def _strategy(train_cfg: dict[str, Any]):
    """The ``tf.distribute`` strategy for ``train.distribute`` (the default one for ``none``)."""
    import tensorflow as tf

    if train_cfg["distribute"] == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        print(f"distribute: MirroredStrategy over {strategy.num_replicas_in_sync} device(s)")
        return strategy
    if train_cfg["distribute"] != "none":
        raise ValueError(f"unknown distribute {train_cfg['distribute']!r}; use none or mirrored")
    return tf.distribute.get_strategy()


def _set_precision(precision: str) -> None:
    if precision not in ("float32", "mixed_float16", "mixed_bfloat16"):
        raise ValueError(f"unknown precision {precision!r}; use float32, mixed_float16 or mixed_bfloat16")
    keras.mixed_precision.set_global_policy(precision)


def run_training(config: dict[str, Any]) -> dict[str, Any]:
    """Train, evaluate on val and export, as configured.

    Args:
        config: Resolved configuration (see :mod:`training.config`); ``data.path`` is required.

    Returns:
        ``{"run_dir", "artifact", "metrics", "wall_time_s"}``.
    """
    if not config["data"]["path"]:
        raise ValueError("no data folder: pass --data or set data.path in the config")
    stamp = dt.datetime.now().strftime(RUN_STAMP)
    run_dir = Path(config["train"]["runs_dir"]) / f"{config['name']}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=False)
    config = resolve_image_size(config)
    save_config(config, run_dir / "config.yaml")
    return _train_in(run_dir, config, resumed=False)


def resume_training(run_dir: str | Path) -> dict[str, Any]:
    """Continue a stopped run from its last finished epoch, optimizer state included.

    Args:
        run_dir: A run folder written by :func:`run_training`; its ``config.yaml`` is used as it is.

    Returns:
        As :func:`run_training`.
    """
    from training.config import complete, load_config_file

    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    config = resolve_image_size(complete(load_config_file(run_dir / "config.yaml")))
    return _train_in(run_dir, config, resumed=True)


def _train_in(run_dir: Path, config: dict[str, Any], *, resumed: bool) -> dict[str, Any]:
    """Run (or continue) both phases in ``run_dir`` and write the artifact."""
    started = time.monotonic()
    data_cfg, model_cfg, train_cfg = (config[k] for k in ("data", "model", "train"))
    keras.utils.set_random_seed(config["seed"])
    dataset = data_lib.load_dataset(data_cfg["path"], label_map=data_cfg["label_map"], split=data_cfg["split"],
                                    seed=config["seed"], max_per_class=data_cfg["max_per_class"])
    split_file = run_dir / "splits.csv"
    if resumed:
        rebuilt = data_lib.write_split_file(dataset, run_dir / "splits.rebuilt.csv")
        same = rebuilt.read_text(encoding="utf-8") == split_file.read_text(encoding="utf-8")
        rebuilt.unlink()
        if not same:
            raise ValueError(f"the data under {data_cfg['path']} no longer matches {split_file}")
    else:
        data_lib.write_split_file(dataset, split_file)
    num_classes = len(dataset.class_names)
    image_size = tuple(model_cfg["image_size"])
    train_split, val_split = dataset.splits["train"], dataset.splits["val"]
    if not len(val_split):
        raise ValueError("the validation split is empty; add images or change data.split")
    print(f"data: {num_classes} classes, {len(train_split)} train / {len(val_split)} val / "
          f"{len(dataset.splits['test'])} test images; run folder {run_dir}" + (" (resumed)" if resumed else ""))

    weights = data_lib.class_weights(train_split.labels, num_classes) if train_cfg["class_weights"] else None
    makes = makes_lib.load_for_config(config, dataset.class_names)
    if makes is None:
        train_ds, val_ds = _inputs(config, train_split, val_split, num_classes, image_size, weights)
        steps_per_epoch = math.ceil(len(train_split) / train_cfg["batch_size"])
        fit_steps = None
    else:
        train_ds, val_ds = _multitask_inputs(config, train_split, val_split, makes, image_size, weights)
        steps_per_epoch = fit_steps = math.ceil((len(train_split) + len(makes.make_only("train")))
                                                / train_cfg["batch_size"])
        print(f"make output: {len(makes.labels)} makes; {len(makes.make_only('train'))} train / "
              f"{len(makes.make_only('val'))} val photos labelled by make only")

    _set_precision(train_cfg["precision"])
    strategy = _strategy(train_cfg)
    with strategy.scope():
        model = build_model(model_cfg["backbone"], num_classes, weights=model_cfg["weights"],
                            image_size=image_size, name=config["name"],
                            train_batchnorm=bool(train_cfg["train_batchnorm"]), **head_options(model_cfg, makes))
    enable_adversarial_training(model, train_cfg["adversarial_epsilon"])
    monitor = train_cfg["monitor"]
    state_file = run_dir / "phases.json"
    finished: list[dict[str, Any]] = json.loads(state_file.read_text()) if state_file.exists() else []
    logged = _logged_epochs(run_dir, monitor)
    phases: list[dict[str, Any]] = []
    epoch = 0
    verbose = train_cfg["verbose"]

    def run_phase(phase: str, epochs_wanted: int, learning_rate, describe: str, **record) -> None:
        nonlocal epoch
        done = next((p for p in finished if p["phase"] == phase), None)
        checkpoint = run_dir / "checkpoints" / f"{phase}.best.weights.h5"
        if done is not None:
            # Finished before the resume: its best weights are what the next phase started from.
            load_weights_into(model, checkpoint)
            epoch = done["last_epoch"]
            phases.append({**done, "checkpoint": checkpoint})
            print(f"{phase}: finished before, {done['epochs']} epochs, best {monitor} {done['best']:.4f}")
            return
        with strategy.scope():
            _compile(model, train_cfg, learning_rate, num_classes)
        print(f"{describe}: {count_params(model)['trainable']:,} trainable parameters")
        before = [row["value"] for row in logged if row["epoch"] >= epoch]
        best_before = (max(before) if higher_is_better(monitor) else min(before)) if before else None
        callbacks, checkpoint = _callbacks(run_dir, phase, train_cfg, best_before)
        history = model.fit(train_ds, validation_data=val_ds, epochs=epoch + epochs_wanted, initial_epoch=epoch,
                            steps_per_epoch=fit_steps, callbacks=callbacks, verbose=verbose)
        best = _best(history, monitor)
        if best_before is not None:
            best = max(best, best_before if higher_is_better(monitor) else -best_before)
        if checkpoint.exists():
            load_weights_into(model, checkpoint)  # the phase's best epoch, before or after a resume
        last_epoch = epoch + len(history.epoch) + sum(1 for row in logged if row["epoch"] >= epoch)
        entry_record = {"phase": phase, "epochs": last_epoch - epoch, "last_epoch": last_epoch, "best": best,
                        **record}
        finished.append(entry_record)
        state_file.write_text(json.dumps(finished, indent=2))
        phases.append({**entry_record, "checkpoint": checkpoint})
        epoch = last_epoch

    if train_cfg["head_epochs"] > 0 and train_cfg["head_on_features"]:
        done = next((p for p in finished if p["phase"] == "head"), None)
        checkpoint = run_dir / "checkpoints" / "head.best.weights.h5"
        if done is None and makes is not None:
            best = train_heads_on_features(model, train_split, val_split, makes, config, weights, run_dir)
        elif done is None:
            best = train_head_on_features(model, train_split, val_split, config, weights, run_dir)
        if done is None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            model.save_weights(str(checkpoint))
            done = {"phase": "head", "epochs": train_cfg["head_epochs"], "last_epoch": 0, "best": best,
                    "on_features": True}
            finished.append(done)
            state_file.write_text(json.dumps(finished, indent=2))
        else:
            load_weights_into(model, checkpoint)
            print(f"head: finished before on cached features, best {monitor} {done['best']:.4f}")
        phases.append({**done, "checkpoint": checkpoint})
    elif train_cfg["head_epochs"] > 0:
        run_phase("head", train_cfg["head_epochs"],
                  _learning_rate(train_cfg, train_cfg["head_lr"], train_cfg["head_epochs"], steps_per_epoch, 0),
                  "phase 1 (head, frozen backbone)")

    if train_cfg["fine_tune_epochs"] > 0 and train_cfg["unfreeze_blocks"] > 0:
        opened = unfreeze_model(model, model_cfg["backbone"], train_cfg["unfreeze_blocks"],
                                freeze_batchnorm=is_pretrained(model_cfg["weights"])
                                and not train_cfg["train_batchnorm"])
        run_phase("fine_tune", train_cfg["fine_tune_epochs"],
                  _learning_rate(train_cfg, train_cfg["fine_tune_lr"], train_cfg["fine_tune_epochs"],
                                 steps_per_epoch, train_cfg["warmup_epochs"]),
                  f"phase 2 (fine-tune blocks {', '.join(opened)})", blocks=opened)

    if not phases:
        raise ValueError("nothing to train: head_epochs and fine_tune_epochs are both 0")
    # Each phase ended on its own best epoch; an earlier phase may still have been better.
    best_phase = max(phases, key=lambda p: p["best"])
    if best_phase is not phases[-1] and best_phase["checkpoint"].exists():
        load_weights_into(model, best_phase["checkpoint"])
        print(f"kept the {best_phase['phase']} phase weights (better {monitor})")
    if resumed:
        started -= _previous_wall_time(run_dir)
    return finish_run(model, config, dataset, run_dir, phases, started)


def _inputs(config: dict[str, Any], train_split, val_split, num_classes: int, image_size: tuple[int, int],
            weights: dict[int, float] | None):
    """The training and validation datasets of a class-only run."""
    augment_cfg, train_cfg = config["augment"], config["train"]
    common = dict(num_classes=num_classes, image_size=image_size, resize_mode=config["model"]["resize_mode"],
                  batch_size=train_cfg["batch_size"], cache=config["data"]["cache"], seed=config["seed"])
    train_ds = make_dataset(train_split.paths, train_split.labels, training=True,
                            augmenter=build_augmenter(augment_cfg, seed=config["seed"]), sample_weights=weights,
                            mixup=augment_cfg["mixup"] if augment_cfg["enabled"] else 0.0,
                            cutmix=augment_cfg["cutmix"] if augment_cfg["enabled"] else 0.0, **common)
    return train_ds, make_dataset(val_split.paths, val_split.labels, **common)


def _multitask_inputs(config: dict[str, Any], train_split, val_split, makes: makes_lib.MakeData,
                      image_size: tuple[int, int], weights: dict[int, float] | None):
    """The training and validation datasets of a run with a make output (both label sources)."""
    augment_cfg, train_cfg, data_cfg = config["augment"], config["train"], config["data"]
    common = dict(num_classes=len(makes.class_make), num_makes=len(makes.labels), image_size=image_size,
                  resize_mode=config["model"]["resize_mode"], batch_size=train_cfg["batch_size"],
                  seed=config["seed"])
    crops = augment_cfg["scene_crop"] if augment_cfg["enabled"] else None
    train_ds = make_multitask_dataset(
        train_split, makes.class_make, makes.make_only("train"), training=True,
        augmenter=build_augmenter(augment_cfg, seed=config["seed"]), class_weights=weights,
        make_share=data_cfg["make_share"], class_area=tuple(crops["class_area"]) if crops else (1.0, 1.0),
        scene_area=tuple(crops["scene_area"]) if crops else (1.0, 1.0), **common)
    val_ds = make_multitask_dataset(val_split, makes.class_make, makes.make_only("val"), **common)
    return train_ds, val_ds


def _pooled_features(model: keras.Model, dataset, *, mirrored: bool = False) -> np.ndarray:
    """The pooled backbone features of every image of ``dataset`` (optionally of its mirror images)."""
    extractor = keras.Model(model.inputs, model.get_layer("pool").output)
    images = dataset.map(lambda x, *rest: x[:, :, ::-1, :] if mirrored else x)
    return np.asarray(extractor.predict(images, verbose=0), dtype="float32")


def train_head_on_features(model: keras.Model, train_split, val_split, config: dict[str, Any],
                           class_weights: dict[int, float] | None, run_dir: Path) -> float:
    """Phase 1 on cached features: the backbone runs once over the photos, then only the head trains.

    A frozen backbone gives the same features every epoch, so the head can see many epochs for the price
    of one forward pass (plus one over the mirror images when flips are part of the augmentation); the
    other augmentations are given up in exchange. The trained layers are copied into ``model``.

    Args:
        model: From :func:`training.model.build_model`; its head layers are updated in place.
        train_split: Training photos and labels.
        val_split: Validation photos and labels (early stopping and the returned score).
        config: The resolved configuration.
        class_weights: ``{class index: weight}`` or ``None``.
        run_dir: Where ``head_features_history.csv`` goes.

    Returns:
        The best validation accuracy of the head.
    """
    model_cfg, train_cfg = config["model"], config["train"]
    num_classes = int(model.output.shape[-1])
    image_size = tuple(model.input.shape[1:3])
    plain = dict(num_classes=num_classes, image_size=image_size, resize_mode=model_cfg["resize_mode"],
                 batch_size=train_cfg["batch_size"], cache=False)
    started = time.monotonic()
    train_ds = make_dataset(train_split.paths, train_split.labels, **plain)
    features = [_pooled_features(model, train_ds)]
    labels = [np.asarray(train_split.labels)]
    if config["augment"]["enabled"] and config["augment"]["horizontal_flip"]:
        features.append(_pooled_features(model, train_ds, mirrored=True))
        labels.append(labels[0])
    x_train, y_train = np.concatenate(features), np.concatenate(labels)
    x_val = _pooled_features(model, make_dataset(val_split.paths, val_split.labels, **plain))
    y_val = np.asarray(val_split.labels)
    print(f"phase 1 (head on cached features): {len(x_train)} training feature vectors in "
          f"{time.monotonic() - started:.0f} s")

    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    x = inputs
    head_layers = [layer for layer in model.layers[model.layers.index(model.get_layer("pool")) + 1:]]
    for layer in head_layers:
        x = layer.__class__.from_config(layer.get_config())(x)
    head = keras.Model(inputs, x)
    _compile(head, {**train_cfg, "ema": 0.0}, train_cfg["head_lr"], num_classes)
    history = head.fit(
        x_train, keras.utils.to_categorical(y_train, num_classes),
        sample_weight=None if class_weights is None else np.asarray([class_weights[int(c)] for c in y_train]),
        validation_data=(x_val, keras.utils.to_categorical(y_val, num_classes)),
        epochs=train_cfg["head_epochs"], batch_size=train_cfg["batch_size"], shuffle=True,
        verbose=2 if train_cfg["verbose"] else 0,
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_accuracy", patience=max(5, train_cfg["head_epochs"] // 5),
                                                 restore_best_weights=True),
                   keras.callbacks.CSVLogger(str(run_dir / "head_features_history.csv"))])
    for layer, trained in zip(head_layers, head.layers[1:]):
        layer.set_weights(trained.get_weights())
    best = float(max(history.history["val_accuracy"]))
    print(f"phase 1 done in {time.monotonic() - started:.0f} s: val accuracy {best:.4f}")
    return best


def _features_and_targets(extractor: keras.Model, dataset) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Pooled features of every batch of a :func:`make_multitask_dataset`, with its targets and weights."""
    features, targets, weights = [], [[], []], [[], []]
    for images, (class_y, make_y), (class_w, make_w) in dataset:
        features.append(np.asarray(extractor(images, training=False), dtype="float32"))
        for store, values in ((targets, (class_y, make_y)), (weights, (class_w, make_w))):
            for column, value in zip(store, values):
                column.append(np.broadcast_to(np.asarray(value), (len(features[-1]),) + np.shape(value)[1:]))
    return (np.concatenate(features), [np.concatenate(t) for t in targets],
            [np.concatenate(w).astype("float32") for w in weights])


def train_heads_on_features(model: keras.Model, train_split, val_split, makes: makes_lib.MakeData,
                            config: dict[str, Any], class_weights: dict[int, float] | None, run_dir: Path) -> float:
    """Phase 1 of a run with a make output: both heads trained on pooled features computed once.

    As :func:`train_head_on_features`, for the class and the make head together: photos without a class
    train the make head only. The heads start from the model's own weights, so a class head copied from
    an earlier model (``--weights model.keras``) goes on from where it was.

    Returns:
        The best validation ``val_score`` (mean of the two outputs' accuracy).
    """
    model_cfg, train_cfg = config["model"], config["train"]
    image_size = tuple(model.input.shape[1:3])
    plain = dict(num_classes=len(makes.class_make), num_makes=len(makes.labels), image_size=image_size,
                 resize_mode=model_cfg["resize_mode"], batch_size=train_cfg["batch_size"])
    started = time.monotonic()
    extractor = keras.Model(model.inputs, model.get_layer("pool").output)
    x_train, y_train, w_train = _features_and_targets(extractor, make_multitask_dataset(
        train_split, makes.class_make, makes.make_only("train"), **plain))
    x_val, y_val, w_val = _features_and_targets(extractor, make_multitask_dataset(
        val_split, makes.class_make, makes.make_only("val"), **plain))
    print(f"phase 1 (heads on cached features): {len(x_train)} training feature vectors in "
          f"{time.monotonic() - started:.0f} s")
    inputs = keras.Input(shape=(x_train.shape[1],), name="features")
    pool_index = model.layers.index(model.get_layer("pool"))
    head_layers = model.layers[pool_index + 1:]
    copies = {}
    for layer in head_layers:
        source = layer.input if not isinstance(layer.input, list) else layer.input[0]
        parent = source._keras_history.operation.name if hasattr(source, "_keras_history") else "pool"
        upstream = inputs if parent == "pool" else copies[parent]
        copies[layer.name] = layer.__class__.from_config(layer.get_config())(upstream)
    head = keras.Model(inputs, [copies[CLASS_OUTPUT], copies[MAKE_OUTPUT]])
    for layer in head_layers:
        head.get_layer(layer.name).set_weights(layer.get_weights())
    _compile(head, {**train_cfg, "ema": 0.0}, train_cfg["head_lr"], len(makes.class_make))
    history = head.fit(
        x_train, y_train, sample_weight=w_train, validation_data=(x_val, y_val, w_val),
        epochs=train_cfg["head_epochs"], batch_size=train_cfg["batch_size"], shuffle=True,
        verbose=2 if train_cfg["verbose"] else 0,
        callbacks=[BothOutputsScore(),
                   keras.callbacks.EarlyStopping(monitor="val_score", mode="max",
                                                 patience=max(5, train_cfg["head_epochs"] // 5),
                                                 restore_best_weights=True),
                   keras.callbacks.CSVLogger(str(run_dir / "head_features_history.csv"))])
    for layer in head_layers:
        layer.set_weights(head.get_layer(layer.name).get_weights())
    best = float(max(history.history["val_score"]))
    print(f"phase 1 done in {time.monotonic() - started:.0f} s: val score {best:.4f}")
    return best


RUN_STAMP = "%Y%m%d-%H%M%S"  # the suffix of a run folder's name: when the run started


def run_started(run_dir: Path) -> float:
    """When a run started, as a POSIX time: from its folder name, which nothing later changes.

    ``config.yaml``'s modification time is the fallback for folders named otherwise; it moves whenever the
    configuration is edited, for example to shorten the schedule before a ``--resume``.
    """
    try:
        stamp = dt.datetime.strptime("-".join(run_dir.name.rsplit("-", 2)[-2:]), RUN_STAMP)
    except ValueError:
        return (run_dir / "config.yaml").stat().st_mtime
    return stamp.timestamp()


def _previous_wall_time(run_dir: Path) -> float:
    """Seconds the run spent before this resume or export: from its start to its last logged epoch."""
    history = run_dir / HISTORY_FILE
    if not history.exists():
        return 0.0
    return max(0.0, history.stat().st_mtime - run_started(run_dir))


def finish_run(model: keras.Model, config: dict[str, Any], dataset: data_lib.Dataset, run_dir: Path,
               phases: list[dict[str, Any]], started: float) -> dict[str, Any]:
    """Evaluate the trained ``model`` on val and write the artifact with its report.

    Args:
        model: The trained classifier (any dtype policy, compiled or not).
        config: The resolved configuration of the run.
        dataset: The run's data.
        run_dir: The run folder (its ``history.csv`` goes into the report).
        phases: What each phase did, for the metadata.
        started: ``time.monotonic()`` at the start, for the recorded wall time.

    Returns:
        ``{"run_dir", "artifact", "metrics", "wall_time_s"}``.
    """
    model_cfg, train_cfg, export_cfg, data_cfg = (config[k] for k in ("model", "train", "export", "data"))
    entry = get_backbone(model_cfg["backbone"])
    image_size = tuple(model_cfg["image_size"])
    num_classes = len(dataset.class_names)
    val_split = dataset.splits["val"]
    makes = makes_lib.load_for_config(config, dataset.class_names)
    clean = inference_copy(model, model_cfg["backbone"], num_classes, image_size=image_size, name=config["name"],
                           **head_options(model_cfg, makes))
    # The class output is scored here as before; the make output is scored with the answer levels below.
    class_model = clean if makes is None else keras.Model(clean.inputs, clean.outputs[0], name=clean.name)
    out_dir = Path(export_cfg["out"] or run_dir / "artifact")
    report_dir = out_dir / "report"
    if report_dir.exists():
        shutil.rmtree(report_dir)
    report_dir.mkdir(parents=True)
    shutil.copyfile(run_dir / HISTORY_FILE, report_dir / HISTORY_FILE)
    evaluation = evaluate_lib.evaluate_model(
        class_model, dataset.class_names, val_split.paths, val_split.labels, image_size=image_size,
        resize_mode=model_cfg["resize_mode"], batch_size=train_cfg["batch_size"], report_dir=report_dir,
        split_name="val", target_precision=export_cfg["target_precision"], tta=model_cfg.get("tta", "none"),
        skip_above=model_cfg.get("tta_skip_above"))
    wall_time = time.monotonic() - started

    summary = data_lib.summarize(dataset)
    training_record = {
        "config": config,
        "phases": [{k: (str(v) if isinstance(v, Path) else v) for k, v in p.items()} for p in phases],
        "parameters": count_params(clean),
        "wall_time_s": round(wall_time, 1),
        "device": describe_device(),
        "run_dir": str(run_dir),
    }
    metadata = export_lib.build_metadata(
        name=config["name"], version=config["version"], backbone=model_cfg["backbone"], image_size=image_size,
        labels=dataset.class_names, resize_mode=model_cfg["resize_mode"],
        preprocessing=describe_preprocessing(entry.preprocessing), metrics=evaluation["metrics"],
        dataset=summary, training_config=training_record,
        label_map=Path(data_cfg["label_map"]).name if data_cfg["label_map"] else None,
        extra={"confidence": evaluation["confidence"], "tta": model_cfg.get("tta", "none"),
               **({"tta_skip_above": model_cfg["tta_skip_above"]} if model_cfg.get("tta_skip_above") else {}),
               **(makes_lib.metadata_section(makes, dataset.class_names, data_cfg["class_makes"]) if makes else {})})
    export_lib.export_artifact(clean, dataset.class_names, metadata, out_dir, litert=export_cfg["litert"])
    if makes is not None:
        from training.make_levels import calibrate_levels

        # The make grouping is the make output itself; the others (segment) map make labels.
        maps = {name: path for name, path in (config.get("groups") or {}).items() if name != "make"}
        calibrate_levels(out_dir, runtime="litert" if export_cfg["litert"] else "keras", maps=maps or None)
    elif config.get("groups"):
        from training.label_groupings import add_groups

        add_groups(out_dir, config["groups"], data_cfg["path"], target_precision=export_cfg["target_precision"],
                   batch_size=train_cfg["batch_size"])
    print(f"artifact written to {out_dir} in {wall_time:.0f} s: "
          + ", ".join(f"{k} {v:.4f}" for k, v in evaluation["metrics"].items() if isinstance(v, float)))
    return {"run_dir": run_dir, "artifact": out_dir, "metrics": evaluation["metrics"], "wall_time_s": wall_time}


def describe_device() -> str:
    """What the run trained on, for the metadata: the GPUs TensorFlow sees, else the CPU and its cores."""
    import os
    import platform

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = [tf.config.experimental.get_device_details(g).get("device_name", g.name) for g in gpus]
        return f"{len(gpus)} GPU: " + ", ".join(names)
    return f"CPU ({platform.processor() or platform.machine()}), {os.cpu_count()} cores"


def export_run(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Any]:
    """Export the best checkpoint of a run folder, e.g. one stopped before its last epoch.

    The configuration and the data come from the run folder (``config.yaml``; the split is rebuilt and
    checked against ``splits.csv``); the fine-tuning checkpoint is used when there is one, else the head's.

    Args:
        run_dir: A run folder written by :func:`run_training`.
        out: Artifact folder; the configuration's ``export.out`` (or ``RUN/artifact``) when ``None``.

    Returns:
        As :func:`run_training`; ``wall_time_s`` then counts the training (from the run's start to its last
        logged epoch) and the export.
    """
    from training.config import complete, load_config_file

    run_dir = Path(run_dir)
    config = resolve_image_size(complete(load_config_file(run_dir / "config.yaml")))
    if out is not None:
        config["export"]["out"] = str(out)
    data_cfg, model_cfg = config["data"], config["model"]
    dataset = data_lib.load_dataset(data_cfg["path"], label_map=data_cfg["label_map"], split=data_cfg["split"],
                                    seed=config["seed"], max_per_class=data_cfg["max_per_class"])
    recorded = (run_dir / "splits.csv").read_text(encoding="utf-8")
    rebuilt = data_lib.write_split_file(dataset, run_dir / "splits.rebuilt.csv").read_text(encoding="utf-8")
    (run_dir / "splits.rebuilt.csv").unlink()
    if recorded != rebuilt:
        raise ValueError(f"the data under {data_cfg['path']} no longer matches {run_dir / 'splits.csv'}")
    checkpoints = [run_dir / "checkpoints" / f"{phase}.best.weights.h5" for phase in ("fine_tune", "head")]
    checkpoint = next((c for c in checkpoints if c.exists()), None)
    if checkpoint is None:
        raise FileNotFoundError(f"no checkpoint in {run_dir / 'checkpoints'}")
    model = build_model(model_cfg["backbone"], len(dataset.class_names), weights=None,
                        image_size=tuple(model_cfg["image_size"]), name=config["name"],
                        **head_options(model_cfg, makes_lib.load_for_config(config, dataset.class_names)))
    load_weights_into(model, checkpoint)
    with open(run_dir / HISTORY_FILE, encoding="utf-8") as handle:
        logged_epochs = sum(1 for line in handle if line[:1].isdigit())
    phases = [{"phase": checkpoint.name.split(".")[0], "checkpoint": str(checkpoint),
               "exported_from_checkpoint": True, "epochs_logged": logged_epochs}]
    started = time.monotonic() - _previous_wall_time(run_dir)
    print(f"exporting {checkpoint} ({logged_epochs} epochs logged)")
    return finish_run(model, config, dataset, run_dir, phases, started)


@command("train")
def add_train_parser(subparsers) -> None:
    """Register ``python -m training train``."""
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

    if args.resume:
        resume_training(args.resume)
        return 0
    overrides = {key: getattr(args, key) for options in TRAIN_OPTIONS.values() for _, key, _ in options}
    config = resolve(args.config, overrides)
    run_training(config)
    return 0


@command("export")
def add_export_parser(subparsers) -> None:
    """Register ``python -m training export``."""
    parser, required = subcommand(
        subparsers, "export", _run_export, summary="write the artifact from the best checkpoint of a run folder",
        description="Evaluate and export the best checkpoint of RUN (for a run stopped before its last "
                    "epoch); configuration and data come from RUN/config.yaml.")
    required.add_argument("--run", required=True, metavar="RUN", help="run folder, e.g. runs/car-models-196-...")
    options = parser.add_argument_group("export")
    options.add_argument("--out", metavar="DIR", help="artifact folder (default: the run's export.out)")


def _run_export(args: argparse.Namespace) -> int:
    export_run(args.run, args.out)
    return 0
