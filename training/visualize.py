"""The ``visualize`` command: what the layers of a trained classifier respond to, as small PNG grids.

Two kinds of picture per chosen backbone layer:

- **activations**: the photo fitted to the model input as in training, run through the network,
  and the feature maps of that layer with the strongest mean response, one tile each (bright = strong).
  Early layers answer to edges and colours at every place in the picture; late layers to a few parts.
- **filter patterns**: for a few filters of the layer, an input made by gradient ascent from a grey
  image to excite that one filter (its mean activation, borders left out), the classic way to see the
  texture or part a filter stands for.

Everything goes to ``--out`` (default ``MODEL/report/``) with ``visualize.json``, the index the model
card reads to show the pictures with their captions.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from training.commands import command

INDEX_FILE = "visualize.json"
TILE = 64                 # pixels per feature map or pattern in the grids: keeps each PNG at tens of KB
GAP = 2
GREY = 128.0
DEFAULT_FILTERS = 8
DEFAULT_MAPS = 16
DEFAULT_STEPS = 40
DEFAULT_LAYER_COUNT = 3   # early, middle, late when --layers is not given
PATTERN_SIZE = 128        # gradient ascent runs at this input size when the backbone accepts any size


def _load(model_dir: Path):
    """The artifact's Keras model and metadata."""
    import keras

    metadata = json.loads((model_dir / "metadata.json").read_text(encoding="utf-8"))
    model = keras.saving.load_model(str(model_dir / "model.keras"), compile=False)
    return model, metadata


def candidate_layers(backbone) -> list[str]:
    """The backbone layers worth showing: activation outputs (ReLU), else convolutions, in order.

    Args:
        backbone: The ``backbone`` layer of the classifier (a Keras model).

    Returns:
        Layer names with 4-D outputs.
    """
    import keras

    def four_d(layer) -> bool:
        try:
            return len(layer.output.shape) == 4
        except (AttributeError, ValueError):
            return False

    activations = [layer.name for layer in backbone.layers if four_d(layer)
                   and isinstance(layer, (keras.layers.ReLU, keras.layers.Activation))]
    if activations:
        return activations
    return [layer.name for layer in backbone.layers if four_d(layer) and isinstance(layer, keras.layers.Conv2D)]


def default_layers(backbone, count: int = DEFAULT_LAYER_COUNT) -> list[str]:
    """``count`` layers spread from the first to the last candidate (early edges to late parts)."""
    names = candidate_layers(backbone)
    if not names:
        raise ValueError("the backbone has no convolutional layers to show")
    picks = np.linspace(0, len(names) - 1, num=min(count, len(names))).round().astype(int)
    return [names[i] for i in dict.fromkeys(picks.tolist())]


def _backbone_and_preprocess(model):
    """The classifier's backbone layer and its in-model preprocessing layer (``None`` when absent)."""
    from training.model import BACKBONE_LAYER

    backbone = model.get_layer(BACKBONE_LAYER)
    try:
        preprocess = model.get_layer("preprocess")
    except ValueError:
        preprocess = None
    return backbone, preprocess


def check_layers(backbone, layers: list[str]) -> None:
    """Refuse layer names the backbone does not have, naming some it does.

    Args:
        backbone: The classifier's backbone.
        layers: Requested layer names.

    Raises:
        ValueError: With the first candidate layers.
    """
    unknown = [name for name in layers if name not in {layer.name for layer in backbone.layers}]
    if unknown:
        raise ValueError(f"unknown layer(s) {', '.join(unknown)}; some of this backbone's: "
                         f"{', '.join(candidate_layers(backbone)[:12])} ...")


def _feature_model(backbone, preprocess, layers: list[str], input_shape: tuple[int, int, int]):
    """A model from float32 RGB 0..255 pixels to the outputs of ``layers`` (a list, even for one)."""
    import keras

    check_layers(backbone, layers)
    inner = keras.Model(backbone.input, [backbone.get_layer(name).output for name in layers])
    images = keras.Input(input_shape)
    x = preprocess(images) if preprocess is not None else images
    return keras.Model(images, inner(x))


def _as_list(outputs) -> list:
    """A model's outputs as a list (Keras returns a lone tensor for a one-output model)."""
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def _colormap(values: np.ndarray) -> np.ndarray:
    """Map values in 0..1 to RGB uint8 with matplotlib's viridis."""
    from matplotlib import colormaps

    return (colormaps["viridis"](np.clip(values, 0, 1))[..., :3] * 255).astype(np.uint8)


def _grid(tiles: list[np.ndarray], columns: int) -> np.ndarray:
    """Lay equal-size RGB tiles out in rows of ``columns`` with a white gap."""
    rows = math.ceil(len(tiles) / columns)
    height, width = tiles[0].shape[:2]
    canvas = np.full((rows * (height + GAP) - GAP, columns * (width + GAP) - GAP, 3), 255, np.uint8)
    for index, tile in enumerate(tiles):
        row, column = divmod(index, columns)
        canvas[row * (height + GAP):row * (height + GAP) + height,
               column * (width + GAP):column * (width + GAP) + width] = tile
    return canvas


