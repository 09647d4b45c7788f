"""The web app's JSON API through FastAPI's TestClient: every endpoint, and every kind of bad input as a 4xx."""

import asyncio
import base64
import io
import json
import logging
from urllib.parse import quote

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
import keras
from image_data import DIGIT_NAMES
from PIL import Image, ImageDraw

from cnnlab.prediction import Classifier
from cnnlab.preprocess import prepare
from cnnlab.serve import create_app, render

MAX_UPLOAD = 200_000


@pytest.fixture(scope="module")
def client(classifier):
    # raise_server_exceptions: a 500 would fail the test with its traceback instead of passing as a status
    with TestClient(create_app(classifier, max_upload_bytes=MAX_UPLOAD, max_pixels=1_000_000),
                    raise_server_exceptions=True) as c:
        yield c


def drawing(fmt="PNG") -> bytes:
    """A 4 drawn with a thick pen, black on a white 280x280 canvas, as the page sends it."""
    img = Image.new("RGB", (280, 280), "white")
    ImageDraw.Draw(img).line([(170, 40), (70, 170), (210, 170)], fill="black", width=20)
    ImageDraw.Draw(img).line([(170, 40), (170, 240)], fill="black", width=20)
    out = io.BytesIO()
    img.save(out, fmt)
    return out.getvalue()


def png_bytes(img) -> bytes:
    out = io.BytesIO()
    img.save(out, "PNG")
    return out.getvalue()


def decode_png(text) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(text)))
    img.load()
    return img


def test_healthz_and_model(client, classifier):
    assert client.get("/healthz").json() == {"status": "ok", "model": "best.keras"}
    model = client.get("/api/model").json()
    assert model["class_names"] == [str(d) for d in range(10)] and model["conv_layers"] == ["conv_1", "conv_2"]
    assert model["input_shape"] == [28, 28, 1] and model["parameters"] == classifier.model.count_params()
    assert [layer["output_shape"] for layer in model["layers"][:2]] == [[28, 28, 32], [14, 14, 32]]
    assert "conv_1" in model["summary"]


def test_page_static_files_and_docs(client):
    page = client.get("/")
    assert page.status_code == 200 and "<canvas" in page.text and "/static/app.js" in page.text
    assert "http" not in page.text.replace("http-equiv", "")  # no CDN: everything comes from this server
    for name in ("app.js", "style.css"):
        assert client.get(f"/static/{name}").status_code == 200
    assert client.get("/docs").status_code == 200
    body = client.get("/openapi.json").json()["paths"]["/api/predict"]["post"]["requestBody"]["content"]
    assert {"multipart/form-data", "application/json", "image/png"} <= set(body)


def test_predict_an_upload(client, classifier):
    data = drawing()
    answer = client.post("/api/predict", files={"file": ("four.png", data, "image/png")}).json()
    expected_input = prepare(data).input
    expected = classifier.probabilities(expected_input[None])[0]
    assert len(answer["probabilities"]) == 10
    assert [p["probability"] for p in answer["probabilities"]] == pytest.approx(expected, abs=1e-6)
    assert sum(p["probability"] for p in answer["probabilities"]) == pytest.approx(1, abs=1e-5)
    assert answer["prediction"]["index"] == int(np.argmax(expected)) == answer["top_k"][0]["index"]
    assert [t["probability"] for t in answer["top_k"]] == sorted((t["probability"] for t in answer["top_k"]),
                                                                  reverse=True)
    assert len(answer["top_k"]) == 3
    np.testing.assert_allclose(answer["input"], expected_input[..., 0], atol=1e-4)
    assert decode_png(answer["input_png"]).size == (28, 28)


def test_the_three_ways_to_send_an_image_agree(client):
    data = drawing()
    by_upload = client.post("/api/predict", files={"file": ("x.png", data, "image/png")}).json()
    by_base64 = client.post("/api/predict", json={"image": base64.b64encode(data).decode()}).json()
    by_data_url = client.post("/api/predict",
                              json={"image": "data:image/png;base64," + base64.b64encode(data).decode()}).json()
    by_body = client.post("/api/predict", content=data, headers={"Content-Type": "image/png"}).json()
    assert by_upload == by_base64 == by_data_url == by_body


