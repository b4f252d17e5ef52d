"""Speed: the `oxigraph` knowledge-graph store vs `rdflib-memory` on a synthetic graph.

A deterministic synthetic graph (default 1,000,000 triples: N/10 entities, each with a type among
20 classes, an rdfs:label "Entity <i>", six relations to random entities over 8 predicates, and
two typed literals; plus a small class hierarchy) is written to an N-Triples file, then both
backends, built through lccore's plugin registry exactly as `lccore kg` builds them, are timed on:

- bulk load: `store.load(file.nt)` (timed once per system, in a process of its own, so that
  neither pays for the other's memory), and the peak RSS of that process after it;
- SPARQL: point lookup (all triples of one subject), 1-hop neighbourhood (both directions),
  2-hop neighbourhood (outgoing), a join (members of one class, along two relations, counted), a
  COUNT ... GROUP BY over every rdf:type triple, and an exact label match;
- the API calls a reasoner makes: `lookup(label)` (case-insensitive; the first call scans every
  label into an in-memory index, reported on its own line) and `neighbours(iri, hops=2)`.

The baseline is rdflib-memory, measured in the same run. Queries run in interleaved rounds (the
order of the two systems alternates every round), each round on other random entities (the same
for both systems); the median time per operation is reported with the ratio oxigraph/rdflib
(below 1: oxigraph is faster). A measurement during which other processes used more than 0.2 of
a core is marked BUSY.

    python benchmarks/kg_store.py [--triples 1000000] [--repeats 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import BUSY_CORES, machine_cpu_seconds

EX = "http://example.org/"
RDF_TYPE = "http://www.w3.org/1999/02/22-rdf-syntax-ns#type"
RDFS_LABEL = "http://www.w3.org/2000/01/rdf-schema#label"
RDFS_SUBCLASS = "http://www.w3.org/2000/01/rdf-schema#subClassOf"
XSD = "http://www.w3.org/2001/XMLSchema#"
CLASSES, SUPERCLASSES, RELATIONS, RELATIONS_PER_ENTITY = 20, 4, 8, 6
SYSTEMS = ("oxigraph", "rdflib-memory")
BASELINE = "rdflib-memory"


def write_graph(path: Path, triples: int, seed: int) -> tuple[int, int]:
    """Write the synthetic graph as N-Triples; returns (entities, triples written)."""
    rng = random.Random(seed)
    entities = max(10, triples // 10)
    written = 0
    with open(path, "w", encoding="utf-8") as out:
        for k in range(CLASSES):
            out.write(f"<{EX}class/C{k}> <{RDFS_SUBCLASS}> <{EX}class/Super{k % SUPERCLASSES}> .\n")
            written += 1
        for i in range(entities):
            e = f"<{EX}entity/{i}>"
            lines = [
                f"{e} <{RDF_TYPE}> <{EX}class/C{rng.randrange(CLASSES)}> .",
                f'{e} <{RDFS_LABEL}> "Entity {i}" .',
                f'{e} <{EX}value> "{rng.randrange(1000)}"^^<{XSD}integer> .',
                f'{e} <{EX}score> "{rng.random():.6f}"^^<{XSD}double> .',
            ]
            for _ in range(RELATIONS_PER_ENTITY):
                lines.append(f"{e} <{EX}rel/r{rng.randrange(RELATIONS)}> <{EX}entity/{rng.randrange(entities)}> .")
            out.write("\n".join(lines) + "\n")
            written += len(lines)
    return entities, written


def operations(entity: int, other: int) -> dict[str, tuple[str, str]]:
    """Operation name -> (kind, argument). SPARQL unless kind says otherwise."""
    e = f"<{EX}entity/{entity}>"
    return {
        "point lookup": ("sparql", f"SELECT ?p ?o WHERE {{ {e} ?p ?o }}"),
        "1-hop neighbourhood": ("sparql", f"SELECT ?p ?n WHERE {{ {{ {e} ?p ?n }} UNION {{ ?n ?p {e} }} }}"),
        "2-hop neighbourhood": ("sparql", f"SELECT DISTINCT ?p2 ?n2 WHERE {{ {e} ?p1 ?n1 . ?n1 ?p2 ?n2 }}"),
        # Not "?a a C1 . ?a r ?b . ?b a C2": rdflib evaluates the two class patterns first, as a
        # cross product (2 s at 100k triples, 8 s at 200k, minutes at 1M).
        "join (class, relation, relation)": ("sparql", (
            f"SELECT (COUNT(*) AS ?n) WHERE {{ ?a a <{EX}class/C{entity % CLASSES}> . ?a <{EX}rel/r{other % RELATIONS}> ?b . "
            f"?b <{EX}rel/r{(other + 1) % RELATIONS}> ?c }}"
        )),
        "COUNT GROUP BY class": ("sparql", "SELECT ?c (COUNT(?s) AS ?n) WHERE { ?s a ?c } GROUP BY ?c"),
        "label match (SPARQL, exact)": ("sparql", f'SELECT ?s WHERE {{ ?s rdfs:label "Entity {other}" }}'),
        "lookup(label), any case": ("lookup", f"ENTITY {other}"),
        "neighbours(iri, hops=2)": ("neighbours", f"{EX}entity/{entity}"),
    }


def run_operation(store, kind: str, argument: str) -> int:
    if kind == "sparql":
        result = store.query(argument)
        return len(result["rows"])
    if kind == "lookup":
        return len(store.lookup(argument))
    return len(store.neighbours(argument, hops=2))


def worker(system: str, nt_file: str, store_dir: str, connection) -> None:
    """Load the graph into one store, report the load time, then answer timing requests."""
    import lccore
    import lccore_kg

    engine = lccore.Engine(entry_points=False, plugins=[lccore_kg])
    options = {"path": store_dir} if system == "oxigraph" else {}
    store = engine.create("kg_backend", system, options)
    started, cpu = time.perf_counter(), time.process_time()
    count = store.load(nt_file)
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # the process's peak so far: the load's
    connection.send(("loaded", count, time.perf_counter() - started, time.process_time() - cpu, len(store), peak_mb))
    while True:
        request = connection.recv()
        if request is None:
            break
        kind, argument = request
        started, cpu = time.perf_counter(), time.process_time()
        rows = run_operation(store, kind, argument)
        connection.send((rows, time.perf_counter() - started, time.process_time() - cpu))
    store.close()


class Timed:
    """The CPU that processes other than this one and the measured worker took during a block,
    in cores."""

    def __init__(self):
        self.machine, self.own, self.started = machine_cpu_seconds(), time.process_time(), time.perf_counter()

    def others(self, worker_cpu: float) -> float | None:
        wall, machine = time.perf_counter() - self.started, machine_cpu_seconds()
        if self.machine is None or machine is None or wall <= 0:
            return None
        return max(0.0, (machine - self.machine) - worker_cpu - (time.process_time() - self.own)) / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--triples", type=int, default=1_000_000, help="size of the synthetic graph (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds per operation (default 5)")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--workdir", help="folder for the N-Triples file and the Oxigraph store (default: a temporary one)")
    parser.add_argument("--json", help="write the measurements to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        nt_file = Path(tmp) / "graph.nt"
        started = time.perf_counter()
        entities, written = write_graph(nt_file, args.triples, args.seed)
        print(f"synthetic graph: {written:,} triples, {entities:,} entities, {nt_file.stat().st_size / 1e6:.0f} MB N-Triples "
              f"(written in {time.perf_counter() - started:.1f} s)", flush=True)

        # Each store lives in its own process: loads are timed one after the other (never
        # concurrently: 2 cores), queries are sent to one process at a time.
        context = multiprocessing.get_context("spawn")
        workers, load = {}, {}
        for system in SYSTEMS:
            mine, theirs = context.Pipe()
            process = context.Process(target=worker, args=(system, str(nt_file), str(Path(tmp) / "oxigraph-store"), theirs))
            timer = Timed()
            process.start()
            _, count, seconds, cpu, size, peak_mb = mine.recv()
            others = timer.others(cpu)
            load[system] = {"seconds": seconds, "triples_read": count, "triples_stored": size, "peak_rss_mb": round(peak_mb), "others_cores": others}
            print(f"bulk load {system:<14} {seconds:8.2f} s  ({count / seconds:,.0f} triples/s; store holds {size:,}; peak RSS {peak_mb:,.0f} MB)"
                  + _busy_note(others), flush=True)
            workers[system] = (process, mine)

        rng = random.Random(args.seed + 1)
        names = list(operations(0, 0))
        times = {name: {system: [] for system in SYSTEMS} for name in names}
        rows = {name: [] for name in names}
        first = {name: {} for name in names}  # the warm-up round: the first lookup builds the label index
        busy_rounds = 0
        for round_number in range(-1, args.repeats):  # round -1 warms up, untimed
            ops = operations(rng.randrange(entities), rng.randrange(entities))
            order = list(SYSTEMS) if round_number % 2 == 0 else list(reversed(SYSTEMS))
            timer, workers_cpu = Timed(), 0.0
            for name in names:
                counts = {}
                for system in order:
                    process, connection = workers[system]
                    connection.send(ops[name])
                    counts[system], seconds, cpu = connection.recv()
                    workers_cpu += cpu
                    if round_number >= 0:
                        times[name][system].append(seconds)
                    else:
                        first[name][system] = seconds
                if len(set(counts.values())) != 1:  # both stores must give the same answer
                    raise SystemExit(f"round {round_number + 1}, {name}: different result sizes {counts}")
                rows[name].append(counts[BASELINE])
            if round_number < 0:
                continue
            others = timer.others(workers_cpu)
            busy_rounds += bool(others is not None and others > BUSY_CORES)
            print(f"round {round_number + 1}/{args.repeats}: " + ", ".join(
                f"{name} {times[name]['oxigraph'][-1] * 1000:.1f}/{times[name][BASELINE][-1] * 1000:.1f} ms" for name in names[:3])
                + " ..." + _busy_note(others), flush=True)
        for process, connection in workers.values():
            connection.send(None)
            process.join()

    print(f"\nKnowledge-graph store, {written:,} triples; bulk load once, queries: median of {args.repeats} interleaved rounds")
    print(f"{'operation':<34} {'oxigraph':>12} {'rdflib-memory':>14} {'oxigraph/rdflib':>16}")
    ratio = load["oxigraph"]["seconds"] / load[BASELINE]["seconds"]
    print(f"{'bulk load (N-Triples file)':<34} {load['oxigraph']['seconds']:>10.2f} s {load[BASELINE]['seconds']:>12.2f} s {ratio:>15.3f}x")
    medians = {}
    for name in names:
        medians[name] = {system: statistics.median(values) for system, values in times[name].items()}
        ox_ms, rd_ms = medians[name]["oxigraph"] * 1000, medians[name][BASELINE] * 1000
        print(f"{name:<34} {ox_ms:>9.2f} ms {rd_ms:>11.2f} ms {ox_ms / rd_ms:>15.3f}x")
    label_op = "lookup(label), any case"
    ox_ms, rd_ms = first[label_op]["oxigraph"] * 1000, first[label_op][BASELINE] * 1000
    print(f"{'first lookup (builds label index)':<34} {ox_ms:>9.2f} ms {rd_ms:>11.2f} ms {ox_ms / rd_ms:>15.3f}x")
    check = sparql_check_seconds(operations(1, 2)["point lookup"][1])
    print(f"(every SPARQL time includes lccore's parse-first network check: {check * 1000:.2f} ms for the point lookup query)")
    if busy_rounds or any(v["others_cores"] and v["others_cores"] > BUSY_CORES for v in load.values()):
        print(f"warning: other processes used more than {BUSY_CORES} cores during a load or {busy_rounds} of {args.repeats} rounds (marked BUSY)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "triples": written, "entities": entities, "repeats": args.repeats, "load": load,
            "queries": {name: {"median_seconds": medians[name], "all_seconds": times[name], "result_rows": rows[name]} for name in names},
            "first_round_seconds": first, "busy_rounds": busy_rounds, "sparql_check_seconds": check, "python": sys.version.split()[0], "cpus": os.cpu_count(),
        }, indent=2))


def sparql_check_seconds(sparql: str, repeats: int = 20) -> float:
    """Median time of lccore's SPARQL network check (rdflib's parser), without its cache."""
    from lccore_kg import safety

    analyse = safety._analyse.__wrapped__
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        analyse(sparql, "query")
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def _busy_note(others: float | None) -> str:
    if others is None:
        return ""
    return f"  (other processes: {others:.2f} cores" + (" - BUSY)" if others > BUSY_CORES else ")")


if __name__ == "__main__":
    main()
