"""First-party plugin: the `relation_extraction` task and the `entity_marker_classifier` head.

Entities are marked in the text with typed markers made of punctuation the tokenizer already
knows (`@ * PER * Alice @ ... # ^ LOC ^ Paris #`, Zhou & Chen 2021, "An Improved Baseline for
Sentence-level Relation Extraction"), so no vocabulary change is needed; the head classifies the
pair from the representations of the two opening markers.
"""

from __future__ import annotations

from typing import Optional

import attrs

import lccore


@attrs.define
class RelationExtractionOptions:
    no_relation: str = attrs.field(default="no_relation", metadata={"doc": "The label meaning 'no relation': excluded from precision, recall and F1."})
    labels: Optional[list[str]] = attrs.field(default=None, metadata={"doc": "Fixed label order; default: the sorted labels of the training file."})


@lccore.hookimpl
def register_tasks(register):
    def make_task(options: RelationExtractionOptions):
        from .task import RelationExtractionTask

        return RelationExtractionTask(options)

    register(
        "relation_extraction",
        make_task,
        options=RelationExtractionOptions,
        description="Relation between two marked entity spans of a sentence; JSONL {text, head, tail, relation}; TACRED-style micro P/R/F1.",
    )


@lccore.hookimpl
def register_heads(register):
    def make_head():
        from .head import EntityMarkerHead

        return EntityMarkerHead()

    register("entity_marker_classifier", make_head, description="Linear layer over the two entity-start markers' representations.")
