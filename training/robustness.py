"""Robustness to small adversarial perturbations: FGSM evaluation and FGSM-augmented training.

The fast gradient sign method (Goodfellow et al., 2015) moves every pixel by ``epsilon`` in the
direction that increases the loss of the true class: ``x' = clip(x + epsilon * sign(grad_x loss), 0, 255)``.

Epsilons are in pixel units of the model input, 0..255 (the models here take RGB pixels 0..255):
``epsilon = 1`` changes each channel of each pixel by at most one grey level; the common
"8/255" of the literature is ``epsilon = 8``. The report also gives each one as a fraction of the range.

``python -m training evaluate --fgsm 0.5,1,2,4`` writes ``report/robustness.json`` (accuracy and share
of changed answers per epsilon), ``report/robustness.png`` and ``report/fgsm_examples.png``;
``python -m training train --adversarial EPS`` adds an FGSM copy of every training batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from training import export as export_lib  # noqa: E402

EXAMPLES = 4
PIXEL_RANGE = 255.0


def parse_epsilons(text: str) -> list[float]:
    """Read ``"0.5,1,2,4"`` as sorted, distinct epsilons in pixel units.

    Raises:
        ValueError: An entry is not a number, or is negative or above 255.
    """
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        value = float(part)
        if not 0.0 <= value <= PIXEL_RANGE:
            raise ValueError(f"FGSM epsilon {value} is outside 0..255 (pixel units)")
        values.append(value)
    if not values:
        raise ValueError("no FGSM epsilon given, e.g. --fgsm 0.5,1,2,4")
    return sorted(set(values))


def gradient_sign(model, images, one_hot_labels):
    """``sign(d loss / d images)`` for a batch: the FGSM direction, the same for every epsilon.

    Args:
        model: Keras classifier, float32 RGB 0..255 in, probabilities out.
        images: ``(N, H, W, 3)`` float32 tensor or array.
        one_hot_labels: ``(N, C)`` true labels.

    Returns:
        A tensor like ``images`` with values -1, 0 or 1.
    """
    import keras
    import tensorflow as tf

    images = tf.convert_to_tensor(images, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(images)
        probabilities = model(images, training=False)
        loss = keras.losses.categorical_crossentropy(tf.cast(one_hot_labels, probabilities.dtype), probabilities)
    return tf.sign(tape.gradient(loss, images))


def perturb(images, direction, epsilon: float):
    """``clip(images + epsilon * direction, 0, 255)``."""
    import tensorflow as tf

    return tf.clip_by_value(tf.convert_to_tensor(images, tf.float32) + epsilon * direction, 0.0, PIXEL_RANGE)


def evaluate_robustness(model, class_names: list[str], paths: list[str], labels: list[int], *,
                        image_size: tuple[int, int], resize_mode: str, epsilons: list[float],
                        report_dir: str | Path, batch_size: int = 32, split_name: str = "val",
                        limit: int | None = None) -> dict[str, Any]:
    """Accuracy under FGSM at each epsilon; writes ``robustness.json``, ``robustness.png`` and examples.

    Args:
        model: Keras classifier taking float32 RGB 0..255.
        class_names: Labels in output order.
        paths: Image files.
        labels: True label indices.
        image_size: ``(height, width)``.
        resize_mode: How images are fitted (as in the artifact's metadata).
        epsilons: Perturbation sizes in pixel units (0..255); 0 is always measured too.
        report_dir: Folder to write into (created).
        batch_size: Batch size.
        split_name: Recorded in the report.
        limit: Use only the first ``limit`` images (FGSM needs a backward pass per batch).

    Returns:
        The report: ``{"split", "num_images", "unit", "results": [{"epsilon", "fraction", "accuracy",
        "changed"}, ...], "examples"}``.
    """
    from training.pipeline import make_dataset

    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    if limit:
        paths, labels = paths[:limit], labels[:limit]
    epsilons = sorted({0.0, *epsilons})
    dataset = make_dataset(paths, labels, num_classes=len(class_names), image_size=image_size,
                           resize_mode=resize_mode, batch_size=batch_size, cache=False)
    correct = {eps: 0 for eps in epsilons}
    changed = {eps: 0 for eps in epsilons}
    total = 0
    examples: dict[str, Any] | None = None
    for images, one_hot in dataset:
        direction = gradient_sign(model, images, one_hot)
        truth = np.argmax(one_hot.numpy(), axis=1)
        clean = None
        for eps in epsilons:
            adversarial = perturb(images, direction, eps) if eps else images
            predicted = np.argmax(np.asarray(model(adversarial, training=False)), axis=1)
            clean = predicted if eps == 0 else clean
            correct[eps] += int((predicted == truth).sum())
            changed[eps] += int((predicted != clean).sum())
            if examples is None and eps == epsilons[-1]:
                examples = {"images": images.numpy()[:EXAMPLES], "adversarial": np.asarray(adversarial)[:EXAMPLES],
                            "truth": truth[:EXAMPLES], "clean": clean[:EXAMPLES], "attacked": predicted[:EXAMPLES],
                            "epsilon": eps}
        total += len(truth)
    results = [{"epsilon": eps, "fraction": round(eps / PIXEL_RANGE, 5),
                "accuracy": round(correct[eps] / max(1, total), 4), "changed": round(changed[eps] / max(1, total), 4)}
               for eps in epsilons]
    report = {"split": split_name, "num_images": total, "unit": "pixels (0..255)", "method": "FGSM",
              "results": results, "examples": "fgsm_examples.png" if examples else None}
    export_lib.write_json(report_dir / "robustness.json", report)
    plot_robustness(results, report_dir / "robustness.png")
    if examples:
        plot_examples(examples, class_names, report_dir / "fgsm_examples.png")
    return report


def plot_robustness(results: list[dict[str, Any]], path: Path) -> None:
    """Accuracy against epsilon."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot([r["epsilon"] for r in results], [r["accuracy"] for r in results], marker="o")
    ax.set_xlabel("FGSM epsilon (pixel units, 0..255)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_examples(examples: dict[str, Any], class_names: list[str], path: Path) -> None:
    """For a few photos: the photo, the perturbation (magnified to be visible), the perturbed photo."""
    count = len(examples["images"])
    fig, axes = plt.subplots(count, 3, figsize=(9, 3 * count), squeeze=False)
    eps = examples["epsilon"]
    for row in range(count):
        image, attacked = examples["images"][row], examples["adversarial"][row]
        noise = (attacked - image) / max(eps, 1e-6)  # -1..1
        panels = [
            (image, f"true {class_names[examples['truth'][row]][:28]}\npredicted {class_names[examples['clean'][row]][:28]}"),
            ((noise + 1.0) * 127.5, f"perturbation x{PIXEL_RANGE / max(eps, 1e-6) / 2:.0f}"),
            (attacked, f"epsilon {eps:g}: predicted\n{class_names[examples['attacked'][row]][:28]}"),
        ]
        for ax, (pixels, title) in zip(axes[row], panels):
            ax.imshow(np.clip(pixels, 0, 255).astype(np.uint8))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def enable_adversarial_training(model, epsilon: float) -> None:
    """Make ``model.fit`` train on every batch plus its FGSM copy at ``epsilon`` (pixel units).

    The model's own ``train_step`` is wrapped, so weights, checkpoints, callbacks and the exported
    model are exactly those of ordinary training; each step sees twice the batch (clean + perturbed,
    with the same labels and sample weights). The perturbation is made with the weights of that step.

    Args:
        model: The Keras classifier about to be fitted (taking float32 RGB 0..255).
        epsilon: FGSM step in pixel units; 0 leaves the model untouched.
    """
    if not epsilon:
        return
    import keras
    import tensorflow as tf

    plain_step = type(model).train_step

    def adversarial_step(data):
        images, labels, weights = keras.utils.unpack_x_y_sample_weight(data)
        adversarial = tf.stop_gradient(perturb(images, gradient_sign(model, images, labels), epsilon))
        images = tf.concat([tf.cast(images, tf.float32), adversarial], axis=0)
        labels = tf.concat([labels, labels], axis=0)
        if weights is not None:
            weights = tf.concat([weights, weights], axis=0)
        return plain_step(model, keras.utils.pack_x_y_sample_weight(images, labels, weights))

    model.train_step = adversarial_step
