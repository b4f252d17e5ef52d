"""`lccore serve` speaks the OpenAI API (issue 21), checked with the official `openai` client (a
client no one here wrote): chat completions and completions from a fine-tuned dialogue run,
streamed and not, the request options, errors in OpenAI's envelope, Bearer auth, the run's
ethics policies, embeddings from an encoder run; and plugins adding endpoints (register_routes)."""

import asyncio
import logging
import math
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

pytest.importorskip("fastapi")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402

import lccore  # noqa: E402
from lccore_serve.app import ServeLimits, create_app  # noqa: E402

from conftest import stop_process  # noqa: E402

QUESTION = [{"role": "user", "content": "what is the capital of france?"}]
ANSWER = "paris is the capital of france."


@pytest.fixture(scope="module")
def predictor(trained_run):
    return lccore.load(trained_run.output_dir, device="cpu")


@pytest.fixture(scope="module")
def chat(dialogue_run):
    return lccore.load(dialogue_run.output_dir, device="cpu")


def client_for(app, key: str = "unused") -> "openai.AsyncOpenAI":
    """The official async client, talking to ``app`` in-process."""
    transport = httpx.ASGITransport(app=app)
    return openai.AsyncOpenAI(api_key=key, base_url="http://serve/v1", max_retries=0,
                              http_client=httpx.AsyncClient(transport=transport, base_url="http://serve"))


def run(coroutine):
    return asyncio.run(coroutine)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- a real server process, the client as a user points it ---------------------------------------


