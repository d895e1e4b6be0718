"""The fine-tuning recipe: resuming a stopped run, AdamW/EMA/BatchNorm/precision options, mixup and cutmix,
and test-time flip averaging."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.training.conftest import TINY_OVERRIDES


class _Stop(Exception):
    """Stands for the machine going away in the middle of a run."""


def _epochs_logged(run_dir) -> list[int]:
    with open(run_dir / "history.csv", encoding="utf-8") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_resume_continues_a_stopped_run_from_its_last_epoch(image_folder, tmp_path, monkeypatch):
    from training import train as train_lib
    from training.config import resolve

    config = resolve(None, {**TINY_OVERRIDES, "name": "resumable", "data.path": str(image_folder),
                            "train.fine_tune_epochs": 3, "train.early_stopping_patience": 10,
                            "train.runs_dir": str(tmp_path / "runs"), "export.out": str(tmp_path / "artifact"),
                            "export.litert": False})

    class StopAfterSecondFineTuneEpoch(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 2:  # epoch 0 is the head, 1 and 2 are fine-tuning
                raise _Stop()

    original = train_lib._callbacks

    def with_a_stop(*args, **kwargs):
        callbacks, checkpoint = original(*args, **kwargs)
        return callbacks + [StopAfterSecondFineTuneEpoch()], checkpoint

    monkeypatch.setattr(train_lib, "_callbacks", with_a_stop)
    with pytest.raises(_Stop):
        train_lib.run_training(config)
    monkeypatch.setattr(train_lib, "_callbacks", original)

    run_dir = next((tmp_path / "runs").glob("resumable-*"))
    assert _epochs_logged(run_dir) == [0, 1, 2]
    assert (run_dir / "backup" / "fine_tune").is_dir()  # the epoch backup with the optimizer state
    assert not (tmp_path / "artifact").exists()

    result = train_lib.resume_training(run_dir)

    # Only the missing last epoch ran: no epoch twice, none skipped, and the head was not retrained.
    assert _epochs_logged(run_dir) == [0, 1, 2, 3]
    phases = json.loads((run_dir / "phases.json").read_text())
    assert [(p["phase"], p["epochs"], p["last_epoch"]) for p in phases] == [("head", 1, 1), ("fine_tune", 3, 4)]
    assert not (run_dir / "backup" / "fine_tune").exists()  # removed once the phase finished
    metadata = json.loads((result["artifact"] / "metadata.json").read_text())
    assert metadata["name"] == "resumable" and "accuracy" in metadata["metrics"]


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path):
    from training.train import resume_training

    with pytest.raises(FileNotFoundError, match="not a run folder"):
        resume_training(tmp_path)


def test_adamw_ema_batchnorm_mixup_mirrored_run_end_to_end(image_folder, tmp_path):
    from training.config import resolve
    from training.train import run_training

    config = resolve(None, {**TINY_OVERRIDES, "name": "recipe", "data.path": str(image_folder),
                            "train.optimizer": "adamw", "train.weight_decay": 0.01, "train.ema": 0.9,
                            "train.train_batchnorm": True, "train.clipnorm": 1.0, "train.distribute": "mirrored",
                            "augment.mixup": 0.2, "augment.cutmix": 1.0, "model.tta": "flip",
                            "train.runs_dir": str(tmp_path / "runs"), "export.out": str(tmp_path / "artifact"),
                            "export.litert": False})
    result = run_training(config)
    metadata = json.loads((result["artifact"] / "metadata.json").read_text())
    assert metadata["tta"] == "flip" and metadata["metrics"]["tta"] == "flip"
    assert metadata["training_config"]["device"].startswith(("CPU", "1 GPU"))
    recorded = metadata["training_config"]["config"]["train"]
    assert recorded["optimizer"] == "adamw" and recorded["ema"] == 0.9


def test_unknown_precision_is_refused(image_folder, tmp_path):
    from training.config import resolve
    from training.train import run_training

    config = resolve(None, {**TINY_OVERRIDES, "data.path": str(image_folder), "train.precision": "float8",
                            "train.runs_dir": str(tmp_path / "runs")})
    with pytest.raises(ValueError, match="unknown precision"):
        run_training(config)
    keras.mixed_precision.set_global_policy("float32")


def test_old_run_configs_are_completed_with_new_keys():
    from training.config import DEFAULTS, complete

    old = {"train": {"mixed_precision": True, "batch_size": 16}, "model": {"backbone": "small_cnn"}}
    config = complete(old)
    assert config["train"]["precision"] == "mixed_bfloat16" and config["train"]["batch_size"] == 16
    assert config["model"]["tta"] == DEFAULTS["model"]["tta"] == "none"
    assert "mixed_precision" not in config["train"]


def test_batchnorm_of_a_pretrained_backbone_learns_only_when_asked(tmp_path):
    from training.model import build_model, unfreeze_model

    # A weights file stands for ImageNet: what matters is that the backbone counts as pretrained.
    weights = tmp_path / "backbone.weights.h5"
    keras.applications.MobileNet(include_top=False, weights=None, input_shape=(32, 32, 3),
                                 alpha=0.25).save_weights(str(weights))
    images = tf.random.uniform((4, 32, 32, 3), 0, 255)
    for train_batchnorm in (False, True):
        model = build_model("mobilenet_v1_0.25", 3, weights=str(weights), image_size=(32, 32),
                            train_batchnorm=train_batchnorm)
        opened = unfreeze_model(model, "mobilenet_v1_0.25", 99, freeze_batchnorm=not train_batchnorm)
        assert opened[0] == "13" and opened[-1] == "stem"
        backbone = model.get_layer("backbone")
        assert backbone.get_layer("conv1").trainable  # a full fine-tune opens the stem too
        norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
        assert all(layer.trainable == train_batchnorm for layer in norms)
        before = norms[0].moving_mean.numpy().copy()
        model(images, training=True)
        assert (not np.allclose(before, norms[0].moving_mean.numpy())) == train_batchnorm


def test_mixup_keeps_labels_summing_to_one_and_in_the_pixel_proportions():
    from training.pipeline import mix_batch

    tf.random.set_seed(3)
    values = tf.constant([0.0, 100.0, 200.0, 250.0])
    images = tf.ones((4, 8, 16, 3)) * values[:, None, None, None]
    labels = tf.one_hot([0, 1, 2, 3], 4)
    weights = tf.constant([1.0, 2.0, 3.0, 4.0])
    mixed, mixed_labels, mixed_weights = mix_batch(images, labels, weights, mixup=0.4, cutmix=0.0)
    np.testing.assert_allclose(tf.reduce_sum(mixed_labels, axis=1), 1.0, atol=1e-6)
    keep = mixed_labels.numpy()[np.arange(4), np.arange(4)]
    expected_pixels = values.numpy() * keep + values.numpy()[::-1] * (1 - keep)
    np.testing.assert_allclose(mixed.numpy()[:, 0, 0, 0], expected_pixels, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(mixed_weights, weights.numpy() * keep + weights.numpy()[::-1] * (1 - keep),
                               rtol=1e-5)


def test_cutmix_label_weight_is_the_share_of_own_pixels():
    from training.pipeline import mix_batch

    tf.random.set_seed(5)
    values = tf.constant([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    images = tf.ones((6, 12, 20, 3)) * values[:, None, None, None]
    labels = tf.one_hot(tf.range(6), 6)
    mixed, mixed_labels, weights = mix_batch(images, labels, None, mixup=0.0, cutmix=1.0)
    assert weights is None
    own_share = (mixed.numpy()[..., 0] == values.numpy()[:, None, None]).mean(axis=(1, 2))
    np.testing.assert_allclose(mixed_labels.numpy()[np.arange(6), np.arange(6)], own_share, atol=1e-6)
    partner = mixed_labels.numpy()[np.arange(6), np.arange(6)[::-1]]
    np.testing.assert_allclose(partner, 1 - own_share, atol=1e-6)


def test_flip_tta_is_the_mean_over_the_photo_and_its_mirror(tmp_path):
    from PIL import Image

    from training.evaluate import predict

    inputs = keras.Input((16, 32, 3))
    # Left half vs right half brightness: a model that a mirror image changes.
    left = keras.layers.Lambda(lambda x: tf.reduce_mean(x[:, :, :16, :], axis=[1, 2, 3]))(inputs)
    right = keras.layers.Lambda(lambda x: tf.reduce_mean(x[:, :, 16:, :], axis=[1, 2, 3]))(inputs)
    logits = keras.layers.Concatenate()([keras.layers.Reshape((1,))(left), keras.layers.Reshape((1,))(right)])
    model = keras.Model(inputs, keras.layers.Softmax()(logits / 50.0))
    pixels = np.zeros((16, 32, 3), dtype="uint8")
    pixels[:, :16] = 200
    path = tmp_path / "half.png"
    Image.fromarray(pixels).save(path)
    plain = predict(model, [str(path)], [0], num_classes=2, image_size=(16, 32), resize_mode="stretch")
    flipped = predict(model, [str(path)], [0], num_classes=2, image_size=(16, 32), resize_mode="stretch",
                      tta="flip")
    assert plain[0, 0] > 0.9
    np.testing.assert_allclose(flipped[0], [0.5, 0.5], atol=1e-6)


def test_head_on_cached_features_then_fine_tune(image_folder, tmp_path):
    from training.config import resolve
    from training.train import run_training

    config = resolve(None, {**TINY_OVERRIDES, "name": "probe", "data.path": str(image_folder),
                            "train.head_on_features": True, "train.head_epochs": 30, "train.head_lr": 0.01,
                            "train.runs_dir": str(tmp_path / "runs"), "export.out": str(tmp_path / "artifact"),
                            "export.litert": False})
    result = run_training(config)
    run_dir = result["run_dir"]
    with open(run_dir / "head_features_history.csv", encoding="utf-8") as handle:
        head_rows = list(csv.DictReader(handle))
    assert 1 <= len(head_rows) <= 30
    phases = json.loads((run_dir / "phases.json").read_text())
    assert phases[0]["phase"] == "head" and phases[0]["on_features"]
    assert phases[0]["best"] == pytest.approx(max(float(r["val_accuracy"]) for r in head_rows))
    assert _epochs_logged(run_dir) == [0]  # the fine-tuning epoch, numbered from 0
    assert (run_dir / "checkpoints" / "head.best.weights.h5").is_file()


def test_a_run_starts_when_its_folder_says_whatever_edits_its_config_later(tmp_path):
    """Shortening a schedule before ``--resume`` edits config.yaml; the recorded wall time must not shrink."""
    import datetime as dt
    import os

    from training.train import _previous_wall_time, run_started

    run_dir = tmp_path / "car-models-196-20261203-134804"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: car-models-196\n")
    (run_dir / "history.csv").write_text("epoch,val_accuracy\n0,0.5\n")
    started = dt.datetime(2026, 12, 3, 13, 48, 4).timestamp()
    os.utime(run_dir / "history.csv", (started + 5400, started + 5400))  # 90 minutes of epochs
    os.utime(run_dir / "config.yaml", (started + 5000, started + 5000))  # edited near the end
    assert run_started(run_dir) == started
    assert _previous_wall_time(run_dir) == 5400

    plain = tmp_path / "my-run"
    plain.mkdir()
    (plain / "config.yaml").write_text("name: x\n")
    assert run_started(plain) == (plain / "config.yaml").stat().st_mtime
