"""``lccore serve``: finished runs behind an HTTP API (FastAPI on uvicorn), for any task.

Concurrent ``/v1/predict`` requests for one run are gathered into one model batch (micro-batching:
the first request waits at most ``max_wait_ms`` for company, a batch holds at most
``max_batch_size`` inputs); the model runs in one worker thread per run, off the event loop, and
so do explanations and ``/v1/generate`` (streamed as server-sent events). Each predictor's guard
(``predictor.guard``: its ethics policies and audit log) screens inputs and outputs.
``/v1/kg/query`` runs read-only SPARQL on a knowledge-graph store opened through its kg_backend.
Guards: the ``Host`` header checked against the names the server was started for (421: DNS
rebinding), cross-origin form posts refused (403), an optional bearer key, body-size,
input-count and input-length limits (413), a cap on the inputs waiting per run (503 with
``Retry-After``), a per-request time limit (504) that also stops the work (a deadline from
:mod:`lccore.deadline`, checked between model batches and evaluations, frees the thread),
malformed or wrong-shaped bodies and unreadable inputs answered 422 with the field named, an
unknown run 404, and no traceback ever sent to a client (it goes to the server's log).

fastapi, pydantic and uvicorn are imported here only, never by ``lccore --help``.
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations, and the request
# models are local to create_app (pydantic is imported only when an app is built).
import asyncio
import contextlib
import copy
import fnmatch
import functools
import hmac
import ipaddress
import itertools
import json
import logging
import math
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urlsplit

import attrs

from . import deadline
from .errors import ConfigError, LccoreError, TimeLimitError, close_matches

log = logging.getLogger("lccore.serve")

#: Paths answered without the API key: the readiness probe and the static page (it holds no
#: data; the page sends the key the user types with each API call).
OPEN_PATHS = ("/healthz", "/")

#: Host names a server bound to ``--host`` always answers to: the loopback names (and --host).
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Bind addresses meaning "every interface": any IP address is then one of the server's own.
ANY_ADDRESS = ("0.0.0.0", "::", "")
#: In an allowed-host list: any IP address (not a name, so no page can rebind it to this machine).
ANY_IP = "<any ip>"


def _bounded(default, flag: str, low, high, *, above: bool = False):
    """A limit range-checked when :class:`ServeLimits` is made; the error names the CLI flag."""
    integer = isinstance(default, int)

    def check(instance, attribute, value):
        if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
            raise ConfigError(f"{flag} must be {'an integer' if integer else 'a number'}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{flag} must be a finite number, got {value}")
        if value < low or (above and value == low):
            raise ConfigError(f"{flag} must be {'above' if above else 'at least'} {low:g}, got {value:g}")
        if value > high:
            raise ConfigError(f"{flag} must be at most {high:g}, got {value:g}")

    return attrs.field(default=default, validator=check, metadata={"flag": flag, "min": low, "max": high})


@attrs.frozen
class ServeLimits:
    """What one request may ask for, and how requests are batched. Every limit has a range
    (``metadata["min"]``, ``["max"]``), checked here: a value outside it is a ConfigError naming
    the ``lccore serve`` flag."""

    max_body_bytes: int = _bounded(1 << 20, "--max-body-bytes", 1, 1 << 30)
    max_inputs: int = _bounded(64, "--max-inputs", 1, 10_000)
    #: Characters in one input (all its strings together), a prompt, or a SPARQL query: the
    #: ethics policies and the tokenizer read the whole text, whatever the model keeps of it.
    max_input_chars: int = _bounded(100_000, "--max-input-chars", 1, 1 << 30)
    timeout_s: float = _bounded(30.0, "--timeout", 0, 86_400, above=True)
    max_batch_size: int = _bounded(32, "--max-batch-size", 1, 4096)
    max_wait_ms: float = _bounded(5.0, "--max-wait-ms", 0, 10_000)
    #: Inputs one run may hold waiting or in its running batch; a request that would go past it
    #: is answered 503 with ``Retry-After`` (an idle run always takes one request).
    max_queue: int = _bounded(256, "--max-queue", 1, 1_000_000)
    #: Upper bounds on the costly ``/v1/generate`` options (the reasoner's own defaults are lower).
    max_new_tokens: int = _bounded(1024, "--max-new-tokens", 1, 100_000)
    max_num_beams: int = _bounded(8, "--max-num-beams", 1, 64)


class QueueFull(Exception):
    """A run's batcher holds ``max_queue`` inputs already: the client should retry later."""

    def __init__(self, pending: int, max_queue: int):
        super().__init__(f"the model is busy: {pending} inputs are waiting (at most {max_queue}); retry shortly")


