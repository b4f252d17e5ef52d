"""Resumable checkpoints: everything a killed run needs to continue as if it had never stopped.

A checkpoint is a folder ``RUN_DIR/checkpoints/step-NNNNNNNN/`` holding the model's tensors
(safetensors), the optimiser's and scheduler's states, each process's random-number generator
states, and the loop's own position and early-stopping state. It is written into a temporary
folder and renamed into place; ``checkpoint.json``, written last, lists every file's SHA-256, so a
truncated or altered checkpoint is recognised and skipped on resume.

Under FSDP2 with ``fsdp_state_dict_type: SHARDED_STATE_DICT`` the model's and optimiser's tensors
are not gathered: every process writes its own slices into ``shards/`` through
``torch.distributed.checkpoint`` (one safetensors file per process, each slice's place in the whole
tensor in its header), and any number of processes, sharded or not, reads them back.

Nothing here unpickles arbitrary objects: tensors go through safetensors, the optimiser and
scheduler states through ``torch.load(weights_only=True)``, the rest is JSON.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Callable

from .errors import RunDirError

CHECKPOINTS_DIR = "checkpoints"
INDEX_FILE = "checkpoint.json"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
SCHEDULER_FILE = "scheduler.pt"
LOOP_FILE = "loop.json"
SHARDS_DIR = "shards"
NAME = re.compile(r"^step-(\d+)$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def rng_file(rank: int) -> str:
    return f"rng-{rank}.json"


def rng_state() -> dict:
    """This process's generator states as JSON-able data."""
    import numpy
    import torch

    version, numbers, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = numpy.random.get_state()
    state = {
        "python": [version, list(numbers), gauss],
        "numpy": [kind, keys.tolist(), position, has_gauss, cached],
        "torch": torch.get_rng_state().tolist(),
    }
    if torch.cuda.is_available():
        state["cuda"] = [s.tolist() for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    import numpy
    import torch

    version, numbers, gauss = state["python"]
    random.setstate((version, tuple(numbers), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    numpy.random.set_state((kind, numpy.array(keys, dtype=numpy.uint32), position, has_gauss, cached))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])


def checkpoint_dirs(run_dir: Path) -> list[Path]:
    """Finished checkpoint folders, newest first (temporary ``.partial`` folders are not listed)."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := NAME.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def write_rng_state(folder: Path, rank: int) -> None:
    """Each process writes its own generator states into the (shared) temporary folder."""
    (folder / rng_file(rank)).write_text(json.dumps(rng_state()), encoding="utf-8")


def save(run_dir: Path, step: int, *, model, optimizer, scheduler, loop: dict, rank_count: int, keep: int) -> Path:
    """Write checkpoint ``step-N`` (main process; the others wrote their rng files, and their
    shards, into :func:`partial_dir` already) and delete all but the ``keep`` newest. ``model``:
    the whole model, or None after :func:`save_shards`; ``optimizer``: the optimiser, or its state
    (:func:`optimizer_state`, :func:`save_shards`)."""
    import torch
    from safetensors.torch import save_model

    folder = partial_dir(run_dir, step)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if model is not None:  # None: the processes wrote their shards already (save_shards)
            save_model(model, str(folder / MODEL_FILE))  # handles tied weights, unlike save_file
        torch.save(optimizer if isinstance(optimizer, dict) else optimizer.state_dict(), folder / OPTIMIZER_FILE)
        torch.save(scheduler.state_dict(), folder / SCHEDULER_FILE)
        (folder / LOOP_FILE).write_text(json.dumps({**loop, "processes": rank_count}), encoding="utf-8")
        missing = [rng_file(r) for r in range(rank_count) if not (folder / rng_file(r)).is_file()]
        if missing:
            raise RuntimeError(f"{folder}: random states missing from processes: {', '.join(missing)}")
        files = {p.relative_to(folder).as_posix(): _sha256(p) for p in sorted(folder.rglob("*")) if p.is_file()}
        (folder / INDEX_FILE).write_text(json.dumps({"step": step, "files": files}, indent=2), encoding="utf-8")
    except OSError as exc:  # a full disk, most often: the half-written folder is ours to remove
        shutil.rmtree(folder, ignore_errors=True)
        raise RunDirError(f"{folder.parent}: cannot write the checkpoint of step {step}: {exc.strerror or exc}; its partial folder was removed") from None
    final = folder.parent / f"step-{step:08d}"
    if final.exists():  # the epoch-end checkpoint replaces the step checkpoint of the same step
        shutil.rmtree(final)
    os.replace(folder, final)
    for old in checkpoint_dirs(run_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def step_of(folder: Path) -> int:
    """The step a checkpoint folder was written at (from its name)."""
    return int(NAME.match(Path(folder).name).group(1))


def partial_dir(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIR / f"step-{step:08d}.partial"


#: The files every checkpoint has (and the model's tensors: MODEL_FILE or SHARDS_DIR), and the keys of its loop state.
REQUIRED_FILES = (OPTIMIZER_FILE, SCHEDULER_FILE, LOOP_FILE)
SHARD_FILE = re.compile(rf"^{SHARDS_DIR}/[\w.-]+\.safetensors$")
LOOP_KEYS = ("step", "epoch", "batches_done", "best_value", "evaluations_without_improvement", "metrics", "data", "processes")


def problem(folder: Path) -> str | None:
    """Why ``folder`` is not an intact checkpoint, or None when every file matches its hash and
    can be read back safely (safetensors, ``torch.load(weights_only=True)``, JSON of the right shape)."""
    index = folder / INDEX_FILE
    if not index.is_file():
        return f"{INDEX_FILE} missing"
    try:
        index_data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return f"{INDEX_FILE} unreadable"
    files = index_data.get("files") if isinstance(index_data, dict) else None
    if (not isinstance(files, dict) or not set(REQUIRED_FILES) <= files.keys()
            or not (MODEL_FILE in files or any(isinstance(k, str) and SHARD_FILE.match(k) for k in files))
            or not all(isinstance(v, str) and isinstance(k, str) and (k == Path(k).name or SHARD_FILE.match(k)) for k, v in files.items())):
        return (f"{INDEX_FILE} has the wrong shape (expected {{\"files\": {{name: sha256}}}} naming {', '.join(REQUIRED_FILES)} "
                f"and {MODEL_FILE} or {SHARDS_DIR}/*.safetensors)")
    for name, expected in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} missing"
        if _sha256(path) != expected:
            return f"{name} does not match its SHA-256 (truncated or altered)"
    return _unreadable(folder, files)


def _unreadable(folder: Path, files: dict) -> str | None:
    """Why a checkpoint whose hashes match still cannot be loaded (a file crafted to match, or
    written by something else), or None. Reads headers and pickled states safely, tensors lazily."""
    import torch
    from safetensors import safe_open

    name = MODEL_FILE
    try:
        for name in (n for n in files if n == MODEL_FILE or SHARD_FILE.match(n)):
            with safe_open(str(folder / name), framework="pt") as handle:
                handle.keys()
        for name in (OPTIMIZER_FILE, SCHEDULER_FILE):
            torch.load(folder / name, weights_only=True, map_location="cpu", mmap=True)
        for name in [LOOP_FILE, *(n for n in files if n.startswith("rng-"))]:
            data = json.loads((folder / name).read_text(encoding="utf-8"))
            if not isinstance(data, dict) or (name == LOOP_FILE and not set(LOOP_KEYS) <= data.keys()):
                return f"{name} has the wrong shape"
    except Exception as exc:  # noqa: BLE001 - unpickling, safetensors and JSON each raise their own kinds; all mean "damaged"
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return f"{name} cannot be read safely ({reason})"
    return None


def newest_intact(run_dir: Path, warn: Callable[[str], None]) -> Path | None:
    """The newest checkpoint whose files all match their hashes; damaged ones are reported."""
    for leftover in (Path(run_dir) / CHECKPOINTS_DIR).glob("*.partial"):  # from a run killed while writing
        shutil.rmtree(leftover, ignore_errors=True)
    for folder in checkpoint_dirs(run_dir):
        reason = problem(folder)
        if reason is None:
            return folder
        warn(f"checkpoint {folder} is damaged ({reason}); trying an older one")
    return None


def load(folder: Path, *, model, optimizer, scheduler, rank: int) -> dict:
    """Restore model, optimiser, scheduler and this process's generators; returns the loop state.
    The generator states are restored last, by the caller, just before the first step
    (:func:`set_rng_state` on ``loop["rng"]``)."""
    import torch
    from safetensors.torch import load_model

    optimizer_saved = torch.load(folder / OPTIMIZER_FILE, weights_only=True, map_location="cpu")
    if optimizer_saved.get("sharded"):
        _load_shards(folder, model, getattr(optimizer, "optimizer", optimizer), optimizer_saved)
    elif sharded(model):  # each process takes its shards of the whole tensors
        from safetensors.torch import load_file
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_optimizer_state_dict

        set_model_state_dict(model, load_file(folder / MODEL_FILE), options=StateDictOptions(full_state_dict=True))
        names = _parameter_names(model, optimizer)
        set_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer), {
            "state": {names[number]: state for number, state in optimizer_saved["state"].items()},
            "param_groups": [{**group, "params": [names[number] for number in group["params"]]} for group in optimizer_saved["param_groups"]],
        }, options=StateDictOptions(full_state_dict=True))
    else:
        load_model(model, str(folder / MODEL_FILE), strict=True)
        optimizer.load_state_dict(optimizer_saved)
    scheduler.load_state_dict(torch.load(folder / SCHEDULER_FILE, weights_only=True))
    loop = json.loads((folder / LOOP_FILE).read_text(encoding="utf-8"))
    # a process the writing run did not have (it ran on fewer) takes the main process's states:
    # every process is seeded alike, so they draw the same streams
    rng = folder / rng_file(rank) if (folder / rng_file(rank)).is_file() else folder / rng_file(0)
    loop["rng"] = json.loads(rng.read_text(encoding="utf-8"))
    return loop


def sharded(model) -> bool:
    """Whether FSDP2 shards ``model``: each process holds a slice of every parameter."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def optimizer_state(model, optimizer) -> dict:
    """``optimizer.state_dict()``. Under FSDP2 it is gathered whole (every process calls this; the
    main one gets it) and numbered as in one process (parameters in group order), so a checkpoint
    resumes on any number of processes, sharded or not."""
    if not sharded(model):
        return optimizer.state_dict()
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

    whole = get_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer), options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    groups = whole.get("param_groups", [])  # keyed by parameter name
    number = {name: i for i, name in enumerate(name for group in groups for name in group["params"])}
    return {
        "state": {number[name]: state for name, state in whole.get("state", {}).items()},
        "param_groups": [{**group, "params": [number[name] for name in group["params"]]} for group in groups],
    }


