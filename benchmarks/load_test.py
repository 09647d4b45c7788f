"""Load test of `cnnlab serve`: N concurrent clients on loopback, 10% malformed requests, bounded, stops by itself.

    python benchmarks/load_test.py [MODEL] [--clients 1 8] [--requests 300] [--seconds 60]
    python benchmarks/load_test.py MODEL --before /tmp/before/src --rounds 3   # this checkout against another
    python benchmarks/load_test.py MODEL --rss 20000                           # memory over 20,000 requests

Starts the server itself (`cnnlab serve MODEL --port 0` on 127.0.0.1; without MODEL it first trains a
one-epoch model on the offline digits set), sends each endpoint a few untimed requests (the model's first calls
trace it), then runs a phase per endpoint and number of clients with the same mix: /api/predict and /api/explain.
Valid requests are 280x280 canvas drawings of digits; malformed ones are each kind of bad input a client sends
(not an image, truncated, wrong content type, bad base64, too many pixels) and must get a 4xx. Counted as errors:
any 5xx, a valid request without a 200, a malformed one without a 4xx, a failed connection.

With --before, the same phases also run on a server of another copy of cnnlab (its src/ folder), each server in a
fresh process, the two taking turns round by round, and the report gives after/before ratios: on a shared machine
absolute figures move from minute to minute, ratios of back-to-back runs far less. Each phase's 1-minute load
average is recorded with it. With --rss N, N more /api/predict requests follow each server's first round, its
resident memory (workers included) sampled every RSS_CHUNK requests. Prints a table and writes JSON
(benchmarks/results/load_test.json).
"""

import argparse
import asyncio
import base64
import io
import itertools
import json
import os
import platform
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from cnnlab import files

HOST = "127.0.0.1"  # loopback only, whatever the arguments
RESULTS = Path(__file__).resolve().parent / "results"
ENDPOINTS = ("predict", "explain")
WARMUP = 32  # untimed valid requests to each endpoint of a freshly started server
RSS_CHUNK = 1000


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


