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


#: Why each training default is what it is (issue 23): measured where a measurement exists.
WHY_THE_DEFAULTS = [
    "## Why the defaults are what they are",
    "",
    "A config with only `model` and `task` must not lose to the loop people write by hand (AdamW at a",
    "constant 5e-5, batch 16). `benchmarks/defaults.py` checks that on real data (Rotten Tomatoes",
    "sentiment, CoNLL-2003 NER at 300 and 1,000 sentences, MiniLM-L6, 3 epochs, 2 seeds); its table",
    "is in benchmarks/README.md.",
    "",
    "- `optimizer.schedule: wsd`, `optimizer.warmup_ratio: 0` for a pretrained model: the rate is held",
    "  for 90% of the steps, then decays to 0 over the last `decay_ratio` (10%). The earlier default,",
    "  linear decay to 0 after a 10% warmup, spends most of a short run at a fraction of the rate and",
    "  under-trained small data sets: NER F1 0.080 at 300 sentences and 0.488 at 1,000 against the hand",
    "  loop's 0.291 and 0.654; with `wsd` lccore scores 0.310 and 0.678, and sentiment accuracy",
    "  0.754 (the loop: 0.767, within the seeds' spread of 0.037; the old defaults: 0.753). The",
    "  short decay at the end is the annealing of warmup-stable-decay schedules (Hägele et al., 2024):",
    "  on a long run it does what a full decay does. A model built from scratch warms up over 10%.",
    "- `optimizer.lr: 5e-5`, `name: adamw`, `weight_decay: 0.01`: the fine-tuning rate of BERT's paper",
    "  and of transformers' Trainer. `lr: auto` runs a range test instead (docs/fine-tuning.md): on",
    "  the rows above it scored NER F1 0.510 and 0.742 (5e-5: 0.310 and 0.678) but sentiment 0.710",
    "  (0.754), at up to twice the time; worth a try on small token-level data sets, not a default.",
    "- `train.epochs: 3`, `batch_size: 16`: the usual fine-tuning budget. A run that ends still",
    "  learning says so (`metrics.json` → `under_trained`, and the summary says what to try).",
    "- `train.max_grad_norm: 1.0`: Trainer's default; it guards the first steps, which no longer warm",
    "  up. (Not measured on its own yet.)",
    "- `train.group_by_length: true`: each batch takes similar lengths from a pool of 50 batches of",
    "  shuffled examples: 28.0 positions an example on Rotten Tomatoes against 48.1 for random batches,",
    "  1.74× the training speed (benchmarks/train_throughput.py). On small data sets random batches",
    "  scored higher (sentiment-500 0.772 against 0.754, ner-1000 0.706 against 0.678; ner-300 0.288",
    "  against 0.310): set `false` where the time does not matter. Pools of 4 batches kept most of",
    "  both (0.767, 0.699, 0.306; 33.6 positions) and are the next candidate for the default.",
    "- `train.max_length: 128`: most sentences fit, and attention's cost grows with its square.",
    "  `train.seed: 42`: runs repeat exactly.",
    "",
]


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
        *WHY_THE_DEFAULTS,
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
