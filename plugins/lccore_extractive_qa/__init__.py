"""First-party plugin: the `extractive_qa` task (SQuAD v1.1 / v2.0) and the `span_qa` head."""

from __future__ import annotations

from typing import Optional

import attrs

import lccore


@attrs.define
class ExtractiveQAOptions:
    doc_stride: Optional[int] = attrs.field(
        default=None,
        metadata={"doc": "Tokens of overlap between the windows a long context is cut into; null: a quarter of `train.max_length`; less than `train.max_length`.", "min": 0, "max": 1 << 20},
    )
    max_answer_tokens: int = attrs.field(default=30, metadata={"doc": "Longest answer span considered, in tokens.", "min": 1, "max": 4096})
    null_threshold: float = attrs.field(
        default=0.0,
        metadata={"doc": "SQuAD v2: answer 'no answer' when its score beats the best span's by more than this (logit units)."},
    )


@lccore.hookimpl
def register_tasks(register):
    def make_task(options: ExtractiveQAOptions):
        from .task import ExtractiveQATask

        return ExtractiveQATask(options)

    register("extractive_qa", make_task, options=ExtractiveQAOptions, description="Answer spans in a context, SQuAD v1.1/v2.0 JSON; exact match and F1.")


@lccore.hookimpl
def register_heads(register):
    def make_head():
        from .head import SpanQAHead

        return SpanQAHead()

    register("span_qa", make_head, description="Start and end logits over the context tokens.")
