"""The generation plugin's HTTP endpoints (``register_routes``, served by ``lccore serve``):
``POST /v1/generate``, lccore's own, streamed as server-sent events; and the OpenAI-compatible
``/v1/chat/completions`` and ``/v1/completions`` (:mod:`.openai_api`)."""

# No `from __future__ import annotations`: FastAPI reads the route annotations.
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

from lccore import LccoreError

from .openai_api import add_openai_routes
from .streaming import STREAM_HEADERS, _event, _failure, _option_error, _prompt_error, open_stream


def add_routes(server) -> None:
    from fastapi import HTTPException
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel, Field

    producers: set = set()  # the streamed generations running
    # Greedy generation of each served decoder-only run is batched continuously (transformers'
    # manager, started on first use); a stream waits on it in a thread of its own, not the model's.
    continuous = continuous_batchers(server)
    streams = ThreadPoolExecutor(max_workers=server.limits.max_queue, thread_name_prefix="lccore-serve-stream")
    server.on_shutdown(lambda: [batcher.close() for batcher in continuous.values()])
    server.on_shutdown(lambda: streams.shutdown(wait=False, cancel_futures=True))

    class GenerateRequest(BaseModel):
        prompt: Any = Field(description="a user message, a source text or a plain prompt (a string), or an object the run's task reads, e.g. {\"messages\": [...]}")
        model: Optional[str] = Field(None, description="the run's name; optional when one run is served")
        options: dict[str, Any] = Field(default_factory=dict, description="the generate reasoner's options: strategy, max_new_tokens, temperature, top_k, top_p, num_beams, stop, seed, ...")
        stream: bool = Field(False, description="answer with server-sent events, one per piece of text")

    class GenerateResponse(BaseModel):
        model: str
        output: dict[str, Any] = Field(description="{text, tokens, finish_reason}, or a refusal record {refused, stage, decision, reasons}")

    @server.router.post("/v1/generate", response_model=GenerateResponse,
              responses={200: {"content": {"text/event-stream": {}}, "description": "with \"stream\": true, server-sent events: `data: {\"text\"}` per piece, then `event: done` (or `event: refusal`, `event: error`)"}})
    async def generate(body: GenerateRequest):
        """Text from a generative run (dialogue, summarization, translation, clm) through the
        `generate` reasoner, behind the run's ethics policies; streamed as server-sent events."""
        until = server.deadline()
        name = server.pick(body.model)
        predictor = server.predictors[name]
        if not predictor.can_generate():
            raise HTTPException(422, f"model: run '{name}' ({predictor.config.task.name}) has no model that generates text; serve a dialogue, summarization, translation or clm run")
        if isinstance(body.prompt, str) and not body.prompt.strip():
            raise HTTPException(422, "prompt: empty")
        server.check_size(body.prompt, "prompt")
        server.check_size(body.options, "options")
        for key, most, flag in (("max_new_tokens", server.limits.max_new_tokens, "--max-new-tokens"), ("num_beams", server.limits.max_num_beams, "--max-num-beams")):
            value = body.options.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > most:
                raise HTTPException(422, f"options.{key}: at most {most} on this server ({flag}), got {value}")
        try:
            reasoner = predictor.reasoner("generate", **body.options)
        except LccoreError as exc:  # e.g. "generate.max_new_token: unknown key ..."
            raise HTTPException(422, _option_error(exc)) from None
        if body.stream:
            return await stream_generation(name, reasoner, body.prompt, until)
        try:
            output = await server.timed(server.in_model_thread(name, reasoner.answer, body.prompt, until=until), until)
        except LccoreError as exc:  # a prompt the task cannot read, an option the strategy refuses
            raise HTTPException(422, _prompt_error(exc)) from None
        return {"model": name, "output": output}

    async def stream_generation(name: str, reasoner, prompt, until: float):
        """``/v1/generate`` streamed: server-sent events, one per piece of text, then ``done``
        (or ``refusal``, ``error``)."""
        first, next_item, stop = await open_stream(server, name, reasoner, prompt, until, producers=producers, continuous=continuous, streams=streams)

        async def events():
            item = first
            try:
                while True:
                    kind, value = item
                    if kind == "end":
                        yield _event("done", {"model": name})
                        return
                    if kind == "error":
                        yield _event("error", {"detail": _failure(value)})
                        return
                    if isinstance(value, dict):  # a policy blocked the prompt or a sentence
                        yield _event("refusal", value)
                        return
                    yield _event(None, {"text": value})
                    item = await next_item()
            finally:  # done, refused, timed out, or the client left: stop the generation
                stop.set()

        return StreamingResponse(events(), media_type="text/event-stream", headers=STREAM_HEADERS)

    add_openai_routes(server, producers, continuous, streams)


def continuous_batchers(server) -> dict:
    """A continuous batcher for each served run that generates with a decoder-only model."""
    from .continuous import ContinuousBatcher
    from .generation import end_ids, unwrap
    from .reasoner import GenerateReasoner

    batchers = {}
    for name, predictor in server.predictors.items():
        if predictor.can_generate() and not getattr(unwrap(predictor.model).config, "is_encoder_decoder", True):
            ends = end_ids(unwrap(predictor.model), predictor.tokenizer, GenerateReasoner._turn_ends(predictor))
            batchers[name] = ContinuousBatcher(predictor, end_ids=sorted(ends), max_new_tokens=server.limits.max_new_tokens,
                                               max_requests=server.limits.max_batch_size)
    return batchers