def test_openai_client_chats_with_a_served_dialogue_run(dialogue_run):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TEST_OPENAI_KEY": "s3cret"}
    process = subprocess.Popen([sys.executable, "-m", "lccore", "serve", str(dialogue_run.output_dir), "--port", str(port), "--api-key-env", "TEST_OPENAI_KEY"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    name = dialogue_run.output_dir.name
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/healthz", timeout=5):
                    break
            except OSError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, "server not ready in 60 s"
                time.sleep(0.2)
        client = openai.OpenAI(api_key="s3cret", base_url=f"{base}/v1", max_retries=0)
        assert [model.id for model in client.models.list()] == [name]

        reply = client.chat.completions.create(model=name, messages=QUESTION)
        assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == name
        assert [(c.index, c.message.role, c.message.content, c.finish_reason) for c in reply.choices] == [(0, "assistant", ANSWER, "stop")]
        assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens < 64
        assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

        chunks = list(client.chat.completions.create(model=name, messages=QUESTION, stream=True, stream_options={"include_usage": True}))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ANSWER
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
        assert len({c.id for c in chunks}) == 1 and all(c.object == "chat.completion.chunk" for c in chunks)

        # OpenAI's newer Responses API, as client.responses.create calls it.
        response = client.responses.create(model=name, input=QUESTION)
        assert response.status == "completed" and response.output_text == ANSWER and response.usage.output_tokens == reply.usage.completion_tokens

        # The same run through the plain completions endpoint: the prompt is the user's message.
        completion = client.completions.create(model=name, prompt="count to three")
        assert completion.choices[0].text == "one two three." and completion.choices[0].finish_reason == "stop"

        with pytest.raises(openai.AuthenticationError) as wrong_key:
            openai.OpenAI(api_key="guess", base_url=f"{base}/v1", max_retries=0).models.list()
        assert wrong_key.value.body["code"] == "invalid_api_key"
        with pytest.raises(openai.NotFoundError) as unknown:
            client.chat.completions.create(model="gpt-4o", messages=QUESTION)
        assert unknown.value.body["param"] == "model" and f"served: {name}" in unknown.value.body["message"]
    finally:
        stop_process(process)


# --- the request options, in-process ----------------------------------------------------------------


def test_chat_options_follow_openai_semantics(chat):
    app = create_app({"chat": chat}, limits=ServeLimits(max_new_tokens=50))

    async def scenario():
        client = client_for(app)
        cut = await client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=2)
        assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 2 and ANSWER.startswith(cut.choices[0].message.content)
        newer = await client.chat.completions.create(model="chat", messages=QUESTION, max_completion_tokens=3, max_tokens=40)
        assert newer.usage.completion_tokens == 3
        stopped = await client.chat.completions.create(model="chat", messages=QUESTION, stop=["capital"])
        assert stopped.choices[0].message.content == "paris is the " and stopped.choices[0].finish_reason == "stop"
        streamed = [c async for c in await client.chat.completions.create(model="chat", messages=QUESTION, stop="capital", stream=True)]
        assert "".join(c.choices[0].delta.content or "" for c in streamed) == "paris is the "
        # temperature 0 (or none) is greedy; sampling with a seed is reproducible, n choices each drawn.
        greedy = await client.chat.completions.create(model="chat", messages=QUESTION, temperature=0, n=2)
        assert [c.message.content for c in greedy.choices] == [ANSWER, ANSWER] and [c.index for c in greedy.choices] == [0, 1]
        drawn = [await client.chat.completions.create(model="chat", messages=QUESTION, temperature=2.0, top_p=1.0, n=3, seed=7, max_tokens=6) for _ in range(2)]
        assert [c.message.content for c in drawn[0].choices] == [c.message.content for c in drawn[1].choices]
        assert len({c.message.content for c in drawn[0].choices}) > 1  # three draws at temperature 2 differ
        # What OpenAI clients send beside the messages is read (developer = system, text parts) or tolerated.
        parts = await client.chat.completions.create(model="chat", user="u-1", metadata={"k": "v"}, tool_choice="auto", messages=[
            {"role": "developer", "content": "you answer briefly."}, {"role": "user", "content": [{"type": "text", "text": "what colour is the sky?"}]}])
        assert parts.choices[0].message.content == "blue."

    run(scenario())


@pytest.mark.parametrize(("request_fields", "param", "words"), [
    ({"max_tokens": 51}, "max_tokens", "--max-new-tokens"),
    ({"max_tokens": 0}, "max_tokens", "at least 1"),
    ({"temperature": 3}, "temperature", "between 0 and 2"),
    ({"n": 9}, "n", "between 1 and 8"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]}, "tools", "not supported"),
    ({"logprobs": True}, "logprobs", "not returned"),
    ({"response_format": {"type": "json_object"}}, "response_format", "text"),
    ({"presence_penalty": 0.5}, "presence_penalty", "not supported"),
    ({"seed": -1}, "seed", "at least 0"),
    ({"messages": []}, "messages", "empty"),
    ({"messages": [{"role": "tool", "content": "x", "tool_call_id": "1"}]}, "messages[0].role", "tool messages"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}]}, "messages[0].content[0]", "text parts"),
    ({"messages": QUESTION + [{"role": "assistant", "content": "paris"}]}, "messages[1]", "the last message is the assistant's"),
    ({"messages": [{"role": "user", "content": "x" * 101}]}, "messages", "at most 100"),
])
def test_chat_requests_lccore_cannot_honour_are_one_line_errors(chat, request_fields, param, words):
    app = create_app({"chat": chat}, limits=ServeLimits(max_new_tokens=50, max_input_chars=100))

    async def scenario():
        with pytest.raises(openai.APIStatusError) as refused:
            await client_for(app).chat.completions.create(**{"model": "chat", "messages": QUESTION, **request_fields})
        return refused.value

    error = run(scenario())
    assert error.status_code in (413, 422), error.body
    assert error.body["param"] == param and words in error.body["message"] and "\n" not in error.body["message"], error.body
    assert error.body["type"] == "invalid_request_error" and error.body["message"].startswith(param)


