"""The ``lccore`` command line. Heavy libraries are imported inside the commands that need them,
so ``lccore --help`` and ``lccore plugins`` stay fast."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import sys
from typing import Iterable
from pathlib import Path

from .version import __version__
from .distributed import end_with_launcher
from .errors import LccoreError


def main(argv: list[str] | None = None, engine=None) -> int:
    """The ``lccore`` command; ``engine``: the plugins whose commands it offers (default: the
    installed ones)."""
    parser = build_parser(engine)
    undecodable = not_text(sys.argv[1:] if argv is None else argv)
    if undecodable:
        print(f"lccore: error: {undecodable}", file=sys.stderr)
        return 2
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a bad flag (already printed in one line)
        return exc.code if isinstance(exc.code, int) else 2
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    end_with_launcher()
    try:
        return args.command(args) or 0
    except LccoreError as exc:
        print(f"lccore: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("lccore: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`lccore predict ... | head`): stop quietly, as Unix tools do, and
        # keep Python from complaining again when it flushes stdout at exit.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as exc:  # a full disk, a read-only file, a folder given for a file: the user can act on it
        print(f"lccore: error: {os_error(exc)}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        lost = lost_contact(exc)
        if lost is None:
            raise
        print(f"lccore: error: {lost}", file=sys.stderr, flush=True)
        return 1


def not_text(argv: list[str]) -> str | None:
    """Why an argument is refused before parsing, or None: bytes that are not UTF-8 (Python keeps
    them as lone surrogates, which every tokenizer and JSON writer downstream fails on). An
    existing path is kept as it is: a file's name may be any bytes."""
    for position, value in enumerate(argv):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            if os.path.lexists(value):
                continue
            byte = ord(value[exc.start]) - 0xDC00  # how surrogateescape keeps an undecodable byte
            if value.startswith("--") and "=" in value:
                given = f"the value of {value.partition('=')[0]}"
            elif position and argv[position - 1].startswith("-"):
                given = f"the value of {argv[position - 1]}"
            else:
                given = f"argument {position + 1} of the command line"
            what = f"byte 0x{byte:02x}" if 0x80 <= byte <= 0xFF else f"a lone surrogate \\u{byte + 0xDC00:04x}"
            return f"{given} is not valid UTF-8 ({what} at character {exc.start + 1}); expected UTF-8 text or an existing path"
    return None


#: How gloo and NCCL say that another process of the group is gone.
LOST_PEER = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted", "remote process exited")


def lost_contact(exc: RuntimeError) -> str | None:
    """One line for a collective that failed because another process of a torchrun launch (a
    node, a GPU's process) stopped; None for any other error."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    distributed = sys.modules.get("torch.distributed")
    is_dist_error = distributed is not None and isinstance(exc, getattr(distributed, "DistError", ()))
    message = str(exc)
    if world < 2 or not (is_dist_error or any(marker in message for marker in LOST_PEER)):
        return None
    reason = next((line.strip() for line in message.splitlines() if any(marker in line for marker in LOST_PEER)), message.strip().splitlines()[0] if message.strip() else type(exc).__name__)
    reason = re.sub(r"^\[[^\]]*\]\s*", "", reason)[:200]  # gloo's source-file prefix
    return (f"lost contact with another process of this run (this is rank {os.environ.get('RANK', '?')} of {world}): a node or process stopped "
            f"({reason}); start the run again with --resume on every node to continue from its last checkpoint")


def os_error(exc: OSError) -> str:
    """An OSError as one line: the file, then what went wrong."""
    where = next((str(name) for name in (exc.filename, exc.filename2) if name), None)
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{where}: {reason}" if where else reason


def write_output(path: str, text: str) -> None:
    """``text`` to the file ``path``, or to stdout for ``-``; a failed write names the file."""
    if path == "-":
        sys.stdout.write(text)
        return
    try:
        Path(path).write_text(text, encoding="utf-8")
    except OSError as exc:  # raised at close for a full disk, without the file's name
        raise OSError(exc.errno, exc.strerror, path) from None


def check_output_path(path: str | None, flag: str, *, overwrite: bool | None = None, inputs: Iterable[str | None] = ()) -> None:
    """Refuse, before any model loads, an output file that cannot be written: a folder, a path in
    a folder that does not exist, or a read-only file or folder. ``-`` (stdout) is always fine.

    ``overwrite`` (given for a file the command replaces, not one it appends to): a file already
    there and not empty is the user's until they say otherwise (``--overwrite``); ``inputs`` are
    files the command reads, which it must never write over, ``--overwrite`` or not."""
    from .errors import ConfigError

    if path is None or path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise ConfigError(f"{flag} {path}: is a directory; expected a file path")
    for source in inputs:
        if source and source != "-" and target.exists() and Path(source).exists() and os.path.samefile(source, target):
            raise ConfigError(f"{flag} {path}: is the file the command reads ({source}); write to another file")
    if overwrite is False and target.is_file() and target.stat().st_size > 0:
        raise ConfigError(f"{flag} {path}: the file exists; pass --overwrite to replace it (or choose another path)")
    folder = target.parent
    if not folder.is_dir():
        raise ConfigError(f"{flag} {path}: the folder {folder} does not exist")
    if target.exists() and not os.access(target, os.W_OK):
        raise ConfigError(f"{flag} {path}: the file is read-only")
    if not target.exists() and not os.access(folder, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {path}: the folder {folder} is not writable")


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with its errors in lccore's one-line form (its sub-parsers inherit the class)."""

    def error(self, message: str):
        command = self.prog.partition(" ")[2]
        hint = f"lccore {command} --help" if command else "lccore --help"
        self.exit(2, f"lccore: error: {command + ': ' if command else ''}{message} (see '{hint}')\n")


