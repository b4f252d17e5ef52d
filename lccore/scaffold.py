"""``lccore new-plugin NAME [--kind KIND]``: write a plugin distribution that passes the
conformance kit as is.

The distribution has a ``pyproject.toml`` declaring the ``lccore`` entry point, a package with one
working component of the kind asked for, a test calling :func:`lccore.testing.check_plugin`, and a
README saying how to install, test, use and publish it. The components:

- ``task``: JSONL text classification (reusing the first-party ``sequence_classifier`` head),
  with its sample data (``example_data``);
- ``head``: the mean of the encoder's token representations, then a linear layer, for tasks whose
  ``head_spec()`` lists ``labels`` (the kit checks it with ``text_classification``);
- ``explainer``: occlusion, each word's score the drop of the predicted class's probability when
  the word is left out;
- ``ethics_policy``: regular expressions that flag, redact or block what they match.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import ConfigError

KINDS = ("task", "head", "explainer", "ethics_policy")

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "An lccore plugin: the `{name}` {what}."
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
        # A generator: lccore reads the training split in passes, so a file of any size streams.
        text_key, label_key = self.options.text_field, self.options.label_field
        for where, row in read_records(path, required=(text_key, label_key)):
            if not isinstance(row[text_key], str):
                raise lccore.DataError(f"{{where}}: '{{text_key}}' must be a string")
            yield Example(row[text_key], str(row[label_key]), where)

    def fit(self, examples):
        # `examples` reads the training files again on each pass: one pass here.
        self.labels = sorted({{e.label for e in examples}})
        if len(self.labels) < 2:
            raise lccore.DataError(f"training data needs at least 2 labels, found {{len(self.labels)}}")

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

An [lccore](https://pypi.org/project/lccore/) plugin with the `{name}` {what}.

    pip install -e ".[test]"
    lccore plugins                 # lists `{name}` with its components
    pytest                         # runs lccore's conformance kit over the plugin

{usage}

Publish: `python -m build` then `twine upload dist/*`; users `pip install {dist}` and lccore finds
the plugin through the `lccore` entry point in `pyproject.toml`.
'''

TASK_USAGE = '''\
Use it in a run config:

```yaml
task:
  name: {name}
  train: train.jsonl   # {{"text": "...", "label": "..."}} per line
```'''

# --- kind: head -----------------------------------------------------------------------------------

HEAD_INIT = '''\
"""The `{name}` head for lccore.

Importing this module must stay cheap: torch and transformers load when a run builds the head."""

from __future__ import annotations

import lccore


@lccore.hookimpl
def register_heads(register):
    def make_head():
        from .head import {cls}Head

        return {cls}Head()

    register("{name}", make_head, description="Mean of the token representations, then a linear layer (tasks with labels).")
'''

HEAD = '''\
"""The `{name}` head: the mean of the encoder's token representations (padding left out), then
dropout and a linear layer with one logit per label of the task's ``head_spec()["labels"]``.

``lccore.heads.BackboneWithHead`` saves it as a Hugging Face encoder folder (it loads with
``transformers.AutoModel``) plus ``head.safetensors`` (the layers below) and ``head.json`` (the
labels), loads it back, and gives the fine-tuning controls what they read (``config``, the layers).
"""

from __future__ import annotations

import torch
from transformers.modeling_outputs import SequenceClassifierOutput

import lccore
from lccore.heads import BackboneWithHead


class MeanPooledClassifier(BackboneWithHead):
    def __init__(self, backbone, settings):
        super().__init__(backbone, settings)
        self.dropout = torch.nn.Dropout(getattr(backbone.config, "hidden_dropout_prob", 0.1))
        self.classifier = torch.nn.Linear(backbone.config.hidden_size, len(settings["labels"]))

    def forward(self, input_ids, attention_mask, token_type_ids=None, labels=None):
        inputs = {{"input_ids": input_ids, "attention_mask": attention_mask}}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        hidden = self.backbone(**inputs).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.classifier(self.dropout(pooled))
        loss = torch.nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return SequenceClassifierOutput(loss=loss, logits=logits)


class {cls}Head(lccore.Head):
    def build(self, model, spec):
        if "labels" not in spec:
            raise lccore.ConfigError("head.name: '{name}' needs a task whose head_spec() lists 'labels' (e.g. text_classification)")
        return MeanPooledClassifier.from_backbone(model, {{"labels": spec["labels"]}})

    def load(self, model_dir):
        return MeanPooledClassifier.load(model_dir)
'''

HEAD_TEST = '''\
from lccore.testing import check_plugin


def test_plugin_passes_the_lccore_conformance_kit():
    # No task uses the head by default: the kit trains it with the first-party text_classification task.
    report = check_plugin("{module}", head_tasks={{"{name}": "text_classification"}})
    assert not report.skipped
    assert ("head", "{name}", "trains one step") in {{(c.kind, c.name, c.check) for c in report.passed}}
'''

HEAD_USAGE = '''\
Use it in a run config, with any task whose `head_spec()` lists `labels`:

```yaml
task:
  name: text_classification
  train: train.jsonl
head:
  name: {name}
```'''

# --- kind: explainer ------------------------------------------------------------------------------

EXPLAINER_INIT = '''\
"""The `{name}` explainer for lccore.

