"""The `kg_qa` reasoner: answer a question from the triples of the entities it names, or abstain.

1. **Entities**: an NER run's entities looked up by label, or (no NER run) the longest word
   n-grams of the question that are some entity's ``rdfs:label``, not overlapping.
2. **Kind**: "tell me about X" (a summary of X's triples), yes/no (two entities: is there a triple
   between them with the relation asked?), two hops ("the employer of Bob" resolved first, then
   the rest of the question about it), "how many" (the answers held, counted), or a factoid / list
   question (every answer is given; several entities joined by "and" each get theirs, entities named
   apart each constrain it). A negated question abstains: the graph never says what is not so.
3. **Relation**: the question, its entity mentions replaced by ``X``, is compared with every
   relation label of the graph (the predicate's ``rdfs:label``, or its local name split into
   words) — by a sentence encoder's cosine similarity (``matcher: encoder``) or by the share of the
   label's word stems the question holds (``matcher: words``). Direction from the question's shape
   ("who lives in X": X is the object; "where does X live": the subject), and the answer's type
   must fit the question word (who → a person, where → a place) where the graph types it.
4. **Confidence**: the chosen relation's similarity, less how far it falls short of the best
   relation of the whole graph (a question about "born in" matched to the entity's only relation,
   "lives in", scores low). Below ``min_confidence`` it abstains and says what it found.

Every answer comes with its supporting triples and their provenance. ``matcher: lexical`` is the
matcher before issue 22 (the predicate sharing most words with the question; never abstains),
kept so that the benchmark can measure both. With a generative run configured, that run answers
instead, from the evidence written into its prompt.
"""

from __future__ import annotations

import re
from typing import Optional

from rdflib import RDF, RDFS, Literal, URIRef

WORD = re.compile(r"\w+", re.UNICODE)
#: What a question word asks for, by the entity types that answer it (compared case-insensitively).
ANSWER_TYPES = {
    "who": {"per", "person", "org", "organization", "organisation"},
    "whom": {"per", "person"},
    "where": {"loc", "location", "gpe", "place", "city", "country"},
    "when": {"date", "time", "year"},
}
#: What "how old", "how many", "how long" ask for.
QUANTITY_TYPES = {"date", "time", "year", "age", "number", "quantity", "duration", "cardinal", "money", "percent"}
#: Longest question answered: without an NER run every word n-gram of it is looked up.
MAX_QUESTION_CHARS = 4096
STOPWORDS = set("a an the of in on at to is are was were be been does do did what which who whom where when how why and or".split())
#: Words that carry no relation: question words, auxiliaries, articles, request phrasing.
FUNCTION_WORDS = STOPWORDS | set(
    "has have had can could will would should may might shall please tell me list name give show all every everyone everything "
    "anyone anything someone something any some people person things thing x by as it its their his her them that this there".split()
)
#: Confidence below which `matcher: encoder` (MiniLM-L6) and `matcher: words` abstain when
#: ``min_confidence`` is not set. Calibrated by `python benchmarks/kg_qa.py --calibrate` on its
#: dev set (calibration templates only; the test and paraphrase questions are not used): the
#: threshold with the highest accuracy whose wrong-answer rate is at most 0.05. See benchmarks/README.md.
CALIBRATED = {"encoder": 0.51, "words": 0.51}
#: "tell me about X", "what do you know about X", "describe X", "who is X" (X: an entity's whole label).
ABOUT = re.compile(
    r"^\s*(?:(?:please\s+)?(?:tell|show)\s+me\s+(?:more\s+|everything\s+|all\s+)?about|what\s+(?:do|does)\s+(?:you|the\s+graph)\s+know\s+about|"
    r"(?:give\s+me\s+)?(?:a\s+)?(?:summary|overview)\s+of|describe|summari[sz]e|who\s+is|who\s+was|what\s+is)\s+(?P<rest>.+?)\s*[?.!]*\s*$",
    re.IGNORECASE,
)
YES_NO_START = set("is are was were does do did has have had can could".split())
#: A relation named as a noun before its entity: "the employer of Bob", "the birthplace of Tom".
NOUN_OF = re.compile(r"\bthe\s+((?:[\w-]+\s+){0,3}?[\w-]+)\s+of\s+$", re.IGNORECASE)
LEGACY = "lexical"
#: A negated question (the graph is open-world: it never says what is not so).
NEGATION = re.compile(r"\b(?:not|never|no\s+longer|nobody|no\s+one|none)\b|n't\b|n’t\b", re.IGNORECASE)
#: "How many people live in London?": a count of the answers (the noun, if any, names their type).
COUNT = re.compile(r"^\s*how\s+many(?:\s+(?P<noun>[A-Za-z]+))?\b", re.IGNORECASE)
#: "Maria's friend": the possessive after an entity and the noun it owns.
POSSESSIVE = re.compile(r"(?:'s|’s|')\s+(?P<noun>[A-Za-z][\w-]*)")
#: How a relation label is written for the encoder: beside the question with its entity as X.
RELATION_TEXT = "X {label} something"
#: "which city", "what company": the noun names the answer's type.
NOUN_TYPES = {
    **dict.fromkeys("city cities town towns place places country countries".split(), {"loc", "location", "gpe", "place", "city", "country"}),
    **dict.fromkeys("company companies organisation organisations organization organizations firm firms employer employers".split(), {"org", "organization", "organisation"}),
    **dict.fromkeys("people person persons man men woman women".split(), {"per", "person"}),
    # relation nouns of a two-hop question ("the friend of Maria"): what the first hop must reach
    **dict.fromkeys("friend friends mother father parent parents brother sister sibling siblings wife husband spouse partner son daughter "
                    "child children boss colleague colleagues founder founders owner owners author ceo neighbour neighbor".split(), {"per", "person"}),
    **dict.fromkeys("birthplace hometown home residence headquarters capital".split(), {"loc", "location", "gpe", "place", "city", "country"}),
}
#: Most triples read around one entity, facts shown with an abstention (per entity), provenance records per triple.
MAX_EDGES = 100_000
MAX_FOUND = 10
MAX_PROVENANCE = 5
#: Labels and types kept in memory between questions (cleared when the graph changes).
MAX_KNOWN = 100_000


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


