"""The `mlm` and `clm` tasks.

Texts read from a file are packed: tokenised, joined with the separator (`[SEP]` for masked LM,
end-of-text for causal LM) and cut into blocks of `max_length` tokens, so no step computes on
padding. Each block remembers which tokens belong to which text (its segments), so the
per-token losses go back to the texts: a prediction is one record per text, and perplexity is
exp(total NLL / scored tokens) over the file. Texts given to `predict` are never packed together:
each is scored on its own.

Masking (masked LM) happens when a batch is collated: afresh each time in training (dynamic
masking, as RoBERTa), and with a fixed seed per block in evaluation, so dev perplexity does not
move because of the masks.
"""

from __future__ import annotations

import math
import zlib

import attrs
import torch

import lccore
from lccore.data import read_lines, read_records, tokenize_in_pieces


@attrs.frozen
class Example:
    text: str
    where: str
    standalone: bool = False  # a prediction input: scored alone, not packed with its neighbours


class LanguageModelingTask(lccore.Task):
    metric = "perplexity"
    metric_names = ("perplexity", "nll")
    greater_is_better = False

    def __init__(self, objective: str, options):
        self.objective = objective  # "mlm" or "clm"
        self.options = options
        self.default_head = "masked_lm" if objective == "mlm" else "causal_lm"
        self._collator = None

    # --- data ------------------------------------------------------------------------------------

    def read(self, path):
        # A generator: a corpus is read in passes, never held whole.
        found = False
        if str(path).endswith(".txt"):
            for number, line in read_lines(path):
                if line.strip():
                    found = True
                    yield Example(line.rstrip("\r\n"), f"{path}:{number}")
        else:
            key = self.options.text_field
            for where, row in read_records(path, required=(key,)):
                if not isinstance(row[key], str):
                    raise lccore.DataError(f"{where}: '{key}' must be a string, got {type(row[key]).__name__}")
                if row[key].strip():
                    found = True
                    yield Example(row[key], where)
        if not found:
            raise lccore.DataError(f"{path}: no text found")

    def with_texts(self, example, texts):
        return attrs.evolve(example, **texts)

    def parse_input(self, value, where):
        if isinstance(value, dict):
            value = value.get(self.options.text_field)
        if not isinstance(value, str):
            raise lccore.DataError(f"{where}: expected a string or an object with a string '{self.options.text_field}'")
        return Example(value, where, standalone=True)

    # --- features --------------------------------------------------------------------------------

    def encode(self, examples, tokenizer, max_length):
        separator = self._separator(tokenizer)
        wrap = self.objective == "mlm"  # [CLS] ... [SEP] around each block
        room = max_length - 2 if wrap else max_length
        ids = tokenize_in_pieces(tokenizer, [e.text for e in examples])  # long documents in pieces: bounded memory, the same ids
        features = []

        def emit(stream: list[int], segments: list[tuple[int, int, int]]) -> None:
            first = 0  # segments are in stream order: each block looks only at those it can overlap
            for start in range(0, len(stream), room):
                end = start + room
                block = stream[start:end]
                while segments[first][2] <= start:
                    first += 1
                inside = []
                for i, a, b in segments[first:]:
                    if a >= end:
                        break
                    inside.append((i, max(a, start) - start, min(b, end) - start))
                if wrap:
                    block = [tokenizer.cls_token_id, *block, tokenizer.sep_token_id]
                    inside = [(i, a + 1, b + 1) for i, a, b in inside]
                features.append({"input_ids": block, "segments": inside, "examples": len(examples)})

        packed, segments = [], []
        for index, (example, tokens) in enumerate(zip(examples, ids)):
            tokens = [*tokens, separator]  # the end of a text is part of it (a causal LM learns to end)
            if example.standalone or not self.options.pack:
                emit(tokens if self.objective == "clm" else tokens[:-1], [(index, 0, len(tokens))])
                continue
            segments.append((index, len(packed), len(packed) + len(tokens)))
            packed.extend(tokens)
        if packed:
            emit(packed, segments)
        return features

    def _separator(self, tokenizer) -> int:
        token = tokenizer.sep_token_id if self.objective == "mlm" else tokenizer.eos_token_id
        if token is None:
            what = "a separator token ([SEP])" if self.objective == "mlm" else "an end-of-text token (eos)"
            raise lccore.ConfigError(f"task: '{self.objective}' needs a tokenizer with {what}")
        return token

    def collate(self, features, tokenizer):
        if tokenizer.pad_token_id is None:  # GPT-2's tokenizer has none: pad with end-of-text, masked out
            tokenizer.pad_token = tokenizer.eos_token
        batch = dict(tokenizer.pad([{"input_ids": f["input_ids"]} for f in features], padding=True, return_tensors="pt"))
        if self.objective == "clm":
            labels = batch["input_ids"].clone()
            labels[batch["attention_mask"] == 0] = -100
            batch["labels"] = labels
            return batch
        special = torch.isin(batch["input_ids"], torch.tensor(tokenizer.all_special_ids)) | (batch["attention_mask"] == 0)
        collator = self._masker(tokenizer)
        if torch.is_inference_mode_enabled():  # evaluation: the same masks every time, whatever the batch
            rows = []
            for row, mask in zip(batch["input_ids"], special):
                collator.generator = torch.Generator().manual_seed(zlib.crc32(row.numpy().tobytes()))
                rows.append(collator.torch_mask_tokens(row[None].clone(), mask[None]))
            collator.generator = None
            batch["input_ids"] = torch.cat([r[0] for r in rows])
            batch["labels"] = torch.cat([r[1] for r in rows])
        else:
            batch["input_ids"], batch["labels"] = collator.torch_mask_tokens(batch["input_ids"], special)
        return batch

    def _masker(self, tokenizer):
        from transformers import DataCollatorForLanguageModeling

        if tokenizer.mask_token is None:
            raise lccore.ConfigError("task: 'mlm' needs a tokenizer with a mask token ([MASK])")
        if self._collator is None or self._collator.tokenizer is not tokenizer:
            self._collator = DataCollatorForLanguageModeling(tokenizer, mlm=True, mlm_probability=self.options.mlm_probability)
        return self._collator

    # --- predictions and metrics -----------------------------------------------------------------

    def decode(self, outputs, batch, features):
        logits, labels = outputs.logits.float(), batch["labels"]
        if self.objective == "clm":  # token t is predicted at position t - 1
            nll = torch.zeros(labels.shape, device=logits.device)
            nll[:, 1:] = torch.nn.functional.cross_entropy(
                logits[:, :-1].transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
            )
            scored = torch.zeros(labels.shape, dtype=torch.bool, device=labels.device)
            scored[:, 1:] = labels[:, 1:] != -100
        else:
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=-100, reduction="none")
            scored = labels != -100
        nll, scored = nll.cpu(), scored.cpu()
        records = []
        for row, feature in enumerate(features):
            records.append(
                {"segments": [[i, float(nll[row, a:b][scored[row, a:b]].sum()), int(scored[row, a:b].sum())] for i, a, b in feature["segments"]]}
            )
        return records

    def gather(self, records, features):
        count = features[0]["examples"] if features else 0
        totals = [[0.0, 0] for _ in range(count)]
        for record in records:
            for index, nll, tokens in record["segments"]:
                totals[index][0] += nll
                totals[index][1] += tokens
        return [
            {"nll": round(nll, 6), "tokens": tokens, "perplexity": round(math.exp(nll / tokens), 4) if tokens else None}
            for nll, tokens in totals
        ]

    def metrics(self, predictions, examples):
        return lccore.MetricsAccumulator.once(self, predictions, examples)

    def metrics_accumulator(self):
        return LikelihoodTotals(self)

    def example_data(self, directory):
        # Plain text, one text per line. Texts of a dozen words, so that a batch of four holds
        # enough tokens for masked LM to select some at mlm_probability.
        from pathlib import Path

        texts = [
            "alice lives in paris and the film was really quite great , very good .",
            "bob visited new york today and the show was a wonderful , lovely show .",
            "carol works at rome with dave and the book was very dull and boring .",
            "erin went to london from paris and the meal was awful , the plot dreadful .",
            "where does alice live ? nobody knows anything , it was a superb plot .",
            "dave heard of a brilliant book and a horrible film in london today .",
        ]
        paths = {}
        for split, lines in (("train", texts), ("dev", texts[::-1])):
            path = Path(directory) / f"{split}.txt"
            path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
            paths[split] = path
        return paths


class LikelihoodTotals(lccore.MetricsAccumulator):
    """Perplexity over a file from two running totals: negative log-likelihood and tokens scored."""

    def __init__(self, task):
        super().__init__(task)
        self.nll, self.tokens = 0.0, 0

    def update(self, predictions, examples):
        self.nll += sum(p["nll"] for p in predictions)
        self.tokens += sum(p["tokens"] for p in predictions)

    def compute(self):
        mean = self.nll / self.tokens if self.tokens else float("nan")
        return {"perplexity": math.exp(mean) if self.tokens else float("nan"), "nll": mean}