def bounded(kind: type, low: float | None = None, high: float | None = None, *, above: float | None = None):
    """An argparse ``type`` for a number of ``kind`` (int or float) in [low, high], and greater
    than ``above`` (a timeout: above 0): every numeric flag that costs time or memory has a bound,
    and a value past it is one line."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError(f"must be above {above:g}, got {text}")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


#: The bound of --batch-size.
BATCH_SIZE = bounded(int, 1, 1 << 20)


def build_parser(engine=None) -> argparse.ArgumentParser:
    """The ``lccore`` parser: the kernel's commands, then those the plugins of ``engine`` (default:
    the installed ones) add through ``register_commands``."""
    from .plugins import Engine

    parser = ArgumentParser(prog="lccore", description="Fine-tune, evaluate and run transformer language models; every component is a plugin.")
    parser.add_argument("--version", action="version", version=f"lccore {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    plugins = commands.add_parser("plugins", help="list plugins, their status, and the components and commands they add")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(command=cmd_plugins)

    cache = commands.add_parser("cache", help="list or clear the tokenised data lccore keeps ($LCCORE_CACHE, default ~/.cache/lccore)")
    cache_commands = cache.add_subparsers(dest="action", required=True, metavar="{ls,clear}")
    cache_ls = cache_commands.add_parser("ls", help="list the cache's entries and their size")
    cache_ls.add_argument("--json", action="store_true", help="machine-readable output")
    cache_commands.add_parser("clear", help="remove every entry lccore wrote (entries in use by a running process stay)")
    cache.set_defaults(command=cmd_cache)

    train = commands.add_parser("train", help="fine-tune a model as a config file says")
    train.add_argument("config", help="YAML run config (needs 'model' and 'task')")
    train.add_argument("--output", required=True, help="run directory to write")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=1 (repeatable)")
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --output from its newest intact checkpoint")
    train.add_argument("--init-from", metavar="RUN_DIR", help="start from an earlier run's model and head (sets train.init_from; the config then needs no model)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(command=cmd_train)

    evaluate = commands.add_parser("evaluate", help="score a run on a labelled data file (JSON on stdout)")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", help="labelled data file in the task's format (default: the run's own test file, else its dev file)")
    evaluate.add_argument("--batch-size", type=BATCH_SIZE, help="examples per batch (default: train.eval_batch_size)")
    evaluate.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast precision for the forward pass")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(command=cmd_evaluate)

    export = commands.add_parser("export", help="write a LoRA run as a plain run directory, the adapter merged into the weights")
    export.add_argument("run_dir")
    export.add_argument("--merge", action="store_true", help="merge the LoRA adapter into the base weights (required)")
    export.add_argument("--output", required=True, help="run directory to write")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    export.set_defaults(command=cmd_export)

    # Plugins add their own commands (the kg plugins: `lccore kg …`; the ethics plugin: `lccore
    # audit` and `lccore ethics check`; the explain plugin: `lccore explain`; ...).
    engine = engine or Engine()
    engine.add_commands(Commands(commands))
    parser.set_defaults(engine=engine)
    return parser


def quiet_transformers() -> None:
    """Keep the terminal for lccore's own progress: no per-load reports from transformers."""
    import warnings

    import transformers

    # peft asks transformers a deprecated question on every LoRA load; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


