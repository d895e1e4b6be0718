"""Backbone registry, in-model preprocessing, the frozen / unfrozen phases and the export twin."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from training.backbones import REGISTRY, block_names, get_backbone, preprocessing_layer
from training.model import BACKBONE_LAYER, build_model, inference_copy, unfreeze_model

REQUIRED = {"mobilenet_v1_0.75", "mobilenet_v1_0.25", "mobilenetv2", "efficientnetb0", "resnet50", "vgg16",
            "xception", "inceptionv3", "small_cnn"}


def test_registry_has_every_required_backbone():
    assert REQUIRED <= set(REGISTRY)
    with pytest.raises(KeyError, match="choose one of"):
        get_backbone("alexnet")


def test_model_takes_0_255_pixels_and_outputs_probabilities():
    model = build_model("small_cnn", 4, weights="none", image_size=(32, 48))
    assert model.input_shape == (None, 32, 48, 3)
    probabilities = model.predict(np.random.default_rng(0).uniform(0, 255, (2, 32, 48, 3)), verbose=0)
    assert probabilities.shape == (2, 4)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert not model.get_layer(BACKBONE_LAYER).trainable


def test_caffe_preprocessing_swaps_channels_and_subtracts_means():
    layer = preprocessing_layer("caffe")
    pixel = np.array([[[[10.0, 20.0, 30.0]]]], dtype="float32")
    np.testing.assert_allclose(np.asarray(layer(pixel))[0, 0, 0], [30 - 103.939, 20 - 116.779, 10 - 123.68],
                               rtol=1e-5)
    tf_mode = preprocessing_layer("tf")
    np.testing.assert_allclose(np.asarray(tf_mode(np.array([[[[0.0, 127.5, 255.0]]]])))[0, 0, 0], [-1, 0, 1],
                               atol=1e-6)


def test_unfreeze_opens_the_top_blocks_and_keeps_batchnorm_frozen():
    model = build_model("mobilenet_v1_0.25", 3, weights="none", image_size=(64, 64))
    backbone = model.get_layer(BACKBONE_LAYER)
    opened = unfreeze_model(model, "mobilenet_v1_0.25", 2)
    assert opened == ["13", "12"]
    names = block_names(backbone, get_backbone("mobilenet_v1_0.25").block_pattern)
    for layer, block in zip(backbone.layers, names):
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable, layer.name
        elif layer.weights:
            assert layer.trainable == (block in {"12", "13"}), layer.name
    trainable_names = {w.path.split("/")[-2] for w in model.trainable_weights}
    assert {"conv_dw_13", "conv_pw_12", "logits"} <= trainable_names
    assert "conv_pw_11" not in trainable_names


def test_inference_copy_has_the_same_outputs_and_no_optimizer():
    model = build_model("small_cnn", 3, weights="none", image_size=(32, 32), hidden_units=16)
    assert model.get_layer("hidden").units == 16
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(np.zeros((4, 32, 32, 3)), np.eye(3)[[0, 1, 2, 0]], verbose=0)
    twin = inference_copy(model, "small_cnn", 3, image_size=(32, 32), name="twin",
                          dropout=0.2, l2=0.0, hidden_units=16)
    batch = np.random.default_rng(2).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(twin.predict(batch, verbose=0), model.predict(batch, verbose=0), rtol=1e-5)
    assert getattr(twin, "optimizer", None) is None and not twin.compiled
