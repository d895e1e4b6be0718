"""CSV of the review set (streamed in chunks) and the corrected photos as a class-folder dataset.

The dataset layout is the one ``python -m training train`` reads: ``OUT_DIR/<label>/<id>.jpg``, plus
``OUT_DIR/corrections.csv`` beside the class folders (a file, so the training loader ignores it).

The review CSV is meant for spreadsheets, so text a spreadsheet would run as a formula is defused there;
``corrections.csv`` is a dataset manifest read by programs, so it keeps every label and path exactly as
the folders on disk have them.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from sqlalchemy import select

from ..extensions import db
from ..models import AdminUser, Correction, GalleryExample, Prediction
from ..upload.headline import StoredAnswer, in_words, served_makes, summary
from .queries import ReviewFilters, SORT_COLUMNS, filtered

CHUNK_ROWS = 1000
# The answer leads, as on every page: the headline in words, then its level, label and score; the
# top-1 label and the top-k are the detail.
PREDICTION_COLUMNS = ("id", "headline", "answer_level", "answer_label", "answer_score", "verdict", "created_at",
                      "source", "original_filename", "sha256", "width", "height", "content_type", "model_name",
                      "model_version", "top_label", "top_score", "vehicle_score", "latency_ms",
                      "corrected_label", "model_was_right", "corrected_by", "corrected_at", "top_k")
CORRECTION_COLUMNS = ("prediction_id", "path", "label", "model_label", "model_version", "sha256",
                      "corrected_by", "corrected_at")
CONFLICT_COLUMNS = ("prediction_id", "sha256", "label", "label_kept", "corrected_by", "corrected_at")
# Not a label folder: export_corrections counts the predictions it left out under this key.
CONFLICTS_KEY = "(left out: reviews of the same photo disagree)"
# A leading = + - @ (or tab/CR) makes spreadsheets run the cell as a formula; filenames come from users.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# File systems allow 255 bytes per name (not characters: "é" is two in UTF-8); longer labels are cut
# and keep a hash of the whole label, so that two long labels sharing a start stay apart.
FOLDER_NAME_MAX_BYTES = 200
FOLDER_HASH_CHARS = 12


def spreadsheet_safe(value: Any) -> Any:
    """Text that a spreadsheet would evaluate gets a leading apostrophe; other values pass through."""
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def csv_line(values: Iterable[Any], *, for_spreadsheets: bool = True) -> str:
    """One CSV record (RFC 4180 quoting, CRLF) as text; formula-like cells defused unless told not to."""
    buffer = io.StringIO()
    csv.writer(buffer).writerow([spreadsheet_safe(v) for v in values] if for_spreadsheets else list(values))
    return buffer.getvalue()


def _iso(stamp: dt.datetime | None) -> str:
    """UTC time as ISO 8601 with a ``Z`` (SQLite hands back naive UTC values, PostgreSQL aware ones)."""
    if stamp is None:
        return ""
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return stamp.isoformat(timespec="seconds") + "Z"


def prediction_rows(filters: ReviewFilters, low_confidence_below: float) -> Iterator[str]:
    """The CSV header then one line per filtered prediction, fetched ``CHUNK_ROWS`` at a time.

    Plain columns (no ORM objects, no thumbnails) keep memory flat whatever the number of rows.

    Args:
        filters: The review filters (sort is honoured; paging is not).
        low_confidence_below: Threshold for the low-confidence filter.

    Yields:
        CSV text, one record per item.
    """
    statement = (select(Prediction.id, Prediction.created_at, Prediction.source, Prediction.original_filename,
                        Prediction.sha256, Prediction.width, Prediction.height, Prediction.content_type,
                        Prediction.model_name, Prediction.model_version, Prediction.top_label,
                        Prediction.top_score, Prediction.verdict, Prediction.vehicle_score,
                        Prediction.answer_level, Prediction.answer_label, Prediction.answer_score,
                        Prediction.latency_ms, Prediction.groups,
                        Correction.new_label, Correction.old_label,
                        AdminUser.username, Correction.updated_at, Prediction.top_k)
                 .select_from(Prediction)
                 .outerjoin(Correction, Correction.prediction_id == Prediction.id)
                 .outerjoin(AdminUser, AdminUser.id == Correction.corrected_by_id))
    column = SORT_COLUMNS[filters.sort]
    order = (column.asc(), Prediction.id.asc()) if filters.order == "asc" else (column.desc(), Prediction.id.desc())
    statement = filtered(statement, filters, low_confidence_below).order_by(*order)
    yield csv_line(PREDICTION_COLUMNS)
    result = db.session.execute(statement.execution_options(yield_per=CHUNK_ROWS))
    make_of, known_classes = served_makes()
    for row in result:
        (pid, created, source, filename, sha, width, height, ctype, mname, mversion, label, score, verdict,
         vehicle_score, answer_level, answer_label, answer_score, latency, groups, new_label, old_label, who, when,
         top_k) = row
        was_right = "" if new_label is None else ("yes" if new_label == old_label else "no")
        lead = summary(StoredAnswer(verdict, answer_level, answer_label, answer_score, groups, top_k, label),
                       make_of, known_classes)
        yield csv_line((pid, in_words(lead), answer_level or "", answer_label or "",
                        "" if answer_score is None else f"{answer_score:.6f}", verdict or "", _iso(created),
                        source, filename or "", sha, width, height, ctype, mname, mversion,
                        label, f"{score:.6f}", "" if vehicle_score is None else f"{vehicle_score:.4f}",
                        f"{latency:.1f}", new_label or "", was_right, who or "", _iso(when),
                        json.dumps(top_k, separators=(",", ":"))))


def folder_name(label: str) -> str:
    """A label as one safe folder name: path separators and control characters become ``_``, and a
    name over :data:`FOLDER_NAME_MAX_BYTES` in UTF-8 is cut and suffixed with a hash of the label."""
    name = re.sub(r"[/\\\x00-\x1f]", "_", label).strip()
    name = "_" + name if name in ("", ".", "..") or name.startswith(".") else name
    encoded = name.encode("utf-8")
    if len(encoded) <= FOLDER_NAME_MAX_BYTES:
        return name
    digest = hashlib.sha256(label.encode("utf-8")).hexdigest()[:FOLDER_HASH_CHARS]
    head = encoded[:FOLDER_NAME_MAX_BYTES - FOLDER_HASH_CHARS - 1].decode("utf-8", errors="ignore").rstrip()
    return f"{head}~{digest}"


def export_corrections(out_dir: str | Path) -> dict[str, int]:
    """Write every corrected prediction's thumbnail under its true label, and a CSV describing them.

    Confirmed answers are exported too (their true label is the model's): they are labelled photos.
    Reviews of the same photo (same SHA-256) that disagree would put one photo under two labels, which
    teaches the model nothing but noise: the latest review of such a photo wins, the others are left out
    and listed in ``conflicts.csv`` (prediction, label, the label kept) for an admin to settle.

    Args:
        out_dir: Destination folder (created; existing files with the same names are replaced).

    Returns:
        ``{label folder: number of photos}``; the number of predictions left out is under ``CONFLICTS_KEY``
        when there are any.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    counts: dict[str, int] = {}
    # The latest label per photo first (one small row per reviewed photo), so the rows can still stream.
    kept = dict(db.session.execute(
        select(Prediction.sha256, Correction.new_label)
        .join(Correction, Correction.prediction_id == Prediction.id)
        .order_by(Prediction.sha256, Correction.updated_at, Correction.id)).all())
    statement = (select(Prediction.id, Prediction.thumbnail, Prediction.model_version, Prediction.sha256,
                        Correction.new_label, Correction.old_label, AdminUser.username, Correction.updated_at)
                 .join(Correction, Correction.prediction_id == Prediction.id)
                 .join(AdminUser, AdminUser.id == Correction.corrected_by_id)
                 .order_by(Prediction.id)
                 .execution_options(yield_per=200))
    left_out = []
    with open(out / "corrections.csv", "w", newline="", encoding="utf-8") as handle:
        handle.write(csv_line(CORRECTION_COLUMNS, for_spreadsheets=False))
        for pid, thumbnail, version, sha, label, model_label, who, when in db.session.execute(statement):
            if label != kept[sha]:
                left_out.append((pid, sha, label, kept[sha], who, _iso(when)))
                continue
            folder = folder_name(label)
            (out / folder).mkdir(exist_ok=True)
            relative = f"{folder}/{pid}.jpg"
            (out / relative).write_bytes(thumbnail)
            counts[folder] = counts.get(folder, 0) + 1
            handle.write(csv_line((pid, relative, label, model_label, version, sha, who, _iso(when)),
                                  for_spreadsheets=False))
    conflicts = out / "conflicts.csv"
    if left_out:
        with open(conflicts, "w", newline="", encoding="utf-8") as handle:
            handle.write(csv_line(CONFLICT_COLUMNS, for_spreadsheets=False))
            for row in left_out:
                handle.write(csv_line(row, for_spreadsheets=False))
        counts[CONFLICTS_KEY] = len(left_out)
    elif conflicts.exists():
        conflicts.unlink()  # from an earlier export: it no longer describes this folder
    return counts


GALLERY_COLUMNS = ("example_id", "path", "label", "level", "source", "added_by", "created_at", "sha256")
MAKES_FOLDER = "makes"  # make-level examples: OUT/makes/<Make>/, the layout of the make training data


def export_gallery(out_dir: str | Path) -> dict[str, int]:
    """Write every taught example's photo, class labels as ``OUT/<label>/``, makes as ``OUT/makes/<make>/``,
    and ``gallery.csv`` describing them, so that the next training run learns what was taught (nothing at
    all when nothing was taught).

    Returns:
        ``{label folder (relative to out_dir): number of photos}``.
    """
    out = Path(out_dir)
    counts: dict[str, int] = {}
    if db.session.scalar(select(GalleryExample.id).limit(1)) is None:
        return counts  # nothing taught: no gallery.csv beside the corrections
    out.mkdir(parents=True, exist_ok=True)
    statement = (select(GalleryExample.id, GalleryExample.image, GalleryExample.label, GalleryExample.level,
                        GalleryExample.source, GalleryExample.added_by, GalleryExample.created_at,
                        GalleryExample.sha256)
                 .order_by(GalleryExample.id).execution_options(yield_per=200))
    with open(out / "gallery.csv", "w", newline="", encoding="utf-8") as handle:
        handle.write(csv_line(GALLERY_COLUMNS, for_spreadsheets=False))
        for example_id, image, label, level, source, who, when, sha in db.session.execute(statement):
            folder = folder_name(label) if level == "class" else f"{MAKES_FOLDER}/{folder_name(label)}"
            (out / folder).mkdir(parents=True, exist_ok=True)
            # A prefix no prediction id has, so a correction and an example never share a file.
            relative = f"{folder}/gallery-{example_id}.jpg"
            (out / relative).write_bytes(image)
            counts[folder] = counts.get(folder, 0) + 1
            handle.write(csv_line((example_id, relative, label, level, source, who, _iso(when), sha),
                                  for_spreadsheets=False))
    return counts
