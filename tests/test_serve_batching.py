"""The batcher: concurrent requests share model calls, each gets its own answer, and one bad request fails alone.

First the Batcher with a stand-in model (quick, exact), then the app with the digits run's model, its requests sent
at once from threads through one TestClient, and last `cnnlab serve --workers 2` on a real socket.
"""

import asyncio
import io
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient
from image_data import digit_arrays
from PIL import Image
from test_serve_decoding import gone_within

from cnnlab.cli import main
from cnnlab.serve import app as serve_app
from cnnlab.serve import create_app
from cnnlab.serve.batching import Batcher, Busy


def image(value, shape=(2, 2, 1)):
    return np.full(shape, value, np.float32)


class StandIn:
    """A model whose row for an image is (its mean, 2 x its mean); it records each call's batch size, can hold its
    calls until released (so that what comes next queues behind the first), and fails on a batch with a NaN image."""

    def __init__(self, hold=False):
        self.calls, self.entered, self.release = [], threading.Event(), threading.Event()
        if not hold:
            self.release.set()

    def __call__(self, images):
        self.calls.append(len(images))
        self.entered.set()
        self.release.wait(10)
        if np.isnan(images).any():
            raise ValueError("a NaN image")
        means = images.reshape(len(images), -1).mean(axis=1)
        return np.stack([means, 2 * means], axis=1)


def test_each_image_gets_its_own_row_from_shared_calls():
    model = StandIn(hold=True)
    batcher = Batcher(model)

    async def main():
        tasks = [asyncio.ensure_future(batcher(image(i))) for i in range(10)]
        await asyncio.sleep(0.05)  # all ten queued, the first one's call held
        model.release.set()
        return await asyncio.gather(*tasks)

    rows = asyncio.run(main())
    batcher.close()
    assert [row.tolist() for row in rows] == [[i, 2 * i] for i in range(10)]
    assert sum(model.calls) == 10 and len(model.calls) <= 2, model.calls


def test_a_failing_image_fails_only_its_own_request():
    model = StandIn(hold=True)
    batcher = Batcher(model)

    async def main():
        tasks = [asyncio.ensure_future(batcher(image(np.nan if i == 3 else i))) for i in range(6)]
        await asyncio.sleep(0.05)
        model.release.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    answers = asyncio.run(main())
    batcher.close()
    assert isinstance(answers[3], ValueError) and "NaN" in str(answers[3])
    assert [a.tolist() for i, a in enumerate(answers) if i != 3] == [[i, 2 * i] for i in (0, 1, 2, 4, 5)]
    assert len(model.calls) > 2  # the batch holding the NaN image failed and was retried image by image


def test_images_being_made_are_waited_for_and_a_lone_one_is_not():
    model = StandIn()
    batcher = Batcher(model, max_wait=2.0)

    async def made_slowly(value, fails=False):
        with batcher.coming():
            await asyncio.sleep(0.1)
            if fails:
                raise ValueError("not an image")
        return await batcher(image(value))

    async def main():
        started = time.monotonic()
        await batcher(image(0))
        lone = time.monotonic() - started
        started = time.monotonic()
        pair = await asyncio.gather(made_slowly(1), batcher(image(2)))
        paired = time.monotonic() - started
        started = time.monotonic()
        answers = await asyncio.gather(made_slowly(3, fails=True), batcher(image(4)), return_exceptions=True)
        return lone, pair, paired, answers, time.monotonic() - started

    lone, pair, paired, answers, after_failure = asyncio.run(main())
    batcher.close()
    assert lone < 1.0  # nothing was being made: no waiting for max_wait
    assert [row.tolist() for row in pair] == [[1, 2], [2, 4]] and model.calls[1] == 2 and paired < 1.0
    assert isinstance(answers[0], ValueError) and answers[1].tolist() == [4, 8]
    assert after_failure < 1.0  # the image that failed to be made was not waited for until max_wait
    assert model.calls == [1, 2, 1]


