"""Uploaded images made into model inputs in processes of their own, so the server's process is left to HTTP and
the model.

Reading a 280x280 canvas PNG and making it MNIST-like takes ~1.4 ms, nearly all of it Python holding the GIL: in
threads of the server's process these ran one at a time, and the event loop and the model waited behind them
(py-spy --gil: 57% of that process's time at 8 clients). `Decoders` sends them to worker processes instead, one
image at a time to each idle worker, the others waiting in order; the event loop reads the answers as they come
(no thread of its own: concurrent.futures' process pool spent a quarter of the server process's time in its two
threads). A worker is `python -m cnnlab.serve.decoding`, talking over its stdin and stdout: it imports NumPy,
Pillow and this module, not Keras (~70 MB, ~0.5 s to start, with the app), and never the script that started the
server, which multiprocessing's workers import again. Figures: benchmarks/README.md.

A worker that dies (a decoder crashing on a crafted file, the OOM killer) is replaced and its image tried once more;
an image that a second worker dies on too is refused as one that cannot be decoded. `processes=0`, or a system
where the workers cannot start or an event loop that cannot watch pipes (Windows' Proactor), decodes in threads of
the server's process instead (at most DECODER_THREADS at once: they bound the memory a burst of uploads takes).

    decoders = Decoders((28, 28, 1), max_pixels=16_000_000)
    await decoders.start()
    image, png = await decoders(png_bytes, preprocess=True)   # preprocess: make it MNIST-like
    await decoders.close()
"""

import asyncio
import collections
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import traceback
from dataclasses import dataclass

import anyio
import anyio.to_thread

from ..errors import ImageError
from ..preprocess import prepare
from .render import input_png

DECODER_PROCESSES = min(4, os.cpu_count() or 1)  # more would wait for the one process that parses HTTP
DECODER_THREADS = os.cpu_count() or 2
TRIES = 2  # workers an image may see die before it is refused
CRASHED = f"the image decoder crashed on this image {TRIES} times; the file is damaged or made to crash it"
READY = "ready"
HEADER = struct.Struct("!Q")  # each message: its length, then its pickle
log = logging.getLogger(__name__)


def made_input(data, preprocess, max_pixels, shape):
    """(the (H, W, C) model input, its PNG) made from an image file's bytes: a worker's job."""
    image = prepare(data, preprocess, max_pixels, shape).input
    return image, input_png(image)


