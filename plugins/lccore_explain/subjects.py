"""What an explainer explains: a text tokenised as its task tokenises it, its words, and its
prediction targets, plus a scoring function from token ids to the targets' probabilities.

Two tasks are supported: ``text_classification`` (the target is a class; a text pair is
explained as one text, the first field, a line break and the second, and split back into its
fields in the record) and ``ner`` (each predicted entity is a target: the probability of its tag
at its first sub-token).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import attrs
import torch

import lccore
from lccore import deadline
from lccore.data import clip_text

from .record import PAIR_SEPARATOR

SUPPORTED_TASKS = ("text_classification", "ner")


@attrs.frozen
class Target:
    description: dict  # the record's "target"
    prediction: dict  # the record's "prediction"
    class_index: int
    char_start: Optional[int] = None  # NER: where the entity starts; None: the whole sequence


@attrs.define
class Subject:
    """One text ready to explain."""

    index: int
    text: str
    words: list[tuple[int, int]]
    input_ids: list[int]
    token_spans: list[Optional[tuple[int, int]]]  # None for special tokens
    targets: list[Target]
    prediction: dict
    notes: list[str] = attrs.Factory(list)
    #: A text pair: where the second text starts in ``text`` (None: one text)
    pair_start: Optional[int] = None
    #: The token type of each token (a pair's second segment is 1), for models that take them
    token_type_ids: Optional[list[int]] = None

    def fields(self) -> dict[str, tuple[str, int]]:
        """Each input field's text and where it starts in ``text``."""
        if self.pair_start is None:
            return {"text": (self.text, 0)}
        first = self.pair_start - len(PAIR_SEPARATOR)
        return {"text": (self.text[:first], 0), "text_pair": (self.text[self.pair_start:], self.pair_start)}

    @property
    def special_positions(self) -> list[int]:
        return [i for i, span in enumerate(self.token_spans) if span is None]

    def position(self, target: Target, spans=None) -> Optional[int]:
        """The token the target is read at (None: the sequence's pooled output)."""
        return token_at(target.char_start, spans if spans is not None else self.token_spans)


def token_at(char: Optional[int], spans) -> Optional[int]:
    if char is None:
        return None
    for position, span in enumerate(spans):
        if span is not None and span[0] <= char < span[1]:
            return position
    raise lccore.DataError(f"no token starts at character {char} (the entity lies beyond train.max_length?)")


