"""Command-line tools: ``flask model-info`` and ``flask classify IMAGE...``."""

from __future__ import annotations

import json
from pathlib import Path

import click
from flask import Flask, current_app

from .classifier import get_classifier
from .imaging import ImageRejected, decode_upload


def register(app: Flask) -> None:
    """Attach the commands to ``app.cli``."""

    @app.cli.command("model-info")
    def model_info() -> None:
        """Print the served model's metadata and runtime as JSON."""
        classifier = get_classifier()
        click.echo(json.dumps({**classifier.describe(), "labels": len(classifier.labels)}, indent=2))

    @app.cli.command("classify")
    @click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
    @click.option("--top-k", default=None, type=click.IntRange(1, 20), help="Answers per image.")
    def classify(images: tuple[str, ...], top_k: int | None) -> None:
        """Classify image files with the served model (nothing is stored)."""
        classifier = get_classifier()
        k = top_k or current_app.config["TOP_K"]
        for path in images:
            try:
                decoded = decode_upload(Path(path).read_bytes(),
                                        max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
                                        target=classifier.image_size, resize_mode=classifier.resize_mode)
            except ImageRejected as exc:
                click.echo(f"{path}: {exc.message}", err=True)
                continue
            answers = classifier.classify(decoded.image, top_k=k)
            click.echo(f"{path}: " + ", ".join(f"{a['label']} {a['score']:.3f}" for a in answers))
