"""The `kg_qa` reasoner: answer a question from the triples around the entities it mentions.

1. Entities: an NER run's entities looked up by label, or (no NER run) every word n-gram of the
   question that is some entity's ``rdfs:label``.
2. Evidence: the triples within ``hops`` of those entities.
3. Answer: the triple whose predicate best matches the question's words (and whose other end has
   the type the question word asks for: who, where, when) gives its other end as the answer. With
   a generative run configured, that run answers instead, from the evidence written into its prompt.
Every answer comes with the triples that support it.
"""

from __future__ import annotations

import re

from rdflib import RDF, RDFS, URIRef

WORD = re.compile(r"\w+", re.UNICODE)
#: What a question word asks for, by the entity types that answer it (compared case-insensitively).
ANSWER_TYPES = {
    "who": {"per", "person", "org", "organization", "organisation"},
    "whom": {"per", "person"},
    "where": {"loc", "location", "gpe", "place", "city", "country"},
    "when": {"date", "time", "year"},
}
#: Longest question answered: without an NER run every word n-gram of it is looked up.
MAX_QUESTION_CHARS = 4096
STOPWORDS = set("a an the of in on at to is are was were be been does do did what which who whom where when how why and or".split())


def words(text: str) -> list[str]:
    return [w.casefold() for w in WORD.findall(text)]


def local_name(iri: str) -> str:
    return re.split(r"[#/:]", str(iri))[-1]


def name_words(iri: str) -> list[str]:
    """``lives_in`` / ``livesIn`` / ``lives-in`` -> ["lives", "in"]."""
    name = re.sub(r"([a-z])([A-Z])", r"\1 \2", local_name(iri))
    return words(name.replace("_", " ").replace("-", " "))


def same_word(a: str, b: str) -> bool:
    """Equal, or one a prefix of the other past four letters (live / lives / lived)."""
    return a == b or (min(len(a), len(b)) >= 4 and (a.startswith(b[:4]) and b.startswith(a[:4])) and abs(len(a) - len(b)) <= 3)


class KGQuestionAnswering:
    def __init__(self, options):
        self.options = options
        self._ner = self._generator = None

    # --- the reasoner contract -------------------------------------------------------------------

    def answer(self, query: str, *, predictor=None, graph=None) -> dict:
        import lccore

        if graph is None:
            raise lccore.ConfigError("kg_qa: needs a knowledge graph (graph=...)")
        if not isinstance(query, str) or len(query) > MAX_QUESTION_CHARS:
            got = f"{len(query):,} characters" if isinstance(query, str) else type(query).__name__
            raise lccore.ConfigError(f"kg_qa: question: expected a string of at most {MAX_QUESTION_CHARS:,} characters, got {got}")
        entities = self.find_entities(query, graph, predictor)
        evidence = self.retrieve(entities, graph)
        if self.options.generator:
            return self.generate(query, entities, evidence, graph)
        return self.pick(query, entities, evidence, graph)

    # --- steps -----------------------------------------------------------------------------------

    def find_entities(self, question: str, graph, predictor=None) -> list[dict]:
        ner = predictor if predictor is not None and getattr(predictor.config.task, "name", "") == "ner" else self._ner_run()
        found: dict[str, dict] = {}
        if ner is not None:
            mentions = [e["text"] for e in ner.predict([question], guard=False)[0]["entities"]]
        else:  # every n-gram, longest first, that is some entity's label
            tokens = question.split()
            mentions = [" ".join(tokens[i : i + n]).strip(" ?.,!;:\"'") for n in range(min(6, len(tokens)), 0, -1) for i in range(len(tokens) - n + 1)]
        for mention in mentions:
            if not mention or mention.casefold() in STOPWORDS:
                continue
            for entity in graph.lookup(mention):
                found.setdefault(str(entity["iri"]), {**entity, "mention": mention})
        return list(found.values())

    def retrieve(self, entities: list[dict], graph) -> list[tuple]:
        evidence, seen = [], set()
        for entity in entities:
            if len(evidence) >= self.options.max_triples:
                break
            for triple in graph.neighbours(str(entity["iri"]), hops=self.options.hops):
                if triple not in seen and triple[1] not in (RDFS.label,):
                    seen.add(triple)
                    evidence.append(triple)
        return evidence[: self.options.max_triples]

    def pick(self, question: str, entities: list[dict], evidence: list[tuple], graph) -> dict:
        asked = [w for w in words(question) if w not in STOPWORDS]
        wanted = next((ANSWER_TYPES[w] for w in words(question) if w in ANSWER_TYPES), None)
        mentioned = {str(e["iri"]) for e in entities}
        best, best_score = None, 0.0
        for subject, predicate, object_ in evidence:
            if predicate == RDF.type or not isinstance(object_, URIRef):
                continue
            if str(subject) in mentioned and str(object_) not in mentioned:
                other = object_
            elif str(object_) in mentioned and str(subject) not in mentioned:
                other = subject
            else:
                continue
            score = sum(any(same_word(q, r) for q in asked) for r in name_words(predicate) if r not in STOPWORDS)
            if wanted is not None and self.types_of(other, graph) & wanted:
                score += 0.5
            if score > best_score:
                best, best_score = (subject, predicate, object_, other), score
        if best is None:
            return {"answer": None, "score": 0.0, "entities": self.describe(entities), "evidence": [self.show(t) for t in evidence]}
        subject, predicate, object_, other = best
        return {
            "answer": self.label_of(other, graph),
            "iri": str(other),
            "score": best_score,
            "entities": self.describe(entities),
            "evidence": [self.show((subject, predicate, object_))],
        }

    def generate(self, question: str, entities: list[dict], evidence: list[tuple], graph) -> dict:
        facts = "\n".join(f"- {self.label_of(s, graph)} {' '.join(name_words(p))} {self.label_of(o, graph)}" for s, p, o in evidence if p != RDF.type)
        prompt = f"Facts:\n{facts}\nQuestion: {question}\nAnswer:"
        generator, predictor = self._generator_run()
        reply = generator.answer(prompt, predictor=predictor)
        return {
            "answer": reply["text"].strip(),
            "entities": self.describe(entities),
            "evidence": [self.show(t) for t in evidence],
            "generated_from": prompt,
        }

    # --- helpers ---------------------------------------------------------------------------------

    def _ner_run(self):
        if self.options.ner and self._ner is None:
            import lccore

            self._ner = lccore.load(self.options.ner)
        return self._ner

    def _generator_run(self):
        if self._generator is None:
            import lccore

            reasoner = lccore.Engine().create("reasoner", "generate", {"max_new_tokens": self.options.max_new_tokens}, key="kg_qa.generator")
            self._generator = (reasoner, lccore.load(self.options.generator))
        return self._generator

    @staticmethod
    def types_of(iri, graph) -> set[str]:
        return {local_name(o).casefold() for s, p, o in graph.neighbours(str(iri), hops=1) if s == iri and p == RDF.type}

    @staticmethod
    def label_of(iri, graph) -> str:
        labels = [str(o) for s, p, o in graph.neighbours(str(iri), hops=1) if s == iri and p == RDFS.label]
        return min(labels, key=len) if labels else local_name(iri)

    @staticmethod
    def describe(entities: list[dict]) -> list[dict]:
        return [{"iri": str(e["iri"]), "label": str(e["label"]), "mention": e["mention"]} for e in entities]

    @staticmethod
    def show(triple) -> list[str]:
        return [str(term) for term in triple]
