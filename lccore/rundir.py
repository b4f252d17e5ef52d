"""Run directories: which ones lccore may write into, clear or replace, and one process at a time.

lccore removes only what it can show it wrote. A folder becomes a run directory when lccore
claims it new or empty and writes :data:`MARKER_FILE` into it; "start again" (``--overwrite``, or
``--resume`` with no checkpoint yet) then removes the entries lccore writes (:data:`RUN_ENTRIES`)
and leaves everything else where it is. A folder without the marker that is not empty is never
cleared: the command is refused with one line. While a run writes, :data:`LOCK_FILE` holds an
exclusive lock (``flock``) with the holder's PID, so a second ``train`` on the same folder stops at
once instead of corrupting the first.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
from pathlib import Path

from .version import __version__
from .errors import RunDirError
from .progress import without_hf_bars

#: A finished run's files.
MODEL_DIR = "model"
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.json"
MANIFEST_FILE = "manifest.json"
CURVE_FILE = "training_curve.png"
MARKER_FILE = ".lccore-run.json"
LOCK_FILE = ".lccore-lock"
#: What lccore writes at a run directory's top level (the training loop, checkpoints, the explain
#: probe, the ethics audit of the training data); "start again" removes these and nothing else.
RUN_ENTRIES = (
    "model", "model.partial", "model.old", "config.yaml", "metrics.json", "metrics.json.tmp", "manifest.json",
    "manifest.json.tmp", "training_curve.png", "lr_find.png", "checkpoints", "ethics_audit.jsonl", "ethics_audit.jsonl.key", "explanations", "trackers",
)
#: The files of lccore's own bookkeeping: a folder holding only these is empty for a new run.
BOOKKEEPING = (MARKER_FILE, LOCK_FILE)


def is_lccore_run(path: Path) -> bool:
    """Whether lccore can show it wrote ``path``: its marker, or (runs written before markers
    existed) a manifest that lccore writes at the end of every run."""
    for name, key in ((MARKER_FILE, "written_by"), ("manifest.json", "lccore")):
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and key in data:
            return True
    return False


def user_entries(path: Path) -> list[str]:
    """The names in ``path`` that are not lccore's bookkeeping."""
    return sorted(p.name for p in path.iterdir() if p.name not in BOOKKEEPING)


class RunDir:
    """A claimed output folder: checked, created or marked, and locked for this process."""

    def __init__(self, path: str | Path, *, overwrite: bool = False, resume: bool = False):
        self.path = Path(path)
        self.created = False
        self._lock_handle = None
        path = self.path
        if path.exists() and not path.is_dir():
            raise RunDirError(f"{path}: exists and is not a directory")
        if not path.exists():
            try:
                path.mkdir(parents=True)
            except OSError as exc:
                raise RunDirError(f"{path}: cannot create the run directory: {exc.strerror}") from None
            self.created = True
        if not os.access(path, os.W_OK | os.X_OK):
            raise RunDirError(f"{path}: the run directory is not writable")
        self.owned = is_lccore_run(path)
        contents = user_entries(path)
        if contents and not self.owned:
            if overwrite:
                raise RunDirError(
                    f"{path}: not an lccore run directory (no {MARKER_FILE}); --overwrite replaces only runs lccore wrote: "
                    "choose an empty or new --output"
                )
            if not resume:
                raise RunDirError(f"{path}: directory is not empty; choose another --output")
        elif contents and not (overwrite or resume):
            raise RunDirError(f"{path}: directory is not empty; choose another --output, pass --overwrite to replace the run, or --resume to continue it")
        self._lock()
        if not contents:
            self._mark()

    def _mark(self) -> None:
        marker = {"written_by": "lccore", "lccore": __version__, "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        (self.path / MARKER_FILE).write_text(json.dumps(marker) + "\n", encoding="utf-8")
        self.owned = True

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # not a POSIX system: no advisory locks to take
            return
        lock_path = self.path / LOCK_FILE
        while True:
            handle = open(lock_path, "a+", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "unknown"
                handle.close()
                raise RunDirError(f"{self.path}: in use by another lccore process (PID {holder}); wait for it to end or choose another --output") from None
            # The holder before us may have removed the file after we opened it: lock the file
            # that is there now, not a deleted one.
            try:
                same = os.path.samestat(os.fstat(handle.fileno()), os.stat(lock_path))
            except FileNotFoundError:
                same = False
            if same:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._lock_handle = handle

    def clear(self) -> list[str]:
        """Remove what lccore wrote here (:data:`RUN_ENTRIES`) so a run can start again; returns
        the names it left alone. Refused in a folder lccore cannot show it wrote."""
        if not self.owned:
            raise RunDirError(f"{self.path}: not an lccore run directory (no {MARKER_FILE}); lccore will not clear it: choose an empty or new --output")
        for name in RUN_ENTRIES:
            entry = self.path / name
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            elif entry.exists() or entry.is_symlink():
                entry.unlink()
        if not (self.path / MARKER_FILE).exists():  # a run written before markers existed
            self._mark()
        return [name for name in user_entries(self.path) if name not in RUN_ENTRIES]

    def release(self, *, failed: bool = False) -> None:
        """Unlock; after a failure, a folder this call created and nothing was written into is removed again."""
        if self._lock_handle is not None:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            self._lock_handle.close()
            self._lock_handle = None
        if failed and self.created and self.path.is_dir() and not user_entries(self.path):
            (self.path / MARKER_FILE).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                self.path.rmdir()

    def __enter__(self) -> "RunDir":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        self.release(failed=kind is not None)


# --- a finished run's files --------------------------------------------------------------------


def save_model_atomically(model, tokenizer, run_dir: Path) -> Path:
    """Write ``model/`` through a temporary folder and a rename, so a crash never leaves half a model."""
    final = run_dir / MODEL_DIR
    partial, old = run_dir / f"{MODEL_DIR}.partial", run_dir / f"{MODEL_DIR}.old"
    for leftover in (partial, old):  # from a run killed while saving
        if leftover.exists() and (leftover is partial or final.exists()):
            shutil.rmtree(leftover)
    if old.exists():  # killed between the two renames: the previous model is the intact one
        os.replace(old, final)
    with without_hf_bars():
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
    if final.exists():
        os.replace(final, old)
        os.replace(partial, final)
        shutil.rmtree(old)
    else:
        os.replace(partial, final)
    return final


def write_json(path: Path, data) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def check_run_dir(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    for name in (CONFIG_FILE, MANIFEST_FILE, MODEL_DIR):
        if not (path / name).exists():
            raise RunDirError(f"{path}: not a finished lccore run (missing {name})")
    return path
