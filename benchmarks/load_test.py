"""Load test of `cnnlab serve`: N concurrent clients on loopback, 10% malformed requests, bounded, stops by itself.

    python benchmarks/load_test.py [MODEL] [--clients 8] [--requests 300] [--seconds 60]

Starts the server itself (`cnnlab serve MODEL --port 0` on 127.0.0.1; without MODEL it first trains a
one-epoch model on the offline digits set), then runs two phases with the same clients and the same mix:
/api/predict and /api/explain. Valid requests are 280x280 canvas drawings of digits; malformed ones are
each kind of bad input a client sends (not an image, truncated, wrong content type, bad base64, too many
pixels) and must get a 4xx. Counted as errors: any 5xx, a valid request without a 200, a malformed one
without a 4xx, a failed connection. Prints a table and writes JSON (benchmarks/results/load_test.json).
"""

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cnnlab import files

HOST = "127.0.0.1"  # loopback only, whatever the arguments
RESULTS = Path(__file__).resolve().parent / "results"


def canvas_drawings(count=20):
    """Digits of scikit-learn's set, drawn dark on a white 280x280 canvas as the page sends them (PNG bytes)."""
    from cnnlab.data import load_dataset

    drawings = []
    for image in load_dataset("digits").x_test[:count]:
        ink = Image.fromarray(np.round(image[..., 0] * 255).astype(np.uint8)).resize((280, 280), Image.BILINEAR)
        out = io.BytesIO()
        Image.fromarray(255 - np.asarray(ink)).save(out, "PNG")
        drawings.append(out.getvalue())
    return drawings


def malformed_requests(drawing):
    """(name, content type, body) of each kind of bad input, with the status family it must get."""
    huge = io.BytesIO()
    Image.new("1", (5000, 5000)).save(huge, "PNG")  # 25 megapixels in a few kilobytes
    return [
        ("not an image", "image/png", b"this is not a png"),
        ("truncated PNG", "image/png", drawing[: len(drawing) // 3]),
        ("wrong content type", "text/plain", b"7"),
        ("bad base64", "application/json", json.dumps({"image": "%%% not base64 %%%"}).encode()),
        ("too many pixels", "image/png", huge.getvalue()),
    ]


def start_server(model, log_path):
    """`cnnlab serve MODEL --port 0` in a child process; returns it and its URL (from the line it prints)."""
    log = open(log_path, "w")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, "-m", "cnnlab", "serve", str(model), "--host", HOST, "--port", "0"],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"at (http://\S+/) ", Path(log_path).read_text())
        if found:
            url = found.group(1).rstrip("/")
            try:
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    return process, url
            except httpx.TransportError:
                pass
        if process.poll() is not None:
            raise SystemExit(f"the server exited with {process.returncode}:\n{Path(log_path).read_text()[-2000:]}")
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not start within 120 s")


async def run_phase(url, endpoint, drawings, malformed, clients, requests, seconds, share_malformed, seed):
    """`requests` requests (or fewer, if `seconds` run out first) from `clients` concurrent clients."""
    rng = random.Random(seed)
    plan = []
    for i in range(requests):
        if rng.random() < share_malformed:
            name, kind, body = rng.choice(malformed)
            plan.append(("malformed", name, kind, body))
        elif i % 2:  # half of the valid ones as the page sends them (JSON data URL), half as uploads
            data_url = "data:image/png;base64," + base64.b64encode(rng.choice(drawings)).decode()
            plan.append(("valid", "json", "application/json", json.dumps({"image": data_url}).encode()))
        else:
            plan.append(("valid", "upload", "image/png", rng.choice(drawings)))
    records, queue = [], list(reversed(plan))
    deadline = time.monotonic() + seconds

    async def client_loop():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            while queue and time.monotonic() < deadline:
                group, name, kind, body = queue.pop()
                started = time.perf_counter()
                try:
                    response = await client.post(f"/api/{endpoint}", content=body, headers={"Content-Type": kind})
                    status = response.status_code
                except httpx.HTTPError as e:
                    status = f"{type(e).__name__}"
                records.append({"group": group, "name": name, "status": status,
                                "ms": (time.perf_counter() - started) * 1000})

    started = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    return records, time.perf_counter() - started


