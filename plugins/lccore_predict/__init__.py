"""First-party plugin: ``lccore predict``, prediction over files (JSONL in, JSONL out, a window at a
time, resumable, shared out over the processes of a ``torchrun`` launch). The kernel's
:func:`lccore.load` gives the model; this plugin is the job that feeds it a file, as the ``serve``
plugin is the one that feeds it requests.

Importing this module is cheap: the model loads only when the command runs.
"""

from __future__ import annotations

import lccore


@lccore.hookimpl
def register_commands(commands):
    from .commands import add_commands

    add_commands(commands)
