"""The `extractive_qa` task: find the answer span in a context (SQuAD v1.1 and v2.0).

A context longer than `train.max_length` is cut into overlapping windows (`doc_stride` tokens
of overlap); each window is a feature, and the best span over all of an example's windows is its
answer. In v2 data a question may have no answer: the model then points at the [CLS] token.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import attrs
import torch

import lccore
from lccore.data import check_json_value, read_bytes

from .squad_metric import best_over_golds, exact_match, f1


@attrs.frozen
class Example:
    question: str
    context: str
    answers: tuple[tuple[str, int], ...] | None  # (text, character start); () = unanswerable
    where: str
    qid: str = ""


class ExtractiveQATask(lccore.Task):
    default_head = "span_qa"
    metric = "f1"
    metric_names = ("exact_match", "f1")

    def __init__(self, options):
        self.options = options
        self.allow_no_answer = True

    def fit(self, examples) -> None:
        # SQuAD v1.1 training data has an answer for every question: then always give a span.
        self.allow_no_answer = any(not e.answers for e in examples)

    def head_spec(self) -> dict:
        return {"allow_no_answer": self.allow_no_answer}

    def restore(self, spec: dict) -> None:
        self.allow_no_answer = bool(spec["allow_no_answer"])

    # --- reading ---------------------------------------------------------------------------------

    def read(self, path) -> list[Example]:
        path = Path(path)
        try:
            text = read_bytes(path).decode("utf-8-sig")  # a .json.gz too
            document = json.loads(text)
        except UnicodeDecodeError as exc:
            raise lccore.DataError(f"{path}: not valid UTF-8 (byte {exc.start})") from None
        except json.JSONDecodeError as exc:
            raise lccore.DataError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg} (column {exc.colno})") from None
        except RecursionError:
            raise lccore.DataError(f"{path}: JSON nested too deeply") from None
        check_json_value(document, text, str(path))  # deep nesting and lone surrogates refused
        if not isinstance(document, dict) or not isinstance(document.get("data"), list):
            raise lccore.DataError(f"{path}: expected SQuAD JSON: an object with a 'data' list")
        examples = []
        for a, article in enumerate(document["data"]):
            for p, paragraph in enumerate(article.get("paragraphs", [])):
                context = paragraph.get("context")
                key = f"data[{a}].paragraphs[{p}]"
                if not isinstance(context, str):
                    raise lccore.DataError(f"{path}: {key}: missing 'context' string")
                for q, qa in enumerate(paragraph.get("qas", [])):
                    examples.append(self._read_question(qa, context, f"{path}: {key}.qas[{q}]"))
        if not examples:
            raise lccore.DataError(f"{path}: no questions found")
        return examples

    def _read_question(self, qa, context: str, where: str) -> Example:
        if not isinstance(qa, dict) or not isinstance(qa.get("question"), str):
            raise lccore.DataError(f"{where}: missing 'question' string")
        where = f"{where} (id {qa.get('id', '?')})"
        answers = []
        for answer in qa.get("answers", []):
            text, start = answer.get("text"), answer.get("answer_start")
            if not isinstance(text, str) or not isinstance(start, int):
                raise lccore.DataError(f"{where}: each answer needs 'text' and an integer 'answer_start'")
            if context[start : start + len(text)] != text:
                raise lccore.DataError(f"{where}: answer {text!r} is not in the context at character {start}")
            answers.append((text, start))
        if not answers and not qa.get("is_impossible", False):
            raise lccore.DataError(f"{where}: no answers and not marked is_impossible")
        return Example(qa["question"], context, tuple(answers), where, str(qa.get("id", "")))

    def parse_input(self, value, where):
        if isinstance(value, dict) and isinstance(value.get("question"), str) and isinstance(value.get("context"), str):
            return Example(value["question"], value["context"], None, where)
        raise lccore.DataError(f"{where}: expected an object with string 'question' and 'context'")

    # --- model input and output ------------------------------------------------------------------

    def encode(self, examples, tokenizer, max_length):
        stride = self._stride(examples, tokenizer, max_length)
        features = []
        for first, group in _groups(examples):  # a tokenizer call takes ~140 bytes a character: long contexts a few at a time
            encoded = tokenizer(
                [e.question for e in group], [e.context for e in group], truncation="only_second", max_length=max_length,
                stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
            )
            for row, in_group in enumerate(encoded["overflow_to_sample_mapping"]):
                example = group[in_group]
                sequence_ids = encoded.sequence_ids(row)
                # Offsets only for context tokens: a span may start and end only there.
                offsets = [o if s == 1 else None for o, s in zip(encoded["offset_mapping"][row], sequence_ids)]
                feature = {k: encoded[k][row] for k in tokenizer.model_input_names if k in encoded}
                # The window's own part of the context, not the whole context in every window (a long document's
                # windows would each hold, and cache, all of it).
                inside = [o for o in offsets if o is not None]
                start, end = (inside[0][0], inside[-1][1]) if inside else (0, 0)
                feature.update(example_index=first + in_group, context=example.context[start:end], context_start=start, offsets=offsets)
                if example.answers is not None:
                    feature["start_positions"], feature["end_positions"] = self._answer_positions(example, offsets)
                features.append(feature)
        return features

    def _stride(self, examples, tokenizer, max_length) -> int:
        """The window overlap, checked against the room the longest question leaves for context."""
        lengths = [len(ids) for ids in tokenizer([e.question for e in examples], add_special_tokens=False)["input_ids"]]
        longest = max(range(len(examples)), key=lengths.__getitem__)
        room = max_length - lengths[longest] - tokenizer.num_special_tokens_to_add(pair=True)
        if room < 8:
            raise lccore.DataError(
                f"{examples[longest].where}: the question takes {lengths[longest]} tokens, leaving {room} of "
                f"train.max_length={max_length} for the context; shorten it or raise train.max_length"
            )
        if self.options.doc_stride is None:
            return min(max_length // 4, room // 2)
        if self.options.doc_stride >= room:
            raise lccore.ConfigError(
                f"task.doc_stride: {self.options.doc_stride} must be smaller than the {room} context tokens a window holds "
                f"(train.max_length={max_length} minus the longest question and special tokens)"
            )
        return self.options.doc_stride

    @staticmethod
    def _answer_positions(example, offsets) -> tuple[int, int]:
        """Token positions of the first gold answer in this window; (0, 0), the [CLS] token, when
        the question has no answer or the answer lies outside the window."""
        if not example.answers:
            return 0, 0
        text, start_char = example.answers[0]
        end_char = start_char + len(text)
        context = [i for i, o in enumerate(offsets) if o is not None]
        if not context or offsets[context[0]][0] > start_char or offsets[context[-1]][1] < end_char:
            return 0, 0
        start = next(i for i in context if offsets[i][1] > start_char)
        end = next(i for i in reversed(context) if offsets[i][0] < end_char)
        return start, end

    def collate(self, features, tokenizer):
        inputs = [{k: f[k] for k in tokenizer.model_input_names if k in f} for f in features]
        batch = dict(tokenizer.pad(inputs, padding=True, return_tensors="pt"))
        if all("start_positions" in f for f in features):
            batch["start_positions"] = torch.tensor([f["start_positions"] for f in features])
            batch["end_positions"] = torch.tensor([f["end_positions"] for f in features])
        return batch

    def decode(self, outputs, batch, features):
        records = []
        for row, feature in enumerate(features):
            start_logits = outputs.start_logits[row].float()
            end_logits = outputs.end_logits[row].float()
            records.append(self._best_span(start_logits, end_logits, feature))
        return records

    def _best_span(self, start_logits, end_logits, feature) -> dict:
        offsets = feature["offsets"]
        length = len(offsets)
        start_logits, end_logits = start_logits[:length], end_logits[:length]
        allowed = torch.tensor([o is not None for o in offsets])
        # score[i, j] = start_i + end_j over context tokens with i <= j < i + max_answer_tokens
        scores = start_logits[:, None] + end_logits[None, :]
        band = torch.triu(torch.ones(length, length, dtype=torch.bool)) & ~torch.triu(
            torch.ones(length, length, dtype=torch.bool), diagonal=self.options.max_answer_tokens
        )
        scores = scores.masked_fill(~(band & allowed[:, None] & allowed[None, :]), float("-inf"))
        null_score = float(start_logits[0] + end_logits[0])
        best = int(scores.argmax())
        start, end = divmod(best, length)
        span_score = float(scores[start, end])
        start_probabilities, end_probabilities = torch.softmax(start_logits, 0), torch.softmax(end_logits, 0)
        found = span_score > float("-inf")
        base = feature.get("context_start", 0)
        return {
            "example_index": feature["example_index"],
            "answer": feature["context"][offsets[start][0] - base : offsets[end][1] - base] if found else "",
            "span_score": span_score,
            "null_score": null_score,
            "start": offsets[start][0] if found else 0,
            "end": offsets[end][1] if found else 0,
            "probability": float(start_probabilities[start] * end_probabilities[end]) if found else 0.0,
            "null_probability": float(start_probabilities[0] * end_probabilities[0]),
        }

    def gather(self, records, features):
        best: dict[int, dict] = {}
        null: dict[int, dict] = {}  # the window most sure there is an answer speaks for "no answer"
        for record in records:
            index = record["example_index"]
            if index not in null or record["null_score"] < null[index]["null_score"]:
                null[index] = record
            if index not in best or record["span_score"] > best[index]["span_score"]:
                best[index] = record
        answers = []
        for index in sorted(best):
            record = best[index]
            no_answer = record["span_score"] == float("-inf") or (
                self.allow_no_answer and null[index]["null_score"] - record["span_score"] > self.options.null_threshold
            )
            if no_answer:
                answers.append({"answer": "", "start": None, "end": None, "score": round(null[index]["null_probability"], 6)})
            else:
                answers.append({"answer": record["answer"], "start": record["start"], "end": record["end"], "score": round(record["probability"], 6)})
        return answers

    def metrics(self, predictions, examples):
        return lccore.MetricsAccumulator.once(self, predictions, examples)

    def metrics_accumulator(self):
        return AnswerTotals(self)

    def example_data(self, directory):
        # SQuAD v2.0 JSON: answers with character offsets, and one question without an answer.
        import itertools
        from pathlib import Path

        ids = itertools.count()

        def paragraph(context, questions):
            qas = []
            for question, answer in questions:
                qa = {"id": f"q{next(ids)}", "question": question}
                qa.update({"answers": [{"text": answer, "answer_start": context.index(answer)}]} if answer else {"answers": [], "is_impossible": True})
                qas.append(qa)
            return {"context": context, "qas": qas}

        train = [
            paragraph("alice lives in paris . bob works at london .", [("where does alice live ?", "paris"), ("who works at london ?", "bob")]),
            paragraph("carol visited rome with dave today .", [("who visited rome ?", "carol"), ("where does erin live ?", None)]),
        ]
        dev = [paragraph("erin lives in new york .", [("where does erin live ?", "new york"), ("who lives in new york ?", "erin")])]
        paths = {}
        for split, paragraphs in (("train", train), ("dev", dev)):
            path = Path(directory) / f"{split}.json"
            path.write_text(json.dumps({"version": "v2.0", "data": [{"title": split, "paragraphs": paragraphs}]}, indent=1), encoding="utf-8")
            paths[split] = path
        return paths


class AnswerTotals(lccore.MetricsAccumulator):
    """SQuAD's exact match and F1, each the mean over questions of the best score against any gold answer."""

    def __init__(self, task):
        super().__init__(task)
        self.exact, self.f1, self.questions = 0.0, 0.0, 0

    def update(self, predictions, examples):
        for prediction, example in zip(predictions, examples):
            golds = [text for text, _ in example.answers]
            self.exact += best_over_golds(exact_match, prediction["answer"], golds)
            self.f1 += best_over_golds(f1, prediction["answer"], golds)
            self.questions += 1

    def compute(self):
        if not self.questions:
            raise ZeroDivisionError("no questions to score")
        return {"exact_match": 100.0 * self.exact / self.questions, "f1": 100.0 * self.f1 / self.questions}


#: Most characters of questions and contexts one tokenizer call reads in ``encode``.
GROUP_CHARS = 1 << 20


def _groups(examples: list) -> Iterator[tuple[int, list]]:
    """``(index of the first, examples)``: consecutive examples with at most :data:`GROUP_CHARS`
    characters together (a longer one alone)."""
    first, size = 0, 0
    for index, example in enumerate(examples):
        length = len(example.question) + len(example.context)
        if index > first and size + length > GROUP_CHARS:
            yield first, examples[first:index]
            first, size = index, 0
        size += length
    if first < len(examples):
        yield first, examples[first:]
