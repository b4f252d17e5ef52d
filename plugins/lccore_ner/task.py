"""The `ner` task: one tag per word, scored at the entity level with seqeval.

Words are tagged through their first sub-token (or all of them with `label_all_subtokens`).
A text longer than `train.max_length` is read in overlapping windows (a quarter of a window
shared), in training too; each word is tagged from the window that gives it the most context.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import torch

import lccore
from lccore.data import data_suffix, read_lines, read_records

TAG = re.compile(r"^(O|[BIESLU]-\S+)$")
#: Splits raw text into words the way CoNLL corpora are tokenised: words, and punctuation apart.
WORD = re.compile(r"\w+(?:[-'’.]\w+)*|[^\w\s]")
CONLL_SUFFIXES = (".conll", ".conllu", ".txt", ".bio", ".iob", ".iob2", ".tsv")


@attrs.frozen
class Example:
    tokens: tuple[str, ...]
    tags: tuple[str, ...] | None
    where: str
    text: str  # what entity offsets point into: the raw text, or the tokens joined by spaces
    offsets: tuple[tuple[int, int], ...]


def from_tokens(tokens, tags, where) -> Example:
    offsets, position = [], 0
    for token in tokens:
        offsets.append((position, position + len(token)))
        position += len(token) + 1
    return Example(tuple(tokens), None if tags is None else tuple(tags), where, " ".join(tokens), tuple(offsets))


def from_text(text: str, where: str) -> Example:
    matches = list(WORD.finditer(text))
    return Example(tuple(m.group() for m in matches), None, where, text, tuple(m.span() for m in matches))


class NERTask(lccore.Task):
    default_head = "token_classifier"
    metric = "f1"
    metric_names = ("precision", "recall", "f1")

    def __init__(self, options):
        self.options = options
        self.labels: list[str] = list(options.labels or [])

    # --- reading ---------------------------------------------------------------------------------

    def read(self, path) -> list[Example]:
        path = Path(path)
        if data_suffix(path) in CONLL_SUFFIXES:
            examples = self._read_conll(path)
        else:
            examples = self._read_jsonl(path)
        if not examples:
            raise lccore.DataError(f"{path}: no sentences found")
        return examples

    def _read_conll(self, path: Path) -> list[Example]:
        examples, tokens, tags, start = [], [], [], None
        for number, line in read_lines(path):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if tokens:
                    examples.append(from_tokens(tokens, tags, f"{path}:{start}"))
                tokens, tags = [], []
                continue
            if len(parts) < 2:
                raise lccore.DataError(f"{path}:{number}: expected a token and a tag separated by whitespace, got {line.strip()!r}")
            if not TAG.match(parts[-1]):
                raise lccore.DataError(f"{path}:{number}: tag '{parts[-1]}' is not O or B-/I-/E-/S-TYPE")
            if not tokens:
                start = number
            tokens.append(parts[0])
            tags.append(parts[-1])
        if tokens:
            examples.append(from_tokens(tokens, tags, f"{path}:{start}"))
        return examples

    def _read_jsonl(self, path: Path) -> list[Example]:
        tokens_key, tags_key = self.options.tokens_field, self.options.tags_field
        examples = []
        for where, row in read_records(path, required=(tokens_key, tags_key)):
            tokens, tags = row[tokens_key], row[tags_key]
            if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
                raise lccore.DataError(f"{where}: '{tokens_key}' must be a list of non-empty strings")
            if not isinstance(tags, list) or len(tags) != len(tokens):
                count = len(tags) if isinstance(tags, list) else "no"
                raise lccore.DataError(f"{where}: {len(tokens)} tokens but {count} tags")
            bad = next((t for t in tags if not isinstance(t, str) or not TAG.match(t)), None)
            if bad is not None:
                raise lccore.DataError(f"{where}: tag {bad!r} is not O or B-/I-/E-/S-TYPE")
            if tokens:
                examples.append(from_tokens(tokens, tags, where))
        return examples

    def parse_input(self, value, where):
        if isinstance(value, str):
            return from_text(value, where)
        if isinstance(value, dict) and isinstance(value.get("text"), str):
            return from_text(value["text"], where)
        tokens = value.get(self.options.tokens_field) if isinstance(value, dict) else value
        if isinstance(tokens, list) and all(isinstance(t, str) and t for t in tokens):
            return from_tokens(tokens, None, where)
        raise lccore.DataError(f"{where}: expected a string, an object with 'text', or a list of tokens")

    # --- labels ----------------------------------------------------------------------------------

    def fit(self, examples) -> None:
        found = sorted({tag for e in examples for tag in e.tags} - {"O"})
        if not self.labels:
            self.labels = ["O"] + found
        unknown = [tag for tag in found if tag not in self.labels]
        if unknown:
            first = next(e for e in examples if unknown[0] in e.tags)
            raise lccore.DataError(f"{first.where}: tag '{unknown[0]}' is not in task.labels")
        if len(self.labels) < 2:
            raise lccore.DataError(f"{examples[0].where.rsplit(':', 1)[0]}: training data has no entity tags")

    def head_spec(self) -> dict:
        return {"labels": list(self.labels)}

    def restore(self, spec: dict) -> None:
        self.labels = list(spec["labels"])

    # --- model input and output ------------------------------------------------------------------

    def encode(self, examples, tokenizer, max_length):
        index = {tag: i for i, tag in enumerate(self.labels)}
        # A text longer than max_length is read in overlapping windows (a quarter of a window shared),
        # each word tagged from the window where it has the most context on both sides (gather).
        encoded = tokenizer([list(e.tokens) for e in examples], is_split_into_words=True, truncation=True, max_length=max_length,
                            stride=max(max_length // 4, 1), return_overflowing_tokens=True)
        features = []
        for row, example_index in enumerate(encoded["overflow_to_sample_mapping"]):
            example = examples[example_index]
            word_ids = encoded.word_ids(row)
            feature = {key: encoded[key][row] for key in tokenizer.model_input_names if key in encoded}
            # What decode needs to turn tags back into entities, as plain data (features are cached as JSON):
            # the window's own words' offsets and text, not the whole example's in every window.
            words = [w for w in word_ids if w is not None]
            first, last = (words[0], words[-1]) if words else (0, -1)
            offsets = example.offsets[first : last + 1]
            start = offsets[0][0] if offsets else 0
            feature.update(example_index=example_index, word_ids=word_ids, first_word=first, offsets=offsets, text_start=start,
                           text=example.text[start : offsets[-1][1]] if offsets else "", words=len(example.offsets))
            if example.tags is not None:
                unknown = next((t for t in example.tags if t not in index), None)
                if unknown is not None:
                    raise lccore.DataError(f"{example.where}: tag '{unknown}' was not seen in training (known: {', '.join(self.labels)})")
                feature["labels"] = self._align(example.tags, word_ids, index)
            features.append(feature)
        return features

    def _align(self, tags, word_ids, index) -> list[int]:
        labels, previous = [], None
        for word in word_ids:
            if word is None:
                labels.append(-100)  # special tokens carry no label
            elif word != previous:
                labels.append(index[tags[word]])
            elif self.options.label_all_subtokens:
                labels.append(index.get(continuation(tags[word]), index[tags[word]]))
            else:
                labels.append(-100)
            previous = word
        return labels

    def collate(self, features, tokenizer):
        inputs = [{k: f[k] for k in tokenizer.model_input_names if k in f} for f in features]
        batch = dict(tokenizer.pad(inputs, padding=True, return_tensors="pt"))
        if all("labels" in f for f in features):
            width = batch["input_ids"].shape[1]
            batch["labels"] = torch.tensor([f["labels"] + [-100] * (width - len(f["labels"])) for f in features])
        return batch

    def decode(self, outputs, batch, features):
        probabilities = torch.softmax(outputs.logits.float(), dim=-1)
        confidence, best = probabilities.max(dim=-1)
        decoded = getattr(outputs, "tag_ids", None)  # a head that decodes whole sequences (crf) gives its path
        if decoded is not None:
            best = torch.where(decoded >= 0, decoded, best)
            confidence = probabilities.gather(-1, best.unsqueeze(-1)).squeeze(-1)
        records = []
        for row, feature in enumerate(features):
            tagged, seen = {}, set()  # word -> (tag, score), through its first sub-token
            for position, word in enumerate(feature["word_ids"]):
                if word is None or word in seen:
                    continue
                seen.add(word)
                tagged[word] = (self.labels[int(best[row, position])], float(confidence[row, position]))
            records.append({"example_index": feature.get("example_index", row), "tagged": tagged})
        return records

    def gather(self, records, features):
        """One ``{"entities", "tags"}`` record per example: each word's tag from the window that
        gives it the most context on both sides; a word no window reached is ``O``."""
        from seqeval.metrics.sequence_labeling import get_entities

        windows: dict[int, list[tuple[dict, dict]]] = {}
        for record, feature in zip(records, features):
            windows.setdefault(record["example_index"], []).append((record, feature))
        gathered = []
        for example_index in sorted(windows):
            parts = windows[example_index]
            count = parts[0][1]["words"]
            tags, scores, margins = ["O"] * count, [0.0] * count, [-1] * count
            offsets, text, base = [None] * count, "", None
            for record, feature in parts:
                first, window = feature["first_word"], feature["offsets"]
                last = first + len(window) - 1
                for word, (tag, score) in record["tagged"].items():
                    margin = min(word - first, last - word)
                    if margin > margins[word]:
                        tags[word], scores[word], margins[word] = tag, score, margin
                offsets[first : last + 1] = [tuple(o) for o in window]
                if window:  # the windows' texts, stitched where they overlap
                    if base is None:
                        base, text = feature["text_start"], feature["text"]
                    end = feature["text_start"] + len(feature["text"])
                    if end > base + len(text):
                        text += feature["text"][base + len(text) - feature["text_start"]:]
            entities = []
            for kind, first, last in get_entities(tags):
                start, end = offsets[first][0], offsets[last][1]
                score = sum(scores[first : last + 1]) / (last - first + 1)
                entities.append({"text": text[start - base : end - base], "type": kind, "start": start, "end": end, "score": round(score, 6)})
            gathered.append({"entities": entities, "tags": tags})
        return gathered

    def metrics(self, predictions, examples):
        return lccore.MetricsAccumulator.once(self, predictions, examples)

    def metrics_accumulator(self):
        return EntityCounts(self)

    def example_data(self, directory):
        # CoNLL, one "token tag" per line and a blank line between sentences: the format every
        # NER corpus ships in. Two entity types, a two-word entity (I- tag) and a sentence without one.
        sentences = [
            [("alice", "B-PER"), ("lives", "O"), ("in", "O"), ("paris", "B-LOC"), (".", "O")],
            [("bob", "B-PER"), ("visited", "O"), ("new", "B-LOC"), ("york", "I-LOC"), ("today", "O")],
            [("carol", "B-PER"), ("works", "O"), ("at", "O"), ("rome", "B-LOC"), ("with", "O"), ("dave", "B-PER")],
            [("nobody", "O"), ("knows", "O"), ("anything", "O"), (".", "O")],
            [("erin", "B-PER"), ("went", "O"), ("to", "O"), ("london", "B-LOC")],
        ]
        paths = {}
        for split, rows in (("train", sentences), ("dev", sentences[::-1])):
            path = Path(directory) / f"{split}.conll"
            path.write_text("\n".join("".join(f"{token} {tag}\n" for token, tag in sentence) for sentence in rows), encoding="utf-8")
            paths[split] = path
        return paths


def continuation(tag: str) -> str:
    """The tag of a word's later sub-tokens: inside the same entity (B-X -> I-X, S-X -> I-X)."""
    return "I-" + tag[2:] if tag[:2] in ("B-", "S-") else tag


