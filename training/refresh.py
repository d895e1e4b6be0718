"""``python -m training refresh``: rewrite an artifact's serving files from its ``model.keras``.

It writes through both :mod:`training.export` (the float32 LiteRT copy, ``head.npz``) and
:mod:`training.quantize` (the quantised copies), so it lives beside them rather than in either.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from inference.artifact import HEAD_FILE, KERAS_FILE, LITERT_FILE, LITERT_VARIANTS, METADATA_FILE
from training import export as export_lib
from training.commands import command
from training.quantize import convert


def refresh_serving_files(model_dir: str | Path) -> dict[str, Any]:
    """Rewrite an artifact's LiteRT files and ``head.npz`` from its ``model.keras`` (the source of truth).

    For artifacts written before the feature-map output existed: ``model.tflite`` and any quantised copy
    already there are re-exported with it (same weights, same probabilities), and ``head.npz`` is added.

    Args:
        model_dir: Artifact folder.

    Returns:
        ``{"explainable": bool, "files": [written file names]}``.
    """
    import keras

    folder = Path(model_dir)
    model = keras.saving.load_model(folder / KERAS_FILE, compile=False)
    head = export_lib.explainable_head(model)
    network = export_lib.serving_model(model, head)
    written = [export_lib.export_litert(network, folder / LITERT_FILE).name]
    for variant, filename in LITERT_VARIANTS.items():
        if variant != "float32" and (folder / filename).is_file():
            written.append(convert(network, variant, folder / filename).name)
    metadata = json.loads((folder / METADATA_FILE).read_text(encoding="utf-8"))
    if head is not None:
        written.append(export_lib.write_head(head, folder / HEAD_FILE).name)
    elif (folder / HEAD_FILE).exists():
        (folder / HEAD_FILE).unlink()
    metadata["explanation"] = export_lib.explanation_record(head)
    export_lib.write_json(folder / METADATA_FILE, metadata)
    return {"explainable": head is not None, "files": written}


@command("refresh")
def add_refresh_parser(subparsers) -> None:
    """Register ``refresh`` on the ``python -m training`` command line."""
    parser = subparsers.add_parser(
        "refresh", help="re-export an artifact's LiteRT files and head.npz from its model.keras",
        description="Rewrite ARTIFACT's model.tflite (and the quantised copies it has) from model.keras with the "
        "last feature map as a second output, and write head.npz, so that the app can draw heatmaps without "
        "TensorFlow. Weights and probabilities are unchanged.")
    parser.add_argument("artifact", metavar="ARTIFACT", help="artifact folder with model.keras")
    parser.set_defaults(handler=lambda args: _run_refresh(args.artifact))


def _run_refresh(artifact: str) -> int:
    result = refresh_serving_files(artifact)
    state = "explainable" if result["explainable"] else "not explainable (no head.npz)"
    print(f"{artifact}: {', '.join(result['files'])} written; {state}")
    return 0
