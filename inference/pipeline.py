"""From uploaded bytes to an answer, in the one order every caller shares.

decode -> thumbnail and vehicle check -> classify -> verdict -> answer (model, or a taught label)

The web page, the API (single and batch), the example photos, ``flask classify`` and the benchmarks all
call :func:`answer_photo`, so a photo gets the same answer whichever way it arrives. What happens
around it (reading a request, storing the prediction) stays with the caller.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .answers import choose_answer
from .classifier import Classifier
from .gallery import Gallery
from .gate import VehicleGate, Verdict, judge
from .imaging import DecodedImage, decode_upload, make_thumbnail


class SideWork:
    """A small per-process thread pool for work that can run while the model is invoked.

    The model invocation, Pillow's resize and its JPEG encoder all release the GIL, so the thumbnail and
    the vehicle gate made here cost no wall-clock time on a machine with a spare core. The pool is made
    on first use and forgotten in a forked child: a pool made in a preloading gunicorn master has no
    threads in its workers.
    """

    def __init__(self, max_workers: int = 2):
        self.max_workers = max_workers
        self._forget()
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    def submit(self, fn, /, *args) -> Future:
        """Run ``fn(*args)`` on the pool; returns its future."""
        if self._pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="side-work")
        return self._pool.submit(fn, *args)


side_work = SideWork(max_workers=4)  # thumbnail + gate for each of a web worker's request threads


@dataclass(frozen=True)
class PhotoAnswer:
    """Everything one photo turned into.

    Attributes:
        photo: The decoded upload: the upright RGB image, its size, detected type and sha256.
        thumbnail: Re-encoded JPEG of at most 320 px, no metadata; ``None`` when not asked for.
        top_k: The best classes, ``[{"label", "score"}, ...]`` best first.
        groups: Per label grouping, the best group labels with their scores.
        verdict: ``ok``, ``uncertain`` or ``not_a_car``, with the gate score and the threshold used.
        answer: ``{"level", "label", "score"}`` the model stands behind, or a taught label's (then with
            ``"source": "gallery"`` and ``learned_from``, :func:`.gallery.gallery_answer`), or ``None``.
        latency_ms: Decode to answer, wall time (waiting for the thumbnail is not counted).
    """

    photo: DecodedImage
    thumbnail: bytes | None
    top_k: list[dict[str, Any]]
    groups: dict[str, list[dict[str, Any]]]
    verdict: Verdict
    answer: dict[str, Any] | None
    latency_ms: float


def answer_photo(data: bytes, classifier: Classifier, gate: VehicleGate | None, *, max_pixels: int,
                 top_k: int, thumbnail: bool = True, format_max_pixels: dict[str, int] | None = None,
                 gallery: Gallery | None = None) -> PhotoAnswer:
    """Decode a photo, check it is a vehicle, classify it and choose the answer.

    Args:
        data: The photo's bytes as uploaded (kept in memory only).
        classifier: The loaded classifier.
        gate: The vehicle gate, or ``None`` when it is off (then the verdict is never ``not_a_car``).
        max_pixels: Largest ``width * height`` decoded.
        top_k: Number of classes to keep.
        thumbnail: Also make the thumbnail (alongside the model, on :data:`side_work`).
        format_max_pixels: Lower pixel limits of formats whose decoders need more memory (e.g. WebP).
        gallery: Taught examples beside the model; ``None`` or empty changes nothing and costs nothing.

    Returns:
        The :class:`PhotoAnswer`.

    Raises:
        ImageRejected: The bytes are not a usable photo (see :func:`.imaging.decode_upload`).
    """
    started = time.perf_counter()
    photo = decode_upload(data, max_pixels=max_pixels, format_max_pixels=format_max_pixels,
                          target=classifier.image_size, resize_mode=classifier.resize_mode)
    thumb = side_work.submit(make_thumbnail, photo.image) if thumbnail else None
    vehicle_score = side_work.submit(gate.score, photo.image) if gate is not None else None
    taught = gallery is not None and not gallery.is_empty
    outcome = (classifier.predict(photo.image, top_k=top_k, embed=True) if taught
               else classifier.predict(photo.image, top_k=top_k))
    verdict = judge(outcome.top_k, classifier.metadata, gate, vehicle_score.result() if vehicle_score else None)
    answer = choose_answer(outcome.top_k[0], verdict.threshold, outcome.groups, classifier.groupings,
                           verdict.verdict)
    if taught:
        answer = gallery.answer(outcome.embedding, answer, verdict.verdict)
    latency_ms = (time.perf_counter() - started) * 1000.0
    return PhotoAnswer(photo=photo, thumbnail=thumb.result() if thumb else None, top_k=outcome.top_k,
                       groups=outcome.groups, verdict=verdict, answer=answer, latency_ms=latency_ms)