def test_top_k_and_no_preprocessing(client, classifier):
    data = drawing()
    assert len(client.post("/api/predict?top_k=5", content=data, headers={"Content-Type": "image/png"})
               .json()["top_k"]) == 5
    assert len(client.post("/api/predict?top_k=50", content=data, headers={"Content-Type": "image/png"})
               .json()["top_k"]) == 10
    mnist_style = np.zeros((28, 28), np.uint8)
    mnist_style[6:22, 12:16] = 255
    answer = client.post("/api/predict?preprocess=false", content=png_bytes(Image.fromarray(mnist_style)),
                         headers={"Content-Type": "image/png"}).json()
    np.testing.assert_allclose(answer["input"], mnist_style / 255, atol=1e-4)


def test_explain(client, classifier):
    answer = client.post("/api/explain", files={"file": ("four.png", drawing(), "image/png")}).json()
    assert answer["explained"] == answer["prediction"]
    maps = {m["layer"]: m for m in answer["feature_maps"]}
    assert list(maps) == ["conv_1", "conv_2"]
    for m, (size, channels, columns) in zip(maps.values(), [(28, 32, 8), (14, 64, 16)]):
        assert (m["height"], m["width"], m["channels"], m["columns"]) == (size, size, channels, columns)
        rows = channels // columns
        assert decode_png(m["png"]).size == (columns * (size + 1) - 1, rows * (size + 1) - 1)
    heat = np.array(answer["grad_cam"]["heatmap"])
    assert heat.shape == (28, 28) and heat.min() >= 0 and heat.max() == pytest.approx(1, abs=1e-3)
    assert answer["grad_cam"]["layer"] == "conv_2" and decode_png(answer["grad_cam"]["png"]).size == (112, 112)
    other = (answer["prediction"]["index"] + 1) % 10
    again = client.post(f"/api/explain?class_index={other}", files={"file": ("four.png", drawing(), "image/png")})
    assert again.json()["explained"]["index"] == other and again.json()["prediction"] == answer["prediction"]


def test_explain_by_each_attribution_method(client, classifier):
    """The chosen method's map is the Python API's own for the input the answer shows (its positive part, scaled
    to 1), for the class explained; an unknown method is a 422 that lists the methods."""
    from cnnlab.explain import METHODS, attributions, pixel_heat

    assert list(client.get("/api/model").json()["attribution_methods"]) == list(METHODS)
    for method in METHODS:
        answer = client.post(f"/api/explain?method={quote(method)}",
                             files={"file": ("four.png", drawing(), "image/png")}).json()
        image = np.asarray(answer["input"], np.float32)[..., None]
        expected = pixel_heat(attributions(classifier.model, image[None], method, answer["explained"]["index"]),
                              method)[0]
        expected = np.maximum(expected, 0) / np.maximum(expected, 0).max()
        shown = answer["attribution"]
        assert shown["method"] == method and decode_png(shown["png"]).size == (112, 112)
        np.testing.assert_allclose(shown["heatmap"], expected, atol=2e-3, err_msg=method)
    refused = client.post("/api/explain?method=lime", files={"file": ("four.png", drawing(), "image/png")})
    assert refused.status_code == 422 and "gradcam, gradcam++" in refused.json()["detail"]
    spaced = client.post("/api/explain?method=gradcam++", files={"file": ("four.png", drawing(), "image/png")})
    assert spaced.status_code == 422 and spaced.json()["detail"].endswith("is a space: write gradcam%2B%2B")


def multipart_without_boundary(client):
    return client.post("/api/predict", content=b"--x\r\n", headers={"Content-Type": "multipart/form-data"})


