"""`train.gradient_checkpointing`: peak memory and step time with it, against the same run without it.

    HF_HUB_OFFLINE=1 python benchmarks/gradient_checkpointing.py [--model PATH] [--max-length 256] [--batch-size 32] [--steps 6] [--repeats 2] [--json OUT.json]

MiniLM-L6 (the packaged sentence encoder, or `--model`) fine-tuned as a text classifier by
`lccore.train` for `--steps` optimiser steps on real Rotten Tomatoes snippets joined into inputs
of `--max-length` tokens (where activations, not weights, fill the memory), dropout off so the
two runs compute the same numbers. Each run is a fresh child process; the settings alternate
over `--repeats` rounds and the median is kept. Reported: the child's peak resident memory
(`ru_maxrss`: model, optimiser state, data and the activations kept for the backward pass), the
training wall time per step, and the largest difference between the two runs' per-step losses.
Baseline: the same run with `gradient_checkpointing: false`.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_model, load_reviews  # noqa: E402

CHILD = """
import json, resource, sys, time
import lccore
config, output = json.loads(sys.argv[1]), sys.argv[2]
run = lccore.train(config, output, progress=False)
steps = run.metrics["train"]
print(json.dumps({"losses": [row["loss"] for row in steps], "seconds": run.metrics["time"]["seconds"],
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def long_inputs(rows: list[dict], count: int, words: int) -> list[dict]:
    """``count`` examples of about ``words`` words, each several snippets of one label joined."""
    out, by_label = [], {}
    for row in rows:
        by_label.setdefault(row["label"], []).append(row["text"])
    labels = sorted(by_label)
    for i in range(count):
        label, texts, parts = labels[i % len(labels)], by_label[labels[i % len(labels)]], []
        j = i
        while sum(len(p.split()) for p in parts) < words:
            parts.append(texts[j % len(texts)])
            j += 7
        out.append({"text": " ".join(parts), "label": label})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    model = args.model or default_model()

    with tempfile.TemporaryDirectory(prefix="lccore-bench-gc-") as work:
        work = Path(work)
        train = work / "train.jsonl"
        rows = long_inputs(load_reviews(), args.batch_size * args.steps, words=args.max_length)
        train.write_text("".join(json.dumps(row) + "\n" for row in rows))
        results: dict[bool, list[dict]] = {False: [], True: []}
        for round_ in range(args.repeats):
            for checkpointing in ((False, True) if round_ % 2 == 0 else (True, False)):
                config = {
                    "model": model, "task": {"name": "text_classification", "train": str(train)},
                    "train": {"epochs": 1, "batch_size": args.batch_size, "max_length": args.max_length, "seed": 1,
                              "dropout": {"hidden": 0.0, "attention": 0.0}, "gradient_checkpointing": checkpointing},
                    "data": {"cache": False},
                }
                output = work / f"run-{round_}-{checkpointing}"
                done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), str(output)], capture_output=True, text=True, check=False)
                if done.returncode:
                    sys.exit(f"child failed:\n{done.stderr[-2000:]}")
                results[checkpointing].append(json.loads(done.stdout.strip().splitlines()[-1]))
                print(f"round {round_ + 1}: gradient_checkpointing={checkpointing}: {results[checkpointing][-1]['peak_rss_mb']:.0f} MB, "
                      f"{results[checkpointing][-1]['seconds']:.1f} s", flush=True)

    def median(key: str, checkpointing: bool) -> float:
        return statistics.median(r[key] for r in results[checkpointing])

    difference = max(abs(a - b) for off, on in zip(results[False], results[True]) for a, b in zip(off["losses"], on["losses"]))
    summary = {
        "model": model, "max_length": args.max_length, "batch_size": args.batch_size, "steps": args.steps,
        "peak_rss_mb": {"off": median("peak_rss_mb", False), "on": median("peak_rss_mb", True)},
        "seconds": {"off": median("seconds", False), "on": median("seconds", True)},
        "max_loss_difference": difference,
    }
    print(f"\n| setting | peak RSS | run time ({args.steps} steps) |\n|---|---|---|")
    for name, key in (("gradient_checkpointing: false (baseline)", "off"), ("gradient_checkpointing: true", "on")):
        print(f"| {name} | {summary['peak_rss_mb'][key]:.0f} MB | {summary['seconds'][key]:.1f} s |")
    print(f"\npeak RSS ratio {summary['peak_rss_mb']['on'] / summary['peak_rss_mb']['off']:.2f}x, "
          f"time ratio {summary['seconds']['on'] / summary['seconds']['off']:.2f}x, largest per-step loss difference {difference:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