def test_chat_needs_a_dialogue_run_and_completions_a_generative_one(chat, predictor):
    app = create_app({"chat": chat, "tiny": predictor})

    async def scenario():
        client = client_for(app)
        with pytest.raises(openai.UnprocessableEntityError) as classifier:
            await client.chat.completions.create(model="tiny", messages=QUESTION)
        assert "has no model that generates text" in classifier.value.body["message"]
        with pytest.raises(openai.UnprocessableEntityError):
            await client.completions.create(model="tiny", prompt="hello")
        many = await client.completions.create(model="chat", prompt=["count to three", "hello"], max_tokens=40)
        assert [c.text for c in many.choices] == ["one two three.", "hi there, how can i help?"] and [c.index for c in many.choices] == [0, 1]
        with pytest.raises(openai.UnprocessableEntityError) as empty:
            await client.completions.create(model="chat", prompt=["hello", " "])
        assert empty.value.body["param"] == "prompt[1]"
        with pytest.raises(openai.UnprocessableEntityError) as tokens:  # the SDK's token-array prompt, as embeddings say it
            await client.completions.create(model="chat", prompt=[1, 2, 3])
        assert tokens.value.body["message"] == "prompt: a string or a list of strings (token arrays are not read)"
        # What changes the answer and cannot be honoured is refused, not ignored.
        with pytest.raises(openai.UnprocessableEntityError) as best_of:
            await client.completions.create(model="chat", prompt="hello", best_of=3)
        assert best_of.value.body["param"] == "best_of"
        with pytest.raises(openai.UnprocessableEntityError) as logprobs:
            await client.completions.create(model="chat", prompt="hello", logprobs=0)  # 0 still asks for the chosen tokens'
        assert logprobs.value.body["param"] == "logprobs"
        # client.models.retrieve: one entry of the list, or a 404 naming the runs served.
        listed = {m.id: m for m in (await client.models.list()).data}
        retrieved = await client.models.retrieve("chat")
        assert retrieved == listed["chat"] and retrieved.task == "dialogue" and retrieved.generates
        with pytest.raises(openai.NotFoundError) as unknown:
            await client.models.retrieve("gpt-4o")
        assert unknown.value.body["param"] == "model" and "served: chat, tiny" in unknown.value.body["message"]

    run(scenario())


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/v1/chat/completions", '{"model": "chat", "messages": [{"role": "user", "content": "hi \\ud800"}]}', "messages[0].content"),
    ("/v1/completions", '{"model": "chat", "prompt": ["fine", "\\udc00 there"]}', "prompt[1]"),
    ("/v1/generate", '{"model": "chat", "prompt": "hello", "options": {"stop": ["\\uDBFF"]}}', "options.stop[0]"),
    ("/v1/predict", '{"model": "tiny", "inputs": [{"text": "a"}, {"text": "b\\ud800"}]}', "inputs[1].text"),
    ("/v1/embeddings", '{"model": "tiny", "input": "\\ud800"}', "input"),
    ("/v1/predict", '{"model": "tiny", "inputs": ["a"], "\\ud800": 1}', "body"),
    ("/v1/predict", '{"model": "tiny", "inputs": [' + "[" * 65 + "]" * 65 + "]}", "body"),
    ("/v1/predict", '{"model": "tiny", "inputs": [' + "[" * 100_000 + "]" * 100_000 + "]}", "body"),
])
def test_json_no_route_can_read_is_a_422_naming_the_field(chat, predictor, path, body, field):
    """A lone surrogate escape is valid JSON but no character (every tokenizer fails on it: these
    were 500s), and nesting past 64 levels is no record (a 400 naming nothing): both are refused
    before any route, naming the field."""
    app = create_app({"chat": chat, "tiny": predictor})

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as client:
            refused = await client.post(path, content=body, headers={"content-type": "application/json"})
            # A surrogate pair is one character (an emoji): it passes.
            paired = await client.post("/v1/predict", content='{"model": "tiny", "inputs": ["great \\ud83d\\ude00"]}', headers={"content-type": "application/json"})
        return refused, paired

    refused, paired = run(scenario())
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["param"] == field and error["message"].startswith(f"{field}: ")
    assert ("lone surrogate" if "ud" in body.lower() else "nested deeper than 64 levels") in error["message"]
    assert paired.status_code == 200 and paired.json()["outputs"][0]["label"] in ("positive", "negative")


# --- the Responses API --------------------------------------------------------------------------------


