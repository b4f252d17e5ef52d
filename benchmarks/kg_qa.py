"""Quality: the `kg_qa` reasoner (issue 22: relations matched by a sentence encoder, answer types,
abstention) against the matcher before it (`matcher: lexical`), on questions generated from two graphs.

Graphs (each in a temporary Oxigraph store):

- **people**: the knowledge-graph tutorial's graph (Maria lives in Athens, Tom was born in Warsaw,
  Alice lives in New York) grown to 40 people, 16 cities and 10 companies, written the way
  `lccore kg build` writes it (``urn:lccore:entity:per:maria``, ``rdf:type urn:lccore:type:PER``,
  ``rdfs:label``, ``urn:lccore:relation:lives_in`` / ``born_in`` / ``works_for`` / ``founded_in``,
  each triple with its provenance); a seeded share of people lack each relation, so that a
  question about it has no answer in the graph;
- **umls**: the UMLS semantic network shipped with PyKEEN (``pykeen/datasets/umls/train.txt``,
  5,216 triples, 135 concepts, 46 relations; ``pip install --no-deps pykeen``; read as a file,
  PyKEEN is not imported), labels from the names (``acquired_abnormality`` -> "acquired abnormality").

Questions, from the graph itself (gold answers: every answer the graph holds; null where it holds
none, where the relation asked is not in the graph, or the entity is unknown):

- factoid / list ("Where does Maria live?", "Who lives in London?", "What affects virus?"),
  yes/no ("Does Alice live in New York?": yes; a false pair: null, the graph does not say no),
  two hops ("Where was the employer of Bob founded?", people), relations the graph lacks
  ("Where did Maria study?", "When was Tom born?"; and worded near one it has: "Who died in
  Athens?", "Who works in Lisbon?") and unknown entities ("Where does Zed live?").
- **dev** and **test** split the (entity, relation) items half and half (seeded) and word them
  with the same *calibration templates*; **paraphrase** words the test items with other
  templates, never used for calibration ("What is the birthplace of Tom?", "Which company employs
  Bob?", "What is affected by virus?").

The encoder matcher's threshold is calibrated on **dev** only (``--calibrate``: the threshold with
the highest accuracy whose wrong-answer rate is at most 0.05, the middle one where several tie; written into CALIBRATED in
``lccore_kg_reasoning/reasoner.py`` by hand). Reported per set and system: accuracy (answer set
equal to the gold, or an abstention where the gold is null), wrong-answer rate (answered and
wrong), abstention rate.

    python benchmarks/kg_qa.py [--calibrate] [--graphs people umls] [--systems encoder words lexical] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))

PEOPLE = ["Maria", "Tom", "Alice", "Bob", "Carol", "David", "Emma", "Frank", "Grace", "Henry", "Irene", "Jack", "Karen", "Liam",
          "Nora", "Oscar", "Paula", "Quentin", "Rosa", "Sam", "Tina", "Umar", "Vera", "Walter", "Xenia", "Yusuf", "Zoe", "Anton",
          "Bianca", "Carlos", "Dora", "Elias", "Fiona", "Gustav", "Hana", "Ivan", "Julia", "Kofi", "Lena", "Marco"]
CITIES = ["Athens", "Warsaw", "New York", "Paris", "London", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon", "Oslo", "Dublin",
          "Prague", "Buenos Aires", "Hong Kong", "Rio de Janeiro"]
COMPANIES = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark Industries", "Wayne Enterprises", "Vandelay", "Soylent", "Tyrell"]
TYPES = {"lives_in": ("PER", "LOC"), "born_in": ("PER", "LOC"), "works_for": ("PER", "ORG"), "founded_in": ("ORG", "LOC")}
SENTENCE = {"lives_in": "{s} lives in {o}.", "born_in": "{s} was born in {o}.", "works_for": "{s} works for {o}.", "founded_in": "{s} was founded in {o}."}

# Calibration templates (dev and test): one per relation and direction.
PEOPLE_TEMPLATES = {
    ("lives_in", "out"): ["Where does {e} live?"], ("lives_in", "in"): ["Who lives in {e}?"],
    ("born_in", "out"): ["Where was {e} born?"], ("born_in", "in"): ["Who was born in {e}?"],
    ("works_for", "out"): ["Who does {e} work for?"], ("works_for", "in"): ["Who works for {e}?"],
    ("founded_in", "out"): ["Where was {e} founded?"], ("founded_in", "in"): ["What was founded in {e}?"],
    "yes_no": {"lives_in": "Does {s} live in {o}?", "born_in": "Was {s} born in {o}?", "works_for": "Does {s} work for {o}?", "founded_in": "Was {s} founded in {o}?"},
    "two_hops": ["Where was the employer of {e} founded?"],
    "missing": ["Where did {e} study?", "Who is {e} married to?", "When was {e} born?", "Where did {e} die?", "Who is {e}'s brother?"],
    "missing_in": ["Who died in {e}?", "Who works in {e}?"],
    "unknown": ["Where does {e} live?", "Who was born in {e}?"],
}
# Paraphrases (test items only; never used to calibrate).
PEOPLE_PARAPHRASES = {
    ("lives_in", "out"): ["In which city does {e} reside?", "Which city is home to {e}?", "What is the place of residence of {e}?"],
    ("lives_in", "in"): ["Who resides in {e}?", "Which people live in {e}?", "Name the people living in {e}."],
    ("born_in", "out"): ["What is the birthplace of {e}?", "In which city was {e} born?", "Which city is {e} originally from?"],
    ("born_in", "in"): ["Which people were born in {e}?", "Who is a native of {e}?", "Name someone born in {e}."],
    ("works_for", "out"): ["Which company employs {e}?", "Who is the employer of {e}?", "Which company does {e} work at?"],
    ("works_for", "in"): ["Who is employed by {e}?", "Which people work at {e}?", "Name the employees of {e}."],
    ("founded_in", "out"): ["In which city was {e} established?", "Where was {e} set up?", "Which city was {e} started in?"],
    ("founded_in", "in"): ["Which companies were established in {e}?", "What company was started in {e}?", "Name a firm founded in {e}."],
    "yes_no": {"lives_in": "Is {s} a resident of {o}?", "born_in": "Is {o} the birthplace of {s}?", "works_for": "Is {s} employed by {o}?", "founded_in": "Was {s} established in {o}?"},
    "two_hops": ["In which city was the employer of {e} established?", "Where was the company of {e} founded?"],
    "missing": ["Which university did {e} attend?", "Who is the spouse of {e}?", "How old is {e}?", "In which city did {e} pass away?", "Who is the sister of {e}?"],
    "missing_in": ["Who passed away in {e}?", "Which people have jobs in {e}?"],
    "unknown": ["In which city does {e} reside?", "Which people were born in {e}?"],
}
UNKNOWN = ["Zed", "Quimby", "Atlantis", "Gotham"]
UMLS_TEMPLATES = {"out": ["{e} {r} what?"], "in": ["What {r} {e}?"], "yes_no": "Does {s} {r} {o}?"}
UMLS_PARAPHRASES = {  # relation -> direction -> templates (the frequent relations)
    "affects": {"out": ["What is affected by {e}?", "What does {e} have an effect on?"], "in": ["What has an effect on {e}?", "Which things affect {e}?"]},
    "result_of": {"out": ["What does {e} result from?", "{e} is the result of what?"], "in": ["What results from {e}?", "What are the results of {e}?"]},
    "isa": {"out": ["What kind of thing is {e}?", "{e} is a type of what?"], "in": ["What are the kinds of {e}?", "Which things are a type of {e}?"]},
    "process_of": {"out": ["{e} is a process in what?", "Which things have {e} as a process?"], "in": ["Which processes happen in {e}?", "What are the processes of {e}?"]},
    "interacts_with": {"out": ["What does {e} interact with?", "Which things have interactions with {e}?"], "in": ["What has an interaction with {e}?", "Which things interact with {e}?"]},
    "causes": {"out": ["What can {e} lead to?", "What is caused by {e}?"], "in": ["What is {e} caused by?", "What leads to {e}?"]},
    "location_of": {"out": ["What is located in {e}?", "What can be found in {e}?"], "in": ["Where is {e} located?", "Where can {e} be found?"]},
    "part_of": {"out": ["What does {e} belong to?", "{e} is a component of what?"], "in": ["What are the components of {e}?", "What belongs to {e}?"]},
    "produces": {"out": ["What is produced by {e}?", "What does {e} make?"], "in": ["What makes {e}?", "Where does {e} come from?"]},
    "complicates": {"out": ["What is complicated by {e}?", "What does {e} make worse?"], "in": ["What makes {e} worse?", "What complicates {e}?"]},
    "manifestation_of": {"out": ["What is {e} a sign of?", "{e} is a symptom of what?"], "in": ["What are the signs of {e}?", "How does {e} manifest?"]},
    "treats": {"out": ["What is treated by {e}?", "What can {e} cure?"], "in": ["What is used to treat {e}?", "What cures {e}?"]},
}


def store_in(folder: Path, name: str):
    from lccore_kg import open_store

    return open_store(str(folder / name))


def people_graph(folder: Path, seed: int = 0):
    """The tutorial's graph, grown: (store, facts {(s, relation): [o, ...]})."""
    from rdflib import RDF, RDFS, Literal, URIRef

    from lccore_kg_reasoning.build import entity_iri

    rng = random.Random(seed)
    facts = [("Maria", "lives_in", "Athens"), ("Tom", "born_in", "Warsaw"), ("Alice", "lives_in", "New York")]
    for person in PEOPLE[3:]:
        for relation, share in (("lives_in", 0.8), ("born_in", 0.6), ("works_for", 0.6)):
            if rng.random() < share:
                facts.append((person, relation, rng.choice(COMPANIES if relation == "works_for" else CITIES)))
    for person in PEOPLE[:3]:
        if rng.random() < 0.5:
            facts.append((person, "works_for", rng.choice(COMPANIES)))
    for company in COMPANIES:
        if rng.random() < 0.8:
            facts.append((company, "founded_in", rng.choice(CITIES)))
    store = store_in(folder, "people")
    for number, (s, relation, o) in enumerate(facts, 1):
        text = SENTENCE[relation].format(s=s, o=o)
        ts, to = TYPES[relation]
        si, oi, p = entity_iri("urn:lccore:", ts, s), entity_iri("urn:lccore:", to, o), URIRef(f"urn:lccore:relation:{relation}")
        where = {"source": f"doc-{number}", "sentence": 1, "model": "re"}
        store.add([(si, RDF.type, URIRef(f"urn:lccore:type:{ts}"))], provenance={**where, "start": 0, "end": len(s), "model": "ner", "confidence": 0.99})
        store.add([(oi, RDF.type, URIRef(f"urn:lccore:type:{to}"))], provenance={**where, "start": text.index(o), "end": text.index(o) + len(o), "model": "ner", "confidence": 0.99})
        store.add([(si, RDFS.label, Literal(s)), (oi, RDFS.label, Literal(o))])
        store.add([(si, p, oi)], provenance={**where, "start": 0, "end": len(text) - 1, "confidence": round(rng.uniform(0.6, 1.0), 4)})
    return store, facts


