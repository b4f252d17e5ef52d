"""The ``lccore serve`` process: load the runs, bind the port, run uvicorn until SIGINT/SIGTERM."""

from __future__ import annotations

import contextlib
import itertools
import socket
from pathlib import Path

import lccore
from lccore import ConfigError

from .app import ServeLimits, create_app
from .guard import allowed_hosts_for


def model_names(run_dirs) -> dict[str, Path]:
    """Each run's name in the API (its directory name), refusing two runs with the same name."""
    names: dict[str, Path] = {}
    for run_dir in map(Path, run_dirs):
        name = run_dir.resolve().name
        if name in names:
            raise ConfigError(f"two runs would both be served as '{name}': {names[name]} and {run_dir}; rename one directory")
        names[name] = run_dir
    return names


def open_kg(store: str | Path, engine=None):
    """The knowledge-graph store directory ``store`` (made by ``lccore kg import`` or ``kg build``)
    opened read-only through the ``oxigraph`` kg_backend (the ``kg`` plugin's)."""
    path = Path(store)
    if not path.is_dir():
        raise ConfigError(f"--kg {store}: no such store directory (make one with `lccore kg import {store} FILE.ttl` or `lccore kg build`)")
    return (engine or lccore.Engine()).create("kg_backend", "oxigraph", {"path": str(path), "access": "read-only"}, key="kg")


def measure_precision(predictor) -> str:
    """``--precision auto`` for a server: served batches are too small to measure on, so fp32 and
    bf16 are compared once, at start, on the run's own data (its test, dev or training file, as
    the run config names it); without any of them the run is served in fp32. Says what it chose."""
    from lccore.data import data_files
    from lccore.predictor import AUTO_SAMPLE

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
          kg: str | None = None, allowed_hosts=(), engine=None) -> None:
    """Load ``run_dirs`` (and open the ``kg`` store read-only) and serve them until SIGINT/SIGTERM;
    requests in flight are finished (for at most ``graceful_s`` seconds) before the process exits.
    The server answers the ``Host`` names of :func:`allowed_hosts_for` (``host``, the loopback
    names and ``allowed_hosts``)."""
    import uvicorn

    if not run_dirs and kg is None:
        raise ConfigError("serve: give at least one RUN_DIR, or a knowledge graph with --kg STORE")
    names = model_names(run_dirs)
    check_port(port)
    with contextlib.ExitStack() as stack:
        store = open_kg(kg, engine) if kg is not None else None
        if store is not None:
            stack.callback(store.close)
        listener = stack.enter_context(bind(host, port))  # before the models load: a port in use is said at once
        # Each run's guard: its own ethics: policies, then ethics_items, logging to audit_log.
        predictors = {name: lccore.load(run_dir, engine=engine, precision=precision, device=device, ethics=list(ethics_items), audit_log=audit_log) for name, run_dir in names.items()}
        if precision == "auto":
            for name, predictor in predictors.items():
                print(f"lccore serve: {name}: {measure_precision(predictor)}", flush=True)
        app = create_app(predictors, api_key=api_key, limits=limits, kg=store, allowed_hosts=allowed_hosts_for(host, allowed_hosts), engine=engine)
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
