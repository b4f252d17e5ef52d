"""Sentence embeddings from an encoder run, for ``POST /v1/embeddings``: the mean of the encoder's
last hidden states over each text's tokens, L2-normalised (how sentence-transformers pools MiniLM
and its kin), computed in the run's model thread in batches."""

from __future__ import annotations


def encoder_of(predictor):
    """The transformer encoder inside a run's model (under a LoRA wrapper, a head of lccore's or a
    plugin's), or None for a model that generates text."""
    if predictor.can_generate():
        return None
    model = predictor.model
    for attribute in ("module", "task_model"):  # data-parallel wrapper; a model trained with an LM aux loss
        model = getattr(model, attribute, model)
    if hasattr(model, "get_base_model"):  # peft
        model = model.get_base_model()
    model = getattr(model, "backbone", model)  # lccore.heads.BackboneWithHead
    config = getattr(model, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return None
    return getattr(model, "base_model", model)


def embed_texts(predictor, texts: list[str], *, batch_size: int) -> list[dict]:
    """``{"embedding": [...], "tokens": n}`` per text, in order."""
    import torch

    from lccore import deadline

    encoder = encoder_of(predictor)
    longest = min(getattr(encoder.config, "max_position_embeddings", 512), predictor.tokenizer.model_max_length or 512, 8192)
    results = []
    for start in range(0, len(texts), batch_size):
        deadline.check()
        batch = predictor.tokenizer(texts[start:start + batch_size], padding=True, truncation=True, max_length=longest, return_tensors="pt")
        batch = {key: value.to(predictor.device) for key, value in batch.items() if key in ("input_ids", "attention_mask", "token_type_ids")}
        with torch.no_grad(), predictor.autocast():
            hidden = encoder(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        for vector, count in zip(pooled.tolist(), batch["attention_mask"].sum(1).tolist()):
            results.append({"embedding": vector, "tokens": int(count)})
    return results