def umls_graph(folder: Path):
    from rdflib import RDFS, Literal, URIRef

    spec = importlib.util.find_spec("pykeen")
    if spec is None:
        sys.exit("kg_qa: the umls graph needs PyKEEN's files: pip install --no-deps pykeen (or --graphs people)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "umls" / "train.txt"
    facts = [tuple(line.split("\t")) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    facts = [(s.replace("_", " "), r, o.replace("_", " ")) for s, r, o in facts]
    entity = lambda name: URIRef("urn:umls:entity:" + name.replace(" ", "_"))  # noqa: E731
    store = store_in(folder, "umls")
    names = {n for s, _, o in facts for n in (s, o)}
    store.add([(entity(n), RDFS.label, Literal(n)) for n in sorted(names)])
    store.add([(entity(s), URIRef(f"urn:umls:relation:{r}"), entity(o)) for s, r, o in facts])
    return store, facts


def answers_of(facts, entity: str, relation: str, direction: str) -> list[str]:
    return sorted({o if direction == "out" else s for s, r, o in facts if r == relation and (s if direction == "out" else o) == entity})


def people_questions(facts, seed: int = 1) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    items = []  # (kind, fields, gold)
    subjects = {"lives_in": PEOPLE, "born_in": PEOPLE, "works_for": PEOPLE, "founded_in": COMPANIES}
    objects = {"lives_in": CITIES, "born_in": CITIES, "works_for": COMPANIES, "founded_in": CITIES}
    for relation in TYPES:
        for e in subjects[relation]:
            items.append((("factoid", relation, "out"), {"e": e}, answers_of(facts, e, relation, "out") or None))
        for e in objects[relation]:
            items.append((("factoid", relation, "in"), {"e": e}, answers_of(facts, e, relation, "in") or None))
        linked = [(s, o) for s, r, o in facts if r == relation]
        for s, o in rng.sample(linked, min(6, len(linked))):
            items.append((("yes_no", relation), {"s": s, "o": o}, ["yes"]))
        for _ in range(6):
            s, o = rng.choice(subjects[relation]), rng.choice(objects[relation])
            if (s, relation, o) not in facts:
                items.append((("yes_no", relation), {"s": s, "o": o}, None))
    employer = {s: o for s, r, o in facts if r == "works_for"}
    for person, company in employer.items():
        items.append((("two_hops",), {"e": person}, answers_of(facts, company, "founded_in", "out") or None))
    for e in rng.sample(PEOPLE, 12):
        items.append((("missing",), {"e": e}, None))
    for e in rng.sample(CITIES, 8):  # relations the graph lacks, worded near one it has ("works in", "died in": "lives in")
        items.append((("missing_in",), {"e": e}, None))
    for e in UNKNOWN:
        items.append((("unknown",), {"e": e}, None))
    rng.shuffle(items)
    half = len(items) // 2
    sets = {"dev": items[:half], "test": items[half:]}

    def word(item, templates, which):
        key, fields, gold = item
        kind = key[0]
        if kind == "yes_no":
            text = templates["yes_no"][key[1]].format(**fields)
        elif kind == "factoid":
            text = templates[(key[1], key[2])][which % len(templates[(key[1], key[2])])].format(**fields)
            kind = "list" if gold and len(gold) > 1 else "factoid"
        else:
            text = templates[kind][which % len(templates[kind])].format(**fields)
        return {"question": text, "answers": gold, "kind": kind}

    out = {name: [word(item, PEOPLE_TEMPLATES, i) for i, item in enumerate(chosen)] for name, chosen in sets.items()}
    out["paraphrase"] = [word(item, PEOPLE_PARAPHRASES, i) for i, item in enumerate(sets["test"])]
    return out


def umls_questions(facts, *, per_set: int = 150, seed: int = 2) -> dict[str, list[dict]]:
    rng = random.Random(seed)
    entities = sorted({n for s, _, o in facts for n in (s, o)})
    relations = sorted({r for _, r, _ in facts})
    items = []
    for _ in range(per_set * 2):
        roll = rng.random()
        if roll < 0.15:  # yes/no: a linked pair, or (half the time) a pair the relation does not link
            s, r, o = rng.choice(facts)
            if rng.random() < 0.5:
                o = rng.choice(entities)
            items.append(("yes_no", r, None, {"s": s, "o": o}, ["yes"] if (s, r, o) in facts else None))
        else:
            r = rng.choice(list(UMLS_PARAPHRASES)) if rng.random() < 0.7 else rng.choice(relations)
            direction = rng.choice(["out", "in"])
            e = rng.choice(entities)
            items.append(("factoid", r, direction, {"e": e}, answers_of(facts, e, r, direction) or None))
    half = len(items) // 2
    sets = {"dev": items[:half], "test": items[half:]}

    def label(r):
        return r.replace("_", " ")

    def word(item, paraphrase: bool, which: int):
        kind, r, direction, fields, gold = item
        if kind == "yes_no":
            return {"question": UMLS_TEMPLATES["yes_no"].format(r=label(r), **fields), "answers": gold, "kind": "yes_no"}
        kind = "list" if gold and len(gold) > 1 else "factoid"
        if paraphrase:
            if r not in UMLS_PARAPHRASES:
                return None
            options = UMLS_PARAPHRASES[r][direction]
            return {"question": options[which % len(options)].format(**fields), "answers": gold, "kind": kind}
        return {"question": UMLS_TEMPLATES[direction][0].format(r=label(r), **fields), "answers": gold, "kind": kind}

    out = {name: [word(item, False, i) for i, item in enumerate(chosen)] for name, chosen in sets.items()}
    out["paraphrase"] = [q for q in (word(item, True, i) for i, item in enumerate(sets["test"])) if q is not None]
    return out


def run_set(reasoner, store, questions: list[dict], desc: str) -> tuple[dict, list]:
    import lccore
    from lccore_kg_reasoning.reasoner import evaluate, judge

    rows = [{"question": q["question"], "gold": q["answers"], "kind": q["kind"]} for q in questions]
    records = []

    def answer(question):
        result = reasoner.answer(question, graph=store)
        records.append(result)
        return result

    bar = lccore.progress_bar(total=len(rows), desc=desc, unit="question", enabled=sys.stderr.isatty(), leave=False)
    try:
        metrics = evaluate(answer, rows, progress=bar.update)
    finally:
        bar.close()
    wrong = [(r["question"], r["gold"], rec.get("answers") or rec.get("answer"), rec.get("confidence")) for r, rec in zip(rows, records) if judge(rec, r["gold"]) == "wrong"]
    return metrics, wrong


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", nargs="+", default=["people", "umls"], choices=["people", "umls"])
    parser.add_argument("--systems", nargs="+", default=["encoder", "words", "lexical"], choices=["encoder", "words", "lexical"])
    parser.add_argument("--calibrate", action="store_true", help="find the encoder's and words' thresholds on the dev sets (both graphs together) and print them")
    parser.add_argument("--encoder", help="a run directory or model folder (default: the packaged MiniLM-L6)")
    parser.add_argument("--show-wrong", type=int, default=0, metavar="N", help="print up to N wrong answers per set and system")
    parser.add_argument("--write-questions", metavar="DIR", help="also write each question set as JSONL (the format of kg ask --evaluate)")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args()

    import lccore

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        graphs = {}
        for name in args.graphs:
            store, facts = people_graph(folder) if name == "people" else umls_graph(folder)
            graphs[name] = (store, people_questions(facts) if name == "people" else umls_questions(facts))
            print(f"{name}: {len(store):,} triples; questions: " + ", ".join(f"{k} {len(v)}" for k, v in graphs[name][1].items()), flush=True)
            if args.write_questions:
                Path(args.write_questions).mkdir(parents=True, exist_ok=True)
                for set_name, questions in graphs[name][1].items():
                    with open(Path(args.write_questions) / f"{name}-{set_name}.jsonl", "w", encoding="utf-8") as out:
                        out.writelines(json.dumps(q) + "\n" for q in questions)
        engine = lccore.Engine()

        def reasoner_for(system: str):
            options = {"matcher": system, **({"encoder": args.encoder} if args.encoder and system == "encoder" else {})}
            return engine.create("reasoner", "kg_qa", options)

        if args.calibrate:
            for system in [s for s in args.systems if s != "lexical"]:
                reasoner = reasoner_for(system)
                # one threshold for both graphs: their dev questions together
                best, table = pooled_calibration(reasoner, [(store, sets["dev"]) for store, sets in graphs.values()])
                print(f"calibrated min_confidence for {system}: {best:.2f}")
                for threshold, accuracy, wrong in table[::5] + [row for row in table if abs(row[0] - best) <= 0.03]:
                    print(f"  {threshold:.2f}  accuracy {accuracy:.3f}  wrong {wrong:.3f}")
            return 0

        results = {}
        for name, (store, sets) in graphs.items():
            for set_name, questions in sets.items():
                for system in args.systems:
                    t0 = time.perf_counter()
                    metrics, wrong = run_set(reasoner_for(system), store, questions, f"{name}/{set_name}/{system}")
                    metrics["seconds"] = round(time.perf_counter() - t0, 1)
                    results[f"{name}/{set_name}/{system}"] = metrics
                    for row in wrong[: args.show_wrong]:
                        print(f"    wrong ({name}/{set_name}/{system}): {row}")
        for store, _ in graphs.values():
            store.close()

    print(f"\n{'graph/set':<22}{'system':<10}{'n':>6}{'accuracy':>10}{'wrong':>8}{'abstain':>9}{'time':>8}")
    for key, m in results.items():
        graph_set, system = key.rsplit("/", 1)
        print(f"{graph_set:<22}{system:<10}{m['questions']:>6}{m['accuracy']:>10.3f}{m['wrong_answer_rate']:>8.3f}{m['abstention_rate']:>9.3f}{m['seconds']:>7.1f}s")
    print(f"\n(wall time {time.perf_counter() - started:.0f} s)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


def pooled_calibration(reasoner, pooled: list) -> tuple[float, list]:
    """The threshold with the highest accuracy on the dev questions of every graph together whose
    wrong-answer rate is at most 0.05 (the middle one of a tie), and the (threshold, accuracy, wrong-answer rate) table."""
    from lccore_kg_reasoning.reasoner import judge

    reasoner.options.min_confidence = 0.0
    scored = []
    for store, questions in pooled:
        for q in questions:
            result = reasoner.answer(q["question"], graph=store)
            scored.append((result.get("confidence", 0.0), judge(result, q["answers"]), q["answers"] is None, result.get("answer") is None))
    reasoner.options.min_confidence = None
    table = []
    for step in range(0, 101):
        threshold = step / 100
        correct = wrong = 0
        for confidence, verdict, should_abstain, abstained in scored:
            if abstained or confidence < threshold:
                correct += should_abstain
            else:
                correct += verdict == "correct"
                wrong += verdict == "wrong"
        table.append((threshold, correct / len(scored), wrong / len(scored)))
    allowed = [row for row in table if row[2] <= 0.05] or table
    top = max(round(row[1], 6) for row in allowed)
    tied = [row[0] for row in allowed if round(row[1], 6) == top]
    return tied[len(tied) // 2], table  # the middle of the best plateau: the least sensitive to the data


if __name__ == "__main__":
    sys.exit(main())
