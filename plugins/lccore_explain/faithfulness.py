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


def perturbations(record: dict) -> list[tuple[dict, dict]]:
    """(the texts without the rationale, the rationale alone) for each rationale size, as
    ``{field: text}`` (``text``, and ``text_pair`` for a pair: its words are removed from both)."""
    words = record["words"]
    fields = ["text"] if record.get("text_pair") is None else ["text", "text_pair"]
    order = sorted(range(len(words)), key=lambda i: (-words[i]["score"], i))
    out = []
    for size in rationale_sizes(len(words)):
        top = set(order[:size])
        kept = {f: " ".join(w["text"] for i, w in enumerate(words) if i not in top and w.get("field", "text") == f) for f in fields}
        alone = {f: " ".join(w["text"] for i, w in enumerate(words) if i in top and w.get("field", "text") == f) for f in fields}
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
    inputs, classes, layout = [], [], []
    for r in usable:
        pairs = perturbations(r)
        layout.append(len(pairs))
        label = labels.index(r["target"]["label"])
        inputs.append({"text": r["text"]} if r.get("text_pair") is None else {"text": r["text"], "text_pair": r["text_pair"]})
        for kept, alone in pairs:
            inputs += [kept, alone]
        classes += [label] * (1 + 2 * len(pairs))
    probabilities = class_probabilities(predictor, inputs, classes)
    comprehensiveness, sufficiency, position = [], [], 0
    for count in layout:
        full = probabilities[position]
        pairs = probabilities[position + 1 : position + 1 + 2 * count]
        comprehensiveness.append(sum(full - p for p in pairs[0::2]) / count)
        sufficiency.append(sum(full - p for p in pairs[1::2]) / count)
        position += 1 + 2 * count
    mean = (lambda values: round(sum(values) / len(values), 6) if values else None)
    return {"comprehensiveness": mean(comprehensiveness), "sufficiency": mean(sufficiency), "texts": len(usable), "perturbed_texts": len(inputs) - len(usable)}


def class_probabilities(predictor, inputs: list[dict], classes: list[int]) -> list[float]:
    """p(class | texts) for each input (``{field: text}``), through the predictor's batched forward pass."""
    import torch

    task = predictor.task
    template = task.parse_input(dict(zip(text_keys(task), ("", ""))), "faithfulness")
    logits = predictor.logits([task.with_texts(template, texts) for texts in inputs])
    return [float(torch.softmax(row, dim=-1)[label]) for row, label in zip(logits, classes)]


def text_keys(task) -> list[str]:
    """The input keys the task reads its text (and the pair's second text) from."""
    options = getattr(task, "options", None)
    keys = [getattr(options, "text_field", "text")]
    if getattr(options, "text_pair_field", None):
        keys.append(options.text_pair_field)
    return keys
