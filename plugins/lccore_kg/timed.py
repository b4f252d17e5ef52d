"""Queries with a time limit, run where they can be stopped: in a worker process.

pyoxigraph evaluates a query in Rust, where no Python-level signal, exception or flag reaches it,
and rdflib can sit in a regular expression's C code just as long; a thread that timed out would
hold its CPU and memory. So a query with a time limit runs in a worker process
(``spawn``: no copy of the parent's threads or RocksDB handles), which is killed at the deadline.
The caller gets :class:`lccore.TimeLimitError` and a store that works as before; the next timed
query starts a fresh worker.

Workers are kept warm between queries, up to :data:`MAX_IDLE` per store, each holding its own
view of the store (an Oxigraph directory opened read-only, a copy of an rdflib graph, an
endpoint's settings); a write through the store object retires them, so a timed query always
sees what the store held when it was called.
"""

from __future__ import annotations

import atexit
import math
import os
import subprocess
import sys
import threading
import time
import weakref
from multiprocessing.connection import Connection

from lccore import ConfigError, LccoreError, TimeLimitError

#: Idle workers kept per store; more run at once when that many timed queries do.
MAX_IDLE = 4


def check_timeout(timeout, key: str = "timeout", *, most: float | None = None) -> float:
    """``timeout`` as seconds: a positive, finite number (at most ``most``); ConfigError naming ``key``."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0:
        raise ConfigError(f"{key}: expected a positive, finite number of seconds, got {timeout!r}")
    if most is not None and timeout > most:
        raise ConfigError(f"{key}: at most {most:g} seconds, got {timeout:g}")
    return float(timeout)


def main() -> None:
    """A worker process: ``python -m lccore_kg.timed``, speaking pickles on stdin and stdout."""
    inbox = Connection(os.dup(0), writable=False)
    outbox = Connection(os.dup(1), readable=False)
    os.dup2(2, 1)  # what a library prints goes to stderr, not into the replies
    threading.Thread(target=_end_with, args=(os.getppid(),), daemon=True).start()
    try:
        store = inbox.recv()()
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        outbox.send(("error", _picklable(exc)))
        return
    outbox.send(("ready", None))
    while True:
        try:
            sparql, kind, allow_network, max_rows = inbox.recv()
        except EOFError:  # the parent has gone
            return
        try:
            reply = ("ok", store._query(sparql, kind, allow_network, max_rows))
        except BaseException as exc:  # noqa: BLE001
            reply = ("error", _picklable(exc))
        outbox.send(reply)


def _end_with(parent: int) -> None:
    """End this worker when its parent has gone, even in the middle of a query (pyoxigraph
    releases the GIL while it works): a parent killed outright leaves no query running."""
    while os.getppid() == parent:
        time.sleep(1)
    os._exit(1)


def _picklable(exc: BaseException) -> LccoreError:
    if isinstance(exc, LccoreError):
        return exc
    return ConfigError(f"SPARQL query failed: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")


class _Process:
    """One worker. A plain subprocess rather than multiprocessing's spawn, which would run the
    caller's ``__main__`` again in it; in a session of its own, so that Ctrl-C in a terminal
    reaches only the caller, which then kills it."""

    def __init__(self):
        path = os.pathsep.join(entry for entry in sys.path if entry)
        env = {**os.environ, "PYTHONPATH": path}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "lccore_kg.timed"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            env=env, start_new_session=True,
        )
        _running.add(self)
        self.outbox = Connection(os.dup(self.process.stdin.fileno()), readable=False)
        self.inbox = Connection(os.dup(self.process.stdout.fileno()), writable=False)
        self.process.stdin.close()
        self.process.stdout.close()
        self.ready = False

    def receive(self, deadline: float):
        """The worker's next message, or None when the deadline passes first."""
        left = deadline - time.monotonic()
        if left <= 0 or not self.inbox.poll(left):
            return None
        try:
            return self.inbox.recv()
        except EOFError:  # ended without a word: killed for memory, or a crash in native code
            code = self.process.wait()
            raise ConfigError(f"SPARQL query: the worker process ended unexpectedly (exit status {code})") from None

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.inbox.close()
        self.outbox.close()
        _running.discard(self)


_running: "weakref.WeakSet[_Process]" = weakref.WeakSet()


@atexit.register
def _kill_all() -> None:
    for worker in list(_running):
        worker.kill()


class QueryWorkers:
    """The worker processes of one store."""

    def __init__(self):
        self._idle: list[tuple[object, _Process]] = []
        self._lock = threading.Lock()

    def run(self, worker_store, version, request: tuple, timeout: float):
        """``store._query(*request)`` in a worker; TimeLimitError after ``timeout`` seconds.
        ``worker_store()``: what a new worker builds its store with (a picklable callable);
        ``version`` names the store's state: workers made for another are retired.

        A worker still starting at the deadline is left to finish, for the next query (a limit
        shorter than a start would otherwise never see one ready); a worker running the query is
        killed, and a replacement starts at once."""
        deadline = time.monotonic() + timeout
        stopped = TimeLimitError(f"query: stopped after {timeout:g} s (the time limit); the query was cancelled, and its worker process ended")
        worker = self._take(version) or self._start(worker_store)
        if not worker.ready:
            try:
                message = worker.receive(deadline)
            except BaseException:
                worker.kill()
                raise
            if message is None:
                self._give_back(version, worker)
                raise stopped
            if message[0] == "error":
                worker.kill()
                raise message[1]
            worker.ready = True
        try:
            worker.outbox.send(request)
            reply = worker.receive(deadline)
            if reply is None:
                raise stopped
        except BaseException as exc:
            worker.kill()  # a timed-out, interrupted or failed worker is never reused
            if exc is stopped:
                self._give_back(version, self._start(worker_store))
            raise
        self._give_back(version, worker)
        status, payload = reply
        if status == "error":
            raise payload
        return payload

    @staticmethod
    def _start(worker_store) -> _Process:
        worker = _Process()
        try:
            worker.outbox.send(worker_store())
        except BaseException:
            worker.kill()
            raise
        return worker

    def _take(self, version):
        with self._lock:
            while self._idle:
                made_for, worker = self._idle.pop()
                if made_for == version and worker.alive():
                    return worker
                worker.kill()
        return None

    def _give_back(self, version, worker: _Process) -> None:
        with self._lock:
            if len(self._idle) < MAX_IDLE:
                self._idle.append((version, worker))
                return
        worker.kill()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for _, worker in idle:
            worker.kill()


if __name__ == "__main__":
    main()