class Pool:
    """Worker threads that run each job under its request's deadline (:mod:`lccore.deadline`:
    the job stops itself at its next check) and know which jobs have overrun it (``/healthz``)."""

    def __init__(self, workers: int, name: str):
        self.workers = workers
        self.name = name
        self.executor: Optional[ThreadPoolExecutor] = None
        self._running: dict[int, float] = {}  # job id -> its deadline (time.monotonic())
        self._ids = itertools.count()

    async def run(self, function, until: float | None = None):
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.name)
        job = next(self._ids)

        def call():
            self._running[job] = math.inf if until is None else until
            try:
                with deadline.limit(at=until):
                    return function()
            finally:
                self._running.pop(job, None)

        return await asyncio.get_running_loop().run_in_executor(self.executor, call)

    def overdue(self) -> int:
        """Jobs still running past their deadline: each holds a worker that cannot take new work."""
        now = time.monotonic()
        return sum(until < now for until in list(self._running.values()))

    def saturated(self) -> bool:
        return self.overdue() >= self.workers

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True)
            self.executor = None


class Batcher:
    """Micro-batches one run's predictions: ``await submit(examples)`` returns their records, in
    order. ``batches`` counts the model calls made (the tests and the benchmark read it)."""

    def __init__(self, predictor, *, max_batch_size: int = 32, max_wait_ms: float = 5.0, max_queue: int | None = None):
        self.predictor = predictor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000
        self.max_queue = max_queue
        # One thread per run: the model is never called from two threads at once.
        self.pool = Pool(1, "lccore-serve")
        self.batches = 0
        self.examples = 0
        #: Inputs submitted and not answered yet (queued, or in the batch the model is running).
        self.pending = 0
        self._queue: Optional[asyncio.Queue] = None
        self._loop = None
        self._task = None

    def _start(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # first use, or a new event loop (a test client per test)
            self._loop, self._queue = loop, asyncio.Queue()
            self._task = loop.create_task(self._serve())

    def check_room(self, count: int) -> None:
        """Raise :class:`QueueFull` when ``count`` more inputs would take the run past ``max_queue``."""
        if self.max_queue is not None and self.pending and self.pending + count > self.max_queue:
            raise QueueFull(self.pending, self.max_queue)

    def busy(self) -> str | None:
        """Why this run cannot take work now (its queue is full, or its model thread is still
        busy past a deadline), or None."""
        if self.max_queue is not None and self.pending >= self.max_queue:
            return f"the queue is full ({self.pending} inputs waiting, at most {self.max_queue})"
        if self.pool.saturated():
            return "the model thread is still busy with work past its time limit"
        return None

    async def submit(self, examples: list, until: float | None = None) -> list[dict]:
        """The records of ``examples``; their batch stops at ``until`` (``time.monotonic()``) when
        every request in it has passed its own."""
        self._start()
        self.check_room(len(examples))
        self.pending += len(examples)
        try:
            future = asyncio.get_running_loop().create_future()
            await self._queue.put((examples, future, until))
            return await future
        finally:
            self.pending -= len(examples)

    async def run(self, function, *args, until: float | None = None, **kwargs):
        """Run ``function`` in this run's model thread (explanations share the model with predict),
        stopped at ``until`` (``time.monotonic()``) at its next deadline check."""
        self._start()
        return await self.pool.run(functools.partial(function, *args, **kwargs), until)

    async def _serve(self) -> None:
        queue = self._queue
        while True:
            pending = [await queue.get()]
            size = len(pending[0][0])
            wait_until = asyncio.get_running_loop().time() + self.max_wait_s
            while size < self.max_batch_size:
                left = wait_until - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    break
                pending.append(item)
                size += len(item[0])
            pending = [item for item in pending if not item[1].done()]  # timed out
            if not pending:
                continue
            examples = [example for chunk, _, _ in pending for example in chunk]
            untils = [until for _, _, until in pending]
            self.batches += 1
            self.examples += len(examples)
            try:
                records = await self.run(self.predictor.predict_examples, examples, batch_size=max(len(examples), 1),
                                         until=None if None in untils else max(untils))
            except Exception as exc:  # every waiting request learns; the loop keeps serving
                for _, future, _ in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for chunk, future, _ in pending:
                if not future.done():
                    future.set_result(records[start:start + len(chunk)])
                start += len(chunk)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = self._loop = self._queue = None
        self.pool.close()


def model_names(run_dirs) -> dict[str, Path]:
    """Each run's name in the API (its directory name), refusing two runs with the same name."""
    names: dict[str, Path] = {}
    for run_dir in map(Path, run_dirs):
        name = run_dir.resolve().name
        if name in names:
            raise ConfigError(f"two runs would both be served as '{name}': {names[name]} and {run_dir}; rename one directory")
        names[name] = run_dir
    return names


DOCS_ASSETS = "/docs-assets"


def _add_offline_docs(app) -> None:
    """/docs: Swagger UI with its script and style served by this server (the `serve` extra's
    swagger-ui-bundle), so the page works with no network; without the package, a page that says so."""
    import importlib.util

    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse

    bundle = importlib.util.find_spec("swagger_ui_bundle")
    if bundle is None:
        @app.get("/docs", include_in_schema=False)
        def docs_missing():
            return HTMLResponse("<!DOCTYPE html><title>lccore serve</title><p>The API page needs the swagger-ui-bundle package: "
                                "pip install 'lccore[serve]'. The schema is at <a href=\"/openapi.json\">/openapi.json</a>.</p>")
        return
    from fastapi.staticfiles import StaticFiles
    from swagger_ui_bundle import swagger_ui_path

    app.mount(DOCS_ASSETS, StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="lccore serve - API",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js", swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon-32x32.png")


def create_app(predictors: dict, *, api_key: str | None = None, limits: ServeLimits = ServeLimits(),
               ethics_items: list = (), audit_log: str | Path | None = None, kg=None, allowed_hosts=None):
    """The ASGI app serving ``predictors`` ({name: Predictor}) and, with ``kg`` (a
    ``kg_backend``, see :func:`open_kg`), read-only SPARQL; ``api_key``: the bearer key every
    path but :data:`OPEN_PATHS` needs. Each predictor's guard (its run's ``ethics:`` policies and
    those given to :func:`lccore.load`) guards its inputs and outputs (a blocked input gets a
    refusal record) and keeps its audit log. ``ethics_items`` adds policies after those, and
    ``audit_log`` replaces the audit log, without changing the predictors given.

    ``allowed_hosts``: the ``Host`` names answered (see :func:`allowed_hosts_for`; ``"*"`` in it:
    any); None answers any Host, for a caller that puts the app behind its own check (``serve``
    always gives the list). Cross-origin form posts are refused either way."""
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
    from pydantic import BaseModel, Field

    predictors = {name: _with_guard(p, ethics_items, audit_log) for name, p in predictors.items()}
    for predictor in predictors.values():  # generate() and library loops check the time limit too
        deadline.watch(predictor.model)
    batchers = {name: Batcher(p, max_batch_size=limits.max_batch_size, max_wait_ms=limits.max_wait_ms, max_queue=limits.max_queue)
                for name, p in predictors.items()}
    # The ethics policies, the queries and the explain checks run here, off the event loop.
    helpers = Pool(min(32, (os.cpu_count() or 1) + 4), "lccore-serve-helper")
    producers: set = set()  # the streamed generations running

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

    class GenerateRequest(BaseModel):
        prompt: Any = Field(description="a user message, a source text or a plain prompt (a string), or an object the run's task reads, e.g. {\"messages\": [...]}")
        model: Optional[str] = Field(None, description="the run's name; optional when one run is served")
        options: dict[str, Any] = Field(default_factory=dict, description="the generate reasoner's options: strategy, max_new_tokens, temperature, top_k, top_p, num_beams, stop, seed, ...")
        stream: bool = Field(False, description="answer with server-sent events, one per piece of text")

    class KGQueryRequest(BaseModel):
        query: str = Field(description="a SPARQL SELECT, ASK, CONSTRUCT or DESCRIBE query (updates are refused)")

    class GenerateResponse(BaseModel):
        model: str
        output: dict[str, Any] = Field(description="{text, tokens, finish_reason}, or a refusal record {refused, stage, decision, reasons}")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for batcher in batchers.values():  # uvicorn has already let the requests in flight finish
            batcher.close()
        helpers.close()

    # FastAPI's /docs loads Swagger UI from a CDN (blank offline): served from the swagger-ui-bundle package instead.
    app = FastAPI(lifespan=lifespan, title="lccore serve", version=_version(), description="Predictions, explanations and generated text from finished lccore runs.",
                  docs_url=None, redoc_url=None)
    _add_offline_docs(app)
    app.state.batchers = batchers
    app.state.helpers = helpers
    app.state.limits = limits
    app.state.predictors = predictors
    app.state.kg = kg

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return JSONResponse({"detail": f"{first['field']}: {first['message']}", "field": first["field"], "errors": errors}, status_code=422)

    @app.exception_handler(QueueFull)
    async def busy(request: Request, exc: QueueFull):
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (see the server log)"}, status_code=500)

    def pick(name: str | None) -> str:
        if not batchers:
            raise HTTPException(404, detail="no runs are served here (only a knowledge graph: POST /v1/kg/query)")
        if name is None:
            if len(batchers) == 1:
                return next(iter(batchers))
            raise HTTPException(422, detail=f"model: required when {len(batchers)} runs are served ({', '.join(batchers)})")
        if name not in batchers:
            raise HTTPException(404, detail=f"unknown model '{name}'{close_matches(name, batchers)}; served: {', '.join(batchers)}")
        return name

    def check_size(value, field: str) -> None:
        size = _characters(value)
        if size > limits.max_input_chars:
            raise HTTPException(413, detail=f"{field}: {size} characters, at most {limits.max_input_chars} per input (--max-input-chars)")

    def parse(name: str, inputs: list) -> list:
        if len(inputs) > limits.max_inputs:
            raise HTTPException(413, detail=f"inputs: {len(inputs)} inputs, at most {limits.max_inputs} per request")
        for i, value in enumerate(inputs):
            check_size(value, f"inputs[{i}]")
        task = predictors[name].task
        examples = []
        for i, value in enumerate(inputs):
            try:
                examples.append(task.parse_input(value, f"inputs[{i}]"))
            except LccoreError as exc:
                return _unreadable(exc, i)
        return examples

    def start() -> float:
        """The deadline (``time.monotonic()``) of a request that starts now."""
        return time.monotonic() + limits.timeout_s

    async def timed(awaitable, until: float):
        """``awaitable``'s result, or 504 at ``until``: the work it started stops itself at its
        next deadline check (the same ``until``), which frees its thread."""
        try:
            return await asyncio.wait_for(awaitable, max(until - time.monotonic(), 0.0))
        except (asyncio.TimeoutError, TimeLimitError):
            raise HTTPException(504, detail=f"the request took longer than {limits.timeout_s:g} s") from None
        except (LccoreError, QueueFull):
            raise
        except Exception:  # the model failed: the log gets the traceback, the client a plain 500
            log.exception("model call failed")
            raise HTTPException(500, detail="internal error (see the server log)") from None

    @app.get("/healthz", responses={503: {"description": "saturated: a run's queue is full, or its model thread (or every helper thread) is still busy past a time limit"}})
    async def healthz():
        """200 once the runs are loaded (they are before the server listens) and while every run
        can take work; 503 ``{"status": "saturated", "saturated": {name: why}}`` when one cannot."""
        saturated = {name: why for name, batcher in batchers.items() if (why := batcher.busy())}
        if helpers.saturated():
            saturated["helpers"] = f"all {helpers.workers} helper threads are still busy past their time limits"
        body = {"status": "ok", "models": list(batchers), "kg": kg is not None}
        if saturated:
            return JSONResponse({**body, "status": "saturated", "saturated": saturated}, status_code=503, headers={"Retry-After": "1"})
        return body

    @app.get("/v1/models")
    async def models():
        """The runs served: name, task, base model (a local folder by its name only: no paths are
        shown), whether it generates text."""
        return {"models": [_describe(name, p) for name, p in predictors.items()]}

    @app.post("/v1/predict", response_model=PredictResponse, responses={503: {"description": "the run's queue is full; retry after Retry-After seconds"}})
    async def predict(body: PredictRequest):
        """One prediction record per input, in order (the same records as `lccore predict`)."""
        until = start()
        name = pick(body.model)
        examples = parse(name, body.inputs)
        if isinstance(examples, JSONResponse):
            return examples
        if not examples:
            return {"model": name, "outputs": []}
        batcher, predictor = batchers[name], predictors[name]
        batcher.check_room(len(examples))
        if not predictor.guard:
            return {"model": name, "outputs": await timed(batcher.submit(examples, until), until)}
        loop = asyncio.get_running_loop()

        def submit(admitted: list) -> list[dict]:  # from the guard's thread into the shared batches
            waiting = asyncio.run_coroutine_threadsafe(batcher.submit(admitted, until), loop)
            try:
                return waiting.result(timeout=deadline.remaining())
            except TimeoutError:
                waiting.cancel()
                raise TimeLimitError(f"stopped at the time limit of {limits.timeout_s:g} s") from None

        # A helper thread: the policies may run models of their own.
        guarded = helpers.run(functools.partial(predictor.guard.predict, predictor.task, examples, submit), until)
        return {"model": name, "outputs": await timed(guarded, until)}

    @app.post("/v1/explain", response_model=ExplainResponse)
    async def explain(body: ExplainRequest):
        """Attribution records from a registered explainer (the `explain` plugin's)."""
        until = start()
        name = pick(body.model)
        predictor = predictors[name]
        explainers = predictor.engine.names("explainer") if predictor.engine is not None else []
        if body.explainer not in explainers:
            known = ", ".join(explainers) or "none: install the explain plugin"
            raise HTTPException(404, detail=f"explainer: unknown explainer '{body.explainer}'{close_matches(body.explainer, explainers)}; registered: {known}")
        checked = parse(name, body.inputs)
        if isinstance(checked, JSONResponse):
            return checked
        if predictor.guard:  # an input the policies block is not explained either
            def blocked():
                for i, example in enumerate(checked):
                    for text in (predictor.task.texts_of(example) or {}).values():
                        allowed, verdict = predictor.guard.check(text, "input", where=f"explain inputs[{i}]")
                        if allowed is None:
                            return f"inputs[{i}]: refused by the ethics policies: {'; '.join(verdict['reasons'])}"
                return None

            refused = await timed(helpers.run(blocked, until), until)
            if refused:
                raise HTTPException(403, detail=refused)
        options = dict(body.options)
        if body.target is not None:
            check_size(body.target, "target")
            options["target"] = body.target
        try:  # options are checked here, on the event loop: a bad one never waits for the model thread
            predictor.engine.create("explainer", body.explainer, options, key=f"explainer.{body.explainer}")
            explaining = batchers[name].run(predictor.explain, list(body.inputs), body.explainer, until=until, **options)
            outputs = await timed(explaining, until)
        except LccoreError as exc:  # a bad option or target: the user's to fix
            raise HTTPException(422, detail=str(exc)) from None
        return {"model": name, "outputs": outputs}

    @app.post("/v1/generate", response_model=GenerateResponse,
              responses={200: {"content": {"text/event-stream": {}}, "description": "with \"stream\": true, server-sent events: `data: {\"text\"}` per piece, then `event: done` (or `event: refusal`, `event: error`)"}})
    async def generate(body: GenerateRequest):
        """Text from a generative run (dialogue, summarization, translation, clm) through the
        `generate` reasoner, behind the run's ethics policies; streamed as server-sent events."""
        until = start()
        name = pick(body.model)
        predictor = predictors[name]
        if not predictor.can_generate():
            raise HTTPException(422, detail=f"model: run '{name}' ({predictor.config.task.name}) has no model that generates text; serve a dialogue, summarization, translation or clm run")
        if isinstance(body.prompt, str) and not body.prompt.strip():
            raise HTTPException(422, detail="prompt: empty")
        check_size(body.prompt, "prompt")
        check_size(body.options, "options")
        for key, most, flag in (("max_new_tokens", limits.max_new_tokens, "--max-new-tokens"), ("num_beams", limits.max_num_beams, "--max-num-beams")):
            value = body.options.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value > most:
                raise HTTPException(422, detail=f"options.{key}: at most {most} on this server ({flag}), got {value}")
        try:
            reasoner = predictor.reasoner("generate", **body.options)
        except LccoreError as exc:  # e.g. "generate.max_new_token: unknown key ..."
            raise HTTPException(422, detail=_option_error(exc)) from None
        if body.stream:
            return await stream_generation(name, reasoner, body.prompt, until)
        try:
            output = await timed(batchers[name].run(reasoner.answer, body.prompt, until=until), until)
        except LccoreError as exc:  # a prompt the task cannot read, an option the strategy refuses
            raise HTTPException(422, detail=_prompt_error(exc)) from None
        return {"model": name, "output": output}

    async def stream_generation(name: str, reasoner, prompt, until: float):
        """Server-sent events from ``reasoner.stream(prompt)``, run in the run's model thread and
        fed to the event loop through a queue. The first item is awaited before answering, so a
        prompt or option the model refuses is still a plain 422; a client that goes away closes
        the stream, which stops the generation."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item) -> None:
            with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is reading
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def produce() -> None:
            pieces = None
            try:
                pieces = reasoner.stream(prompt)
                for piece in pieces:
                    if stop.is_set():
                        break
                    put(("piece", piece))
            except Exception as exc:  # noqa: BLE001 - handed to the event loop, reported there
                put(("error", exc))
            finally:
                if pieces is not None:
                    pieces.close()  # stops the model (the reasoner's stream ends its generation thread)
                put(("end", None))

        producer = asyncio.ensure_future(batchers[name].run(produce, until=until))
        producers.add(producer)  # a strong reference until it ends (the event loop keeps weak ones)
        producer.add_done_callback(producers.discard)

        async def next_item():
            return await asyncio.wait_for(queue.get(), max(until - time.monotonic(), 0.001))

        try:
            first = await next_item()
        except asyncio.TimeoutError:
            stop.set()
            raise HTTPException(504, detail=f"the request took longer than {limits.timeout_s:g} s") from None
        if first[0] == "error":
            stop.set()
            if isinstance(first[1], LccoreError):
                raise HTTPException(422, detail=_prompt_error(first[1]))
            log.error("generation failed", exc_info=first[1])
            raise HTTPException(500, detail="internal error (see the server log)")

        async def events():
            item = first
            try:
                while True:
                    kind, value = item
                    if kind == "end":
                        yield _event("done", {"model": name})
                        return
                    if kind == "error":
                        if not isinstance(value, LccoreError):
                            log.error("generation failed", exc_info=value)
                        yield _event("error", {"detail": _prompt_error(value) if isinstance(value, LccoreError) else "internal error (see the server log)"})
                        return
                    if isinstance(value, dict):  # a policy blocked the prompt or a sentence
                        yield _event("refusal", value)
                        return
                    yield _event(None, {"text": value})
                    try:
                        item = await next_item()
                    except asyncio.TimeoutError:
                        yield _event("error", {"detail": f"the request took longer than {limits.timeout_s:g} s"})
                        return
            finally:  # done, refused, timed out, or the client left: stop the generation
                stop.set()

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.post("/v1/kg/query", responses={200: {"content": {"application/sparql-results+json": {}, "application/ld+json": {}}}})
    async def kg_query(body: KGQueryRequest):
        """Read-only SPARQL on the served knowledge graph (`--kg STORE`): SPARQL 1.1 results JSON
        for SELECT and ASK, JSON-LD for CONSTRUCT and DESCRIBE, as `lccore kg query --json`."""
        until = start()
        if kg is None:
            raise HTTPException(404, detail="no knowledge graph is served: start lccore serve with --kg STORE")
        check_size(body.query, "query")

        def query():
            # The store stops a query at its timeout (pyoxigraph cannot be interrupted from a
            # thread; the backend runs it where it can be killed).
            return kg.query(body.query, timeout=max(deadline.remaining(), 0.001))

        try:
            # The store's query() parses first: an update, SERVICE, or a remote FROM is refused
            # before the store sees it (and the store is open read-only besides).
            result = await timed(helpers.run(query, until), until)
        except LccoreError as exc:
            raise HTTPException(400, detail=_sparql_error(exc)) from None
        return _kg_response(kg, result)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return PAGE

    return GuardMiddleware(app, api_key=api_key, max_body_bytes=limits.max_body_bytes, allowed_hosts=allowed_hosts)


def _with_guard(predictor, ethics_items: list, audit_log):
    """``predictor``, or a shallow copy of it (same model) whose guard adds ``ethics_items`` and
    writes to ``audit_log``: the caller's predictor is left as it was."""
    if not ethics_items and audit_log is None:
        return predictor
    from . import ethics
    from .plugins import Engine

    extra = ethics.build_policies(predictor.engine or Engine(), list(ethics_items)) if ethics_items else []
    served = copy.copy(predictor)
    served.guard = ethics.Guard(list(predictor.guard.policies) + extra, audit_log if audit_log is not None else predictor.guard.audit_log)
    return served


def open_kg(store: str | Path, engine=None):
    """The knowledge-graph store directory ``store`` (made by ``lccore kg import`` or ``kg build``)
    opened read-only through the ``oxigraph`` kg_backend (the ``kg`` plugin's)."""
    from .plugins import Engine

    path = Path(store)
    if not path.is_dir():
        raise ConfigError(f"--kg {store}: no such store directory (make one with `lccore kg import {store} FILE.ttl` or `lccore kg build`)")
    return (engine or Engine()).create("kg_backend", "oxigraph", {"path": str(path), "access": "read-only"}, key="kg")


def _sparql_error(exc: LccoreError) -> str:
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if "SPARQL update, not a query" in message:
        return "query: SPARQL updates (INSERT, DELETE, LOAD, CLEAR, CREATE, DROP, ...) are refused; this endpoint runs read-only SELECT, ASK, CONSTRUCT and DESCRIBE queries"
    return f"query: {message.replace(' (pass --allow-network)', '')}"


def _kg_response(store, result: dict):
    """SPARQL results JSON (SELECT, ASK) or JSON-LD (CONSTRUCT, DESCRIBE), as the store
    serialises them (:meth:`lccore.KGBackend.results_json`)."""
    from fastapi.responses import JSONResponse

    media_type = "application/ld+json" if result["type"] == "graph" else "application/sparql-results+json"
    return JSONResponse(store.results_json(result), media_type=media_type)


def _event(kind: str | None, data: dict) -> str:
    """One server-sent event (``data`` as one JSON line)."""
    head = f"event: {kind}\n" if kind else ""
    return f"{head}data: {json.dumps(data, ensure_ascii=False)}\n\n"


def _option_error(exc: LccoreError) -> str:
    """``options.x: ...`` for a generate option the reasoner refuses."""
    message = str(exc)
    for prefix in ("reasoner.generate.", "generate."):
        if message.startswith(prefix):
            return "options." + message[len(prefix):]
    return message if message.startswith("options") else f"options: {message}"


def _prompt_error(exc: LccoreError) -> str:
    message = str(exc)
    for prefix in ("prompt: ", "prompt"):  # the reasoner names the query 'prompt' when it streams
        if message.startswith(prefix):
            return message
    if message.startswith(("reasoner.generate.", "generate.", "options")):
        return _option_error(exc)
    if message.startswith("input 1: "):
        return "prompt: " + message[len("input 1: "):]
    return f"prompt: {message}"


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
    return {"id": name, "task": config.task.name, "base_model": _public_model_name(config.model), "generates": predictor.can_generate()}


def _public_model_name(model) -> str:
    """A hub id as it is; a local folder by its last name only (where it lies is not the
    client's business, and a page that reads it learns the user's name and layout)."""
    text = str(model)
    path = Path(text).expanduser()
    if path.is_absolute() or text.startswith((".", "~")) or os.sep in text.rstrip(os.sep) and path.exists():
        return path.resolve().name
    return text


def _characters(value) -> int:
    """Characters in all the strings of a JSON value (keys too), walked without recursion."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return total


def _version() -> str:
    from .version import __version__

    return __version__


class GuardMiddleware:
    """Pure ASGI, in front of everything: the ``Host`` check (421), the bearer key (401), the
    cross-origin form check (403) and the body-size limit (413), so that none of those requests
    reaches a route or the JSON parser. A body sent without a content type, or as a form (what
    ``curl -d`` does), is read as JSON when no other site's page sent it."""

    def __init__(self, app, *, api_key: str | None, max_body_bytes: int, allowed_hosts=None):
        self.app = app
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.allowed_hosts = None if allowed_hosts is None or "*" in allowed_hosts else [h.lower() for h in allowed_hosts]

    @property
    def state(self):
        return self.app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refused = self.foreign_host(headers.get("host"))
        if refused:
            return await _reply(send, 421, refused)
        if self.api_key is not None and scope["path"] not in OPEN_PATHS:
            scheme, _, given = headers.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self.api_key.encode()):
                return await _reply(send, 401, "missing or wrong API key: send 'Authorization: Bearer KEY'", [(b"www-authenticate", b"Bearer")])
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if scope["method"] not in ("GET", "HEAD", "OPTIONS") and content_type in SIMPLE_CONTENT_TYPES and _cross_site(headers):
            # What a page on another site can make a browser send without asking first (no CORS
            # preflight): a form, or text. Without this check any page could drive the server.
            return await _reply(send, 403, f"cross-origin request refused: a page at {headers.get('origin') or 'another site'} may not post "
                                           f"{content_type or 'a body without a content type'} here; send JSON with 'Content-Type: application/json'")
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
        if content_type in ("", "application/x-www-form-urlencoded"):
            # Every endpoint takes JSON: `curl -d '{...}'` sends it labelled as a form; read it as JSON.
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k.lower() != b"content-type"] + [(b"content-type", b"application/json")]}
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    def foreign_host(self, host: str | None) -> str | None:
        """Why a ``Host`` header is refused, or None. A page whose site name has been made to
        resolve to this machine (DNS rebinding) sends its own name here; only the names the
        server was started for are answered."""
        if self.allowed_hosts is None or host is None:  # HTTP/1.0 clients send none; browsers always do
            return None
        name = _host_name(host)
        if name is not None:
            for allowed in self.allowed_hosts:
                if allowed == ANY_IP and _is_ip(name) or fnmatch.fnmatchcase(name, allowed):
                    return None
        shown = ", ".join(h for h in self.allowed_hosts if h != ANY_IP) + (", any IP address" if ANY_IP in self.allowed_hosts else "")
        return (f"Host header {host[:100]!r} is not a name this server answers to ({shown}); "
                f"start lccore serve with --allowed-host NAME to serve under another name")