def test_a_full_queue_is_busy_and_close_answers_what_waits():
    model = StandIn(hold=True)
    batcher = Batcher(model, max_queue=2)

    async def main():
        first = asyncio.ensure_future(batcher(image(1)))
        while not model.entered.is_set():  # the thread holds image 1 in its (held) call
            await asyncio.sleep(0.01)
        queued = [asyncio.ensure_future(batcher(image(v))) for v in (2, 3)]
        await asyncio.sleep(0.01)
        with pytest.raises(Busy, match="2 images are already waiting"):
            await batcher(image(4))
        model.release.set()
        closing = asyncio.to_thread(batcher.close)  # answers images 2 and 3 before the thread stops
        return await asyncio.gather(first, *queued, closing)

    *rows, _ = asyncio.run(main())
    assert [row.tolist() for row in rows] == [[1, 2], [2, 4], [3, 6]]
    assert asyncio.run(batcher(image(5))).tolist() == [5, 10]  # a closed batcher starts again
    batcher.close()


def test_an_answer_too_late_is_busy_and_the_next_one_comes():
    model = StandIn(hold=True)
    batcher = Batcher(model, timeout=0.1)
    with pytest.raises(Busy, match="did not answer within 0.1 s"):
        asyncio.run(batcher(image(1)))
    model.release.set()
    assert asyncio.run(batcher(image(2))).tolist() == [2, 4]
    batcher.close()


def digit_png(pixels) -> bytes:
    """A (28, 28) uint8 digit, dark on a white 280x280 canvas, as the page sends a drawing."""
    ink = Image.fromarray(pixels).resize((280, 280), Image.Resampling.BILINEAR)
    out = io.BytesIO()
    Image.fromarray(255 - np.asarray(ink)).save(out, "PNG")
    return out.getvalue()


def blank_png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (280, 280), 255).save(out, "PNG")
    return out.getvalue()


DIGITS = [digit_png(pixels) for pixels in digit_arrays()["x_test"][:8]]  # scikit-learn's digits


def post(client, body, kind="image/png"):
    return client.post("/api/predict", content=body, headers={"Content-Type": kind})


def counted(classifier, monkeypatch, hold=0.1, fails_on=None):
    """Record the batch size of each model call; hold the first for `hold` s (the other requests queue meanwhile);
    raise on a batch holding the image `fails_on`."""
    original, calls = classifier.probabilities, []

    def probabilities(images):
        calls.append(len(images))
        if len(calls) == 1:
            time.sleep(hold)
        if fails_on is not None and any(np.array_equal(i, fails_on) for i in images):
            raise RuntimeError("the model failed on this image")
        return original(images)

    monkeypatch.setattr(classifier, "probabilities", probabilities)
    return calls


def test_concurrent_requests_get_the_answers_they_get_alone(classifier, monkeypatch):
    with TestClient(create_app(classifier), raise_server_exceptions=True) as client:
        alone = [post(client, body).json() for body in DIGITS]
        calls = counted(classifier, monkeypatch)
        with ThreadPoolExecutor(len(DIGITS)) as pool:
            together = [r.json() for r in pool.map(lambda body: post(client, body), DIGITS)]
    assert sum(calls) == len(DIGITS) and len(calls) < len(DIGITS), calls  # shared calls
    assert len({a["prediction"]["index"] for a in alone}) > 2  # different images, different answers
    for single, batched in zip(alone, together):
        assert [p["probability"] for p in batched["probabilities"]] == pytest.approx(
            [p["probability"] for p in single["probabilities"]], abs=2e-6)
        assert batched["prediction"]["index"] == single["prediction"]["index"]
        assert batched["input"] == single["input"] and batched["input_png"] == single["input_png"]


