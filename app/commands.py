"""Command-line tools: ``flask model-info``, ``flask classify IMAGE...``, the admin commands
(``create-admin``, ``set-password``, ``export-corrections``) and ``flask gallery add|list|remove|negatives``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from flask import Flask, current_app
from sqlalchemy import select

from inference.errors import ImageRejected
from inference.pipeline import answer_photo

from .admin.export import CONFLICTS_KEY, export_corrections, export_gallery
from .extensions import db
from . import gallery as store
from .errors import RequestRejected
from .gallery import current_gallery
from .models import AdminUser
from .serving import get_classifier, get_vehicle_gate

MIN_ADMIN_PASSWORD_LENGTH = 8
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".avif"}


def register(app: Flask) -> None:
    """Attach the commands to ``app.cli``."""
    register_admin_commands(app)
    register_gallery_commands(app)

    @app.cli.command("model-info")
    def model_info() -> None:
        """Print the served model's metadata and runtime as JSON."""
        classifier = get_classifier()
        click.echo(json.dumps({**classifier.describe(), "labels": len(classifier.labels)}, indent=2))

    @app.cli.command("classify")
    @click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
    @click.option("--top-k", default=None, type=click.IntRange(1, 20), help="Answers per image.")
    def classify(images: tuple[str, ...], top_k: int | None) -> None:
        """Classify image files as the web page does, vehicle check and answer included (nothing is stored).

        One line per file: the top classes, then the verdict and the answer the model stands behind.
        """
        classifier, gate = get_classifier(), get_vehicle_gate()
        k = top_k or current_app.config["TOP_K"]
        for path in images:
            try:
                result = answer_photo(Path(path).read_bytes(), classifier, gate,
                                      max_pixels=current_app.config["MAX_IMAGE_PIXELS"],
                                      format_max_pixels={"WEBP": current_app.config["MAX_WEBP_PIXELS"]},
                                      top_k=k, thumbnail=False, gallery=current_gallery())
            except ImageRejected as exc:
                click.echo(f"{path}: {exc.message}", err=True)
                continue
            click.echo(f"{path}: " + ", ".join(f"{a['label']} {a['score']:.3f}" for a in result.top_k)
                       + f" | verdict {result.verdict.verdict}, answer {describe_answer(result.answer)}")


def describe_answer(answer: dict | None) -> str:
    """``make Audi 0.940``, or ``none`` when the model stands behind no level."""
    if answer is None:
        return "none"
    taught = f" (learned from {answer['learned_from']} photos you added)" if answer.get("source") == "gallery" else ""
    return f"{answer['level']} {answer['label']} {answer['score']:.3f}{taught}"


def register_admin_commands(app: Flask) -> None:
    """``flask create-admin``, ``flask set-password`` and ``flask export-corrections``."""

    def read_password() -> str:
        # Automation sets ADMIN_PASSWORD; people type it twice at a hidden prompt.
        password = os.environ.get("ADMIN_PASSWORD") or click.prompt("Password", hide_input=True,
                                                                      confirmation_prompt=True)
        if len(password) < MIN_ADMIN_PASSWORD_LENGTH:
            raise click.ClickException(f"the password needs at least {MIN_ADMIN_PASSWORD_LENGTH} characters")
        return password

    @app.cli.command("create-admin")
    @click.argument("username")
    @click.option("--or-set-password", is_flag=True,
                  help="If the account exists, set its password instead of failing (what `make admin` runs).")
    def create_admin(username: str, or_set_password: bool) -> None:
        """Create an admin account (password from ADMIN_PASSWORD or a prompt)."""
        username = username.strip()
        if not username or len(username) > 64:
            raise click.ClickException("the username must be 1 to 64 characters")
        existing = db.session.scalar(select(AdminUser).where(AdminUser.username == username))
        if existing is not None and or_set_password:
            # Set-up is re-run by people who forgot the password: one command covers both cases.
            existing.set_password(read_password())
            db.session.commit()
            click.echo(f"password of {existing.username} changed; its sessions were ended")
            return
        if existing is not None:
            raise click.ClickException(f"admin {username!r} already exists; use set-password to change it")
        admin = AdminUser(username=username)
        admin.set_password(read_password())
        db.session.add(admin)
        db.session.commit()
        click.echo(f"created admin {username}")

    @app.cli.command("set-password")
    @click.argument("username")
    def set_password(username: str) -> None:
        """Set a new password for an existing admin (from ADMIN_PASSWORD or a prompt)."""
        admin = db.session.scalar(select(AdminUser).where(AdminUser.username == username.strip()))
        if admin is None:
            raise click.ClickException(f"no admin {username!r}; create it with create-admin")
        admin.set_password(read_password())
        db.session.commit()
        click.echo(f"password of {admin.username} changed; its sessions were ended")

    @app.cli.command("export-corrections")
    @click.argument("out_dir", type=click.Path(file_okay=False))
    def export_corrections_command(out_dir: str) -> None:
        """Write reviewed photos as OUT_DIR/<label>/<id>.jpg plus OUT_DIR/corrections.csv (training layout),
        and the gallery's taught photos as OUT_DIR/<label>/gallery-<id>.jpg (classes) or
        OUT_DIR/makes/<make>/gallery-<id>.jpg (makes) plus OUT_DIR/gallery.csv."""
        counts = export_corrections(out_dir)
        conflicts = counts.pop(CONFLICTS_KEY, 0)
        total = sum(counts.values())
        click.echo(f"exported {total} photos in {len(counts)} label folders to {out_dir}")
        if conflicts:
            click.echo(f"left out {conflicts} predictions whose photo has a later review with another label; "
                       f"they are listed in {out_dir}/conflicts.csv", err=True)
        taught = export_gallery(out_dir)
        if taught:
            click.echo(f"exported {sum(taught.values())} taught photos in {len(taught)} label folders to {out_dir}")


