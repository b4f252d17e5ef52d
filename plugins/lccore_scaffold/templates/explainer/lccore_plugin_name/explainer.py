"""The `plugin_name` explainer: occlusion. A word's score is how much the probability of the explained
class drops when the word is left out of the text (negative: the class gains without it).

Works with tasks whose model outputs one row of class logits per text and whose ``head_spec()``
lists ``labels`` (text classification). Costs one forward pass per word, plus one for the text.
"""

from __future__ import annotations

import re
import time

import torch

import lccore

WORD = re.compile(r"\S+")


class PluginNameExplainer:
    def __init__(self, options):
        self.options = options

    def explain(self, predictor, texts) -> list[dict]:
        labels = list(getattr(predictor.task, "labels", None) or [])
        if not labels:
            raise lccore.ConfigError("explainer 'plugin_name': the task has no class labels to explain")
        records = []
        for index, text in enumerate(texts):
            started = time.perf_counter()
            if not isinstance(text, str):
                raise lccore.DataError(f"input {index + 1}: 'plugin_name' explains plain texts")
            spans = [m.span() for m in WORD.finditer(text)]
            variants = [text] + [(text[:start] + text[end:]).strip() for start, end in spans]
            probabilities = self._probabilities(predictor, variants)
            predicted = int(probabilities[0].argmax())
            if self.options.target is None:
                target = predicted
            elif self.options.target in labels:
                target = labels.index(self.options.target)
            else:
                raise lccore.ConfigError(f"explainer.target: '{self.options.target}' is not one of {', '.join(labels)}")
            whole = float(probabilities[0, target])
            records.append({
                "text": text,
                "text_index": index,
                "target": {"label": labels[target]},
                "prediction": {"label": labels[predicted], "score": round(float(probabilities[0, predicted]), 6)},
                "target_score": round(whole, 6),
                "words": [
                    {"text": text[start:end], "start": start, "end": end, "score": round(whole - float(p[target]), 8)}
                    for (start, end), p in zip(spans, probabilities[1:])
                ],
                "method": "plugin_name",
                "baseline": "the word left out",
                "cost": {"model_evaluations": len(variants), "seconds": round(time.perf_counter() - started, 4)},
            })
        return records

    def _probabilities(self, predictor, texts: list[str]) -> torch.Tensor:
        task, tokenizer = predictor.task, predictor.tokenizer
        rows = []
        for first in range(0, len(texts), self.options.batch_size):
            chunk = texts[first : first + self.options.batch_size]
            examples = [task.parse_input(text, f"occluded text {first + i + 1}") for i, text in enumerate(chunk)]
            features = task.encode(examples, tokenizer, predictor.config.train.max_length)
            batch = {k: v.to(predictor.device) for k, v in task.collate(features, tokenizer).items() if k != "labels"}
            with torch.inference_mode():
                rows.append(torch.softmax(task.forward(predictor.model, batch).logits.float(), dim=-1).cpu())
        return torch.cat(rows)
