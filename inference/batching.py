"""Optional micro-batching: concurrent requests of one worker share one model invocation.

:class:`MicroBatcher` wraps a runtime (a callable from a float32 ``(N, H, W, 3)`` batch to probabilities)
and has the same interface. Calls from request threads are queued; one collector thread per process
stacks what is queued - up to ``max_size`` images, waiting at most ``timeout_ms`` after the first - runs
the runtime once and hands every caller its own rows.

It pays off only where one invocation of N images costs less than N invocations of one, which depends on
the model and the CPU: the serving benchmark (``python -m benchmarks.serve --batch-max-size N``) measures
it, and the app keeps it off (``BATCH_MAX_SIZE=1``) unless that shows a gain.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np


@dataclass(eq=False)
class _Call:
    """One caller's images and, once run, its probabilities or the error."""

    pixels: np.ndarray
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """A runtime wrapper that merges concurrent calls into batches.

    Args:
        runtime: Callable ``batch -> probabilities`` with ``name`` and ``output_width`` attributes.
        max_size: Most images per invocation (>= 2; 1 would mean no batching).
        timeout_ms: How long the collector waits for more calls after the first one arrives. 0 batches
            only what queued up while the previous invocation ran, adding no latency to a lone request.
    """

    def __init__(self, runtime, max_size: int, timeout_ms: float):
        if max_size < 2:
            raise ValueError(f"max_size must be at least 2, not {max_size}")
        if timeout_ms < 0:
            raise ValueError(f"timeout_ms must not be negative, not {timeout_ms}")
        self.runtime = runtime
        self.max_size = int(max_size)
        self.timeout_s = timeout_ms / 1000.0
        self.batch_sizes: list[int] = []  # recent invocation sizes, for tests and curious operators
        self._forget()
        # The collector thread does not survive fork(): a gunicorn worker starts its own on first use.
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        self._collector: threading.Thread | None = None

    @property
    def name(self) -> str:
        """The wrapped runtime's name (``litert`` or ``keras``)."""
        return self.runtime.name

    @property
    def output_width(self) -> int:
        """Number of classes the network outputs."""
        return self.runtime.output_width

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities for ``batch``, computed together with other threads' concurrent calls.

        Args:
            batch: float32 ``(N, H, W, 3)``; ``N >= max_size`` runs on its own at once.

        Returns:
            ``(N, num_classes)`` probabilities, the rows of ``batch`` in order.
        """
        if batch.shape[0] >= self.max_size:
            return self.runtime(batch)
        call = _Call(batch)
        self._ensure_collector()
        self._queue.put(call)
        call.done.wait()
        if call.error is not None:
            raise call.error
        return call.result

    def _ensure_collector(self) -> None:
        if self._collector is None:
            with self._lock:
                if self._collector is None:
                    self._collector = threading.Thread(target=self._collect_forever, args=(self._queue,),
                                                       name="micro-batcher", daemon=True)
                    self._collector.start()

    def _collect_forever(self, calls: queue.SimpleQueue) -> None:
        carried = None  # a call that did not fit in the previous batch
        while True:
            first = carried or calls.get()
            carried = None
            batch, size = [first], first.pixels.shape[0]
            deadline = time.monotonic() + self.timeout_s
            while size < self.max_size:
                try:
                    remaining = deadline - time.monotonic()
                    following = calls.get(timeout=remaining) if remaining > 0 else calls.get_nowait()
                except queue.Empty:
                    break
                if size + following.pixels.shape[0] > self.max_size:
                    carried = following
                    break
                batch.append(following)
                size += following.pixels.shape[0]
            self._run(batch)

    def _run(self, batch: list[_Call]) -> None:
        """Invoke the runtime once for every queued call and wake the callers."""
        try:
            stacked = batch[0].pixels if len(batch) == 1 else np.concatenate([c.pixels for c in batch])
            probabilities = self.runtime(stacked)
            self.batch_sizes = [*self.batch_sizes[-99:], len(stacked)]
            start = 0
            for call in batch:
                end = start + call.pixels.shape[0]
                call.result = probabilities[start:end]
                start = end
        except BaseException as exc:  # whatever happens, no caller may wait forever
            for call in batch:
                call.error = exc
        for call in batch:
            call.done.set()
