"""Configuration: defaults < file < command line, unknown keys refused, the shipped presets valid."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from training.backbones import REGISTRY
from training.config import DEFAULTS, load_config_file, resolve, save_config

CONFIGS = Path(__file__).resolve().parents[2] / "training" / "configs"


def test_file_overrides_defaults_and_options_override_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"train": {"head_epochs": 7, "batch_size": 8}, "model": {"dropout": 0.5}}))
    config = resolve(path, {"train.head_epochs": 2, "model.backbone": None})
    assert config["train"]["head_epochs"] == 2
    assert config["train"]["batch_size"] == 8
    assert config["model"]["dropout"] == 0.5
    assert config["model"]["backbone"] == DEFAULTS["model"]["backbone"]


def test_unknown_keys_are_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochz: 3\n")
    with pytest.raises(KeyError, match="train.epochz"):
        resolve(path)


def test_saved_config_reads_back(tmp_path):
    config = resolve(None, {"name": "x", "data.split": [0.8, 0.2]})
    assert load_config_file(save_config(config, tmp_path / "run" / "config.yaml")) == config


@pytest.mark.parametrize("preset", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_presets_resolve_to_known_backbones_and_label_maps(preset):
    config = resolve(CONFIGS / preset)
    assert config["model"]["backbone"] in REGISTRY
    label_map = config["data"]["label_map"]
    if label_map:
        assert (CONFIGS.parents[1] / label_map).is_file()


def test_the_required_presets_exist():
    names = {p.name for p in CONFIGS.glob("*.yaml")}
    assert {"stanford196_mobilenet.yaml", "premium_basic_mobilenet.yaml", "premium_basic_vgg16.yaml",
            "car_models_resnet50.yaml"} <= names


def test_the_image_size_is_resolved_once_from_the_backbone():
    from training.backbones import get_backbone, resolve_image_size

    config = resolve(None, {"model.backbone": "mobilenet_v1_0.25"})
    assert config["model"]["image_size"] is None
    resolved = resolve_image_size(config)
    assert resolved["model"]["image_size"] == list(get_backbone("mobilenet_v1_0.25").image_size)
    assert config["model"]["image_size"] is None  # the caller's configuration is left as it was
    assert resolve_image_size(resolve(None, {"model.image_size": [40, 60]}))["model"]["image_size"] == [40, 60]
