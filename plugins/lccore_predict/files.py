"""Prediction over files (``lccore predict``): a JSONL input predicted a window at a time into a
JSONL output, each window written and flushed before the next is read (memory flat in the input's
size), resumable after an interruption, and shared out over the processes of a ``torchrun`` launch
with one output in input order. Everything here is built on :class:`lccore.Predictor`'s public
methods (``predict_parsed``, ``task.parse_input``, ``use_precision``)."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import sys
from pathlib import Path

from lccore import ConfigError, progress_bar
from lccore.data import check_file, is_stream, open_data
from lccore.data.features import batched, windows
from lccore.predictor import PREDICT_WINDOW, Predictor, read_prediction_inputs
from lccore.rundir import MANIFEST_FILE


#: Beside an output being written by :func:`predict_file`: what ``--resume`` checks it against.
PREDICT_STATE_SUFFIX = ".lccore-predict.json"


def predict_file(predictor: Predictor, input_path: str, output_path: str, *, resume: bool = False, batch_size: int | None = None,
                 window: int | None = None, progress: bool = True) -> int:
    """Predict every row of the JSONL file ``input_path`` (``-``: stdin) into ``output_path``
    (``-``: stdout), one row per input row, in order, a window at a time: each window's rows are
    written and flushed before the next is read, so memory is flat in the input's size and a
    killed run leaves whole rows only. A bad input row stops the run with its one-line error after
    the rows before it are written.

    ``resume=True`` continues an interrupted run after its last complete row, once it has checked
    (against ``OUTPUT.lccore-predict.json``, removed when the output is complete) that the rows
    written came from the same run, options and input rows. Returns the rows predicted by this call."""
    window = window or PREDICT_WINDOW
    streamed_input = is_stream(input_path)  # stdin, a pipe: read once, as it comes
    if not streamed_input:
        check_file(input_path)  # before its rows are counted
    to_stdout = output_path == "-"
    output = None if to_stdout else Path(output_path)
    # a device or a pipe given as the output (/dev/stdout, a FIFO) is written, never resumed
    resumable = output is not None and (output.is_file() or not output.exists())
    if resume and (not resumable or streamed_input):
        raise ConfigError("--resume: needs an --input file and an --output file, not '-' or a pipe")
    state_path = output.with_name(output.name + PREDICT_STATE_SUFFIX) if resumable else None
    manifest = predictor.run_dir / MANIFEST_FILE
    identity = {
        "run": hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else str(predictor.run_dir.resolve()),
        "input": "-" if input_path == "-" else str(Path(input_path).resolve()),
        "batch_size": batch_size, "window": window, "precision": str(predictor.autocast_dtype),
        "policies": [name for name, _ in predictor.guard.policies],
        "rows_hash": ROWS_HASH,
    }
    rows = read_prediction_inputs(input_path)
    prefix = hashlib.sha256()  # the input rows predicted so far (canonical JSON): a row fixed after them still resumes
    skip = 0
    if resume:
        skip, recorded = _resumable(output, state_path, identity)
        for _, value in itertools.islice(rows, skip):
            prefix.update(_canonical(value))
        if prefix.hexdigest() != recorded["prefix_sha256"]:
            raise ConfigError(f"--resume {output_path}: its {skip} rows were predicted from other input rows than the first {skip} of {input_path}; "
                              "start again without --resume")
        if recorded.get("chosen_precision"):  # what the interrupted run measured and chose, kept
            predictor.use_precision(recorded["chosen_precision"]["chosen"])
    total = _count_rows(input_path) if progress and not streamed_input else None
    bar = progress_bar(total=total, initial=skip, desc="predict", unit="row", enabled=progress, delay=1.0)
    handle = sys.stdout if to_stdout else output.open("a" if resume else "w", encoding="utf-8")
    written = skip
    # a bad row ends its window early and is raised once the rows before it are predicted and written
    # (and recorded: --resume continues after the fix)
    parsed = ((value, predictor.task.parse_input(value, where)) for where, value in rows)
    try:
        with long_lived_objects_frozen():  # what existed before is not scanned by each window's garbage collections
            for chunk in windows(parsed, window):
                records = predictor.predict_parsed([example for _, example in chunk], batch_size=batch_size)
                try:
                    handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
                    handle.flush()
                except OSError as exc:  # a full disk: name the file (a pipe closed by its reader is not a file error)
                    if to_stdout or isinstance(exc, BrokenPipeError):
                        raise
                    raise OSError(exc.errno, exc.strerror, output_path) from None
                written += len(chunk)
                for value, _ in chunk:
                    prefix.update(_canonical(value))
                if state_path is not None:
                    _write_state(state_path, {**identity, "rows": written, "prefix_sha256": prefix.hexdigest(), "chosen_precision": predictor.precision_choice})
                bar.update(len(chunk))
    finally:
        bar.close()
        if not to_stdout:
            try:
                handle.close()
            except OSError as exc:  # what close could not flush; an error already on its way wins
                if sys.exc_info()[1] is None:
                    raise OSError(exc.errno, exc.strerror, output_path) from None
    if state_path is not None:
        state_path.unlink(missing_ok=True)  # complete: nothing to resume
    return written - skip


@contextlib.contextmanager
def long_lived_objects_frozen():
    """Python's full garbage collections skip the objects that exist on entry (the model, the
    libraries: some 400k objects) until exit (:func:`gc.freeze`). Streamed prediction makes and
    drops a window of objects at a time, and each full collection the windows trigger would scan
    them all again: 5-10% of the time of a tiny model's prediction. A program that froze objects
    itself keeps its own freeze, untouched."""
    import gc

    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


#: How the predicted rows are hashed for --resume (recorded in the state file: another way is refused, never misread).
ROWS_HASH = "canonical-v2"


def _canonical(value) -> bytes:
    """One input row as bytes for the prefix hash, the same whatever its JSON's spacing or key order;
    a string (most rows) without a JSON encoder, as its length and UTF-8 bytes."""
    if type(value) is str:
        encoded = value.encode("utf-8", "surrogatepass")
        return b"s%d:" % len(encoded) + encoded
    return b"j" + json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8", "surrogatepass") + b"\n"


def _count_rows(path: str) -> int | None:
    """Non-blank lines of a JSONL file (the progress bar's total), read in binary blocks (a
    compressed one as it is decompressed); None when it cannot be read to the end (reading the
    rows then says where and why)."""
    count = 0
    handle, compressed = open_data(Path(path))
    with handle, compressed or contextlib.nullcontext():
        try:
            for line in handle:
                count += bool(line.strip())
        except Exception:  # noqa: BLE001 - a damaged compressed file
            return None
    return count


def _write_state(path: Path, state: dict) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(state), encoding="utf-8")
    partial.replace(path)


def _resumable(output: Path, state_path: Path, identity: dict) -> tuple[int, dict]:
    """The number of complete rows in ``output`` and the state recorded beside it, once both show
    that this call continues the same work; a half-written last row is cut off."""
    if not state_path.is_file():
        raise ConfigError(f"--resume {output}: no record of an interrupted lccore predict ({state_path.name}); start again without --resume")
    try:
        recorded = json.loads(state_path.read_text(encoding="utf-8"))
        recorded_rows, recorded_prefix = recorded["rows"], recorded["prefix_sha256"]
        chosen = recorded.get("chosen_precision")
        if type(recorded_rows) is not int or recorded_rows < 0 or not isinstance(recorded_prefix, str) or not (
            chosen is None or (isinstance(chosen, dict) and chosen.get("chosen") in ("fp32", "bf16"))
        ):
            raise ValueError("rows, prefix_sha256 or chosen_precision of the wrong type")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"--resume {state_path}: unreadable ({exc}); start again without --resume") from None
    differences = [key for key in identity if recorded.get(key) != identity[key]]
    if differences:
        names = {"run": "another run", "input": "another input file", "batch_size": "another --batch-size", "window": "another window",
                 "precision": "another --precision", "policies": "other ethics policies", "rows_hash": "another version of lccore"}
        raise ConfigError(f"--resume {output}: it was written with {', '.join(names[key] for key in differences)}; resume with the same, or start again without --resume")
    rows, keep = 0, 0
    with output.open("rb") if output.is_file() else contextlib.nullcontext([]) as handle:
        for line in handle:
            if not line.endswith(b"\n"):
                break  # a row cut by the kill: never kept
            rows += 1
            if rows <= recorded_rows:
                keep += len(line)
    if rows < recorded_rows:
        raise ConfigError(f"--resume {output}: holds {rows} complete rows, {recorded_rows} were written; the file was changed since: start again without --resume")
    # Rows written after the record was last updated (a kill in between), and a cut row, go: they are predicted again.
    with output.open("r+b") as handle:
        handle.truncate(keep)
    return recorded_rows, recorded


def predict_file_sharded(predictor: Predictor, input_path: str, output_path: str, *, rank: int, processes: int, barrier,
                         batch_size: int | None = None, window: int | None = None, progress: bool = True) -> None:
    """:func:`predict_file` over several processes (a ``torchrun`` launch): window ``i`` of the
    input is predicted by process ``i % processes`` into its own shard beside the output; once all
    are done (``barrier``), the main process writes the output by taking the windows back in input
    order, and removes the shards. The output is the file one process writes."""
    window = window or PREDICT_WINDOW
    if is_stream(input_path) or output_path == "-":
        raise ConfigError("predict under several processes: give --input and --output files (not '-' or a pipe): each process reads the input, the first writes the output")
    if predictor.autocast_dtype == "auto":
        raise ConfigError("--precision auto: under several processes each would measure on its own; give fp32 or bf16")
    output = Path(output_path)
    shard = _shard_path(output, rank)
    try:
        with shard.open("w", encoding="utf-8") as handle, long_lived_objects_frozen():
            for index, chunk in enumerate(batched(read_prediction_inputs(input_path), window)):
                if index % processes != rank:
                    continue
                examples = [predictor.task.parse_input(value, where) for where, value in chunk]
                records = predictor.predict_parsed(examples, batch_size=batch_size)
                handle.write("".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
    except BaseException:
        shard.unlink(missing_ok=True)
        raise
    barrier()
    if rank == 0:
        shards = [_shard_path(output, r).open(encoding="utf-8") for r in range(processes)]
        try:
            with output.open("w", encoding="utf-8") as handle:
                # every window but the input's last is full, so the shards give them back in turn
                for index in itertools.count():
                    lines = list(itertools.islice(shards[index % processes], window))
                    handle.writelines(lines)
                    if len(lines) < window:
                        break
        finally:
            for opened in shards:
                opened.close()
            for r in range(processes):
                _shard_path(output, r).unlink(missing_ok=True)
    barrier()


def _shard_path(output: Path, rank: int) -> Path:
    return output.with_name(f"{output.name}.rank-{rank}.partial")
