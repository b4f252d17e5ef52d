"""First-party plugin: the `text_classification` task and the `sequence_classifier` head.

Importing this module is cheap: torch and transformers are imported only when a run builds
one of the components.
"""

from __future__ import annotations

from typing import Optional

import attrs

import lccore


@attrs.define
class TextClassificationOptions:
    text_field: str = attrs.field(default="text", metadata={"doc": "Key (JSONL) or column (CSV) holding the text."})
    label_field: str = attrs.field(default="label", metadata={"doc": "Key or column holding the label."})
    labels: Optional[list[str]] = attrs.field(default=None, metadata={"doc": "Fixed label order; default: the sorted labels of the training file."})


@lccore.hookimpl
def register_tasks(register):
    def make_task(options: TextClassificationOptions):
        from .task import TextClassificationTask

        return TextClassificationTask(options)

    register(
        "text_classification",
        make_task,
        options=TextClassificationOptions,
        description="Single-label text classification from JSONL {text, label} or CSV text,label.",
    )


@lccore.hookimpl
def register_heads(register):
    def make_head():
        from .head import SequenceClassifierHead

        return SequenceClassifierHead()

    register("sequence_classifier", make_head, description="Linear layer over the pooled representation, cross-entropy.")

    def make_mean_pooled():
        from .mean_pooled import MeanPooledClassifierHead

        return MeanPooledClassifierHead()

    register("mean_pooled_classifier", make_mean_pooled, description="Linear layer over the mean of the token states (for encoders pretrained by masked LM alone), cross-entropy.")
