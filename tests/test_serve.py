"""`lccore serve`: the HTTP API in-process (httpx over ASGI, FastAPI's TestClient), its guards,
micro-batching, and one real server process on a free port."""

from __future__ import annotations

import asyncio
import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")

import lccore  # noqa: E402
from lccore_serve.app import ServeLimits, create_app  # noqa: E402
from lccore_serve.server import model_names  # noqa: E402
from conftest import CONVERSATIONS  # noqa: E402

TEXTS = ["a great film", "an awful plot", "the meal was lovely", "boring show", "it was dull", "superb acting"]


@pytest.fixture(scope="module")
def predictor(trained_run):
    return lccore.load(trained_run.output_dir, device="cpu")


@pytest.fixture
def client(predictor):
    from fastapi.testclient import TestClient

    with TestClient(create_app({"tiny": predictor}, limits=ServeLimits(max_inputs=8, max_body_bytes=4096))) as test_client:
        yield test_client


def test_predict_answers_one_output_per_input_in_order_like_offline_predict(client, predictor):
    response = client.post("/v1/predict", json={"inputs": TEXTS})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "tiny"
    assert body["outputs"] == predictor.predict(TEXTS)
    named = client.post("/v1/predict", json={"model": "tiny", "inputs": [{"text": TEXTS[0]}]})
    assert named.json()["outputs"] == predictor.predict(TEXTS[:1])
    assert client.post("/v1/predict", json={"inputs": []}).json()["outputs"] == []


def test_healthz_models_openapi_and_page(client):
    assert client.get("/healthz").status_code == 200
    models = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["tiny"] and models[0]["task"] == "text_classification"
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/generate", "/v1/kg/query", "/v1/models", "/healthz"} <= set(schema["paths"])
    docs = client.get("/docs")
    assert docs.status_code == 200 and "http://" not in docs.text and "https://" not in docs.text  # no CDN: works offline
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in docs.text and client.get(asset).status_code == 200 and len(client.get(asset).content) > 10_000
    page = client.get("/")
    assert page.status_code == 200 and "/v1/predict" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no external resources


@pytest.mark.parametrize(
    "body, field",
    [
        ('{"inputs": ["a"', "body"),  # malformed JSON
        ("[1, 2]", "body"),
        ("{}", "inputs"),
        ('{"inputs": "a great film"}', "inputs"),
        ('{"inputs": ["ok"], "model": 3}', "model"),
        ('{"inputs": ["ok", 42]}', "inputs[1]"),  # the task cannot read it
        ('{"inputs": ["ok", {"txt": "x"}]}', "inputs[1]"),
    ],
)
def test_bad_requests_are_422_naming_the_field(client, body, field):
    response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    assert response.json()["field"] == field
    assert "Traceback" not in response.text