def test_bad_requests_among_good_ones_get_their_4xx_and_the_others_their_answers(classifier, monkeypatch):
    bad = {4: (b"not a png", "image/png", 422, "not an image"), 6: (blank_png(), "image/png", 422, "no digit found"),
           7: (b"7", "text/plain", 415, "content type 'text/plain'")}
    requests = [bad.get(i, (body, "image/png", 200, None)) for i, body in enumerate(DIGITS)]
    with TestClient(create_app(classifier), raise_server_exceptions=True) as client:
        alone = {i: post(client, body).json() for i, (body, _, status, _) in enumerate(requests) if status == 200}
        calls = counted(classifier, monkeypatch)
        with ThreadPoolExecutor(len(requests)) as pool:
            answers = list(pool.map(lambda r: post(client, r[0], r[1]), requests))
    for i, (response, (_, _, status, words)) in enumerate(zip(answers, requests)):
        assert response.status_code == status, (i, response.text)
        if words:
            assert words in response.json()["detail"]
        else:
            assert response.json()["prediction"] == alone[i]["prediction"]
    assert sum(calls) == len(alone)


def test_a_model_failure_on_one_image_fails_only_its_request(classifier, monkeypatch):
    from cnnlab.preprocess import prepare

    poison = prepare(DIGITS[2]).input
    with TestClient(create_app(classifier), raise_server_exceptions=False) as client:
        calls = counted(classifier, monkeypatch, fails_on=poison)
        with ThreadPoolExecutor(len(DIGITS)) as pool:
            answers = list(pool.map(lambda body: post(client, body), DIGITS))
    assert [r.status_code for r in answers] == [500 if i == 2 else 200 for i in range(len(DIGITS))]
    assert answers[2].json()["detail"] == "internal error (RuntimeError); the server's log has the details"
    assert max(calls) > 1  # the failing image was in a shared batch, retried alone


def test_a_model_too_slow_is_a_503_with_retry_after(classifier, monkeypatch):
    monkeypatch.setattr(serve_app, "Batcher", lambda predict: Batcher(predict, timeout=0.05))
    with TestClient(create_app(classifier), raise_server_exceptions=True) as client:
        counted(classifier, monkeypatch, hold=0.3)
        response = post(client, DIGITS[0])
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
        assert response.json()["detail"] == ("the server is busy (the model did not answer within 0.05 s); try "
                                             "again in a moment")
        time.sleep(0.3)  # the held call ends; the next request is answered in time
        assert post(client, DIGITS[0]).status_code == 200


def test_workers_serve_from_several_processes_and_stop_together(digits_run, tmp_path, capsys):
    """`cnnlab serve --workers 2`: a bad count or model is one line before any worker starts; two workers answer
    concurrent requests as one process does, and Ctrl-C (SIGINT) stops the supervisor and both workers."""
    model_path = digits_run / "best.keras"
    assert main(["serve", str(model_path), "--workers", "0"]) == 2
    assert "--workers must be in 1..64" in capsys.readouterr().err
    assert main(["serve", str(model_path), "--decoders", "-1"]) == 2
    assert "--decoders must be in 0..64" in capsys.readouterr().err
    dense = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    dense.save(tmp_path / "dense.keras")
    assert main(["serve", str(tmp_path / "dense.keras"), "--workers", "2", "--port", "0"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(model_path), "--port", "0",
                                    "--workers", "2"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while len(re.findall(r"Application startup complete", log.read_text())) < 2:  # each worker says so
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        url = re.search(r"at (http://127\.0\.0\.1:\d+)/", log.read_text()).group(1)
        with httpx.Client(base_url=url, timeout=30) as client, ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda body: client.post("/api/predict", content=body,
                                                             headers={"Content-Type": "image/png"}), DIGITS * 2))
        assert [a.status_code for a in answers] == [200] * 16
        for one, again in zip(answers[:8], answers[8:]):  # the same image, whichever worker answered
            assert [p["probability"] for p in one.json()["probabilities"]] == pytest.approx(
                [p["probability"] for p in again.json()["probabilities"]], abs=2e-6)
        workers = [int(pid) for pid in re.findall(r"Started server process \[(\d+)\]", log.read_text())]
        assert len(set(workers)) == 2
        helpers = descendants(process.pid) - set(workers)  # each worker's image decoders
        assert len(helpers) >= 2 * 2
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) is not None
    assert not any(Path(f"/proc/{pid}").exists() for pid in workers)  # the supervisor stopped and reaped them
    assert gone_within(helpers)  # and the decoders saw their server go


def descendants(pid) -> set:
    """The processes started, directly or not, by process `pid` (Linux's /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found
