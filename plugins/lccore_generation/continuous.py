"""Continuous batching for served generation: transformers' ``ContinuousBatchingManager`` runs the
greedy requests of one served run together, a request joining the running batch at the next
decoding step and leaving it when it ends, so concurrent chats share each forward pass instead of
queueing for the model (``lccore serve``; benchmarks/serve_chat.py measures it).

Only what the manager does exactly as ``model.generate`` is sent to it: greedy decoding of a
decoder-only model with sdpa or flash attention (the manager would switch an eager model's
attention for every other caller too). Sampling (a seed per request), beam search, repetition
penalties and encoder-decoder models go through the reasoner's own path, one request at a time.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from typing import Iterator

from lccore import deadline

from .generation import unwrap

log = logging.getLogger("lccore.serve")
#: Tokens one step of the batch reads on the CPU: prompts beyond it are read over several steps.
CPU_BATCH_TOKENS = 512


def applies(predictor, options) -> bool:
    """Whether requests of ``predictor`` with generate ``options`` can be batched continuously."""
    model = unwrap(predictor.model)
    config = getattr(model, "config", None)
    return (
        options.strategy == "greedy" and options.repetition_penalty == 1.0
        and config is not None and not config.is_encoder_decoder
        and getattr(config, "_attn_implementation", None) in ("sdpa", "flash_attention_2", "flash_attention_3")
        and hasattr(model, "init_continuous_batching") and predictor.autocast_dtype in (None, "auto")
    )


class ContinuousBatcher:
    """One manager per served run, started on first use; ``tokens(prompt, ...)`` yields the
    tokens generated so far as the batch makes them. A dispatcher thread hands each result to
    the request it belongs to."""

    def __init__(self, predictor, *, end_ids: list[int], max_new_tokens: int, max_requests: int):
        self.predictor = predictor
        self.end_ids = sorted(end_ids)
        self.max_new_tokens = max_new_tokens
        self.max_requests = max_requests
        self.manager = None
        self.waiting: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        self._dispatcher = None
        self._stopping = threading.Event()

    def _start(self) -> None:
        from transformers import GenerationConfig

        with self._lock:
            if self.manager is not None:
                return
            tokenizer = self.predictor.tokenizer
            settings = GenerationConfig(do_sample=False, max_new_tokens=self.max_new_tokens, eos_token_id=self.end_ids, pad_token_id=tokenizer.pad_token_id)
            model = unwrap(self.predictor.model)
            self.manager = model.init_continuous_batching(generation_config=settings, continuous_batching_config=self.cache_settings(model))
            # The manager's generation thread inherits daemon-ness from the thread that starts it: a
            # daemon, so that a server never closed (an app embedded without its lifespan) cannot
            # keep the interpreter from exiting.
            starter = threading.Thread(target=self.manager.start, name="lccore-serve-cb-start", daemon=True)
            starter.start()
            starter.join()
            self._dispatcher = threading.Thread(target=self._dispatch, name="lccore-serve-cb-results", daemon=True)
            self._dispatcher.start()

    def cache_settings(self, model):
        """The paged cache's size. On an accelerator transformers sizes it from the free memory; on
        the CPU that would be most of the host's RAM (and a prefill of 8,192 tokens a step), so it
        is sized for ``max_requests`` requests of the model's whole context instead."""
        from transformers import ContinuousBatchingConfig

        if model.device.type != "cpu":
            return ContinuousBatchingConfig(max_requests_per_batch=self.max_requests)
        page_size = 32
        context = next((v for v in (getattr(model.config, k, None) for k in ("max_position_embeddings", "n_positions")) if v), 2048)
        pages = -(-min(context, 8192) // page_size)
        return ContinuousBatchingConfig(page_size=page_size, num_blocks=self.max_requests * pages, max_batch_tokens=CPU_BATCH_TOKENS,
                                        max_requests_per_batch=self.max_requests)

    def _dispatch(self) -> None:
        while not self._stopping.is_set():
            result = self.manager.get_result(timeout=0.1)
            if result is None:
                continue
            waiting = self.waiting.get(result.request_id)
            if waiting is not None:
                waiting.put(result)

    def tokens(self, prompt: list[int], max_new_tokens: int) -> Iterator[tuple[list[int], bool]]:
        """``(generated tokens so far, finished)`` until the request ends; the request leaves the
        batch when the caller stops reading or its deadline passes."""
        self._start()
        request_id = f"lccore-{uuid.uuid4().hex}"
        results: queue.Queue = queue.Queue()
        self.waiting[request_id] = results
        finished = False
        try:
            self.manager.add_request(list(prompt), request_id=request_id, max_new_tokens=max_new_tokens, streaming=True, eos_token_id=self.end_ids)
            while not finished:
                try:
                    result = results.get(timeout=0.05)
                except queue.Empty:
                    deadline.check()
                    if not self.manager.is_running():
                        raise RuntimeError("the continuous-batching manager stopped") from None
                    continue
                if result.error:
                    raise RuntimeError(f"continuous batching failed: {result.error}")
                finished = result.is_finished()
                yield list(result.generated_tokens), finished
        finally:
            self.waiting.pop(request_id, None)
            if not finished and self.manager is not None:
                self.manager.cancel_request(request_id)

    def close(self) -> None:
        self._stopping.set()
        if self.manager is not None:
            self.manager.stop(block=True)
            self.manager = None


def stream_text(batcher: ContinuousBatcher, prompt: list[int], tokenizer, max_new_tokens: int, report: dict | None) -> Iterator[str]:
    """The reply's text in pieces, decoded as tokens arrive (a piece goes out once the text so far
    does not end inside a character); ``report`` gets the counts when the reply ends or the reader
    stops early (a stop string: finish_reason ``stop``)."""
    shown, row, ended, complete = "", [], False, False
    try:
        for tokens, finished in batcher.tokens(prompt, max_new_tokens):
            cut = next((i + 1 for i, token in enumerate(tokens) if token in batcher.end_ids), None)
            row, ended = tokens[:cut] if cut else tokens, cut is not None
            text = tokenizer.decode(row, skip_special_tokens=True)
            if len(text) > len(shown) and text.startswith(shown) and not text.endswith("\ufffd"):
                yield text[len(shown):]
                shown = text
            if ended or finished:
                break
        text = tokenizer.decode(row, skip_special_tokens=True)
        if len(text) > len(shown) and text.startswith(shown):
            yield text[len(shown):]
        complete = True
    finally:
        if report is not None:
            stopped = ended or not complete or len(row) < max_new_tokens
            report.update(tokens=len(row), prompt_tokens=len(prompt), finish_reason="stop" if stopped else "length")
