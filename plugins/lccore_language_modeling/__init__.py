"""First-party plugin: self-supervised language modelling.

Tasks `mlm` (BERT-style masked LM, 80/10/10 masking) and `clm` (GPT-style causal LM) on plain-text
files (one text per non-blank line) or JSONL, with texts packed into full-length blocks; heads
`masked_lm` and `causal_lm` (the model's own LM head, so the saved model loads with
`AutoModelForMaskedLM` / `AutoModelForCausalLM`). Metrics: perplexity and mean token NLL.
"""

from __future__ import annotations

import attrs

import lccore


@attrs.define
class LanguageModelingOptions:
    text_field: str = attrs.field(default="text", metadata={"doc": "Key holding the text in JSONL/CSV files (`.txt`: one text per line)."})
    mlm_probability: float = attrs.field(default=0.15, metadata={"doc": "mlm: share of tokens selected for prediction (80% masked, 10% random, 10% kept).", "min": 0.01, "max": 1.0})
    pack: bool = attrs.field(default=True, metadata={"doc": "Pack the texts of a file into blocks of train.max_length tokens (no padding); false: one text per block."})


def _task_factory(objective: str):
    def make_task(options: LanguageModelingOptions):
        from .task import LanguageModelingTask

        return LanguageModelingTask(objective, options)

    return make_task


@lccore.hookimpl
def register_tasks(register):
    register("mlm", _task_factory("mlm"), options=LanguageModelingOptions, description="Masked language modelling (BERT-style) on raw text.")
    register("clm", _task_factory("clm"), options=LanguageModelingOptions, description="Causal language modelling (GPT-style) on raw text.")


@lccore.hookimpl
def register_heads(register):
    def make_masked():
        from .head import MaskedLMHead

        return MaskedLMHead()

    def make_causal():
        from .head import CausalLMHead

        return CausalLMHead()

    register("masked_lm", make_masked, description="The model's masked-LM head (AutoModelForMaskedLM).")
    register("causal_lm", make_causal, description="The model's causal-LM head (AutoModelForCausalLM).")


@lccore.hookimpl
def register_commands(commands):
    from .commands import add_commands

    add_commands(commands)
