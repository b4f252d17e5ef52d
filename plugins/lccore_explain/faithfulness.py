"""Faithfulness of attributions: comprehensiveness and sufficiency (ERASER, DeYoung et al. 2020;
ferret, Attanasio et al. 2023), for text classification.

For each record, words are ranked by attribution (highest first: most in favour of the target
class) and for each k in ``BINS`` the top ``ceil(k * words)`` words (at least one) form the
rationale; a size already used by a smaller k is skipped (as ferret skips a repeated rationale).

- comprehensiveness = p(target | text) - p(target | text without the rationale): higher is better;
- sufficiency = p(target | text) - p(target | the rationale alone): lower is better;

each averaged over the bins, then over the records. Removing words means deleting them: the
perturbed text is the remaining words, in order, joined by single spaces (ERASER's token
deletion, not replacement by a mask token).
"""

from __future__ import annotations

import math

import lccore

#: Rationale sizes, as fractions of the words (ERASER's bins up to half the text).
BINS = (0.1, 0.2, 0.3, 0.4, 0.5)


def rationale_sizes(words: int) -> list[int]:
    sizes = []
    for fraction in BINS:
        size = max(1, math.ceil(fraction * words - 1e-9))
        if size not in sizes:
            sizes.append(size)
    return sizes


def perturbations(record: dict) -> list[tuple[str, str]]:
    """(text without the rationale, the rationale alone) for each rationale size."""
    words = record["words"]
    order = sorted(range(len(words)), key=lambda i: (-words[i]["score"], i))
    out = []
    for size in rationale_sizes(len(words)):
        top = set(order[:size])
        kept = " ".join(w["text"] for i, w in enumerate(words) if i not in top)
        alone = " ".join(w["text"] for i, w in enumerate(words) if i in top)
        out.append((kept, alone))
    return out


def evaluate(predictor, records: list[dict]) -> dict:
    """Mean comprehensiveness and sufficiency over the records (text classification)."""
    tasks = {predictor.config.task.name} | {r["task"] for r in records}
    if tasks != {"text_classification"}:
        other = sorted(tasks - {"text_classification"})[0]
        raise lccore.ConfigError(f"faithfulness is measured for text_classification runs, not '{other}'")
    usable = [r for r in records if r["words"] and r["target"]]
    labels = list(predictor.task.labels)
    texts, classes, layout = [], [], []
    for r in usable:
        pairs = perturbations(r)
        layout.append(len(pairs))
        label = labels.index(r["target"]["label"])
        texts.append(r["text"])
        for kept, alone in pairs:
            texts += [kept, alone]
        classes += [label] * (1 + 2 * len(pairs))
    probabilities = class_probabilities(predictor, texts, classes)
    comprehensiveness, sufficiency, position = [], [], 0
    for count in layout:
        full = probabilities[position]
        pairs = probabilities[position + 1 : position + 1 + 2 * count]
        comprehensiveness.append(sum(full - p for p in pairs[0::2]) / count)
        sufficiency.append(sum(full - p for p in pairs[1::2]) / count)
        position += 1 + 2 * count
    mean = (lambda values: round(sum(values) / len(values), 6) if values else None)
    return {"comprehensiveness": mean(comprehensiveness), "sufficiency": mean(sufficiency), "texts": len(usable), "perturbed_texts": len(texts) - len(usable)}


def class_probabilities(predictor, texts: list[str], classes: list[int]) -> list[float]:
    """p(class | text) for each pair, in length-sorted padded batches."""
    import torch

    from .subjects import autocast, evaluation_mode

    tokenizer, model = predictor.tokenizer, predictor.model
    batch_size = predictor.config.train.eval_batch_size
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = [0.0] * len(texts)
    with evaluation_mode(model), torch.inference_mode(), autocast(predictor):
        for start in range(0, len(order), batch_size):
            chosen = order[start : start + batch_size]
            encoded = tokenizer([texts[i] for i in chosen], padding=True, truncation=True, max_length=predictor.config.train.max_length, return_tensors="pt")
            batch = {k: v.to(predictor.device) for k, v in encoded.items() if k in tokenizer.model_input_names}
            probabilities = torch.softmax(model(**batch).logits.float(), dim=-1)
            for row, i in enumerate(chosen):
                out[i] = float(probabilities[row, classes[i]])
    return out
