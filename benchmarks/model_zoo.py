"""Model zoo: every trained configuration worth keeping, measured the same way, in one table.

For each entry of ``benchmarks/zoo.yaml`` whose artifact folder is present it serves the artifact's
``model.tflite`` with the app's own LiteRT loader and fitting (as an upload would be), and measures

* on ``../shared/datasets/stanford-cars/val``: top-1, top-5, top-1 with flip test-time averaging, and
  the premium/basic and make accuracy of the 196-class probabilities summed per group
  (``training/label_maps``);
* on ``../shared/datasets/web-audi-bmw`` (uncropped web photos, makes only): the make of the top-1 label,
  and the make whose summed probability is highest;
* LiteRT milliseconds per image at batch 1 on one thread (median of repeated invocations), and the size
  of ``model.tflite``;
* **as served**: every photo through the app's own pipeline (:func:`inference.pipeline.answer_photo`:
  the upload decoder, the LiteRT copy the app serves, its fit and test-time augmentation; the vehicle gate
  left out, so every photo counts), scoring the make group's top label - from the make output where the
  model has one - on Stanford ``val``, ``web-makes/val`` (recent cars, 21 makes), ``web-audi-bmw`` and
  the top-1 class on Stanford ``val``; and the share of ``web-makes/other-makes/val`` (makes no model here
  was taught) answered with one of the known makes;

and copies the training wall time, device and command from the artifact and the zoo file. An entry whose
artifact is not at hand (a candidate that was not shipped) keeps the row measured when it was, marked so.
Writes ``benchmarks/results/model_zoo.json`` and ``.md`` and copies the table into the manual (the page in ``docs/`` that holds its markers).

Usage: ``python -m benchmarks.model_zoo [--zoo benchmarks/zoo.yaml] [--only NAME ...]``.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image, ImageOps

from inference.classifier import load_classifier
from inference.imaging import fit_to_input

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
SHARED = REPO_ROOT.parent / "shared" / "datasets"
LABEL_MAPS = REPO_ROOT / "training" / "label_maps"
TIMED_INVOCATIONS = 40


def parse_args(argv=None) -> argparse.Namespace:
    """Command line: which zoo file, which entries, which data."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.model_zoo", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--zoo", type=Path, default=REPO_ROOT / "benchmarks" / "zoo.yaml",
                        help="entries: name, artifact folder, command, notes")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="measure only these entries (others keep their rows)")
    parser.add_argument("--stanford", type=Path, default=SHARED / "stanford-cars", help="data with val/")
    parser.add_argument("--web", type=Path, default=SHARED / "web-audi-bmw", help="web photos: <make>/*.jpg")
    parser.add_argument("--web-makes", type=Path, default=SHARED / "web-makes",
                        help="recent cars by make: val/<make>/*.jpg and other-makes/val/<brand>/*.jpg")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR,
                        help="folder for model_zoo.json/.md (the manual is updated only for the default)")
    return parser.parse_args(argv)


def read_map(name: str) -> dict[str, str]:
    """A ``folder,label`` CSV from ``training/label_maps``."""
    with open(LABEL_MAPS / name, encoding="utf-8") as handle:
        return {row["folder"]: row["label"] for row in csv.DictReader(handle)}


def load_photo(path: Path) -> Image.Image:
    """Decode as the app does: EXIF orientation applied, RGB."""
    with Image.open(path) as image:
        return ImageOps.exif_transpose(image).convert("RGB")


def photos_in(folder: Path) -> list[tuple[Path, str]]:
    """``(photo, folder name)`` for every image one level below ``folder``, sorted."""
    return [(path, sub.name) for sub in sorted(p for p in folder.iterdir() if p.is_dir())
            for path in sorted(sub.iterdir()) if path.suffix.lower() in (".jpg", ".jpeg", ".png")]


def probabilities(classifier, photos: list[Path], *, flip: bool = False, batch: int = 16) -> np.ndarray:
    """Class probabilities for ``photos`` (optionally averaged with the mirror image)."""
    rows = []
    for start in range(0, len(photos), batch):
        pixels = np.stack([fit_to_input(load_photo(p), classifier.image_size, classifier.resize_mode)
                           for p in photos[start:start + batch]])
        result = classifier.split(classifier.predict_batch(pixels))[0]
        if flip:
            result = (result + classifier.split(classifier.predict_batch(pixels[:, :, ::-1, :]))[0]) / 2.0
        rows.append(result)
    return np.concatenate(rows)


def grouped_accuracy(probs: np.ndarray, labels: list[str], mapping: dict[str, str], truth: list[str]) -> float:
    """Accuracy of the group whose summed probability is highest."""
    groups = sorted(set(mapping.values()))
    member = np.zeros((len(labels), len(groups)))
    for index, label in enumerate(labels):
        member[index, groups.index(mapping[label])] = 1.0
    predicted = np.asarray(groups)[(probs @ member).argmax(axis=1)]
    return float(np.mean(predicted == np.asarray(truth)))


