"""The `generate` reasoner: text from a run's model, one query, a batch of them, or streamed.

What a query is depends on the run's task: a user message (or a conversation) for `dialogue`,
the source text for `summarization`/`translation`, a plain prompt for anything else (a `clm`
pretraining run). Only decoding strategies that transformers runs offline are offered: greedy,
beam search, sampling and prompt-lookup decoding.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import torch

import lccore
from lccore.data import clip_text

from .generation import context_length, cut_at_end, end_ids, ensure_pad_token, generate, pad_prompts, unwrap


class GenerateReasoner:
    def __init__(self, options):
        self.options = options

    # --- the reasoner contract -------------------------------------------------------------------

    def answer(self, query: Any, *, predictor, graph=None) -> dict:
        """``{"text", "tokens", "prompt_tokens", "finish_reason"}`` for one query; ``finish_reason``
        is ``stop`` (end of text or a stop string) or ``length`` (``max_new_tokens`` reached)."""
        return self.answer_batch([query], predictor)[0]

    def answer_batch(self, queries: list, predictor, *, wheres: list[str] | None = None) -> list[dict]:
        """One answer per query, in order, generated in batches (prompts padded on the left)."""
        wheres = wheres or [f"input {i + 1}" for i in range(len(queries))]
        prompts = [self.prompt_ids(query, predictor, where) for query, where in zip(queries, wheres)]
        # Prompt lookup decoding takes one sequence at a time in transformers.
        size = 1 if self.options.strategy == "prompt_lookup" else predictor.config.train.eval_batch_size
        answers = []
        for start in range(0, len(prompts), size):
            answers += self._generate(prompts[start : start + size], predictor)
        return answers

    def stream(self, query: Any, predictor, report: dict | None = None, batcher=None) -> Iterator[str]:
        """The text of :meth:`answer`, in pieces as the model writes them; once the stream ends,
        ``report`` (a dict, when given) holds the answer's ``tokens``, ``prompt_tokens`` and
        ``finish_reason``. With ``batcher`` (a :class:`lccore_generation.continuous.ContinuousBatcher`
        of this run, from ``lccore serve``), greedy decoding joins the requests running on it."""
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        from . import continuous

        if self.options.strategy == "beam":
            raise lccore.ConfigError("generate.strategy: beam search cannot stream (the best beam is known only at the end); use greedy or sample")
        model, tokenizer = predictor.model, predictor.tokenizer
        [prompt], most = self._fit([self.prompt_ids(query, predictor, "prompt")], predictor)
        if batcher is not None and continuous.applies(predictor, self.options):
            pieces = continuous.stream_text(batcher, prompt, tokenizer, most, report)
            yield from cut_stream(pieces, self.options.stop, drain=False)
            return
        ids, mask = self._batch([prompt], predictor)
        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        turn_ends = self._turn_ends(predictor)
        ends = end_ids(unwrap(model), tokenizer, turn_ends)
        failure, closed = [], threading.Event()

        def stop_when_closed(input_ids, scores, **kwargs):  # the reader went away: stop generating
            return torch.full((input_ids.shape[0],), closed.is_set(), dtype=torch.bool, device=input_ids.device)

        def run() -> None:
            try:
                with self._seeded(predictor), predictor.autocast():
                    sequences = unwrap(model).generate(
                        input_ids=ids, attention_mask=mask, pad_token_id=tokenizer.pad_token_id, streamer=streamer,
                        **({"eos_token_id": sorted(end_ids(unwrap(model), None, turn_ends))} if turn_ends else {}),
                        stopping_criteria=StoppingCriteriaList([stop_when_closed]), **self.settings(tokenizer, most),
                    )
                if report is not None:
                    start = 1 if unwrap(model).config.is_encoder_decoder else ids.shape[1]
                    row, ended = cut_at_end(sequences[0, start:].tolist(), ends, tokenizer.pad_token_id)
                    text, stopped = cut_text(tokenizer.decode(row, skip_special_tokens=True), self.options.stop)
                    report.update(self._record(text, row, ended or stopped, len(prompt), most))
            except Exception as exc:  # re-raised in the caller's thread
                failure.append(exc)
                streamer.end()

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        try:
            yield from cut_stream(streamer, self.options.stop)
        finally:  # also when the caller closes the stream early (a policy blocked it, a client left)
            closed.set()
            thread.join()
        if failure:
            raise failure[0]

    # --- prompts ---------------------------------------------------------------------------------

    def prompt_ids(self, query: Any, predictor, where: str) -> list[int]:
        """Token ids of the prompt the run's task makes of ``query``."""
        if not predictor.can_generate():  # a classifier, a tagger, a masked LM: no text to write
            raise lccore.ConfigError(
                f"{predictor.run_dir}: a {predictor.config.task.name} run's model does not generate text; "
                "generate needs a dialogue, summarization, translation or clm run"
            )
        task, tokenizer = predictor.task, predictor.tokenizer
        ensure_pad_token(tokenizer)
        if hasattr(task, "generation_prompt"):  # dialogue, summarization, translation
            return task.generation_prompt(query, tokenizer, predictor.config.train.max_length, where)
        if isinstance(query, dict):
            query = query.get("prompt", query.get("text"))
        if not isinstance(query, str):
            raise lccore.DataError(f"{where}: expected a prompt (a string, or an object with a string 'prompt')")
        context = context_length(unwrap(predictor.model))
        ids = tokenizer(clip_text(query, context, keep="end") if context else query)["input_ids"]  # what _fit could keep, not more
        if not ids:
            raise lccore.DataError(f"{where}: the prompt is empty")
        return ids

    # --- generation ------------------------------------------------------------------------------

    def settings(self, tokenizer, max_new_tokens: int) -> dict:
        """``model.generate`` keyword arguments for the chosen strategy."""
        o = self.options
        settings = {"max_new_tokens": max_new_tokens, "repetition_penalty": o.repetition_penalty, "do_sample": o.strategy == "sample", "num_beams": 1}
        if o.strategy == "sample":
            settings.update(temperature=o.temperature, top_k=o.top_k or 0, top_p=o.top_p)  # top_k 0: no limit
        elif o.strategy == "beam":
            settings.update(num_beams=o.num_beams, early_stopping=True)
        elif o.strategy == "prompt_lookup":
            settings.update(prompt_lookup_num_tokens=o.prompt_lookup_tokens)
        if o.stop:
            settings.update(stop_strings=list(o.stop), tokenizer=tokenizer)
        return settings

    def _batch(self, prompts: list[list[int]], predictor):
        ids, mask = pad_prompts(prompts, predictor.tokenizer, unwrap(predictor.model).config.is_encoder_decoder)
        return ids.to(predictor.device), mask.to(predictor.device)

    def _generate(self, prompts: list[list[int]], predictor) -> list[dict]:
        tokenizer = predictor.tokenizer
        prompts, most = self._fit(prompts, predictor)
        ids, mask = self._batch(prompts, predictor)
        with torch.inference_mode(), self._seeded(predictor), predictor.autocast():
            rows = generate(predictor.model, tokenizer, ids, mask, extra_ends=self._turn_ends(predictor), **self.settings(tokenizer, most))
        answers = []
        for prompt, (row, ended) in zip(prompts, rows):
            text, stopped = cut_text(tokenizer.decode(row, skip_special_tokens=True), self.options.stop)
            answers.append(self._record(text, row, ended or stopped, len(prompt), most))
        return answers

    def _fit(self, prompts: list[list[int]], predictor) -> tuple[list[list[int]], int]:
        """The prompts and the most tokens to write, within the model's context (past it, a
        position has no embedding: the model failed with an IndexError). A prompt that leaves less
        room than ``max_new_tokens`` loses its oldest tokens, down to half the context (as
        transformers' pipelines do with ``handle_long_generation="hole"``); if the room left is
        still short, fewer tokens are written and the answer ends with ``finish_reason: length``."""
        wanted, model = self.options.max_new_tokens, unwrap(predictor.model)
        context = context_length(model)
        if context is None:
            return prompts, wanted
        if model.config.is_encoder_decoder:  # the prompt goes to the encoder: only the reply takes decoder positions
            return prompts, min(wanted, context - 1)
        keep = max(context - wanted, context // 2)
        prompts = [prompt[-keep:] for prompt in prompts]
        return prompts, max(1, min(wanted, context - max(len(prompt) for prompt in prompts)))

    def _record(self, text: str, row: list[int], ended: bool, prompt_tokens: int, most: int) -> dict:
        finished = ended or len(row) < most
        return {"text": text, "tokens": len(row), "prompt_tokens": prompt_tokens, "finish_reason": "stop" if finished else "length"}

    @staticmethod
    def _turn_ends(predictor) -> list[int]:
        """A chat run's end-of-turn token (the task knows its template), besides end-of-text."""
        ends = getattr(predictor.task, "end_token_ids", None)
        return list(ends(predictor.tokenizer)) if callable(ends) else []

    def _seeded(self, predictor):
        """Sampling from ``seed`` without disturbing the caller's random state."""
        if self.options.seed is None:
            return contextlib.nullcontext()
        return _fork_and_seed(self.options.seed, predictor.device)



@contextlib.contextmanager
def _fork_and_seed(seed: int, device):
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


def cut_text(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string; True when one was found."""
    positions = [text.find(stop) for stop in stops if stop and stop in text]
    return (text[: min(positions)], True) if positions else (text, False)


def cut_stream(pieces, stops: list[str], drain: bool = True) -> Iterator[str]:
    """Pass text pieces on, ending before the first stop string. The tail that could still be the
    beginning of a stop string is held back until the next piece tells. ``drain``: read the
    source to its end after a stop string (a generation thread that stops there too); else close
    it then, or when the reader stops early (a request leaving a running batch)."""
    stops = [s for s in stops if s]
    hold = max((len(s) for s in stops), default=1) - 1
    pending = ""
    try:
        for piece in pieces:
            pending += piece
            text, stopped = cut_text(pending, stops)
            if stopped:
                if text:
                    yield text
                if drain:
                    for _ in pieces:  # let generation finish (it stops at the string too)
                        pass
                return
            safe = len(pending) - hold
            if safe > 0:
                yield pending[:safe]
                pending = pending[safe:]
        if pending:
            yield pending
    finally:
        if not drain and hasattr(pieces, "close"):
            pieces.close()
