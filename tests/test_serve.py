"""`lccore serve`: the HTTP API in-process (httpx over ASGI, FastAPI's TestClient), its guards,
micro-batching, and one real server process on a free port."""

from __future__ import annotations

import asyncio
import json
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
from lccore.serve import ServeLimits, create_app, model_names  # noqa: E402

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
    models = client.get("/v1/models").json()["models"]
    assert [m["id"] for m in models] == ["tiny"] and models[0]["task"] == "text_classification"
    schema = client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/models", "/healthz"} <= set(schema["paths"])
    assert client.get("/docs").status_code == 200
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
        for method, path in [("GET", "/v1/models"), ("POST", "/v1/predict"), ("POST", "/v1/explain"), ("GET", "/openapi.json"), ("GET", "/docs")]:
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


def test_lccore_serve_process_serves_guards_and_stops_on_sigterm(trained_run):
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TEST_SERVE_KEY": "k3y"}
    process = subprocess.Popen(
        [sys.executable, "-m", "lccore", "serve", str(trained_run.output_dir), "--port", str(port), "--api-key-env", "TEST_SERVE_KEY"],
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
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once shut down
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = process.stdout.read()
    assert "Application shutdown complete" in output and "Traceback" not in output, output