def test_the_responses_api_answers_and_streams_with_the_trained_template(chat):
    app = create_app({"chat": chat}, limits=ServeLimits(max_new_tokens=50))

    async def scenario():
        client = client_for(app)
        plain = await client.responses.create(model="chat", input="what is the capital of france?")
        assert plain.object == "response" and plain.id.startswith("resp_") and plain.status == "completed" and plain.output_text == ANSWER
        assert [(item.type, item.role, item.status) for item in plain.output] == [("message", "assistant", "completed")]
        assert plain.usage.input_tokens > 0 and plain.usage.total_tokens == plain.usage.input_tokens + plain.usage.output_tokens
        # instructions are the system message; input_text parts are joined; earlier turns are read.
        briefly = await client.responses.create(model="chat", instructions="you answer briefly.",
                                                input=[{"role": "user", "content": [{"type": "input_text", "text": "what colour is the sky?"}]}])
        assert briefly.output_text == "blue."
        joke = await client.responses.create(model="chat", input=[
            {"role": "user", "content": "hello"}, {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "hi there, how can i help?"}]},
            {"role": "user", "content": "tell me a joke"}])
        assert joke.output_text == "why did the chicken cross the road?"
        cut = await client.responses.create(model="chat", input="what is the capital of france?", max_output_tokens=2)
        assert cut.status == "incomplete" and cut.incomplete_details.reason == "max_output_tokens" and ANSWER.startswith(cut.output_text)
        # Streamed: the typed events in order, and the SDK's own stream helper rebuilds the response.
        events = [event async for event in await client.responses.create(model="chat", input="count to three", stream=True)]
        kinds = [event.type for event in events]
        assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"]
        assert kinds[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done", "response.completed"]
        assert set(kinds[4:-4]) == {"response.output_text.delta"} and [e.sequence_number for e in events] == list(range(len(events)))
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "one two three." == events[-1].response.output_text
        async with client.responses.stream(model="chat", input="hello") as stream:
            final = await stream.get_final_response()
        assert final.output_text == "hi there, how can i help?"

    run(scenario())


@pytest.mark.parametrize(("request_fields", "param", "words"), [
    ({"previous_response_id": "resp_1"}, "previous_response_id", "keeps no responses"),
    ({"conversation": "conv_1"}, "conversation", "keeps no responses"),
    ({"tools": [{"type": "web_search"}]}, "tools", "not supported"),
    ({"text": {"format": {"type": "json_object"}}}, "text.format", "text"),
    ({"include": ["message.output_text.logprobs"]}, "include", "log-probabilities"),
    ({"input": [{"type": "function_call_output", "call_id": "1", "output": "x"}]}, "input[0]", "only messages"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]}, "input[0].content[0]", "text parts"),
    ({"input": " "}, "input", "empty"),
    ({"max_output_tokens": 51}, "max_output_tokens", "--max-new-tokens"),
    ({"temperature": 3}, "temperature", "between 0 and 2"),
])
def test_responses_requests_lccore_cannot_honour_are_one_line_errors(chat, request_fields, param, words):
    app = create_app({"chat": chat}, limits=ServeLimits(max_new_tokens=50))

    async def scenario():
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            await client_for(app).responses.create(**{"model": "chat", "input": "hello", **request_fields})
        return refused.value

    error = run(scenario())
    assert error.body["param"] == param and words in error.body["message"] and error.body["message"].startswith(f"{param}: "), error.body


# --- ethics policies on the OpenAI endpoints -------------------------------------------------------


def test_the_runs_policies_guard_chat_answers_and_streams(chat, tmp_path):
    audit = tmp_path / "audit.jsonl"
    policies = [{"name": "blocklist", "terms": ["joke"], "stages": ["input"]}, {"name": "blocklist", "terms": ["chicken"], "stages": ["output"]},
                {"name": "blocklist", "terms": ["paris"], "action": "redact", "stages": ["output"]}]
    app = create_app({"chat": chat}, ethics_items=policies, audit_log=audit)

    async def scenario():
        client = client_for(app)
        for stream in (False, True):
            with pytest.raises(openai.BadRequestError) as refused:
                answer = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "tell me a joke please"}], stream=stream)
                if stream:
                    [c async for c in answer]
            assert refused.value.body["code"] == "content_policy_violation" and "term 'joke'" in refused.value.body["message"]
        redacted = await client.chat.completions.create(model="chat", messages=QUESTION)
        assert redacted.choices[0].message.content == "<BLOCKED> is the capital of france."
        chunks = [c async for c in await client.chat.completions.create(model="chat", messages=QUESTION, stream=True)]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "<BLOCKED> is the capital of france."
        completion = await client.completions.create(model="chat", prompt="what is the capital of france?")
        assert completion.choices[0].text == "<BLOCKED> is the capital of france."
        for stream in (False, True):  # the Responses API: the same guards
            with pytest.raises(openai.BadRequestError) as refused:
                answer = await client.responses.create(model="chat", input="tell me a joke please", stream=stream)
                if stream:
                    [e async for e in answer]
            assert refused.value.body["code"] == "content_policy_violation" and refused.value.body["param"] == "input"
        events = [e async for e in await client.responses.create(model="chat", input="what is the capital of france?", stream=True)]
        assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "<BLOCKED> is the capital of france."
        assert events[-1].response.output_text == "<BLOCKED> is the capital of france."

    run(scenario())
    logged = audit.read_text()
    assert '"stage": "output"' in logged and "capital of france" not in logged  # every decision, hashes, never the text


