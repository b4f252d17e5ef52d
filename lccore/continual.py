"""Continual fine-tuning: start from an earlier run's model and head (``train.init_from``), replay a
share of its training data, and score its test set before and after, so forgetting shows."""

from __future__ import annotations

import json
import random
from pathlib import Path

import attrs

from .config import RunConfig, load_config
from .data import data_files, read_split
from .errors import ConfigError, RunDirError
from .finetuning import is_lora_model_dir
from .rundir import CONFIG_FILE, MANIFEST_FILE, MODEL_DIR, check_run_dir


@attrs.frozen
class PreviousRun:
    run_dir: Path
    config: RunConfig
    task_state: dict

    @property
    def model_dir(self) -> Path:
        return self.run_dir / MODEL_DIR

    @classmethod
    def open(cls, run_dir: str, task_name: str) -> "PreviousRun":
        try:
            run_dir = check_run_dir(run_dir)
        except RunDirError as exc:
            raise ConfigError(f"train.init_from: {exc}") from None
        config = load_config(run_dir / CONFIG_FILE)
        if config.task.name != task_name:
            raise ConfigError(f"train.init_from: {run_dir} was a '{config.task.name}' run; this run's task is '{task_name}'")
        if is_lora_model_dir(run_dir / MODEL_DIR):
            raise ConfigError(f"train.init_from: {run_dir} holds a LoRA adapter; `lccore export {run_dir} --merge --output DIR` and start from DIR")
        manifest = json.loads((run_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
        return cls(run_dir, config, manifest["task_state"])

    def replay(self, task, fraction: float, seed: int) -> list:
        """``fraction`` of the earlier training examples, drawn with ``seed``."""
        if not fraction:
            return []
        path = self.config.task.train
        missing = [f for f in data_files(path or [None]) if not f or not Path(f).is_file()]
        if missing:
            raise ConfigError(f"train.replay: the earlier run's training file is gone ({missing[0]})")
        examples = read_split(task, path)
        return random.Random(seed).sample(examples, round(fraction * len(examples)))

    def test_file(self) -> str | list[str] | None:
        path = self.config.task.test
        return path if path and all(Path(f).is_file() for f in data_files(path)) else None