#: Bodies a browser sends to another site without a CORS preflight (the Fetch standard's
#: "CORS-safelisted" request content types; none: no content type at all).
SIMPLE_CONTENT_TYPES = ("", "application/x-www-form-urlencoded", "multipart/form-data", "text/plain")


def _cross_site(headers: dict) -> bool:
    """Whether a browser sent the request for a page of another origin (an ``Origin`` that is
    not this server's own, or ``Sec-Fetch-Site`` saying so). No ``Origin``: not a browser's
    cross-origin request (curl, programs), which keeps working."""
    if headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        return True
    origin = headers.get("origin")
    if origin is None:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return True
    return not parts.netloc or parts.netloc.lower() != headers.get("host", "").lower()


def _host_name(host: str) -> str | None:
    """'Example.org:8000' -> 'example.org', '[::1]:8000' -> '::1'; None when malformed."""
    try:
        parts = urlsplit("//" + host)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def allowed_hosts_for(host: str, extra=()) -> list[str]:
    """The ``Host`` names a server bound to ``host`` answers to: the loopback names, ``host``
    itself, ``extra`` (``--allowed-host``; ``*.example.org`` patterns, ``*`` for any: unsafe
    without an API key), and any IP address when bound to every interface (:data:`ANY_IP`): a page
    cannot rebind an address, only a name."""
    names = [*LOCAL_HOSTS, *([] if host in ANY_ADDRESS else [_host_name(f"[{host}]" if ":" in host else host) or host]), *extra]
    if host in ANY_ADDRESS:
        names.append(ANY_IP)
    return list(dict.fromkeys(name.lower() for name in names))