BAD_REQUESTS = {
    # name: (request, expected status, words of the reason)
    "wrong content type": (lambda c: c.post("/api/predict", content=b"7", headers={"Content-Type": "text/plain"}),
                           415, "content type 'text/plain'"),
    "no content type": (lambda c: c.post("/api/predict", content=b"7"), 415, "(none)"),
    "form instead of multipart": (lambda c: c.post("/api/predict", data={"image": "7"}), 415, "urlencoded"),
    "not an image": (lambda c: c.post("/api/predict", files={"file": ("x.png", b"hello", "image/png")}),
                     422, "not an image"),
    "empty upload": (lambda c: c.post("/api/predict", files={"file": ("x.png", b"", "image/png")}), 422, "not an image"),
    "truncated PNG": (lambda c: c.post("/api/explain", content=drawing()[:500], headers={"Content-Type": "image/png"}),
                      422, "truncated or corrupt"),
    "too many pixels": (lambda c: c.post("/api/predict", content=png_bytes(Image.new("1", (2000, 1000))),
                                         headers={"Content-Type": "image/png"}), 422, "more pixels than the 1,000,000"),
    "blank canvas": (lambda c: c.post("/api/predict", content=png_bytes(Image.new("L", (280, 280), 255)),
                                      headers={"Content-Type": "image/png"}), 422, "no digit found"),
    "body too large": (lambda c: c.post("/api/predict", content=bytes(MAX_UPLOAD + 1),
                                        headers={"Content-Type": "image/png"}), 413, "larger than the 200,000 bytes"),
    "body too large, streamed": (lambda c: c.post("/api/predict", content=iter([bytes(100_000)] * 3),
                                                  headers={"Content-Type": "image/png"}), 413, "larger than"),
    "upload too large": (lambda c: c.post("/api/explain", files={"file": ("x.png", bytes(MAX_UPLOAD), "image/png")}),
                         413, "larger than"),
    "malformed JSON": (lambda c: c.post("/api/predict", content=b"{", headers={"Content-Type": "application/json"}),
                       422, "JSON body must be"),
    "JSON without image": (lambda c: c.post("/api/predict", json={"picture": "x"}), 422, "JSON body must be"),
    "JSON image not text": (lambda c: c.post("/api/predict", json={"image": 7}), 422, "JSON body must be"),
    "JSON list": (lambda c: c.post("/api/predict", json=["image"]), 422, "JSON body must be"),
    "bad base64": (lambda c: c.post("/api/predict", json={"image": "not base64!"}), 422, "\"image\" is not valid base64"),
    "non-ASCII base64": (lambda c: c.post("/api/predict", json={"image": "é"}), 422, "\"image\" is not valid base64"),
    "JSON nested 100,000 deep": (lambda c: c.post("/api/predict", content=b"[" * 100_000,
                                                  headers={"Content-Type": "application/json"}), 422, "nested too deeply"),
    "JSON nested, closed": (lambda c: c.post("/api/explain", content=b"[" * 50_000 + b"]" * 50_000,
                                             headers={"Content-Type": "application/json"}), 422, "nested too deeply"),
    "multipart without file": (lambda c: c.post("/api/predict", files={"other": ("x.png", drawing(), "image/png")}),
                               422, "field named 'file'"),
    "multipart field not a file": (lambda c: c.post("/api/predict", data={"file": "7"}, files={"x": ("x", b"")}),
                                   422, "field named 'file'"),
    "multipart without boundary": (multipart_without_boundary, 422, "malformed multipart"),
    "top_k 0": (lambda c: c.post("/api/predict?top_k=0", content=drawing(), headers={"Content-Type": "image/png"}),
                422, "top_k: Input should be greater than or equal to 1"),
    "class_index out of range": (lambda c: c.post("/api/explain?class_index=10", content=drawing(),
                                                  headers={"Content-Type": "image/png"}), 422, "class_index must be in"),
    "GET on a POST endpoint": (lambda c: c.get("/api/predict"), 405, "Method Not Allowed"),
}


@pytest.mark.parametrize("case", BAD_REQUESTS)
def test_bad_input_is_a_4xx_with_a_json_reason(client, case):
    send, status, words = BAD_REQUESTS[case]
    response = send(client)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words in detail, detail


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.binary(max_size=2000),
       content_type=st.sampled_from(["image/png", "image/gif", "application/json", "multipart/form-data; boundary=x",
                                     "multipart/form-data", "text/html", ""]),
       endpoint=st.sampled_from(["/api/predict", "/api/explain"]))
