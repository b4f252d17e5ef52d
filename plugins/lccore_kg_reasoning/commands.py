"""`lccore kg build | ask`: the kg_reasoning plugin's commands (``register_commands``), beside the
kg plugin's `kg import | query | stats | export`."""

from __future__ import annotations

import json
from pathlib import Path

import lccore


def add_commands(commands) -> None:
    kg_build = commands.add("build", group="kg", help="extract entities and relations from documents with an NER run and a relation run, into STORE")
    kg_build.add_argument("--ner", required=True, metavar="RUN_DIR", help="an ner run")
    kg_build.add_argument("--re", required=True, metavar="RUN_DIR", help="a relation_extraction run")
    kg_build.add_argument("--input", required=True, help="JSONL: one document per line, a string or {\"id\", \"text\"}")
    kg_build.add_argument("--store", required=True, help="a directory (persistent store), 'memory', or a SPARQL endpoint URL")
    kg_build.add_argument("--base", default="urn:lccore:", help="prefix of entity, type and relation IRIs (default: urn:lccore:)")
    kg_build.add_argument("--min-confidence", type=float, default=0.5, help="relations scored lower are left out (0 to 1, default 0.5)")
    kg_build.add_argument("--batch-size", type=int, default=64, help="sentences per transaction, whole documents (1 to 4096, default 64)")
    kg_build.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    kg_build.set_defaults(command=run_build)

    kg_ask = commands.add("ask", group="kg", help="answer a question from STORE's triples (reasoner kg_qa), with the supporting triples")
    kg_ask.add_argument("store", help="an Oxigraph store directory, 'memory', or an http(s) SPARQL endpoint URL")
    kg_ask.add_argument("question")
    kg_ask.add_argument("--ner", metavar="RUN_DIR", help="an ner run to find the question's entities (default: label match)")
    kg_ask.add_argument("--generator", metavar="RUN_DIR", help="a generative run that answers from the retrieved triples")
    kg_ask.add_argument("--hops", type=commands.bounded(int, 1, 3), default=1, help="neighbourhood radius (1 to 3, default 1)")
    kg_ask.add_argument("--json", action="store_true", help="the whole answer record as JSON")
    kg_ask.add_argument("--policy", action="append", default=[], metavar="NAME", help="ethics policy on the question (input) and the answer (output) (repeatable)")
    kg_ask.add_argument("--audit-log", metavar="FILE", help="append the ethics decisions to this JSONL file")
    kg_ask.set_defaults(command=run_ask)


def quiet_transformers() -> None:
    """No per-load reports from transformers: the terminal is for the command's own output."""
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def run_build(args) -> int:
    quiet_transformers()
    from lccore_kg import open_store
    from lccore.data import bytes_read, check_file

    from .build import build_graph, check_build_options, read_documents

    # Before the runs load: a bad value costs nothing.
    check_build_options(base=args.base, min_confidence=args.min_confidence, batch_size=args.batch_size, flags=True)
    check_file(args.input)
    ner, relations = lccore.load(args.ner), lccore.load(args.re)
    store = open_store(args.store)
    # Over the input's bytes (rate and ETA; the sentences are counted only as they are split), the sentences done beside.
    bar = lccore.progress_bar(total=Path(args.input).stat().st_size, desc="kg build", unit="B", unit_scale=True, enabled=not args.quiet)
    started, sentences = bytes_read(), [0]

    def advance(done: int) -> None:
        sentences[0] += done
        bar.update(min(bytes_read() - started, bar.total) - bar.n)
        bar.set_postfix_str(f"{sentences[0]} sentences", refresh=False)

    try:
        counts = build_graph(
            ner, relations, read_documents(args.input), store, base=args.base,
            min_confidence=args.min_confidence, batch_size=args.batch_size, progress=advance,
        )
    finally:
        bar.close()
        store.close()
    print(json.dumps(counts))
    return 0


def run_ask(args) -> int:
    quiet_transformers()
    from lccore_kg import open_store

    options = {"hops": args.hops, "ner": args.ner, "generator": args.generator}
    reasoner = lccore.Engine().create("reasoner", "kg_qa", {k: v for k, v in options.items() if v is not None}, key="kg ask")
    from lccore import ethics

    guard = ethics.Guard.build(ethics.items_from_cli(args.policy), audit_log=args.audit_log)
    store = open_store(args.store)
    try:
        result = guard.wrap(reasoner, graph=store).answer(args.question)
    finally:
        store.close()
    if result.get("refused"):
        print(json.dumps(result, ensure_ascii=False))
        return 0
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
        return 0
    print(result["answer"] if result["answer"] is not None else "(no answer found in the graph)")
    for triple in result["evidence"]:
        print("  because: " + " ".join(f"<{term}>" if ":" in term else f'"{term}"' for term in triple))
    return 0
