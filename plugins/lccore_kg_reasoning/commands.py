"""`lccore kg build | ask`: the kg_reasoning plugin's commands (``register_commands``), beside the
kg plugin's `kg import | query | stats | export`."""

from __future__ import annotations

import functools
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
    kg_build.set_defaults(command=functools.partial(run_build, commands=commands))

    kg_ask = commands.add("ask", group="kg", help="answer a question from STORE's triples (reasoner kg_qa) with the supporting triples and their provenance, or abstain; --evaluate scores a question file")
    kg_ask.add_argument("store", help="an Oxigraph store directory, 'memory', or an http(s) SPARQL endpoint URL")
    kg_ask.add_argument("question", help="the question; with --evaluate, a JSONL file of questions")
    kg_ask.add_argument("--evaluate", action="store_true", help='QUESTION is a file of {"question", "answer" | "answers": [...]} lines (null: the graph cannot answer): print accuracy, wrong-answer rate, abstention rate')
    kg_ask.add_argument("--matcher", choices=["auto", "encoder", "words", "lexical"], default="auto",
                        help="relation matching: encoder (sentence similarity), words (shared word stems), lexical (before issue 22, never abstains); auto: encoder when one is available (default)")
    kg_ask.add_argument("--encoder", metavar="RUN_DIR_OR_MODEL", help="the sentence encoder for --matcher encoder (default: the packaged MiniLM-L6)")
    kg_ask.add_argument("--min-confidence", type=commands.bounded(float, 0, 1), help="abstain below this confidence (0 to 1; default: calibrated for the matcher)")
    kg_ask.add_argument("--ner", metavar="RUN_DIR", help="an ner run to find the question's entities (default: label match)")
    kg_ask.add_argument("--generator", metavar="RUN_DIR", help="a generative run that answers from the retrieved triples")
    kg_ask.add_argument("--hops", type=commands.bounded(int, 1, 3), default=1, help="neighbourhood radius of the evidence for --generator and --matcher lexical (1 to 3, default 1)")
    kg_ask.add_argument("--json", action="store_true", help="the whole answer record as JSON")
    kg_ask.add_argument("--policy", action="append", default=[], metavar="NAME", help="ethics policy on the question (input) and the answer (output) (repeatable)")
    kg_ask.add_argument("--audit-log", metavar="FILE", help="append the ethics decisions to this JSONL file")
    kg_ask.add_argument("-q", "--quiet", action="store_true", help="with --evaluate: no progress bar")
    kg_ask.set_defaults(command=functools.partial(run_ask, commands=commands))


def run_build(args, commands) -> int:
    commands.quiet_transformers()
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


def run_ask(args, commands) -> int:
    from lccore.data import check_file

    if args.evaluate:
        check_file(args.question)
    commands.quiet_transformers()
    from lccore_kg import open_store

    options = {"hops": args.hops, "ner": args.ner, "generator": args.generator, "matcher": args.matcher, "encoder": args.encoder, "min_confidence": args.min_confidence}
    reasoner = lccore.Engine().create("reasoner", "kg_qa", {k: v for k, v in options.items() if v is not None}, key="kg ask")
    from lccore import ethics

    guard = ethics.Guard.build(ethics.items_from_cli(args.policy), audit_log=args.audit_log)
    store = open_store(args.store, write=False)
    try:
        if not len(store):
            raise lccore.ConfigError(f"kg ask: {args.store}: the graph is empty (expected a store built by `lccore kg build` or filled by `lccore kg import`)")
        if args.evaluate:
            return evaluate_file(args, guard.wrap(reasoner, graph=store))
        result = guard.wrap(reasoner, graph=store).answer(args.question)
    finally:
        store.close()
    if result.get("refused") or args.json:
        print(json.dumps(result, ensure_ascii=False, indent=None if result.get("refused") else 2))
        return 0
    print(render(result))
    return 0


def evaluate_file(args, reasoner) -> int:
    from .reasoner import evaluate, read_questions

    questions = read_questions(args.question)
    bar = lccore.progress_bar(total=len(questions), desc="kg ask --evaluate", unit="question", enabled=not args.quiet)
    try:
        metrics = evaluate(reasoner.answer, questions, progress=bar.update)
    finally:
        bar.close()
    print(json.dumps(metrics, indent=2 if args.json else None))
    return 0


def where_read(provenance: list[dict]) -> str:
    """``news-1, sentence 1, characters 0-21, confidence 0.9997`` for the first provenance record (and how many more)."""
    if not provenance:
        return ""
    first = provenance[0]
    parts = [str(first["source"])] if "source" in first else []
    if "sentence" in first:
        parts.append(f"sentence {first['sentence']}")
    if "start" in first and "end" in first:
        parts.append(f"characters {first['start']}-{first['end']}")
    if "confidence" in first:
        parts.append(f"confidence {float(first['confidence']):.4g}")
    more = f"; {len(provenance) - 1} more" if len(provenance) > 1 else ""
    return f"  [{', '.join(parts)}{more}]" if parts else ""


def render(result: dict) -> str:
    """The plain-text answer: the answer and its support, a summary, or one abstention line and what the graph holds."""
    if "support" not in result and "found" not in result:  # a generator's or the lexical matcher's record
        lines = [result["answer"] if result["answer"] is not None else "(no answer found in the graph)"]
        return "\n".join(lines + ["  because: " + " ".join(f"<{t}>" if ":" in t else f'"{t}"' for t in triple) for triple in result["evidence"]])
    if result["answer"] is None:
        lines = [f"No answer (abstained, confidence {result['confidence']:.2f}, needs {result['min_confidence']:.2f}): {result['reason']}."]
        lines += [f"  the graph has: {fact['text']}{where_read(fact['provenance'])}" for fact in result["found"]]
        return "\n".join(lines)
    if result["kind"] == "about":
        return "\n".join([f"What the graph holds about {result['entities'][0]['label']}:"] + [f"  {s['text']}{where_read(s['provenance'])}" for s in result["support"]])
    lines = [f"{result['answer']}: {', '.join(result['counted'])}" if result["kind"] == "count" else result["answer"]]
    return "\n".join(lines + [f"  because: {s['text']}{where_read(s['provenance'])}" for s in result["support"]])