def test_a_blocked_sentence_ends_the_choice_with_content_filter(chat):
    app = create_app({"chat": chat}, ethics_items=[{"name": "blocklist", "terms": ["three"], "stages": ["output"]}])

    async def scenario():
        client = client_for(app)
        whole = await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "count to three"}])
        assert whole.choices[0].finish_reason == "content_filter" and whole.choices[0].message.content == ""
        chunks = [c async for c in await client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "count to three"}], stream=True)]
        finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
        assert finishes[-1] == "content_filter" and "three" not in "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        for stream in (False, True):  # the Responses API: incomplete, for the policy
            if stream:
                events = [e async for e in await client.responses.create(model="chat", input="count to three", stream=True)]
                assert events[-1].type == "response.incomplete"
                response = events[-1].response
            else:
                response = await client.responses.create(model="chat", input="count to three")
            assert response.status == "incomplete" and response.incomplete_details.reason == "content_filter" and "three" not in response.output_text

    run(scenario())


# --- continuous batching ----------------------------------------------------------------------------


def test_concurrent_chats_join_one_running_batch(chat, monkeypatch):
    """Greedy chats of a decoder-only run share each forward pass (transformers' continuous
    batching): six at once cost far fewer forward passes than six one after the other, and each
    gets the answer it gets alone."""
    from lccore_generation.continuous import ContinuousBatcher

    batchers, make_batcher = [], ContinuousBatcher.__init__
    monkeypatch.setattr(ContinuousBatcher, "__init__", lambda self, *a, **k: (make_batcher(self, *a, **k), batchers.append(self))[0])
    app = create_app({"chat": chat})
    forwards = [0]
    hook = chat.model.register_forward_hook(lambda *_: forwards.__setitem__(0, forwards[0] + 1))
    questions = [QUESTION, [{"role": "user", "content": "count to three"}], [{"role": "user", "content": "what colour is the sky?"}]] * 2
    hold = threading.Event()

    def until_all_arrived(*_):
        # "At once" whatever the machine's load: the batch's first step waits (on the manager's
        # thread) until all six requests are in, as they would be on a server they reach together.
        if hold.is_set():
            hold.clear()
            waited_until = time.monotonic() + 30
            while len(batchers[0].waiting) < len(questions) and time.monotonic() < waited_until:
                time.sleep(0.01)

    gate = chat.model.register_forward_pre_hook(until_all_arrived)

    async def scenario():
        client = client_for(app)
        alone = []
        for messages in questions[:3]:
            forwards[0] = 0
            reply = await client.chat.completions.create(model="chat", messages=messages)
            alone.append((reply.choices[0].message.content, forwards[0]))
        forwards[0] = 0
        hold.set()
        replies = await asyncio.gather(*(client.chat.completions.create(model="chat", messages=m) for m in questions))
        return alone, [r.choices[0].message.content for r in replies], forwards[0]

    try:
        alone, together, shared_forwards = run(scenario())
    finally:
        hook.remove()
        gate.remove()
    assert len(batchers) == 1 and together == [text for text, _ in alone] * 2 and together[0] == ANSWER
    one_by_one = 2 * sum(count for _, count in alone)
    assert shared_forwards < one_by_one / 2, (shared_forwards, one_by_one)


