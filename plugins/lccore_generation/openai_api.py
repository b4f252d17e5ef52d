"""OpenAI-compatible endpoints for generative runs: ``POST /v1/chat/completions`` (dialogue runs,
rendered with the chat template the run was trained with) and ``POST /v1/completions`` (any
generative run: the prompt is the run's query, as for ``/v1/generate``), answered and streamed in
OpenAI's formats so that the official ``openai`` client, and the tools built on it, talk to a
fine-tuned lccore run unchanged; ``POST /v1/responses`` (:mod:`.responses_api`) with the same helpers.

Sampling follows the request: ``temperature`` above 0 (or ``top_p`` below 1) samples, otherwise
decoding is greedy, which is also what a request without them gets (OpenAI samples at 1.0 by
default; a fine-tuned model's own best reply is the better default for a served run). Fields that
would change the answer and that lccore cannot honour (tools, logprobs, penalties, a JSON
response format) are refused with a one-line 422 rather than ignored; any other field is tolerated.
The run's ethics policies guard both endpoints: a blocked input is a 400 with the code
``content_policy_violation``; a blocked sentence of the answer ends its choice with
``finish_reason: "content_filter"``; redacted text is sent redacted, in streams too.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations.
import time
import uuid
from typing import Any, Optional, Union

from lccore import LccoreError, TimeLimitError

from .responses_api import add_responses_route
from .streaming import STREAM_HEADERS, _event, _failure, _prompt_error, open_stream

#: Most choices (``n``) one request may ask for.
MAX_CHOICES = 8
#: OpenAI's own limit on stop strings.
MAX_STOPS = 4
#: OpenAI's role for instructions, read as the system message.
ROLE_ALIASES = {"developer": "system"}
CHAT_ROLES = ("system", "developer", "user", "assistant")


def add_openai_routes(server, producers: set, continuous: dict, streams) -> None:
    from fastapi import HTTPException
    from fastapi.responses import StreamingResponse
    from pydantic import BaseModel, ConfigDict, Field

    from .continuous import applies

    class Sampling(BaseModel):
        model_config = ConfigDict(extra="allow")  # fields lccore does not read are tolerated
        model: str = Field(description="the run's name (GET /v1/models)")
        max_tokens: Optional[int] = Field(None, description="most tokens generated per choice (default: the generate reasoner's, 64)")
        temperature: Optional[float] = Field(None, description="0 to 2; above 0 samples; absent or 0: greedy")
        top_p: Optional[float] = Field(None, description="nucleus sampling mass, above 0 and at most 1")
        n: int = Field(1, description=f"choices per prompt, 1 to {MAX_CHOICES}")
        stop: Union[str, list[str], None] = Field(None, description=f"up to {MAX_STOPS} strings that end a choice (not included)")
        seed: Optional[int] = Field(None, description="makes sampling reproducible")
        stream: bool = Field(False, description="answer with server-sent events, ending with data: [DONE]")
        stream_options: Optional[dict[str, Any]] = Field(None, description="{\"include_usage\": true}: a last chunk with the token counts")

    class ChatRequest(Sampling):
        messages: list[Any] = Field(description="[{role: system|developer|user|assistant, content: a string or text parts}]")
        max_completion_tokens: Optional[int] = Field(None, description="the newer name of max_tokens (wins when both are given)")

    class CompletionRequest(Sampling):
        prompt: Any = Field(description="a prompt, or a list of prompts (not when streaming)")

    def refuse(status: int, detail: str, code: Optional[str] = None):
        error = HTTPException(status, detail)
        error.code = code  # read by the serve plugin's error body (OpenAI's error.code)
        return error

    def options_for(body, most_tokens: Optional[int], tokens_field: Optional[str] = None) -> dict:
        """The generate reasoner's options for a request's sampling fields; ``tokens_field``: the
        name its token limit came under (default: chat's and completions' own)."""
        extra = body.model_extra or {}
        for field in ("tools", "functions"):
            if extra.get(field):
                raise refuse(422, f"{field}: tool and function calls are not supported by lccore serve")
        for field in ("tool_choice", "function_call"):  # "auto" with no tools is what many clients send
            if extra.get(field) not in (None, "none", "auto"):
                raise refuse(422, f"{field}: tool and function calls are not supported by lccore serve")
        if extra.get("logprobs") not in (None, False, 0) or extra.get("top_logprobs") not in (None, 0):
            raise refuse(422, "logprobs: log-probabilities are not returned by lccore serve")
        for field in ("frequency_penalty", "presence_penalty"):
            if extra.get(field) not in (None, 0, 0.0):
                raise refuse(422, f"{field}: not supported by lccore serve (send 0 or leave it out)")
        if extra.get("logit_bias"):
            raise refuse(422, "logit_bias: not supported by lccore serve")
        response_format = extra.get("response_format")
        if response_format is not None and not (isinstance(response_format, dict) and response_format.get("type") == "text"):
            raise refuse(422, "response_format: only {\"type\": \"text\"} is supported by lccore serve")
        if not 1 <= body.n <= MAX_CHOICES:
            raise refuse(422, f"n: must be between 1 and {MAX_CHOICES}, got {body.n}")
        if body.stream and body.n > 1:
            raise refuse(422, "n: one choice per streamed request")
        options: dict = {}
        if most_tokens is not None:
            field = tokens_field or ("max_completion_tokens" if getattr(body, "max_completion_tokens", None) is not None else "max_tokens")
            if most_tokens < 1:
                raise refuse(422, f"{field}: must be at least 1, got {most_tokens}")
            if most_tokens > server.limits.max_new_tokens:
                raise refuse(422, f"{field}: at most {server.limits.max_new_tokens} on this server (--max-new-tokens), got {most_tokens}")
            options["max_new_tokens"] = most_tokens
        if body.temperature is not None and not 0 <= body.temperature <= 2:
            raise refuse(422, f"temperature: must be between 0 and 2, got {body.temperature:g}")
        if body.top_p is not None and not 0 < body.top_p <= 1:
            raise refuse(422, f"top_p: must be above 0 and at most 1, got {body.top_p:g}")
        if (body.temperature or 0) > 0 or (body.top_p is not None and body.top_p < 1):
            options.update(strategy="sample", temperature=max(body.temperature if body.temperature is not None else 1.0, 0.01), top_p=body.top_p or 1.0)
        stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stops) > MAX_STOPS:
            raise refuse(422, f"stop: at most {MAX_STOPS} stop strings, got {len(stops)}")
        if any(not stop for stop in stops):
            raise refuse(422, "stop: an empty stop string")
        if stops:
            options["stop"] = stops
        if body.seed is not None:
            options["seed"] = body.seed
        return options

    def reasoner_for(name: str, options: dict):
        try:
            return server.predictors[name].reasoner("generate", **options)
        except LccoreError as exc:  # "generate.seed: must be at least 0, ..."
            message = str(exc)
            for prefix in ("reasoner.generate.", "generate."):
                if message.startswith(prefix):
                    message = message[len(prefix):]
            raise refuse(422, message) from None

    def generative(name: str):
        predictor = server.predictors[name]
        if not predictor.can_generate():
            raise refuse(422, f"model: run '{name}' ({predictor.config.task.name}) has no model that generates text; serve a dialogue, summarization, translation or clm run")
        return predictor

    def chat_messages(messages: list, field: str = "messages", text_parts: tuple = ("text",)) -> list[dict]:
        """OpenAI's messages as the dialogue task reads them: text parts (of a type in
        ``text_parts``) joined, ``developer`` as ``system``; anything lccore cannot render is a
        one-line 422 naming the message (``field[i]``)."""
        if not messages:
            raise refuse(422, f"{field}: empty; send at least one user message")
        read = []
        for i, message in enumerate(messages):
            if not isinstance(message, dict):
                raise refuse(422, f"{field}[{i}]: expected an object with 'role' and 'content'")
            role, content = message.get("role"), message.get("content")
            if role not in CHAT_ROLES:
                raise refuse(422, f"{field}[{i}].role: must be one of {', '.join(CHAT_ROLES)}, got {role!r} (tool messages are not supported)")
            if isinstance(content, list):
                texts = []
                for j, part in enumerate(content):
                    if not isinstance(part, dict) or part.get("type") not in text_parts or not isinstance(part.get("text"), str):
                        raise refuse(422, f"{field}[{i}].content[{j}]: only text parts ({{\"type\": \"{text_parts[0]}\", \"text\": ...}}) are read")
                    texts.append(part["text"])
                content = "\n".join(texts)
            if not isinstance(content, str):
                raise refuse(422, f"{field}[{i}].content: expected a string or a list of text parts")
            read.append({"role": ROLE_ALIASES.get(role, role), "content": content})
        if read[-1]["role"] == "assistant":
            raise refuse(422, f"{field}[{len(read) - 1}]: the last message is the assistant's; send the conversation up to a user message")
        if not any(m["role"] == "user" for m in read):
            raise refuse(422, f"{field}: no user message")
        return read

    def usage(prompt_tokens: int, completion_tokens: int) -> dict:
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}

    def choice_of(answer: dict, field: str) -> tuple[str, str]:
        """(text, finish_reason) of one answer record; a blocked input is a 400."""
        if answer.get("refused"):
            if answer.get("stage") == "input":
                raise refuse(400, f"{field}: refused by the ethics policies: {'; '.join(answer['reasons'])}", "content_policy_violation")
            return "", "content_filter"
        return answer["text"], answer["finish_reason"]

    def batched_continuously(name: str, reasoner) -> bool:
        options = getattr(getattr(reasoner, "reasoner", reasoner), "options", None)
        return name in continuous and options is not None and applies(server.predictors[name], options)

    async def answer_all(name: str, reasoner, queries: list, wheres: list, field: str, until: float) -> list[dict]:
        if len(queries) == 1 and batched_continuously(name, reasoner):  # joins the run's running batch
            return [await answer_streamed(name, reasoner, queries[0], field, until)]
        try:
            return await server.timed(server.in_model_thread(name, reasoner.answer_batch, queries, wheres=wheres, until=until), until)
        except LccoreError as exc:  # a conversation the template cannot render, a prompt too long
            raise refuse(422, _prompt_error(exc, field)) from None

    @server.router.post("/v1/chat/completions", responses={200: {"content": {"text/event-stream": {}}, "description": "with \"stream\": true, chat.completion.chunk events, then data: [DONE]"}})
    async def chat_completions(body: ChatRequest):
        """OpenAI's chat completions for a dialogue run: the conversation is rendered with the chat
        template the run was trained with, and the reply ends at its end-of-turn token."""
        until = server.deadline()
        name = server.pick(body.model)
        predictor = generative(name)
        if not hasattr(predictor.task, "template"):
            raise refuse(422, f"model: run '{name}' ({predictor.config.task.name}) was not trained on conversations; use /v1/completions")
        messages = chat_messages(body.messages)
        server.check_size(messages, "messages")
        most = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
        reasoner = reasoner_for(name, options_for(body, most))
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return await stream_choices(name, reasoner, messages, until, field="messages", include_usage=_include_usage(body),
                                        frame=lambda delta, finish: _chunk(completion_id, created, name, "chat.completion.chunk",
                                                                           {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}),
                                        first_delta={"role": "assistant", "content": ""}, piece=lambda text: {"content": text},
                                        usage_frame=lambda counts: _chunk(completion_id, created, name, "chat.completion.chunk", None, usage=counts))
        answers = await answer_all(name, reasoner, [messages] * body.n, ["messages"] * body.n, "messages", until)
        choices = []
        for index, answer in enumerate(answers):
            text, finish = choice_of(answer, "messages")
            choices.append({"index": index, "message": {"role": "assistant", "content": text, "refusal": None}, "logprobs": None, "finish_reason": finish})
        prompt_tokens = next((a["prompt_tokens"] for a in answers if "prompt_tokens" in a), 0)
        return {"id": completion_id, "object": "chat.completion", "created": created, "model": name, "choices": choices,
                "usage": usage(prompt_tokens, sum(a.get("tokens", 0) for a in answers))}

    @server.router.post("/v1/completions", responses={200: {"content": {"text/event-stream": {}}, "description": "with \"stream\": true, text_completion events, then data: [DONE]"}})
    async def completions(body: CompletionRequest):
        """OpenAI's (legacy) completions for any generative run: each prompt is the run's query,
        as for /v1/generate (a plain prompt for a clm run, the source text for summarization or
        translation, a user message for a dialogue run)."""
        until = server.deadline()
        name = server.pick(body.model)
        generative(name)
        extra = body.model_extra or {}
        if extra.get("echo"):
            raise refuse(422, "echo: not supported by lccore serve")
        if extra.get("suffix"):
            raise refuse(422, "suffix: not supported by lccore serve")
        if extra.get("best_of") not in (None, 1):
            raise refuse(422, "best_of: not supported by lccore serve (one candidate per choice: send 1 or leave it out)")
        if type(extra.get("logprobs")) is int:  # completions' logprobs: 0 still asks for the chosen tokens' log-probabilities
            raise refuse(422, "logprobs: log-probabilities are not returned by lccore serve")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise refuse(422, "prompt: a string or a list of strings (token arrays are not read)")
        if not prompts or len(prompts) > server.limits.max_inputs:
            raise refuse(422 if not prompts else 413, f"prompt: between 1 and {server.limits.max_inputs} prompts per request, got {len(prompts)}")
        for i, prompt in enumerate(prompts):
            if not prompt.strip():
                raise refuse(422, f"prompt{'' if isinstance(body.prompt, str) else f'[{i}]'}: empty")
            server.check_size(prompt, "prompt" if isinstance(body.prompt, str) else f"prompt[{i}]")
        if body.stream and len(prompts) > 1:
            raise refuse(422, "prompt: one prompt per streamed request")
        reasoner = reasoner_for(name, options_for(body, body.max_tokens))
        completion_id, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        if body.stream:
            return await stream_choices(name, reasoner, prompts[0], until, field="prompt", include_usage=_include_usage(body),
                                        frame=lambda delta, finish: _chunk(completion_id, created, name, "text_completion",
                                                                           {"index": 0, "text": delta.get("text", ""), "logprobs": None, "finish_reason": finish}),
                                        first_delta=None, piece=lambda text: {"text": text},
                                        usage_frame=lambda counts: _chunk(completion_id, created, name, "text_completion", None, usage=counts))
        wheres = ["prompt" if isinstance(body.prompt, str) else f"prompt[{i}]" for i in range(len(prompts)) for _ in range(body.n)]
        answers = await answer_all(name, reasoner, [p for p in prompts for _ in range(body.n)], wheres, "prompt", until)
        choices = []
        for index, (answer, where) in enumerate(zip(answers, wheres)):
            text, finish = choice_of(answer, where)
            choices.append({"index": index, "text": text, "logprobs": None, "finish_reason": finish})
        prompt_tokens = sum(a.get("prompt_tokens", 0) for a in answers[:: body.n])
        return {"id": completion_id, "object": "text_completion", "created": created, "model": name, "choices": choices,
                "usage": usage(prompt_tokens, sum(a.get("tokens", 0) for a in answers))}

    async def answer_streamed(name: str, reasoner, query, field: str, until: float) -> dict:
        """One answer record made from the stream (the continuous batcher streams), with the same
        policies: a blocked input is a refusal record, a blocked sentence blanks the answer."""
        report: dict = {}
        first, next_item, stop = await open_stream(server, name, reasoner, query, until, producers=producers, field=field, report=report,
                                                   continuous=continuous, streams=streams)
        item, text = first, ""
        try:
            while True:
                kind, value = item
                if kind == "end":
                    return {"text": text, "tokens": report.get("tokens", 0), "prompt_tokens": report.get("prompt_tokens", 0),
                            "finish_reason": report.get("finish_reason", "stop")}
                if kind == "error":
                    status = 504 if isinstance(value, TimeLimitError) else 422 if isinstance(value, LccoreError) else 500
                    raise refuse(status, _failure(value, field))
                if isinstance(value, dict):  # a refusal record, as answer_batch gives it
                    return {**value, "tokens": report.get("tokens", 0), "prompt_tokens": report.get("prompt_tokens", 0)}
                text += value
                item = await next_item()
        finally:
            stop.set()

    async def stream_choices(name, reasoner, query, until, *, field, include_usage, frame, first_delta, piece, usage_frame):
        """One choice as chat completions and completions stream it: ``frame(delta, None)`` per
        piece of text, then ``frame({}, finish_reason)``, the usage when asked, and ``data: [DONE]``."""
        def closing(finish: str, counts: dict, text: str) -> list[str]:
            return [frame({}, finish), *([usage_frame(counts)] if include_usage else []), "data: [DONE]\n\n"]

        def failure(status: int, message: str) -> str:
            return _event(None, {"error": {"message": message, "type": "timeout_error" if status == 504 else "server_error" if status == 500 else "invalid_request_error",
                                           "param": None, "code": "timeout" if status == 504 else None}})

        return await stream_events(name, reasoner, query, until, field=field, opening=lambda: [frame(first_delta, None)] if first_delta is not None else [],
                                   delta=lambda text: frame(piece(text), None), closing=closing, failure=failure)

    async def stream_events(name, reasoner, query, until, *, field, opening, delta, closing, failure):
        """The reasoner's answer to ``query`` as server-sent events: ``opening()``, ``delta(text)``
        per piece, ``closing(finish_reason, usage, whole text)``; an error met after the stream
        began is ``failure(status, message)``. A blocked input is a plain 400 before the stream
        starts; a blocked sentence ends it with ``content_filter``."""
        report: dict = {}
        first, next_item, stop = await open_stream(server, name, reasoner, query, until, producers=producers, field=field, report=report,
                                                   continuous=continuous, streams=streams)
        kind, value = first
        if kind == "piece" and isinstance(value, dict) and value.get("stage") == "input":
            stop.set()
            raise refuse(400, f"{field}: refused by the ethics policies: {'; '.join(value['reasons'])}", "content_policy_violation")

        async def events():
            item, finish, text = first, None, ""
            try:
                for event in opening():
                    yield event
                while True:
                    kind, value = item
                    if kind == "end":
                        finish = report.get("finish_reason", "stop")
                        break
                    if kind == "error":
                        status = 504 if isinstance(value, TimeLimitError) else 422 if isinstance(value, LccoreError) else 500
                        yield failure(status, _failure(value, field))
                        return
                    if isinstance(value, dict):  # a policy blocked a sentence: nothing more is shown or made
                        finish = "content_filter"
                        break
                    text += value
                    yield delta(value)
                    item = await next_item()
                for event in closing(finish, usage(report.get("prompt_tokens", 0), report.get("tokens", 0)), text):
                    yield event
            finally:  # done, refused, timed out, or the client left: stop the generation
                stop.set()

        return StreamingResponse(events(), media_type="text/event-stream", headers=STREAM_HEADERS)

    add_responses_route(server, refuse=refuse, options_for=options_for, reasoner_for=reasoner_for, generative=generative,
                        chat_messages=chat_messages, answer_all=answer_all, choice_of=choice_of, stream_events=stream_events)


def _include_usage(body) -> bool:
    return bool((body.stream_options or {}).get("include_usage"))


def _chunk(completion_id: str, created: int, model: str, kind: str, choice: Optional[dict], usage: Optional[dict] = None) -> str:
    return _event(None, {"id": completion_id, "object": kind, "created": created, "model": model, "choices": [choice] if choice is not None else [],
                 **({"usage": usage} if usage is not None else {})})
