"""``lccore new-plugin NAME``: write a plugin distribution that passes the conformance kit as is.

The distribution has a ``pyproject.toml`` declaring the ``lccore`` entry point, a package with a
task (reusing the first-party ``sequence_classifier`` head) and its sample data, a test calling
:func:`lccore.testing.check_plugin`, and a README saying how to install, test and publish it.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

from .errors import ConfigError

KINDS = ("task",)

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "An lccore plugin: the `{name}` task."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["lccore"]

[project.optional-dependencies]
test = ["pytest>=8"]

# lccore finds the plugin through this entry point: NAME = "module".
[project.entry-points.lccore]
{name} = "{module}"

[tool.setuptools]
packages = ["{module}"]
'''

INIT = '''\
"""The `{name}` task for lccore.

Importing this module must stay cheap: the task class is imported when a run asks for it."""

from __future__ import annotations

import attrs

import lccore


@attrs.define
class {cls}Options:
    text_field: str = attrs.field(default="text", metadata={{"doc": "Key holding the text."}})
    label_field: str = attrs.field(default="label", metadata={{"doc": "Key holding the label."}})


@lccore.hookimpl
def register_tasks(register):
    def make_task(options: {cls}Options):
        from .task import {cls}Task

        return {cls}Task(options)

    register("{name}", make_task, options={cls}Options, description="Classify a text into one of the labels seen in training.")
'''

TASK = '''\
"""The `{name}` task: JSONL {{"text": ..., "label": ...}} rows, one label per text."""

from __future__ import annotations

import json
from pathlib import Path

import attrs

import lccore
from lccore.data import read_records


@attrs.frozen
class Example:
    text: str
    label: str | None
    where: str


class {cls}Task(lccore.Task):
    # The first-party `sequence_classifier` head builds the output layer: no head to write.
    default_head = "sequence_classifier"
    metric = "accuracy"
    metric_names = ("accuracy",)

    def __init__(self, options):
        self.options = options
        self.labels: list[str] = []

    def read(self, path):
        text_key, label_key = self.options.text_field, self.options.label_field
        examples = []
        for where, row in read_records(path, required=(text_key, label_key)):
            if not isinstance(row[text_key], str):
                raise lccore.DataError(f"{{where}}: '{{text_key}}' must be a string")
            examples.append(Example(row[text_key], str(row[label_key]), where))
        return examples

    def fit(self, examples):
        self.labels = sorted({{e.label for e in examples}})
        if len(self.labels) < 2:
            raise lccore.DataError(f"{{examples[0].where}}: training data needs at least 2 labels")

    def head_spec(self):
        return {{"labels": list(self.labels)}}

    def restore(self, spec):
        self.labels = list(spec["labels"])

    def encode(self, examples, tokenizer, max_length):
        index = {{label: i for i, label in enumerate(self.labels)}}
        encoded = tokenizer([e.text for e in examples], truncation=True, max_length=max_length)
        features = []
        for i, example in enumerate(examples):
            feature = {{key: values[i] for key, values in encoded.items()}}
            if example.label is not None:
                if example.label not in index:
                    raise lccore.DataError(f"{{example.where}}: label '{{example.label}}' was not seen in training")
                feature["labels"] = index[example.label]
            features.append(feature)
        return features

    def decode(self, outputs, batch, features):
        import torch

        probabilities = torch.softmax(outputs.logits.float(), dim=-1)
        scores, indices = probabilities.max(dim=-1)
        return [{{"label": self.labels[i], "score": round(float(s), 6)}} for i, s in zip(indices.tolist(), scores.tolist())]

    def metrics(self, predictions, examples):
        correct = sum(p["label"] == e.label for p, e in zip(predictions, examples))
        return {{"accuracy": correct / max(len(examples), 1)}}

    def parse_input(self, value, where):
        if isinstance(value, str):
            return Example(value, None, where)
        if isinstance(value, dict) and isinstance(value.get(self.options.text_field), str):
            label = value.get(self.options.label_field)
            return Example(value[self.options.text_field], None if label is None else str(label), where)
        raise lccore.DataError(f"{{where}}: expected a string or an object with a string '{{self.options.text_field}}'")

    def example_data(self, directory):
        # A few rows in the format read() accepts: lccore.testing.check_plugin round-trips them.
        rows = [("the film was great", "yes"), ("a wonderful book", "yes"), ("a boring show", "no"), ("the plot was awful", "no")]
        path = Path(directory) / "train.jsonl"
        text_key, label_key = self.options.text_field, self.options.label_field
        path.write_text("".join(json.dumps({{text_key: t, label_key: l}}) + "\\n" for t, l in rows), encoding="utf-8")
        return {{"train": path}}
'''

TEST = '''\
from lccore.testing import check_plugin


def test_plugin_passes_the_lccore_conformance_kit():
    report = check_plugin("{module}")
    assert report.passed
'''

README = '''\
# {dist}

An [lccore](https://pypi.org/project/lccore/) plugin with the `{name}` task.

    pip install -e ".[test]"
    lccore plugins                 # lists `{name}` with its components
    pytest                         # runs lccore's conformance kit over the plugin

Use it in a run config:

```yaml
task:
  name: {name}
  train: train.jsonl   # {{"text": "...", "label": "..."}} per line
```

Publish: `python -m build` then `twine upload dist/*`; users `pip install {dist}` and lccore finds
the plugin through the `lccore` entry point in `pyproject.toml`.
'''


def new_plugin(name: str, output: str | Path = ".", kind: str = "task") -> Path:
    """Write the distribution ``lccore-NAME`` under ``output``; returns its folder."""
    if kind not in KINDS:
        raise ConfigError(f"--kind: '{kind}' is not scaffolded yet; kinds: {', '.join(KINDS)}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ConfigError(f"plugin name '{name}': use lower-case letters, digits and '_', starting with a letter")
    module = f"lccore_{name}"
    dist = f"lccore-{name.replace('_', '-')}"
    cls = "".join(part.capitalize() for part in name.split("_"))
    root = Path(output) / dist
    if root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root}: exists and is not empty")
    values = {"name": name, "module": module, "dist": dist, "cls": cls}
    files = {
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        f"{module}/__init__.py": INIT,
        f"{module}/task.py": TASK,
        "tests/test_plugin.py": TEST,
    }
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(template).format(**values), encoding="utf-8")
    return root