@pytest.mark.parametrize("options", [{}, {"stream": True}, {"temperature": 1.0, "seed": 1}, {"n": 2}],
                         ids=["continuous", "continuous-stream", "sampled", "several-choices"])
def test_generation_requests_count_against_the_runs_queue(chat, options):
    """Generation waits in the run's queue like predictions (``--max-queue``): past it, a 503 with
    Retry-After at once (the openai client retries it), not an ever longer wait. Before, only
    predictions were counted: any number of chats waited on the model."""
    app = create_app({"chat": chat}, limits=ServeLimits(max_queue=2))
    release = threading.Event()
    held = chat.model.register_forward_pre_hook(lambda *_: (release.wait(30), None)[1])  # a pre-hook returns new inputs or None

    async def scenario():
        client = client_for(app)

        async def ask():
            try:
                reply = await client.chat.completions.create(model="chat", messages=QUESTION, max_tokens=3, **options)
                if options.get("stream"):
                    reply = [chunk async for chunk in reply]
                return 200, None
            except openai.APIStatusError as refused:
                return refused.status_code, refused

        asking = [asyncio.ensure_future(ask()) for _ in range(5)]
        while sum(task.done() for task in asking) < 3:  # two hold the queue; three are turned away
            await asyncio.sleep(0.01)
        turned_away = [task.result() for task in asking if task.done()]
        release.set()
        return turned_away, await asyncio.gather(*asking)

    try:
        turned_away, answered = run(scenario())
    finally:
        release.set()
        held.remove()
    assert sorted(status for status, _ in answered) == [200, 200, 503, 503, 503]
    for status, refused in turned_away:
        assert status == 503 and refused.response.headers["retry-after"] == "1"
        assert refused.body["code"] == "busy" and "at most 2" in refused.body["message"]