class Commands:
    """What ``register_commands`` hooks receive: adds subcommands, alone or in groups, to the
    ``lccore`` parser (see :func:`lccore.hookspecs.register_commands`). ``Commands.bounded(int,
    1, 100)`` is the argparse ``type`` for a range-checked number; ``Commands.check_output_path``
    refuses an output file that cannot be written before any work starts;
    ``Commands.write_output(path, text)`` writes a file or stdout (``-``);
    ``Commands.quiet_transformers()`` keeps transformers' load reports off the terminal; and
    ``Commands.train_and_report(config, args, engine)`` trains as ``lccore train`` does (its flags
    ``--output``, ``--overwrite``, ``--resume``, ``--quiet`` in ``args``) and prints the summary."""

    bounded = staticmethod(bounded)
    check_output_path = staticmethod(check_output_path)
    write_output = staticmethod(write_output)
    quiet_transformers = staticmethod(quiet_transformers)

    @staticmethod
    def train_and_report(config, args, engine=None):
        return train_and_report(config, args, engine)

    def __init__(self, subparsers):
        self._subparsers = subparsers
        self._groups: dict[str, argparse._SubParsersAction] = {}
        self.added: list[str] = []  # what `lccore plugins` lists under each plugin

    def group(self, name: str, *, help: str = ""):
        """The sub-parsers of ``lccore NAME``, made on first use; ``help`` describes the group."""
        if name not in self._groups:
            if name in self._subparsers.choices:
                raise ValueError(f"command '{name}' already exists")
            parser = self._subparsers.add_parser(name, help=help)
            parser.set_defaults(command=lambda args: (parser.print_help(), 2)[1])
            self._groups[name] = parser.add_subparsers(title=f"{name} commands", metavar=f"{name.upper()}_COMMAND")
        elif help:  # a group first made by another plugin's command, without a description
            for action in self._subparsers._choices_actions:
                if action.dest == name and not action.help:
                    action.help = help
        return self._groups[name]

    def add(self, name: str, *, help: str = "", group: str | None = None, **kwargs) -> argparse.ArgumentParser:
        """A new ``argparse.ArgumentParser`` for ``lccore NAME`` (or ``lccore GROUP NAME``)."""
        target = self.group(group) if group else self._subparsers
        full_name = " ".join(filter(None, [group, name]))
        if name in target.choices:
            raise ValueError(f"command '{full_name}' already exists")
        parser = target.add_parser(name, help=help, **kwargs)
        self.added.append(full_name)
        return parser


def cmd_cache(args) -> int:
    from .data.features import cache_entries, cache_root, clear_cache

    root = cache_root()
    if args.action == "clear":
        removed, freed = clear_cache(root)
        print(f"{root}: removed {removed} entries, {freed / 1e6:.1f} MB")
        return 0
    entries = cache_entries(root)
    if args.json:
        print(json.dumps({"root": str(root), "entries": entries, "bytes": sum(e["bytes"] for e in entries)}, indent=2))
        return 0
    for entry in entries:
        what = f"split {entry['split']}, {entry['rows']} rows" if entry["split"] else entry["kind"]
        print(f"{entry['bytes'] / 1e6:10.1f} MB  {entry['created'] or '':25}  {what}  {entry['path']}")
    print(f"{root}: {len(entries)} entries, {sum(e['bytes'] for e in entries) / 1e6:.1f} MB")
    return 0


