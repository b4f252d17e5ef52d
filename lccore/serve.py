"""``lccore serve``: finished runs behind an HTTP API (FastAPI on uvicorn), for any task.

Concurrent ``/v1/predict`` requests for one run are gathered into one model batch (micro-batching:
the first request waits at most ``max_wait_ms`` for company, a batch holds at most
``max_batch_size`` inputs); the model runs in one worker thread per run, off the event loop.
Guards: an optional bearer key, body-size and input-count limits (413), a per-request timeout
(504), malformed or wrong-shaped bodies and unreadable inputs answered 422 with the field named,
an unknown run 404, and no traceback ever sent to a client (it goes to the server's log).

fastapi, pydantic and uvicorn are imported here only, never by ``lccore --help``.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations, and the request
# models are local to create_app (pydantic is imported only when an app is built).
import asyncio
import contextlib
import hmac
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional

import attrs

from .errors import ConfigError, LccoreError, close_matches

log = logging.getLogger("lccore.serve")

#: Paths answered without the API key: the readiness probe and the static page (it holds no
#: data; the page sends the key the user types with each API call).
OPEN_PATHS = ("/healthz", "/")


@attrs.frozen
class ServeLimits:
    """What one request may ask for, and how requests are batched."""

    max_body_bytes: int = 1 << 20
    max_inputs: int = 64
    timeout_s: float = 30.0
    max_batch_size: int = 32
    max_wait_ms: float = 5.0


class Batcher:
    """Micro-batches one run's predictions: ``await submit(examples)`` returns their records, in
    order. ``batches`` counts the model calls made (the tests and the benchmark read it)."""

    def __init__(self, predictor, *, max_batch_size: int = 32, max_wait_ms: float = 5.0):
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.executor: Optional[ThreadPoolExecutor] = None
        self.batches = 0
        self.examples = 0
        self._queue: Optional[asyncio.Queue] = None
        self._loop = None
        self._task = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.executor is None:  # one thread per run: the model is never called from two threads at once
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lccore-serve")
        if self._loop is not loop:  # first use, or a new event loop (a test client per test)
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._serve())

    async def submit(self, examples: list) -> list[dict]:
        self._start()
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((examples, future))
        return await future

    async def run(self, function, *args, **kwargs):
        """Run ``function`` in this run's model thread (explanations share the model with predict)."""
        self._start()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, lambda: function(*args, **kwargs))

    async def _serve(self) -> None:
        queue = self._queue
        while True:
            pending = [await queue.get()]
            size = len(pending[0][0])
            deadline = asyncio.get_running_loop().time() + self.max_wait_s
            while size < self.max_batch_size:
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    break
                pending.append(item)
                size += len(item[0])
            pending = [(examples, future) for examples, future in pending if not future.done()]  # timed out
            if not pending:
                continue
            examples = [example for chunk, _ in pending for example in chunk]
            self.batches += 1
            self.examples += len(examples)
            try:
                records = await self.run(self.predictor.predict_examples, examples, batch_size=max(len(examples), 1))
            except Exception as exc:  # every waiting request learns; the loop keeps serving
                for _, future in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for chunk, future in pending:
                if not future.done():
                    future.set_result(records[start:start + len(chunk)])
                start += len(chunk)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = self._loop = self._queue = None
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None


def model_names(run_dirs) -> dict[str, Path]:
    """Each run's name in the API (its directory name), refusing two runs with the same name."""
    names: dict[str, Path] = {}
    for run_dir in map(Path, run_dirs):
        name = run_dir.resolve().name
        if name in names:
            raise ConfigError(f"two runs would both be served as '{name}': {names[name]} and {run_dir}; rename one directory")
        names[name] = run_dir
    return names