class Scorer:
    """The model as a function of token ids: ``probabilities(ids, targets, spans)`` -> [batch, targets].

    Every row passed through the model counts as one model evaluation."""

    def __init__(self, predictor, subject: Optional[Subject] = None):
        self.predictor = predictor
        self.model = predictor.model
        self.device = predictor.device
        self.evaluations = 0
        self.gradient_evaluations = 0
        self.with_token_types = "token_type_ids" in predictor.tokenizer.model_input_names
        self.subject = subject

    def inputs(self, ids: torch.Tensor) -> dict:
        ids = ids.to(self.device)
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self.with_token_types:
            types = self.subject.token_type_ids if self.subject is not None else None
            if types is not None and len(types) == ids.shape[1]:  # a pair: its second segment is type 1
                batch["token_type_ids"] = torch.tensor(types, device=self.device).expand_as(ids)
            else:
                batch["token_type_ids"] = torch.zeros_like(ids)
        return batch

    def logits(self, ids: torch.Tensor, **kwargs):
        deadline.check()  # under a time limit (the server's), an explanation stops between evaluations
        self.evaluations += int(ids.shape[0])
        return self.model(**self.inputs(ids), **kwargs)

    @staticmethod
    def select(logits: torch.Tensor, targets: list[Target], positions: list[Optional[int]]) -> torch.Tensor:
        """[batch, targets]: each target's probability, from sequence logits [B, C] or token logits [B, L, C]."""
        columns = []
        for target, position in zip(targets, positions):
            row = logits if position is None else logits[:, position, :]
            columns.append(torch.softmax(row.float(), dim=-1)[:, target.class_index])
        return torch.stack(columns, dim=-1)

    def probabilities(self, ids, targets: list[Target], positions: list[Optional[int]], batch_size: int = 64) -> torch.Tensor:
        """Target probabilities for rows of token ids (all of one length), without gradients."""
        ids = torch.as_tensor(ids, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        if self.subject is not None and self.subject.pair_start is not None and ids.shape[1] == len(self.subject.input_ids):
            # a masker may hide the separator between a pair's texts like any token: it is kept, as
            # the special tokens at the ends are
            special = self.subject.special_positions
            ids = ids.clone()
            ids[:, special] = torch.tensor(self.subject.input_ids, dtype=torch.long)[special]
        out = []
        with torch.inference_mode(), self.predictor.autocast():
            for start in range(0, ids.shape[0], batch_size):
                out.append(self.select(self.logits(ids[start : start + batch_size]).logits, targets, positions).cpu())
        return torch.cat(out) if out else torch.zeros((0, len(targets)))


@contextlib.contextmanager
def evaluation_mode(model):
    """The model in eval mode (no dropout) for the explanation, and back as it was."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


class TaskAdapter:
    """Tokenisation, words and targets of one task."""

    def __init__(self, predictor):
        self.predictor = predictor
        self.task = predictor.task
        self.tokenizer = predictor.tokenizer
        self.max_length = predictor.config.train.max_length
        self.name = predictor.config.task.name

    def parse(self, value, where: str):
        return self.predictor.parse_input(value, where)  # a lone surrogate refused too

    def subject(self, index: int, example, prediction: dict, target: Optional[str]) -> Subject:
        raise NotImplementedError


class ClassificationAdapter(TaskAdapter):
    def subject(self, index, example, prediction, target):
        labels = class_labels(self.task)
        if "label" not in prediction or not labels:
            raise lccore.ConfigError(f"explain: the run's labels are not single classes (task.label_type: {getattr(self.task, 'label_type', '?')}); "
                                     "explainers attribute single-label classification")
        label = target if target is not None else prediction["label"]
        if label not in labels:
            raise lccore.ConfigError(f"target: '{label}' is not a label of this run (labels: {', '.join(labels)})")
        targets = [Target({"label": label}, prediction, labels.index(label))]
        texts = self.task.texts_of(example) or {"text": example.text}
        if texts.get("text_pair") is not None:
            return self.pair_subject(index, texts["text"], texts["text_pair"], prediction, targets)
        text = texts["text"]
        encoded = self.tokenizer(clip_text(text, self.max_length), truncation=True, max_length=self.max_length, return_offsets_mapping=True,
                                 return_special_tokens_mask=True)
        spans = [None if special else trim(span, text) for span, special in zip(encoded["offset_mapping"], encoded["special_tokens_mask"])]
        words = words_from(encoded.word_ids(), spans)
        subject = Subject(index, text, words, list(encoded["input_ids"]), spans, targets, prediction)
        if words and words[-1][1] < len(text.rstrip()):
            subject.notes.append(f"the text is longer than train.max_length ({self.max_length} tokens): only its first {words[-1][1]} characters are explained")
        return subject

    def pair_subject(self, index, first: str, second: str, prediction, targets) -> Subject:
        """The pair tokenised as the task tokenises it (the longer text truncated first), on one
        text: ``first``, :data:`PAIR_SEPARATOR`, ``second``."""
        text = first + PAIR_SEPARATOR + second
        pair_start = len(first) + len(PAIR_SEPARATOR)
        encoded = pair_encoding(self.tokenizer, first, second, self.max_length)
        spans, word_keys = [], []
        for span, special, sequence, word in zip(encoded["offset_mapping"], encoded["special_tokens_mask"], encoded.sequence_ids(), encoded.word_ids()):
            if special or sequence is None:
                spans.append(None)
                word_keys.append(None)
                continue
            shift = 0 if sequence == 0 else pair_start
            spans.append(trim((span[0] + shift, span[1] + shift), text))
            word_keys.append(None if word is None else (sequence, word))
        words = words_from(word_keys, spans)
        types = encoded.get("token_type_ids")  # None for a model without token types (RoBERTa)
        subject = Subject(index, text, words, list(encoded["input_ids"]), spans, targets, prediction, pair_start=pair_start, token_type_ids=None if types is None else list(types))
        for name, (value, start) in subject.fields().items():
            covered = [end for s, end in words if start <= s < start + len(value) + 1]
            if value.strip() and (not covered or max(covered) - start < len(value.rstrip())):
                subject.notes.append(f"the pair is longer than train.max_length ({self.max_length} tokens): part of its {name} is not explained")
        return subject


def pair_encoding(tokenizer, first: str, second: str, max_length: int):
    """A text pair as text classification encodes it: the longer text truncated first."""
    return tokenizer(clip_text(first, max_length), clip_text(second, max_length), truncation="longest_first", max_length=max_length,
                     return_offsets_mapping=True, return_special_tokens_mask=True)



class EntityAdapter(TaskAdapter):
    def subject(self, index, example, prediction, target):
        encoded = self.tokenizer(
            list(example.tokens), is_split_into_words=True, truncation=True, max_length=self.max_length, return_offsets_mapping=True
        )
        spans = []
        for word, (start, end) in zip(encoded.word_ids(), encoded["offset_mapping"]):
            base = example.offsets[word][0] if word is not None else 0
            spans.append(None if word is None else trim((base + start, base + end), example.text))
        words = [tuple(span) for span in example.offsets]
        labels = list(self.task.labels)
        word_starts = {span[0]: i for i, span in enumerate(example.offsets)}
        targets = []
        for entity in prediction["entities"]:
            if target is not None and target not in (entity["text"], entity["type"]):
                continue
            tag = prediction["tags"][word_starts[entity["start"]]]
            description = {"label": entity["type"], "text": entity["text"], "start": entity["start"], "end": entity["end"], "tag": tag}
            targets.append(Target(description, entity, labels.index(tag), entity["start"]))
        subject = Subject(index, example.text, words, list(encoded["input_ids"]), spans, targets, prediction)
        if not targets:
            subject.notes.append("no entity predicted" + (f" matching target '{target}'" if target is not None else "") + ": nothing to explain")
        covered = {word for word in encoded.word_ids() if word is not None}
        if len(covered) < len(words):
            subject.notes.append(f"{len(words) - len(covered)} words lie beyond train.max_length ({self.max_length} tokens): they get no attribution")
        return subject


def trim(span, text: str) -> tuple[int, int]:
    """A token's character span without the spaces some tokenizers fold into it (``Ġword``)."""
    start, end = span
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def words_from(word_ids, spans) -> list[tuple[int, int]]:
    """Word character spans from a fast tokenizer's word ids (or any keys that name a word) and
    (trimmed) token spans, in order of position."""
    found: dict = {}
    for word, span in zip(word_ids, spans):
        if word is None or span is None or span[1] <= span[0]:
            continue
        start, end = span
        bounds = found.setdefault(word, [start, end])
        bounds[0], bounds[1] = min(bounds[0], start), max(bounds[1], end)
    return sorted(tuple(bounds) for bounds in found.values())


def class_labels(task) -> list:
    """A classifier's labels in logit order: ``task.labels``, or what its ``head_spec`` saves."""
    labels = getattr(task, "labels", None) or task.head_spec().get("labels")
    return list(labels) if isinstance(labels, (list, tuple)) and all(isinstance(label, str) for label in labels) else []


def adapter_for(predictor) -> TaskAdapter:
    name = predictor.config.task.name
    if name == "text_classification":
        return ClassificationAdapter(predictor)
    if name == "ner":
        return EntityAdapter(predictor)
    if class_labels(predictor.task):
        # Another plugin's classifier (one of its labels a text or pair, sequence logits in the
        # order of head_spec()["labels"]): explained as text classification, on its texts_of
        return ClassificationAdapter(predictor)
    raise lccore.ConfigError(
        f"explain: task '{name}' is not supported; explainers handle {', '.join(SUPPORTED_TASKS)} and tasks "
        "that predict one label of head_spec()['labels'] from sequence logits (use an explainer of the task's own plugin)"
    )


def input_embeddings(model):
    """The token-embedding layer (``get_input_embeddings``), also inside wrappers that lack the method."""
    getter = getattr(model, "get_input_embeddings", None)
    if getter is not None:
        with contextlib.suppress(NotImplementedError, AttributeError):
            layer = getter()
            if layer is not None:
                return layer
    for module in model.modules():
        if module is not model and hasattr(module, "get_input_embeddings"):
            return module.get_input_embeddings()
    raise lccore.ConfigError("explain: the model has no token-embedding layer (get_input_embeddings)")
