"""The upload page's example photos: a folder of images (``EXAMPLES_DIR``) a visitor can classify in a click.

An example is sent through the same prediction path as an upload and logged with ``source="example"``.
Only the names found in the folder are accepted, so a posted name can never reach another file.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from flask import current_app
from werkzeug.datastructures import FileStorage

from .errors import RequestRejected

EXAMPLE_SUFFIXES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp"}
MAX_EXAMPLES = 12


@dataclass(frozen=True)
class Example:
    """One example photo: its file name (the value the page posts) and a caption made from it."""

    name: str
    path: Path

    @property
    def caption(self) -> str:
        """``audi-r8.jpg`` -> ``audi r8``."""
        return self.path.stem.replace("-", " ").replace("_", " ")

    @property
    def content_type(self) -> str:
        return EXAMPLE_SUFFIXES[self.path.suffix.lower()]


def examples_dir() -> Path | None:
    """The configured folder, or None when the row is switched off (``none``) or the folder is missing."""
    setting = current_app.config.get("EXAMPLES_DIR") or "none"
    if setting.lower() == "none":
        return None
    folder = Path(setting)
    return folder if folder.is_dir() else None


def list_examples() -> list[Example]:
    """The example photos, sorted by name (at most :data:`MAX_EXAMPLES`); empty when there are none."""
    folder = examples_dir()
    if folder is None:
        return []
    photos = sorted(p for p in folder.iterdir()
                    if p.is_file() and p.suffix.lower() in EXAMPLE_SUFFIXES and not p.name.startswith("."))
    return [Example(p.name, p) for p in photos[:MAX_EXAMPLES]]


def find_example(name: str) -> Example:
    """The example called ``name``.

    Raises:
        RequestRejected: ``unknown_example`` when no example has that name (or examples are switched off).
    """
    for example in list_examples():
        if example.name == name:
            return example
    raise RequestRejected("unknown_example", "There is no example photo with that name; reload the page.")


def open_example(name: str) -> FileStorage:
    """The example ``name`` as the upload a browser would have sent for it."""
    example = find_example(name)
    return FileStorage(stream=io.BytesIO(example.path.read_bytes()), filename=example.name, name="image",
                       content_type=example.content_type)
