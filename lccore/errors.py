"""Errors a user can act on. The CLI prints each as one line and exits with status 2."""

from __future__ import annotations


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
