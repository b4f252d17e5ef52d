"""Cooperative time limits: work that can take long calls :func:`check` between its steps (model
batches, explainer evaluations, generated tokens), and inside ``with limit(seconds):`` a check past
the time raises :class:`~lccore.errors.TimeLimitError`. The work then really stops, and the thread
that ran it is free again: a thread cannot be killed from outside, so it has to stop itself.

The limit is a context variable: it holds for the thread (or task) that entered the block and
for nothing else, so two requests served by two threads each have their own.
"""

from __future__ import annotations

import contextlib
import contextvars
import time

import attrs

from .errors import TimeLimitError


@attrs.frozen
class Deadline:
    at: float  # time.monotonic() when the time is up
    seconds: float  # the limit as given, for the message


_current: contextvars.ContextVar[Deadline | None] = contextvars.ContextVar("lccore_deadline", default=None)


@contextlib.contextmanager
def limit(seconds: float | None = None, *, at: float | None = None):
    """Within the block, :func:`check` raises once ``seconds`` have passed (or ``time.monotonic()``
    reaches ``at``). A limit inside another keeps the earlier of the two; ``None``: no new limit."""
    if at is None and seconds is None:
        yield
        return
    now = time.monotonic()
    at = now + seconds if at is None else at
    outer = _current.get()
    if outer is not None and outer.at <= at:
        yield
        return
    token = _current.set(Deadline(at, seconds if seconds is not None else max(at - now, 0.0)))
    try:
        yield
    finally:
        _current.reset(token)


def check() -> None:
    """Raise :class:`TimeLimitError` when the current limit has passed; otherwise nothing (and
    nothing at all outside a :func:`limit` block). Cheap: call it between steps."""
    current = _current.get()
    if current is not None and time.monotonic() >= current.at:
        raise TimeLimitError(f"stopped at the time limit of {current.seconds:g} s")


def remaining() -> float | None:
    """Seconds left under the current limit (0 once it has passed); None when there is none."""
    current = _current.get()
    return None if current is None else max(current.at - time.monotonic(), 0.0)


def watch(model) -> None:
    """Make every forward pass of ``model`` (a torch module) call :func:`check`, through a hook
    on its embedding layers: that covers the loops lccore does not own (``model.generate``
    decoding token by token, a library scoring masked texts). Idempotent."""
    import torch

    if not isinstance(model, torch.nn.Module) or getattr(model, "_lccore_deadline_watched", False):
        return
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            module.register_forward_pre_hook(lambda module, args: check())
    model._lccore_deadline_watched = True