async def _reply(send, status: int, detail: str, headers=()) -> None:
    payload = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]})
    await send({"type": "http.response.body", "body": payload})


def measure_precision(predictor) -> str:
    """``--precision auto`` for a server: served batches are too small to measure on, so fp32 and
    bf16 are compared once, at start, on the run's own data (its test, dev or training file, as
    the run config names it); without any of them the run is served in fp32. Says what it chose."""
    from .data import data_files
    from .predictor import AUTO_SAMPLE

    for split in ("test", "dev", "train"):
        path = getattr(predictor.config.task, split)
        if path and Path(data_files(path)[0]).is_file():
            choice = predictor.choose_precision(list(itertools.islice(predictor.task.read(data_files(path)[0]), AUTO_SAMPLE)))
            return (f"precision auto: {choice['chosen']} (bf16 {choice['bf16_speedup']:.2f}x the speed of fp32, "
                    f"{choice['agreement']:.1%} of {choice['measured_on']} predictions agree, on {path})")
    predictor.autocast_dtype = None
    return "precision auto: fp32 (none of the run's data files is here to measure on)"


def serve(run_dirs, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None, limits: ServeLimits = ServeLimits(),
          precision: str = "fp32", device: str | None = None, graceful_s: float = 30.0, ethics_items: list = (), audit_log: str | None = None,
          kg: str | None = None, allowed_hosts=()) -> None:
    """Load ``run_dirs`` (and open the ``kg`` store read-only) and serve them until SIGINT/SIGTERM;
    requests in flight are finished (for at most ``graceful_s`` seconds) before the process exits.
    The server answers the ``Host`` names of :func:`allowed_hosts_for` (``host``, the loopback
    names and ``allowed_hosts``)."""
    import uvicorn

    from .predictor import load

    if not run_dirs and kg is None:
        raise ConfigError("serve: give at least one RUN_DIR, or a knowledge graph with --kg STORE")
    names = model_names(run_dirs)
    check_port(port)
    with contextlib.ExitStack() as stack:
        store = open_kg(kg) if kg is not None else None
        if store is not None:
            stack.callback(store.close)
        listener = stack.enter_context(bind(host, port))  # before the models load: a port in use is said at once
        # Each run's guard: its own ethics: policies, then ethics_items, logging to audit_log.
        predictors = {name: load(run_dir, precision=precision, device=device, ethics=list(ethics_items), audit_log=audit_log) for name, run_dir in names.items()}
        if precision == "auto":
            for name, predictor in predictors.items():
                print(f"lccore serve: {name}: {measure_precision(predictor)}", flush=True)
        app = create_app(predictors, api_key=api_key, limits=limits, kg=store, allowed_hosts=allowed_hosts_for(host, allowed_hosts))
        served = ", ".join([*names, *([f"the knowledge graph {kg}"] if kg else [])])
        print(f"lccore serve: {served} on http://{f'[{host}]' if ':' in host else host}:{port} (docs at /docs)", flush=True)
        config = uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=graceful_s, lifespan="on")
        uvicorn.Server(config).run(sockets=[listener])


