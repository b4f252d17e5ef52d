"""First-party plugin: the `text_classification` task and the `sequence_classifier` head.

Importing this module is cheap: torch and transformers are imported only when a run builds
one of the components.
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

import lccore


def _check_threshold(instance, attribute, value) -> None:
    # 0 or 1 would predict every label or none, whatever the model says
    if not 0.0 < value < 1.0:
        raise lccore.ConfigError(f"task.threshold: must be between 0 and 1 (both excluded), got {value}")


@attrs.define
class TextClassificationOptions:
    text_field: str = attrs.field(default="text", metadata={"doc": "Key (JSONL) or column (CSV) holding the text."})
    text_pair_field: Optional[str] = attrs.field(
        default=None,
        metadata={"doc": "Key or column holding a second text (sentence pairs: NLI, paraphrase, question/passage); the two are "
                         "tokenised as a pair, the longer one cut first past `train.max_length`; prediction inputs may also be "
                         "`{\"text\": ..., \"text_pair\": ...}`. null: one text."},
    )
    label_field: str = attrs.field(default="label", metadata={"doc": "Key or column holding the label."})
    label_type: Literal["single", "multi", "regression"] = attrs.field(
        default="single",
        metadata={"doc": "`single`: one label per text (softmax, cross-entropy); `multi`: any number of labels per text (a JSONL list, "
                         "or in CSV labels separated by `;`; sigmoid, binary cross-entropy); `regression`: a number (mean squared error)."},
    )
    labels: Optional[list[str]] = attrs.field(default=None, metadata={"doc": "Fixed label order; default: the sorted labels of the training file."})
    threshold: float = attrs.field(
        default=0.5, validator=_check_threshold,
        metadata={"doc": "`multi`: a label is predicted when its probability is at least this (between 0 and 1)."},
    )

    def __attrs_post_init__(self):
        if self.text_pair_field is not None and self.text_pair_field in (self.text_field, self.label_field):
            raise lccore.ConfigError(f"task.text_pair_field: '{self.text_pair_field}' is already the text or label field; name the second text's own key")
        if self.label_type == "regression" and self.labels:
            raise lccore.ConfigError("task.labels: a regression task predicts a number and has no labels; remove task.labels")


@lccore.hookimpl
def register_tasks(register):
    def make_task(options: TextClassificationOptions):
        from .task import TextClassificationTask

        return TextClassificationTask(options)

    register(
        "text_classification",
        make_task,
        options=TextClassificationOptions,
        description="Text or text-pair classification (one label, several labels, or a number) from JSONL {text, label} or CSV text,label.",
    )


@lccore.hookimpl
def register_heads(register):
    def make_head():
        from .head import SequenceClassifierHead

        return SequenceClassifierHead()

    register("sequence_classifier", make_head, description="Linear layer over the pooled representation; cross-entropy, binary cross-entropy or squared error by task.label_type.")

    def make_mean_pooled():
        from .mean_pooled import MeanPooledClassifierHead

        return MeanPooledClassifierHead()

    register("mean_pooled_classifier", make_mean_pooled, description="Linear layer over the mean of the token states (for encoders pretrained by masked LM alone); loss by task.label_type.")


@lccore.hookimpl
def register_commands(commands):
    from .quickstart import add_commands

    add_commands(commands)
