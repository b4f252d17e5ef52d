"""The `plugin_name` explainer for lccore.

Importing this module must stay cheap: torch loads when an explanation is asked for."""

from __future__ import annotations

from typing import Optional

import attrs

import lccore


@attrs.define
class PluginNameOptions:
    target: Optional[str] = attrs.field(default=None, metadata={"doc": "The class to explain; default: the predicted one."})
    batch_size: int = attrs.field(default=32, metadata={"doc": "Occluded texts scored per forward pass.", "min": 1})


@lccore.hookimpl
def register_explainers(register):
    def make_explainer(options: PluginNameOptions):
        from .explainer import PluginNameExplainer

        return PluginNameExplainer(options)

    register("plugin_name", make_explainer, options=PluginNameOptions, description="Occlusion: the drop of the class probability when a word is left out.")