def test_limits_unknown_model_and_no_tracebacks(client, predictor, monkeypatch):
    too_many = client.post("/v1/predict", json={"inputs": ["x"] * 9})
    assert too_many.status_code == 413 and "at most 8" in too_many.json()["detail"]
    too_big = client.post("/v1/predict", json={"inputs": ["x" * 5000]})
    assert too_big.status_code == 413
    chunked = client.post("/v1/predict", content=iter([b'{"inputs": ["', b"x" * 5000, b'"]}']), headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    unknown = client.post("/v1/predict", json={"model": "tinyy", "inputs": ["x"]})
    assert unknown.status_code == 404 and "did you mean 'tiny'" in unknown.json()["detail"]
    # A path or method the server lacks says what it answers (it said "Not Found"): OpenAI's Assistants API, a GET for a POST.
    elsewhere = client.post("/v1/assistants", json={"model": "tiny"})
    assert elsewhere.status_code == 404 and elsewhere.json()["error"]["message"].startswith("POST /v1/assistants: no such endpoint here; this server answers ")
    assert "POST /v1/chat/completions" in elsewhere.json()["detail"] and "POST /v1/explain" in elsewhere.json()["detail"]  # the plugins' routes too
    wrong_method = client.get("/v1/predict")
    assert wrong_method.status_code == 405 and wrong_method.json()["detail"] == "GET /v1/predict: this path answers POST"

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(predictor, "predict_examples", broken)
    failed = client.post("/v1/predict", json={"inputs": ["x"]})
    assert failed.status_code == 500
    assert "secret" not in failed.text and "Traceback" not in failed.text
    monkeypatch.undo()
    assert client.post("/v1/predict", json={"inputs": ["x"]}).status_code == 200  # the batcher survived


def test_api_key_guards_every_endpoint_but_healthz(predictor):
    from fastapi.testclient import TestClient

    with TestClient(create_app({"tiny": predictor}, api_key="s3cret")) as client:
        assert client.get("/healthz").status_code == 200
        paths = [("GET", "/v1/models"), ("POST", "/v1/predict"), ("POST", "/v1/explain"), ("POST", "/v1/generate"), ("POST", "/v1/kg/query"), ("GET", "/openapi.json"), ("GET", "/docs")]
        for method, path in paths:
            assert client.request(method, path, json={"inputs": ["x"]}).status_code == 401, path
            wrong = client.request(method, path, json={"inputs": ["x"]}, headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        ok = client.post("/v1/predict", json={"inputs": ["x"]}, headers={"Authorization": "Bearer s3cret"})
        assert ok.status_code == 200


def test_timeout_is_504(predictor, monkeypatch):
    from fastapi.testclient import TestClient

    real = predictor.predict_examples
    monkeypatch.setattr(predictor, "predict_examples", lambda *a, **k: (time.sleep(0.5), real(*a, **k))[1])
    with TestClient(create_app({"tiny": predictor}, limits=ServeLimits(timeout_s=0.1))) as client:
        response = client.post("/v1/predict", json={"inputs": ["x"]})
    assert response.status_code == 504 and "0.1 s" in response.json()["detail"]


def test_concurrent_requests_share_model_batches(predictor):
    app = create_app({"tiny": predictor}, limits=ServeLimits(max_wait_ms=50, max_batch_size=64))
    batcher = app.state.batchers["tiny"]

    async def fire():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
            return await asyncio.gather(*(http.post("/v1/predict", json={"inputs": [text]}) for text in TEXTS * 4))

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    assert [r.json()["outputs"][0] for r in responses] == predictor.predict(TEXTS * 4)
    assert batcher.examples == len(TEXTS) * 4
    assert batcher.batches < len(responses) / 2, batcher.batches
    batcher.close()


def test_explain_uses_the_explain_plugin(client):
    response = client.post("/v1/explain", json={"inputs": ["a great film"], "explainer": "random"})
    assert response.status_code == 200, response.text
    record = response.json()["outputs"][0]
    assert record["text"] == "a great film" and [w["text"] for w in record["words"]] == ["a", "great", "film"]
    unknown = client.post("/v1/explain", json={"inputs": ["x"], "explainer": "shapp"})
    assert unknown.status_code == 404 and "did you mean 'shap'" in unknown.json()["detail"]
    bad_option = client.post("/v1/explain", json={"inputs": ["x"], "explainer": "integrated_gradients", "options": {"n_step": 3}})
    assert bad_option.status_code == 422 and "n_steps" in bad_option.json()["detail"]


def test_ethics_policies_refuse_blocked_inputs_and_audit_them(predictor, tmp_path):
    from fastapi.testclient import TestClient

    audit = tmp_path / "audit.jsonl"
    policy = {"name": "blocklist", "terms": ["boring"]}
    with TestClient(create_app({"tiny": predictor}, ethics_items=[policy], audit_log=audit)) as client:
        outputs = client.post("/v1/predict", json={"inputs": ["a great film", "a boring show"]}).json()["outputs"]
        assert outputs[0] == predictor.predict(["a great film"])[0]
        assert outputs[1]["refused"] is True and outputs[1]["decision"] == "block" and outputs[1]["reasons"]
        refused = client.post("/v1/explain", json={"inputs": ["boring"], "explainer": "random"})
        assert refused.status_code == 403 and refused.json()["detail"].startswith("inputs[0]: refused")
    entries = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [e["decision"] for e in entries if e["decision"] == "block"] == ["block", "block"]
    assert "a boring show" not in audit.read_text()  # hashes, never the text


def test_two_runs_with_one_name_are_refused(tmp_path):
    (tmp_path / "a" / "run").mkdir(parents=True)
    (tmp_path / "b" / "run").mkdir(parents=True)
    with pytest.raises(lccore.ConfigError, match="both be served as 'run'"):
        model_names([tmp_path / "a" / "run", tmp_path / "b" / "run"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, key=None):
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_shutdown_finishes_the_request_in_flight(predictor, monkeypatch):
    import threading

    import uvicorn

    real = predictor.predict_examples
    started = threading.Event()

    def slow(*args, **kwargs):
        started.set()
        time.sleep(1.0)
        return real(*args, **kwargs)

    monkeypatch.setattr(predictor, "predict_examples", slow)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app({"tiny": predictor}), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=10))
    thread = threading.Thread(target=server.run)  # not the main thread: no signal handlers, stopped by should_exit
    thread.start()
    try:
        while not server.started:
            time.sleep(0.05)
        answers = []
        client = threading.Thread(target=lambda: answers.append(http("POST", f"http://127.0.0.1:{port}/v1/predict", {"inputs": ["a great film"]})))
        client.start()
        assert started.wait(10)
        server.should_exit = True  # what SIGTERM/SIGINT do
        client.join(15)
        assert answers and answers[0][0] == 200 and len(answers[0][1]["outputs"]) == 1
    finally:
        server.should_exit = True
        thread.join(15)
    assert not thread.is_alive()


def test_lccore_serve_process_serves_guards_and_stops_on_sigterm(trained_run, kg_store):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TEST_SERVE_KEY": "k3y"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lccore", "serve", str(trained_run.output_dir), "--port", str(port), "--api-key-env", "TEST_SERVE_KEY", "--kg", str(kg_store), "--precision", "auto"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if http("GET", f"{base}/healthz")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.stdout.read()
            assert time.monotonic() < deadline, "server not ready in 30 s"
            time.sleep(0.2)
        assert http("POST", f"{base}/v1/predict", {"inputs": ["a great film"]})[0] == 401
        status, body = http("POST", f"{base}/v1/predict", {"inputs": ["a great film", "boring show"]}, key="k3y")
        assert status == 200 and len(body["outputs"]) == 2 and "label" in body["outputs"][0]
        status, body = http("POST", f"{base}/v1/kg/query", {"query": f"SELECT ?n WHERE {{ <{EX}ada> <{EX}name> ?n }}"}, key="k3y")
        assert status == 200 and body["results"]["bindings"] == [{"n": {"type": "literal", "value": "Ada"}}]
        # As the README's `curl -d '{...}'` sends it: JSON labelled as a form.
        as_curl = urllib.request.Request(f"{base}/v1/predict", data=b'{"inputs": ["a great film"]}', method="POST", headers={
            "Content-Type": "application/x-www-form-urlencoded", "Authorization": "Bearer k3y"})
        with urllib.request.urlopen(as_curl, timeout=30) as response:
            assert response.status == 200 and len(json.loads(response.read())["outputs"]) == 1
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read()
    assert "Application shutdown complete" in output and "Traceback" not in output, output
    assert re.search(r"precision auto: (fp32|bf16) \(bf16 [0-9.]+x the speed of fp32, [0-9.]+% of \d+ predictions agree, on .*test", output), output


# --- queue cap ------------------------------------------------------------------------------------


def test_a_full_queue_is_503_with_retry_after(predictor, monkeypatch):
    import threading

    real = predictor.predict_examples
    gate = threading.Event()
    monkeypatch.setattr(predictor, "predict_examples", lambda *a, **k: (gate.wait(20), real(*a, **k))[1])
    app = create_app({"tiny": predictor}, limits=ServeLimits(max_queue=3, max_wait_ms=0, max_inputs=8))
    batcher = app.state.batchers["tiny"]

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
            held = asyncio.ensure_future(http.post("/v1/predict", json={"inputs": TEXTS[:2]}))
            while batcher.pending < 2:  # the model is running the first request's batch
                await asyncio.sleep(0.01)
            fits = asyncio.ensure_future(http.post("/v1/predict", json={"inputs": TEXTS[2:3]}))
            while batcher.pending < 3:
                await asyncio.sleep(0.01)
            full = await http.post("/v1/predict", json={"inputs": TEXTS[3:4]})
            gate.set()
            return full, await held, await fits

    full, held, fits = asyncio.run(scenario())
    assert full.status_code == 503 and full.headers["retry-after"] == "1"
    assert "busy" in full.json()["detail"] and "at most 3" in full.json()["detail"]
    assert held.status_code == 200 and fits.status_code == 200
    assert held.json()["outputs"] == predictor.predict(TEXTS[:2])
    assert batcher.pending == 0
    batcher.close()
    monkeypatch.undo()
    # An idle run takes a request larger than the cap (it could never be served otherwise).
    app = create_app({"tiny": predictor}, limits=ServeLimits(max_queue=2))
    from fastapi.testclient import TestClient

    with TestClient(app) as client:
        assert client.post("/v1/predict", json={"inputs": TEXTS[:4]}).status_code == 200


# --- generation -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chat(dialogue_run):
    return lccore.load(dialogue_run.output_dir, device="cpu")


def sse(text: str) -> list[tuple[str, dict]]:
    """(event, data) pairs of a server-sent event stream; a plain `data:` event is 'message'."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((fields.get("event", "message"), json.loads(fields["data"])))
    return events


def test_generate_answers_and_streams_the_same_text(chat):
    from fastapi.testclient import TestClient

    with TestClient(create_app({"chat": chat})) as client:
        plain = client.post("/v1/generate", json={"prompt": "count to three"})
        assert plain.status_code == 200, plain.text
        output = plain.json()["output"]
        assert output["text"] == "one two three." and output["finish_reason"] == "stop" and output["tokens"] > 0
        history = client.post("/v1/generate", json={"prompt": {"messages": CONVERSATIONS[2][:3]}})
        assert history.json()["output"]["text"] == "why did the chicken cross the road?"
        assert client.get("/v1/models").json()["data"][0]["generates"] is True

    async def streamed(body):
        transport = httpx.ASGITransport(app=create_app({"chat": chat}))
        async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
            return await http.post("/v1/generate", json=body)

    for prompt in ("count to three", "what is the capital of france?"):
        response = asyncio.run(streamed({"prompt": prompt, "stream": True}))
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        events = sse(response.text)
        assert events[-1] == ("done", {"model": "chat"}) and {kind for kind, _ in events[:-1]} == {"message"}
        expected = chat.reasoner("generate").answer(prompt)["text"]
        assert "".join(data["text"] for _, data in events[:-1]) == expected
    cut = sse(asyncio.run(streamed({"prompt": "what is the capital of france?", "stream": True, "options": {"stop": ["capital"]}})).text)
    assert "".join(d["text"] for k, d in cut if k == "message") == "paris is the "


def test_generate_refuses_bad_options_prompts_and_runs_that_do_not_generate(chat, predictor):
    from fastapi.testclient import TestClient

    with TestClient(create_app({"chat": chat, "tiny": predictor})) as client:
        typo = client.post("/v1/generate", json={"model": "chat", "prompt": "hello", "options": {"max_new_token": 3}})
        assert typo.status_code == 422 and typo.json()["detail"].startswith("options.max_new_token"), typo.text
        low = client.post("/v1/generate", json={"model": "chat", "prompt": "hello", "options": {"max_new_tokens": 0}})
        assert low.status_code == 422 and "max_new_tokens" in low.json()["detail"]
        beam = client.post("/v1/generate", json={"model": "chat", "prompt": "hello", "options": {"strategy": "beam"}, "stream": True})
        assert beam.status_code == 422 and "beam search cannot stream" in beam.json()["detail"]
        unreadable = client.post("/v1/generate", json={"model": "chat", "prompt": {"messages": "hello"}})
        assert unreadable.status_code == 422 and unreadable.json()["detail"].startswith("prompt"), unreadable.text
        for odd in (None, 42, ["hello"], {"messages": []}, "   "):
            refused = client.post("/v1/generate", json={"model": "chat", "prompt": odd})
            assert refused.status_code == 422 and refused.json()["detail"].startswith("prompt"), (odd, refused.text)
            streamed = client.post("/v1/generate", json={"model": "chat", "prompt": odd, "stream": True})
            assert streamed.status_code == 422 and streamed.json()["detail"].startswith("prompt"), (odd, streamed.text)
        missing = client.post("/v1/generate", json={"model": "chat"})
        assert missing.status_code == 422 and missing.json()["field"] == "prompt"
        classifier = client.post("/v1/generate", json={"model": "tiny", "prompt": "hello"})
        assert classifier.status_code == 422 and "has no model that generates text" in classifier.json()["detail"]
        for response in (typo, low, beam, unreadable, classifier):
            assert "Traceback" not in response.text


def test_generate_is_guarded_by_the_policies_streamed_or_not(chat, tmp_path):
    from fastapi.testclient import TestClient

    audit = tmp_path / "audit.jsonl"
    app = create_app({"chat": chat}, ethics_items=[{"name": "blocklist", "terms": ["joke", "paris"]}], audit_log=audit)
    assert not chat.guard  # the served copy is guarded; the caller's predictor is untouched
    with TestClient(app) as client:
        asked = client.post("/v1/generate", json={"prompt": "tell me a joke"}).json()["output"]
        assert asked["refused"] is True and asked["stage"] == "input" and asked["reasons"]
        answered = client.post("/v1/generate", json={"prompt": "what is the capital of france?"}).json()["output"]
        assert answered["refused"] is True and answered["stage"] == "output"
        fine = client.post("/v1/generate", json={"prompt": "count to three"}).json()["output"]
        assert fine["text"] == "one two three."

        async def streamed(prompt):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://serve") as http:
                return sse((await http.post("/v1/generate", json={"prompt": prompt, "stream": True})).text)

        for prompt, stage in (("tell me a joke", "input"), ("what is the capital of france?", "output")):
            events = asyncio.run(streamed(prompt))
            assert events[-1][0] == "refusal" and events[-1][1]["stage"] == stage and events[-1][1]["decision"] == "block"
            assert [kind for kind, _ in events] == ["refusal"]  # the blocked sentence was never sent
    decisions = [json.loads(line)["decision"] for line in audit.read_text().splitlines()]
    assert decisions.count("block") == 4
    assert "tell me a joke" not in audit.read_text()  # hashes, never the text


def test_a_client_that_leaves_a_stream_stops_the_generation(chat):
    """Driven over raw ASGI: the client disconnects after the first piece; the model must stop."""
    calls = []
    hook = chat.model.register_forward_hook(lambda *args: calls.append(1))
    options = {"strategy": "sample", "temperature": 50.0, "seed": 3, "max_new_tokens": 200}
    app = create_app({"chat": chat})
    body = json.dumps({"prompt": "hello", "options": options, "stream": True}).encode()

    async def leave_after_first_piece():
        first, sent, asked = asyncio.Event(), [], []

        async def receive():
            if not asked:
                asked.append(1)
                return {"type": "http.request", "body": body, "more_body": False}
            await first.wait()
            return {"type": "http.disconnect"}

        async def send(message):
            sent.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                first.set()

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http", "path": "/v1/generate",
                 "raw_path": b"/v1/generate", "query_string": b"", "root_path": "", "headers": [(b"content-type", b"application/json")],
                 "client": ("127.0.0.1", 5000), "server": ("serve", 80)}
        await app(scope, receive, send)
        await app.state.batchers["chat"].run(lambda: None)  # the model thread is free: the stream has ended
        return sent

    try:
        full = chat.reasoner("generate", **options).answer("hello")
        assert full["tokens"] == 200, full  # sampling this hot never ends on its own within 200 tokens
        calls.clear()
        sent = asyncio.run(leave_after_first_piece())
    finally:
        hook.remove()
        app.state.batchers["chat"].close()
    assert sent[0]["status"] == 200 and b"data: " in sent[1]["body"]
    assert 0 < len(calls) < 100, len(calls)


# --- knowledge graph ----------------------------------------------------------------------------------

EX = "http://example.org/"


@pytest.fixture(scope="module")
def kg_store(tmp_path_factory):
    """An Oxigraph store directory, as `lccore kg import` leaves it: two people and 200 numbered things."""
    lccore_kg = pytest.importorskip("lccore_kg")
    folder = tmp_path_factory.mktemp("kg")
    data = folder / "people.ttl"
    things = "".join(f"ex:t{i} ex:n {i} .\n" for i in range(200))
    data.write_text(f'@prefix ex: <{EX}> .\nex:ada ex:knows ex:alan .\nex:ada ex:name "Ada" .\nex:alan ex:name "Alan" .\n{things}', encoding="utf-8")
    with lccore_kg.open_store(folder / "store") as store:
        store.load(data)
    return folder / "store"


def test_kg_query_answers_sparql_json_and_refuses_updates(kg_store):
    from fastapi.testclient import TestClient

    from lccore_serve.server import open_kg

    store = open_kg(kg_store)
    try:
        with TestClient(create_app({}, kg=store)) as client:
            assert client.get("/healthz").json() == {"status": "ok", "models": [], "kg": True}
            select = client.post("/v1/kg/query", json={"query": f"SELECT ?name WHERE {{ <{EX}ada> <{EX}knows> ?who . ?who <{EX}name> ?name }}"})
            assert select.status_code == 200, select.text
            assert select.json() == {"head": {"vars": ["name"]}, "results": {"bindings": [{"name": {"type": "literal", "value": "Alan"}}]}}
            ask = client.post("/v1/kg/query", json={"query": f"ASK {{ <{EX}alan> <{EX}knows> <{EX}ada> }}"})
            assert ask.json() == {"head": {}, "boolean": False}
            graph = client.post("/v1/kg/query", json={"query": f"CONSTRUCT {{ ?s <{EX}name> ?o }} WHERE {{ ?s <{EX}name> ?o }}"})
            assert graph.status_code == 200 and graph.headers["content-type"].startswith("application/ld+json")
            assert len(graph.json()) == 2
            for update in (f"INSERT DATA {{ <{EX}a> <{EX}b> <{EX}c> }}", "CLEAR ALL", f"DELETE WHERE {{ ?s <{EX}name> ?o }}", "LOAD <http://example.org/x.ttl>"):
                refused = client.post("/v1/kg/query", json={"query": update})
                assert refused.status_code == 400 and "updates" in refused.json()["detail"] and "SELECT, ASK" in refused.json()["detail"], update
            remote = client.post("/v1/kg/query", json={"query": "SELECT * WHERE { SERVICE <http://example.org/sparql> { ?s ?p ?o } }"})
            assert remote.status_code == 400 and "SERVICE" in remote.json()["detail"] and "--allow-network" not in remote.json()["detail"]
            malformed = client.post("/v1/kg/query", json={"query": "SELECT ?s WHERE { ?s ?p "})
            detail = malformed.json()["detail"]
            assert malformed.status_code == 400 and detail.startswith("query: SPARQL syntax error") and "\n" not in detail
            assert client.post("/v1/kg/query", json={}).json()["field"] == "query"
            assert client.post("/v1/predict", json={"inputs": ["x"]}).status_code == 404  # no runs here
            count = client.post("/v1/kg/query", json={"query": "SELECT (COUNT(*) AS ?n) WHERE { ?s ?p ?o }"})
            assert count.json()["results"]["bindings"][0]["n"]["value"] == "203"  # nothing was written
        with TestClient(create_app({}, kg=store, limits=ServeLimits(kg_max_rows=50))) as client:  # an answer is bounded, and says so
            cut = client.post("/v1/kg/query", json={"query": "SELECT ?s WHERE { ?s ?p ?o }"})
            assert len(cut.json()["results"]["bindings"]) == 50 and cut.headers["lccore-truncated"] == "true"
            whole = client.post("/v1/kg/query", json={"query": f"SELECT ?n WHERE {{ <{EX}ada> <{EX}name> ?n }}"})
            assert len(whole.json()["results"]["bindings"]) == 1 and "lccore-truncated" not in whole.headers
        with TestClient(create_app({}, kg=store, limits=ServeLimits(timeout_s=0.3))) as client:
            product = "SELECT (COUNT(*) AS ?n) WHERE { ?a ?b ?c . ?d ?e ?f . ?g ?h ?i }"  # 203³ rows: about 2 s
            slow = client.post("/v1/kg/query", json={"query": product})
            assert slow.status_code == 504 and "0.3 s" in slow.json()["detail"]
    finally:
        store.close()


def test_kg_query_without_a_store_is_404(client):
    response = client.post("/v1/kg/query", json={"query": "ASK { ?s ?p ?o }"})
    assert response.status_code == 404 and "--kg STORE" in response.json()["detail"]


@pytest.mark.parametrize(
    "argv, message",
    [
        ([], "give at least one RUN_DIR, or a knowledge graph with --kg STORE"),
        (["--kg", "no/such/store"], "--kg no/such/store: no such store directory"),
        (["--kg", ".", "--max-queue", "0"], "--max-queue must be at least 1"),
    ],
)
def test_serve_command_refuses_bad_arguments_in_one_line(argv, message, capsys):
    from lccore.cli import main

    assert main(["serve", *argv]) != 0
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_auto_precision_without_the_runs_data_serves_fp32(trained_run):
    from lccore_serve.server import measure_precision

    predictor = lccore.load(trained_run.output_dir, precision="auto")
    for split in ("train", "dev", "test"):
        setattr(predictor.config.task, split, "/nonexistent/data.jsonl")
    assert measure_precision(predictor) == "precision auto: fp32 (none of the run's data files is here to measure on)"
    assert predictor.autocast_dtype is None and predictor.predict(["a fine film"])[0]["label"]
