"""Write docs/config.md from the config classes and the installed plugins' option classes.

    python docs/generate_config_reference.py          # rewrite docs/config.md
    python docs/generate_config_reference.py --check  # exit 1 if docs/config.md is stale (the tests do this)
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

import attrs

import lccore
from lccore import config as cfg

TARGET = Path(__file__).with_name("config.md")


def type_name(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType")):
        inner = [type_name(a) for a in args if a is not type(None)]
        return " \\| ".join(inner) + (" \\| null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_name(args[0])}" if args else "list"
    if attrs.has(tp):
        return "section"
    return getattr(tp, "__name__", str(tp))


def section_class(tp):
    """The attrs class of a section, also when the section may be null (``Optional[LoraConfig]``)."""
    if attrs.has(tp):
        return tp
    sections = [a for a in typing.get_args(tp) if attrs.has(a)]
    return sections[0] if len(sections) == 1 else None


def default_of(field) -> str:
    if field.default is attrs.NOTHING:
        return "required"
    default = field.default
    if isinstance(default, attrs.Factory):
        default = default.factory()
        if attrs.has(type(default)):
            return "—"
    return f"`{default!r}`" if default is not None else "`null`"


def bounds_of(field) -> str:
    """The range a number must lie in (the config loader checks it), as a sentence."""
    low, high = field.metadata.get("min"), field.metadata.get("max")
    number = lambda value: f"{value:,}".replace(",", " ") if isinstance(value, int) and abs(value) >= 10_000 else f"{value:g}"  # noqa: E731
    if low is not None and high is not None:
        return f" Range: {number(low)} to {number(high)}."
    if low is not None:
        return f" At least {number(low)}."
    if high is not None:
        return f" At most {number(high)}."
    return ""


def table(cls, prefix: str) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows, nested = [], []
    for field in attrs.fields(cls):
        key = f"{prefix}{field.name}"
        if field.metadata.get("extra"):
            continue
        rows.append(f"| `{key}` | {type_name(hints[field.name])} | {default_of(field)} | {field.metadata.get('doc', '')}{bounds_of(field)} |")
        section = section_class(hints[field.name])
        if section is not None:
            nested.append((section, f"{key}."))
    out = ["| key | type | default | meaning |", "|---|---|---|---|", *rows, ""]
    for nested_cls, nested_prefix in nested:
        out += table(nested_cls, nested_prefix)
    return out


def render() -> str:
    lines = [
        "# Config reference",
        "",
        "Generated from the config classes by `python docs/generate_config_reference.py`; do not edit by hand.",
        "",
        "A run config is a YAML mapping. Only `model` and `task` are required. `task`, `head` and",
        "`optimizer` may be a bare name (`optimizer: sgd`). Any key of those three sections that the",
        "kernel does not define is an option of the chosen component, validated against its options",
        "(listed below for the first-party plugins). Override any key on the command line with",
        "`--set section.key=value` (the value is read as YAML: `1`, `true`, `[a, b]`). Relative data",
        "paths are relative to the config file.",
        "",
    ]
    sections = [("Top level", cfg.RunConfig, "")]
    for field in attrs.fields(cfg.RunConfig):
        tp = typing.get_type_hints(cfg.RunConfig)[field.name]
        if attrs.has(tp):
            sections.append((f"`{field.name}`", tp, f"{field.name}."))
    for title, cls, prefix in sections:
        lines += [f"## {title}", ""]
        lines += table(cls, prefix) if prefix else table_top(cls)
    engine = lccore.Engine(use_env=False)
    lines += ["## Component options (first-party plugins)", ""]
    for kind, section in (("task", "task"), ("head", "head"), ("optimizer", "optimizer"), ("ethics_policy", "ethics[]")):
        for name in engine.names(kind):
            component = engine.component(kind, name)
            if component.options is None:
                continue
            lines += [f"### {kind} `{name}` (plugin `{component.plugin}`)", "", component.description, ""]
            lines += table(component.options, f"{section}.")
    return "\n".join(lines).rstrip() + "\n"


def table_top(cls) -> list[str]:
    hints = typing.get_type_hints(cls)
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for field in attrs.fields(cls):
        rows.append(f"| `{field.name}` | {type_name(hints[field.name])} | {default_of(field)} | {field.metadata.get('doc', '')} |")
    return rows + [""]


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run python docs/generate_config_reference.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