def _tile(image: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((TILE, TILE), Image.Resampling.NEAREST
                                                    if image.shape[0] < TILE else Image.Resampling.BILINEAR))


def _save_png(pixels: np.ndarray, path: Path) -> Path:
    from PIL import Image

    # A 64-colour palette: the grids are smooth ramps and flat tiles, and this keeps them at tens of KB.
    Image.fromarray(pixels).quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    return path


def activation_grid(feature_map: np.ndarray, photo: np.ndarray, maps: int = DEFAULT_MAPS) -> np.ndarray:
    """The photo followed by the ``maps`` channels of one layer with the highest mean activation.

    Args:
        feature_map: ``(h, w, channels)`` activations of one layer for the photo.
        photo: The fitted input photo, ``(H, W, 3)`` uint8.
        maps: How many channels to show.

    Returns:
        An RGB grid; each map is scaled to its own 0..max range.
    """
    order = np.argsort(feature_map.reshape(-1, feature_map.shape[-1]).mean(axis=0))[::-1][:maps]
    tiles = [_tile(photo)]
    for channel in order:
        values = feature_map[..., channel]
        top = float(values.max())
        tiles.append(_tile(_colormap(values / top if top > 0 else np.zeros_like(values))))
    return _grid(tiles, columns=int(math.ceil(math.sqrt(len(tiles)))))


def filter_patterns(backbone, preprocess, layer: str, filters: list[int], *, steps: int = DEFAULT_STEPS,
                    size: tuple[int, int], step_size: float = 4.0, seed: int = 0) -> np.ndarray:
    """Inputs that maximise single filters of ``layer``, by gradient ascent from a grey image.

    All filters are optimised together, one image each in a batch, on the normalised gradient of
    each image's own filter's mean activation (a border of a tenth of the map left out, where padding
    dominates).

    Args:
        backbone: The classifier's backbone.
        preprocess: Its preprocessing layer, or ``None``.
        layer: Backbone layer name.
        filters: Channel indices.
        steps: Gradient-ascent steps.
        size: Input ``(height, width)``.
        step_size: Pixel units (0..255) per step along the normalised gradient.
        seed: Seed of the small noise added to the grey start.

    Returns:
        ``(len(filters), height, width, 3)`` float32 images in 0..255 (see :func:`for_display`).
    """
    import tensorflow as tf

    model = _feature_model(backbone, preprocess, [layer], (*size, 3))
    rng = np.random.default_rng(seed)
    images = tf.Variable(GREY + rng.uniform(-10, 10, (len(filters), *size, 3)).astype("float32"))
    selector = tf.one_hot(filters, depth=int(backbone.get_layer(layer).output.shape[-1]), dtype=tf.float32)

    @tf.function
    def ascend():
        with tf.GradientTape() as tape:
            activations = _as_list(model(images, training=False))[0]
            height, width = activations.shape[1], activations.shape[2]
            margin_h, margin_w = height // 10, width // 10
            inner = activations[:, margin_h:height - margin_h or None, margin_w:width - margin_w or None, :]
            per_image = tf.reduce_sum(tf.reduce_mean(inner, axis=(1, 2)) * selector, axis=-1)
            loss = tf.reduce_sum(per_image)
        gradient = tape.gradient(loss, images)
        norm = tf.sqrt(tf.reduce_mean(tf.square(gradient), axis=(1, 2, 3), keepdims=True)) + 1e-8
        images.assign(tf.clip_by_value(images + step_size * gradient / norm, 0.0, 255.0))

    for _ in range(steps):
        ascend()
    return images.numpy()


def for_display(patterns: np.ndarray) -> np.ndarray:
    """Stretch each pattern's contrast around its mean so that faint patterns become visible.

    Args:
        patterns: ``(n, height, width, 3)`` float images from :func:`filter_patterns`.

    Returns:
        uint8 images.
    """
    centred = patterns - patterns.mean(axis=(1, 2, 3), keepdims=True)
    spread = centred.std(axis=(1, 2, 3), keepdims=True) + 1e-6
    return np.clip(GREY + 48.0 * centred / spread, 0, 255).astype(np.uint8)


def _fit_photo(path: Path, image_size: tuple[int, int], resize_mode: str) -> np.ndarray:
    """The photo fitted to the model input as in training (and as the app fits uploads)."""
    from training.pipeline import load_image

    return np.asarray(load_image(str(path), image_size, resize_mode))