def source_env(source):
    """The environment of a server run from `source` (another copy of cnnlab's src/ folder), else from this one."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if source:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(source).resolve()), env.get("PYTHONPATH")) if p)
    return env


def served_from(env):
    """The cnnlab package a server with this environment imports: proof that --before serves the other copy."""
    found = subprocess.run([sys.executable, "-c", "import cnnlab; print(cnnlab.__file__)"], env=env,
                           capture_output=True, text=True, timeout=60)
    return str(Path(found.stdout.strip()).parent)


def start_server(model, log_path, env, workers=1):
    """`cnnlab serve MODEL --port 0` in a child process; returns it and its URL (from the line it prints)."""
    log = open(log_path, "w")
    command = [sys.executable, "-m", "cnnlab", "serve", str(model), "--host", HOST, "--port", "0"]
    if workers > 1:
        command += ["--workers", str(workers)]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 180
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
    raise SystemExit("the server did not start within 180 s")


def stop_server(process):
    process.send_signal(signal.SIGINT)  # as Ctrl-C: with --workers, the workers stop too
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=30)


def tree_rss_mib(pid) -> float:
    """Resident memory of a process and all its descendants (a server's workers), in MiB (Linux's /proc)."""
    total, todo = 0, [pid]
    while todo:
        process = todo.pop()
        try:
            total += int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{process}/status").read_text()).group(1))
            for task in Path(f"/proc/{process}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, AttributeError):  # gone meanwhile, or a zombie without VmRSS
            continue
    return total / 1024


async def run_phase(url, endpoint, drawings, malformed, clients, requests, seconds, share_malformed, seed,
                    client_kind="httpx"):
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
    # made before the clock starts: making an httpx client takes ~20-50 ms of this process's CPU (it reads the CA
    # certificates), which would stall the first requests of the others and make most of a phase's slowest 1%
    sessions = [(httpx.AsyncClient(base_url=url, timeout=30) if client_kind == "httpx" else RawClient(url))
                for _ in range(clients)]
    deadline = time.monotonic() + seconds

    async def client_loop(client):
        async with client:
            while queue and time.monotonic() < deadline:
                group, name, kind, body = queue.pop()
                started = time.perf_counter()
                try:
                    response = await client.post(f"/api/{endpoint}", content=body, headers={"Content-Type": kind})
                    status = response.status_code
                except (httpx.HTTPError, OSError, asyncio.IncompleteReadError, ValueError) as e:
                    status = f"{type(e).__name__}"
                records.append({"group": group, "name": name, "status": status,
                                "ms": (time.perf_counter() - started) * 1000})

    started = time.perf_counter()
    await asyncio.gather(*(client_loop(client) for client in sessions))
    return records, time.perf_counter() - started


class RawClient:
    """A lean HTTP/1.1 keep-alive client over asyncio streams (`--client raw`): a request costs its process ~0.1 ms
    of CPU, where httpx's costs ~1.2 ms. On a 2-core machine the clients share the server's cores, so httpx's
    clients take CPU a real deployment's clients (on other machines) would not. Reads the status line, the headers
    and a Content-Length body: all that `cnnlab serve` answers."""

    def __init__(self, url):
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port, self.streams = host, int(port), None

    async def __aenter__(self):
        self.streams = await asyncio.open_connection(self.host, self.port)
        return self

    async def __aexit__(self, *_):
        self.streams[1].close()

    async def post(self, path, content, headers):
        reader, writer = self.streams
        writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: {headers['Content-Type']}\r\n"
                     f"Content-Length: {len(content)}\r\n\r\n".encode() + content)
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        length = next((int(line.split(":", 1)[1]) for line in head if line.lower().startswith("content-length:")), 0)
        await reader.readexactly(length)
        if any(line.lower() == "connection: close" for line in head):  # the server closes after some refusals
            writer.close()
            self.streams = await asyncio.open_connection(self.host, self.port)
        return types.SimpleNamespace(status_code=int(head[0].split()[1]))


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


def rss_run(process, url, drawings, malformed, clients, requests, seconds, share_malformed):
    """`requests` /api/predict requests (fewer if `seconds` run out) in chunks of RSS_CHUNK, the server's resident
    memory sampled before the first and after each chunk: a leak grows it steadily, a warm-up once."""
    samples = [(0, round(tree_rss_mib(process.pid), 1))]
    done, statuses, errors, deadline = 0, {}, 0, time.monotonic() + seconds
    while done < requests and time.monotonic() < deadline:
        chunk = min(RSS_CHUNK, requests - done)
        records, _ = asyncio.run(run_phase(url, "predict", drawings, malformed, clients, chunk,
                                           deadline - time.monotonic(), share_malformed, seed=done))
        done += len(records)
        errors += sum(map(is_error, records))
        for r in records:
            statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
        samples.append((done, round(tree_rss_mib(process.pid), 1)))
    middle = next(mib for count, mib in samples if count >= done / 2)
    return {"requests": done, "clients": clients, "errors": errors, "statuses": statuses,
            "rss_start_mib": samples[0][1], "rss_end_mib": samples[-1][1], "rss_peak_mib": max(m for _, m in samples),
            "growth_mib": round(samples[-1][1] - samples[0][1], 1),
            "growth_second_half_mib": round(samples[-1][1] - middle, 1), "samples": samples}


def case_name(run):
    return f"{run['endpoint']}@{run['clients']}/{run['client']}"


def medians(runs):
    """{server: {"endpoint@clients": median requests/s, p50, p99 and the summed errors over the rounds}}."""
    grouped = {}
    for run in runs:
        grouped.setdefault(run["server"], {}).setdefault(case_name(run), []).append(run)
    return {server: {case: {"rounds": len(rs), **{k: round(float(np.median([r[k] for r in rs])), 1)
                                                   for k in ("requests_per_s", "p50_ms", "p99_ms")},
                            "errors": sum(r["errors"] for r in rs), "server_errors_5xx": sum(
                                r["server_errors_5xx"] for r in rs)} for case, rs in cases.items()}
            for server, cases in grouped.items()}


def ratios(runs):
    """after / before of each case, round by round (the two servers of a round ran back to back), and their median:
    requests/s above 1 and latencies below 1 are better."""
    by_round = {}
    for run in runs:
        by_round.setdefault((run["round"], case_name(run)), {})[run["server"]] = run
    found = {}
    for (_, name), pair in sorted(by_round.items()):
        if {"before", "after"} <= set(pair):
            case = found.setdefault(name, {"requests_per_s": [], "p50_ms": [], "p99_ms": []})
            for k in case:
                case[k].append(round(pair["after"][k] / max(pair["before"][k], 1e-9), 2))
    return {case: {**{k: float(np.median(v)) for k, v in values.items()}, "by_round": values}
            for case, values in found.items()}


def cpu_name():
    try:
        found = re.search(r"Model name:\s*(.+)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
        return found.group(1).strip() if found else platform.processor()
    except OSError:
        return platform.processor()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", help="saved model to serve (default: train a tiny one on digits)")
    parser.add_argument("--clients", type=int, nargs="+", default=[8], help="concurrent clients, one phase for "
                        "each number given (8)")
    parser.add_argument("--requests", type=int, default=300, help="requests per phase, at most 5000 (300)")
    parser.add_argument("--seconds", type=float, default=60, help="time limit per phase, at most 300 (60)")
    parser.add_argument("--malformed", type=float, default=0.1, help="share of malformed requests (0.1)")
    parser.add_argument("--endpoints", nargs="+", choices=ENDPOINTS, default=list(ENDPOINTS), help="(both)")
    parser.add_argument("--client", nargs="+", choices=("httpx", "raw"), default=["httpx"], help="the clients' HTTP "
                        "library, a set of phases for each given: httpx, or raw (a lean client of asyncio streams, "
                        "which leaves the cores to the server; see RawClient) (httpx)")
    parser.add_argument("--workers", type=int, default=1, help="server processes (`cnnlab serve --workers`; 1)")
    parser.add_argument("--before", metavar="SRC", help="also serve the model from SRC, another copy of cnnlab's "
                        "src/ folder (e.g. the previous commit's: git worktree add /tmp/before HEAD~1, then "
                        "/tmp/before/src), the two servers taking turns, and report after/before ratios")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of every phase on each server, at most 10 (1)")
    parser.add_argument("--rss", type=int, default=0, metavar="N", help="then send N /api/predict requests "
                        "(at most 50,000) and report the server's resident memory at their start and end (0: no)")
    parser.add_argument("--rss-seconds", type=float, default=300, help="time limit of --rss, at most 900 (300)")
    parser.add_argument("--out", default=str(RESULTS / "load_test.json"), help="JSON results file")
    args = parser.parse_args(argv)
    requests, seconds = min(max(args.requests, 1), 5000), min(max(args.seconds, 1), 300)  # bounded, whatever asked
    clients_list = [min(max(c, 1), 64) for c in args.clients]
    rounds, rss_requests = min(max(args.rounds, 1), 10), min(max(args.rss, 0), 50_000)
    rss_seconds = min(max(args.rss_seconds, 1), 900)
    servers = {"after": source_env(None)} | ({"before": source_env(args.before)} if args.before else {})
    sources = {name: served_from(env) for name, env in servers.items()}
    if args.before and sources["before"] == sources["after"]:
        raise SystemExit(f"--before {args.before} is not a cnnlab source folder: the server would import "
                         f"{sources['after']} both times")

    runs, rss = [], {}
    load_start = os.getloadavg()
    print(f"cnnlab serve load test: {', '.join(map(str, clients_list))} clients, {args.malformed:.0%} malformed, "
          f"{os.cpu_count()} CPUs ({cpu_name()}), load average {load_start[0]:.2f}")
    print(f"{'server':<8}{'round':>6}{'endpoint':>14}{'clients':>8}{'client':>7}{'requests':>9}{'req/s':>8}{'p50 ms':>9}"
          f"{'p99 ms':>9}{'errors':>8}{'5xx':>5}{'load':>6}")
    with tempfile.TemporaryDirectory() as scratch:
        model = args.model or train_tiny_model(scratch)
        drawings = canvas_drawings()
        malformed = malformed_requests(drawings[0])
        for round_ in range(1, rounds + 1):
            order = list(servers) if round_ % 2 else list(servers)[::-1]  # each goes first in turn
            for name in order:
                server, url = start_server(model, Path(scratch) / f"{name}.log", servers[name], args.workers)
                try:
                    for endpoint in args.endpoints:  # untimed: the model's first calls trace it
                        asyncio.run(run_phase(url, endpoint, drawings, malformed, max(clients_list), WARMUP, 60, 0,
                                              seed=1))
                    for client_kind, clients, endpoint in itertools.product(args.client, clients_list,
                                                                            args.endpoints):
                        load = os.getloadavg()[0]
                        records, elapsed = asyncio.run(run_phase(url, endpoint, drawings, malformed, clients,
                                                                 requests, seconds, args.malformed, seed=0,
                                                                 client_kind=client_kind))
                        s = {"server": name, "round": round_, "endpoint": endpoint, "clients": clients,
                             "client": client_kind, "load_average_1min": round(load, 2), **summarise(records, elapsed)}
                        runs.append(s)
                        print(f"{name:<8}{round_:>6}{'/api/' + endpoint:>14}{clients:>8}{client_kind:>7}"
                              f"{s['requests']:>9}{s['requests_per_s']:>8}{s['p50_ms']:>9}{s['p99_ms']:>9}"
                              f"{s['errors']:>8}{s['server_errors_5xx']:>5}{load:>6.2f}")
                    if rss_requests and round_ == 1:
                        rss[name] = rss_run(server, url, drawings, malformed, max(clients_list), rss_requests,
                                            rss_seconds, args.malformed)
                        r = rss[name]
                        print(f"{name:<8} resident memory over {r['requests']:,} /api/predict requests: "
                              f"{r['rss_start_mib']} MiB -> {r['rss_end_mib']} MiB (second half "
                              f"{r['growth_second_half_mib']:+} MiB), {r['errors']} errors")
                finally:
                    stop_server(server)

    summary, compared = medians(runs), ratios(runs)
    if compared:
        print("after / before (median of the rounds' ratios; requests/s: higher is better, latency: lower):")
        for case, r in compared.items():
            print(f"  {case:<20} requests/s {r['requests_per_s']:.2f}x  p50 {r['p50_ms']:.2f}x  p99 {r['p99_ms']:.2f}x")
    first = next((r for r in runs if r["endpoint"] == "predict"), runs[0])
    print("malformed answers: " + "; ".join(first["malformed_statuses"]))
    result = {"machine": {"cpu": cpu_name(), "cpus": os.cpu_count(), "platform": platform.platform(),
                          "python": platform.python_version(), "load_average_start": [round(x, 2) for x in load_start],
                          "load_average_end": [round(x, 2) for x in os.getloadavg()]},
              "settings": {"clients": clients_list, "requests_per_phase": requests, "seconds_limit": seconds,
                           "malformed_share": args.malformed, "workers": args.workers, "client": args.client, "rounds": rounds,
                           "warmup_requests": WARMUP, "sources": sources},
              "summary": summary, "ratios": compared, "rss": rss, "runs": runs}
    files.write_json(args.out, result)
    print(f"Results: {args.out}")
    failed = any(r["errors"] for r in runs) or any(r["errors"] for r in rss.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
