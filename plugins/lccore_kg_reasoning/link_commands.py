"""`lccore kg embed | predict | drop-inferred`: link prediction over a store (``register_commands``);
the work is in :mod:`lccore_kg_reasoning.links`."""

from __future__ import annotations

import json
import sys

import lccore

STORE_HELP = "an Oxigraph store directory, 'memory', or an http(s) SPARQL endpoint URL"


def add_link_commands(commands) -> None:
    from . import links

    import argparse

    bounded = commands.bounded
    default = links.TrainingOptions()  # the defaults live there: one copy for the CLI and the API
    embed = commands.add("embed", group="kg", help="train knowledge-graph embeddings (PyKEEN) on STORE's entity-relation-entity triples, for kg predict")
    embed.add_argument("store", help=STORE_HELP)
    embed.add_argument("--out", required=True, metavar="DIR", help="directory for the embeddings: new, empty, or an earlier kg embed's (its files are replaced)")
    embed.add_argument("--model", default=default.model, choices=links.MODELS, help=f"the embedding model (default {default.model})")
    embed.add_argument("--training", default=default.training, choices=links.TRAINING_LOOPS,
                       help="PyKEEN's training loop: lcwa scores every entity for each (head, relation) with cross-entropy loss; slcwa samples --negatives corrupted triples per true one; "
                            f"auto (default): lcwa for graphs up to {links.LCWA_MAX_SCORES:,} (head, relation) x entity scores per epoch (a few thousand links), slcwa above")
    embed.add_argument("--reciprocal", action=argparse.BooleanOptionalAction, default=default.reciprocal,
                       help="also train on each link reversed, under an inverse relation: heads are then predicted as the inverse's tails (default: with lcwa, not with slcwa)")
    embed.add_argument("--epochs", type=bounded(int, 1, links.MAX_EPOCHS), default=default.epochs, help=f"training epochs (1 to {links.MAX_EPOCHS:,}, default {default.epochs})")
    embed.add_argument("--dim", type=bounded(int, links.MIN_DIM, links.MAX_DIM), default=default.dim, help=f"embedding dimension (2 to {links.MAX_DIM}, default {default.dim})")
    embed.add_argument("--seed", type=bounded(int, 0, 2**32 - 1), default=default.seed, help=f"random seed (default {default.seed}): the same store and seed give the same model")
    embed.add_argument("--learning-rate", type=bounded(float, high=10, above=0), default=default.learning_rate, help=f"Adam's learning rate (default {default.learning_rate:g})")
    embed.add_argument("--batch-size", type=bounded(int, 1, links.MAX_BATCH_SIZE), default=default.batch_size, help=f"links (slcwa) or (head, relation) pairs (lcwa) per step (default {default.batch_size})")
    embed.add_argument("--negatives", type=bounded(int, 1, links.MAX_NEGATIVES), help=f"--training slcwa only: corrupted triples per true one (1 to {links.MAX_NEGATIVES}, default {links.DEFAULT_NEGATIVES})")
    embed.add_argument("--max-triples", type=bounded(int, 1, links.MAX_TRIPLES_LIMIT), default=links.DEFAULT_MAX_TRIPLES,
                       help=f"refuse a store with more links than this (default {links.DEFAULT_MAX_TRIPLES:,}: 100 RotatE slcwa epochs of that many take about 12 minutes on two CPU cores; at most {links.MAX_TRIPLES_LIMIT:,})")
    embed.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    embed.set_defaults(command=run_embed)

    predict = commands.add("predict", group="kg", help="rank the entities an embedding model puts at the missing end of (HEAD, RELATION, ?) or (?, RELATION, TAIL)")
    predict.add_argument("store", help=STORE_HELP)
    predict.add_argument("--embeddings", required=True, metavar="DIR", help="a kg embed --out directory trained on this store")
    predict.add_argument("--relation", required=True, metavar="IRI_OR_NAME", help="the relation: an IRI, an rdfs:label, or the IRI's last segment (lives_in)")
    ends = predict.add_mutually_exclusive_group(required=True)
    ends.add_argument("--head", metavar="IRI_OR_LABEL", help="the known head: rank tails")
    ends.add_argument("--tail", metavar="IRI_OR_LABEL", help="the known tail: rank heads")
    predict.add_argument("--top", type=bounded(int, 1, links.MAX_TOP), default=10, help=f"how many to list (1 to {links.MAX_TOP:,}, default 10)")
    predict.add_argument("--include-known", action="store_true", help="also list the ends the graph already states (marked 'stated')")
    predict.add_argument("--any-type", action="store_true",
                         help="also list entities whose rdf:type the relation's stated ends never have (left out by default: no person as a birthplace)")
    predict.add_argument("--accept", type=bounded(float, 0, 1), metavar="PROBABILITY",
                         help="write the listed predictions with at least this probability to STORE as inferred links (lc:InferredLink statements, not facts)")
    predict.add_argument("--json", action="store_true", help="one JSON object per prediction")
    predict.set_defaults(command=run_predict)

    drop = commands.add("drop-inferred", group="kg", help="remove inferred links (lc:InferredLink statements) from STORE; facts and their provenance are never touched")
    drop.add_argument("store", help=STORE_HELP)
    drop.add_argument("--embeddings", metavar="DIR", help="only the links these embeddings inferred (default: every inferred link)")
    drop.set_defaults(command=run_drop_inferred)


