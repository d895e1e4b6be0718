"""Gallery benchmark: teach three makes the model never had, by example, and count what changes.

Teaches the makes in ``web-makes/other-makes`` (Citroen, Mahindra, Tata) with k photos each from their
``train/`` folders (a seeded draw), and answers as the app does: the model's answer, then
:meth:`inference.gallery.Gallery.answer` beside it with the threshold from
:func:`inference.gallery.calibrate` (leave-one-out over the taught photos, and the model's own validation
photos as negatives, and the artifact's references: embeddings of its own training photos, when it
ships ``references.npy``). Reports

* on the taught makes' ``val/`` photos, the share answered with the right taught make (and with any
  taught label);
* on Stanford ``val/`` and ``web-makes/val`` (makes the model knows), the share whose answer changed to
  a taught label: false overrides. Stanford val is split by a seeded draw: one half are the calibration
  negatives, the other half is measured, so no photo is both;
* the same taught-make share with matches judged by their similarity alone (no references), the way a
  model without ``references.npy`` answers, to show what the references add;
* the ceiling: the most taught-make photos any threshold answers with false overrides within the aim,
  the threshold chosen on the measured photos themselves (what the embedding could do at best);
* the floor study: for each ``--floors`` value, the taught-make share and the worst false overrides
  over ``--draws`` random draws of the taught photos, which says whether the threshold floor
  (``GALLERY_MIN_SIMILARITY``) still does work that the calibration alone would not, and the same
  draws judged by the margin over the references;
* the latency a gallery adds per request: the feature-map output read with the probabilities (one
  invocation either way), plus the similarity search and the decision, at 0, 100, 1,000 and 10,000
  examples (synthetic unit vectors of the model's width beyond the taught ones; the search does not
  depend on their values). With 0 examples the pipeline reads no feature map: nothing is added.

Every photo goes through the app's decoding (:func:`inference.imaging.decode_upload`), model and vehicle
gate once; the answers for each k are then recomputed from those outcomes. Writes
``benchmarks/results/gallery.json`` and ``.md`` and copies the table into the README.

Usage: ``python -m benchmarks.gallery [--k 5 10 20 50] [--limit N]`` (``--limit`` caps the photos per set,
for a quick run; the results file says so).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import numpy as np

from benchmarks.serve import REPO_ROOT, RESULTS_DIR, machine_description, update_readme

DATASETS = REPO_ROOT.parent / "shared" / "datasets"
TAUGHT = ("Citroen", "Mahindra", "Tata")
SIZES = (0, 100, 1_000, 10_000)
MAX_PIXELS = 40_000_000  # the app's default MAX_IMAGE_PIXELS
SEED = 23
AIM_ANSWERED, AIM_FALSE, AIM_P50_MS = 0.70, 0.01, 1.0


def parse_args(argv=None) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gallery", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", type=Path, default=REPO_ROOT / "model_artifacts" / "default")
    parser.add_argument("--gate", type=Path, default=REPO_ROOT / "model_artifacts" / "vehicle-gate")
    parser.add_argument("--data", type=Path, default=DATASETS)
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 20, 50], help="photos taught per make")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos per measured set (0: all)")
    parser.add_argument("--repeats", type=int, default=200, help="timed searches per gallery size")
    parser.add_argument("--floors", type=float, nargs="+", metavar="F",
                        help="threshold floors to compare (the first makes the main table; default: the app's "
                        "GALLERY_MIN_SIMILARITY default, then 0.5: calibration alone)")
    parser.add_argument("--draws", type=int, default=8, help="random draws of the taught photos per floor and k")
    parser.add_argument("--no-references", action="store_true",
                        help="judge matches by similarity alone even when the model ships references.npy")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--render-only", action="store_true",
                        help="write gallery.md and the README table from the stored gallery.json, measure nothing")
    return parser.parse_args(argv)


def images_under(folder: Path) -> list[Path]:
    """Every photo in the class folders under ``folder``, sorted."""
    return sorted(p for p in folder.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})


def draw(paths: list[Path], count: int, seed: int = SEED) -> list[Path]:
    """A seeded sample of ``count`` paths (all of them when ``count`` is 0 or more than there are)."""
    if not count or count >= len(paths):
        return list(paths)
    return sorted(random.Random(seed).sample(paths, count))


class Answerer:
    """The app's model side for one photo: decode, classify with the embedding, vehicle gate, answer."""

    def __init__(self, model: Path, gate: Path | None):
        from inference.classifier import load_classifier
        from inference.gate import load_vehicle_gate

        self.classifier = load_classifier(model, runtime="litert", num_threads=1, variant="float32")
        self.gate = load_vehicle_gate(str(gate), num_threads=1) if gate and gate.is_dir() else None

    def outcome(self, path: Path) -> dict:
        """The model's answer, verdict and embedding of one photo."""
        from inference.answers import choose_answer
        from inference.gate import judge
        from inference.imaging import decode_upload

        classifier = self.classifier
        photo = decode_upload(path.read_bytes(), max_pixels=MAX_PIXELS, target=classifier.image_size,
                              resize_mode=classifier.resize_mode)
        outcome = classifier.predict(photo.image, top_k=5, embed=True)
        verdict = judge(outcome.top_k, classifier.metadata, self.gate,
                        self.gate.score(photo.image) if self.gate else None)
        answer = choose_answer(outcome.top_k[0], verdict.threshold, outcome.groups, classifier.groupings,
                               verdict.verdict)
        return {"answer": answer, "verdict": verdict.verdict, "embedding": outcome.embedding}

    def outcomes(self, paths: list[Path]) -> list[dict]:
        """:meth:`outcome` of every path (photos the app would refuse are left out)."""
        from inference.errors import InferenceError

        result = []
        for path in paths:
            try:
                result.append({**self.outcome(path), "path": path})
            except InferenceError:
                continue
        return result


