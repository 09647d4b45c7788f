"""The web app: one page to upload an image to (or, for a grey digit model, draw a digit on) and watch the network,
and the JSON API the page uses.

Bad input never costs a 500: a body over the size limit is a 413, a content type the API does not read a
415, and a body or an image that cannot be read or holds too many pixels a 422, each with {"detail": "why"}. A
fault of the server's own is logged with its traceback and answered with a JSON 500; the server goes on serving.
The model is loaded once; its calls are serialised by the Classifier's lock, while images are read and
preprocessed in processes of their own (`decoding`). /api/predict's images go through the model together
(`batching`): one call for all the requests waiting. A model too far behind answers 503. `--workers N` serves
from N processes, each with its own model, for machines with cores to spare (see serve()).
"""

import base64
import functools
import gc
import json
import logging
import socket
import sys
from contextlib import asynccontextmanager
from pathlib import Path

import anyio.to_thread
import numpy as np
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from ..convolution import json_list
from ..errors import CnnlabError, ImageError
from ..evaluation import top_k
from ..explain.attributions import METHODS, NAMES as METHOD_NAMES
from ..inspection import check_image_model
from . import render
from .batching import Batcher, Busy
from .decoding import DECODER_PROCESSES, Decoders

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 16_000_000  # a server decodes for anyone who can reach it: less than the CLI's 40 megapixels
IMAGE_TYPES = ("image/png", "image/jpeg", "image/bmp", "image/gif", "image/tiff")
LOOPBACK = ("127.0.0.1", "localhost", "::1")
EXPLAINERS = 2  # threads at once on /api/explain's model work and PNGs: one at the model, one drawing the last answer
log = logging.getLogger(__name__)

IMAGE_BODY = {  # the three ways to send an image, for /docs (the endpoints read the body themselves)
    "requestBody": {
        "required": True,
        "description": "The image: a multipart upload (field `file`), JSON with a base64 PNG (a data URL is fine), "
                       "or the file's bytes with its image/* content type.",
        "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
            "application/json": {"schema": {"type": "object", "required": ["image"],
                                            "properties": {"image": {"type": "string", "format": "byte"}}}},
            **{kind: {"schema": {"type": "string", "format": "binary"}} for kind in IMAGE_TYPES},
        },
    },
}


class BadRequest(Exception):
    """A request the API refuses, with its HTTP status and a one-line reason."""

    def __init__(self, status, detail):
        super().__init__(detail)
        self.status, self.detail = status, detail


class LimitBodySize:
    """ASGI middleware: refuse bodies over `max_bytes` (413), by their Content-Length or as they stream in."""

    def __init__(self, app, max_bytes):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = BadRequest(413, f"the request body is larger than the {self.max_bytes:,} bytes accepted")
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": too_large.detail}, 413)(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise too_large
            return message

        await self.app(scope, counted_receive, send)


class LastResort:
    """ASGI middleware: an exception nothing else answered (a bug, not bad input) is logged with its traceback and
    answered with a JSON 500, so that the client gets a reason and the server serves the next request."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        except Exception as e:
            if started:  # too late to answer: the server logs it and closes the connection
                raise
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            detail = f"internal error ({type(e).__name__}); the server's log has the details"
            await JSONResponse({"detail": detail}, 500)(scope, receive, send)


async def read_image_bytes(request: Request) -> bytes:
    """The image sent in any of the three accepted ways (see IMAGE_BODY)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=10)
        except HTTPException as e:  # Starlette's own verdict on a malformed multipart body
            raise BadRequest(422, f"malformed multipart body: {e.detail}") from None
        except (KeyError, ValueError, UnicodeError) as e:  # e.g. no boundary in the Content-Type
            raise BadRequest(422, f"malformed multipart body ({type(e).__name__}: {e})") from None
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest(422, "the multipart body needs the image as a file field named 'file'")
        return await upload.read()
    if media_type == "application/json":
        try:
            text = json.loads(await request.body())["image"]
            if not isinstance(text, str):
                raise TypeError
            if text.startswith("data:"):  # a data URL, as canvas.toDataURL() gives
                text = text.partition(",")[2]
        except RecursionError:  # Python's parser recurses once per level: '[' * 100_000 exhausts the stack
            raise BadRequest(422, 'the JSON body is nested too deeply; it must be {"image": "<base64 PNG or data '
                                  'URL>"}') from None
        except (ValueError, KeyError, TypeError):
            raise BadRequest(422, 'the JSON body must be {"image": "<base64 PNG or data URL>"}') from None
        try:
            return base64.b64decode(text, validate=True)
        except ValueError:  # binascii.Error, or a non-ASCII character, which b64decode refuses before decoding
            raise BadRequest(422, '"image" is not valid base64 (ASCII letters, digits, +, / and =); send the file\'s '
                                  'bytes base64-encoded, or a data URL') from None
    if media_type in IMAGE_TYPES:
        return await request.body()
    raise BadRequest(415, f"content type {media_type or '(none)'!r} is not read here; send multipart/form-data "
                          f"(field 'file'), application/json {{\"image\": base64}}, or {', '.join(IMAGE_TYPES)}")


