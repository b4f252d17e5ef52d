"""Errors a user can act on. The CLI prints each as one line and exits with status 2."""

from __future__ import annotations

import contextlib


class LccoreError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""

    exit_status = 2


class ConfigError(LccoreError):
    """A run config (or a ``--set`` override) has an unknown key, a wrong type or a bad value."""


class DataError(LccoreError):
    """A data file is missing, empty, not UTF-8, or has a malformed row."""


class PluginError(LccoreError):
    """A component name is unknown, ambiguous, or its plugin failed to load."""


class RunDirError(LccoreError):
    """A run directory is missing or does not hold a finished run."""


class TimeLimitError(LccoreError):
    """Work ran past its time limit and was stopped (not left running in the background)."""

    exit_status = 124  # what timeout(1) returns


def close_matches(word: str, candidates) -> str:
    """' (did you mean 'x'?)' when a candidate is close to ``word``, else ''."""
    import difflib

    match = difflib.get_close_matches(str(word), [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def defined_at(function) -> str:
    """``FILE:LINE`` where a function (a plugin's factory, a task's ``encode``) is defined: errors
    that are a plugin's mistake point its author at the code."""
    import inspect

    code = getattr(inspect.unwrap(function), "__code__", None)
    return f"{code.co_filename}:{code.co_firstlineno}" if code is not None else getattr(function, "__qualname__", repr(function))


@contextlib.contextmanager
def model_load_errors(key: str, source):
    """Turn transformers' errors for a missing or malformed model (a truncated or damaged
    ``model.safetensors`` among them) into a one-line config error."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, ValueError, KeyError, SafetensorError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, SafetensorError):
            reason = f"a weights file is damaged or truncated ({reason})"
        raise ConfigError(f"{key}: cannot load '{source}': {reason}") from None
