"""Concurrent requests' images through the model in one call: a request waits for the model, not for the others.

One image's model call costs about as much as eight (TensorFlow CPU, the seed network: 0.9 ms against 1.4 ms;
the time goes to Keras's and TensorFlow's dispatch, not to arithmetic), and a server that makes a call per
request makes its queued requests wait for each other's calls. The batcher's one thread takes every image waiting
when the model is free (up to `max_batch`), and while more are being made for it (announced by `coming()`) it waits
for them, at most `max_wait`: a lone request goes straight through, concurrent ones share a call. On the 2-core
machine of benchmarks/README.md, 8 clients, waiting at most 16 ms took the mean batch from 1.4 images (no wait) to
6.6 and requests/s up by 16%: the model call takes 1.5-3 ms there, whatever the batch, with the cores contended.

Every request gets its own row or its own error: a batch whose call fails is retried image by image, so one bad
image fails only its request. Bounded: at most `max_queue` images wait (more is a Busy, the server's 503), and a
request whose answer has not come in `timeout` seconds gets a Busy too; its image is skipped if not yet taken.
"""

import asyncio
import queue
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np


class Busy(Exception):
    """The model is too far behind to take this image now: a 503, to try again in a moment."""


@dataclass
class _Job:
    image: np.ndarray
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop


POLL = 0.0005  # seconds: how often a gathering batch checks that images are still being made for it
_STOP = object()  # put on the queue by close(): everything before it is answered first


class Batcher:
    """`await batcher(image)`: `predict`'s row for one (H, W, C) image, `predict` being called on (N, H, W, C)
    batches of the images waiting, in one thread (started by the first image, stopped by close())."""

    def __init__(self, predict, max_batch=64, max_wait=0.016, max_queue=1024, timeout=30.0):
        self.predict, self.max_batch, self.max_wait, self.timeout = predict, max_batch, max_wait, timeout
        self._queue = queue.Queue(max_queue)
        self._thread = None
        self._lifecycle = threading.Lock()  # submitting and closing never interleave: no image is left behind
        self._coming, self._counting = 0, threading.Lock()

    @contextmanager
    def coming(self):
        """Around making an image that will be sent to this batcher: the batch being gathered waits for it."""
        with self._counting:
            self._coming += 1
        try:
            yield
        finally:
            with self._counting:
                self._coming -= 1

    async def __call__(self, image) -> np.ndarray:
        loop = asyncio.get_running_loop()
        job = _Job(image, loop.create_future(), loop)
        with self._lifecycle:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="cnnlab-batcher", daemon=True)
                self._thread.start()
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                raise Busy(f"{self._queue.maxsize} images are already waiting for the model") from None
        try:  # a request that gives up (timed out, client gone) cancels its future: the thread skips its image
            return await asyncio.wait_for(job.future, self.timeout)
        except asyncio.TimeoutError:
            raise Busy(f"the model did not answer within {self.timeout:g} s") from None

    def close(self):
        """Answer what is waiting, then stop the thread (the next image starts a new one)."""
        with self._lifecycle:
            if self._thread is not None:
                self._queue.put(_STOP)
                self._thread.join()
                self._thread = None

    def _serve(self):
        while True:
            jobs = [self._queue.get()]
            deadline = time.monotonic() + self.max_wait
            while len(jobs) < self.max_batch and jobs[-1] is not _STOP:
                # what is queued; then, while images are being made, what comes before the deadline (in short
                # waits: an image that fails to be made comes never)
                wait = min(deadline - time.monotonic(), POLL) if self._coming else 0
                try:
                    jobs.append(self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait())
                except queue.Empty:
                    if wait <= 0:
                        break
            stop = jobs[-1] is _STOP
            self._answer([job for job in jobs if job is not _STOP and not job.future.done()])
            if stop:
                return

    def _answer(self, jobs):
        if not jobs:
            return
        try:
            outcomes = [(row, None) for row in self.predict(np.stack([job.image for job in jobs]))]
        except Exception as e:
            outcomes = [self._alone(job) for job in jobs] if len(jobs) > 1 else [(None, e)]
        by_loop = {}
        for job, outcome in zip(jobs, outcomes):
            by_loop.setdefault(job.loop, []).append((job.future, outcome))
        for loop, settled in by_loop.items():  # one wake-up of each event loop per batch
            try:
                loop.call_soon_threadsafe(_settle, settled)
            except RuntimeError:  # that loop is closed: its requests are gone
                pass

    def _alone(self, job):
        try:
            return self.predict(job.image[None])[0], None
        except Exception as e:
            return None, e


def _settle(settled):
    for future, (row, error) in settled:
        if future.done():  # cancelled: the request gave up
            continue
        if error is None:
            future.set_result(row)
        else:
            future.set_exception(error)
