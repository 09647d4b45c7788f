"""Uploads decoded in worker processes: the inputs the server's own process would make, bad images refused with the
reason, a worker that dies replaced without losing its image, and no process left behind."""

import asyncio
import io
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image
from test_preprocess import encode, seven

from cnnlab.errors import ImageError
from cnnlab.serve.decoding import Decoders, made_input

SHAPE, MAX_PIXELS = (28, 28, 1), 10_000_000
DRAWINGS = [encode(seven(at=(40 + 10 * i, 30), size=150 + 20 * i, width=10 + 3 * i)) for i in range(6)]


def alive(pid) -> bool:
    try:
        os.kill(pid, 0)  # the workers are the forkserver's children: it reaps them
    except ProcessLookupError:
        return False
    return True


def gone_within(pids, seconds=10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(alive(pid) for pid in pids):
            return True
        time.sleep(0.05)
    return False


async def busy_worker(decoders, not_pid=None, seconds=30):
    """The worker that has an image now (and is not `not_pid`)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for worker in decoders._workers:
            if worker.job is not None and worker.process.pid != not_pid:
                return worker
        await asyncio.sleep(0.001)
    raise AssertionError("no worker took the image")


def test_workers_make_the_inputs_the_servers_process_makes_and_stop_with_it():
    async def decode_all():
        decoders = Decoders(SHAPE, MAX_PIXELS, processes=2)
        await decoders.start()
        pids = [worker.process.pid for worker in decoders._workers]
        try:
            answers = await asyncio.gather(*(decoders(data, True) for data in DRAWINGS))
            plain = await decoders(DRAWINGS[0], False)
            with pytest.raises(ImageError, match="not an image in a readable format"):
                await decoders(b"this is not a png", True)
        finally:
            await decoders.close()
        return pids, answers, plain

    pids, answers, plain = asyncio.run(decode_all())
    assert len(set(pids)) == 2 and os.getpid() not in pids
    for data, (image, png) in zip(DRAWINGS, answers):
        expected_image, expected_png = made_input(data, True, MAX_PIXELS, SHAPE)
        np.testing.assert_array_equal(image, expected_image)
        assert png == expected_png
    np.testing.assert_array_equal(plain[0], made_input(DRAWINGS[0], False, MAX_PIXELS, SHAPE)[0])
    assert gone_within(pids)


def test_without_processes_the_servers_threads_decode():
    async def decode():
        decoders = Decoders(SHAPE, MAX_PIXELS, processes=0)
        return await decoders(DRAWINGS[1], True), decoders._workers

    (image, _), workers = asyncio.run(decode())
    assert workers == []
    np.testing.assert_array_equal(image, made_input(DRAWINGS[1], True, MAX_PIXELS, SHAPE)[0])


def noisy_photo() -> bytes:
    """A 2000x2000 PNG of paper noise with a digit in it: long enough to decode (~0.1 s) to be killed meanwhile."""
    rng = np.random.default_rng(0)
    page = rng.normal(200, 20, (2000, 2000)).clip(0, 255).astype(np.uint8)
    page[600:1400, 900:1100] = 20
    out = io.BytesIO()
    Image.fromarray(page).save(out, "PNG", compress_level=1)
    return out.getvalue()


def test_a_worker_that_dies_is_replaced_and_its_image_tried_once_more():
    photo = noisy_photo()

    async def kill_workers():
        decoders = Decoders(SHAPE, MAX_PIXELS, processes=1)
        await decoders.start()
        killed = []
        try:
            once = asyncio.ensure_future(decoders(photo, True))  # its worker dies once: a new one decodes it
            killed.append((await busy_worker(decoders)).process.pid)
            os.kill(killed[-1], signal.SIGKILL)
            retried = await asyncio.wait_for(once, 60)

            twice = asyncio.ensure_future(decoders(photo, True))  # two workers die on it: refused
            for _ in range(2):
                killed.append((await busy_worker(decoders, not_pid=killed[-1])).process.pid)
                os.kill(killed[-1], signal.SIGKILL)
            with pytest.raises(ImageError, match="crashed on this image 2 times; the file is damaged"):
                await asyncio.wait_for(twice, 60)
            after = await asyncio.wait_for(decoders(DRAWINGS[2], True), 60)  # and the next worker serves on
            last = [worker.process.pid for worker in decoders._workers]
        finally:
            await decoders.close()
        return killed, retried, after, last

    killed, retried, after, last = asyncio.run(kill_workers())
    assert len(set(killed)) == 3 and not set(last) & set(killed)
    np.testing.assert_array_equal(retried[0], made_input(photo, True, MAX_PIXELS, SHAPE)[0])
    np.testing.assert_array_equal(after[0], made_input(DRAWINGS[2], True, MAX_PIXELS, SHAPE)[0])
    assert gone_within(last)
