"""OpenAI's Responses API, ``POST /v1/responses``: what the openai client's ``client.responses.create``
calls (and vLLM and ``transformers serve`` answer), for dialogue runs. ``input`` (a user message, or
a list of messages whose content is a string or ``input_text`` parts) and ``instructions`` (a
system message before them) are rendered with the chat template the run trained with; the answer
is a ``response`` object, or its typed events when streamed (``response.created``, ...,
``response.output_text.delta`` per piece, ..., ``response.completed``).

lccore keeps nothing between requests: ``previous_response_id``, ``conversation``, ``background``
and stored ``prompt`` templates are refused (send the whole conversation in ``input``), ``store``
is read as false, and there is no ``GET /v1/responses/{id}``. Sampling, the fields refused rather
than ignored, batching and the run's ethics policies are those of chat completions; a reply cut by
``max_output_tokens`` or by a policy is ``status: "incomplete"`` with the reason.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations.
import itertools
import time
import uuid
from types import SimpleNamespace
from typing import Any, Optional, Union

from .streaming import _event

#: Fields that need what lccore serve does not keep: stored responses, conversations, prompts, jobs.
STATEFUL = ("previous_response_id", "conversation", "background", "prompt")
#: Why a reply is incomplete, by the finish reason of the answer.
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def add_responses_route(server, *, refuse, options_for, reasoner_for, generative, chat_messages, answer_all, choice_of, stream_events) -> None:
    """``POST /v1/responses`` on ``server``, answered with the chat completions' helpers."""
    from pydantic import BaseModel, ConfigDict, Field

    class ResponsesRequest(BaseModel):
        model_config = ConfigDict(extra="allow")  # fields lccore does not read are tolerated
        model: str = Field(description="the run's name (GET /v1/models)")
        input: Union[str, list[Any]] = Field(description="a user message, or messages [{role, content: a string or input_text parts}]")
        instructions: Optional[str] = Field(None, description="a system message put before the input")
        max_output_tokens: Optional[int] = Field(None, description="most tokens generated (default: the generate reasoner's, 64)")
        temperature: Optional[float] = Field(None, description="0 to 2; above 0 samples; absent or 0: greedy")
        top_p: Optional[float] = Field(None, description="nucleus sampling mass, above 0 and at most 1")
        stream: bool = Field(False, description="answer with the response's server-sent events")

    def read_input(body) -> list[dict]:
        if isinstance(body.input, str):
            if not body.input.strip():
                raise refuse(422, "input: empty; send a user message")
            items = [{"role": "user", "content": body.input}]
        else:
            items = body.input
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("type", "message") != "message":
                raise refuse(422, f"input[{i}]: only messages are read, got an item of type {item.get('type')!r} (tool calls are not supported)")
        messages = chat_messages(items, "input", text_parts=("input_text", "output_text", "text"))
        return ([{"role": "system", "content": body.instructions}] if body.instructions else []) + messages

    def check_fields(extra: dict) -> None:
        for field in STATEFUL:
            if extra.get(field):
                raise refuse(422, f"{field}: lccore serve keeps no responses or conversations between requests; send the whole conversation in input")
        text = extra.get("text")
        form = text.get("format") if isinstance(text, dict) else None
        if form is not None and not (isinstance(form, dict) and form.get("type") == "text"):
            raise refuse(422, 'text.format: only {"type": "text"} is supported by lccore serve')
        if any("logprobs" in str(item) for item in extra.get("include") or []):
            raise refuse(422, "include: log-probabilities are not returned by lccore serve")

    @server.router.post("/v1/responses", responses={200: {"content": {"text/event-stream": {}}, "description": "with \"stream\": true, the response's typed events"}})
    async def responses(body: ResponsesRequest):
        """OpenAI's Responses API for a dialogue run: the input rendered with the chat template
        the run was trained with, the reply ending at its end-of-turn token; nothing is stored."""
        until = server.deadline()
        name = server.pick(body.model)
        predictor = generative(name)
        if not hasattr(predictor.task, "template"):
            raise refuse(422, f"model: run '{name}' ({predictor.config.task.name}) was not trained on conversations; use /v1/completions")
        extra = body.model_extra or {}
        check_fields(extra)
        messages = read_input(body)
        server.check_size(messages, "input")
        sampling = SimpleNamespace(model_extra=extra, n=1, stream=body.stream, temperature=body.temperature, top_p=body.top_p, stop=None, seed=None)
        reasoner = reasoner_for(name, options_for(sampling, body.max_output_tokens, "max_output_tokens"))
        ids = {"response": f"resp_{uuid.uuid4().hex}", "message": f"msg_{uuid.uuid4().hex}", "created": int(time.time())}
        if body.stream:
            return await stream_response(name, reasoner, messages, until, body, ids)
        answer = (await answer_all(name, reasoner, [messages], ["input"], "input", until))[0]
        text, finish = choice_of(answer, "input")
        counts = {"prompt_tokens": answer.get("prompt_tokens", 0), "completion_tokens": answer.get("tokens", 0)}
        return response_object(ids, name, body, text=text, finish=finish, counts=counts)

    async def stream_response(name, reasoner, messages, until, body, ids):
        numbers = itertools.count()

        def event(kind: str, **data) -> str:
            return _event(kind, {"type": kind, "sequence_number": next(numbers), **data})

        where = {"item_id": ids["message"], "output_index": 0, "content_index": 0}

        def opening() -> list[str]:
            started = response_object(ids, name, body, text=None, finish=None, counts=None)
            return [event("response.created", response=started), event("response.in_progress", response=started),
                    event("response.output_item.added", output_index=0, item=message_item(ids["message"], None, "in_progress")),
                    event("response.content_part.added", **where, part=text_part(""))]

        def closing(finish: str, counts: dict, text: str) -> list[str]:
            final = response_object(ids, name, body, text=text, finish=finish, counts=counts)
            return [event("response.output_text.done", **where, text=text, logprobs=[]),
                    event("response.content_part.done", **where, part=text_part(text)),
                    event("response.output_item.done", output_index=0, item=final["output"][0]),
                    event("response.completed" if final["status"] == "completed" else "response.incomplete", response=final)]

        def failure(status: int, message: str) -> str:
            return event("error", code="timeout" if status == 504 else "server_error" if status == 500 else "invalid_request", message=message, param=None)

        return await stream_events(name, reasoner, messages, until, field="input", opening=opening, closing=closing, failure=failure,
                                   delta=lambda text: event("response.output_text.delta", **where, delta=text, logprobs=[]))


