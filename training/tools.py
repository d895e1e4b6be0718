"""Dataset tools: ``python -m training tools dedupe|resize|split``.

Every tool prints a summary of what it found or would do. Nothing is deleted or overwritten in place
unless ``--apply`` is given; ``resize`` and ``split`` write into a new folder.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps
from tqdm import tqdm

from training.data import IMAGE_SUFFIXES, class_folders, list_images, stratified_split
from training.commands import command


def iter_images(root: Path) -> list[Path]:
    """Every image file under ``root``, recursively, sorted."""
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# ---------------------------------------------------------------------------------------------- dedupe
@dataclass
class DuplicateReport:
    """Groups of duplicate files; in each group the first file is kept.

    Attributes:
        exact: Groups of byte-identical files.
        near: Groups of files whose perceptual hashes are within the distance (exact ones excluded).
        unreadable: Files that could not be decoded.
    """

    exact: list[list[Path]] = field(default_factory=list)
    near: list[list[Path]] = field(default_factory=list)
    unreadable: list[Path] = field(default_factory=list)

    def removable(self) -> list[Path]:
        """Every file but the first of each group."""
        return [p for group in self.exact + self.near for p in group[1:]]


def find_duplicates(root: str | Path, *, max_distance: int = 4, progress: bool = True) -> DuplicateReport:
    """Find exact (SHA-256) and near (perceptual hash within ``max_distance`` bits) duplicates.

    Args:
        root: Folder searched recursively.
        max_distance: Hamming distance between 64-bit pHashes still counted as the same photo
            (0 = identical hash; resized or re-encoded copies usually land within 4).
        progress: Show progress bars.

    Returns:
        The :class:`DuplicateReport`.
    """
    import imagehash

    files = iter_images(Path(root))
    report = DuplicateReport()
    by_digest: dict[str, list[Path]] = defaultdict(list)
    for path in tqdm(files, desc="hashing bytes", unit="img", disable=not progress):
        by_digest[hashlib.sha256(path.read_bytes()).hexdigest()].append(path)
    report.exact = [group for group in by_digest.values() if len(group) > 1]

    unique = [group[0] for group in by_digest.values()]
    hashes: list[tuple[Path, object]] = []
    for path in tqdm(unique, desc="perceptual hash", unit="img", disable=not progress):
        try:
            with Image.open(path) as image:
                hashes.append((path, imagehash.phash(ImageOps.exif_transpose(image).convert("RGB"))))
        except (OSError, ValueError):
            report.unreadable.append(path)
    # Union-find over all close pairs, so a chain of near copies ends up in one group.
    parent = list(range(len(hashes)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i in tqdm(range(len(hashes)), desc="comparing", unit="img", disable=not progress):
        for j in range(i + 1, len(hashes)):
            if hashes[i][1] - hashes[j][1] <= max_distance:
                parent[find(j)] = find(i)
    groups: dict[int, list[Path]] = defaultdict(list)
    for index, (path, _) in enumerate(hashes):
        groups[find(index)].append(path)
    report.near = [sorted(group) for group in groups.values() if len(group) > 1]
    return report


def _run_dedupe(args: argparse.Namespace) -> int:
    report = find_duplicates(args.folder, max_distance=args.max_distance, progress=not args.no_progress)
    removable = report.removable()
    for kind, groups in (("exact", report.exact), ("near", report.near)):
        for group in groups[: args.show]:
            print(f"{kind}: keep {group[0]}")
            for path in group[1:]:
                print(f"        drop {path}")
    print(f"{len(report.exact)} exact and {len(report.near)} near-duplicate groups; {len(removable)} files "
          f"would be removed; {len(report.unreadable)} unreadable")
    if not args.apply:
        print("dry run: nothing deleted (pass --apply to delete)")
        return 0
    for path in removable:
        path.unlink()
    print(f"deleted {len(removable)} files")
    return 0


# ---------------------------------------------------------------------------------------------- resize
def fit_image(image: Image.Image, size: tuple[int, int], mode: str) -> Image.Image:
    """Fit ``image`` to ``size`` = ``(width, height)`` by ``center_crop``, ``stretch``, ``pad`` or ``shorter``.

    ``shorter`` scales the shorter side to ``min(size)`` and keeps the aspect ratio (never enlarges).
    """
    image = ImageOps.exif_transpose(image).convert("RGB")
    if mode == "center_crop":
        return ImageOps.fit(image, size, Image.Resampling.LANCZOS)
    if mode == "stretch":
        return image.resize(size, Image.Resampling.LANCZOS)
    if mode == "pad":
        return ImageOps.pad(image, size, Image.Resampling.LANCZOS, color=(0, 0, 0))
    if mode == "shorter":
        scale = min(size) / min(image.size)
        if scale >= 1:
            return image
        return image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS)
    raise ValueError(f"unknown mode {mode!r}")


def resize_folder(source: str | Path, target: str | Path, *, size: tuple[int, int], mode: str,
                  quality: int = 90, progress: bool = True) -> dict[str, int]:
    """Write a resized copy of every image of ``source`` under ``target`` (same relative layout, JPEG).

    Returns:
        ``{"written", "skipped_unreadable"}``.
    """
    source, target = Path(source), Path(target)
    counts = {"written": 0, "skipped_unreadable": 0}
    for path in tqdm(iter_images(source), desc="resizing", unit="img", disable=not progress):
        destination = (target / path.relative_to(source)).with_suffix(".jpg")
        try:
            with Image.open(path) as image:
                fitted = fit_image(image, size, mode)
        except (OSError, ValueError):
            counts["skipped_unreadable"] += 1
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        fitted.save(destination, "JPEG", quality=quality)
        counts["written"] += 1
    return counts


def _run_resize(args: argparse.Namespace) -> int:
    source, target = Path(args.folder), Path(args.out) if args.out else None
    if target is None:
        if not args.apply:
            total = len(iter_images(source))
            print(f"{total} images would be resized in place to {args.size[0]}x{args.size[1]} ({args.mode}); "
                  "dry run: pass --out DIR for a copy or --apply to overwrite")
            return 0
        target = source
    elif target.exists() and any(target.iterdir()) and not args.apply:
        print(f"{target} is not empty; pass --apply to write into it anyway")
        return 1
    counts = resize_folder(source, target, size=(args.size[0], args.size[1]), mode=args.mode,
                           quality=args.quality, progress=not args.no_progress)
    if target == source:
        # In place: the JPEG copies are written beside non-JPEG originals, which then go.
        for path in iter_images(source):
            if path.suffix.lower() not in (".jpg",) and path.with_suffix(".jpg").exists():
                path.unlink()
    print(f"wrote {counts['written']} images to {target}; skipped {counts['skipped_unreadable']} unreadable")
    return 0


# ----------------------------------------------------------------------------------------------- split
def split_folder(source: str | Path, target: str | Path, *, fractions: list[float], seed: int,
                 move: bool = False) -> dict[str, int]:
    """Copy (or move) ``source/<class>/*`` into ``target/{train,val,test}/<class>/`` by a stratified split.

    Returns:
        Image count per split.
    """
    source, target = Path(source), Path(target)
    by_class = {p.name: [str(f) for f in list_images(p)] for p in class_folders(source)}
    parts = stratified_split(by_class, fractions, seed)
    counts: dict[str, int] = {}
    for split_name, classes in parts.items():
        counts[split_name] = 0
        for folder, files in classes.items():
            destination = target / split_name / folder
            destination.mkdir(parents=True, exist_ok=True)
            for file in files:
                (shutil.move if move else shutil.copy2)(file, destination / Path(file).name)
                counts[split_name] += 1
    return counts


def _run_split(args: argparse.Namespace) -> int:
    source = Path(args.folder)
    by_class = {p.name: len(list_images(p)) for p in class_folders(source)}
    plan = stratified_split({k: [str(i) for i in range(v)] for k, v in by_class.items()}, args.fractions, args.seed)
    summary = ", ".join(f"{name} {sum(len(v) for v in classes.values())}" for name, classes in plan.items())
    print(f"{len(by_class)} classes, {sum(by_class.values())} images -> {summary}")
    if not args.apply:
        print(f"dry run: nothing written (pass --apply to {'move' if args.move else 'copy'} into {args.out})")
        return 0
    counts = split_folder(source, args.out, fractions=args.fractions, seed=args.seed, move=args.move)
    print(f"{'moved' if args.move else 'copied'} into {args.out}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0


# ---------------------------------------------------------------------------------------------- parser
def _add_tool(commands, name: str, handler, *, summary: str, description: str, folder_help: str,
              apply_help: str, progress: bool = True) -> argparse._ArgumentGroup:
    """Add one tool with its folder argument, ``--apply`` (and ``--no-progress``); returns its option group."""
    parser = commands.add_parser(name, help=summary, description=description)
    parser.add_argument("folder", help=folder_help)
    options = parser.add_argument_group(f"{name} options")
    options.add_argument("--apply", action="store_true", help=apply_help)
    if progress:
        options.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(handler=handler)
    return options


@command("tools")
def add_tools_parser(subparsers) -> None:
    """Register ``tools`` and its sub-commands on the top-level parser."""
    tools = subparsers.add_parser("tools", help="dataset tools: dedupe, resize, split",
                                  description="Dataset tools. Each prints a summary; nothing is deleted or "
                                              "overwritten without --apply.")
    commands = tools.add_subparsers(dest="tool", required=True, metavar="TOOL")

    options = _add_tool(commands, "dedupe", _run_dedupe,
                        summary="find exact and near-duplicate images (perceptual hash)",
                        description="Find byte-identical and perceptually similar images; with --apply delete "
                                    "all but the first of each group.",
                        folder_help="folder searched recursively",
                        apply_help="delete the duplicates (default: dry run)")
    options.add_argument("--max-distance", type=int, default=4,
                         help="pHash Hamming distance counted as a near duplicate (default 4 of 64 bits)")
    options.add_argument("--show", type=int, default=20, help="groups listed per kind (default 20)")

    options = _add_tool(commands, "resize", _run_resize, summary="resize / centre-crop every image of a folder",
                        description="Write resized JPEG copies with the same folder layout.",
                        folder_help="source folder, searched recursively",
                        apply_help="allow overwriting files (in place without --out)")
    options.add_argument("--out", metavar="DIR", help="destination folder (default: in place, needs --apply)")
    options.add_argument("--size", type=int, nargs=2, default=[224, 224], metavar=("W", "H"),
                         help="target size (default 224 224)")
    options.add_argument("--mode", choices=["center_crop", "stretch", "pad", "shorter"], default="center_crop",
                         help="how to fit: crop, stretch, letterbox, or shorter side only (default center_crop)")
    options.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")

    options = _add_tool(commands, "split", _run_split, summary="split DIR/<class>/ into OUT/train|val|test/<class>/",
                        description="Seeded stratified split of a class-per-folder dataset.",
                        folder_help="source folder with one sub-folder per class",
                        apply_help="write the split (default: dry run)", progress=False)
    options.add_argument("--out", required=True, metavar="DIR", help="destination folder")
    options.add_argument("--fractions", type=float, nargs="+", default=[0.7, 0.15, 0.15], metavar="F",
                         help="train val [test] fractions (default 0.7 0.15 0.15)")
    options.add_argument("--seed", type=int, default=42, help="split seed (default 42)")
    options.add_argument("--move", action="store_true", help="move instead of copy")
