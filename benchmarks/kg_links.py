"""Quality: link prediction through lccore (`kg embed`'s path) vs PyKEEN's own pipeline vs a
frequency baseline, on the Nations and UMLS graphs that ship inside the `pykeen` package.

For each data set (train / valid / test splits as PyKEEN ships them):

- **lccore**: the training split is written as N-Triples (entities and relations as IRIs under
  `http://example.org/<dataset>/`), imported into an Oxigraph store, read back with
  `lccore_kg_reasoning.links.graph_links` (what `lccore kg embed` trains on), trained with
  `links.train`, saved with `links.save` and loaded again with `links.load` (safetensors, no
  pickle): the model that is evaluated is the one read from disk, as `lccore kg predict` would.
- **PyKEEN**: `pykeen.pipeline.pipeline(dataset=...)` with the same model, training loop (and its
  loss), reciprocal relations or not, dimension, epochs, learning rate, batch size, negatives
  (sLCWA) and seed, spelt out here rather than taken from lccore (a setting lccore passed wrongly
  would show as a gap).
- **frequency**: a tail is scored by how often it is the tail of that relation in training (a
  head likewise), no learning at all.

All three are scored with the same filtered rank metrics (both directions, realistic ranks:
ties count half): MRR and Hits@1/3/10 on the test split, filtering train, valid and test. The
two learnt models go through PyKEEN's `RankBasedEvaluator` (and the pipeline's own figure is
checked against it); the baseline's ranks are computed here with the same definitions.

    python benchmarks/kg_links.py [--datasets nations umls] [--model M] [--training lcwa|slcwa] [--[no-]reciprocal]
                                  [--epochs N] [--dim D] [--learning-rate LR] [--batch-size B] [--negatives K]
                                  [--seed S] [--no-pykeen] [--json out.json]

The defaults are `lccore kg embed`'s (``links.TrainingOptions()``). ``--no-pykeen`` skips the
pipeline run (half the time; for trying settings).
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
    options = links.TrainingOptions(model=args.model, epochs=args.epochs, dim=args.dim, seed=args.seed, learning_rate=args.learning_rate, batch_size=args.batch_size,
                                    training=args.training, reciprocal=args.reciprocal, negatives=args.negatives)
    trained = links.train(triples, options)
    links.save(trained, workdir / f"{name}-embeddings")
    loaded = links.load(workdir / f"{name}-embeddings")
    lccore_seconds = time.perf_counter() - started
    out["lccore"] = {**evaluate(loaded.model, loaded.entity_to_id, loaded.relation_to_id, splits, iri), "seconds": lccore_seconds, "links": len(triples),
                     "train_seconds": trained.info["train_seconds"], "loss": trained.info["loss"]}

    started = time.perf_counter()
    out["frequency"] = {**frequency_baseline(splits), "seconds": time.perf_counter() - started}
    if not args.pykeen:
        out["settings"] = {key: trained.info[key] for key in ("training", "reciprocal", "negatives", "loss")}
        return out

    # PyKEEN's pipeline, as its documentation runs it
    started = time.perf_counter()
    # what lccore ran (--training auto and --reciprocal unset are decided per graph), spelt out for PyKEEN
    ran = trained.info
    out["settings"] = {"training": ran["training"], "reciprocal": ran["reciprocal"], "negatives": ran["negatives"], "loss": ran["loss"]}
    if ran["training"] == "lcwa":
        loop = {"training_loop": "lcwa", "loss": "crossentropy"}
    else:  # the model's default loss
        loop = {"training_loop": "slcwa", "negative_sampler": "basic", "negative_sampler_kwargs": {"num_negs_per_pos": ran["negatives"]}}
    result = pipeline(
        dataset=name, dataset_kwargs={"create_inverse_triples": ran["reciprocal"]},
        model=args.model, model_kwargs={"embedding_dim": args.dim}, **loop,
        optimizer="Adam", optimizer_kwargs={"lr": args.learning_rate},
        training_kwargs={"num_epochs": args.epochs, "batch_size": args.batch_size},
        random_seed=args.seed, use_tqdm=False,
    )
    pykeen_seconds = time.perf_counter() - started
    training = result.training
    out["pykeen"] = {**pykeen_metrics(result.metric_results), "seconds": pykeen_seconds, "train_seconds": result.train_seconds, "loss": type(result.model.loss).__name__}
    # The same evaluator on the pipeline's model: the two columns are measured alike.
    check = evaluate(result.model, {iri(k): v for k, v in training.entity_to_id.items()}, {iri(k): v for k, v in training.relation_to_id.items()}, splits, iri)
    out["pykeen"]["mrr_rechecked"] = check["mrr"]
    return out


def main() -> None:
    from lccore_kg_reasoning import links

    default = links.TrainingOptions()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["nations", "umls"], choices=["nations", "umls"])
    parser.add_argument("--model", default=default.model, choices=links.MODELS)
    parser.add_argument("--training", default=default.training, choices=links.TRAINING_LOOPS)
    parser.add_argument("--reciprocal", action=argparse.BooleanOptionalAction, default=default.reciprocal)
    parser.add_argument("--epochs", type=int, default=default.epochs)
    parser.add_argument("--dim", type=int, default=default.dim)
    parser.add_argument("--learning-rate", type=float, default=default.learning_rate)
    parser.add_argument("--batch-size", type=int, default=default.batch_size)
    parser.add_argument("--negatives", type=int, help=f"--training slcwa only (default {links.DEFAULT_NEGATIVES})")
    parser.add_argument("--seed", type=int, default=default.seed)
    parser.add_argument("--no-pykeen", dest="pykeen", action="store_false", help="skip PyKEEN's pipeline (lccore and the baseline only)")
    parser.add_argument("--json", help="write the figures here as JSON")
    args = parser.parse_args()
    if args.negatives is not None and args.training != "slcwa":
        parser.error("--negatives: only with --training slcwa")

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

    settings = f"{args.model}, --training {args.training}, dim {args.dim}, {args.epochs} epochs, Adam lr {args.learning_rate}, batch {args.batch_size}, seed {args.seed}"
    print(f"Link prediction, filtered test metrics (both directions, realistic ranks); {settings}")
    print(f"{'dataset':<9} {'system':<10} {'MRR':>7} {'Hits@1':>7} {'Hits@3':>7} {'Hits@10':>8} {'time':>8}")
    for row in rows:
        ran = row["settings"]
        loop = f"sLCWA, {ran['negatives']} negatives" if ran["training"] == "slcwa" else "LCWA"
        print(f"{row['dataset']}: {loop}, {ran['loss']}{', reciprocal relations' if ran['reciprocal'] else ''}")
        for system in ("lccore", "pykeen", "frequency"):
            if system not in row:
                continue
            m = row[system]
            print(f"{row['dataset']:<9} {system:<10} {m['mrr']:7.4f} {m['hits@1']:7.4f} {m['hits@3']:7.4f} {m['hits@10']:8.4f} {m['seconds']:7.1f}s")
        ratio = f"lccore / frequency MRR {row['lccore']['mrr'] / row['frequency']['mrr']:.2f}x (+{row['lccore']['mrr'] - row['frequency']['mrr']:.4f})"
        if "pykeen" in row:
            gap = row["lccore"]["mrr"] - row["pykeen"]["mrr"]
            print(f"{'':<9} lccore - pykeen MRR {gap:+.4f} (goal: within 0.01); {ratio}; pipeline's MRR re-measured with the same evaluator: {row['pykeen']['mrr_rechecked']:.4f}")
        else:
            print(f"{'':<9} {ratio}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