class EntityCounts(lccore.MetricsAccumulator):
    """seqeval's entity-level scores (its default, CoNLL mode) from counts per entity type:
    entities predicted, entities in the gold tags, and exact matches (type, start, end)."""

    def __init__(self, task):
        super().__init__(task)
        self.counts: dict[str, list[int]] = {}  # type -> [matched, predicted, gold]

    def update(self, predictions, examples):
        from seqeval.metrics.sequence_labeling import get_entities

        for prediction, example in zip(predictions, examples):
            gold, predicted = set(get_entities(list(example.tags))), set(get_entities(list(prediction["tags"])))
            for entities, column in ((gold & predicted, 0), (predicted, 1), (gold, 2)):
                for kind, _, _ in entities:
                    self.counts.setdefault(kind, [0, 0, 0])[column] += 1

    def compute(self):
        def scores(matched, predicted, gold):
            precision = matched / predicted if predicted else 0.0
            recall = matched / gold if gold else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            return {"precision": precision, "recall": recall, "f1": f1}

        per_type = {kind: {**scores(*counts), "support": counts[2]} for kind, counts in sorted(self.counts.items())}
        totals = [sum(column) for column in zip(*self.counts.values())] if self.counts else [0, 0, 0]
        return {**scores(*totals), "per_type": per_type}
