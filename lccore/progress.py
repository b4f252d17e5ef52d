"""What a user sees while work runs: lccore's progress bars (rate and ETA), and transformers' own
bars and load reports kept out of lccore's output."""

from __future__ import annotations

import contextlib


def progress_bar(*, total: int | None, desc: str, unit: str, enabled: bool, leave: bool = True, delay: float = 0.0, initial: int = 0,
                 unit_scale: bool = False):
    """A tqdm bar with rate and ETA; redrawn rarely when stderr is a file or a CI log. With
    ``delay`` it shows only once the work has taken that long (a quick pass, or one that fails at
    once with a one-line error, draws nothing)."""
    import sys

    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, disable=not enabled, leave=leave, mininterval=0.1 if interactive else 15.0, delay=delay,
                initial=initial, unit_scale=unit_scale)


@contextlib.contextmanager
def without_hf_bars():
    """transformers' own bars ("Loading weights", "Writing model shards") and load reports (a new
    head's weights listed as MISSING: expected, lccore trains them) off while lccore loads or saves
    a model: a program that calls lccore.load or lccore.train sees lccore's output. Errors still show."""
    from transformers.utils import logging as hf_logging

    was_enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if was_enabled:
            hf_logging.enable_progress_bar()
