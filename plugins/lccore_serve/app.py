"""The ASGI app of ``lccore serve``: the runs, their batchers and limits, the generic routes
(``/healthz``, ``/v1/models``, ``/v1/predict``, ``/v1/embeddings``, the page at ``/``), and every
plugin's routes (``register_routes``) behind the same guards and error format.

Concurrent requests for one run are gathered into one model batch (micro-batching: the first
request waits at most ``max_wait_ms`` for company, a batch holds at most ``max_batch_size``
inputs); the model runs in one worker thread per run, off the event loop. Each predictor's guard
(``predictor.guard``: its ethics policies and audit log) screens inputs and outputs. Every error is
one line with the field it is about, in a body both lccore's and OpenAI's clients read
(:mod:`lccore_serve.errors`); no traceback ever goes to a client (it goes to the server's log).
"""

# No `from __future__ import annotations`: FastAPI reads the route annotations, and the request
# models are local to create_app (pydantic is imported only when an app is built).
import asyncio
import contextlib
import copy
import functools
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

import attrs

import lccore
from lccore import ConfigError, LccoreError, TimeLimitError, deadline

from .batching import Batcher, Pool, QueueFull
from .embeddings import embed_texts, encoder_of
from .errors import RequestError, error_body
from .guard import GuardMiddleware

log = logging.getLogger("lccore.serve")

DOCS_ASSETS = "/docs-assets"


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
    #: Upper bounds on the costly generation options (the reasoner's own defaults are lower).
    max_new_tokens: int = _bounded(1024, "--max-new-tokens", 1, 100_000)
    max_num_beams: int = _bounded(8, "--max-num-beams", 1, 64)
    #: Rows (or triples) of one SPARQL answer at /v1/kg/query: more are cut, and the answer says so.
    kg_max_rows: int = _bounded(10_000, "--kg-max-rows", 1, 10_000_000)


