"""Streaming a generation to an HTTP client, shared by lccore's ``/v1/generate`` (:mod:`.routes`)
and the OpenAI-compatible endpoints (:mod:`.openai_api`): the generation runs in a thread and its
pieces reach the event loop through a queue; errors become the message a client is shown."""

import asyncio
import contextlib
import json
import logging
import threading
import time
from typing import Optional

from lccore import LccoreError, TimeLimitError, deadline

from .continuous import applies

log = logging.getLogger("lccore.serve")


#: Server-sent events go out as they are made: no caching, no buffering proxy.
STREAM_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


async def open_stream(server, name: str, reasoner, prompt, until: float, *, producers: set, field: str = "prompt", continuous: dict | None = None,
                      streams=None, **stream_options):
    """``reasoner.stream(prompt, **stream_options)`` run in the run's model thread (or, when the
    run's continuous batcher takes the request, in a thread of ``streams`` waiting on it) and fed
    to the event loop through a queue: ``(first item, next_item, stop)``. Items are ``("piece", text or
    refusal dict)``, ``("error", exception)`` and ``("end", None)``; ``await next_item()`` gives the
    next one, or an ``("error", TimeLimitError)`` at ``until``; ``stop.set()`` stops the model. The
    first item is awaited here, so a prompt or option the model refuses is still a plain 422 (a 504
    past ``until``); a client that goes away closes the stream, which stops the generation."""
    from fastapi import HTTPException

    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    stop = threading.Event()

    def put(item) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone: nobody is reading
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def produce() -> None:
        pieces = None
        try:
            pieces = reasoner.stream(prompt, **stream_options)
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

    batcher = (continuous or {}).get(name)
    options = getattr(getattr(reasoner, "reasoner", reasoner), "options", None)
    if batcher is not None and streams is not None and options is not None and applies(server.predictors[name], options):
        stream_options["batcher"] = batcher

        def within_deadline():
            with deadline.limit(at=until):
                produce()

        release = server.admit(name)  # in the run's queue, as model-thread work is
        producer = asyncio.ensure_future(loop.run_in_executor(streams, within_deadline))
        producer.add_done_callback(lambda _: release())
    else:
        producer = asyncio.ensure_future(server.in_model_thread(name, produce, until=until))
    producers.add(producer)  # a strong reference until it ends (the event loop keeps weak ones)
    producer.add_done_callback(producers.discard)

    async def next_item():
        try:
            return await asyncio.wait_for(queue.get(), max(until - time.monotonic(), 0.001))
        except asyncio.TimeoutError:
            stop.set()
            return ("error", TimeLimitError(f"the request took longer than {server.limits.timeout_s:g} s"))

    first = await next_item()
    if first[0] == "error":
        stop.set()
        if isinstance(first[1], TimeLimitError):
            raise HTTPException(504, str(first[1]))
        if isinstance(first[1], LccoreError):
            raise HTTPException(422, _prompt_error(first[1], field))
        log.error("generation failed", exc_info=first[1])
        raise HTTPException(500, "internal error (see the server log)")
    return first, next_item, stop


def _failure(exc: BaseException, field: str = "prompt") -> str:
    """What a client is told of an error met while streaming (the log gets the traceback)."""
    if isinstance(exc, TimeLimitError):
        return str(exc)
    if isinstance(exc, LccoreError):
        return _prompt_error(exc, field)
    log.error("generation failed", exc_info=exc)
    return "internal error (see the server log)"


def _event(kind: Optional[str], data: dict) -> str:
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


def _prompt_error(exc: LccoreError, field: str = "prompt") -> str:
    """``field: ...`` for a query the run's task cannot read (``prompt``; ``messages`` for a chat)."""
    message = str(exc)
    if message.startswith(field):
        return message
    if message.startswith(("reasoner.generate.", "generate.", "options")):
        return _option_error(exc)
    for prefix in ("prompt: ", "input 1: "):  # the reasoner names the query 'prompt' when it streams
        if message.startswith(prefix):
            return f"{field}: {message[len(prefix):]}"
    if message.startswith("prompt") and field == "prompt":
        return message
    return f"{field}: {message}"