def answers_with(gallery, outcomes: list[dict]) -> list[dict | None]:
    """Each photo's answer with ``gallery`` beside the model (as :func:`inference.pipeline.answer_photo`)."""
    return [gallery.answer(o["embedding"], o["answer"], o["verdict"]) for o in outcomes]


def taught_gallery(taught: dict[str, list[dict]], negatives: np.ndarray, floor: float,
                   references: np.ndarray | None = None):
    """The gallery of the taught outcomes, its threshold calibrated as the app does; with its calibration."""
    from inference.gallery import Gallery, calibrate

    examples = [(make, o["embedding"]) for make, outcomes in taught.items() for o in outcomes]
    labels = [make for make, _ in examples]
    matrix = np.stack([vector for _, vector in examples])
    calibration = calibrate(matrix, labels, negatives, floor=floor, references=references)
    return Gallery.build(matrix, labels, ["make"] * len(labels), threshold=calibration.threshold,
                         references=references), calibration


def measure_k(k: int, train: dict[str, list[dict]], taught_val: dict[str, list[dict]], negatives: np.ndarray,
              known: dict[str, list[dict]], floor: float, references: np.ndarray | None = None) -> dict:
    """Teach ``k`` photos per make; the answered share on the taught makes, false overrides elsewhere."""
    gallery, calibration = taught_gallery({make: train[make][:k] for make in TAUGHT}, negatives, floor, references)
    matrix, labels = gallery.embeddings, list(gallery.labels)
    row = {"k": k, "floor": floor, "references": 0 if references is None else len(references),
           "examples": len(labels), "threshold": round(calibration.threshold, 4),
           "loo_accuracy": {label: round(value, 3) for label, value in calibration.accuracy.items()}}
    right = total = any_taught = 0
    per_make = {}
    for make, outcomes in taught_val.items():
        answers = answers_with(gallery, outcomes)
        hits = sum(1 for a in answers if a and a.get("source") == "gallery" and a["label"] == make)
        per_make[make] = round(hits / max(1, len(outcomes)), 4)
        right += hits
        any_taught += sum(1 for a in answers if a and a.get("source") == "gallery")
        total += len(outcomes)
    row["taught_val"] = {"photos": total, "answered_with_taught_make": round(right / max(1, total), 4),
                         "answered_with_any_taught_label": round(any_taught / max(1, total), 4),
                         "per_make": per_make}
    row["false_overrides"] = {}
    for name, outcomes in known.items():
        answers = answers_with(gallery, outcomes)
        changed = sum(1 for a in answers if a and a.get("source") == "gallery")
        row["false_overrides"][name] = {"photos": len(outcomes), "changed": changed,
                                        "share": round(changed / max(1, len(outcomes)), 4)}
    row["ceiling"] = ceiling(matrix, labels, taught_val, known, references)
    return row


