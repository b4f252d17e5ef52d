"""The `plugin_name` head for lccore.

Importing this module must stay cheap: torch and transformers load when a run builds the head."""

from __future__ import annotations

import lccore


@lccore.hookimpl
def register_heads(register):
    def make_head():
        from .head import PluginNameHead

        return PluginNameHead()

    register("plugin_name", make_head, description="Mean of the token representations, then a linear layer (tasks with labels).")
