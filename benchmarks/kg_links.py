"""Quality: link prediction through lccore (`kg embed`'s path) vs PyKEEN's own pipeline vs a
frequency baseline, on the Nations and UMLS graphs that ship inside the `pykeen` package.

For each data set (train / valid / test splits as PyKEEN ships them):

- **lccore**: the training split is written as N-Triples (entities and relations as IRIs under
  `http://example.org/<dataset>/`), imported into an Oxigraph store, read back with
  `lccore_kg_reasoning.links.graph_links` (what `lccore kg embed` trains on), trained with
  `links.train`, saved with `links.save` and loaded again with `links.load` (safetensors, no
  pickle): the model that is evaluated is the one read from disk, as `lccore kg predict` would.
- **PyKEEN**: `pykeen.pipeline.pipeline(dataset=...)` with the same model, dimension, epochs,
  learning rate, batch size and seed.
- **frequency**: a tail is scored by how often it is the tail of that relation in training (a
  head likewise), no learning at all.

All three are scored with the same filtered rank metrics (both directions, realistic ranks:
ties count half): MRR and Hits@1/3/10 on the test split, filtering train, valid and test. The
two learnt models go through PyKEEN's `RankBasedEvaluator` (and the pipeline's own figure is
checked against it); the baseline's ranks are computed here with the same definitions.

    python benchmarks/kg_links.py [--datasets nations umls] [--model RotatE] [--epochs 100] [--dim 64]
                                  [--learning-rate 0.01] [--batch-size 256] [--negatives 16] [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from _common import package_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "plugins"))  # run from a checkout without installing

METRICS = ("mrr", "hits@1", "hits@3", "hits@10")
PYKEEN_NAMES = {"mrr": "both.realistic.inverse_harmonic_mean_rank", "hits@1": "both.realistic.hits_at_1", "hits@3": "both.realistic.hits_at_3", "hits@10": "both.realistic.hits_at_10"}


def read_split(folder: Path, name: str) -> list[tuple[str, str, str]]:
    return [tuple(line.split("\t")) for line in (folder / f"{name}.txt").read_text(encoding="utf-8").splitlines() if line.strip()]


def as_iri(base: str, label: str) -> str:
    return base + quote(label, safe="_-.")


def pykeen_metrics(results) -> dict:
    return {key: float(results.get_metric(name)) for key, name in PYKEEN_NAMES.items()}


def evaluate(model, entity_to_id, relation_to_id, splits, iri) -> dict:
    """Filtered rank metrics of ``model`` on the test split, with PyKEEN's evaluator."""
    import numpy as np
    from pykeen.evaluation import RankBasedEvaluator
    from pykeen.triples.triples_factory import _map_triples_elements_to_ids

    def mapped(rows):
        labelled = np.array([(iri(h), iri(r), iri(t)) for h, r, t in rows], dtype=str)
        return _map_triples_elements_to_ids(labelled, entity_to_id, relation_to_id)

    evaluator = RankBasedEvaluator(filtered=True)
    results = evaluator.evaluate(model, mapped(splits["test"]), additional_filter_triples=[mapped(splits["train"]), mapped(splits["valid"])],
                                 batch_size=256, use_tqdm=False)
    return pykeen_metrics(results)


def frequency_baseline(splits) -> dict:
    """Rank every entity by how often it is that relation's tail (or head) in training."""
    from collections import Counter

    train = splits["train"]
    entities = sorted({e for h, _, t in train for e in (h, t)})
    as_tail = Counter((r, t) for _, r, t in train)
    as_head = Counter((r, h) for h, r, _ in train)
    known = {split: set(rows) for split, rows in splits.items()}
    everything = set().union(*known.values())
    reciprocal, hits = [], {k: [] for k in (1, 3, 10)}
    for h, r, t in splits["test"]:
        if h not in entities or t not in entities:
            continue  # PyKEEN drops test triples with entities unseen in training; so does this
        for missing in ("tail", "head"):
            def score(e):
                return as_tail[(r, e)] if missing == "tail" else as_head[(r, e)]

            true = t if missing == "tail" else h
            target = score(true)
            # filtered: other true answers are not competitors
            others = [e for e in entities if e != true and ((h, r, e) if missing == "tail" else (e, r, t)) not in everything]
            better = sum(1 for e in others if score(e) > target)
            tied = sum(1 for e in others if score(e) == target)
            rank = better + 1 + tied / 2  # realistic: the expected rank when ties are broken at random
            reciprocal.append(1 / rank)
            for k in hits:
                # the chance that a random tie-break puts the true answer within k
                hits[k].append(min(1.0, max(0.0, (k - better) / (tied + 1))))
    count = len(reciprocal)
    return {"mrr": sum(reciprocal) / count, **{f"hits@{k}": sum(v) / count for k, v in hits.items()}}


