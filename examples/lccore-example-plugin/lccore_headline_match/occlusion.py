"""The `occlusion` explainer: a word's score is how much the probability of the explained label
drops when that word is left out of its text (negative: the label gains without it).

It uses only the predictor's public surface: ``predictor.task`` (``parse_input``, ``texts_of``,
``with_texts``, ``head_spec``), ``predictor.predict_examples`` for the prediction record and
``predictor.logits`` for the batched forward passes over the occluded variants. So it explains
any task whose model gives one row of class logits per example and whose ``head_spec()`` lists
``labels``: ``headline_match`` (words of the headline and of the body) and the first-party
``text_classification`` alike. Costs one forward pass per word, plus one for the whole input.
"""

from __future__ import annotations

import re
import time

import lccore

WORD = re.compile(r"\S+")  # the words of a field are its str.split(): what the records list


class OcclusionExplainer:
    def __init__(self, options):
        self.options = options

    def explain(self, predictor, texts, progress: bool = False) -> list[dict]:
        import torch

        task = predictor.task
        labels = list(task.head_spec().get("labels") or [])
        if not labels:
            raise lccore.ConfigError("explainer 'occlusion': the task has no class labels to explain (head_spec() lists no 'labels')")
        if self.options.target is not None and self.options.target not in labels:
            raise lccore.ConfigError(f"explainer.occlusion.target: '{self.options.target}' is not one of {', '.join(labels)}")
        examples = [task.parse_input(value, f"input {i + 1}") for i, value in enumerate(texts)]
        predictions = predictor.predict_examples(examples)
        records = []
        bar = lccore.progress_bar(total=len(examples), desc="occlusion", unit="input", enabled=progress)
        try:
            for index, (example, prediction) in enumerate(zip(examples, predictions)):
                started = time.perf_counter()
                fields = task.texts_of(example)
                if not fields:
                    raise lccore.ConfigError(f"explainer 'occlusion': task '{predictor.config.task.name}' exposes no texts (Task.texts_of)")
                # the input itself, then one variant per word with that word cut out of its field
                spans = [(field, match.start(), match.end()) for field, text in fields.items() for match in WORD.finditer(text)]
                variants = [example] + [task.with_texts(example, {field: _without(fields[field], start, end)}) for field, start, end in spans]
                logits = predictor.logits(variants, batch_size=self.options.batch_size)
                if any(row.dim() != 1 for row in logits):
                    raise lccore.ConfigError("explainer 'occlusion': the model gives no single row of class logits per input")
                probabilities = torch.softmax(torch.stack(logits), dim=-1)
                explained = self.options.target if self.options.target is not None else prediction.get("label")
                if explained not in labels:
                    raise lccore.ConfigError(f"explainer 'occlusion': explains one label per input; the prediction is {prediction}")
                target = labels.index(explained)
                whole = float(probabilities[0, target])
                words = []
                for (field, start, end), row in zip(spans, probabilities[1:]):
                    word = {"text": fields[field][start:end], "start": start, "end": end, "score": round(whole - float(row[target]), 8)}
                    if field != "text":
                        word["field"] = field  # offsets index into record[field]
                    words.append(word)
                records.append({
                    "format": "lccore.attribution/1",
                    **fields,  # "text" (the headline) and "text_pair" (the body) for headline_match
                    "text_index": index,
                    "task": predictor.config.task.name,
                    "target": {"label": labels[target]},
                    "prediction": prediction,
                    "target_score": round(whole, 6),
                    "words": words,
                    "method": "occlusion",
                    "baseline": "the word left out of its text",
                    "notes": [],
                    "cost": {"model_evaluations": len(variants), "seconds": round(time.perf_counter() - started, 4)},
                })
                bar.update(1)
        finally:
            bar.close()
        return records


def _without(text: str, start: int, end: int) -> str:
    """``text`` with the word at ``start:end`` cut out, and one of the spaces around it."""
    return (text[:start].rstrip() + " " + text[end:].lstrip()).strip()