def test_random_bodies_never_cost_a_500(client, body, content_type, endpoint):
    response = client.post(endpoint, content=body, headers={"Content-Type": content_type} if content_type else {})
    assert response.status_code in (200, 413, 415, 422), response.text


def test_a_fault_of_the_server_is_a_json_500_logged_and_it_serves_on(classifier, monkeypatch, caplog):
    """Not bad input, a bug: the client gets a JSON reason, the log the traceback, the next request its answer."""
    def broken(inputs):
        raise RuntimeError("a bug in the model call")

    with TestClient(create_app(classifier)) as client:
        monkeypatch.setattr(classifier, "probabilities", broken)
        with caplog.at_level(logging.ERROR, logger="cnnlab.serve.app"):
            response = client.post("/api/predict", content=drawing(), headers={"Content-Type": "image/png"})
        assert response.status_code == 500
        assert response.json() == {"detail": "internal error (RuntimeError); the server's log has the details"}
        [record] = [r for r in caplog.records if r.exc_info]
        assert "POST /api/predict" in record.getMessage() and "a bug in the model call" in caplog.text
        monkeypatch.undo()
        assert client.post("/api/predict", content=drawing(), headers={"Content-Type": "image/png"}).status_code == 200


@pytest.fixture(scope="module")
def colour_client(colour_run):
    with TestClient(create_app(Classifier.load(colour_run / "best.keras")), raise_server_exceptions=True) as c:
        yield c


def colour_test_image(colour_folder) -> bytes:
    return next((colour_folder / "test" / "d3").glob("*.png")).read_bytes()


def test_a_colour_model_says_what_it_takes(colour_client):
    model = colour_client.get("/api/model").json()
    assert model["image_shape"] == [32, 32, 3] and model["input_shape"] == [32, 32, 3]
    assert model["style"] == "photos" and model["preprocessing"] == "resize" and model["class_names"] == DIGIT_NAMES


def test_a_colour_model_predicts_and_explains_in_colour(colour_client, colour_run, colour_folder):
    data = colour_test_image(colour_folder)
    as_sent = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
    expected = Classifier.load(colour_run / "best.keras").probabilities(as_sent[None] / 255)[0]
    for endpoint in ("predict", "explain"):
        response = colour_client.post(f"/api/{endpoint}", files={"file": ("three.png", data, "image/png")})
        assert response.status_code == 200, response.text
        answer = response.json()
        assert [p["probability"] for p in answer["probabilities"]] == pytest.approx(expected, abs=1e-5)
        assert {p["class"] for p in answer["probabilities"]} == set(DIGIT_NAMES)
        shown = decode_png(answer["input_png"])
        assert shown.mode == "RGB" and shown.size == (32, 32)
        np.testing.assert_array_equal(np.asarray(shown), as_sent)  # 32x32 already: fed and shown as it is
    overlay = decode_png(answer["grad_cam"]["png"])
    assert overlay.mode == "RGB" and overlay.size == (128, 128)
    assert np.array(answer["grad_cam"]["heatmap"]).shape == (32, 32)
    assert {m["layer"] for m in answer["feature_maps"]} == set(colour_client.get("/api/model").json()["conv_layers"])


