"""Pieces the tasks, the heads and the reasoner share: which architecture a model has, padding on
either side, and running ``model.generate`` to get only the new tokens."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import torch

import lccore

#: Batch keys holding the left-padded prompt that evaluation and prediction generate from; a
#: training batch never has them (it goes straight to ``model(**batch)``).
PROMPT_IDS, PROMPT_MASK = "prompt_input_ids", "prompt_attention_mask"


@attrs.define
class GenerationOutput:
    """What a generation task's ``forward`` returns: the teacher-forced loss (None without labels),
    so the kernel can report it, and the generated token ids (prompt removed)."""

    loss: object = None
    #: Per row: the generated token ids (list of lists).
    generated: list | None = None
    #: Per row: the summed negative log-likelihood and the count of the scored tokens (dialogue).
    nll: list | None = None
    tokens: list | None = None


def model_is_encoder_decoder(source) -> bool:
    """Whether the model at ``source`` (a folder or hub id) is an encoder-decoder, from its config."""
    from transformers import AutoConfig

    path = Path(str(source))
    adapter = path / "adapter_config.json"
    if adapter.is_file() and not (path / "config.json").is_file():  # a LoRA run's model/: its base decides
        source = json.loads(adapter.read_text(encoding="utf-8"))["base_model_name_or_path"]
    try:
        return bool(AutoConfig.from_pretrained(source).is_encoder_decoder)
    except (OSError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise lccore.ConfigError(f"model: cannot read the config of '{source}' to tell an encoder-decoder from a decoder-only model: {reason}") from None


def ensure_pad_token(tokenizer) -> None:
    """GPT-2-style tokenizers have no padding token: pad with end-of-text (the attention mask hides it)."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise lccore.ConfigError("model: the tokenizer has neither a padding nor an end-of-text token")
        tokenizer.pad_token = tokenizer.eos_token


def pad(rows: list[list[int]], value: int, side: str = "right") -> torch.Tensor:
    width = max(len(row) for row in rows)
    filler = [[value] * (width - len(row)) for row in rows]
    return torch.tensor([row + fill if side == "right" else fill + row for row, fill in zip(rows, filler)], dtype=torch.long)


def pad_prompts(prompts: list[list[int]], tokenizer, encoder_decoder: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt ids and attention mask. A decoder-only model continues the last position of each row,
    so its prompts are padded on the left; an encoder reads the whole input, padded on the right."""
    side = "right" if encoder_decoder else "left"
    return pad(prompts, tokenizer.pad_token_id, side), pad([[1] * len(p) for p in prompts], 0, side)


def causal_batch(inputs: list[list[int]], labels: list[list[int]], pad_id: int) -> dict:
    """A teacher-forced batch for a decoder-only model, padded on the right (labels with -100)."""
    return {"input_ids": pad(inputs, pad_id), "attention_mask": pad([[1] * len(row) for row in inputs], 0), "labels": pad(labels, -100)}


def token_nll(logits, labels) -> tuple[list[float], list[int]]:
    """Per row: the summed negative log-likelihood of the labelled tokens and their count (a
    causal LM predicts token t at position t - 1)."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
    return nll.sum(dim=1).tolist(), (labels != -100).sum(dim=1).tolist()


def unwrap(model):
    """The model that has ``generate``: data-parallel training wraps it in ``.module``, the joint
    LM objective (``train.aux_lm_weight``) in ``.task_model``."""
    for wrapper in ("module", "task_model"):
        if not hasattr(model, "generate") and hasattr(model, wrapper):
            model = getattr(model, wrapper)
    return model


def context_length(model) -> int | None:
    """Most positions the model's decoder takes, its prompt and what it writes together (learnt
    position embeddings have no more), or None where its config names no limit (T5's relative
    positions)."""
    config = unwrap(model).config
    if config.is_encoder_decoder:
        keys = ("max_position_embeddings",)  # BART, Marian, Pegasus; T5 has none
    else:
        config = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
        keys = ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len", "seq_length")
    return next((value for value in (getattr(config, key, None) for key in keys) if isinstance(value, int) and value > 1), None)


def generate(model, tokenizer, input_ids, attention_mask, /, *, extra_ends=(), **settings) -> list[tuple[list[int], bool]]:
    """Per row: the generated tokens only (without the prompt, or the decoder's start token), up
    to and with the first end token (end-of-text, or one of ``extra_ends`` such as a chat
    template's end of turn), and whether the row ended that way (else it ran out of
    ``max_new_tokens`` or met a stop string). No more is written than the model's context has
    room for after the prompt (:func:`context_length`)."""
    model = unwrap(model)
    context = context_length(model)
    if context is not None and "max_new_tokens" in settings:
        used = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
        if used >= context:
            raise lccore.ConfigError(f"train.max_length: a prompt of {used} tokens leaves no room to write in the model's context of {context} positions; "
                                     f"train with a lower max_length")
        settings["max_new_tokens"] = min(settings["max_new_tokens"], context - used)
    ends = end_ids(model, tokenizer, extra_ends)
    if extra_ends:  # the model stops at the end of a turn too, not only at its own end-of-text
        settings["eos_token_id"] = sorted(end_ids(model, None, extra_ends))
    sequences = model.generate(input_ids=input_ids, attention_mask=attention_mask, pad_token_id=tokenizer.pad_token_id, **settings)
    start = 1 if model.config.is_encoder_decoder else input_ids.shape[1]
    return [cut_at_end(row, ends, tokenizer.pad_token_id) for row in sequences[:, start:].tolist()]


def end_ids(model, tokenizer, extra=()) -> set[int]:
    """The tokens that end a generation: the model's end-of-text id(s), the tokenizer's, and ``extra``."""
    found = getattr(model.generation_config, "eos_token_id", None)
    ids = set(found if isinstance(found, (list, tuple)) else [found] if found is not None else [])
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids | {int(i) for i in extra if i is not None}


def cut_at_end(row: list[int], ends: set[int], pad_id: int | None) -> tuple[list[int], bool]:
    """A generated row up to (and with) its first end token; True when it ended there."""
    for index, token in enumerate(row):
        if token in ends:
            return row[: index + 1], True
        if token == pad_id:  # padding after a stop string ended the row early
            return row[:index], False
    return row, False
