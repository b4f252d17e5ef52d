"""First-party plugin: explainers (`shap`, `integrated_gradients`, `attention`, `random`) for
text classification and NER, and the training probe (config section `explain`).

Every explainer returns the same attribution records (see :mod:`lccore_explain.record`): one
score per word, summed from the word's sub-tokens, with character offsets into the text, the
target, the prediction, the method and its cost in model evaluations. Importing this module is
cheap: torch, numpy and shap load when an explainer is built.
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

import lccore

TARGET_DOC = (
    "What to explain: a class label (text_classification; default: the predicted class), or an entity's text or type "
    "(ner; default: every predicted entity)."
)


@attrs.define
class ShapOptions:
    target: Optional[str] = attrs.field(default=None, metadata={"doc": TARGET_DOC})
    max_evals: int = attrs.field(default=500, metadata={"doc": "Most model evaluations the Partition explainer spends per text (at most 20000).", "min": 2, "max": 20000})
    batch_size: int = attrs.field(default=64, metadata={"doc": "Masked inputs scored per forward pass (at most 512: bounds memory).", "min": 1, "max": 512})


@attrs.define
class IntegratedGradientsOptions:
    target: Optional[str] = attrs.field(default=None, metadata={"doc": TARGET_DOC})
    # The quadrature rule costs O(n_steps³) before the first model call (6000 points: minutes),
    # where no time limit can stop it: hence the bound.
    n_steps: int = attrs.field(default=50, metadata={"doc": "Points on the path from the baseline to the input (Gauss-Legendre quadrature; at most 1024).", "min": 1, "max": 1024})
    max_n_steps: int = attrs.field(
        default=400,
        metadata={"doc": "While the convergence delta exceeds max(0.01, 5% of f(input) - f(baseline)), the points are doubled, up to this many (n_steps or less: never).", "min": 1, "max": 1024},
    )
    internal_batch_size: int = attrs.field(default=16, metadata={"doc": "Path points per forward/backward pass: bounds memory (at most 256).", "min": 1, "max": 256})
    baseline: Literal["pad", "mask", "zero"] = attrs.field(
        default="pad", metadata={"doc": "Embedding that replaces every non-special token at the path's start: the pad token's, the mask token's, or zeros."}
    )


@attrs.define
class AttentionOptions:
    target: Optional[str] = attrs.field(default=None, metadata={"doc": TARGET_DOC})


@attrs.define
class RandomOptions:
    target: Optional[str] = attrs.field(default=None, metadata={"doc": TARGET_DOC})
    seed: int = attrs.field(default=0, metadata={"doc": "Seed of the random scores (drawn per text), 0 to 2³²-1.", "min": 0, "max": 2**32 - 1})


@lccore.hookimpl
def register_explainers(register):
    def factory(class_name):
        def make(options):
            from . import explainers

            return getattr(explainers, class_name)(options)

        return make

    register("shap", factory("ShapExplainer"), options=ShapOptions,
             description="SHAP values (shap's Partition explainer over a Text masker, [MASK] for absent tokens), summed into words.")
    register("integrated_gradients", factory("IntegratedGradientsExplainer"), options=IntegratedGradientsOptions,
             description="Integrated gradients on the token embeddings from a [PAD] baseline, with the convergence delta.")
    register("attention", factory("AttentionRolloutExplainer"), options=AttentionOptions,
             description="Attention rollout: a cheap baseline (one forward pass), not a faithful explanation.")
    register("random", factory("RandomExplainer"), options=RandomOptions,
             description="Uniform random word scores (seeded): the faithfulness baseline.")


@lccore.hookimpl
def on_evaluate(run, split, metrics):
    if split != "dev" or not getattr(getattr(run.config, "explain", None), "probe", None):
        return
    from .probe import explain_at_evaluation

    explain_at_evaluation(run, metrics)


@lccore.hookimpl
def register_commands(commands):
    from .commands import add_commands

    add_commands(commands)


@lccore.hookimpl
def register_routes(server):
    from .routes import add_routes

    add_routes(server)
