"""The `plugin_name` task for lccore.

Importing this module must stay cheap: the task class is imported when a run asks for it."""

from __future__ import annotations

import attrs

import lccore


@attrs.define
class PluginNameOptions:
    text_field: str = attrs.field(default="text", metadata={"doc": "Key holding the text."})
    label_field: str = attrs.field(default="label", metadata={"doc": "Key holding the label."})


@lccore.hookimpl
def register_tasks(register):
    def make_task(options: PluginNameOptions):
        from .task import PluginNameTask

        return PluginNameTask(options)

    register("plugin_name", make_task, options=PluginNameOptions, description="Classify a text into one of the labels seen in training.")