def test_grad_cam_overlay_keeps_the_input_where_it_is_cold():
    """Colour stays colour and grey stays grey where the heat is 0; where it is hot, the heat map's colours show."""
    rng = np.random.default_rng(0)
    for image in (rng.random((32, 24, 3), np.float32), rng.random((28, 28, 1), np.float32)):
        height, width = image.shape[:2]
        heat = np.zeros((height, width), np.float32)
        heat[:, width // 2:] = 1
        overlay = np.asarray(decode_png(render.grad_cam_png(image, heat)))
        scale = overlay.shape[0] // height
        assert overlay.shape == (height * scale, width * scale, 3) and max(overlay.shape[:2]) >= render.OVERLAY_SIDE
        upscaled = np.repeat(np.repeat(render.to_uint8(image), scale, 0), scale, 1)
        cold = slice(0, (width // 2 - 1) * scale)  # clear of the bilinear edge
        np.testing.assert_array_equal(overlay[:, cold], np.broadcast_to(upscaled, overlay.shape)[:, cold])
        assert np.abs(overlay[:, -scale:].astype(int) - upscaled[:, -scale:]).mean() > 20


def test_a_grey_photo_model_gets_and_shows_photos_as_they_are(tmp_path):
    """A 32x32 grey model outside a run is a photo model: a light image is resized, not inverted and cropped."""
    model = keras.Sequential([keras.Input((32, 32, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "grey.keras")
    photo = np.full((64, 64), 220, np.uint8)
    photo[10:30, 40:60] = 40
    with TestClient(create_app(Classifier.load(tmp_path / "grey.keras")), raise_server_exceptions=True) as client:
        described = client.get("/api/model").json()
        assert described["style"] == "photos" and described["preprocessing"] == "resize"
        answer = client.post("/api/explain", content=png_bytes(Image.fromarray(photo)),
                             headers={"Content-Type": "image/png"}).json()
    shown = decode_png(answer["input_png"])
    expected = np.asarray(Image.fromarray(photo).resize((32, 32), Image.Resampling.BILINEAR), np.float32)
    assert shown.mode == "L" and shown.size == (32, 32)
    np.testing.assert_allclose(np.asarray(shown, np.float32), expected, atol=2)
    np.testing.assert_allclose(np.array(answer["input"]), expected / 255, atol=2 / 255)


# Structured fuzzing: bodies that are well-formed JSON or multipart of every shape, not only random bytes, under and
# over the limits (the client fixture's: 200,000 bytes, 1,000,000 pixels), must get a 200 or a 4xx with a reason.
PNG = drawing()
PNG_BASE64 = base64.b64encode(PNG).decode()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=12), children, max_size=6),
    max_leaves=40)
image_texts = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=400).map(lambda data: base64.b64encode(data).decode()),
    st.sampled_from([PNG_BASE64, "data:image/png;base64," + PNG_BASE64, "data:,", "data:image/png;base64,", "data:"]),
    st.tuples(st.integers(0, len(PNG_BASE64)), st.sampled_from(["", "data:image/png;base64,", "data:text/plain,"]))
      .map(lambda cut: cut[1] + PNG_BASE64[:cut[0]]),  # a PNG cut anywhere: truncated, or not base64-aligned
    st.integers(0, 2 * MAX_UPLOAD).map(lambda n: "A" * n),  # valid base64 of zeros, under and over the limit
)
json_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries({"image": json_values | image_texts}, optional={"other": json_values}),
    st.dictionaries(st.text(max_size=12), json_values, max_size=4)
      .flatmap(lambda extra: image_texts.map(lambda text: {**extra, "image": text})),
)


def respond_in_kind(response):
    """A 200 with probabilities, or a 4xx with a one-line reason: never a 5xx (raise_server_exceptions raises it)."""
    assert response.status_code in (200, 413, 415, 422), response.text
    event(f"status {response.status_code}")  # --hypothesis-show-statistics: how many got each
    body = response.json()
    assert len(body["probabilities"]) == 10 if response.status_code == 200 else isinstance(body["detail"], str)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=json_bodies, cut=st.none() | st.integers(0, 200), endpoint=st.sampled_from(["/api/predict", "/api/explain"]))
def test_structured_json_bodies_never_cost_a_500(client, body, cut, endpoint):
    text = json.dumps(body)  # NaN and Infinity too: Python's json reads them
    content = (text[:cut] if cut is not None else text).encode()
    respond_in_kind(client.post(endpoint, content=content, headers={"Content-Type": "application/json"}))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(depth=st.integers(1, 120_000), opener=st.sampled_from(["[", '{"image":', '{"a":[', '{"image":{"image":']),
       closed=st.booleans(), leaf=st.sampled_from(["0", '"x"', json.dumps(PNG_BASE64), ""]))