def test_an_app_never_closed_does_not_keep_the_process_alive(dialogue_run):
    """The batch's threads are daemons: a program that embeds the app without its lifespan exits."""
    script = (
        "import asyncio, httpx, lccore\n"
        "from lccore_serve.app import create_app\n"
        f"app = create_app({{'chat': lccore.load({str(dialogue_run.output_dir)!r}, device='cpu')}})\n"
        "async def ask():\n"
        "    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url='http://serve') as http:\n"
        "        reply = await http.post('/v1/chat/completions', json={'model': 'chat', 'messages': [{'role': 'user', 'content': 'count to three'}]})\n"
        "        print(reply.json()['choices'][0]['message']['content'])\n"
        "asyncio.run(ask())\n"
    )
    done = subprocess.run([sys.executable, "-c", script], env={**os.environ, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "one two three.", done.stderr[-2000:]


# --- embeddings ----------------------------------------------------------------------------------------


def test_embeddings_from_an_encoder_run_are_mean_pooled_normalised_and_batched(predictor, chat):
    import torch
    from transformers import AutoModel, AutoTokenizer

    app = create_app({"tiny": predictor, "chat": chat}, limits=ServeLimits(max_wait_ms=50))
    texts = ["a great film", "boring and long", "the best show of the year"]

    async def scenario():
        client = client_for(app)
        answers = await asyncio.gather(*[client.embeddings.create(model="tiny", input=text) for text in texts])
        batch = await client.embeddings.create(model="tiny", input=texts)
        batches = app.state.batchers["tiny"].batches
        with pytest.raises(openai.UnprocessableEntityError) as decoder:
            await client.embeddings.create(model="chat", input="hello")
        assert "no encoder" in decoder.value.body["message"]
        with pytest.raises(openai.UnprocessableEntityError):
            await client.embeddings.create(model="tiny", input=[1, 2, 3])
        size = len(batch.data[0].embedding)
        with pytest.raises(openai.UnprocessableEntityError) as shorter:  # was ignored: full-length vectors came back
            await client.embeddings.create(model="tiny", input="a great film", dimensions=size // 2)
        assert shorter.value.body["param"] == "dimensions" and f"embeds in {size} dimensions" in shorter.value.body["message"]
        assert len((await client.embeddings.create(model="tiny", input="a great film", dimensions=size)).data[0].embedding) == size
        return answers, batch, batches

    answers, batch, batches = run(scenario())
    assert batches < len(texts) + 1  # the three single requests shared model batches
    vectors = [a.data[0].embedding for a in answers]
    assert [d.index for d in batch.data] == [0, 1, 2] and batch.usage.prompt_tokens > 0
    # The same vectors as transformers' own encoder with mean pooling over the mask, normalised.
    model_dir = predictor.run_dir / "model"
    encoder, tokenizer = AutoModel.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(model_dir)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1)
    expected = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    for got, alone, want in zip([d.embedding for d in batch.data], vectors, expected.tolist()):
        assert len(got) == encoder.config.hidden_size and math.isclose(sum(v * v for v in got), 1.0, rel_tol=1e-4)
        assert max(abs(a - b) for a, b in zip(got, want)) < 1e-4 and max(abs(a - b) for a, b in zip(alone, want)) < 1e-4


def test_embedding_inputs_pass_the_runs_input_policies(predictor):
    app = create_app({"tiny": predictor}, ethics_items=[{"name": "blocklist", "terms": ["boring"]}])

    async def scenario():
        with pytest.raises(openai.PermissionDeniedError) as refused:
            await client_for(app).embeddings.create(model="tiny", input=["a great film", "boring"])
        return refused.value

    assert run(scenario()).body["param"] == "input[1]"


# --- plugins add endpoints -------------------------------------------------------------------------------


class RoutePlugin:
    """A plugin (not installed: given to the engine) that adds an endpoint built on the server's helpers."""

    @staticmethod
    @lccore.hookimpl
    def register_routes(server):
        from fastapi import HTTPException

        @server.router.post("/v1/wordcount")
        async def wordcount(body: dict):
            name = server.pick(body.get("model"))
            if not isinstance(body.get("text"), str):
                raise HTTPException(422, "text: expected a string")
            records = await server.predict(name, server.parse(name, [body["text"]]), server.deadline())
            return {"words": len(body["text"].split()), "label": records[0].get("label"), "refused": records[0].get("refused", False)}


class BrokenRoutes:
    @staticmethod
    @lccore.hookimpl
    def register_routes(server):
        raise RuntimeError("no routes today")


class TakesPredict:
    @staticmethod
    @lccore.hookimpl
    def register_routes(server):
        @server.router.post("/v1/predict")
        async def mine():
            return {"mine": True}


def test_a_plugin_adds_an_endpoint_behind_the_servers_guards(predictor, caplog):
    engine = lccore.Engine(plugins=[RoutePlugin, BrokenRoutes, TakesPredict])
    with caplog.at_level(logging.WARNING):
        app = create_app({"tiny": predictor}, api_key="k", engine=engine, ethics_items=[{"name": "blocklist", "terms": ["awful"]}])
    warnings = " ".join(record.getMessage() for record in caplog.records)
    assert "plugin 'BrokenRoutes' could not add its routes: RuntimeError: no routes today" in warnings
    assert "plugin 'TakesPredict' adds POST /v1/predict, which the server already answers" in warnings

    async def scenario():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serve") as http:
            key = {"Authorization": "Bearer k"}
            assert (await http.post("/v1/wordcount", json={"text": "a great film"})).status_code == 401
            counted = (await http.post("/v1/wordcount", json={"text": "a great film"}, headers=key)).json()
            refused = (await http.post("/v1/wordcount", json={"text": "an awful film"}, headers=key)).json()
            bad = await http.post("/v1/wordcount", json={"text": 3}, headers=key)
            predicted = (await http.post("/v1/predict", json={"inputs": ["a great film"]}, headers=key)).json()
        return counted, refused, bad, predicted

    counted, refused, bad, predicted = run(scenario())
    assert counted == {"words": 3, "label": predictor.predict(["a great film"])[0]["label"], "refused": False}
    assert refused["refused"] is True  # the run's policies guard the plugin's endpoint too
    assert bad.status_code == 422 and bad.json()["error"] == {"message": "text: expected a string", "type": "invalid_request_error", "param": "text", "code": None}
    assert "outputs" in predicted  # the server's own /v1/predict was kept
