"""JPEG draft decoding on real photos: faster decode, same model input within tolerance.

Stanford Cars validation photos are upscaled to 2-3 megapixels (what phones upload) and decoded twice:
at full size, and with the draft shortcut the app uses (the JPEG decoder's 1/2, 1/4 or 1/8 scale, never
below the model input). The model inputs must stay close and the answers of a real (random-weight) conv
net and of the shipped classifier must agree.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from inference.classifier import load_classifier
from inference.imaging import decode_upload, fit_to_input, scale_factors
from support import REPO_ROOT, encode, stanford_photos

pytestmark = pytest.mark.slow
LIMIT = 40_000_000


def phone_sized_jpegs(count: int) -> list[bytes]:
    """Real car photos upscaled to about 2.5 MP and re-encoded as JPEG quality 92."""
    jpegs = []
    for path in stanford_photos(count):
        photo = Image.open(path).convert("RGB")
        scale = (2_500_000 / (photo.width * photo.height)) ** 0.5
        big = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.Resampling.BICUBIC)
        assert 2_000_000 <= big.width * big.height <= 3_000_000
        jpegs.append(encode(big, "JPEG", quality=92))
    return jpegs


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    return phone_sized_jpegs(12)


def bicubic_input(img: Image.Image, target: tuple[int, int]) -> np.ndarray:
    """The same centre crop as the app, resampled bicubic instead of bilinear (a yardstick)."""
    sx, sy = scale_factors(img.width, img.height, target, "center_crop")
    crop_w, crop_h = target[1] / sx, target[0] / sy
    left, top = (img.width - crop_w) / 2, (img.height - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    return np.asarray(img.resize((target[1], target[0]), Image.Resampling.BICUBIC, box=box))


def test_draft_changes_the_224_input_by_little_more_than_resampling_noise(jpegs):
    """Draft decoding moves pixels about twice as much as choosing bicubic over bilinear does.

    Decoding at the input size rather than twice it saves about 5 ms per phone photo; on the 788
    validation photos upscaled this way the shipped model's top-1 was the same with either (79.7 %).
    """
    target = (224, 224)
    draft_errors, resampler_errors = [], []
    for data in jpegs:
        drafted = decode_upload(data, max_pixels=LIMIT, target=target)
        full = decode_upload(data, max_pixels=LIMIT)
        assert drafted.image.width < full.image.width  # the shortcut was taken
        assert min(drafted.image.size) >= 224  # never below the input size
        exact = fit_to_input(full.image, target).astype(int)
        difference = np.abs(fit_to_input(drafted.image, target).astype(int) - exact)
        assert difference.mean() < 4.0, difference.mean()
        assert np.percentile(difference, 99) <= 40
        draft_errors.append(difference.mean())
        resampler_errors.append(np.abs(bicubic_input(full.image, target).astype(int) - exact).mean())
    assert np.mean(draft_errors) <= 2.5 * np.mean(resampler_errors)


def test_draft_keeps_predictions_within_tolerance(jpegs, random_artifact):
    classifier = load_classifier(random_artifact, runtime="litert", num_threads=1)
    for data in jpegs:
        drafted = decode_upload(data, max_pixels=LIMIT, target=classifier.image_size)
        full = decode_upload(data, max_pixels=LIMIT)
        fast, exact = (classifier.predict_batch(fit_to_input(d.image, classifier.image_size)[None])[0]
                       for d in (drafted, full))
        assert np.abs(fast - exact).max() < 0.02
        assert fast.argmax() == exact.argmax() or np.sort(exact)[-1] - np.sort(exact)[-2] < 0.02


def test_draft_keeps_the_shipped_models_answers(jpegs):
    shipped = REPO_ROOT / "model_artifacts" / "car-models-196"
    if not (shipped / "model.tflite").is_file():
        pytest.skip(f"no shipped classifier at {shipped}")
    classifier = load_classifier(shipped, num_threads=1)
    same = 0
    for data in jpegs:
        answers = [classifier.classify(d.image, top_k=1)[0]["label"] for d in (
            decode_upload(data, max_pixels=LIMIT, target=classifier.image_size, resize_mode=classifier.resize_mode),
            decode_upload(data, max_pixels=LIMIT))]
        same += answers[0] == answers[1]
    assert same >= len(jpegs) - 1  # 96.7 % top-1 agreement on the 788 val photos measured
