"""Several nodes (issue 20): two torchrun agents on 127.0.0.1, each `--nnodes 2 --node-rank i`, as
docs/runs.md shows for two machines, train one run; losing a node stops the other with one line."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import psutil
import pytest
import yaml

import lccore
from conftest import make_distribution
from test_resume import without_dropout

SLOW = """
import os, time
import lccore

@lccore.hookimpl
def on_train_step(run, step, logs):
    time.sleep(float(os.environ.get("SLOW_STEP", "0")))  # time to lose a node mid-run
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(config_path, output, env=None, extra=()) -> list[subprocess.Popen]:
    port = free_port()
    return [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(rank), "--nproc-per-node", "1",
             "--rdzv-endpoint", f"127.0.0.1:{port}", "-m", "lccore", "train", str(config_path), "--output", str(output), "-q", *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
        )
        for rank in (0, 1)
    ]


@pytest.fixture
def node_config(tiny_config, tmp_path):
    config = json.loads(json.dumps(tiny_config))
    config["model"] = without_dropout(tiny_config["model"], tmp_path / "model")
    config["train"].update(epochs=2, checkpoint_every=3)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return config, path


def test_two_nodes_train_like_one_process_and_a_lost_node_stops_the_other_with_one_line(node_config, tmp_path):
    """Two nodes start, the second is lost after the first checkpoint, the first stops at once
    with one line; `--resume` on both finishes the run, whose every step matches a one-process run."""
    config, path = node_config
    out = tmp_path / "nodes"
    site = make_distribution(tmp_path / "site", "lccore-slow", {"lccore_slow": SLOW}, {"slow": "lccore_slow"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "SLOW_STEP": "0.3"}
    nodes = start_nodes(path, out, env=env)
    deadline = time.monotonic() + 300
    while not (out / "checkpoints").is_dir() or not any(p.name.startswith("step-") and not p.name.endswith(".partial") for p in (out / "checkpoints").iterdir()):
        assert time.monotonic() < deadline and nodes[0].poll() is None, nodes[0].communicate()[1][-2000:]
        time.sleep(0.2)
    # the second machine goes away: its agent and its worker (which torchrun starts in a session of its own)
    agent = psutil.Process(nodes[1].pid)
    for process in [*agent.children(recursive=True), agent]:
        process.kill()
    started = time.monotonic()
    _, err = nodes[0].communicate(timeout=300)
    waited = time.monotonic() - started
    assert nodes[0].returncode != 0
    lines = [line for line in err.splitlines() if line.startswith("lccore: error:")]
    assert lines and "lost contact with another process" in lines[0], err[-3000:]
    assert waited < 120, waited
    nodes[1].communicate()

    resumed = start_nodes(path, out, extra=("--resume",))
    outputs = [node.communicate(timeout=600) for node in resumed]
    assert [node.returncode for node in resumed] == [0, 0], [e[-2000:] for _, e in outputs]
    assert json.loads((out / "manifest.json").read_text())["processes"] == 2
    both = json.loads((out / "metrics.json").read_text())
    assert [row["step"] for row in both["train"]] == list(range(1, 21))
    single = lccore.train(config, tmp_path / "one", progress=False)
    for one, two in zip(single.metrics["train"] + single.metrics["dev"], both["train"] + both["dev"], strict=True):
        assert one["loss"] == pytest.approx(two["loss"], rel=1e-3, abs=1e-4)


def test_only_a_lost_peer_becomes_the_lost_contact_line(monkeypatch):
    from lccore.cli import lost_contact

    gloo = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer [10.0.0.2]:29575. This is typically caused by a remote worker crashing.")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    line = lost_contact(gloo)
    assert line.startswith("lost contact with another process of this run (this is rank 2 of 4)") and "Connection closed by peer [10.0.0.2]:29575" in line
    assert "pair.cc" not in line and "--resume" in line
    assert lost_contact(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None  # a bug stays a traceback
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert lost_contact(gloo) is None


def test_an_fsdp_config_that_accelerate_does_not_apply_is_said(monkeypatch):
    """Accelerate 1.16 applies FSDP only on GPUs, and lccore applies FSDP2 on CPU processes
    (tests/test_distributed.py): an FSDP1 config on CPU processes trains data-parallel. lccore says
    so instead of letting the user believe the model is sharded."""
    import types

    from lccore.distributed import fsdp_not_applied

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    line = fsdp_not_applied(types.SimpleNamespace(distributed_type="MULTI_CPU", num_processes=2))
    assert "asks for FSDP (fsdp_version 1), but Accelerate applies it only on GPUs and lccore on CPU processes only fsdp_version 2" in line
    assert "these 2 CPU process(es) train data-parallel (MULTI_CPU)" in line
    assert fsdp_not_applied(types.SimpleNamespace(distributed_type="FSDP", num_processes=2)) is None
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "false")
    assert fsdp_not_applied(types.SimpleNamespace(distributed_type="MULTI_CPU", num_processes=2)) is None


def test_workers_stop_when_their_launcher_is_killed(tiny_config, tmp_path):
    """SIGKILL to torchrun (a scheduler's hard stop) must not leave its workers training as orphans
    that hold the run's lock: they are interrupted, and `--resume` can start at once."""
    import contextlib
    import signal

    config = dict(tiny_config, train={**tiny_config["train"], "epochs": 200})
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    site = make_distribution(tmp_path / "site", "lccore-started", {"lccore_started": STARTED}, {"started": "lccore_started"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]), "STARTED_AT": str(tmp_path / "started")}
    # a static rendezvous (as `accelerate launch` uses): the workers need nothing of the launcher once started
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2", "--rdzv-backend", "static",
                                 "--node-rank", "0", "--master-addr", "127.0.0.1", "--master-port", str(free_port()), "-m", "lccore",
                                 "train", str(path), "--output", str(tmp_path / "run"), "-q"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "started").exists() and launcher.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        workers = [child for child in psutil.Process(launcher.pid).children(recursive=True) if "lccore" in " ".join(child.cmdline())]
        assert len(workers) == 2 and (tmp_path / "started").exists(), "the workers never started training"
        launcher.kill()
        launcher.wait(timeout=10)
        gone, alive = psutil.wait_procs(workers, timeout=20)
        assert not alive, "workers outlived their launcher"
    finally:
        for worker in workers:
            with contextlib.suppress(psutil.NoSuchProcess):
                worker.kill()
    import fcntl

    with open(tmp_path / "run" / ".lccore-lock", "a") as lock:  # the run's lock is free: --resume may start
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


# Marks that training has started (the main process calls the hooks).
STARTED = """
import os
import lccore

@lccore.hookimpl
def on_train_step(run, step, logs):
    open(os.environ["STARTED_AT"], "w").close()
"""
