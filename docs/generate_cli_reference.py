"""Write docs/cli.md from the ``lccore`` argument parser: every command and subcommand, its usage and its arguments.

    python docs/generate_cli_reference.py          # rewrite docs/cli.md
    python docs/generate_cli_reference.py --check  # exit 1 if docs/cli.md is stale (the tests do this)
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from lccore import cli

TARGET = Path(__file__).with_name("cli.md")


def build_parser() -> argparse.ArgumentParser:
    """The parser with the kernel's commands and those lccore's own plugins add: the same output
    whatever else is installed and whatever ``LCCORE_DISABLE_PLUGINS`` says in this shell."""
    if "engine" not in inspect.signature(cli.build_parser).parameters:
        return cli.build_parser()
    from importlib import import_module, metadata

    from lccore import Engine

    first_party = sorted(
        {ep.value for ep in metadata.entry_points(group="lccore") if ep.dist is not None and ep.dist.name == "lccore"}
    )
    return cli.build_parser(Engine(entry_points=False, plugins=[import_module(name) for name in first_party], use_env=False))


def usage(parser: argparse.ArgumentParser) -> str:
    """The usage line on one line, whatever the terminal's width (argparse wraps to $COLUMNS otherwise)."""
    formatter = argparse.HelpFormatter(prog=parser.prog, width=100_000)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups, prefix="")
    return formatter.format_help().strip()


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, help, parser) of each subcommand, in the order they were added."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            found += [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]
    return found


def cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(text) -> str:
    return f"`{text}`".replace("|", "\\|")


def argument_row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    formatter = argparse.HelpFormatter(prog=parser.prog, width=100_000)
    if action.option_strings:
        name = ", ".join(code(flag) for flag in action.option_strings)
        value = "" if action.nargs == 0 else code(formatter._format_args(action, action.dest.upper()))  # a switch takes no value
        default = "required" if action.required else ("" if action.default in (None, argparse.SUPPRESS) else code(repr(action.default)))
    else:
        name, value = code(formatter._format_args(action, action.dest)), ""
        default = "" if action.nargs in ("?", "*") else "required"
    choices = ", ".join(code(choice) for choice in action.choices) if action.choices else ""
    help_text = formatter._expand_help(action) if action.help else ""
    if isinstance(action, argparse._AppendAction) and "repeatable" not in help_text:
        help_text += " (repeatable)"
    return f"| {name} | {value} | {default} | {choices} | {cell(help_text)} |"


def section(parser: argparse.ArgumentParser, help_text: str, level: int) -> list[str]:
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if help_text:
        lines += [help_text[0].upper() + help_text[1:] + ("" if help_text.endswith(".") else "."), ""]
    if parser.description and parser.description != help_text:
        lines += [parser.description, ""]
    lines += ["```", usage(parser), "```", ""]
    rows = [
        argument_row(parser, action)
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) and action.help is not argparse.SUPPRESS
    ]
    if rows:
        lines += ["| argument | value | default | choices | meaning |", "|---|---|---|---|---|", *rows, ""]
    children = subcommands(parser)
    if children:
        lines += ["Subcommands: " + ", ".join(f"[`{name}`](#{anchor(sub.prog)})" for name, _, sub in children) + ".", ""]
    for _, child_help, child in children:
        lines += section(child, child_help, level + 1)
    return lines


def anchor(prog: str) -> str:
    """GitHub's heading anchor for a heading that is the command in backticks."""
    return prog.lower().replace(" ", "-")


def render() -> str:
    parser = build_parser()
    lines = [
        "# Command-line reference",
        "",
        "Generated from `lccore.cli.build_parser()` (with the commands of lccore's own plugins) by `python docs/generate_cli_reference.py`; do not edit by hand.",
        "`lccore COMMAND --help` prints the same information in the terminal.",
        "",
        "| command | does |",
        "|---|---|",
    ]
    queue = list(subcommands(parser))
    while queue:
        _, help_text, sub = queue.pop(0)
        lines.append(f"| [`{sub.prog}`](#{anchor(sub.prog)}) | {cell(help_text)} |")
        queue[0:0] = subcommands(sub)
    lines.append("")
    lines += section(parser, "", 2)
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run python docs/generate_cli_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
