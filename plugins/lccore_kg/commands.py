"""`lccore kg import | query | stats | export`: the kg plugin's commands (``register_commands``)."""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from pathlib import Path

import lccore

from . import MAX_ROWS

#: ``kg query --max-rows``: a result is held whole (the table aligns its columns), so it is bounded.
DEFAULT_MAX_ROWS = 100_000
#: ``kg query --timeout``: the default and the most allowed, in seconds.
DEFAULT_TIMEOUT = 60.0
MAX_TIMEOUT = 86_400.0

GROUP_HELP = "knowledge graphs: import RDF files, SPARQL, statistics, export (and what other plugins add: build, ask, embed, predict, drop-inferred)"


def add_commands(commands) -> None:
    commands.group("kg", help=GROUP_HELP)
    store_help = "an Oxigraph store directory (persistent), 'memory', or an http(s) SPARQL endpoint URL"
    formats_help = "turtle, nt, json-ld, xml, nquads or trig (default: from the file extension)"

    kg_import = commands.add("import", group="kg", help="read RDF files into a store (a new directory becomes an Oxigraph store)")
    kg_import.add_argument("store", help=store_help)
    kg_import.add_argument("files", nargs="+", metavar="FILE", help="RDF file: .ttl .nt .jsonld/.json .rdf/.xml/.owl .nq .trig (a malformed file writes nothing)")
    kg_import.add_argument("--format", help=formats_help)
    kg_import.add_argument("--base", metavar="IRI", help="base IRI for the relative IRIs in the files")
    kg_import.set_defaults(command=run_import)

    kg_query = commands.add("query", group="kg", help="run a SPARQL query: an aligned table, or --json")
    kg_query.add_argument("store", help=store_help)
    kg_query.add_argument("sparql", metavar="SPARQL", help="the query text, or - to read it from stdin")
    kg_query.add_argument("--json", action="store_true", help="SPARQL 1.1 results JSON (SELECT, ASK) or JSON-LD (CONSTRUCT, DESCRIBE)")
    kg_query.add_argument("--allow-network", action="store_true", help="allow SERVICE, LOAD and remote FROM/USING (refused by default)")
    kg_query.add_argument("--infer", choices=["rdfs"], help="query an in-memory copy with its RDFS closure (copies the whole store: small graphs)")
    kg_query.add_argument("--update", action="store_true", help="the text is a SPARQL update: run it (in one transaction on Oxigraph)")
    kg_query.add_argument("--timeout", type=commands.bounded(float, high=MAX_TIMEOUT, above=0), default=DEFAULT_TIMEOUT, metavar="SECONDS", help=f"stop after this long, --infer and --update included: exit 124 (default {DEFAULT_TIMEOUT:g}, at most {MAX_TIMEOUT:g})")
    kg_query.add_argument("--max-rows", type=commands.bounded(int, 1, MAX_ROWS), default=DEFAULT_MAX_ROWS, metavar="N",
                          help=f"read at most N result rows (or triples), saying so when there are more (default {DEFAULT_MAX_ROWS}, at most {MAX_ROWS})")
    kg_query.set_defaults(command=run_query)

    kg_stats = commands.add("stats", group="kg", help="triples, facts, distinct subjects/predicates/classes, top predicates, provenance statements, inferred links")
    kg_stats.add_argument("store", help=store_help)
    kg_stats.add_argument("--json", action="store_true", help="machine-readable output")
    kg_stats.add_argument("--infer", choices=["rdfs"], help="also count the triples the RDFS closure would add (computed on an in-memory copy, not stored: small graphs)")
    kg_stats.add_argument("--timeout", type=commands.bounded(float, high=MAX_TIMEOUT, above=0), default=DEFAULT_TIMEOUT, metavar="SECONDS", help=f"with --infer: stop after this long, exit 124 (default {DEFAULT_TIMEOUT:g})")
    kg_stats.set_defaults(command=run_stats)

    kg_export = commands.add("export", group="kg", help="write every triple of a store to an RDF file")
    kg_export.add_argument("store", help=store_help)
    kg_export.add_argument("file", metavar="FILE", help="RDF file to write (format from the extension)")
    kg_export.add_argument("--format", help=formats_help)
    kg_export.set_defaults(command=run_export)


def run_to_deadline(work, timeout: float, what: str):
    """``work()``, run in a thread while the main thread waits, so that Ctrl-C and the time limit
    are seen at once even while pyoxigraph is deep in a query (it releases the GIL). Either ends
    the process on the spot, with status 130 or 124 and one line: the work cannot outlive it, and
    an interrupted update leaves the store as it was (one transaction, never committed)."""
    outcome: dict = {}

    def target():
        try:
            outcome["value"] = work()
        except BaseException as exc:  # noqa: BLE001 - raised again in the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"lccore {what}", daemon=True)
    thread.start()
    try:
        thread.join(timeout)
    except KeyboardInterrupt:
        _leave("lccore: interrupted", 130)
    if thread.is_alive():
        error = lccore.TimeLimitError(f"{what}: stopped after {timeout:g} s (the time limit; raise it with --timeout)")
        _leave(f"lccore: error: {error}", error.exit_status)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def _leave(message: str, status: int):
    sys.stdout.flush()
    print(message, file=sys.stderr, flush=True)
    os._exit(status)