def validation_error(request, error: RequestValidationError) -> JSONResponse:
    """A bad query parameter as one line, like every other refusal here (FastAPI's own is a list of records)."""
    reasons = [f"{'.'.join(map(str, e['loc'][1:])) or e['loc'][0]}: {e['msg']}" for e in error.errors()]
    return JSONResponse({"detail": "; ".join(reasons)}, 422)


def create_app(classifier, max_upload_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_PIXELS,
               decoders=DECODER_PROCESSES) -> FastAPI:
    """The app for one loaded `prediction.Classifier`, its uploads decoded in `decoders` processes (0: threads)."""
    names = classifier.class_names
    height, width, channels = classifier.input.shape
    taken = (f"made MNIST-like ({height}x{width}, white ink on black) unless preprocess=false"
             if classifier.mnist_like else
             f"fed as they are: upright, {'colour' if channels == 3 else 'grey'}, resized to {height}x{width}")
    # late-bound: the model call is looked up at each batch, as a direct call would be
    batch = Batcher(lambda images: classifier.probabilities(images))
    decode = Decoders(classifier.input.shape, max_pixels, decoders)

    @asynccontextmanager
    async def lifespan(app):
        await decode.start()
        yield
        await anyio.to_thread.run_sync(batch.close)  # the requests still waiting get their answers first
        await decode.close()

    app = FastAPI(title="cnnlab", lifespan=lifespan,
                  description=f"Upload an image{' or draw a digit' if classifier.mnist_like else ''} and see what "
                              f"{classifier.name} makes of it. Images: PNG, JPEG, BMP, GIF or TIFF, at most "
                              f"{max_upload_bytes:,} bytes and {max_pixels:,} pixels, {taken}.")
    app.add_middleware(LimitBodySize, max_bytes=max_upload_bytes)
    app.add_middleware(LastResort)  # added last, so outermost: it also catches LimitBodySize's own faults
    app.add_exception_handler(BadRequest, lambda request, e: JSONResponse({"detail": e.detail}, e.status))
    app.add_exception_handler(Busy, lambda request, e: JSONResponse(
        {"detail": f"the server is busy ({e}); try again in a moment"}, 503, headers={"Retry-After": "1"}))
    app.add_exception_handler(RequestValidationError, validation_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # the model's work for /api/explain and /api/conv, in at most EXPLAINERS threads that take their turns in order;
    # threads all waiting on the model's lock do not (8 clients: p99 115-121 ms that way, 95-98 ms this way)
    explaining = anyio.CapacityLimiter(EXPLAINERS)

    def class_entry(index, probability):
        return {"index": int(index), "class": names[index], "probability": round(float(probability), 6)}

    async def prepared_input(data, preprocess):
        """The model input made from the request's image, and the answer's fields made from it alone."""
        try:
            image, png = await decode(data, preprocess and classifier.mnist_like)
        except ImageError as e:
            raise BadRequest(422, str(e)) from None
        return image, {"input": json_list(image.squeeze(), 4), "input_png": png}

    def prediction(probabilities, k, shown):
        indices, best = top_k(probabilities[None], k)
        return {
            "prediction": class_entry(indices[0, 0], best[0, 0]),
            "probabilities": [class_entry(i, p) for i, p in enumerate(probabilities)],
            "top_k": [class_entry(i, p) for i, p in zip(indices[0], best[0])],
            **shown,
        }

    def overlay(image, heat):
        return {"heatmap": json_list(heat, 4), "png": render.grad_cam_png(image, heat)}

    def check_explained(class_index, method):
        if class_index is not None and class_index >= len(names):
            raise BadRequest(422, f"class_index must be in 0..{len(names) - 1}, not {class_index}")
        if method not in METHODS:
            plus = "; a + in a URL's query is a space: write gradcam%2B%2B" if " " in method else ""
            raise BadRequest(422, f"method must be one of {', '.join(METHODS)}, not {method!r}{plus}")

    def explain_image(image, shown, class_index, method):
        found = classifier.explain(image, class_index, method)
        maps = []
        for layer, activations in found["feature_maps"].items():
            png, columns = render.feature_map_png(activations)
            height, width, channels = activations.shape
            maps.append({"layer": layer, "height": height, "width": width, "channels": channels,
                         "columns": columns, "png": png})
        grad_cam = {"layer": found["grad_cam_layer"], **overlay(image, found["grad_cam"])}
        return JSONResponse({
            **prediction(found["probabilities"], 3, shown),
            "explained": class_entry(found["class_index"], found["probabilities"][found["class_index"]]),
            "feature_maps": maps,
            "grad_cam": grad_cam,
            "attribution": {"method": method, "name": METHOD_NAMES[method],  # Grad-CAM's: drawn once
                            **(overlay(image, found["attribution"]) if method != "gradcam" else
                               {key: grad_cam[key] for key in ("heatmap", "png")})},
        })

    def conv_value(image, shown, layer, channel, y, x):
        try:
            worked = classifier.conv_value(image, layer, channel, y, x)
        except CnnlabError as e:  # no such conv layer, channel or position
            raise BadRequest(422, str(e)) from None
        return JSONResponse({**worked, "input_png": shown["input_png"]})

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="Is the server up, and with which model")
    def healthz():
        return {"status": "ok", "model": classifier.name}

    @app.get("/api/model", summary="The model's architecture, class names and the images it takes")
    def model_summary():
        return classifier.summary()

    # The two API endpoints answer with a JSONResponse of plain lists and numbers, the JSON FastAPI would make of
    # the same dict, without its field-by-field walk through them (jsonable_encoder: a tenth of a predict's time).
    @app.post("/api/predict", summary="Class probabilities of an image", openapi_extra=IMAGE_BODY)
    async def predict(request: Request,
                      preprocess: bool = Query(True, description="for a grey digit-style model, make the image "
                                                                 "MNIST-like first; false for images that already "
                                                                 "are (the model's size, white ink on black). Other "
                                                                 "models always get the image as it is, resized"),
                      top_k: int = Query(3, ge=1, le=1000, description="how many of the most probable classes")):
        data = await read_image_bytes(request)
        with batch.coming():
            image, shown = await prepared_input(data, preprocess)
        return JSONResponse(prediction(await batch(image), min(top_k, len(names)), shown))

    @app.post("/api/explain", summary="Feature maps of every conv layer, a Grad-CAM map and the chosen attribution "
                                      "method's map, as PNGs", openapi_extra=IMAGE_BODY)
    async def explain(request: Request, preprocess: bool = Query(True, description="as for /api/predict"),
                      class_index: int | None = Query(None, ge=0, description="class to explain (default: the "
                                                                               "predicted one)"),
                      method: str = Query("gradcam", description=f"attribution method of the 'attribution' map: "
                                                                 f"{', '.join(METHODS)} (see cnnlab explain)")):
        check_explained(class_index, method)
        image, shown = await prepared_input(await read_image_bytes(request), preprocess)
        return await anyio.to_thread.run_sync(explain_image, image, shown, class_index, method, limiter=explaining)

    @app.post("/api/conv", summary="How one value of a conv layer's feature map is made: the patch of its input "
                                   "under the kernel, the kernel, their products, the sum, bias and activation",
              openapi_extra=IMAGE_BODY)
    async def conv(request: Request, layer: str = Query(description="a conv layer's name (GET /api/model: conv_layers)"),
                   channel: int = Query(0, ge=0, description="the feature map's channel (the layer's filter)"),
                   y: int = Query(0, ge=0, description="row of the feature map"),
                   x: int = Query(0, ge=0, description="column of the feature map"),
                   preprocess: bool = Query(True, description="as for /api/predict")):
        image, shown = await prepared_input(await read_image_bytes(request), preprocess)
        return await anyio.to_thread.run_sync(conv_value, image, shown, layer, channel, y, x, limiter=explaining)

    return app