def stem(word: str) -> str:
    """A crude stem that lives / lived / living / live, and causes / caused / cause, share."""
    word = word.casefold()
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 2 and word.endswith(suffix):
            word = word[: -len(suffix)]
            break
    return word[:-1] if len(word) > 3 and word.endswith("e") else word


class KGQuestionAnswering:
    def __init__(self, options):
        self.options = options
        self._ner = self._generator = None
        self._encoder = None
        self._vocabulary: tuple | None = None  # (graph, size, {predicate: label})
        self._known: dict[tuple, object] = {}  # labels and types read, until the graph changes

    # --- the reasoner contract -------------------------------------------------------------------

    def answer(self, query: str, *, predictor=None, graph=None) -> dict:
        import lccore

        if graph is None:
            raise lccore.ConfigError("kg_qa: needs a knowledge graph (graph=...)")
        if not isinstance(query, str) or not query.strip() or len(query) > MAX_QUESTION_CHARS:
            got = (f"{len(query):,} characters" if query.strip() else "an empty question") if isinstance(query, str) else type(query).__name__
            raise lccore.ConfigError(f"kg_qa: question: expected a string of 1 to {MAX_QUESTION_CHARS:,} characters, got {got}")
        entities = self.find_entities(query, graph, predictor)
        if not self.options.generator and self.matcher() != LEGACY:
            rewritten = self.possessives_spelled_out(query, entities)
            if rewritten != query:  # "Maria's friend" asks as "the friend of Maria" does: two hops, not Maria's own relation
                result = self.reason(rewritten, self.find_entities(rewritten, graph, predictor), graph)
                return {**result, "question": query}
        if self.options.generator:
            return self.generate(query, entities, self.retrieve(entities, graph), graph)
        if self.matcher() == LEGACY:
            return self.pick(query, entities, self.retrieve(entities, graph), graph)
        return self.reason(query, entities, graph)

    def matcher(self) -> str:
        """``lexical`` (before issue 22), ``encoder`` or ``words``; ``auto`` is ``encoder`` when an
        encoder is given or the packaged MiniLM is installed, else ``words``."""
        import lccore

        from .encoder import packaged_minilm

        chosen = self.options.matcher
        if chosen == "auto":
            return "encoder" if self.options.encoder or packaged_minilm() is not None else "words"
        if chosen == "encoder" and not self.options.encoder and packaged_minilm() is None:
            raise lccore.ConfigError("kg_qa: matcher 'encoder': expected encoder: a run directory or model folder (or pip install 'lccore[quickstart]' for MiniLM)")
        return chosen

    def min_confidence(self) -> float:
        given = self.options.min_confidence
        return float(given) if given is not None else CALIBRATED.get(self.matcher(), 0.5)

    # --- steps -----------------------------------------------------------------------------------

    def find_entities(self, question: str, graph, predictor=None) -> list[dict]:
        """The entities the question names, each with its ``mention`` and the ``span`` (characters) it was read from."""
        ner = predictor if predictor is not None and getattr(predictor.config.task, "name", "") == "ner" else self._ner_run()
        found: dict[str, dict] = {}
        if ner is not None:
            for entity in ner.predict([question], guard=False)[0]["entities"]:
                mention = entity["text"]
                at = question.find(mention)
                self._add_mention(found, graph, mention, (at, at + len(mention)) if at >= 0 else (0, 0))
            return list(found.values())
        # the longest n-grams first; a word inside a mention found already starts no other
        tokens = [(m.start(), m.end()) for m in re.finditer(r"\S+", question)]
        tokens = [self._trim(question, start, end) for start, end in tokens]
        taken: set[int] = set()
        for n in range(min(6, len(tokens)), 0, -1):
            for i in range(len(tokens) - n + 1):
                if taken & set(range(i, i + n)):
                    continue
                start, end = tokens[i][0], tokens[i + n - 1][1]
                mention = question[start:end]
                if self._add_mention(found, graph, mention, (start, end)):
                    taken.update(range(i, i + n))
        return sorted(found.values(), key=lambda e: e["span"])

    @staticmethod
    def _trim(text: str, start: int, end: int) -> tuple[int, int]:
        while start < end and text[start] in "?.,!;:\"'()[]“”‘’":
            start += 1
        while end > start and text[end - 1] in "?.,!;:\"'()[]“”‘’":
            end -= 1
        if text[start:end].casefold().endswith(("'s", "’s")):
            end -= 2
        return start, end

    @staticmethod
    def _add_mention(found: dict, graph, mention: str, span: tuple[int, int]) -> bool:
        if not mention.strip() or " ".join(words(mention)) in FUNCTION_WORDS:
            return False
        entities = graph.lookup(" ".join(mention.split()))
        for entity in entities:
            found.setdefault(str(entity["iri"]), {**entity, "mention": mention, "span": span})
        return bool(entities)

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

    # --- answering by relation matching (issue 22) -----------------------------------------------

    def reason(self, question: str, entities: list[dict], graph) -> dict:
        mentions = self.group_mentions(entities)
        if not mentions:
            empty = self._size(graph) == 0
            return self.abstain(question, "factoid", "the graph is empty" if empty else "no entity of the graph is named in the question", entities, graph)
        negated = NEGATION.search(self.masked(question, mentions))
        if negated:  # "Where does Maria not live?": the open-world graph holds what texts said, never what is not so
            return self.abstain(question, "factoid", f"the question is negated ({negated.group(0).strip()!r}); the graph holds what texts stated, "
                                "not what is not so", entities, graph, around=mentions)
        first = (words(question) or [""])[0]
        about = ABOUT.match(question)
        if about and len(mentions) == 1 and self._is_whole(about.group("rest"), mentions[0]):
            return self.about(question, mentions[0], entities, graph)
        if first in YES_NO_START:
            if len(mentions) < 2:
                scores = self.relation_scores(self.masked(question, mentions), graph)
                return self.abstain(question, "yes_no", f"a yes/no question needs two things the graph knows; of those the question names it knows only {mentions[0]['label']!r}",
                                    entities, graph, around=mentions, prefer=max(scores, key=scores.get) if scores else None)
            return self.yes_no(question, mentions[:2], entities, graph)
        counted = COUNT.match(question)
        if counted:  # "How many people live in London?": the answers the graph holds, counted
            return self.count(question, counted.group("noun"), mentions, entities, graph)
        for mention in mentions:  # two hops: "the employer of Bob" first, then the rest of the question about it
            noun = NOUN_OF.search(question[: mention["span"][0]])
            if noun:
                outer = question[: noun.start()] + "X" + question[mention["span"][1] :]
                if self._content(outer, [m for m in mentions if m is not mention]):
                    return self.two_hops(question, noun.start(), mention, outer, entities, graph)
        return self.factoid(question, mentions, entities, graph)

    def factoid(self, question: str, mentions: list[dict], entities: list[dict], graph, *, kind: str = "factoid") -> dict:
        found = self.best_relation(question, mentions, graph)
        if found["candidate"] is None or found["confidence"] < self.min_confidence():
            return self.abstain(question, kind, self.why(found), entities, graph, around=mentions, scores=found)
        candidate = found["candidate"]
        answers, triples, confidence, relations = candidate["answers"], candidate["triples"], found["confidence"], [candidate["relation"]]
        together = self.coordinated(question, mentions)
        if together:  # "Where do Maria and Alice live?": the relation asked, for each of them
            relation = candidate["relation"]
            each = {id(m): next((c for c in found["all"] if c["mention"] is m and c["relation"] == relation), None) for m in together}
            lacking = [m["label"] for m in together if each[id(m)] is None]
            if lacking:
                return self.abstain(question, kind, f"the question asks for {relation['label']!r} of {', '.join(repr(m['label']) for m in together)}; "
                                    f"the graph does not hold it for {', '.join(map(repr, lacking))}", entities, graph, around=together, confidence=0.0)
            answers = list({a["iri"]: a for m in together for a in each[id(m)]["answers"]}.values())
            triples = [t for m in together for t in each[id(m)]["triples"]]
        elif len(mentions) > 1:  # "Who was born in Lisbon and lives in New York?": every entity named constrains the answer
            chosen = [candidate]
            for mention in (m for m in mentions if m is not candidate["mention"]):
                best = next((c for c in found["all"] if c["mention"] is mention), None)
                if best is None or best["confidence"] < self.min_confidence():
                    return self.abstain(question, kind, f"the question also names {mention['label']!r}, and no relation of it fits the question "
                                        f"beside {candidate['relation']['label']!r} of {candidate['mention']['label']!r}", entities, graph, around=mentions, confidence=0.0)
                chosen.append(best)
            keep = set.intersection(*({a["iri"] for a in c["answers"]} for c in chosen))
            if not keep:
                asked = " and ".join(f"? {c['relation']['label']} {c['mention']['label']}" if c["relation"]["direction"] == "in"
                                     else f"{c['mention']['label']} {c['relation']['label']} ?" for c in chosen)
                return self.abstain(question, kind, f"no entity of the graph fits all the question asks ({asked})", entities, graph, around=mentions, confidence=0.0)
            answers = [a for a in candidate["answers"] if a["iri"] in keep]
            triples = [t for c in chosen for t in c["triples"] if str(t[0]) in keep or str(t[2]) in keep]
            confidence, relations = min(c["confidence"] for c in chosen), [c["relation"] for c in chosen]
        kind = "list" if kind == "factoid" and len(answers) > 1 else kind
        return self.answered(question, kind, answers, triples, confidence, entities, graph, relations=relations)

    def count(self, question: str, noun: str, mentions: list[dict], entities: list[dict], graph) -> dict:
        """How many answers the graph holds for the relation asked (open-world: at least that many
        exist), each with its triple; ``noun`` ("people", "companies") sets their type."""
        found = self.best_relation(question, mentions, graph, wh=False, wanted=NOUN_TYPES.get((noun or "").lower()))
        if found["candidate"] is None or found["confidence"] < self.min_confidence():
            return self.abstain(question, "count", self.why(found), entities, graph, around=mentions, scores=found)
        candidate = found["candidate"]
        number = f"{'at least ' if candidate['truncated'] else ''}{len(candidate['answers'])}"
        record = self.answered(question, "count", [number], candidate["triples"], found["confidence"], entities, graph,
                               relations=[candidate["relation"]], literal=True)
        return {**record, "counted": [a["label"] for a in candidate["answers"]]}

    @staticmethod
    def possessives_spelled_out(question: str, entities: list[dict]) -> str:
        """``question`` with "X's noun" (X an entity it names) written "the noun of X"."""
        for span in sorted({tuple(e["span"]) for e in entities}, reverse=True):  # from the end: earlier spans stay put
            after = POSSESSIVE.match(question, span[1])
            if after and after.group("noun").lower() not in FUNCTION_WORDS:
                noun = after.group("noun")
                question = f"{question[: span[0]]}the {noun} of {question[span[0] : span[1]]}{question[after.end() :]}"
        return question

    @staticmethod
    def coordinated(question: str, mentions: list[dict]) -> list[dict]:
        """The mentions the question joins with "and" or commas ("Maria and Alice", "Maria, Tom
        and Alice"), when there are several; else none."""
        run = [mentions[0]]
        for previous, mention in zip(mentions, mentions[1:]):
            between = question[previous["span"][1] : mention["span"][0]]
            if re.fullmatch(r"\s*(?:,\s*)?(?:and|&)?\s*|\s*,\s*", between, re.IGNORECASE) and between.strip():
                run.append(mention)
            elif len(run) > 1:
                break
            else:
                run = [mention]
        return run if len(run) > 1 else []

    def yes_no(self, question: str, pair: list[dict], entities: list[dict], graph) -> dict:
        scores = self.relation_scores(self.masked(question, pair), graph)
        best = max(scores.values(), default=0.0)
        others = set(pair[1]["iris"])
        linking = [t for iri in pair[0]["iris"] for t in self.edges(iri, graph) if str(t[0] if str(t[2]) == iri else t[2]) in others]
        candidates = sorted(((self.confidence(scores.get(str(t[1]), 0.0), best), t) for t in linking), key=lambda c: -c[0])
        if candidates and candidates[0][0] >= self.min_confidence():
            confidence, triple = candidates[0]
            relation = {"iri": str(triple[1]), "label": self.relation_label(triple[1], graph)}
            return self.answered(question, "yes_no", ["yes"], [triple], confidence, entities, graph, relations=[relation], literal=True)
        asked = max(scores, key=scores.get) if scores else None
        reason = f"the graph has no triple linking {pair[0]['label']!r} and {pair[1]['label']!r}"
        if asked:
            reason += f" by {self.relation_label(asked, graph)!r}"
        if candidates:
            reason += f" (it links them by {self.relation_label(candidates[0][1][1], graph)!r}, confidence {candidates[0][0]:.2f})"
        return self.abstain(question, "yes_no", reason + "; it does not say no either", entities, graph, around=pair,
                            confidence=candidates[0][0] if candidates else 0.0, prefer=asked)

    def two_hops(self, question: str, cut: int, mention: dict, outer: str, entities: list[dict], graph) -> dict:
        inner_text = question[cut : mention["span"][1]]
        noun = NOUN_OF.search(question[: mention["span"][0]])
        reaches = NOUN_TYPES.get(words(noun.group(1))[-1].lower()) if noun else None  # "the friend of X" reaches a person
        inner = self.best_relation(inner_text, [{**mention, "span": (mention["span"][0] - cut, mention["span"][1] - cut)}], graph, wh=False, wanted=reaches)
        if inner["candidate"] is None or inner["confidence"] < self.min_confidence():
            return self.abstain(question, "two_hops", f"{inner_text!r}: {self.why(inner)}", entities, graph, around=[mention], scores=inner)
        answers, triples, relations, confidence = [], list(inner["candidate"]["triples"]), [inner["candidate"]["relation"]], inner["confidence"]
        for middle in inner["candidate"]["answers"]:
            at = cut
            text = outer[:at] + middle["label"] + outer[at + 1 :]
            hop = {"iris": [middle["iri"]], "label": middle["label"], "mention": middle["label"], "span": (at, at + len(middle["label"]))}
            found = self.best_relation(text, [hop], graph)
            if found["candidate"] is None or found["confidence"] < self.min_confidence():
                return self.abstain(question, "two_hops", f"{middle['label']!r} (the {question[cut:mention['span'][0]].split(' ', 1)[-1].strip()} {mention['label']!r}): {self.why(found)}",
                                    entities, graph, around=[mention, hop], scores=found)
            confidence = min(confidence, found["confidence"])
            answers += [a for a in found["candidate"]["answers"] if a not in answers]
            triples += found["candidate"]["triples"]
            relations.append(found["candidate"]["relation"])
        return self.answered(question, "two_hops", answers, triples, confidence, entities, graph, relations=relations)

    def about(self, question: str, mention: dict, entities: list[dict], graph) -> dict:
        facts = [t for iri in mention["iris"] for t in self.edges(iri, graph, types=True)]
        if not facts:
            return self.abstain(question, "about", f"the graph has nothing about {mention['label']!r} but its name", entities, graph)
        limit = self.options.max_answers
        support = [self.supported(t, graph) for t in facts[:limit]]
        return {
            "question": question, "kind": "about", "answer": "\n".join(s["text"] for s in support), "answers": [s["text"] for s in support],
            "confidence": 1.0, "abstained": False, "entities": self.describe(entities), "truncated": len(facts) > limit,
            "evidence": [s["triple"] for s in support], "support": support,
        }

    # --- relations -------------------------------------------------------------------------------

    def best_relation(self, question: str, mentions: list[dict], graph, *, wh: bool = True, wanted: Optional[set] = None) -> dict:
        """The relation of one of ``mentions`` that the question asks for, with its answers and a confidence;
        ``wanted``: the types the answer must have when ``wh`` is off (the first hop of "the friend of X": a person)."""
        scores = self.relation_scores(self.masked(question, mentions), graph)
        best = max(scores.values(), default=0.0)
        wanted = self.wanted_types(question) if wh else wanted
        candidates = []
        for mention in mentions:
            by_relation: dict[tuple, list] = {}
            for iri in mention["iris"]:
                for triple in self.edges(iri, graph):
                    outgoing = str(triple[0]) == iri
                    by_relation.setdefault((str(triple[1]), "out" if outgoing else "in"), []).append(triple)
            for (predicate, direction), triples in by_relation.items():
                label = self.relation_label(predicate, graph)
                expected = self.direction(question, mention["span"], label)
                ends = [t[2] if direction == "out" else t[0] for t in triples]
                fit = self.type_fit(ends, wanted, graph)
                if fit is False or (direction != expected and not (fit is True and (predicate, expected) not in by_relation)):
                    continue
                keep = [t for t, end in zip(triples, ends) if fit is not True or self.type_fit([end], wanted, graph)]
                answers = {}
                for t in sorted(keep, key=lambda t: str(t[2] if direction == "out" else t[0])):
                    end = t[2] if direction == "out" else t[0]
                    answers.setdefault(str(end), {"iri": str(end), "label": self.label_of(end, graph)})
                confidence = self.confidence(scores.get(predicate, 0.0), best)
                candidates.append({"confidence": confidence, "relation": {"iri": predicate, "label": label, "direction": direction}, "mention": mention,
                                   "answers": list(answers.values())[: self.options.max_answers], "triples": keep[: self.options.max_answers],
                                   "truncated": len(answers) > self.options.max_answers})
        candidates.sort(key=lambda c: -c["confidence"])
        top = max(scores, key=scores.get) if scores else None
        return {"candidate": candidates[0] if candidates else None, "confidence": candidates[0]["confidence"] if candidates else 0.0,
                "asked": top, "asked_score": best, "mentions": mentions, "all": candidates}

    @staticmethod
    def wanted_types(question: str) -> Optional[set]:
        """The entity types the question word asks for: who -> a person, where -> a place, "which city" -> a place."""
        tokens = words(question)
        for i, word in enumerate(tokens):
            if word in ("which", "what") and i + 1 < len(tokens) and tokens[i + 1] in NOUN_TYPES:
                return NOUN_TYPES[tokens[i + 1]]
            if word == "how" and i + 1 < len(tokens) and tokens[i + 1] in ("old", "many", "much", "long", "often"):
                return QUANTITY_TYPES
            if word in ANSWER_TYPES:
                return ANSWER_TYPES[word]
        return None

    @staticmethod
    def confidence(score: float, best: float) -> float:
        """The relation's similarity, less what it falls short of the graph's best-matching relation."""
        return max(0.0, score - max(0.0, best - score))

    def relation_scores(self, text: str, graph) -> dict[str, float]:
        """Similarity (0 to 1) of ``text`` with every relation label of the graph."""
        vocabulary = self.vocabulary(graph)
        if not vocabulary:
            return {}
        predicates = list(vocabulary)
        asked = {stem(w) for w in words(text) if w not in FUNCTION_WORDS}
        scores = {}
        for predicate in predicates:  # the share of the label's word stems the question holds
            label = [w for w in words(vocabulary[predicate]) if w not in STOPWORDS] or words(vocabulary[predicate])
            scores[predicate] = sum(any(stem(w) == a or same_word(w, a) for a in asked) for w in label) / max(1, len(label))
        if self.matcher() == "encoder":  # by meaning; a label the question names word for word still counts in full
            vectors = self._encoder_run().encode([text] + [RELATION_TEXT.format(label=vocabulary[p]) for p in predicates])
            similarity = (vectors[1:] @ vectors[0]).clamp(min=0.0).tolist()
            scores = {p: max(similarity[i], scores[p]) for i, p in enumerate(predicates)}
        return scores

    @staticmethod
    def masked(question: str, mentions: list[dict]) -> str:
        """The question with each mention replaced by X: what is left names the relation."""
        out, at = [], 0
        for start, end in sorted({tuple(m["span"]) for m in mentions}):
            if start >= at:
                out += [question[at:start], "X"]
                at = end
        return "".join(out + [question[at:]]).strip()

    @staticmethod
    def direction(question: str, span: tuple[int, int], label: str) -> str:
        """``out`` when the mention is the relation's subject ("where does X live", "the employer of X"),
        ``in`` when it is its object ("who lives in X", "what is X caused by")."""
        before = words(question[: span[0]])
        after = words(question[span[1] :])
        relation = {stem(w) for w in words(label) if w not in STOPWORDS} or {stem(w) for w in words(label)}
        wh = [i for i, w in enumerate(before) if w in ANSWER_TYPES or w in ("what", "which")]
        between = before[wh[0] + 1 :] if wh else before
        if between and between[-1] == "by":  # "what is affected by X": X affects what
            return "out"
        if relation & {stem(w) for w in between}:
            return "in"
        if "by" in after and relation & {stem(w) for w in after}:  # "X is caused by what", "what is X caused by?"
            return "in"
        return "out"

    def type_fit(self, ends: list, wanted: Optional[set], graph):
        """True: some end has a type the question word asks for; False: the ends are typed, none so;
        None: nothing to check (no question word with types, or untyped ends)."""
        if not wanted:
            return None
        types = set().union(*(self.types_of(e, graph) for e in ends)) if ends else set()
        if not types:
            return None
        return bool(types & wanted)

    def vocabulary(self, graph) -> dict[str, str]:
        """``{predicate IRI: label}`` for every predicate linking two resources, RDF's own and lccore's provenance vocabulary left out."""
        size = self._size(graph)
        if self._vocabulary is not None and self._vocabulary[0] is graph and self._vocabulary[1] == size:
            return self._vocabulary[2]
        from lccore_kg import VOCAB

        rows = graph.query("SELECT DISTINCT ?p WHERE { ?s ?p ?o . FILTER(isIRI(?o)) }")["rows"]
        skip = (str(RDF), str(RDFS), str(VOCAB), "http://www.w3.org/2002/07/owl#", "http://www.w3.org/2004/02/skos/core#")
        predicates = [str(r["p"]) for r in rows if not str(r["p"]).startswith(skip)]
        labels = self._labels(predicates, graph)
        vocabulary = {p: labels.get(p) or " ".join(name_words(p)) for p in predicates}
        self._vocabulary = (graph, size, vocabulary)
        self._known = {}
        return vocabulary

    def relation_label(self, predicate, graph) -> str:
        return self.vocabulary(graph).get(str(predicate)) or " ".join(name_words(predicate))

    def edges(self, iri: str, graph, *, types: bool = False) -> list[tuple]:
        """The triples linking ``iri`` to another resource by a relation of the graph (and its ``rdf:type`` with ``types``)."""
        vocabulary = self.vocabulary(graph)
        out = []
        for triple in graph.neighbours(iri, hops=1, limit=MAX_EDGES):
            s, p, o = triple
            if str(p) in vocabulary and isinstance(o, URIRef) and (str(s) == iri or str(o) == iri) and s != o:
                out.append(triple)
            elif types and p == RDF.type and str(s) == iri:
                out.append(triple)
        return out

    # --- records ---------------------------------------------------------------------------------

    def answered(self, question, kind, answers, triples, confidence, entities, graph, *, relations, literal=False) -> dict:
        labels = answers if literal else [a["label"] for a in answers]
        support = [self.supported(t, graph) for t in dict.fromkeys(triples)]
        record = {
            "question": question, "kind": kind, "answer": ", ".join(labels), "answers": labels, "confidence": round(confidence, 4),
            "min_confidence": self.min_confidence(), "abstained": False, "matcher": self.matcher(), "relations": relations,
            "entities": self.describe(entities), "evidence": [s["triple"] for s in support], "support": support,
        }
        if not literal:
            record["iris"] = [a["iri"] for a in answers]
            record["iri"] = answers[0]["iri"]
        return record

    def abstain(self, question, kind, reason, entities, graph, *, around=(), scores=None, confidence=None, prefer=None) -> dict:
        """No answer, the reason, and what the graph does hold about the entities named (``found``)."""
        facts = []
        prefer = prefer or (scores or {}).get("asked")
        for mention in around:
            for iri in mention["iris"]:
                edges = self.edges(iri, graph, types=True)
                edges.sort(key=lambda t: (str(t[1]) != str(prefer), t[1] == RDF.type))
                facts += edges[:MAX_FOUND]
        if confidence is None:
            confidence = scores["confidence"] if scores else 0.0
        return {
            "question": question, "kind": kind, "answer": None, "answers": [], "confidence": round(confidence, 4),
            "min_confidence": self.min_confidence(), "abstained": True, "matcher": self.matcher(), "reason": reason,
            "entities": self.describe(entities), "evidence": [], "found": [self.supported(t, graph) for t in dict.fromkeys(facts)][: MAX_FOUND * 2],
        }

    def why(self, found: dict) -> str:
        """Why no relation of the entity answers: the one the question asks for is missing, or is too far from any."""
        names = ", ".join(repr(m["label"]) for m in found["mentions"])
        graph = self._vocabulary[0] if self._vocabulary else None
        asked = self.relation_label(found["asked"], graph) if found["asked"] and graph is not None else None
        candidate = found["candidate"]
        if candidate is None:
            return f"the graph has no relation of {names} that fits the question" + (f" (it asks for {asked!r})" if asked else "")
        has = candidate["relation"]["label"]
        if asked and asked != has:
            return f"the question asks for {asked!r}, which the graph does not hold for {names}; its closest, {has!r}, has confidence {found['confidence']:.2f} (below {self.min_confidence():.2f})"
        return f"no relation of {names} matches the question well enough: the closest, {has!r}, has confidence {found['confidence']:.2f} (below {self.min_confidence():.2f})"

    def supported(self, triple, graph) -> dict:
        s, p, o = triple
        relation = "is a" if p == RDF.type else self.relation_label(p, graph)
        end = local_name(o) if p == RDF.type else self.label_of(o, graph)
        return {"triple": self.show(triple), "text": f"{self.label_of(s, graph)} {relation} {end}", "provenance": self.provenance(triple, graph)}

    @staticmethod
    def provenance(triple, graph) -> list[dict]:
        """Where the triple was read: one ``{source, sentence, start, end, model, confidence, ...}`` per provenance statement."""
        from lccore_kg import VOCAB

        s, p, o = (term.n3() for term in triple)
        rows = graph.query(
            f"SELECT ?st ?k ?v WHERE {{ ?st <{RDF.subject}> {s} ; <{RDF.predicate}> {p} ; <{RDF.object}> {o} ; ?k ?v . "
            f"FILTER(STRSTARTS(STR(?k), \"{VOCAB}\")) }} LIMIT {MAX_PROVENANCE * 10}"
        )["rows"]
        records: dict[str, dict] = {}
        for row in rows:
            value = row["v"]
            records.setdefault(str(row["st"]), {})[str(row["k"])[len(str(VOCAB)) :]] = value.toPython() if isinstance(value, Literal) else str(value)
        found = sorted(records.values(), key=lambda r: -float(r.get("confidence", 0) or 0))
        return [{k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in r.items()} for r in found[:MAX_PROVENANCE]]

    @staticmethod
    def group_mentions(entities: list[dict]) -> list[dict]:
        """One record per mention (a label several entities share is one mention with several IRIs), in question order."""
        grouped: dict[tuple, dict] = {}
        for e in entities:
            record = grouped.setdefault(tuple(e["span"]), {"iris": [], "label": str(e["label"]), "mention": e["mention"], "span": tuple(e["span"])})
            record["iris"].append(str(e["iri"]))
        return [grouped[k] for k in sorted(grouped)]

    @staticmethod
    def _is_whole(rest: str, mention: dict) -> bool:
        text = " ".join(words(rest))
        return text in (" ".join(words(mention["mention"])), "the " + " ".join(words(mention["mention"])))

    @staticmethod
    def _content(text: str, others: list[dict]) -> bool:
        """Whether ``text`` (a question with X for an entity) still names a relation."""
        named = {w for m in others for w in words(m["mention"])}
        return any(w not in FUNCTION_WORDS and w not in named for w in words(text))

    @staticmethod
    def _size(graph) -> int:
        try:
            return len(graph)
        except TypeError:
            return -1

    # --- the matcher before issue 22 (`matcher: lexical`) and the generator ----------------------

    def pick(self, question: str, entities: list[dict], evidence: list[tuple], graph) -> dict:
        """The predicate sharing most words with the question; answers whenever any does."""
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

    def _encoder_run(self):
        if self._encoder is None:
            from .encoder import SentenceEncoder, packaged_minilm

            self._encoder = SentenceEncoder(self.options.encoder or packaged_minilm())
        return self._encoder

    def _generator_run(self):
        if self._generator is None:
            import lccore

            reasoner = lccore.Engine().create("reasoner", "generate", {"max_new_tokens": self.options.max_new_tokens}, key="kg_qa.generator")
            self._generator = (reasoner, lccore.load(self.options.generator))
        return self._generator

    def types_of(self, iri, graph) -> set[str]:
        key = ("types", id(graph), str(iri))
        if key not in self._known:
            self._known[key] = self._read_types(iri, graph)
        return self._known[key]

    def label_of(self, iri, graph) -> str:
        key = ("label", id(graph), str(iri))
        if key not in self._known:
            if len(self._known) > MAX_KNOWN:
                self._known.clear()
            self._known[key] = self._read_label(iri, graph)
        return self._known[key]

    @staticmethod
    def _read_types(iri, graph) -> set[str]:
        rows = graph.query(f"SELECT ?t WHERE {{ <{iri}> <{RDF.type}> ?t }} LIMIT 100")["rows"]
        return {local_name(r["t"]).casefold() for r in rows}

    @staticmethod
    def _read_label(iri, graph) -> str:
        labels = [str(r["l"]) for r in graph.query(f"SELECT ?l WHERE {{ <{iri}> <{RDFS.label}> ?l }} LIMIT 100")["rows"]]
        return min(labels, key=len) if labels else local_name(iri)

    @staticmethod
    def _labels(iris: list[str], graph) -> dict[str, str]:
        """The shortest ``rdfs:label`` of each of ``iris`` that has one."""
        out: dict[str, str] = {}
        for start in range(0, len(iris), 500):
            values = " ".join(f"<{i}>" for i in iris[start : start + 500])
            for row in graph.query(f"SELECT ?s ?l WHERE {{ VALUES ?s {{ {values} }} ?s <{RDFS.label}> ?l }}")["rows"]:
                s, label = str(row["s"]), str(row["l"])
                if s not in out or len(label) < len(out[s]):
                    out[s] = label
        return out

    @staticmethod
    def describe(entities: list[dict]) -> list[dict]:
        return [{"iri": str(e["iri"]), "label": str(e["label"]), "mention": e["mention"]} for e in entities]

    @staticmethod
    def show(triple) -> list[str]:
        return [str(term) for term in triple]