def visualize(model_dir: str | Path, *, photo: str | Path | None = None, layers: list[str] | None = None,
              out: str | Path | None = None, filters: int = DEFAULT_FILTERS, maps: int = DEFAULT_MAPS,
              steps: int = DEFAULT_STEPS, seed: int = 0) -> dict[str, Any]:
    """Write activation grids (with a photo) and filter-pattern grids for chosen layers.

    Args:
        model_dir: Artifact folder (``model.keras`` and ``metadata.json``).
        photo: A photo to show the activations for; without one only filter patterns are made.
        layers: Backbone layer names; early, middle and late activation layers when ``None``.
        out: Output folder; ``MODEL/report`` when ``None``.
        filters: Filters per layer for the patterns (channels spread evenly over the layer).
        maps: Feature maps per layer in the activation grids.
        steps: Gradient-ascent steps per pattern.
        seed: Seed of the patterns' starting noise.

    Returns:
        The index written to ``visualize.json``: ``{"layers", "photo", "images": [...]}``.
    """
    model_dir = Path(model_dir)
    out_dir = Path(out) if out else model_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    model, metadata = _load(model_dir)
    backbone, preprocess = _backbone_and_preprocess(model)
    layers = list(layers or default_layers(backbone))
    check_layers(backbone, layers)
    image_size = tuple(metadata.get("image_size") or model.input_shape[1:3])
    images: list[dict[str, Any]] = []
    if photo is not None:
        fitted = _fit_photo(Path(photo), image_size, metadata.get("resize_mode", "center_crop"))
        outputs = _as_list(_feature_model(backbone, preprocess, layers, (*image_size, 3))(
            fitted[None].astype("float32"), training=False))
        for position, (name, feature_map) in enumerate(zip(layers, outputs)):
            feature_map = np.asarray(feature_map)[0]
            path = _save_png(activation_grid(feature_map, fitted, maps), out_dir / f"activations_{position}_{name}.png")
            images.append({"file": path.name, "kind": "activations", "layer": name,
                           "caption": f"Activations of {name} ({feature_map.shape[0]} x {feature_map.shape[1]} "
                                      f"maps, {feature_map.shape[2]} channels) for the photo in the first tile: "
                                      f"the {min(maps, feature_map.shape[2])} strongest channels, bright = strong."})
            print(f"wrote {path}")
    # A backbone built for a fixed size has to be ascended at that size; else a smaller, faster input.
    pattern_size = image_size if backbone.input_shape[1] is not None else (PATTERN_SIZE, PATTERN_SIZE)
    for position, name in enumerate(layers):
        channels = int(backbone.get_layer(name).output.shape[-1])
        chosen = sorted(set(np.linspace(0, channels - 1, num=min(filters, channels)).round().astype(int).tolist()))
        patterns = filter_patterns(backbone, preprocess, name, chosen, steps=steps, size=pattern_size, seed=seed)
        grid = _grid([_tile(p) for p in for_display(patterns)], columns=int(math.ceil(math.sqrt(len(chosen)))))
        path = _save_png(grid, out_dir / f"filters_{position}_{name}.png")
        images.append({"file": path.name, "kind": "filters", "layer": name, "filters": chosen,
                       "caption": f"Filter patterns of {name}: inputs grown from grey by {steps} steps of "
                                  f"gradient ascent to excite filters {', '.join(map(str, chosen))}."})
        print(f"wrote {path}")
    index = {"model": metadata.get("name"), "version": metadata.get("version"), "layers": layers,
             "photo": Path(photo).name if photo is not None else None, "steps": steps, "images": images}
    (out_dir / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return index


@command("visualize")
def add_visualize_parser(subparsers) -> None:
    """Register ``python -m training visualize``."""
    parser = subparsers.add_parser(
        "visualize", help="PNG grids of layer activations for a photo and of filter patterns",
        description="Activations of chosen backbone layers for a photo (fitted to the input as the app "
                    "fits uploads), and filter patterns: inputs grown from a grey image by gradient "
                    "ascent to excite single filters. Writes PNGs and visualize.json (the model card's "
                    "index) to --out, by default MODEL/report/.")
    required = parser.add_argument_group("required")
    required.add_argument("--model", required=True, metavar="DIR", help="artifact folder (model.keras)")
    options = parser.add_argument_group("pictures")
    options.add_argument("--photo", metavar="FILE", help="photo for the activation grids (none: filter patterns only)")
    options.add_argument("--layers", nargs="+", metavar="NAME",
                         help="backbone layer names (default: an early, a middle and a late activation layer)")
    options.add_argument("--filters", type=int, default=DEFAULT_FILTERS, metavar="N",
                         help=f"filter patterns per layer (default {DEFAULT_FILTERS})")
    options.add_argument("--maps", type=int, default=DEFAULT_MAPS, metavar="N",
                         help=f"feature maps per layer in the activation grid (default {DEFAULT_MAPS})")
    options.add_argument("--steps", type=int, default=DEFAULT_STEPS, metavar="N",
                         help=f"gradient-ascent steps per pattern (default {DEFAULT_STEPS})")
    options.add_argument("--list-layers", action="store_true", help="print the layers that can be chosen and stop")
    output = parser.add_argument_group("output")
    output.add_argument("--out", metavar="DIR", help="output folder (default MODEL/report)")
    parser.set_defaults(handler=_run_visualize)


def _run_visualize(args: argparse.Namespace) -> int:
    if args.list_layers:
        model, _ = _load(Path(args.model))
        print("\n".join(candidate_layers(_backbone_and_preprocess(model)[0])))
        return 0
    index = visualize(args.model, photo=args.photo, layers=args.layers, out=args.out, filters=args.filters,
                      maps=args.maps, steps=args.steps)
    print(f"{len(index['images'])} pictures for layers {', '.join(index['layers'])}")
    return 0
