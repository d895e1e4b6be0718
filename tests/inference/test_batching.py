"""Micro-batching: concurrent calls merged into one invocation, each caller getting its own answer.

The batcher wraps the real LiteRT runtime of a small seeded conv net; a batched call must give the same
probabilities as an unbatched one. Batch composition is made deterministic by holding the first
invocation until every other caller has queued, never by sleeping.
"""

from __future__ import annotations

import io
import os
import signal
import threading
import time

import numpy as np
import pytest

from inference.batching import MicroBatcher
from inference.classifier import load_classifier
from support import COLOR_LABELS


def random_images(count: int, shape=(64, 48, 3), seed: int = 3) -> list[np.ndarray]:
    """Distinct float32 images, one per caller."""
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, shape).astype(np.float32) for _ in range(count)]


class HeldFirstCall:
    """A real runtime whose first invocation waits until ``others`` more calls are queued in ``batcher``."""

    def __init__(self, runtime, others: int):
        self.runtime, self.others = runtime, others
        self.name, self.output_width = runtime.name, runtime.output_width
        self.batcher: MicroBatcher | None = None
        self.entered = threading.Event()
        self.fail_next = False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if not self.entered.is_set():
            self.entered.set()
            deadline = time.monotonic() + 30
            while self.batcher._queue.qsize() < self.others and time.monotonic() < deadline:
                time.sleep(0.001)
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("invocation failed")
        return self.runtime(batch)


@pytest.fixture
def engine(random_artifact):
    """The unwrapped LiteRT runtime of the 10-class random conv net."""
    return load_classifier(random_artifact, runtime="litert", num_threads=1)._runtime


def call_concurrently(batcher: MicroBatcher, held: HeldFirstCall, images: list[np.ndarray]) -> list:
    """One thread per image; the first is started alone and held, the rest queue behind it."""
    results: list = [None] * len(images)

    def call(index: int) -> None:
        try:
            results[index] = batcher(images[index][np.newaxis])
        except Exception as exc:  # handed back to the test
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(images))]
    threads[0].start()
    assert held.entered.wait(30)
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_queued_calls_are_merged_up_to_max_size_and_answered_row_by_row(engine):
    images = random_images(12)
    held = HeldFirstCall(engine, others=11)
    batcher = held.batcher = MicroBatcher(held, max_size=4, timeout_ms=0)
    results = call_concurrently(batcher, held, images)
    assert batcher.batch_sizes == [1, 4, 4, 3]
    for image, result in zip(images, results):
        assert result.shape == (1, 10)
        np.testing.assert_allclose(result[0], engine(image[np.newaxis])[0], atol=1e-5)


def test_a_failed_invocation_reaches_its_callers_and_the_next_batch_still_runs(engine):
    images = random_images(3)
    held = HeldFirstCall(engine, others=2)
    held.fail_next = True
    batcher = held.batcher = MicroBatcher(held, max_size=4, timeout_ms=0)
    results = call_concurrently(batcher, held, images)
    assert isinstance(results[0], RuntimeError)  # the held first call failed alone
    for image, result in zip(images[1:], results[1:]):
        np.testing.assert_allclose(result[0], engine(image[np.newaxis])[0], atol=1e-5)


def test_a_call_that_would_overflow_the_batch_waits_for_the_next(engine):
    """With room for 3, a queued 2-image call after another goes to the next batch, never split or dropped."""
    images = random_images(4)
    calls = [images[0][np.newaxis], np.stack(images[1:3]), np.stack([images[3], images[0]])]
    held = HeldFirstCall(engine, others=2)
    batcher = held.batcher = MicroBatcher(held, max_size=3, timeout_ms=0)
    results = [None] * len(calls)

    def call(index):
        results[index] = batcher(calls[index])

    first = threading.Thread(target=call, args=(0,))
    first.start()
    assert held.entered.wait(30)
    rest = [threading.Thread(target=call, args=(i,)) for i in (1, 2)]
    for thread in rest:
        thread.start()
    for thread in [first, *rest]:
        thread.join(60)
    assert batcher.batch_sizes == [1, 2, 2]
    for batch, result in zip(calls, results):
        np.testing.assert_allclose(result, engine(batch), atol=1e-5)


def test_a_full_batch_runs_at_once_without_the_collector(engine):
    batcher = MicroBatcher(engine, max_size=4, timeout_ms=1000)
    batch = np.stack(random_images(4))
    np.testing.assert_allclose(batcher(batch), engine(batch), atol=1e-6)
    assert batcher._collector is None


def test_a_lone_call_returns_after_the_timeout_with_its_own_answer(engine):
    batcher = MicroBatcher(engine, max_size=8, timeout_ms=5)
    image = random_images(1)[0][np.newaxis]
    np.testing.assert_allclose(batcher(image), engine(image), atol=1e-6)
    assert batcher.batch_sizes == [1]
    assert batcher.name == "litert" and batcher.output_width == 10


@pytest.mark.parametrize("max_size, timeout_ms", [(1, 2.0), (0, 2.0), (4, -1.0)])
def test_settings_that_mean_nothing_are_refused(engine, max_size, timeout_ms):
    with pytest.raises(ValueError):
        MicroBatcher(engine, max_size=max_size, timeout_ms=timeout_ms)


def test_a_forked_worker_starts_its_own_collector(random_artifact):
    """A collector thread running in the parent does not exist in a fork()ed gunicorn worker."""
    classifier = load_classifier(random_artifact, runtime="litert", num_threads=1, batch_max_size=4,
                                 batch_timeout_ms=1)
    image = random_images(1)[0][np.newaxis]
    expected = classifier.predict_batch(image)  # starts the collector in this process
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        signal.alarm(30)  # a hung collector kills the child instead of hanging the suite
        os.write(write_end, classifier.predict_batch(image).astype(np.float32).tobytes())
        os._exit(0)
    os.close(write_end)
    _, status = os.waitpid(child, 0)
    received = np.frombuffer(os.read(read_end, 1000), dtype=np.float32)
    assert os.waitstatus_to_exitcode(status) == 0
    np.testing.assert_allclose(received, expected[0], atol=1e-6)


def test_the_app_with_batching_on_answers_concurrent_uploads(color_artifact, tmp_path, make_image):
    from flask_migrate import upgrade

    from app import create_app
    from app.serving import get_classifier

    app = create_app({"TESTING": True, "MODEL_DIR": str(color_artifact), "SECRET_KEY": "test-secret",
                      "DATABASE_URL": f"sqlite:///{tmp_path / 'batched.db'}", "INFERENCE_THREADS": 1,
                      "BATCH_MAX_SIZE": 4, "BATCH_TIMEOUT_MS": 20.0})
    with app.app_context():
        upgrade()
        assert isinstance(get_classifier()._runtime, MicroBatcher)
        assert get_classifier().runtime == "litert"
    colors = [COLOR_LABELS[i % 3] for i in range(9)]
    answers: list = [None] * len(colors)

    def upload(index: int) -> None:
        response = app.test_client().post("/api/v1/predictions", content_type="multipart/form-data",
                                          data={"image": (io.BytesIO(make_image(colors[index])), "car.jpg")})
        answers[index] = (response.status_code, response.json["predictions"][0]["label"])

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(len(colors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert answers == [(201, color) for color in colors]
    with app.app_context():
        from app.extensions import db

        db.engine.dispose()