def response_object(ids: dict, name: str, body, *, text: Optional[str], finish: Optional[str], counts: Optional[dict]) -> dict:
    """The ``response`` object: in progress (``text`` None), completed, or incomplete with the reason."""
    status = "in_progress" if text is None else "completed" if finish == "stop" else "incomplete"
    output = [] if text is None else [message_item(ids["message"], text, "completed" if status == "completed" else "incomplete")]
    usage = None if counts is None else {
        "input_tokens": counts["prompt_tokens"], "input_tokens_details": {"cached_tokens": 0}, "output_tokens": counts["completion_tokens"],
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": counts["prompt_tokens"] + counts["completion_tokens"]}
    return {"id": ids["response"], "object": "response", "created_at": ids["created"], "status": status, "error": None,
            "incomplete_details": {"reason": INCOMPLETE.get(finish, finish)} if status == "incomplete" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": name, "output": output,
            "parallel_tool_calls": False, "previous_response_id": None, "store": False, "temperature": body.temperature,
            "text": {"format": {"type": "text"}}, "tool_choice": "none", "tools": [], "top_p": body.top_p, "truncation": "disabled",
            "usage": usage, "metadata": {}}


def message_item(message_id: str, text: Optional[str], status: str) -> dict:
    return {"id": message_id, "type": "message", "status": status, "role": "assistant", "content": [] if text is None else [text_part(text)]}


def text_part(text: str) -> dict:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