def run_import(args) -> int:
    from . import open_store, store_spec

    backend, options = store_spec(args.store)
    new_directory = Path(options["path"]) if backend == "oxigraph" and not os.path.lexists(options["path"]) else None
    store, read = None, 0
    try:
        store = open_store(args.store)
        for path in args.files:
            count = store.load(path, args.format, **({"base": args.base} if args.base else {}))
            read += 1
            print(f"{path}: {count} triples read")
        print(f"{args.store}: {len(store)} triples")
    except BaseException:
        try:
            if store is not None:
                store.close()
        except (lccore.LccoreError, OSError):
            pass  # the first error says more
        if new_directory is not None and read == 0:
            shutil.rmtree(new_directory, ignore_errors=True)  # made by this command, and holds nothing
        raise
    store.close()
    return 0


def run_query(args) -> int:
    from . import infer_rdfs, open_store
    from lccore.components import sparql_results_json

    from .results import jsonld, query_prefixes, table
    from .safety import check_query, check_update

    sparql = sys.stdin.read() if args.sparql == "-" else args.sparql
    if args.update and args.infer:
        raise lccore.ConfigError("kg query: --infer applies to queries, not to --update")
    # Refused or malformed SPARQL fails here, before a store is opened or copied.
    (check_update if args.update else check_query)(sparql, allow_network=args.allow_network)

    def work():
        store = open_store(args.store, write=args.update)
        try:
            if args.update:
                store.update(sparql, allow_network=args.allow_network)
                return len(store)
            target = infer_rdfs(store) if args.infer else store
            return target.query(sparql, allow_network=args.allow_network, max_rows=args.max_rows)
        finally:
            store.close()

    result = run_to_deadline(work, args.timeout, "kg query")
    if args.update:
        print(f"{args.store}: {result} triples")
        return 0
    if result.get("truncated"):
        print(f"lccore: warning: kg query: the first {args.max_rows} {'rows' if result['type'] == 'select' else 'triples'} of more; "
              "page with LIMIT and OFFSET, or raise --max-rows", file=sys.stderr)
    if not args.json:
        print(table(result, query_prefixes(sparql)))
    elif result["type"] == "graph":
        print(jsonld(result["triples"]))
    elif result["type"] == "ask":
        print(json.dumps(sparql_results_json(result), indent=2, ensure_ascii=False))
    else:  # a binding at a time: the output is not built whole beside the result
        sys.stdout.write('{"head": {"vars": ' + json.dumps(result["vars"], ensure_ascii=False) + '}, "results": {"bindings": [')
        for index, row in enumerate(result["rows"]):
            [binding] = sparql_results_json({"type": "select", "vars": result["vars"], "rows": [row]})["results"]["bindings"]
            sys.stdout.write(("," if index else "") + "\n  " + json.dumps(binding, ensure_ascii=False))
        sys.stdout.write("\n]}}\n")
    return 0


def run_stats(args) -> int:
    from rdflib import URIRef

    from . import infer_rdfs, open_store, stats
    from .terms import short

    def work():
        store = open_store(args.store, write=False)
        try:
            report = stats(store)
            if args.infer:
                # Only the closure's new triples: nothing inferred this way is ever stored.
                report["rdfs_inferred"] = len(infer_rdfs(store)) - report["triples"]
            return report
        finally:
            store.close()

    report = run_to_deadline(work, args.timeout, "kg stats") if args.infer else work()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    notes = {
        "facts": "stated: outside provenance and inferred-link records",
        "provenance_statements": "where stated facts were read",
        "inferred_links": "learned (kg predict --accept), kept apart from the facts",
        "rdfs_inferred": "what kg query --infer rdfs sees beyond the store; not stored",
    }
    if report["inferred_links_by_model"]:
        notes["inferred_links"] += ": " + ", ".join(f"{model or '?'} {n}" for model, n in report["inferred_links_by_model"].items())
    for key in ("triples", "facts", "subjects", "predicates", "classes", "provenance_statements", "inferred_links", "rdfs_inferred"):
        if key in report:
            note = f"  ({notes[key]})" if key in notes else ""
            print(f"{key.replace('_', ' '):<22} {report[key]}{note}")
    if report["top_predicates"]:
        print("top predicates:")
        width = len(str(report["top_predicates"][0]["triples"]))
        for row in report["top_predicates"]:
            print(f"  {row['triples']:>{width}}  {short(URIRef(row['predicate']))}")
    return 0


def run_export(args) -> int:
    from . import open_store

    store = open_store(args.store, write=False)
    try:
        store.dump(args.file, args.format)
        print(f"{args.file}: {len(store)} triples written")
    finally:
        store.close()
    return 0
