"""Serving chats: 16 concurrent streamed chats vs the same chats one at a time, through `lccore serve`'s OpenAI API.

Systems, on the same dialogue run and the same 16 user messages, each a streamed
`/v1/chat/completions` request (greedy, `max_tokens` 48) sent with the official `openai` client:

  one-at-a-time  BASELINE: one client sends the chats one after another.
  16 at once     16 client threads send them together; the server's continuous batcher
                 (transformers' ``init_continuous_batching``) runs them in one batch, each chat
                 joining at the next decoding step and leaving when it ends.

Reported per system (medians over rounds, order rotated every round): generated tokens per second
over the whole set (with the ratio to one-at-a-time), the median time to the first token, and the
wall time. The dialogue run is made here: a 4-layer GPT-2 (hidden 256) built from its size and
trained one epoch on conversations this script writes (or give --run-dir). The server is a real
`lccore serve` process on 127.0.0.1, stopped by the script. The machine may be shared: the ratios,
not the absolute figures, are the result.

    HF_HUB_OFFLINE=1 python benchmarks/serve_chat.py [--chats 16] [--rounds 3] [--run-dir RUN]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from serve_throughput import free_port, wait_until_ready

BASELINE = "one-at-a-time"
MAX_TOKENS = 48
TOPICS = ["the weather", "a film", "dinner", "the train", "a book", "music", "the garden", "football"]


def conversations() -> list[list[dict]]:
    chats = []
    for i, topic in enumerate(TOPICS * 8):
        chats.append([{"role": "user", "content": f"what do you think about {topic}? ({i})"},
                      {"role": "assistant", "content": f"i think {topic} is fine today, thanks for asking about {topic}."}])
    return chats


def make_run(folder: Path) -> Path:
    import lccore

    data = folder / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in conversations()))
    config = {"model": {"architecture": "gpt2", "hidden_size": 256, "num_layers": 4, "num_heads": 4, "vocab_size": 2000},
              "task": {"name": "dialogue", "train": str(data)}, "train": {"epochs": 1, "batch_size": 16, "max_length": 64, "seed": 0}}
    lccore.train(config, folder / "run", progress=False)
    return folder / "run"


def chat(client, model: str, message: str) -> tuple[float | None, int, float]:
    """(seconds to the first token, tokens generated, seconds in all) of one streamed chat."""
    started = time.perf_counter()
    first, tokens = None, 0
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": message}], max_tokens=MAX_TOKENS,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    return first, tokens, time.perf_counter() - started


def one_at_a_time(make_client, model: str, messages: list[str]) -> tuple[list, float]:
    client = make_client()
    started = time.perf_counter()
    results = [chat(client, model, m) for m in messages]
    return results, time.perf_counter() - started


def all_at_once(make_client, model: str, messages: list[str]) -> tuple[list, float]:
    results: list = [None] * len(messages)
    errors: list[BaseException] = []
    clients = [make_client() for _ in messages]

    def send(i: int) -> None:
        try:
            results[i] = chat(clients[i], model, messages[i])
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(messages))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chats", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--run-dir", help="a dialogue run (default: one is trained here)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    import openai

    with tempfile.TemporaryDirectory() as scratch:
        run_dir = Path(args.run_dir) if args.run_dir else make_run(Path(scratch))
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        process = wait_until_ready(subprocess.Popen([sys.executable, "-m", "lccore", "serve", str(run_dir), "--port", str(port), "--timeout", "600"],
                                                    env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True), port)
        try:

            def make_client():
                return openai.OpenAI(api_key="unused", base_url=f"{base}/v1", max_retries=0, timeout=600)

            model = make_client().models.list().data[0].id
            topics = TOPICS * (args.chats // len(TOPICS) + 1)
            messages = [f"what do you think about {topics[i]}?" for i in range(args.chats)]
            systems = {BASELINE: one_at_a_time, f"{args.chats} at once": all_at_once}
            all_at_once(make_client, model, messages)  # warm-up: the batcher starts, the first steps are slow
            measured: dict[str, list] = {name: [] for name in systems}
            for round_ in range(args.rounds):
                names = list(systems)
                for name in names[round_ % len(names):] + names[: round_ % len(names)]:
                    results, wall = systems[name](make_client, model, messages)
                    tokens = sum(t for _, t, _ in results)
                    first = statistics.median(f for f, _, _ in results if f is not None)
                    measured[name].append({"tokens_per_s": tokens / wall, "first_token_s": first, "wall_s": wall, "tokens": tokens})
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    summary = {name: {key: statistics.median(r[key] for r in rows) for key in rows[0]} for name, rows in measured.items()}
    base_rate = summary[BASELINE]["tokens_per_s"]
    print(f"{args.chats} streamed chats, greedy, max_tokens {MAX_TOKENS}, medians of {args.rounds} rounds (baseline: {BASELINE})")
    print(f"{'system':<16}{'tokens/s':>10}{'ratio':>8}{'first token p50':>18}{'wall s':>9}{'tokens':>8}")
    for name, row in summary.items():
        print(f"{name:<16}{row['tokens_per_s']:>10.1f}{row['tokens_per_s'] / base_rate:>7.2f}x{row['first_token_s']:>17.3f}s{row['wall_s']:>9.2f}{row['tokens']:>8.0f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"baseline": BASELINE, "systems": summary, "rounds": measured}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