def floor_study(train: dict[str, list[dict]], taught_val: dict[str, list[dict]], negatives: np.ndarray,
                known: dict[str, list[dict]], ks: list[int], floors: list[float], draws: int,
                references: np.ndarray | None = None) -> list[dict]:
    """Per floor and k, the taught-make share (mean) and the false overrides (worst) over random draws,
    matches judged by similarity; with ``references``, the same for the margin rule (floor ``"margin"``)."""
    rows = []
    modes = [(floor, None) for floor in floors] + ([("margin", references)] if references is not None else [])
    for floor, mode_references in modes:
        for k in ks:
            hits, worst = [], 0.0
            for seed in range(1, draws + 1):
                taught = {make: random.Random(seed * 100 + index).sample(train[make], min(k, len(train[make])))
                          for index, make in enumerate(TAUGHT)}
                gallery, _ = taught_gallery(taught, negatives, floors[0] if floor == "margin" else floor,
                                            mode_references)
                right = sum(1 for make, outcomes in taught_val.items() for a in answers_with(gallery, outcomes)
                            if a and a.get("source") == "gallery" and a["label"] == make)
                hits.append(right / max(1, sum(len(o) for o in taught_val.values())))
                worst = max([worst] + [sum(1 for a in answers_with(gallery, o) if a and a.get("source") == "gallery")
                                       / max(1, len(o)) for o in known.values()])
            rows.append({"floor": floor, "k": k, "draws": draws, "mean_answered": round(float(np.mean(hits)), 4),
                         "worst_false_override": round(worst, 4)})
    return rows


def ceiling(matrix: np.ndarray, labels: list[str], taught_val: dict[str, list[dict]],
            known: dict[str, list[dict]], references: np.ndarray | None = None) -> dict:
    """What this embedding could reach at best: the threshold that answers the most taught-make photos
    while false overrides stay within the aim on every known set, chosen on the measured photos
    themselves (an upper bound, not a calibrated figure). With references the thresholds are margins."""
    from inference.gallery import Gallery

    best = {"threshold": None, "answered_with_taught_make": 0.0}
    candidates = np.arange(-0.20, 0.40, 0.01) if references is not None else np.arange(0.50, 0.99, 0.01)
    for threshold in candidates:
        gallery = Gallery.build(matrix, labels, ["make"] * len(labels), threshold=float(threshold),
                                references=references)
        false = max(sum(1 for a in answers_with(gallery, o) if a and a.get("source") == "gallery") / max(1, len(o))
                    for o in known.values())
        if false > AIM_FALSE:
            continue
        hits = sum(1 for make, outcomes in taught_val.items() for a in answers_with(gallery, outcomes)
                   if a and a.get("source") == "gallery" and a["label"] == make)
        share = hits / max(1, sum(len(o) for o in taught_val.values()))
        if share > best["answered_with_taught_make"]:
            best = {"threshold": round(float(threshold), 2), "answered_with_taught_make": round(share, 4)}
    return best