@example(depth=1, opener='{"image":', closed=True, leaf=json.dumps(PNG_BASE64))  # the one well-formed request
def test_deep_json_bodies_under_and_over_the_limits_never_cost_a_500(client, depth, opener, closed, leaf):
    closer = {"[": "]", '{"image":': "}", '{"a":[': "]}", '{"image":{"image":': "}}"}[opener]
    content = (opener * depth + leaf + (closer * depth if closed else "")).encode()
    response = client.post("/api/predict", content=content, headers={"Content-Type": "application/json"})
    respond_in_kind(response)
    well_formed = content == json.dumps({"image": PNG_BASE64}, separators=(",", ":")).encode()
    assert response.status_code == (200 if well_formed else 413 if len(content) > MAX_UPLOAD else 422)


part = st.fixed_dictionaries({
    "name": st.sampled_from(["file", "image", "", 'fi"le', "fi\r\nle", "file\x00"]) | st.text(max_size=12),
    "filename": st.none() | st.sampled_from(["x.png", "", "../../etc/passwd", 'a"b.png']) | st.text(max_size=20),
    "type": st.none() | st.sampled_from(["image/png", "text/plain", "application/octet-stream", "", "image/png\r\nX: y"]),
    "body": st.sampled_from([PNG, PNG[:300], b"", b"--x--"]) | st.binary(max_size=300),
})
FILE_PART = {"name": "file", "filename": "x.png", "type": "image/png", "body": PNG}  # as a browser sends it
text_field = st.builds(lambda name, body: {"name": name, "filename": None, "type": None, "body": body},
                       st.text(max_size=12), st.binary(max_size=100))


@st.composite
def multipart_bodies(draw):
    """(Content-Type, body): as a browser frames it (the image and up to 12 text fields: the 10 read, and more), or
    parts of any name, file name, type and body, a boundary of any printable kind (or none, or another one in the
    Content-Type), bare newlines, no closing boundary; sometimes padded over the size limit."""
    if draw(st.booleans()):
        boundary, newline, closed = draw(st.sampled_from(["x", "----WebKitFormBoundary7MA4YWxkTrZu0gW"])), b"\r\n", True
        fields = draw(st.lists(text_field, max_size=12))
        parts = draw(st.permutations([FILE_PART, *fields]))
    else:
        boundary = draw(st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters='"'),
                                min_size=1, max_size=72))
        newline, closed = draw(st.sampled_from([b"\r\n", b"\n"])), draw(st.booleans())
        parts = draw(st.lists(part | st.just(FILE_PART), max_size=14))
    dash, body = b"--" + boundary.encode(), b""
    for p in parts:
        disposition = f'form-data; name="{p["name"]}"' + (f'; filename="{p["filename"]}"' if p["filename"] is not None
                                                          else "")
        headers = f"Content-Disposition: {disposition}" + (f"\r\nContent-Type: {p['type']}" if p["type"] is not None
                                                           else "")
        body += dash + newline + headers.encode() + newline + newline + p["body"] + newline
    padding = draw(st.just(0) | st.integers(0, 2 * MAX_UPLOAD))
    said = draw(st.just(f"boundary={boundary}") | st.sampled_from(
        ["", "boundary=", f'boundary="{boundary}"', f"charset=utf-8; boundary={boundary}", "boundary=other"]))
    return f"multipart/form-data; {said}", body + (dash + b"--" + newline if closed else b"") + bytes(padding)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(multipart=multipart_bodies(), endpoint=st.sampled_from(["/api/predict", "/api/explain"]))
def test_structured_multipart_bodies_never_cost_a_500(client, multipart, endpoint):
    content_type, body = multipart
    respond_in_kind(client.post(endpoint, content=body, headers={"Content-Type": content_type}))


def test_connections_are_not_slowed_by_nagle(tmp_path):
    """The listening socket says TCP, so asyncio sets TCP_NODELAY on each connection: without it a kept-alive
    connection's response body waited ~40 ms for the client's delayed ACK of its headers (every load-test request)."""
    import socket

    from cnnlab.serve import bind

    async def accepted_nodelay():
        sock = bind("127.0.0.1", 0)
        seen = asyncio.get_running_loop().create_future()

        def connected(reader, writer):
            seen.set_result(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(connected, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(seen, 10)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0