def cmd_plugins(args) -> int:
    from .hookspecs import COMPONENT_KINDS
    from .plugins import Engine

    engine = getattr(args, "engine", None) or Engine()
    report = engine.report()
    if args.json:
        components = {
            kind: {name: [c.plugin for c in engine.owners(kind, name)] for name in engine.names(kind)} for kind in COMPONENT_KINDS
        }
        print(json.dumps({"plugins": report, "components": components}, indent=2))
        return 0
    for plugin in report:
        origin = f"{plugin['distribution']} {plugin['version']}" if plugin["distribution"] else f"module {plugin['module']}"
        print(f"{plugin['name']}  [{plugin['status']}]  {origin}")
        if plugin["reason"]:
            print(f"    reason: {plugin['reason']}")
        for kind, names in plugin["components"].items():
            print(f"    {kind}: {', '.join(names)}")
        if plugin["commands"]:
            print(f"    commands: {', '.join(f'lccore {name}' for name in plugin['commands'])}")
    if not report:
        print("no plugins installed (entry-point group 'lccore')")
    for kind in COMPONENT_KINDS:
        for name in engine.names(kind):
            owners = engine.owners(kind, name)
            if len(owners) > 1:
                print(f"conflict: {kind} '{name}' is registered by {' and '.join(c.plugin for c in owners)}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config

    config = load_config(args.config, args.overrides, init_from=args.init_from)  # config errors before the heavy imports
    train_and_report(config, args)
    return 0


def train_and_report(config, args, engine=None):
    """Run `lccore.train` as the train-like commands' flags say; the main process prints the summary."""
    quiet_transformers()
    from .training import train

    run = train(config, args.output, engine=engine, progress=not args.quiet, overwrite=args.overwrite, resume=args.resume)
    if run.is_main_process:
        print(summary(run))
    return run


def summary(run) -> str:
    lines = [f"run written to {run.output_dir}"]
    metric = run.config.train.early_stopping.metric
    if run.metrics.get("best"):
        best = run.metrics["best"]
        lines.append(f"best dev {metric}: {best['value']:.4f} (step {best['step']}, epoch {best['epoch']})")
    for split, label in (("test", "test"), ("previous_test", "earlier run's test")):
        scores = run.metrics.get(split, {})
        if "before" in scores and "after" in scores:
            for name, after in scores["after"].items():
                if isinstance(after, (int, float)):
                    lines.append(f"{label} {name}: {scores['before'][name]:.4f} before fine-tuning -> {after:.4f} after")
    under_trained = run.metrics.get("under_trained")
    if under_trained:
        lines.append("warning: the model looks under-trained: " + "; ".join(under_trained["reasons"]))
        lines.append(f"  {under_trained['advice']}")
    cleaned = run.metrics.get("ethics", {}).get("training_data")
    if cleaned:
        warning = "warning: " if cleaned["dropped"] else ""
        lines.append(f"{warning}ethics: {cleaned['dropped']} of {cleaned['examples']} training examples dropped ({cleaned['dropped'] / max(cleaned['examples'], 1):.1%}), {cleaned['changed']} redacted, {cleaned['flagged']} flagged")
        for name, counts in cleaned["policies"].items():
            reasons = ", ".join(f"{reason} x{n}" for reason, n in sorted(counts["reasons"].items()))
            lines.append(f"  {name}: {counts['block']} blocked, {counts['redact']} redacted, {counts['flag']} flagged" + (f" ({reasons})" if reasons else ""))
        if cleaned.get("skipped"):
            lines.append(f"  {cleaned['skipped']}")
    return "\n".join(lines)


def cmd_evaluate(args) -> int:
    quiet_transformers()
    from .predictor import load

    predictor = load(args.run_dir, precision=args.precision)
    data = args.data or predictor.config.task.test or predictor.config.task.dev
    if not data:
        from .errors import ConfigError

        raise ConfigError(f"evaluate: give --data FILE ({args.run_dir} records no test or dev file)")
    if not args.data and not args.quiet:
        shown = data if isinstance(data, str) else ", ".join(data)
        print(f"evaluate: on the run's own {'test' if predictor.config.task.test else 'dev'} data {shown}", file=sys.stderr)
    print(json.dumps(predictor.evaluate(data, batch_size=args.batch_size, progress=not args.quiet), indent=2))
    return 0


def cmd_export(args) -> int:
    from .errors import ConfigError

    if not args.merge:
        raise ConfigError("export: pass --merge (the export writes a LoRA run's adapter merged into its base weights)")
    quiet_transformers()
    from .predictor import export_merged

    output = export_merged(args.run_dir, args.output, overwrite=args.overwrite)
    print(f"merged run written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
