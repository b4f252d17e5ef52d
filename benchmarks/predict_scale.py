"""Prediction as the input grows: `lccore predict` (streamed) against the in-memory path it replaced.

    HF_HUB_OFFLINE=1 python benchmarks/predict_scale.py [--rows 10000 100000 1000000] [--in-memory-max 100000] [--repeats 3] [--json OUT.json]

A tiny BERT text classifier (hidden 64, 2 layers, its WordPiece tokenizer learnt from the data)
is trained once by `lccore.train` on 2,000 generated sentences. Then, for each input size (generated
sentences of 4 to 20 words, one JSON string per line), each in a fresh child process that loads
the run first (not timed):

- **streamed**: `lccore_predict.files.predict_file` — what `lccore predict --input IN --output OUT`
  runs: 4,096 rows at a time, length-sorted within, each window written and flushed;
- **in memory** (baseline, on each size up to `--in-memory-max`, 100,000 rows): what `lccore
  predict` did before issue 17: read and parse every row, `predict_parsed` on the whole list,
  write the file at the end. Both paths run in interleaved rounds on those sizes (`--repeats`, 3),
  the median kept.

Each reports rows/second over that work and its peak RSS (`ru_maxrss`). Issue 17's goals: peak RSS
at the largest size ≤ peak RSS at the smallest + 300 MB; streamed throughput ≥ 0.95× the in-memory
path's on the same input (beyond `--in-memory-max`, against the largest in-memory measurement).

Then a kill: `lccore predict` on the middle size is SIGKILLed at a random point, `--resume`d, and
the file compared byte for byte with an uninterrupted run's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a film book show was is very really not quite good great bad awful lovely dull boring wonderful "
    "story acting plot music ending cast director scene moment and but with of to in it this that"
).split()
POSITIVE, NEGATIVE = {"good", "great", "lovely", "wonderful"}, {"bad", "awful", "dull", "boring"}


def sentences(count: int, seed: int):
    rng = random.Random(seed)
    for _ in range(count):
        yield " ".join(rng.choices(WORDS, k=rng.randint(4, 20)))


def train_run(folder: Path) -> Path:
    import lccore

    rows = []
    for text in sentences(2000, seed=1):
        words = set(text.split())
        rows.append({"text": text, "label": "positive" if len(words & POSITIVE) >= len(words & NEGATIVE) else "negative"})
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {"model": {"architecture": "bert", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "vocab_size": 2000},
              "task": {"name": "text_classification", "train": str(folder / "train.jsonl")},
              "train": {"epochs": 1, "batch_size": 32, "max_length": 64}}
    lccore.train(config, folder / "run", progress=False)
    return folder / "run"


def child(system: str, run: str, inputs: str, output: str) -> None:
    """In a fresh process: load the run, then time the prediction of ``inputs`` into ``output``."""
    import lccore
    from lccore.predictor import read_prediction_inputs
    from lccore_predict.files import predict_file

    predictor = lccore.load(run)
    start = time.perf_counter()
    if system == "streamed":
        rows = predict_file(predictor, inputs, output, progress=False)
    else:  # the path before issue 17
        examples = [predictor.task.parse_input(value, where) for where, value in read_prediction_inputs(inputs)]
        predictions = predictor.predict_parsed(examples)
        Path(output).write_text("".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions), encoding="utf-8")
        rows = len(predictions)
    seconds = time.perf_counter() - start
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(system: str, run: Path, inputs: Path, output: Path) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", system, str(run), str(inputs), str(output)], capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{system} failed on {inputs}:\n{result.stderr[-2000:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    measured["rows_per_s"] = measured["rows"] / measured["seconds"]
    return measured


def median_of(measurements: list[dict]) -> dict:
    """The measurement with the median rate, with every round's rate beside it."""
    ordered = sorted(measurements, key=lambda m: m["rows_per_s"])
    return {**ordered[len(ordered) // 2], "rounds_rows_per_s": [round(m["rows_per_s"]) for m in measurements]}


def compare_outputs(streamed: Path, in_memory: Path) -> dict:
    """How far two prediction files agree. A row's batch-mates differ between the two paths (4,096
    rows length-sorted at a time against all of them), so its padded length and the order of the
    float sums in the model can too: the labels agree, a score may differ in its last digit."""
    same_labels = identical = 0
    largest = 0.0
    with streamed.open(encoding="utf-8") as a, in_memory.open(encoding="utf-8") as b:
        for line_a, line_b in zip(a, b, strict=True):
            identical += line_a == line_b
            record_a, record_b = json.loads(line_a), json.loads(line_b)
            same_labels += record_a["label"] == record_b["label"]
            largest = max(largest, abs(record_a["score"] - record_b["score"]))
    return {"same_labels": same_labels, "identical_rows": identical, "largest_score_difference": largest}


def kill_and_resume(run: Path, inputs: Path, folder: Path, seed: int) -> dict:
    """SIGKILL `lccore predict` at a random point, `--resume` it, compare with an uninterrupted run."""
    command = [sys.executable, "-m", "lccore", "predict", str(run), "--input", str(inputs), "-q"]
    straight = folder / "straight.jsonl"
    start = time.perf_counter()
    subprocess.run([*command, "--output", str(straight)], check=True)
    full = time.perf_counter() - start
    killed_after = random.Random(seed).uniform(0.3, 0.8) * full
    out = folder / "resumed.jsonl"
    process = subprocess.Popen([*command, "--output", str(out)])
    time.sleep(killed_after)
    process.send_signal(signal.SIGKILL)
    process.wait()
    rows_at_kill = sum(1 for _ in out.open("rb")) if out.exists() else 0
    # on a small input the kill can fall before the first window or after the last: no state to resume, run again as a user would
    from lccore_predict.files import PREDICT_STATE_SUFFIX

    started = out.with_name(out.name + PREDICT_STATE_SUFFIX).exists()
    subprocess.run([*command, "--output", str(out), *(["--resume"] if started else [])], check=True)
    return {"killed_after_s": round(killed_after, 1), "rows_at_kill": rows_at_kill, "resumed": started, "identical": out.read_bytes() == straight.read_bytes()}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000], help="input sizes (default 10000 100000 1000000)")
    parser.add_argument("--in-memory-max", type=int, default=100_000, help="largest size the in-memory path is also measured on (default 100000)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of both paths on each size up to --in-memory-max; the median is kept (default 3)")
    parser.add_argument("--seed", type=int, default=0, help="where the kill falls")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if not all(100 <= n <= 100_000_000 for n in args.rows):
        parser.error("--rows must lie in 100..100000000")
    if not 1 <= args.repeats <= 20:
        parser.error("--repeats must lie in 1..20")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sizes = sorted(args.rows)
    with tempfile.TemporaryDirectory(prefix="lccore-predict-scale-") as name:
        folder = Path(name)
        os.environ["LCCORE_CACHE"] = str(folder / "cache")
        run = train_run(folder)
        rows = []
        for size in sizes:
            inputs = folder / f"in-{size}.jsonl"
            inputs.write_text("".join(json.dumps(text) + "\n" for text in sentences(size, seed=size)), encoding="utf-8")
            row = {"rows": size}
            if size <= args.in_memory_max:  # the path before issue 17, on the same input; interleaved rounds, the median kept
                rounds = [(measure("in_memory", run, inputs, folder / "out-memory.jsonl"), measure("streamed", run, inputs, folder / "out.jsonl"))
                          for _ in range(args.repeats)]
                row["in_memory"], row["streamed"] = (median_of([r[k] for r in rounds]) for k in (0, 1))
            else:
                row["streamed"] = measure("streamed", run, inputs, folder / "out.jsonl")
            if "in_memory" in row:
                row["same_output"] = compare_outputs(folder / "out.jsonl", folder / "out-memory.jsonl")
            rows.append(row)
            if size != sizes[len(sizes) // 2]:
                inputs.unlink()
        measured = [r for r in rows if "in_memory" in r]
        if not measured:
            raise SystemExit(f"--in-memory-max {args.in_memory_max} is below every size: nothing to compare with")
        print(f"{'rows':>9} {'in-memory rows/s':>17} {'streamed rows/s':>16} {'streamed / in-memory':>21} {'in-memory RSS MB':>17} {'streamed RSS MB':>16} {'RSS - smallest':>15}")
        for row in rows:
            streamed = row["streamed"]
            # beyond --in-memory-max, against the largest in-memory measurement (the old path needs the whole input in memory)
            reference = row.get("in_memory") or measured[-1]["in_memory"]
            label = f"{streamed['rows_per_s'] / reference['rows_per_s']:.2f}x" + ("" if "in_memory" in row else f" (vs @{measured[-1]['rows']})")
            memory = f"{row['in_memory']['peak_rss_mb']:.0f}" if "in_memory" in row else "-"
            speed = f"{row['in_memory']['rows_per_s']:.0f}" if "in_memory" in row else "-"
            print(f"{row['rows']:>9} {speed:>17} {streamed['rows_per_s']:>16.0f} {label:>21} {memory:>17} {streamed['peak_rss_mb']:>16.0f} "
                  f"{streamed['peak_rss_mb'] - rows[0]['streamed']['peak_rss_mb']:>+15.0f}")
        print("streamed against the in-memory path's output: " + "; ".join(
            f"{r['rows']} rows: {r['same_output']['same_labels']} same labels, {r['same_output']['identical_rows']} identical rows, "
            f"largest score difference {r['same_output']['largest_score_difference']:.6f}" for r in measured))
        largest, smallest = rows[-1], measured[0]
        print(f"issue 17's goals: streamed on {largest['rows']} rows against the in-memory path on {smallest['rows']}: "
              f"{largest['streamed']['rows_per_s'] / smallest['in_memory']['rows_per_s']:.2f}x rows/s (goal >= 0.95x), "
              f"{largest['streamed']['peak_rss_mb'] - rows[0]['streamed']['peak_rss_mb']:+.0f} MB peak RSS over {rows[0]['rows']} rows (goal <= +300)")
        middle = sizes[len(sizes) // 2]
        killed = kill_and_resume(run, folder / f"in-{middle}.jsonl", folder, args.seed)
        print(f"kill at {killed['killed_after_s']} s ({killed['rows_at_kill']} of {middle} rows written), {'--resume' if killed['resumed'] else 'run again (no state file: the kill fell before the first window or after the last)'}: "
              f"{'identical' if killed['identical'] else 'DIFFERENT'} to an uninterrupted run")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "kill_and_resume": killed}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