def litert_ms(model_dir: Path) -> float:
    """Median milliseconds of one batch-1 invocation on one thread."""
    classifier = load_classifier(model_dir, runtime="litert", num_threads=1, variant="float32")
    pixels = np.random.default_rng(0).integers(0, 256, (1, *classifier.image_size, 3)).astype(np.float32)
    for _ in range(5):
        classifier.predict_batch(pixels)
    timings = []
    for _ in range(TIMED_INVOCATIONS):
        started = time.perf_counter()
        classifier.predict_batch(pixels)
        timings.append((time.perf_counter() - started) * 1000.0)
    return statistics.median(timings)


def served_makes(classifier, photos: list[Path]) -> list[dict[str, Any]]:
    """The top class and the make group's top label of each photo, answered as the app answers an upload."""
    from inference.pipeline import answer_photo

    found = []
    for path in photos:
        result = answer_photo(path.read_bytes(), classifier, None, max_pixels=40_000_000, top_k=1, thumbnail=False)
        found.append({"top1": result.top_k[0]["label"], "make": result.groups["make"][0]["label"]})
    return found


def served_figures(model_dir: Path, stanford: Path, web: Path, web_makes: Path) -> dict[str, Any]:
    """Accuracy as served (see the module docstring); ``served_*`` keys."""
    from inference.artifact import make_labels_of

    classifier = load_classifier(model_dir, num_threads=os.cpu_count())
    makes = read_map("stanford_make.csv")
    known = {m.lower() for m in makes.values()} | {m.lower() for m in make_labels_of(classifier.metadata)
                                                   if m != "Other make"}
    figures: dict[str, Any] = {"served_copy": f"{classifier.runtime} {classifier.variant}, {classifier.resize_mode}, "
                                              f"TTA {classifier.tta}"}
    val = photos_in(stanford / "val")
    answers = served_makes(classifier, [p for p, _ in val])
    figures["served_val_top1"] = float(np.mean([a["top1"] == c for a, (_, c) in zip(answers, val)]))
    figures["served_val_make"] = float(np.mean([a["make"].lower() == makes[c].lower() for a, (_, c) in zip(answers, val)]))
    for name, folder in (("web_makes", web_makes / "val"), ("web_audi_bmw", web)):
        photos = photos_in(folder) if folder.is_dir() else []
        answers = served_makes(classifier, [p for p, _ in photos])
        figures[f"served_{name}_make"] = (float(np.mean([a["make"].lower() == m.lower()
                                                         for a, (_, m) in zip(answers, photos)])) if photos else None)
        figures[f"served_{name}_images"] = len(photos)
    other = web_makes / "other-makes" / "val"
    photos = photos_in(other) if other.is_dir() else []
    answers = served_makes(classifier, [p for p, _ in photos])
    figures["served_other_as_known_make"] = (float(np.mean([a["make"].lower() in known for a in answers]))
                                             if photos else None)
    figures["served_other_images"] = len(photos)
    return figures


