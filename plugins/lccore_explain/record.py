"""The attribution record every explainer returns, and the sub-token -> word aggregation.

One record explains one prediction target of one text: the class a text classifier gave it, or
one entity a tagger found in it. It is a plain JSON-serialisable dict (``Attribution.to_dict``)
so that explainers, the faithfulness metrics, the HTML page and the training probe all read the
same thing. No torch here: records can be read and rendered without a model.
"""

from __future__ import annotations

import bisect
from typing import Optional, Sequence

import attrs

#: Bumped when a field changes meaning; readers can refuse records they do not understand.
FORMAT = "lccore.attribution/1"

#: Between the two texts of a pair where an explainer holds them as one text: no token spans it.
PAIR_SEPARATOR = "\n"


@attrs.frozen
class Word:
    """A word of the text: ``text[start:end]`` and its attribution. In a text pair's record,
    ``field`` says which text the offsets index: ``"text"`` or ``"text_pair"``."""

    text: str
    start: int
    end: int
    score: float
    field: Optional[str] = None


@attrs.frozen
class Token:
    """A model input token inside the text, the word it belongs to (``None``: none) and its own score."""

    text: str
    start: int
    end: int
    word: Optional[int]
    score: float
    field: Optional[str] = None


@attrs.frozen
class Attribution:
    """Why the model gave ``target`` for ``text``: one score per word (positive: pushed the target's
    probability up; negative: down), with the sub-token scores they were summed from."""

    text: str
    text_index: int  # position of the text in the explained batch
    task: str
    target: dict  # {"label": L} for a class; for an entity also text, type, start, end, tag
    prediction: dict  # the task's own prediction record (an entity record for NER)
    target_score: float  # the model's probability of the target on the whole text
    words: tuple[Word, ...]
    tokens: tuple[Token, ...]
    method: str  # the registered explainer name
    baseline: str  # what "absent" means for this method
    notes: tuple[str, ...] = ()
    details: dict = attrs.Factory(dict)  # method-specific numbers (IG convergence delta, SHAP base value)
    cost: dict = attrs.Factory(dict)  # {"model_evaluations": n, "gradient_evaluations": g, "seconds": s}
    text_pair: Optional[str] = None  # the second text of a pair (its words say field "text_pair")

    def to_dict(self) -> dict:
        # a record of one text has no "field" or "text_pair" keys: they exist for pairs
        drop_none = lambda attribute, value: not (attribute.name in ("field", "text_pair") and value is None)  # noqa: E731
        out = attrs.asdict(self, recurse=True, filter=drop_none)
        for key in ("words", "tokens", "notes"):  # JSON arrays are lists
            out[key] = list(out[key])
        return {"format": FORMAT, **out}

    @classmethod
    def from_dict(cls, data: dict) -> "Attribution":
        fields = {f.name for f in attrs.fields(cls)}
        values = {k: v for k, v in data.items() if k in fields}
        values["words"] = tuple(Word(**w) for w in data["words"])
        values["tokens"] = tuple(Token(**t) for t in data.get("tokens", ()))
        values["notes"] = tuple(data.get("notes", ()))
        return cls(**values)


def word_of(position: int, words: Sequence[tuple[int, int]], starts: Sequence[int]) -> Optional[int]:
    """The index of the word whose character span holds ``position`` (``starts``: the words' starts)."""
    index = bisect.bisect_right(starts, position) - 1
    if index >= 0 and words[index][0] <= position < words[index][1]:
        return index
    return None


def aggregate(token_spans: Sequence[Optional[tuple[int, int]]], token_scores: Sequence[float], words: Sequence[tuple[int, int]]) -> tuple[list[float], list[Optional[int]]]:
    """Word scores (the sum of their sub-tokens' scores) and each token's word.

    A token belongs to the word that holds its first character; special tokens (span ``None``)
    and tokens outside every word (a tokenizer's lone space marker) belong to none and are
    dropped, so the word scores add up to the scores of the text's own tokens."""
    starts = [start for start, _ in words]
    scores = [0.0] * len(words)
    owners: list[Optional[int]] = []
    for span, score in zip(token_spans, token_scores):
        owner = None
        if span is not None and span[1] > span[0]:
            owner = word_of(span[0], words, starts)
        owners.append(owner)
        if owner is not None:
            scores[owner] += float(score)
    return scores, owners


def build(
    *, text: str, text_index: int, task: str, target: dict, prediction: dict, target_score: float,
    words: Sequence[tuple[int, int]], token_spans, token_scores, method: str, baseline: str, notes=(), details=None, cost=None,
    pair_start: Optional[int] = None,
) -> Attribution:
    """An :class:`Attribution` from token-level scores, summed into ``words``. ``pair_start``: the
    text is a pair joined by one separator, the second starting there; the record holds the two
    texts apart (``text``, ``text_pair``) and each word and token says which it lies in."""
    scores, owners = aggregate(token_spans, token_scores, words)

    def placed(start: int, end: int) -> tuple[int, int, Optional[str]]:
        if pair_start is None:
            return start, end, None
        if start >= pair_start:
            return start - pair_start, end - pair_start, "text_pair"
        return start, end, "text"

    return Attribution(
        text=text if pair_start is None else text[: pair_start - len(PAIR_SEPARATOR)],
        text_pair=None if pair_start is None else text[pair_start:],
        text_index=text_index,
        task=task,
        target=target,
        prediction=prediction,
        target_score=round(float(target_score), 6),
        words=tuple(Word(text[s:e], *placed(s, e)[:2], _number(score), placed(s, e)[2]) for (s, e), score in zip(words, scores)),
        tokens=tuple(
            Token(text[span[0] : span[1]], *placed(*span)[:2], owner, _number(score), placed(*span)[2])
            for span, owner, score in zip(token_spans, owners, token_scores)
            if span is not None and owner is not None
        ),
        method=method,
        baseline=baseline,
        notes=tuple(notes),
        details=dict(details or {}),
        cost=dict(cost or {}),
    )


def _number(value) -> float:
    return round(float(value), 8)


def top_words(record: dict, count: int) -> list[dict]:
    """The ``count`` words with the largest attribution in absolute value, largest first."""
    return sorted(record["words"], key=lambda w: -abs(w["score"]))[:count]
