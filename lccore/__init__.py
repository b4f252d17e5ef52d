"""lccore: a plugin engine for the whole life of a transformer language model.

The kernel is small: hook specs (:mod:`lccore.hookspecs`), plugin discovery (:class:`Engine`),
config (:mod:`lccore.config`), one training loop (:func:`train`) and inference (:func:`load`).
Every task, head, optimiser, reasoner, KG backend, explainer and ethics policy comes from a plugin.

Importing lccore is cheap: torch and transformers load only when training or inference starts.
"""

from __future__ import annotations

from .version import __version__

from .components import Head, KGBackend, MetricsAccumulator, Task
from .config import RunConfig, load_config
from .errors import ConfigError, DataError, LccoreError, PluginError, RunDirError, TimeLimitError
from .hookspecs import COMPONENT_KINDS, hookimpl
from .plugins import Engine

__all__ = [
    "COMPONENT_KINDS",
    "ConfigError",
    "DataError",
    "Engine",
    "Head",
    "KGBackend",
    "LccoreError",
    "MetricsAccumulator",
    "PluginError",
    "Predictor",
    "RunConfig",
    "RunDirError",
    "Task",
    "TimeLimitError",
    "hookimpl",
    "load",
    "load_config",
    "progress_bar",
    "train",
]


def train(config, output_dir, **kwargs):
    """Fine-tune a model as ``config`` (a dict, a YAML path or a :class:`RunConfig`) says; see
    :func:`lccore.training.train`. Returns a :class:`lccore.training.Run`."""
    from .training import train as _train

    return _train(config, output_dir, **kwargs)


def progress_bar(*, total, desc: str, unit: str, enabled: bool = True, delay: float = 1.0, **kwargs):
    """A tqdm bar with rate and ETA, as lccore's own commands draw them (redrawn rarely when stderr
    is a file or a CI log; with ``delay`` only once the work has taken that long), for plugins'
    long work; see :func:`lccore.progress.progress_bar`."""
    from .progress import progress_bar as _progress_bar

    return _progress_bar(total=total, desc=desc, unit=unit, enabled=enabled, delay=delay, **kwargs)


def load(run_dir, **kwargs):
    """Load a finished run for prediction; see :func:`lccore.predictor.load`."""
    from .predictor import load as _load

    return _load(run_dir, **kwargs)


def __getattr__(name):
    # lccore.Predictor (what load gives, and what explainers and reasoners receive) without
    # importing the inference module on `import lccore`
    if name == "Predictor":
        from .predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'lccore' has no attribute {name!r}")