def register_gallery_commands(app: Flask) -> None:
    """``flask gallery add|list|remove|negatives``: teach labels by example from the command line."""
    from inference.gallery import LEVELS

    @app.cli.group("gallery")
    def gallery() -> None:
        """Labels taught by example, answered beside the model without retraining."""

    @gallery.command("add")
    @click.option("--label", required=True, help='What the photos show, e.g. "Fiat Argo 2022" or "Citroen".')
    @click.option("--level", type=click.Choice(LEVELS), default="class", show_default=True,
                  help="A model of car (class) or a whole make.")
    @click.argument("photos", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
    def add(label: str, level: str, photos: tuple[str, ...]) -> None:
        """Teach LABEL with PHOTO files (the same checks as an upload; refused photos are skipped)."""
        try:
            label = store.clean_label(label)
        except RequestRejected as exc:
            raise click.ClickException(exc.message) from None
        examples = []
        for path in photos:
            try:
                examples.append(store.example_from_photo(Path(path).read_bytes(), label, level, source="upload",
                                                         added_by="cli"))
            except ImageRejected as exc:
                click.echo(f"{path}: {exc.message}", err=True)
            except RequestRejected as exc:
                raise click.ClickException(exc.message) from None
        stored = store.teach(examples)
        if not stored:
            raise click.ClickException("no photo could be taught")
        click.echo(f"taught {label} ({level}) with {stored} photos; {store.count_of(label)} in all")

    @gallery.command("list")
    def list_labels() -> None:
        """One line per taught label: level, photos, leave-one-out accuracy."""
        labels = store.taught_labels()
        if not labels:
            click.echo("the gallery is empty")
        for taught in labels:
            accuracy = "-" if taught.accuracy is None else f"{taught.accuracy:.0%}"
            click.echo(f"{taught.label}\t{taught.level}\t{taught.count} photos\tleave-one-out {accuracy}")

    @gallery.command("negatives")
    @click.argument("photo_dir", type=click.Path(exists=True, file_okay=False))
    @click.option("--limit", default=0, type=click.IntRange(0), help="At most this many photos (0: all).")
    def negatives(photo_dir: str, limit: int) -> None:
        """Calibrate the threshold with PHOTO_DIR: photos of cars the served model knows (its validation
        photos, in class folders or not), none of which a taught label may answer."""
        classifier = get_classifier()
        if not classifier.can_embed:
            raise click.ClickException("the served model file gives no embeddings")
        paths = sorted(p for p in Path(photo_dir).rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
        paths = paths[:limit] if limit else paths
        vectors = []
        for path in paths:
            try:
                vectors.append(store.embed_photo(path.read_bytes())[1])
            except ImageRejected as exc:
                click.echo(f"{path}: {exc.message}", err=True)
        stored = store.set_negatives(vectors)
        click.echo(f"stored {stored} negatives for {classifier.name} {classifier.version}; "
                   f"threshold now {store.current_gallery().threshold:.3f}")

    @gallery.command("remove")
    @click.argument("label")
    def remove(label: str) -> None:
        """Forget every example of LABEL."""
        removed = store.remove_label(" ".join(label.split()))
        if not removed:
            raise click.ClickException(f"no taught label {label!r}")
        click.echo(f"removed {label} ({removed} photos)")