class Server:
    """What each plugin's ``register_routes`` receives (see :func:`lccore.hookspecs.register_routes`):
    a router of its own, the runs served, and the helpers every endpoint needs so that a plugin's
    routes batch, time out, guard and fail exactly as the built-in ones do."""

    def __init__(self, *, predictors: dict, batchers: dict, helpers: Pool, limits: ServeLimits, kg, plugin: str = "serve"):
        from fastapi import APIRouter

        self.router = APIRouter()
        self.plugin = plugin
        self.predictors = predictors  # {name: lccore.Predictor}, each with its guard
        self.batchers = batchers
        self.helpers = helpers
        self.limits = limits
        self.kg = kg  # the knowledge-graph store opened with --kg (read-only), or None
        self.shutdown_callbacks: list = []  # shared by every plugin's view

    def for_plugin(self, plugin: str) -> "Server":
        from fastapi import APIRouter

        server = copy.copy(self)
        server.plugin, server.router = plugin, APIRouter()
        return server

    def on_shutdown(self, callback) -> None:
        """Call ``callback()`` when the server stops, after the requests in flight have ended
        (a plugin's own threads and engines end there)."""
        self.shutdown_callbacks.append(callback)

    def pick(self, name: Optional[str]) -> str:
        """The served run a request names (``model``); optional when one run is served."""
        if not self.batchers:
            raise RequestError(404, "model: no runs are served here (only a knowledge graph: POST /v1/kg/query)")
        if name is None:
            if len(self.batchers) == 1:
                return next(iter(self.batchers))
            raise RequestError(422, f"model: required when {len(self.batchers)} runs are served ({', '.join(self.batchers)})")
        if name not in self.batchers:
            raise RequestError(404, f"model: unknown model '{name}'{lccore.errors.close_matches(name, self.batchers)}; served: {', '.join(self.batchers)}",
                               field="model")
        return name

    def deadline(self) -> float:
        """The deadline (``time.monotonic()``) of a request that starts now."""
        return time.monotonic() + self.limits.timeout_s

    def check_size(self, value, field: str) -> None:
        """413 when the strings of ``value`` hold more than ``--max-input-chars`` characters."""
        size = characters(value)
        if size > self.limits.max_input_chars:
            raise RequestError(413, f"{field}: {size} characters, at most {self.limits.max_input_chars} per input (--max-input-chars)")

    def parse(self, name: str, inputs: list, field: str = "inputs") -> list:
        """``inputs`` read by run ``name``'s task (``parse_input``), after the count and size limits."""
        if len(inputs) > self.limits.max_inputs:
            raise RequestError(413, f"{field}: {len(inputs)} inputs, at most {self.limits.max_inputs} per request")
        for i, value in enumerate(inputs):
            self.check_size(value, f"{field}[{i}]")
        task = self.predictors[name].task
        examples = []
        for i, value in enumerate(inputs):
            try:
                examples.append(task.parse_input(value, f"{field}[{i}]"))
            except LccoreError as exc:
                message = str(exc)
                raise RequestError(422, message if message.startswith(f"{field}[{i}]") else f"{field}[{i}]: {message}", field=f"{field}[{i}]") from None
        return examples

    async def timed(self, awaitable, until: float):
        """``awaitable``'s result, or 504 at ``until``: the work it started stops itself at its
        next deadline check (the same ``until``), which frees its thread."""
        try:
            return await asyncio.wait_for(awaitable, max(until - time.monotonic(), 0.0))
        except (asyncio.TimeoutError, TimeLimitError):
            raise RequestError(504, f"the request took longer than {self.limits.timeout_s:g} s") from None
        except (LccoreError, QueueFull, RequestError):
            raise
        except Exception:  # the model failed: the log gets the traceback, the client a plain 500
            log.exception("model call failed")
            raise RequestError(500, "internal error (see the server log)") from None

    async def in_model_thread(self, name: str, function, *args, until: float, **kwargs):
        """``function(*args, **kwargs)`` in run ``name``'s model thread (never two model calls at
        once), stopped at ``until`` at its next deadline check; one input of the run's queue while it
        waits and runs (503 when the queue is full); not timed: wrap it in :meth:`timed`."""
        return await self.batchers[name].run(function, *args, until=until, **kwargs)

    def admit(self, name: str) -> Callable[[], None]:
        """Count one request against run ``name``'s queue (``--max-queue``; 503 when full) until
        the function returned is called: for work a plugin runs outside the model thread and the
        batches (a continuously batched generation)."""
        return self.batchers[name].occupy(1)

    async def in_helper_thread(self, function, until: float):
        """``function()`` in a helper thread (ethics policies, queries): off the event loop."""
        return await self.helpers.run(function, until)

    async def predict(self, name: str, examples: list, until: float, *, call=None, field: str = "inputs") -> list:
        """The records of ``examples`` from run ``name``, batched with other requests and guarded
        by its ethics policies (an input they block gets a refusal record); with ``call`` (a
        per-example function of the model, ``call(examples, batch_size=N)``), its results instead,
        the inputs still screened. Timed: 504 at ``until``."""
        if not examples:
            return []
        batcher, predictor = self.batchers[name], self.predictors[name]
        batcher.check_room(len(examples))
        if not predictor.guard:
            return await self.timed(batcher.submit(examples, until, call=call), until)
        loop = asyncio.get_running_loop()

        def submit(admitted: list) -> list:  # from the guard's thread into the shared batches
            waiting = asyncio.run_coroutine_threadsafe(batcher.submit(admitted, until, call=call), loop)
            try:
                return waiting.result(timeout=deadline.remaining())
            except TimeoutError:
                waiting.cancel()
                raise TimeLimitError(f"stopped at the time limit of {self.limits.timeout_s:g} s") from None

        if call is None:
            # A helper thread: the policies may run models of their own.
            guarded = self.helpers.run(functools.partial(predictor.guard.predict, predictor.task, examples, submit), until)
            return await self.timed(guarded, until)
        refused = await self.timed(self.helpers.run(functools.partial(self.blocked, name, examples, field), until), until)
        if refused:
            raise RequestError(403, refused)
        return await self.timed(batcher.submit(examples, until, call=call), until)

    def blocked(self, name: str, examples: list, field: str = "inputs") -> str | None:
        """Why run ``name``'s input policies refuse one of ``examples`` (parsed inputs, or strings)
        (``field[i]: ...``), or None.
        Runs the policies: call it in a helper thread."""
        predictor = self.predictors[name]
        for i, example in enumerate(examples):
            texts = {"text": example} if isinstance(example, str) else predictor.task.texts_of(example) or {}
            for text in texts.values():
                allowed, verdict = predictor.guard.check(text, "input", where=f"{field}[{i}]")
                if allowed is None:
                    return f"{field}[{i}]: refused by the ethics policies: {'; '.join(verdict['reasons'])}"
        return None


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
               ethics_items: list = (), audit_log: str | Path | None = None, kg=None, allowed_hosts=None, engine=None):
    """The ASGI app serving ``predictors`` ({name: Predictor}) and, with ``kg`` (an open
    ``kg_backend`` store), the knowledge graph; ``api_key``: the bearer key every path but
    :data:`lccore_serve.guard.OPEN_PATHS` needs. Each predictor's guard (its run's ``ethics:``
    policies and those given to :func:`lccore.load`) guards its inputs and outputs and keeps its
    audit log. ``ethics_items`` adds policies after those, and ``audit_log`` replaces the audit
    log, without changing the predictors given. The routes of ``engine``'s plugins (default: the
    installed ones) are added through ``register_routes``.

    ``allowed_hosts``: the ``Host`` names answered (see :func:`lccore_serve.guard.allowed_hosts_for`;
    ``"*"`` in it: any); None answers any Host, for a caller that puts the app behind its own check
    (``serve`` always gives the list). Cross-origin form posts are refused either way."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import HTMLResponse, JSONResponse
    from pydantic import BaseModel, Field
    from starlette.exceptions import HTTPException

    predictors = {name: _with_guard(p, ethics_items, audit_log) for name, p in predictors.items()}
    for predictor in predictors.values():  # generate() and library loops check the time limit too
        deadline.watch(predictor.model)
    batchers = {name: Batcher(p, max_batch_size=limits.max_batch_size, max_wait_ms=limits.max_wait_ms, max_queue=limits.max_queue)
                for name, p in predictors.items()}
    # The ethics policies, the queries and the explain checks run here, off the event loop.
    helpers = Pool(min(32, (os.cpu_count() or 1) + 4), "lccore-serve-helper")
    server = Server(predictors=predictors, batchers=batchers, helpers=helpers, limits=limits, kg=kg)
    # One function per run (the batcher batches requests asking for the same one).
    embedders = {name: functools.partial(embed_texts, p) for name, p in predictors.items() if encoder_of(p) is not None}

    class PredictRequest(BaseModel):
        inputs: list[Any] = Field(description="strings, or JSON objects the run's task reads")
        model: Optional[str] = Field(None, description="the run's name (GET /v1/models); optional when one run is served")

    class PredictResponse(BaseModel):
        model: str
        outputs: list[Any] = Field(description="one prediction record per input, in order")

    class EmbeddingsRequest(BaseModel):
        input: Any = Field(description="a string or a list of strings (OpenAI's format)")
        model: Optional[str] = Field(None, description="the run's name; optional when one run is served")
        encoding_format: str = Field("float", description="float: lists of numbers; base64: little-endian float32 (what the openai client asks for)")
        dimensions: Optional[int] = Field(None, description="the vectors' length: only the encoder's own (its hidden size) is served; a shorter one is refused")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        for batcher in batchers.values():  # uvicorn has already let the requests in flight finish
            batcher.close()
        helpers.close()
        for callback in server.shutdown_callbacks:
            try:
                callback()
            except Exception:  # one plugin's cleanup does not stop the others'
                log.exception("a plugin's shutdown callback failed")

    # FastAPI's /docs loads Swagger UI from a CDN (blank offline): served from the swagger-ui-bundle package instead.
    app = FastAPI(lifespan=lifespan, title="lccore serve", version=lccore.__version__,
                  description="Predictions, embeddings, explanations, generated text and knowledge-graph queries from finished lccore runs.",
                  docs_url=None, redoc_url=None)
    _add_offline_docs(app)
    app.state.batchers = batchers
    app.state.helpers = helpers
    app.state.limits = limits
    app.state.predictors = predictors
    app.state.kg = kg

    def failure(status: int, detail: str, field: str | None = None, headers: dict | None = None, code: str | None = None):
        return JSONResponse(error_body(status, detail, field, code), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError):
        errors = [{"field": _field(e.get("loc", ())), "message": e.get("msg", "invalid")} for e in exc.errors()]
        first = errors[0] if errors else {"field": "body", "message": "invalid request"}
        return JSONResponse(error_body(422, f"{first['field']}: {first['message']}", first["field"], errors=errors), status_code=422)

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError):
        return failure(exc.status, exc.detail, exc.field, exc.headers)

    @app.exception_handler(HTTPException)  # a plugin's own HTTPException (its .code, if set, is OpenAI's error code), and 404/405 for unknown paths
    async def http_error(request: Request, exc: HTTPException):
        detail, where = str(exc.detail), f"{request.method} {request.url.path[:200]}"
        if exc.status_code == 404 and detail == "Not Found":  # no route: say which there are
            detail = f"{where}: no such endpoint here; this server answers {', '.join(endpoints(app))}"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{where}: this path answers {(getattr(exc, 'headers', None) or {}).get('Allow', 'other methods')}"
        return failure(exc.status_code, detail, headers=getattr(exc, "headers", None), code=getattr(exc, "code", None))

    @app.exception_handler(QueueFull)
    async def busy(request: Request, exc: QueueFull):
        return failure(503, str(exc), headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("%s %s failed", request.method, request.url.path)
        return failure(500, "internal error (see the server log)")

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

    created = int(time.time())

    @app.get("/v1/models")
    async def models():
        """The runs served, in OpenAI's list format (``data``: ``id``, ``object``, ``created``,
        ``owned_by``), each also with its task, base model (a local folder by its name only: no
        paths are shown), and whether it generates text and embeds."""
        return {"object": "list", "data": [model_card(name) for name in predictors]}

    @app.get("/v1/models/{model}")
    async def retrieve_model(model: str):
        """One served run, as in the list (OpenAI's ``client.models.retrieve``); 404 naming the
        runs served for any other name."""
        return model_card(server.pick(model))

    def model_card(name: str) -> dict:
        return {"id": name, "object": "model", "created": created, "owned_by": "lccore", **_describe(predictors[name])}

    @app.post("/v1/predict", response_model=PredictResponse, responses={503: {"description": "the run's queue is full; retry after Retry-After seconds"}})
    async def predict(body: PredictRequest):
        """One prediction record per input, in order (the same records as `lccore predict`)."""
        until = server.deadline()
        name = server.pick(body.model)
        examples = server.parse(name, body.inputs)
        return {"model": name, "outputs": await server.predict(name, examples, until)}

    @app.post("/v1/embeddings")
    async def embeddings(body: EmbeddingsRequest):
        """OpenAI's embeddings endpoint for encoder runs: one vector per input, the mean of the
        encoder's last hidden states over the text's tokens, L2-normalised (sentence-transformers'
        pooling for MiniLM and its kin), batched with other requests."""
        until = server.deadline()
        name = server.pick(body.model)
        predictor = predictors[name]
        if body.encoding_format not in ("float", "base64"):
            raise RequestError(422, f"encoding_format: 'float' or 'base64', got {body.encoding_format!r}")
        texts = [body.input] if isinstance(body.input, str) else body.input
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise RequestError(422, "input: a string or a non-empty list of strings (token arrays are not read)")
        if name not in embedders:
            raise RequestError(422, f"model: run '{name}' ({predictor.config.task.name}) has no encoder to embed with; serve an encoder run")
        if len(texts) > limits.max_inputs:
            raise RequestError(413, f"input: {len(texts)} inputs, at most {limits.max_inputs} per request")
        for i, text in enumerate(texts):
            server.check_size(text, f"input[{i}]")
        vectors = await server.predict(name, texts, until, call=embedders[name], field="input")
        size = len(vectors[0]["embedding"])
        if body.dimensions is not None and body.dimensions != size:
            # Cutting a vector short keeps its meaning only for a model trained for it (Matryoshka): refused, not ignored.
            raise RequestError(422, f"dimensions: run '{name}' embeds in {size} dimensions and cannot shorten them; send {size} or leave it out")
        tokens = sum(v["tokens"] for v in vectors)
        return {"object": "list", "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                "data": [{"object": "embedding", "index": i, "embedding": _encoded(v["embedding"], body.encoding_format)} for i, v in enumerate(vectors)]}

    page = (Path(__file__).parent / "page.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index():
        return page

    add_plugin_routes(app, server, engine or next((p.engine for p in predictors.values() if p.engine is not None), None) or lccore.Engine())
    return GuardMiddleware(app, api_key=api_key, max_body_bytes=limits.max_body_bytes, allowed_hosts=allowed_hosts)


def add_plugin_routes(app, server: Server, engine) -> None:
    """Each plugin's ``register_routes`` on a router of its own; a plugin that raises, or that
    adds a path and method the app already answers, is left out with a warning naming it."""
    taken = {(route.path, method) for route in app.routes for method in getattr(route, "methods", None) or ()}
    for plugin, added in engine.add_routes(server.for_plugin):
        mine = {(route.path, method) for route in added.router.routes for method in getattr(route, "methods", None) or ()}
        clash = sorted(mine & taken)
        if clash:
            log.warning("plugin '%s' adds %s, which the server already answers: its routes are left out", plugin,
                        ", ".join(f"{method} {path}" for path, method in clash))
            continue
        app.include_router(added.router)
        taken |= mine


def _with_guard(predictor, ethics_items: list, audit_log):
    """``predictor``, or a shallow copy of it (same model) whose guard adds ``ethics_items`` and
    writes to ``audit_log``: the caller's predictor is left as it was."""
    if not ethics_items and audit_log is None:
        return predictor
    from lccore import ethics

    extra = ethics.build_policies(predictor.engine or lccore.Engine(), list(ethics_items)) if ethics_items else []
    served = copy.copy(predictor)
    served.guard = ethics.Guard(list(predictor.guard.policies) + extra, audit_log if audit_log is not None else predictor.guard.audit_log)
    return served


def _encoded(vector: list[float], encoding_format: str):
    """A vector as OpenAI sends it: a list of floats, or base64 of little-endian float32."""
    if encoding_format == "float":
        return vector
    import base64
    import struct

    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def endpoints(app) -> list[str]:
    """``"POST /v1/chat/completions"``, ... : the API's routes, the plugins' too (its OpenAPI schema)."""
    return [f"{method.upper()} {path}" for path, operations in app.openapi()["paths"].items() for method in operations]


def _field(loc) -> str:
    """('body', 'inputs', 3) -> 'inputs[3]'; a JSON syntax error is reported on 'body'."""
    parts = [p for p in loc if p != "body"]
    if not parts or not isinstance(parts[0], str):
        return "body"
    text = parts[0]
    for part in parts[1:]:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text


def _describe(predictor) -> dict:
    config = predictor.config
    return {"task": config.task.name, "base_model": _public_model_name(config.model), "generates": predictor.can_generate(),
            "embeds": encoder_of(predictor) is not None}


def _public_model_name(model) -> str:
    """A hub id as it is; a local folder by its last name only (where it lies is not the
    client's business, and a page that reads it learns the user's name and layout)."""
    text = str(model)
    path = Path(text).expanduser()
    if path.is_absolute() or text.startswith((".", "~")) or os.sep in text.rstrip(os.sep) and path.exists():
        return path.resolve().name
    return text


def characters(value) -> int:
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