Importing this module must stay cheap: torch loads when an explanation is asked for."""

from __future__ import annotations

from typing import Optional

import attrs

import lccore


@attrs.define
class {cls}Options:
    target: Optional[str] = attrs.field(default=None, metadata={{"doc": "The class to explain; default: the predicted one."}})
    batch_size: int = attrs.field(default=32, metadata={{"doc": "Occluded texts scored per forward pass.", "min": 1}})


@lccore.hookimpl
def register_explainers(register):
    def make_explainer(options: {cls}Options):
        from .explainer import {cls}Explainer

        return {cls}Explainer(options)

    register("{name}", make_explainer, options={cls}Options, description="Occlusion: the drop of the class probability when a word is left out.")
'''

EXPLAINER = '''\
"""The `{name}` explainer: occlusion. A word's score is how much the probability of the explained
class drops when the word is left out of the text (negative: the class gains without it).

Works with tasks whose model outputs one row of class logits per text and whose ``head_spec()``
lists ``labels`` (text classification). Costs one forward pass per word, plus one for the text.
"""

from __future__ import annotations

import re
import time

import torch

import lccore

WORD = re.compile(r"\\S+")


class {cls}Explainer:
    def __init__(self, options):
        self.options = options

    def explain(self, predictor, texts) -> list[dict]:
        labels = list(getattr(predictor.task, "labels", None) or [])
        if not labels:
            raise lccore.ConfigError("explainer '{name}': the task has no class labels to explain")
        records = []
        for index, text in enumerate(texts):
            started = time.perf_counter()
            if not isinstance(text, str):
                raise lccore.DataError(f"input {{index + 1}}: '{name}' explains plain texts")
            spans = [m.span() for m in WORD.finditer(text)]
            variants = [text] + [(text[:start] + text[end:]).strip() for start, end in spans]
            probabilities = self._probabilities(predictor, variants)
            predicted = int(probabilities[0].argmax())
            if self.options.target is None:
                target = predicted
            elif self.options.target in labels:
                target = labels.index(self.options.target)
            else:
                raise lccore.ConfigError(f"explainer.target: '{{self.options.target}}' is not one of {{', '.join(labels)}}")
            whole = float(probabilities[0, target])
            records.append({{
                "text": text,
                "text_index": index,
                "target": {{"label": labels[target]}},
                "prediction": {{"label": labels[predicted], "score": round(float(probabilities[0, predicted]), 6)}},
                "target_score": round(whole, 6),
                "words": [
                    {{"text": text[start:end], "start": start, "end": end, "score": round(whole - float(p[target]), 8)}}
                    for (start, end), p in zip(spans, probabilities[1:])
                ],
                "method": "{name}",
                "baseline": "the word left out",
                "cost": {{"model_evaluations": len(variants), "seconds": round(time.perf_counter() - started, 4)}},
            }})
        return records

    def _probabilities(self, predictor, texts: list[str]) -> torch.Tensor:
        task, tokenizer = predictor.task, predictor.tokenizer
        rows = []
        for first in range(0, len(texts), self.options.batch_size):
            chunk = texts[first : first + self.options.batch_size]
            examples = [task.parse_input(text, f"occluded text {{first + i + 1}}") for i, text in enumerate(chunk)]
            features = task.encode(examples, tokenizer, predictor.config.train.max_length)
            batch = {{k: v.to(predictor.device) for k, v in task.collate(features, tokenizer).items() if k != "labels"}}
            with torch.inference_mode():
                rows.append(torch.softmax(task.forward(predictor.model, batch).logits.float(), dim=-1).cpu())
        return torch.cat(rows)
'''

EXPLAINER_TEST = '''\
from lccore.testing import check_plugin


def test_plugin_passes_the_lccore_conformance_kit():
    report = check_plugin("{module}")
    assert not report.skipped
    assert ("explainer", "{name}", "one attribution per word") in {{(c.kind, c.name, c.check) for c in report.passed}}
'''

EXPLAINER_USAGE = '''\
Explain a trained text classifier's predictions:

    lccore explain RUN_DIR --explainer {name} --text "the film was great"

or from Python: `lccore.load(RUN_DIR).explain(["the film was great"], explainer="{name}")`.'''

# --- kind: ethics_policy --------------------------------------------------------------------------

ETHICS_INIT = '''\
"""The `{name}` ethics policy for lccore: regular expressions that flag, redact or block."""

from __future__ import annotations

import re
from typing import Literal

import attrs

import lccore


@attrs.define
class {cls}Options:
    patterns: list[str] = attrs.field(
        # Long digit runs: account, card or ID numbers.
        factory=lambda: [r"\\b\\d{{8,}}\\b"],
        metadata={{"doc": "Regular expressions (Python syntax), matched ignoring case."}},
    )
    action: Literal["flag", "redact", "block"] = attrs.field(default="redact", metadata={{"doc": "What a match does."}})
    stages: list[str] = attrs.field(
        factory=lambda: ["training_data", "input", "output"], metadata={{"doc": "Stages the policy acts at; elsewhere it allows everything."}}
    )


class {cls}Policy:
    def __init__(self, options: {cls}Options):
        self.options = options
        try:
            self.patterns = [re.compile(p, re.IGNORECASE) for p in options.patterns]
        except re.error as exc:
            raise lccore.ConfigError(f"ethics '{name}': patterns: {{exc}}") from None

    def inspect(self, text: str, stage: str) -> dict:
        if stage not in self.options.stages:
            return {{"decision": "allow", "reasons": [], "spans": []}}
        spans = sorted(
            ({{"start": m.start(), "end": m.end(), "pattern": p.pattern}} for p in self.patterns for m in p.finditer(text) if m.end() > m.start()),
            key=lambda span: span["start"],
        )
        if not spans:
            return {{"decision": "allow", "reasons": [], "spans": []}}
        decision = {{"decision": self.options.action, "reasons": [f"'{name}': {{len(spans)}} match(es) at {{stage}}"], "spans": spans}}
        if self.options.action == "redact":
            redacted, position = [], 0
            for span in spans:
                if span["start"] >= position:  # overlapping matches are redacted once
                    redacted.append(text[position : span["start"]] + "[REDACTED]")
                    position = span["end"]
            decision["redacted"] = "".join(redacted) + text[position:]
        return decision


@lccore.hookimpl
def register_ethics_policies(register):
    register("{name}", {cls}Policy, options={cls}Options, description="Flag, redact or block text matching regular expressions.")
'''

ETHICS_TEST = '''\
from lccore.testing import check_plugin

from {module} import {cls}Options, {cls}Policy


def test_plugin_passes_the_lccore_conformance_kit():
    report = check_plugin("{module}")
    assert not report.skipped
    assert ("ethics_policy", "{name}", "valid decisions at every stage") in {{(c.kind, c.name, c.check) for c in report.passed}}


def test_redacts_what_a_pattern_matches():
    decision = {cls}Policy({cls}Options()).inspect("account 1234567890, thanks", "input")
    assert decision["decision"] == "redact"
    assert decision["redacted"] == "account [REDACTED], thanks"
'''

ETHICS_USAGE = '''\
Use it in a run config (it then guards the training data, prediction inputs and outputs):

```yaml
ethics:
  - name: {name}
    action: block
```'''

#: Per kind: what the README calls it, its files beside pyproject.toml and README.md, its usage.
SCAFFOLDS = {
    "task": ("task", {"{module}/__init__.py": INIT, "{module}/task.py": TASK, "tests/test_plugin.py": TEST}, TASK_USAGE),
    "head": ("head", {"{module}/__init__.py": HEAD_INIT, "{module}/head.py": HEAD, "tests/test_plugin.py": HEAD_TEST}, HEAD_USAGE),
    "explainer": (
        "explainer",
        {"{module}/__init__.py": EXPLAINER_INIT, "{module}/explainer.py": EXPLAINER, "tests/test_plugin.py": EXPLAINER_TEST},
        EXPLAINER_USAGE,
    ),
    "ethics_policy": ("ethics policy", {"{module}/__init__.py": ETHICS_INIT, "tests/test_plugin.py": ETHICS_TEST}, ETHICS_USAGE),
}


def new_plugin(name: str, output: str | Path = ".", kind: str = "task") -> Path:
    """Write the distribution ``lccore-NAME`` with a component of ``kind`` (one of :data:`KINDS`)
    under ``output``; returns its folder."""
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
    what, templates, usage = SCAFFOLDS[kind]
    values = {"name": name, "module": module, "dist": dist, "cls": cls, "what": what}
    values["usage"] = usage.format(**values)
    files = {"pyproject.toml": PYPROJECT, "README.md": README, **{relative.format(**values): text for relative, text in templates.items()}}
    for relative, template in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(template.format(**values), encoding="utf-8")
    return root