def run_dataset(name: str, args, workdir: Path) -> dict:
    import lccore_kg
    from lccore_kg_reasoning import links
    from pykeen.pipeline import pipeline

    folder = package_dir("pykeen") / "datasets" / name
    splits = {split: read_split(folder, split) for split in ("train", "valid", "test")}
    base = f"http://example.org/{name}/"

    def iri(label: str) -> str:
        return as_iri(base, label)

    out = {"dataset": name, "train": len(splits["train"]), "valid": len(splits["valid"]), "test": len(splits["test"])}

    # lccore: file -> Oxigraph store -> the links kg embed trains on -> train -> save -> load
    started = time.perf_counter()
    nt = workdir / f"{name}.nt"
    nt.write_text("".join(f"<{iri(h)}> <{iri(r)}> <{iri(t)}> .\n" for h, r, t in splits["train"]), encoding="utf-8")
    store = lccore_kg.open_store(str(workdir / f"{name}-store"))
    store.load(nt)
    triples = links.graph_links(store, where=name)
    store.close()
    options = links.TrainingOptions(model=args.model, epochs=args.epochs, dim=args.dim, seed=args.seed, learning_rate=args.learning_rate, batch_size=args.batch_size, negatives=args.negatives)
    trained = links.train(triples, options)
    links.save(trained, workdir / f"{name}-embeddings")
    loaded = links.load(workdir / f"{name}-embeddings")
    lccore_seconds = time.perf_counter() - started
    out["lccore"] = {**evaluate(loaded.model, loaded.entity_to_id, loaded.relation_to_id, splits, iri), "seconds": lccore_seconds, "links": len(triples)}

    # PyKEEN's pipeline, as its documentation runs it
    started = time.perf_counter()
    result = pipeline(
        dataset=name, model=args.model, model_kwargs={"embedding_dim": args.dim},
        optimizer="Adam", optimizer_kwargs={"lr": args.learning_rate},
        negative_sampler="basic", negative_sampler_kwargs={"num_negs_per_pos": args.negatives},
        training_kwargs={"num_epochs": args.epochs, "batch_size": args.batch_size},
        random_seed=args.seed, use_tqdm=False,
    )
    pykeen_seconds = time.perf_counter() - started
    training = result.training
    out["pykeen"] = {**pykeen_metrics(result.metric_results), "seconds": pykeen_seconds}
    # The same evaluator on the pipeline's model: the two columns are measured alike.
    check = evaluate(result.model, {iri(k): v for k, v in training.entity_to_id.items()}, {iri(k): v for k, v in training.relation_to_id.items()}, splits, iri)
    out["pykeen"]["mrr_rechecked"] = check["mrr"]

    started = time.perf_counter()
    out["frequency"] = {**frequency_baseline(splits), "seconds": time.perf_counter() - started}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["nations", "umls"], choices=["nations", "umls"])
    parser.add_argument("--model", default="RotatE", choices=["TransE", "RotatE", "ComplEx"])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--negatives", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()

    import logging
    import warnings

    logging.getLogger("pykeen").setLevel(logging.ERROR)
    logging.getLogger("torch_max_mem").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*pin_memory.*")

    rows = []
    with tempfile.TemporaryDirectory(prefix="lccore-kg-links-") as tmp:
        for name in args.datasets:
            rows.append(run_dataset(name, args, Path(tmp)))
            print(f"{name}: done", file=sys.stderr, flush=True)

    settings = f"{args.model}, dim {args.dim}, {args.epochs} epochs, Adam lr {args.learning_rate}, batch {args.batch_size}, {args.negatives} negatives, seed {args.seed}"
    print(f"Link prediction, filtered test metrics (both directions, realistic ranks); {settings}")
    print(f"{'dataset':<9} {'system':<10} {'MRR':>7} {'Hits@1':>7} {'Hits@3':>7} {'Hits@10':>8} {'time':>8}")
    for row in rows:
        for system in ("lccore", "pykeen", "frequency"):
            m = row[system]
            print(f"{row['dataset']:<9} {system:<10} {m['mrr']:7.4f} {m['hits@1']:7.4f} {m['hits@3']:7.4f} {m['hits@10']:8.4f} {m['seconds']:7.1f}s")
        gap = row["lccore"]["mrr"] - row["pykeen"]["mrr"]
        print(f"{'':<9} lccore - pykeen MRR {gap:+.4f} (goal: within 0.01); lccore / frequency MRR {row['lccore']['mrr'] / row['frequency']['mrr']:.2f}x; "
              f"pipeline's MRR re-measured with the same evaluator: {row['pykeen']['mrr_rechecked']:.4f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
