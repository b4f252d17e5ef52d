"""First-party plugin: the `ner` task (token classification) and the `token_classifier` head.

Written against lccore's public API only, as a third-party plugin would be. Importing it is
cheap: torch, transformers and seqeval load when a run builds a component.
"""

from __future__ import annotations

from typing import Optional

import attrs

import lccore


@attrs.define
class NEROptions:
    tokens_field: str = attrs.field(default="tokens", metadata={"doc": "JSONL key holding the token list."})
    tags_field: str = attrs.field(default="tags", metadata={"doc": "JSONL key holding one tag per token."})
    label_all_subtokens: bool = attrs.field(
        default=False,
        metadata={"doc": "Train on every sub-token of a word (inside tags for continuations) instead of the first only."},
    )
    labels: Optional[list[str]] = attrs.field(default=None, metadata={"doc": "Fixed tag set; default: `O` and the sorted tags of the training file."})


@lccore.hookimpl
def register_tasks(register):
    def make_task(options: NEROptions):
        from .task import NERTask

        return NERTask(options)

    register(
        "ner",
        make_task,
        options=NEROptions,
        description="Named-entity recognition from CoNLL (token ... tag) or JSONL {tokens, tags}; BIO or BIOES tags.",
    )


@lccore.hookimpl
def register_heads(register):
    def make_head():
        from .head import TokenClassifierHead

        return TokenClassifierHead()

    register("token_classifier", make_head, description="Linear layer over each token's representation, cross-entropy.")

    def make_crf():
        from .crf import CRFHead

        return CRFHead()

    register("crf", make_crf, description="Linear-chain CRF over token emissions, Viterbi decoding (pytorch-crf).")