def _work():
    """A worker process (`python -m cnnlab.serve.decoding`): jobs in on stdin, answers out on stdout, until the
    server closes its stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then closes the pipes
    jobs, answers = os.fdopen(os.dup(0), "rb", buffering=0), os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)  # whatever a library prints goes to the server's log, not into the answers
    try:
        _send(answers, READY)
        while (job := _received(jobs)) is not None:
            _send(answers, _answer(job))
    except BrokenPipeError:  # the server stopped, or closed this worker, first
        return


def _answer(job):
    """(kind, value) for a job: ("input", made_input's pair), ("image error", why) or ("fault", the traceback)."""
    try:
        return "input", made_input(*job)
    except ImageError as e:
        return "image error", str(e)
    except Exception:  # noqa: BLE001  (a fault, not bad input: the server logs it and answers 500)
        return "fault", traceback.format_exc()


def _send(stream, message):
    _write(stream, pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def _write(stream, pickled):
    message = memoryview(HEADER.pack(len(pickled)) + pickled)
    while message:  # an unbuffered pipe may take a large message in parts
        message = message[stream.write(message):]


def _received(stream):
    """The next message on `stream`, or None at its end (its writer closed it, or died)."""
    header = _read_exactly(stream, HEADER.size)
    body = header and _read_exactly(stream, HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(stream, size):
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


@dataclass
class _Job:
    payload: bytes  # pickled once, sent again as it is if its worker dies
    future: asyncio.Future
    tries: int = 0


@dataclass
class _Worker:
    process: subprocess.Popen  # its stdin takes the jobs, its stdout gives the answers
    job: _Job | None = None  # the image it has


class Decoders:
    """`await decoders(data, preprocess)`: (model input, its PNG) for an image file's bytes, or an ImageError."""

    def __init__(self, shape, max_pixels, processes=DECODER_PROCESSES):
        if processes < 0:
            raise ValueError(f"processes must be 0 (threads of this process) or more, not {processes}")
        self.shape, self.max_pixels, self.processes = tuple(shape), max_pixels, processes
        self._threads, self._starting = anyio.CapacityLimiter(DECODER_THREADS), anyio.Lock()
        self._workers, self._waiting, self._loop, self._replacing = [], collections.deque(), None, set()

    async def __call__(self, data, preprocess):
        job = (data, preprocess, self.max_pixels, self.shape)
        if self.processes and self._loop is None:
            await self.start()
        if not self.processes:
            return await anyio.to_thread.run_sync(made_input, *job, limiter=self._threads)
        waiting = _Job(pickle.dumps(job, pickle.HIGHEST_PROTOCOL), self._loop.create_future())
        self._waiting.append(waiting)
        self._dispatch()
        kind, value = await waiting.future
        if kind == "input":
            return value
        if kind == "image error":
            raise ImageError(value)
        raise RuntimeError(f"the image decoder failed:\n{value}")

    async def start(self):
        """Start the worker processes, wait until they are ready (in a thread) and watch them."""
        async with self._starting:
            if self._loop is not None or not self.processes:
                return
            try:
                workers = await anyio.to_thread.run_sync(_started_workers, self.processes)
            except (OSError, RuntimeError) as e:  # no interpreter to run, or it could not import cnnlab
                return self._in_threads(e)
            self._loop = asyncio.get_running_loop()
            try:
                for worker in workers:
                    self._watch(worker)
            except NotImplementedError as e:  # an event loop that cannot watch pipes
                await anyio.to_thread.run_sync(_stop_all, workers)
                self._workers, self._loop = [], None
                return self._in_threads(e)

    async def close(self):
        """Stop the workers (each finishes the image it has); images still waiting are refused."""
        workers, self._workers = self._workers, []
        for worker in workers:
            self._loop.remove_reader(worker.process.stdout.fileno())
        await anyio.to_thread.run_sync(_stop_all, workers)
        while self._waiting:
            _settle(self._waiting.popleft().future, ("fault", "the server is stopping"))
        self._loop = None

    def _in_threads(self, reason):
        log.warning("cannot decode images in processes of their own (%s); decoding in threads instead", reason)
        self.processes = 0

    def _watch(self, worker):
        self._loop.add_reader(worker.process.stdout.fileno(), self._answered, worker)
        self._workers.append(worker)
        self._dispatch()

    def _dispatch(self):
        """Give each idle worker the next image waiting (one at a time: an idle worker reads at once, so sending
        even a 5 MB body through its pipe takes a few ms)."""
        for worker in self._workers:
            while self._waiting and self._waiting[0].future.done():  # its request gave up
                self._waiting.popleft()
            if not self._waiting:
                return
            if worker.job is None:
                worker.job = self._waiting.popleft()
                try:
                    _write(worker.process.stdin, worker.job.payload)
                except OSError:  # it died
                    return self._died(worker)

    def _answered(self, worker):
        answer = _received(worker.process.stdout)
        if answer is None:  # its stdout closed: it died
            return self._died(worker)
        job, worker.job = worker.job, None
        if job is not None:
            _settle(job.future, answer)
        self._dispatch()

    def _died(self, worker):
        self._loop.remove_reader(worker.process.stdout.fileno())
        self._workers.remove(worker)
        _stop(worker)  # reaped: its exit code is known
        log.warning("an image decoder process died (exit code %s); starting another", worker.process.returncode)
        job = worker.job
        if job is not None:
            job.tries += 1
            if job.tries < TRIES:
                self._waiting.appendleft(job)
            else:
                _settle(job.future, ("image error", CRASHED))
        task = self._loop.create_task(self._replace())
        self._replacing.add(task)  # kept until done: the loop holds tasks only weakly
        task.add_done_callback(self._replacing.discard)
        self._dispatch()  # to another idle worker, if there is one

    async def _replace(self):
        try:
            worker, = await anyio.to_thread.run_sync(_started_workers, 1)
        except (OSError, RuntimeError) as e:
            log.warning("cannot start another image decoder (%s)", e)
            if not self._workers and self._loop is not None:  # none left: the images waiting are decoded here
                self._in_threads(e)
                while self._waiting:
                    job = self._waiting.popleft()
                    answer = await anyio.to_thread.run_sync(_answer, pickle.loads(job.payload), limiter=self._threads)
                    _settle(job.future, answer)
            return
        if self._loop is None:  # closed meanwhile
            return await anyio.to_thread.run_sync(_stop, worker)
        self._watch(worker)


def _started_workers(count):
    """`count` worker processes, each ready: its imports done (they start together)."""
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(path for path in sys.path if path)}  # as here
    workers = [_Worker(subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=environment, bufsize=0))
               for _ in range(count)]
    for worker in workers:
        if _received(worker.process.stdout) != READY:
            _stop_all(workers)
            raise RuntimeError(f"an image decoder exited with {worker.process.wait()} before it was ready "
                               "(its error is in the log above)")
    return workers


def _stop(worker):
    for pipe in (worker.process.stdin, worker.process.stdout):
        pipe.close()  # the worker reads the end of its jobs and returns
    try:
        worker.process.wait(5)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait()


def _stop_all(workers):
    for worker in workers:
        _stop(worker)


def _settle(future, answer):
    if not future.done():
        future.set_result(answer)


if __name__ == "__main__":
    _work()