def check_port(port) -> None:
    """Ports 1 to 65535. Port 0 (an ephemeral port) is refused: the address printed and given to
    clients must be known before the server starts."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigError(f"--port must be between 1 and 65535, got {port}")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (listening starts with the server), or a one-line
    ConfigError: a port out of range, an address this machine does not have, a port in use."""
    check_port(port)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
    except (OSError, UnicodeError) as exc:  # socket.gaierror is an OSError; an over-long name a UnicodeError
        listener.close()
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        raise ConfigError(f"--host {host} --port {port}: cannot listen there: {reason}") from None
    return listener


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
<p><button id="predict">Predict</button><button id="generate" hidden>Generate</button>
<label>Explainer <input id="explainer" value="integrated_gradients" size="20" title="empty: no explanation"></label></p>
<div id="words"></div>
<p id="note"></p>
<pre id="out"></pre>
<script>
const $ = (id) => document.getElementById(id);
const generates = {};
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
function pickModel() { $("generate").hidden = !generates[$("model").value]; }
async function loadModels() {
  try {
    const data = await call("GET", "/v1/models");
    $("model").textContent = "";
    for (const m of data.models) {
      const o = document.createElement("option");
      o.value = m.id; o.textContent = m.id + " (" + m.task + ")";
      generates[m.id] = m.generates;
      $("model").append(o);
    }
    pickModel();
    show("");
  } catch (e) { show("models: " + e.message + " (enter the API key, then press Predict)", true); }
}
$("model").onchange = pickModel;
$("predict").onclick = async () => {
  $("words").textContent = ""; $("note").textContent = "";
  try {
    if (!$("model").value) await loadModels();
    const model = $("model").value || null, text = $("text").value;
    const data = await call("POST", "/v1/predict", {model, inputs: [text]});
    show(data.outputs[0]);
    if (data.outputs[0].refused || !$("explainer").value) return;
    try {
      const explained = await call("POST", "/v1/explain", {model, inputs: [text], explainer: $("explainer").value});
      if (explained.outputs.length) colour(explained.outputs[0]);
      $("note").textContent = "Words coloured by attribution (" + $("explainer").value + "): green for, red against the prediction.";
    } catch (e) { $("note").textContent = "explanation: " + e.message; }
  } catch (e) { show(e.message, true); }
};
$("generate").onclick = async () => {
  $("words").textContent = ""; $("note").textContent = ""; show("");
  try {
    const response = await fetch("/v1/generate", {method: "POST", headers: headers(), body: JSON.stringify({model: $("model").value || null, prompt: $("text").value, stream: true})});
    if (!response.ok) {
      const data = await response.json().catch(() => ({}));
      throw new Error(response.status + ": " + (data.detail || response.statusText));
    }
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let buffer = "", text = "";
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, {stream: true});
      let cut;
      while ((cut = buffer.indexOf("\\n\\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let kind = "message", data = "";
        for (const line of block.split("\\n")) {
          if (line.startsWith("event: ")) kind = line.slice(7);
          else if (line.startsWith("data: ")) data += line.slice(6);
        }
        const payload = JSON.parse(data);
        if (kind === "message") { text += payload.text; show(text); }
        else if (kind === "refusal") { show(payload, true); return; }
        else if (kind === "error") { show(payload.detail, true); return; }
      }
    }
  } catch (e) { show(e.message, true); }
};
loadModels();
</script>
</body></html>
"""
