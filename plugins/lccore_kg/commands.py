"""`lccore kg import | query | stats | export`: the kg plugin's commands (``register_commands``)."""

from __future__ import annotations

import json
import sys

import lccore

GROUP_HELP = "knowledge graphs: import RDF files, SPARQL, statistics, export (and what other plugins add: build, ask)"


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
    kg_query.set_defaults(command=run_query)

    kg_stats = commands.add("stats", group="kg", help="triples, distinct subjects/predicates/classes, top predicates, provenance statements")
    kg_stats.add_argument("store", help=store_help)
    kg_stats.add_argument("--json", action="store_true", help="machine-readable output")
    kg_stats.set_defaults(command=run_stats)

    kg_export = commands.add("export", group="kg", help="write every triple of a store to an RDF file")
    kg_export.add_argument("store", help=store_help)
    kg_export.add_argument("file", metavar="FILE", help="RDF file to write (format from the extension)")
    kg_export.add_argument("--format", help=formats_help)
    kg_export.set_defaults(command=run_export)


def run_import(args) -> int:
    from . import open_store

    store = open_store(args.store)
    try:
        for path in args.files:
            count = store.load(path, args.format, **({"base": args.base} if args.base else {}))
            print(f"{path}: {count} triples read")
        print(f"{args.store}: {len(store)} triples")
    finally:
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
    store = open_store(args.store, write=args.update)
    try:
        if args.update:
            store.update(sparql, allow_network=args.allow_network)
            print(f"{args.store}: {len(store)} triples")
            return 0
        target = infer_rdfs(store) if args.infer else store
        result = target.query(sparql, allow_network=args.allow_network)
    finally:
        store.close()
    if not args.json:
        print(table(result, query_prefixes(sparql)))
    elif result["type"] == "graph":
        print(jsonld(result["triples"]))
    else:
        print(json.dumps(sparql_results_json(result), indent=2, ensure_ascii=False))
    return 0


def run_stats(args) -> int:
    from rdflib import URIRef

    from . import open_store, stats
    from .terms import short

    store = open_store(args.store, write=False)
    try:
        report = stats(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for key in ("triples", "subjects", "predicates", "classes", "provenance_statements"):
        print(f"{key.replace('_', ' '):<22} {report[key]}")
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
