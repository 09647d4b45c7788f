"""The web app on a real socket: concurrent clients get their own answers, a real browser draws on the page of a
digit model and uploads a photo to the page of a colour model."""

import io
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from conftest import missing
from image_data import DIGIT_NAMES
from PIL import Image

from cnnlab.cli import main
from cnnlab.data import load_dataset
from cnnlab.prediction import Classifier
from cnnlab.serve import bind, create_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@contextmanager
def serving(classifier):
    """uvicorn serving the classifier on 127.0.0.1 and a free port, in a thread: its URL."""
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(create_app(classifier), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server_url(classifier):
    """The digits run's model served, for this module's tests."""
    with serving(classifier) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (the system's), shared by this module's page tests."""
    if not CHROMIUM.exists():
        missing(f"no Chromium at {CHROMIUM} (make browser installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update"])
        try:
            yield chromium
        finally:
            chromium.close()


def open_page(browser, url):
    """A page of the app with its model loaded, and the list its script errors and console errors go to."""
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.goto(url)
    page.wait_for_selector("#probabilities .bar")
    return page, errors


EXPLAINED = ("document.querySelectorAll('.feature-map-panel img').length >= 2 && "
             "[...document.querySelectorAll('.feature-map-panel img, #grad-cam')]"
             ".every(i => i.complete && i.naturalWidth > 0)")  # feature maps and Grad-CAM shown


def test_concurrent_requests_each_get_their_own_answer(server_url):
    """16 threads at once, each with a different digit: a shared, unlocked model would mix them up."""
    images = load_dataset("digits").x_test[:16]
    bodies = []
    for image in images:
        out = io.BytesIO()
        Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).save(out, "PNG")
        bodies.append(out.getvalue())

    def ask(i, endpoint="predict"):
        with httpx.Client(base_url=server_url, timeout=60) as client:
            response = client.post(f"/api/{endpoint}?preprocess=false", content=bodies[i % 16],
                                   headers={"Content-Type": "image/png"})
        assert response.status_code == 200, response.text
        return [p["probability"] for p in response.json()["probabilities"]]

    alone = [ask(i) for i in range(16)]
    assert len({tuple(np.round(a, 3)) for a in alone}) > 8  # different digits, different answers
    with ThreadPoolExecutor(max_workers=16) as pool:
        together = list(pool.map(ask, range(48), ["predict", "explain", "predict"] * 16))
    for i, probabilities in enumerate(together):
        np.testing.assert_allclose(probabilities, alone[i % 16], atol=1e-5)


def shown_probabilities(page) -> list:
    return [float(p) for p in page.locator("#probabilities .bar").evaluate_all(
        "rows => rows.map(r => r.dataset.probability)")]


def test_a_browser_draws_a_digit_and_sees_the_network_think(server_url, browser):
    page, errors = open_page(browser, server_url)
    assert page.locator("#canvas").is_visible() and page.locator("#preprocess").is_visible()
    assert page.locator("#no-drawing").is_hidden()
    box = page.locator("#canvas").bounding_box()
    stroke = [(190, 60), (100, 60), (90, 130), (170, 130), (190, 180), (160, 230), (90, 230)]  # a 5
    page.mouse.move(box["x"] + stroke[0][0], box["y"] + stroke[0][1])
    page.mouse.down()
    for x, y in stroke[1:]:
        page.mouse.move(box["x"] + x, box["y"] + y, steps=6)
    page.mouse.up()
    page.wait_for_function(EXPLAINED, timeout=30_000)
    values = page.locator("#probabilities .bar .value").all_text_contents()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "serve.png", full_page=True)
    assert len(values) == 10 and all(v.endswith("%") for v in values)
    assert sum(shown_probabilities(page)) == pytest.approx(1, abs=1e-4)
    assert page.locator(".feature-map-panel").count() >= 2
    assert page.locator("#input-image").evaluate("i => i.naturalWidth") == 28
    assert not errors, errors

    page.click("#clear")
    assert page.locator("#probabilities .bar .value").all_text_contents() == ["–"] * 10
    assert page.locator(".feature-map-panel").count() == 0
    page.close()


def test_a_browser_clicks_a_feature_map_and_sees_how_a_value_is_made(server_url, browser):
    """CNN Explainer's view: click a channel of conv_2's mosaic, then a position in its map; the page shows the
    receptive field, the kernels and a sum that ends in the value the feature map shows."""
    page, errors = open_page(browser, server_url)
    page.set_input_files("#upload", files=[{"name": "digit.png", "mimeType": "image/png", "buffer": digit_png()}])
    page.wait_for_function(EXPLAINED, timeout=30_000)
    page.locator(".feature-map-panel img").nth(1).click(position={"x": 3, "y": 3})  # conv_2, channel 0
    page.wait_for_selector("#conv-view:not([hidden])", timeout=30_000)
    assert page.locator("#conv-title").text_content().startswith("conv_2, channel 0, position (row 7, column 7)")
    assert page.locator("#conv-kernels canvas").count() == 32  # one kernel slice per input channel
    assert "8×8 pixels" in page.locator("#conv-field").text_content()
    page.locator("#conv-map").click(position={"x": 2, "y": 2})  # the top-left position
    page.wait_for_function("document.getElementById('conv-title').textContent.includes('(row 0, column 0)')",
                           timeout=30_000)
    total = page.locator("#conv-sum").text_content()
    shown = re.search(r"= (-?[\d.]+)\. The feature map shows (-?[\d.]+)\.", total)
    assert shown and shown.group(1) == shown.group(2), total
    assert not errors, errors
    page.close()


def digit_png() -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.round(load_dataset("digits").x_test[0][..., 0] * 255).astype(np.uint8)).save(out, "PNG")
    return out.getvalue()


def test_a_colour_model_page_takes_an_upload_not_a_drawing(colour_run, colour_folder, browser):
    photo = next((colour_folder / "test" / "d7").glob("*.png"))
    with serving(Classifier.load(colour_run / "best.keras")) as url:
        page, errors = open_page(browser, url)
        assert page.locator("#canvas").is_hidden() and page.locator("#preprocess").is_hidden()
        assert "32×32 colour images, not drawings" in page.locator("#no-drawing").inner_text()
        assert page.locator("#camera").get_attribute("capture") == "environment"
        assert page.locator("label.camera").is_hidden()  # no touch screen, no camera
        phone = browser.new_page(has_touch=True, is_mobile=True, viewport={"width": 390, "height": 800})
        phone.goto(url)
        assert phone.locator("label.camera").is_visible()
        phone.close()
        assert page.locator("#probabilities .bar .name").all_text_contents() == DIGIT_NAMES
        page.set_input_files("#upload", photo)
        page.wait_for_function(EXPLAINED, timeout=30_000)
        expected = httpx.post(f"{url}/api/predict", content=photo.read_bytes(),
                              headers={"Content-Type": "image/png"}).json()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=ARTIFACTS / "serve-colour.png", full_page=True)
        assert page.locator("#prediction").inner_text().startswith(expected["prediction"]["class"] + " (")
        assert shown_probabilities(page) == pytest.approx([p["probability"] for p in expected["probabilities"]])
        assert page.locator("#input-image").evaluate("i => i.naturalWidth") == 32
        assert page.locator("#input-caption").inner_text() == "input, 32×32, colour"
        assert page.locator("#preview").evaluate("i => !i.hidden && i.naturalWidth") == 32  # the photo as sent
        assert page.locator("#status").inner_text() == f"Sent {photo.name}."
        assert not errors, errors
        page.close()


def test_cnnlab_serve_command(digits_run, tmp_path, capsys):
    """The command itself: on 127.0.0.1 by default, says where, serves; a busy or impossible port is a one-line error."""
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(digits_run / "best.keras"),
                                    "--port", "0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not (found := re.search(r"at http://127\.0\.0\.1:(\d+)/", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        port = int(found.group(1))
        while True:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/healthz").json()["status"] == "ok"
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert main(["serve", str(digits_run / "best.keras"), "--port", str(port)]) == 2
        assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err
        assert main(["serve", str(digits_run / "best.keras"), "--port", "70000"]) == 2  # not wrapped round to 4464
        assert capsys.readouterr().err.strip() == "cnnlab: error: --port must be in 0..65535 (0: any free port), not 70000"
    finally:
        process.terminate()
        process.wait(timeout=30)