def _parameter_names(model, optimizer) -> list[str]:
    """The optimiser's parameters' names, in the order :func:`optimizer_state` numbers them."""
    name_of = {id(param): name for name, param in model.named_parameters()}
    return [name_of[id(param)] for group in optimizer.param_groups for param in group["params"]]


def save_shards(folder: Path, model, optimizer) -> dict:
    """Every process writes its slices of the model's and optimiser's tensors into ``folder/shards``
    (collective: every process calls this), in safetensors, gathering nothing. Returns the rest of
    the optimiser's state (its groups, by parameter name), for :func:`save` to write."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageWriter
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    optimizer_saved = get_optimizer_state_dict(model, getattr(optimizer, "optimizer", optimizer))
    tensors, others = _split_tensors(optimizer_saved["state"])
    with _alone_without_warning():
        dcp.save({"model": _without_ties(model, get_model_state_dict(model))[0], "optimizer": tensors},
                 storage_writer=HuggingFaceStorageWriter(str(Path(folder) / SHARDS_DIR), save_distributed=True))
    return {"sharded": True, "state": others, "param_groups": optimizer_saved["param_groups"]}


def _load_shards(folder: Path, model, optimizer, saved: dict) -> None:
    """Fill ``model`` and ``optimizer`` from a checkpoint's shards, whatever number of processes
    wrote them and whatever number reads them (torch.distributed.checkpoint reshards)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import HuggingFaceStorageReader
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict

    model_state, aliases = _without_ties(model, get_model_state_dict(model))
    wanted = {"model": model_state, "optimizer": _split_tensors(get_optimizer_state_dict(model, optimizer)["state"])[0]}
    with _alone_without_warning():
        dcp.load(wanted, storage_reader=HuggingFaceStorageReader(str(Path(folder) / SHARDS_DIR)), no_dist=not (dist.is_available() and dist.is_initialized()))
    set_model_state_dict(model, {**wanted["model"], **{alias: wanted["model"][kept] for alias, kept in aliases.items()}})
    state = {name: {**values, **saved["state"].get(name, {})} for name, values in wanted["optimizer"].items()}
    set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": saved["param_groups"]})


@contextlib.contextmanager
def _alone_without_warning():
    """Without a process group, one process writes or reads every shard, which is what lccore
    means there; torch warns on each call that it assumes so."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
        yield


def _without_ties(model, state: dict) -> tuple[dict, dict]:
    """``model``'s state with each tied parameter once (safetensors refuses two names for one
    tensor), and the names left out: ``{alias: name kept}``."""
    aliases, first = {}, {}
    for name, param in model.named_parameters(remove_duplicate=False):
        first.setdefault(id(param), name)
        if first[id(param)] != name:
            aliases[name] = first[id(param)]
    return {name: tensor for name, tensor in state.items() if name not in aliases}, aliases


def _split_tensors(state: dict) -> tuple[dict, dict]:
    """An optimiser's per-parameter state split into its tensors (for the shards) and the rest."""
    import torch

    tensors = {name: {k: v for k, v in values.items() if isinstance(v, torch.Tensor)} for name, values in state.items()}
    others = {name: rest for name, values in state.items() if (rest := {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)})}
    return tensors, others
