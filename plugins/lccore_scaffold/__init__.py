"""The `scaffold` plugin: `lccore new-plugin NAME [--kind KIND]` writes a plugin distribution that
passes the conformance kit as is (see :mod:`lccore_scaffold.scaffold`)."""

from __future__ import annotations

import lccore

#: The component kinds a new plugin can start from.
KINDS = ("task", "head", "explainer", "ethics_policy")


@lccore.hookimpl
def register_commands(commands):
    parser = commands.add("new-plugin", help="scaffold a plugin distribution (pyproject.toml, package, kit test, README)")
    parser.add_argument("name", help="the component's name, e.g. keyword_classifier (the package is lccore_NAME)")
    parser.add_argument("--output", default=".", help="folder to write lccore-NAME/ into (default: the current folder)")
    parser.add_argument("--kind", default="task", choices=KINDS, help="what the plugin registers (default: task)")
    parser.set_defaults(command=run)


def run(args) -> int:
    from .scaffold import new_plugin

    root = new_plugin(args.name, args.output, args.kind)
    print(f"wrote {root}")
    print(f"next: pip install -e {root}[test] && pytest {root}")
    return 0
