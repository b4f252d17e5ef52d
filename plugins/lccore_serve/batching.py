"""The server's threads: a run's micro-batcher and the pools that run work under a request's deadline."""

from __future__ import annotations

import asyncio
import functools
import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Optional

from lccore import deadline


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
    """Micro-batches one run's model calls: ``await submit(examples)`` returns their records, in
    order; ``await submit(examples, call=f)`` batches another per-example function of the model
    (``f(examples, batch_size=...)``, e.g. embeddings) with the requests that ask for the same ``f``.
    ``batches`` counts the model calls made (the tests and the benchmark read it)."""

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

    def occupy(self, count: int) -> Callable[[], None]:
        """Count ``count`` inputs against ``max_queue`` (:class:`QueueFull` when there is no room)
        until the function returned is called."""
        self.check_room(count)
        self.pending += count

        def release() -> None:
            self.pending -= count

        return release

    async def submit(self, examples: list, until: float | None = None, *, call=None) -> list:
        """The results of ``examples`` (``call``, default ``predictor.predict_examples``); their
        batch stops at ``until`` (``time.monotonic()``) when every request in it has passed its own."""
        self._start()
        release = self.occupy(len(examples))
        try:
            future = asyncio.get_running_loop().create_future()
            await self._queue.put((examples, future, until, call or self.predictor.predict_examples))
            return await future
        finally:
            release()

    async def run(self, function, *args, until: float | None = None, **kwargs):
        """Run ``function`` in this run's model thread (explanations and generation share the
        model with predict), stopped at ``until`` (``time.monotonic()``) at its next deadline check.
        It counts as one input of the queue while it waits and runs: a flood of generation
        requests gets 503s as a flood of predictions does."""
        release = self.occupy(1)
        try:
            return await self._in_model_thread(functools.partial(function, *args, **kwargs), until)
        finally:
            release()

    async def _in_model_thread(self, function, until: float | None):
        self._start()
        return await self.pool.run(function, until)

    async def _serve(self) -> None:
        queue = self._queue
        held = None  # a request for another function than the batch being gathered: it starts the next one
        while True:
            pending = [held if held is not None else await queue.get()]
            held = None
            size, call = len(pending[0][0]), pending[0][3]
            wait_until = asyncio.get_running_loop().time() + self.max_wait_s
            while size < self.max_batch_size:
                left = wait_until - asyncio.get_running_loop().time()
                if left <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    break
                if item[3] != call:  # bound methods: equal, not identical
                    held = item
                    break
                pending.append(item)
                size += len(item[0])
            pending = [item for item in pending if not item[1].done()]  # timed out
            if not pending:
                continue
            examples = [example for chunk, _, _, _ in pending for example in chunk]
            untils = [until for _, _, until, _ in pending]
            self.batches += 1
            self.examples += len(examples)
            try:
                records = await self._in_model_thread(functools.partial(call, examples, batch_size=max(len(examples), 1)),
                                                      None if None in untils else max(untils))
            except Exception as exc:  # every waiting request learns; the loop keeps serving
                for _, future, _, _ in pending:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for chunk, future, _, _ in pending:
                if not future.done():
                    future.set_result(records[start:start + len(chunk)])
                start += len(chunk)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        self._task = self._loop = self._queue = None
        self.pool.close()
