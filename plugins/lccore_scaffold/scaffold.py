"""Write a plugin distribution from the templates in ``templates/``.

Each template is a working plugin named ``plugin_name`` (package ``lccore_plugin_name``,
distribution ``lccore-plugin-name``, classes ``PluginName...``): real Python, TOML and Markdown
that can be read, linted and tested as they are. ``common/`` holds ``pyproject.toml`` and
``README.md``; each kind's folder holds the package, its test and ``usage.md``, which fills the
README's ``<!-- usage -->`` line. The components:

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

import lccore

from . import KINDS

TEMPLATES = Path(__file__).parent / "templates"
#: What the README and pyproject.toml call each kind.
KIND_WORDS = {"task": "task", "head": "head", "explainer": "explainer", "ethics_policy": "ethics policy"}


def new_plugin(name: str, output: str | Path = ".", kind: str = "task") -> Path:
    """Write the distribution ``lccore-NAME`` with a component of ``kind`` (one of :data:`KINDS`)
    under ``output``; returns its folder."""
    if kind not in KINDS:
        raise lccore.ConfigError(f"--kind: '{kind}' is not scaffolded yet; kinds: {', '.join(KINDS)}")
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise lccore.ConfigError(f"plugin name '{name}': use lower-case letters, digits and '_', starting with a letter")
    dist = f"lccore-{name.replace('_', '-')}"
    root = Path(output) / dist
    if root.exists() and any(root.iterdir()):
        raise lccore.ConfigError(f"{root}: exists and is not empty")
    # longest first: each placeholder holds the next one
    names = {"lccore-plugin-name": dist, "lccore_plugin_name": f"lccore_{name}", "PluginName": "".join(part.capitalize() for part in name.split("_")),
             "plugin_kind": KIND_WORDS[kind], "plugin_name": name}

    def render(text: str) -> str:
        return re.sub("|".join(map(re.escape, names)), lambda match: names[match.group(0)], text)

    usage = render((TEMPLATES / kind / "usage.md").read_text(encoding="utf-8"))
    sources = [(path, path.relative_to(TEMPLATES / "common")) for path in sorted((TEMPLATES / "common").rglob("*")) if path.is_file()]
    sources += [(path, path.relative_to(TEMPLATES / kind)) for path in sorted((TEMPLATES / kind).rglob("*"))
                if path.is_file() and path.name != "usage.md" and "__pycache__" not in path.parts]
    for source, relative in sources:
        target = root / render(relative.as_posix())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(render(source.read_text(encoding="utf-8")).replace("<!-- usage -->", usage), encoding="utf-8")
    return root
