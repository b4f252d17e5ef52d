"""First-party plugin: text generation.

Tasks `dialogue` (chat fine-tuning of a decoder-only model, the loss on the assistant's replies
only), `summarization` and `translation` (sequence to sequence, for encoder-decoder models such
as T5 and BART or as prompt + target for decoder-only ones); heads `generative_lm` (picks
`AutoModelForSeq2SeqLM` or `AutoModelForCausalLM` from the model's config) and `seq2seq_lm`; the
reasoner `generate` (greedy, beam, sampling or prompt-lookup decoding with stop strings, batched
and streamed). See docs/generation.md.
"""

from __future__ import annotations

from typing import Literal, Optional

import attrs

import lccore


@attrs.define
class DialogueOptions:
    messages_field: str = attrs.field(default="messages", metadata={"doc": "Key holding the conversation: a list of `{role: system|user|assistant, content}`."})
    template: Literal["auto", "default"] = attrs.field(
        default="auto",
        metadata={"doc": "`auto`: the tokenizer's chat template when it has one, else the default plain template (`<|user|>`/`<|assistant|>` lines); `default`: always the plain one."},
    )
    max_new_tokens: int = attrs.field(default=64, metadata={"doc": "Longest reply `lccore predict` generates, in tokens.", "min": 1, "max": 1 << 16})
    num_beams: int = attrs.field(default=1, metadata={"doc": "Beams when `lccore predict` generates a reply (1: greedy).", "min": 1, "max": 64})


@attrs.define
class Seq2SeqOptions:
    source_field: str = attrs.field(default="source", metadata={"doc": "Key holding the input text."})
    target_field: str = attrs.field(default="target", metadata={"doc": "Key holding the text to produce."})
    prefix: str = attrs.field(default="", metadata={"doc": "Text put before every source, e.g. `'translate English to German: '` or `'summarize: '` for T5."})
    separator: str = attrs.field(default="\n", metadata={"doc": "Decoder-only models: text between the source and the target (the model writes the target after it)."})
    max_new_tokens: int = attrs.field(default=64, metadata={"doc": "Longest output generated at evaluation and prediction, in tokens.", "min": 1, "max": 1 << 16})
    num_beams: int = attrs.field(default=1, metadata={"doc": "Beams at evaluation and prediction (1: greedy).", "min": 1, "max": 64})


@attrs.define
class GenerateOptions:
    strategy: Literal["greedy", "beam", "sample", "prompt_lookup"] = attrs.field(
        default="greedy",
        metadata={"doc": "`greedy`; `beam` (num_beams); `sample` (temperature, top_k, top_p, seed); `prompt_lookup`: greedy, faster when the output copies the prompt (same text as greedy)."},
    )
    max_new_tokens: int = attrs.field(default=64, metadata={"doc": "Most tokens generated.", "min": 1, "max": 1 << 16})
    temperature: float = attrs.field(default=1.0, metadata={"doc": "sample: divides the logits (below 1: more conservative).", "min": 0.01, "max": 100.0})
    top_k: Optional[int] = attrs.field(default=None, metadata={"doc": "sample: draw from the k most likely tokens only; null: no limit.", "min": 1, "max": 1 << 21})
    top_p: float = attrs.field(default=1.0, metadata={"doc": "sample: draw from the smallest set of tokens whose probability reaches p (nucleus).", "min": 0.01, "max": 1.0})
    num_beams: int = attrs.field(default=4, metadata={"doc": "beam: beams kept.", "min": 2, "max": 64})
    repetition_penalty: float = attrs.field(default=1.0, metadata={"doc": "Above 1 discourages tokens already present (CTRL's penalty).", "min": 0.01, "max": 100.0})
    stop: list[str] = attrs.field(factory=list, metadata={"doc": "Strings that end the generation; the text is cut before the first one."})
    seed: Optional[int] = attrs.field(default=None, metadata={"doc": "sample: seed for reproducible draws; null: different each time.", "min": 0, "max": 2**32 - 1})
    prompt_lookup_tokens: int = attrs.field(default=10, metadata={"doc": "prompt_lookup: tokens copied from the prompt per guess.", "min": 1, "max": 1024})


def _seq2seq_factory(kind: str):
    def make_task(options: Seq2SeqOptions):
        from .seq2seq import Seq2SeqTask

        return Seq2SeqTask(kind, options)

    return make_task


@lccore.hookimpl
def register_tasks(register):
    def make_dialogue(options: DialogueOptions):
        from .dialogue import DialogueTask

        return DialogueTask(options)

    register("dialogue", make_dialogue, options=DialogueOptions, description="Chat fine-tuning from JSONL {messages: [{role, content}]}; loss on the assistant's replies.")
    register("summarization", _seq2seq_factory("summarization"), options=Seq2SeqOptions, description="Summarisation from JSONL {source, target}; ROUGE of generated summaries.")
    register("translation", _seq2seq_factory("translation"), options=Seq2SeqOptions, description="Translation from JSONL {source, target}; sacreBLEU and chrF of generated translations.")


@lccore.hookimpl
def register_heads(register):
    def make_generative():
        from .head import GenerativeLMHead

        return GenerativeLMHead()

    def make_seq2seq():
        from .head import Seq2SeqLMHead

        return Seq2SeqLMHead()

    register("generative_lm", make_generative, description="The model's LM head: AutoModelForSeq2SeqLM for an encoder-decoder config, else AutoModelForCausalLM.")
    register("seq2seq_lm", make_seq2seq, description="An encoder-decoder's LM head (AutoModelForSeq2SeqLM: T5, BART, ...).")


@lccore.hookimpl
def register_reasoners(register):
    def make_generate(options: GenerateOptions):
        from .reasoner import GenerateReasoner

        return GenerateReasoner(options)

    register("generate", make_generate, options=GenerateOptions, description="Generate text with a run's model: a reply, a summary, a translation or a continuation.")


@lccore.hookimpl
def register_commands(commands):
    from .commands import add_commands

    add_commands(commands)


@lccore.hookimpl
def register_routes(server):
    from .routes import add_routes

    add_routes(server)