# --- evaluation: `lccore kg ask STORE --evaluate QUESTIONS.jsonl` -----------------------------------

#: Most questions one evaluation reads.
MAX_EVALUATION_QUESTIONS = 1_000_000


def read_questions(path: str) -> list[dict]:
    """``{"question", "answer" | "answers"}`` per line: ``answer`` a string, ``answers`` a list of
    strings (a list question), either null (the graph cannot answer: it should abstain). A line
    that is not so is a one-line DataError naming the file and line."""
    import lccore
    from lccore.data import read_jsonl

    rows = []
    for number, row in read_jsonl(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise lccore.DataError(f"{where}: expected {{\"question\": TEXT, \"answer\": TEXT or null}} or {{\"question\", \"answers\": [TEXT, ...]}}, got {str(row)[:80]!r}")
        if len(row["question"]) > MAX_QUESTION_CHARS:
            raise lccore.DataError(f"{where}: \"question\": at most {MAX_QUESTION_CHARS:,} characters, got {len(row['question']):,}")
        if ("answer" in row) == ("answers" in row):
            raise lccore.DataError(f"{where}: expected exactly one of \"answer\" (a string or null) and \"answers\" (a list of strings or null)")
        gold = row.get("answer", row.get("answers"))
        if "answer" in row and gold is not None and not isinstance(gold, str):
            raise lccore.DataError(f"{where}: \"answer\": expected a string or null, got {type(gold).__name__}")
        if "answers" in row and gold is not None and not (isinstance(gold, list) and gold and all(isinstance(a, str) for a in gold)):
            raise lccore.DataError(f"{where}: \"answers\": expected a non-empty list of strings or null")
        rows.append({"question": row["question"], "gold": None if gold is None else ([gold] if isinstance(gold, str) else gold), "kind": row.get("kind")})
        if len(rows) > MAX_EVALUATION_QUESTIONS:
            raise lccore.DataError(f"{path}: more than {MAX_EVALUATION_QUESTIONS:,} questions")
    if not rows:
        raise lccore.DataError(f"{path}: no questions (expected one JSON object per line)")
    return rows


def judge(result: dict, gold: Optional[list]) -> str:
    """``correct`` (the answers, as a set, are the gold ones, case-insensitive; or an abstention
    where the gold is null), ``wrong`` (an answer that is not), ``abstained`` (no answer where there was one)."""
    if result.get("answer") is None:
        return "correct" if gold is None else "abstained"
    if gold is None:
        return "wrong"
    given = {" ".join(a.casefold().split()) for a in result.get("answers") or [result["answer"]]}
    return "correct" if given == {" ".join(a.casefold().split()) for a in gold} else "wrong"


def evaluate(answer, questions: list[dict], *, progress=None) -> dict:
    """Accuracy, wrong-answer rate (answered and wrong) and abstention rate of ``answer(question)``
    over ``questions`` (from :func:`read_questions`), overall and by ``kind`` where the file names one."""
    counts: dict[str, dict] = {}
    for row in questions:
        result = answer(row["question"])
        verdict = judge(result, row["gold"])
        for key in ("all", row.get("kind")) if row.get("kind") else ("all",):
            bucket = counts.setdefault(key, {"questions": 0, "correct": 0, "wrong": 0, "abstained": 0})
            bucket["questions"] += 1
            bucket["abstained"] += result.get("answer") is None
            if verdict != "abstained":
                bucket[verdict] += 1
        if progress is not None:
            progress(1)

    def rates(bucket: dict) -> dict:
        n = bucket["questions"]
        return {"questions": n, "accuracy": round(bucket["correct"] / n, 4), "wrong_answer_rate": round(bucket["wrong"] / n, 4),
                "abstention_rate": round(bucket["abstained"] / n, 4)}

    out = rates(counts.pop("all"))
    if counts:
        out["by_kind"] = {kind: rates(bucket) for kind, bucket in sorted(counts.items())}
    return out