def latency(answerer: Answerer, photos: list[Path], width: int, repeats: int,
            references: np.ndarray | None = None) -> dict:
    """Added time per request: the feature-map read (paired, same photos) and the search at each size
    (with the references, when there are some, searched as well)."""
    from inference.gallery import Gallery
    from inference.imaging import decode_upload

    classifier = answerer.classifier
    images = [decode_upload(p.read_bytes(), max_pixels=MAX_PIXELS, target=classifier.image_size,
                            resize_mode=classifier.resize_mode).image for p in photos]
    plain, embedded = [], []
    for repeat in range(10):
        for image in images:
            # Pairs on the same photo, in alternating order, so that neither side always runs second.
            for embed in ((False, True) if repeat % 2 else (True, False)):
                started = time.perf_counter()
                classifier.predict(image, top_k=5, embed=embed)
                (embedded if embed else plain).append((time.perf_counter() - started) * 1000)
    invocation = {"plain_p50_ms": round(statistics.median(plain), 3),
                  "with_embedding_p50_ms": round(statistics.median(embedded), 3),
                  # The median of the paired differences: load from other processes falls on both sides of
                  # a pair alike, where the difference of two medians would carry it.
                  "added_p50_ms": round(statistics.median(e - p for e, p in zip(embedded, plain)), 3)}
    rng = np.random.default_rng(SEED)
    probe = rng.standard_normal(width).astype(np.float32)
    probe /= np.linalg.norm(probe)
    galleries = {size: Gallery.build(rng.standard_normal((size, width)).astype(np.float32),
                                     [f"label-{i % 50}" for i in range(size)], ["make"] * size, threshold=0.8,
                                     references=references)
                 for size in SIZES if size}
    times: dict[int, list[float]] = {size: [] for size in galleries}
    # Sizes interleaved, so that a burst of load from other processes falls on all of them alike.
    for _ in range(repeats):
        for size, gallery in galleries.items():
            started = time.perf_counter()
            gallery.answer(probe, {"level": "class", "label": "x", "score": 0.5}, "ok")
            times[size].append((time.perf_counter() - started) * 1000)
    search = {"0": {"p50_ms": 0.0, "p95_ms": 0.0, "note": "no feature map read, no search"}}
    for size, values in times.items():
        values.sort()
        search[str(size)] = {"p50_ms": round(values[len(values) // 2], 4),
                             "p95_ms": round(values[int(len(values) * 0.95)], 4)}
    return {"invocation": invocation, "search": search}


def markdown(report: dict) -> str:
    """The README table."""
    alone = {row["k"]: row for row in report.get("similarity_only") or []}
    lines = ["| Photos taught per make | Threshold | Taught makes' val answered with the make | "
             "False overrides, Stanford val | False overrides, web-makes val | Ceiling at <= 1 % false overrides |"
             + (" Similarity alone: answered (false overrides, worst) |" if alone else ""),
             "|---:|---:|---:|---:|---:|---:|" + ("---:|" if alone else "")]
    for row in report["results"]:
        stanford, web = row["false_overrides"]["stanford-val"], row["false_overrides"]["web-makes-val"]
        line = (f"| {row['k']} | {row['threshold']:.3f} | "
                f"{row['taught_val']['answered_with_taught_make'] * 100:.1f} % "
                f"(of {row['taught_val']['photos']}) | {stanford['share'] * 100:.2f} % "
                f"({stanford['changed']} of {stanford['photos']}) | {web['share'] * 100:.2f} % "
                f"({web['changed']} of {web['photos']}) | "
                f"{row['ceiling']['answered_with_taught_make'] * 100:.1f} % (at {row['ceiling']['threshold']}) |")
        if row["k"] in alone:
            other = alone[row["k"]]
            worst = max(entry["share"] for entry in other["false_overrides"].values())
            line += f" {other['taught_val']['answered_with_taught_make'] * 100:.1f} % ({worst * 100:.2f} %) |"
        lines.append(line)
    timing = report["latency"]
    lines += ["", "| Gallery examples | 0 | 100 | 1,000 | 10,000 |", "|---|---:|---:|---:|---:|"]
    search = timing["search"]
    added = timing["invocation"]["added_p50_ms"]
    lines.append("| Search and decision, p50 | " + " | ".join(
        f"{search[str(size)]['p50_ms']:.3f} ms" for size in SIZES) + " |")
    lines.append("| Added per request, p50 (feature map read + search) | 0 ms | " + " | ".join(
        f"{max(0.0, added) + search[str(size)]['p50_ms']:.2f} ms" for size in SIZES[1:]) + " |")
    study = report.get("floor_study") or []
    if study:
        ks = sorted({row["k"] for row in study})
        lines += ["", "| Rule | " + " | ".join(f"k = {k}" for k in ks) + " |", "|---|" + "---:|" * len(ks)]
        for floor in dict.fromkeys(row["floor"] for row in study):
            cells = {row["k"]: row for row in study if row["floor"] == floor}
            name = "margin over the references" if floor == "margin" else f"similarity, floor {floor:.2f}"
            lines.append(f"| {name} | " + " | ".join(
                f"{cells[k]['mean_answered'] * 100:.1f} % ({cells[k]['worst_false_override'] * 100:.2f} %)"
                for k in ks) + " |")
        lines += ["", f"Random draws: the taught makes' val photos answered with the make, the mean over "
                  f"{study[0]['draws']} random draws of the taught photos, and in brackets the worst false "
                  "overrides on either known set in any draw; the threshold is calibrated as in the app (by "
                  "similarity: never below the floor)."]
    lines += ["", aims_line(report), ""]
    limited = f" Capped at {report['limit']} photos per measured set." if report["limit"] else ""
    if report.get("references"):
        how = (f"matches judged by their margin over the nearest of the model's {report['references']:,} "
               "references (embeddings of its own training photos, `references.npy`); the threshold is the "
               f"margin that at most {report.get('max_false_rate', 0.002):.1%} of the references and of "
               f"{report['negatives']} Stanford val photos (the other {report['stanford_measured']} are measured) "
               f"clear, with {report['target_precision']:.0%} precision on leave-one-out over the taught photos. "
               "The last column judges matches by similarity alone, as for a model without references")
    else:
        how = (f"threshold calibrated for {report['target_precision']:.0%} precision on leave-one-out over the "
               f"taught photos plus {report['negatives']} Stanford val photos as negatives (the other "
               f"{report['stanford_measured']} are measured)")
    lines += [f"Model `{report['model']}`; {how}. Feature-map read: model invocation p50 {timing['invocation']['plain_p50_ms']:.1f}"
              f" ms without, {timing['invocation']['with_embedding_p50_ms']:.1f} ms with it, on a shared, "
              f"busy machine ({report['machine']['cores']} cores).{limited} The ceiling is the most this "
              "embedding answers with a threshold chosen on the measured photos themselves (an upper bound, "
              "not a calibrated figure). From `benchmarks/results/gallery.json`.", ""]
    return "\n".join(lines)


def aims_line(report: dict) -> str:
    """Whether each aim was met, in words, from the measured figures."""
    at_20 = next((row for row in report["results"] if row["k"] == 20), None)
    parts = []
    if at_20:
        answered = at_20["taught_val"]["answered_with_taught_make"]
        parts.append(f"{answered:.1%} of the taught makes' val photos answered at 20 photos per make "
                     f"({'met' if answered >= AIM_ANSWERED else 'not met'}: aim {AIM_ANSWERED:.0%})")
    worst = max(entry["share"] for row in report["results"] for entry in row["false_overrides"].values())
    parts.append(f"false overrides at most {worst:.2%} at any k ({'met' if worst <= AIM_FALSE else 'not met'}: "
                 f"aim {AIM_FALSE:.0%})")
    added = max(0.0, report["latency"]["invocation"]["added_p50_ms"]) + report["latency"]["search"]["1000"]["p50_ms"]
    parts.append(f"{added:.2f} ms added at 1,000 examples ({'met' if added <= AIM_P50_MS else 'not met'}: "
                 f"aim {AIM_P50_MS:g} ms)")
    return "**Aims:** " + "; ".join(parts) + "."


def main(argv=None) -> None:
    """Measure every k and the latency, write the results."""
    from inference.gallery import (DEFAULT_MAX_FALSE_RATE, DEFAULT_MIN_SIMILARITY, DEFAULT_TARGET_PRECISION,
                                   load_references)

    args = parse_args(argv)
    floors = args.floors or [DEFAULT_MIN_SIMILARITY, 0.5]
    if args.render_only:  # the table again from the stored figures (after a change to its wording)
        report = json.loads((args.out / "gallery.json").read_text(encoding="utf-8"))
        (args.out / "gallery.md").write_text(markdown(report), encoding="utf-8")
        if args.out == RESULTS_DIR:
            print("README blocks filled:", ", ".join(update_readme()))
        return
    answerer = Answerer(args.model, args.gate)
    other = args.data / "web-makes" / "other-makes"
    started = time.perf_counter()
    # Every taught make's train photo when random draws are asked for (at most --limit, never fewer than the
    # largest k), else a seeded draw of the largest k.
    everyone = max(max(args.k), args.limit) if args.limit else (0 if args.draws else max(args.k))
    train = {make: answerer.outcomes(draw(sorted((other / "train" / make).glob("*")), everyone)) for make in TAUGHT}
    for make in TAUGHT:  # the first k of a seeded order: a larger k keeps the smaller k's photos
        random.Random(SEED).shuffle(train[make])
    taught_val = {make: answerer.outcomes(draw(sorted((other / "val" / make).glob("*")), args.limit))
                  for make in TAUGHT}
    stanford = images_under(args.data / "stanford-cars" / "val")
    shuffled = random.Random(SEED).sample(stanford, len(stanford))
    half = len(shuffled) // 2
    calibration_paths, measured_paths = sorted(shuffled[:half]), sorted(shuffled[half:])
    negatives = np.stack([o["embedding"] for o in answerer.outcomes(draw(calibration_paths, args.limit))])
    known = {"stanford-val": answerer.outcomes(draw(measured_paths, args.limit)),
             "web-makes-val": answerer.outcomes(draw(images_under(args.data / "web-makes" / "val"), args.limit))}
    print(f"photos answered in {time.perf_counter() - started:.0f} s")
    width = len(negatives[0])
    references = None if args.no_references else load_references(args.model, width)
    results = [measure_k(k, train, taught_val, negatives, known, floors[0], references) for k in sorted(args.k)]
    similarity_only = ([measure_k(k, train, taught_val, negatives, known, floors[0]) for k in sorted(args.k)]
                       if references is not None else [])
    study = (floor_study(train, taught_val, negatives, known, sorted(args.k), floors, args.draws, references)
             if args.draws else [])
    report = {"model": answerer.classifier.name + " " + answerer.classifier.version,
              "target_precision": DEFAULT_TARGET_PRECISION, "max_false_rate": DEFAULT_MAX_FALSE_RATE,
              "negatives": len(negatives),
              "stanford_measured": len(known["stanford-val"]), "limit": args.limit, "seed": SEED,
              "aims": {"answered_at_20": AIM_ANSWERED, "false_overrides": AIM_FALSE, "p50_ms_at_1000": AIM_P50_MS},
              "references": 0 if references is None else len(references),
              "results": results, "similarity_only": similarity_only, "floor_study": study,
              "latency": latency(answerer, measured_paths[:20], width, args.repeats, references),
              "machine": machine_description()}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gallery.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / "gallery.md").write_text(markdown(report), encoding="utf-8")
    print(markdown(report))
    if args.out == RESULTS_DIR:
        print("README blocks filled:", ", ".join(update_readme()))


if __name__ == "__main__":
    main()
