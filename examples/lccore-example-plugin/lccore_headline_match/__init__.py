"""The `headline_match` plugin: does this headline belong to this article body?

A third-party plugin built only on lccore's public API (``lccore``, ``lccore.heads``,
``lccore.data.read_records``). It registers

- the task ``headline_match``: JSONL rows ``{"headline", "body", "label"}`` (``"match"`` /
  ``"mismatch"``, or ``true`` / ``false``), tokenised as a pair; accuracy and F1 of ``match``;
- the head ``headline_body_head``: a model of its own on :class:`lccore.heads.BackboneWithHead`
  that pools the headline's and the body's token states apart and compares them with a small MLP;
- the explainer ``occlusion``: each word's score is the drop in the predicted label's
  probability when that word (of the headline or of the body) is left out;
- the optimizer ``lion``: Lion (Chen et al. 2023), the sign of an interpolated momentum.

Importing this module is cheap: torch and transformers load in the factories, when a run asks
for one of the components.
"""

from __future__ import annotations

from typing import Optional

import attrs

import lccore


@attrs.define
class OcclusionOptions:
    target: Optional[str] = attrs.field(default=None, metadata={"doc": "The label to explain; default: the predicted one."})
    batch_size: int = attrs.field(default=64, metadata={"doc": "Occluded inputs scored per forward pass.", "min": 1, "max": 4096})


@attrs.define
class LionOptions:
    beta1: float = attrs.field(default=0.9, metadata={"doc": "Interpolation between momentum and gradient for the update's sign.", "min": 0.0, "max": 1.0})
    beta2: float = attrs.field(default=0.99, metadata={"doc": "Momentum decay.", "min": 0.0, "max": 1.0})


@lccore.hookimpl
def register_tasks(register):
    def make_task():
        from .task import HeadlineMatchTask

        return HeadlineMatchTask()

    register("headline_match", make_task, description="Does a headline belong to an article body? JSONL {headline, body, label: match|mismatch}.")


@lccore.hookimpl
def register_heads(register):
    def make_head():
        from .head import HeadlineBodyHead

        return HeadlineBodyHead()

    register("headline_body_head", make_head, description="Headline and body mean-pooled apart, compared by a small MLP (BERT-style encoders).")


@lccore.hookimpl
def register_explainers(register):
    def make_explainer(options: OcclusionOptions):
        from .occlusion import OcclusionExplainer

        return OcclusionExplainer(options)

    register("occlusion", make_explainer, options=OcclusionOptions, description="Occlusion: the drop of the label's probability when a word is left out.")


@lccore.hookimpl
def register_optimizers(register):
    def make_lion(param_groups, config):
        from .lion import Lion

        return Lion(param_groups, lr=config.lr, betas=(config.options.beta1, config.options.beta2))

    register("lion", make_lion, options=LionOptions, description="Lion: sign of the interpolated momentum (use a 3-10x smaller lr than AdamW).")


@lccore.hookimpl
def register_routes(server):
    # `lccore serve` endpoints (the serve plugin calls this when it builds its app)
    from .routes import add_routes

    add_routes(server)