def measure(entry: dict[str, Any], stanford: Path, web: Path, web_makes: Path) -> dict[str, Any]:
    """All figures of one artifact."""
    model_dir = REPO_ROOT / entry["artifact"] if not Path(entry["artifact"]).is_absolute() else Path(entry["artifact"])
    # The network as trained (model.tflite): the zoo compares configurations; the quantised copy an
    # artifact serves is measured by `python -m training quantize` and the serving benchmark.
    classifier = load_classifier(model_dir, runtime="litert", num_threads=os.cpu_count(), variant="float32")
    labels, metadata = classifier.labels, classifier.metadata
    makes, segments = read_map("stanford_make.csv"), read_map("stanford_premium_basic.csv")
    val = photos_in(stanford / "val")
    paths, truth = [p for p, _ in val], [c for _, c in val]
    index = {label: i for i, label in enumerate(labels)}
    y_true = np.asarray([index[c] for c in truth])
    probs = probabilities(classifier, paths)
    flipped = probabilities(classifier, paths, flip=True)
    top5 = np.argsort(-probs, axis=1)[:, :5]
    web_photos = photos_in(web)
    web_probs = probabilities(classifier, [p for p, _ in web_photos])
    web_truth = [make.lower() for _, make in web_photos]
    top1_makes = [makes[labels[i]].lower() for i in web_probs.argmax(axis=1)]
    lowered = {label: make.lower() for label, make in makes.items()}
    training = metadata.get("training_config", {})
    return {
        "name": entry["name"],
        "artifact": entry["artifact"],
        "backbone": metadata["backbone"],
        "input": "x".join(str(v) for v in metadata["image_size"]) + f" {metadata.get('resize_mode')}",
        "val_images": len(paths),
        "val_top1": float(np.mean(probs.argmax(axis=1) == y_true)),
        "val_top5": float(np.mean((top5 == y_true[:, None]).any(axis=1))),
        "val_top1_flip_tta": float(np.mean(flipped.argmax(axis=1) == y_true)),
        "val_premium_basic": grouped_accuracy(probs, labels, segments, [segments[c] for c in truth]),
        "val_make": grouped_accuracy(probs, labels, makes, [makes[c] for c in truth]),
        "web_images": len(web_photos),
        "web_make_top1_label": float(np.mean(np.asarray(top1_makes) == np.asarray(web_truth))),
        "web_make_summed": grouped_accuracy(web_probs, labels, lowered, web_truth),
        "litert_ms_batch1_1thread": round(litert_ms(model_dir), 2),
        "tflite_mb": round((model_dir / "model.tflite").stat().st_size / 1e6, 1),
        "training_wall_time_s": training.get("wall_time_s"),
        "training_device": training.get("device") or entry.get("device"),
        "command": entry["command"],
        "notes": entry.get("notes", ""),
        "measured": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
        "remeasured_this_run": True,
        **served_figures(model_dir, stanford, web, web_makes),
    }


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def markdown(rows: list[dict[str, Any]], environment: str) -> str:
    """The manual table and the commands under it."""
    lines = [f"Measured by `python -m benchmarks.model_zoo` ({environment}). Val: "
             "`../shared/datasets/stanford-cars/val` (788 photos); web: `../shared/datasets/web-audi-bmw` "
             "(600 uncropped photos, make = make of the top-1 label / of the highest summed make). "
             "LiteRT: `model.tflite`, batch 1, one thread, median.", "",
             "| # | backbone | input | val top-1 | top-5 | top-1 flip TTA | premium/basic | make | web make (top-1 / summed) "
             "| LiteRT ms | MB | training | notes |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for number, row in enumerate(rows, start=1):
        wall = row.get("training_wall_time_s")
        trained = (f"{wall / 60:.0f} min" if wall else "-") + f", {row.get('training_device') or '-'}"
        note = row.get("notes", "")
        if not row.get("remeasured_this_run"):
            note = (note + "; " if note else "") + f"figures of {row['measured']}, not measured in this run"
        lines.append(
            f"| {number} | `{row['backbone']}` | {row['input']} | {percent(row['val_top1'])} | {percent(row['val_top5'])} "
            f"| {percent(row['val_top1_flip_tta'])} | {percent(row['val_premium_basic'])} | {percent(row['val_make'])} "
            f"| {percent(row['web_make_top1_label'])} / {percent(row['web_make_summed'])} "
            f"| {row['litert_ms_batch1_1thread']:.1f} | {row['tflite_mb']:.1f} | {trained} | {note} |")
    lines += ["", "As served (the app's pipeline: upload decoder, the served LiteRT copy, its fit and TTA; no vehicle "
              "gate). Make = the make group's top label (the make output's, where the model has one); other makes = "
              "share of `web-makes/other-makes/val` (Citroen, Mahindra, Tata) answered with a known make (lower is "
              "better).", "",
              "| # | served copy | Stanford val top-1 | Stanford val make | web-makes/val make | web-audi-bmw make "
              "| other makes answered as a known make |", "|---|---|---:|---:|---:|---:|---:|"]
    for number, row in enumerate(rows, start=1):
        if "served_val_top1" not in row:
            lines.append(f"| {number} | not measured as served | - | - | - | - | - |")
            continue
        lines.append(f"| {number} | {row['served_copy']} | {percent(row['served_val_top1'])} "
                     f"| {percent(row['served_val_make'])} | {percent(row.get('served_web_makes_make'))} "
                     f"| {percent(row.get('served_web_audi_bmw_make'))} | {percent(row.get('served_other_as_known_make'))} |")
    lines += ["", "Commands:", ""]
    lines += [f"{number}. {row['name']}: `{row['command']}`" for number, row in enumerate(rows, start=1)]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    """Measure the zoo and write the results."""
    args = parse_args(argv)
    zoo = yaml.safe_load(args.zoo.read_text(encoding="utf-8"))["models"]
    args.results_dir.mkdir(parents=True, exist_ok=True)
    results_file = args.results_dir / "model_zoo.json"
    previous = {}
    if results_file.exists():
        previous = {row["name"]: row for row in json.loads(results_file.read_text())["models"]}
    rows = []
    for entry in zoo:
        folder = Path(entry["artifact"]) if Path(entry["artifact"]).is_absolute() else REPO_ROOT / entry["artifact"]
        wanted = not args.only or entry["name"] in args.only
        if wanted and (folder / "model.tflite").is_file():
            print(f"measuring {entry['name']} ({folder}) ...", flush=True)
            rows.append(measure(entry, args.stanford, args.web, args.web_makes))
        elif entry["name"] in previous:
            rows.append({**previous[entry["name"]], "command": entry["command"],
                         "notes": entry.get("notes", previous[entry["name"]].get("notes", "")),
                         "remeasured_this_run": False})
        else:
            print(f"skipped {entry['name']}: no {folder / 'model.tflite'} and no earlier figures")
    load = os.getloadavg()[0]
    environment = f"{os.cpu_count()} CPU cores, load average {load:.1f} at the end"
    results_file.write_text(json.dumps({"environment": environment, "models": rows}, indent=2) + "\n")
    (args.results_dir / "model_zoo.md").write_text(markdown(rows, environment), encoding="utf-8")
    print(markdown(rows, environment))
    if args.results_dir == RESULTS_DIR:
        from benchmarks.serve import update_readme

        print(f"Manual blocks filled: {', '.join(update_readme())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
