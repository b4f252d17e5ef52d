"""First-party plugin: knowledge graphs from text, and answering questions from them.

`build_graph` runs an NER run and a relation-extraction run over documents and writes entities
and relations with their provenance to a KG backend (`lccore kg build`); the `kg_qa` reasoner
answers a question from the triples around the entities it mentions, optionally through a
generative run conditioned on those triples (`lccore kg ask`).
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

import lccore


@attrs.define
class KGQAOptions:
    hops: int = attrs.field(default=1, metadata={"doc": "Neighbourhood radius around each entity the question mentions.", "min": 1, "max": 3})
    max_triples: int = attrs.field(default=50, metadata={"doc": "Most triples retrieved as evidence.", "min": 1, "max": 10_000})
    ner: Optional[str] = attrs.field(default=None, metadata={"doc": "An NER run that finds the question's entities; null: match entity labels in the question."})
    generator: Optional[str] = attrs.field(default=None, metadata={"doc": "A generative run (dialogue, clm, seq2seq) that answers from the retrieved triples; null: answer from the best-matching triple."})
    max_new_tokens: int = attrs.field(default=48, metadata={"doc": "With a generator: most tokens generated.", "min": 1, "max": 1 << 16})
    matcher: Literal["auto", "encoder", "words", "lexical"] = attrs.field(default="auto", metadata={"doc": (
        "How the question's relation is matched to the graph's: `encoder` (a sentence encoder's similarity), `words` (shared word stems), "
        "both abstaining below `min_confidence`; `auto`: `encoder` when `encoder` is set or the packaged MiniLM is installed, else `words`; "
        "`lexical`: the matcher before issue 22 (most shared words; never abstains).")})
    encoder: Optional[str] = attrs.field(default=None, metadata={"doc": "A run directory or model folder (BERT, MiniLM, ...) whose mean-pooled embeddings match questions to relations; null: the packaged MiniLM-L6 (`lccore[quickstart]`)."})
    min_confidence: Optional[float] = attrs.field(default=None, metadata={"doc": "Below this confidence (0 to 1) the reasoner abstains; null: the value calibrated for the matcher (0.51 for both encoder and words; benchmarks/kg_qa.py --calibrate).", "min": 0.0, "max": 1.0})
    max_answers: int = attrs.field(default=100, metadata={"doc": "Most answers to a list question, and facts in a summary.", "min": 1, "max": 10_000})


@lccore.hookimpl
def register_reasoners(register):
    def make(options: KGQAOptions):
        from .reasoner import KGQuestionAnswering

        return KGQuestionAnswering(options)

    register("kg_qa", make, options=KGQAOptions, description="Answers questions from a knowledge graph's triples, with the triples as evidence.")


@lccore.hookimpl
def register_commands(commands):
    from .commands import add_commands

    add_commands(commands)
    from .link_commands import add_link_commands  # kg embed | predict | drop-inferred

    add_link_commands(commands)