def create_app(predictors: dict, *, api_key: str | None = None, limits: ServeLimits = ServeLimits(),
               ethics_items: list = (), audit_log: str | Path | None = None):
    """The ASGI app serving ``predictors`` ({name: Predictor}); ``api_key``: the bearer key every
    path but :data:`OPEN_PATHS` needs. Each run's ``ethics:`` policies, then ``ethics_items``,
    guard its inputs and outputs (a blocked input gets a refusal record); their decisions are
    appended to ``audit_log`` (hashes, never the text)."""
    import threading

    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field

    from . import ethics
    from .plugins import Engine

    policies = {}
    for name, predictor in predictors.items():
        items = list(predictor.config.ethics) + list(ethics_items)
        policies[name] = ethics.build_policies(predictor.engine or Engine(), items) if items else []
    audit_lock = threading.Lock()
    batchers = {name: Batcher(p, max_batch_size=limits.max_batch_size, max_wait_ms=limits.max_wait_ms) for name, p in predictors.items()}

    class PredictRequest(BaseModel):
        inputs: list[Any] = Field(description="strings, or JSON objects the run's task reads")
        model: Optional[str] = Field(None, description="the run's name (GET /v1/models); optional when one run is served")

    class PredictResponse(BaseModel):
        model: str
        outputs: list[Any] = Field(description="one prediction record per input, in order")

    class ExplainRequest(PredictRequest):
        explainer: str = Field("shap", description="shap, integrated_gradients, attention, random, or a plugin's")
        target: Optional[str] = Field(None, description="the class (or entity) to explain; default: the predicted one")
        options: dict[str, Any] = Field(default_factory=dict, description="explainer options, e.g. {\"n_steps\": 32}")

    class ExplainResponse(BaseModel):
        model: str
        outputs: list[Any] = Field(description="attribution records: one per input and explained target")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for batcher in batchers.values():  # uvicorn has already let the requests in flight finish
            batcher.close()

    app = FastAPI(lifespan=lifespan, title="lccore serve", version=_version(), description="Predictions (and explanations) from finished lccore runs.")
    app.state.batchers = batchers
    app.state.limits = limits

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return JSONResponse({"detail": f"{first['field']}: {first['message']}", "field": first["field"], "errors": errors}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (see the server log)"}, status_code=500)

    def pick(name: str | None) -> str:
        if name is None:
            if len(batchers) == 1:
                return next(iter(batchers))
            raise HTTPException(422, detail=f"model: required when {len(batchers)} runs are served ({', '.join(batchers)})")
        if name not in batchers:
            raise HTTPException(404, detail=f"unknown model '{name}'{close_matches(name, batchers)}; served: {', '.join(batchers)}")
        return name

    def parse(name: str, inputs: list) -> list:
        if len(inputs) > limits.max_inputs:
            raise HTTPException(413, detail=f"inputs: {len(inputs)} inputs, at most {limits.max_inputs} per request")
        task = predictors[name].task
        examples = []
        for i, value in enumerate(inputs):
            try:
                examples.append(task.parse_input(value, f"inputs[{i}]"))
            except LccoreError as exc:
                return _unreadable(exc, i)
        return examples

    async def timed(awaitable):
        try:
            return await asyncio.wait_for(awaitable, limits.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPException(504, detail=f"the request took longer than {limits.timeout_s:g} s") from None
        except LccoreError:
            raise
        except Exception:  # the model failed: the log gets the traceback, the client a plain 500
            log.exception("model call failed")
            raise HTTPException(500, detail="internal error (see the server log)") from None

    @app.get("/healthz")
    async def healthz():
        """200 once the runs are loaded (they are before the server listens)."""
        return {"status": "ok", "models": list(batchers)}

    @app.get("/v1/models")
    async def models():
        """The runs served: name, task, base model and run directory."""
        return {"models": [_describe(name, p) for name, p in predictors.items()]}

    @app.post("/v1/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest):
        """One prediction record per input, in order (the same records as `lccore predict`)."""
        name = pick(body.model)
        examples = parse(name, body.inputs)
        if isinstance(examples, JSONResponse):
            return examples
        if not examples:
            return {"model": name, "outputs": []}
        if not policies[name]:
            return {"model": name, "outputs": await timed(batchers[name].submit(examples))}
        loop = asyncio.get_running_loop()

        def guarded():  # a worker thread: the policies may run models of their own
            audit = ethics.AuditLog(audit_log)
            submit = lambda admitted: asyncio.run_coroutine_threadsafe(batchers[name].submit(admitted), loop).result()  # noqa: E731
            records = ethics.guarded_predict(policies[name], predictors[name].task, examples, submit, audit)
            with audit_lock:
                audit.flush()
            return records

        return {"model": name, "outputs": await timed(asyncio.to_thread(guarded))}

    @app.post("/v1/explain", response_model=ExplainResponse)
    async def explain(body: ExplainRequest):
        """Attribution records from a registered explainer (the `explain` plugin's)."""
        name = pick(body.model)
        predictor = predictors[name]
        explainers = predictor.engine.names("explainer") if predictor.engine is not None else []
        if body.explainer not in explainers:
            known = ", ".join(explainers) or "none: install the explain plugin"
            raise HTTPException(404, detail=f"explainer: unknown explainer '{body.explainer}'{close_matches(body.explainer, explainers)}; registered: {known}")
        checked = parse(name, body.inputs)
        if isinstance(checked, JSONResponse):
            return checked
        if policies[name]:  # an input the policies block is not explained either
            audit = ethics.AuditLog(audit_log)
            for i, example in enumerate(checked):
                for text in (predictor.task.texts_of(example) or {}).values():
                    result = ethics.apply(policies[name], text, "input")
                    audit.record(text, "input", result, where=f"explain inputs[{i}]")
                    if result["decision"] == "block":
                        with audit_lock:
                            audit.flush()
                        raise HTTPException(403, detail=f"inputs[{i}]: refused by the ethics policies: {'; '.join(result['reasons'])}")
            with audit_lock:
                audit.flush()
        options = dict(body.options)
        if body.target is not None:
            options["target"] = body.target
        try:
            outputs = await timed(batchers[name].run(predictor.explain, list(body.inputs), body.explainer, **options))
        except LccoreError as exc:  # a bad option or target: the user's to fix
            raise HTTPException(422, detail=str(exc)) from None
        return {"model": name, "outputs": outputs}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE

    return GuardMiddleware(app, api_key=api_key, max_body_bytes=limits.max_body_bytes)


def _unreadable(exc: LccoreError, index: int):
    from fastapi.responses import JSONResponse

    field = f"inputs[{index}]"
    message = str(exc)
    return JSONResponse({"detail": message if message.startswith(field) else f"{field}: {message}", "field": field}, status_code=422)


def _field(loc) -> str:
    """('body', 'inputs', 3) -> 'inputs[3]'; a JSON syntax error is reported on 'body'."""
    parts = [p for p in loc if p != "body"]
    if not parts or not isinstance(parts[0], str):
        return "body"
    text = parts[0]
    for part in parts[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _describe(name: str, predictor) -> dict:
    config = predictor.config
    return {"id": name, "task": config.task.name, "base_model": str(config.model), "run_dir": str(predictor.run_dir)}


def _version() -> str:
    from . import __version__

    return __version__


class GuardMiddleware:
    """Pure ASGI, in front of everything: the bearer key (401) and the body-size limit (413), so
    that neither an unauthenticated nor an oversized request reaches a route or the JSON parser."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes

    @property
    def state(self):
        return self.app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                return await _reply(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'", [(b"www-authenticate", b"Bearer")])
        too_big = f"request body over {self.max_body_bytes} bytes"
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return await _reply(send, 413, too_big)
        if scope["method"] not in ("POST", "PUT", "PATCH"):
            return await self.app(scope, receive, send)
        body, more = b"", True
        while more:  # read it all here, counting, so a chunked body cannot pass the limit either
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_body_bytes:
                return await _reply(send, 413, too_big)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


async def _reply(send, status: int, detail: str, headers=()) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


def serve(run_dirs, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, limits: ServeLimits = ServeLimits(),
          precision: str = "fp32", device: str | None = None, graceful_s: float = 30.0, ethics_items: list = (), audit_log: str | None = None) -> None:
    """Load ``run_dirs`` and serve them until SIGINT/SIGTERM; requests in flight are finished
    (for at most ``graceful_s`` seconds) before the process exits."""
    import uvicorn

    from .predictor import load

    names = model_names(run_dirs)
    predictors = {name: load(run_dir, precision=precision, device=device) for name, run_dir in names.items()}
    app = create_app(predictors, api_key=api_key, limits=limits, ethics_items=ethics_items, audit_log=audit_log)
    print(f"lccore serve: {', '.join(names)} on http://{host}:{port} (POST /v1/predict, docs at /docs)", flush=True)
    config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=graceful_s, lifespan="on")
    uvicorn.Server(config).run()


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lccore serve</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:16px/1.5 system-ui,sans-serif;max-width:46rem;margin:2rem auto;padding:0 1rem;color:#222}
textarea{width:100%;min-height:6rem;font:inherit}
button{font:inherit;padding:.3rem 1rem;margin-right:.5rem}
pre{background:#f4f4f4;padding:.75rem;overflow:auto;white-space:pre-wrap}
#words span{padding:0 .1rem;border-radius:3px}
.error{color:#a00}
label{margin-right:1rem}
</style></head>
<body>
<h1>lccore serve</h1>
<p><label>Model <select id="model"></select></label>
<label>API key <input id="key" type="password" placeholder="if the server needs one"></label></p>
<textarea id="text" placeholder="Type a text"></textarea>
<p><button id="predict">Predict</button><button id="explain">Explain</button>
<label>Explainer <input id="explainer" value="integrated_gradients" size="20"></label></p>
<div id="words"></div>
<pre id="out"></pre>
<script>
const $ = (id) => document.getElementById(id);
function headers() {
  const h = {"Content-Type": "application/json"};
  if ($("key").value) h["Authorization"] = "Bearer " + $("key").value;
  return h;
}
async function call(method, path, body) {
  const response = await fetch(path, {method, headers: headers(), body: body && JSON.stringify(body)});
  const data = await response.json().catch(() => ({detail: response.statusText}));
  if (!response.ok) throw new Error(response.status + ": " + (data.detail || response.statusText));
  return data;
}
function show(value, isError) {
  $("out").textContent = typeof value === "string" ? value : JSON.stringify(value, null, 2);
  $("out").className = isError ? "error" : "";
}
function colour(record) {
  const box = $("words");
  box.textContent = "";
  const max = Math.max(1e-9, ...record.words.map((w) => Math.abs(w.score)));
  let at = 0;
  for (const w of record.words) {
    box.append(record.text.slice(at, w.start));
    const span = document.createElement("span");
    const a = Math.abs(w.score) / max;
    span.style.background = w.score >= 0 ? `rgba(0,160,60,${a})` : `rgba(220,40,40,${a})`;
    span.title = w.score.toFixed(4);
    span.textContent = record.text.slice(w.start, w.end);
    box.append(span);
    at = w.end;
  }
  box.append(record.text.slice(at));
}
async function loadModels() {
  try {
    const data = await call("GET", "/v1/models");
    $("model").textContent = "";
    for (const m of data.models) {
      const o = document.createElement("option");
      o.value = m.id; o.textContent = m.id + " (" + m.task + ")";
      $("model").append(o);
    }
    show("");
  } catch (e) { show("models: " + e.message + " (enter the API key, then press Predict)", true); }
}
$("predict").onclick = async () => {
  $("words").textContent = "";
  try {
    if (!$("model").value) await loadModels();
    const data = await call("POST", "/v1/predict", {model: $("model").value || null, inputs: [$("text").value]});
    show(data.outputs[0]);
  } catch (e) { show(e.message, true); }
};
$("explain").onclick = async () => {
  try {
    if (!$("model").value) await loadModels();
    const data = await call("POST", "/v1/explain", {model: $("model").value || null, inputs: [$("text").value], explainer: $("explainer").value});
    if (data.outputs.length) { colour(data.outputs[0]); show(data.outputs[0].prediction); } else show(data);
  } catch (e) { show(e.message, true); }
};
loadModels();
</script>
</body></html>
"""