def run_embed(args) -> int:
    from lccore_kg import open_store

    from . import links

    options = links.TrainingOptions(model=args.model, epochs=args.epochs, dim=args.dim, seed=args.seed, learning_rate=args.learning_rate, batch_size=args.batch_size,
                                    training=args.training, reciprocal=args.reciprocal, negatives=args.negatives)
    options.check(flags=True)
    links.check_out_dir(args.out)  # before any training: a refused directory costs nothing
    store = open_store(args.store, write=False)
    try:
        triples = links.graph_links(store, max_triples=args.max_triples, where=args.store)
    finally:
        store.close()
    links.resolve_options(options, triples, where=args.store)  # before the bar: a refused lcwa batch costs nothing (train decides auto again, alike)
    bar = lccore.progress_bar(total=args.epochs, desc=f"kg embed {args.model}", unit="epoch", enabled=not args.quiet)

    def advance(loss: float) -> None:
        bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
        bar.update(1)

    try:
        embeddings = links.train(triples, options, progress=advance)
    finally:
        bar.close()
    links.save(embeddings, args.out)
    info = embeddings.info
    print(f"{args.out}: {info['model']} dim {info['dim']} ({info['training']}{', reciprocal' if info['reciprocal'] else ''}), {info['links']:,} links, {info['entities']:,} entities, {info['relations']:,} relations, "
          f"{info['epochs']} epochs in {info['train_seconds']:g} s; fit: MRR {info['fit']['mrr']:.3f} on {info['fit']['triples']} training links")
    return 0


def run_predict(args) -> int:
    from lccore_kg import open_store
    from lccore_kg.terms import short
    from rdflib import URIRef

    from . import links

    embeddings = links.load(args.embeddings)
    store = open_store(args.store, write=args.accept is not None)
    try:
        checked: dict = {}
        predictions = links.predict(embeddings, store, relation=args.relation, head=args.head, tail=args.tail, top=args.top,
                                    include_known=args.include_known, any_type=args.any_type, report=checked)
        accepted = None
        if args.accept is not None:
            accepted = links.accept_links(store, predictions, threshold=args.accept, embeddings_dir=args.embeddings, model=embeddings.info["model"])
    finally:
        store.close()
    missing = "tail" if args.head is not None else "head"
    if args.json:
        for row in predictions:
            print(json.dumps(row, ensure_ascii=False))
    else:
        if not predictions:
            print(f"(no candidate {missing}: the graph states them all; --include-known lists them)")
        for rank, row in enumerate(predictions, 1):
            label = f"  ({row['label']})" if row["label"] else ""
            stated = "  stated" if row["stated"] else ""
            print(f"{rank:>3}  p={row['probability']:.4f}  score={row['score']:.4f}  {short(URIRef(row[missing]))}{label}{stated}")
    if checked.get("left_out"):
        types = ", ".join(short(URIRef(t)) for t in checked["expected_types"])
        print(f"left out {checked['left_out']} higher-ranked entities of another type than the {missing}s the graph states for this relation ({types}); "
              "--any-type lists them", file=sys.stderr)
    if accepted is not None:
        print(f"{args.store}: {accepted} inferred links written (probability >= {args.accept:g}; lc:InferredLink statements, not facts)")
    return 0


def run_drop_inferred(args) -> int:
    from pathlib import Path

    from lccore_kg import VOCAB, open_store
    from lccore_kg.terms import nt
    from rdflib import Literal

    only = f"; <{VOCAB.embeddings}> {nt(Literal(str(Path(args.embeddings).resolve())))}" if args.embeddings else ""
    # Only statements typed lc:InferredLink: what kg predict --accept wrote, never a fact or its provenance.
    links = f"?st a <{VOCAB.InferredLink}> {only}"
    store = open_store(args.store)
    try:
        rows = store.query(f"SELECT (COUNT(DISTINCT ?st) AS ?n) WHERE {{ {links} }}")["rows"]
        store.update(f"DELETE {{ ?st ?p ?o }} WHERE {{ {links} . ?st ?p ?o }}")
    finally:
        store.close()
    print(f"{args.store}: {int(rows[0]['n']) if rows else 0} inferred links removed")
    return 0