def bind(host="127.0.0.1", port=8000) -> socket.socket:
    """A listening socket (port 0: any free port), so a busy port is a one-line error, not a traceback."""
    if not 0 <= port <= 65535:  # getaddrinfo would wrap 70000 round to 4464
        raise CnnlabError(f"port= must be in 0..65535 (0: any free port), not {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # with its protocol (TCP) named, asyncio turns Nagle's algorithm off for each connection (TCP_NODELAY), as
        # it only does for sockets that say TCP: else a response's body waits ~40 ms behind its headers on a kept-alive one
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as e:
        raise CnnlabError(f"cannot listen on {host}:{port} ({e.strerror or e}); choose another port= or host=") from None
    return sock


def checked_classifier(model_path, safe_mode=True):
    """The model file loaded as a Classifier, or a one-line error if the page cannot show it."""
    from ..prediction import Classifier

    classifier = Classifier.load(model_path, safe_mode=safe_mode)
    check_image_model(classifier.model, model_path)  # the page shows its feature maps and Grad-CAM
    return classifier


def load_app(model_path, safe_mode=True, max_upload_bytes=MAX_UPLOAD_BYTES, max_pixels=MAX_PIXELS,
             decoders=DECODER_PROCESSES) -> FastAPI:
    """The app for a model file: the model loaded, checked and warmed up, so that the first requests do not wait
    for TensorFlow to trace it (a batch of one, then of any size, and explain: ~0.2 s on 2 cores)."""
    classifier = checked_classifier(model_path, safe_mode)
    blank = np.zeros((2, *classifier.input.shape), np.float32)
    classifier.probabilities(blank[:1])
    classifier.probabilities(blank)
    classifier.explain(blank[0])
    app = create_app(classifier, max_upload_bytes, max_pixels, decoders)
    # Keras and TensorFlow leave ~500k objects that live as long as the server, and a full pass of Python's cycle
    # collector over them stalls every request: one in 9,000 /api/predict requests took 202 ms. Frozen, they are
    # passed over (5 full passes in 9,000 requests, 3.5 ms in all).
    gc.freeze()
    return app


def serve(model_path, host="127.0.0.1", port=8000, safe_mode=True, max_upload_bytes=MAX_UPLOAD_BYTES,
          max_pixels=MAX_PIXELS, workers=1, decoders=DECODER_PROCESSES):
    """Load the model once and serve the page and the API until Ctrl-C.

    Uploads are decoded and preprocessed in `decoders` processes beside each server process (0: in its threads).
    With workers > 1, that many processes share the socket, each with its own TensorFlow and model (~0.75 GB each
    for the seed network, and as much again for uvicorn's supervisor, which checks the model first and restarts a
    worker that dies). One process's Python runs on one core at a time, so more pay only with cores to spare; on
    the 2-core machine of benchmarks/README.md, shared with the load test's clients, they do not.
    """
    import uvicorn

    sock = bind(host, port)  # a busy port fails before the model is loaded, not after
    if workers == 1:
        app = load_app(model_path, safe_mode, max_upload_bytes, max_pixels, decoders)
    else:
        checked_classifier(model_path, safe_mode)  # a bad model file fails here once, not in each worker in turn
    if host not in LOOPBACK:
        print(f"cnnlab: warning: listening on {host}, so other computers can use this server", file=sys.stderr)
    shown = f"[{host}]" if ":" in host else host
    print(f"Serving {model_path} at http://{shown}:{sock.getsockname()[1]}/ (API docs at /docs"
          f"{f'; {workers} worker processes' if workers > 1 else ''}); Ctrl-C stops", file=sys.stderr)
    if workers == 1:
        uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])
        return
    from uvicorn.supervisors import Multiprocess

    factory = functools.partial(load_app, model_path, safe_mode, max_upload_bytes, max_pixels, decoders)
    config = uvicorn.Config(factory, factory=True, workers=workers, log_level="info",
                            timeout_worker_healthcheck=120)  # a worker imports TensorFlow before it can answer
    Multiprocess(config, sockets=[sock]).run()
