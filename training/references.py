"""Write an artifact's gallery references: the served copy's embeddings of the model's own training photos.

``python -m training references ARTIFACT`` picks up to ``--per-source`` photos from each training source
the artifact records (Stanford-style class folders under ``train/``, and for a make-output model the web
photos under the make data's ``train/``; never the "other make" photos, which stand for cars the model
does not know), spread evenly over their folders, and embeds each one exactly as the app embeds an upload
(its decoding, fit and flip averaging, on the LiteRT copy it serves). The unit embeddings go to
``references.npy`` as float16, and ``metadata.json`` records how they were made.

With references, a taught label (the gallery beside the model) answers a photo only where the photo is
nearer to the taught examples than to any of these: see :mod:`inference.gallery`.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from training import data as data_lib
from training import export as export_lib
from training.commands import command, subcommand

METADATA_KEY = "gallery_references"
DEFAULT_PER_SOURCE = 1000


def training_sources(metadata: dict[str, Any]) -> list[Path]:
    """The ``train/`` folders of the data the artifact records: its class data and its make data."""
    data = metadata.get("training_config", {}).get("config", {}).get("data", {})
    roots = [data.get("path") or metadata.get("dataset", {}).get("root"), data.get("make_data")]
    return [Path(root) / "train" for root in roots if root and (Path(root) / "train").is_dir()]


def spread(folders: list[Path], count: int, seed: int = 0) -> list[Path]:
    """Up to ``count`` photos taken round-robin over ``folders`` (each folder's photos in a seeded order),
    so that every class or make is represented before any gets a second photo."""
    rng = random.Random(seed)
    queues = []
    for folder in folders:
        photos = data_lib.list_images(folder)
        rng.shuffle(photos)
        queues.append(photos)
    chosen: list[Path] = []
    depth = 0
    while len(chosen) < count and any(depth < len(queue) for queue in queues):
        chosen.extend(queue[depth] for queue in queues if depth < len(queue))
        depth += 1
    return chosen[:count]


def embed_photos(classifier, paths: list[Path], *, max_pixels: int = 40_000_000) -> np.ndarray:
    """Unit embeddings of ``paths`` as the app embeds an upload; unreadable photos are skipped."""
    from inference.errors import InferenceError
    from inference.imaging import decode_upload

    rows = []
    for path in tqdm(paths, desc="embedding", unit="photo"):
        try:
            photo = decode_upload(path.read_bytes(), max_pixels=max_pixels, target=classifier.image_size,
                                  resize_mode=classifier.resize_mode)
        except InferenceError:
            continue
        rows.append(classifier.embed(photo.image))
    return np.asarray(rows, dtype=np.float32)


def write_references(model_dir: str | Path, *, sources: list[Path] | None = None,
                     per_source: int = DEFAULT_PER_SOURCE, seed: int = 0, variant: str = "auto") -> dict[str, Any]:
    """Embed the artifact's training photos and write ``references.npy`` and its metadata.

    Args:
        model_dir: Artifact folder whose served copy outputs its feature map.
        sources: Folders of class or make folders (default: :func:`training_sources`).
        per_source: Most photos taken from each source.
        seed: Seed of the choice of photos.
        variant: The LiteRT copy that embeds (default: the one the app serves).

    Returns:
        The metadata entry: ``{"file", "count", "width", "sources", "variant", "per_source", "seed"}``.

    Raises:
        ValueError: No source folder, or a served copy that gives no embedding.
    """
    from inference.artifact import REFERENCES_FILE
    from inference.classifier import load_classifier

    model_dir = Path(model_dir)
    classifier = load_classifier(model_dir, runtime="litert", num_threads=None, variant=variant)
    if not classifier.can_embed:
        raise ValueError(f"the served copy of {model_dir} has no feature-map output: nothing to embed")
    metadata = classifier.metadata
    sources = sources if sources is not None else training_sources(metadata)
    if not sources:
        raise ValueError("the artifact records no training data: give --data")
    photos = {source: spread(data_lib.class_folders(source), per_source, seed) for source in sources}
    matrix = embed_photos(classifier, [path for paths in photos.values() for path in paths])
    if not len(matrix):
        raise ValueError("no readable photo under " + ", ".join(map(str, sources)))
    np.save(model_dir / REFERENCES_FILE, matrix.astype(np.float16), allow_pickle=False)
    entry = {"file": REFERENCES_FILE, "count": int(len(matrix)), "width": int(matrix.shape[1]),
             "sources": {str(source): len(paths) for source, paths in photos.items()},
             "variant": classifier.variant, "per_source": per_source, "seed": seed}
    metadata_path = model_dir / export_lib.METADATA_FILE
    stored = json.loads(metadata_path.read_text(encoding="utf-8"))
    stored[METADATA_KEY] = entry
    metadata_path.write_text(json.dumps(stored, indent=2) + "\n", encoding="utf-8")
    return entry


@command("references")
def add_references_parser(subparsers) -> None:
    """Register ``references`` on the ``python -m training`` command line."""
    parser, required = subcommand(
        subparsers, "references", _run_references,
        summary="embed the model's own training photos for the gallery (references.npy)",
        description="Embed up to --per-source photos of each training source of ARTIFACT (spread over its "
        "class or make folders) as the app embeds an upload, and write them to references.npy. Taught labels "
        "then answer only photos nearer to their examples than to any of these.")
    required.add_argument("artifact", metavar="ARTIFACT", help="artifact folder whose served copy embeds")
    parser.add_argument("--data", metavar="DIR", action="append",
                        help="a folder of class or make folders to take photos from (repeatable; default: the "
                        "train/ folders of the data the artifact records)")
    parser.add_argument("--per-source", type=int, default=DEFAULT_PER_SOURCE, metavar="N",
                        help=f"most photos from each folder given (default {DEFAULT_PER_SOURCE})")
    parser.add_argument("--seed", type=int, default=0, help="seed of the choice of photos (default 0)")
    parser.add_argument("--variant", default="auto", help="LiteRT copy that embeds (default: the served one)")


def _run_references(args: argparse.Namespace) -> int:
    try:
        entry = write_references(args.artifact, sources=[Path(d) for d in args.data] if args.data else None,
                                 per_source=args.per_source, seed=args.seed, variant=args.variant)
    except ValueError as error:
        print(f"error: {error}")
        return 2
    print(f"wrote {entry['count']} references ({entry['width']} wide, {entry['variant']}) to "
          f"{Path(args.artifact) / entry['file']}")
    return 0