def is_error(record):
    status = record["status"]
    if not isinstance(status, int) or status >= 500:
        return True
    return status != 200 if record["group"] == "valid" else not 400 <= status < 500


def summarise(records, seconds):
    latencies = np.array([r["ms"] for r in records]) if records else np.zeros(1)
    valid = np.array([r["ms"] for r in records if r["group"] == "valid"]) if records else np.zeros(1)
    statuses = {}
    for r in records:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    return {
        "requests": len(records), "seconds": round(seconds, 2), "requests_per_s": round(len(records) / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1), "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "valid_p50_ms": round(float(np.percentile(valid, 50)), 1),
        "malformed": sum(r["group"] == "malformed" for r in records),
        "errors": sum(map(is_error, records)), "server_errors_5xx": sum(
            isinstance(r["status"], int) and r["status"] >= 500 for r in records),
        "statuses": statuses,
        "malformed_statuses": sorted({f"{r['name']}: {r['status']}" for r in records if r["group"] == "malformed"}),
    }


def train_tiny_model(folder):
    from cnnlab.config import make_config
    from cnnlab.pipeline import train_run

    print("No MODEL given: training one epoch on the digits set first...", file=sys.stderr)
    run, *_ = train_run(make_config(dataset="digits", epochs=1), out=folder, name="digits", verbose=0)
    return run.best_model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="saved model to serve (default: train a tiny one on digits)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (8)")
    parser.add_argument("--requests", type=int, default=300, help="requests per phase, at most 5000 (300)")
    parser.add_argument("--seconds", type=float, default=60, help="time limit per phase, at most 300 (60)")
    parser.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests (0.1)")
    parser.add_argument("--out", default=str(RESULTS / "load_test.json"), help="JSON results file")
    args = parser.parse_args(argv)
    requests, seconds = min(max(args.requests, 1), 5000), min(max(args.seconds, 1), 300)  # bounded, whatever asked

    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or train_tiny_model(scratch)
        drawings = canvas_drawings()
        malformed = malformed_requests(drawings[0])
        server, url = start_server(model, Path(scratch) / "server.log")
        try:
            phases = {}
            for endpoint in ("predict", "explain"):
                records, elapsed = asyncio.run(run_phase(url, endpoint, drawings, malformed, args.clients, requests,
                                                         seconds, args.malformed, seed=0))
                phases[endpoint] = summarise(records, elapsed)
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(f"\ncnnlab serve load test: {args.clients} clients on {url}, {args.malformed:.0%} malformed, "
          f"{os.cpu_count()} CPUs")
    print(f"{'endpoint':<13}{'requests':>9}{'req/s':>8}{'p50 ms':>9}{'p99 ms':>9}{'malformed':>10}{'errors':>8}{'5xx':>5}")
    for endpoint, s in phases.items():
        print(f"{'/api/' + endpoint:<13}{s['requests']:>9}{s['requests_per_s']:>8}{s['p50_ms']:>9}{s['p99_ms']:>9}"
              f"{s['malformed']:>10}{s['errors']:>8}{s['server_errors_5xx']:>5}")
    ratio = phases["predict"]["requests_per_s"] / max(phases["explain"]["requests_per_s"], 1e-9)
    print(f"/api/predict serves {ratio:.1f}x the requests per second of /api/explain")
    print("malformed answers: " + "; ".join(phases["predict"]["malformed_statuses"]))
    result = {"clients": args.clients, "requests_per_phase": requests, "seconds_limit": seconds,
              "malformed_share": args.malformed, "cpus": os.cpu_count(), "platform": platform.platform(),
              "python": platform.python_version(), "phases": phases, "predict_over_explain_rps": round(ratio, 2)}
    files.write_json(args.out, result)
    print(f"Results: {args.out}")
    return 1 if any(s["errors"] for s in phases.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
