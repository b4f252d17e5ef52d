"""Config loading: only model and task are required, typos and wrong types are one-line errors."""

from __future__ import annotations

import pytest
import yaml

import lccore
from lccore.config import RunConfig, TrainConfig, load_config, structure
from lccore.errors import ConfigError
from lccore.config import resolve


def test_model_and_task_are_enough_and_defaults_are_filled_in():
    config = load_config({"model": "some/model", "task": "text_classification"})
    assert config.task.name == "text_classification"
    assert (config.optimizer.name, config.optimizer.schedule, config.train.epochs) == ("adamw", "wsd", 3)
    config, task, head = resolve(config, lccore.Engine())
    resolved = config.to_dict()
    assert resolved["head"]["name"] == "sequence_classifier"
    assert resolved["train"]["early_stopping"]["metric"] == "accuracy"
    assert resolved["task"]["label_field"] == "label"
    assert resolved["optimizer"]["betas"] == [0.9, 0.999]
    # the resolved config reads back into the same config
    assert load_config(resolved).to_dict() == resolved


@pytest.mark.parametrize(
    "data, message",
    [
        ({"task": "text_classification"}, "model: missing required key"),
        ({"model": "m", "task": "text_classification", "train": {"epoch": 2}}, "train.epoch: unknown key (did you mean 'epochs'?)"),
        ({"model": "m", "task": "text_classification", "train": {"epochs": "three"}}, "train.epochs: expected an integer, got 'three'"),
        ({"model": "m", "task": "text_classification", "train": {"epochs": 0}}, "train.epochs: must be at least 1, got 0"),
        ({"model": "m", "task": "text_classification", "train": {"mixed_precision": "bf61"}}, "train.mixed_precision: expected one of no, bf16, fp16, auto, got 'bf61' (did you mean 'bf16'?)"),
        ({"model": "m", "task": "text_classification", "optimizr": {}}, "optimizr: unknown key (did you mean 'optimizer'?)"),
        ({"model": "m", "task": "text_classification", "train": {"early_stopping": {"patience": 1.5}}}, "train.early_stopping.patience: expected an integer, got 1.5"),
        ({"model": "m", "task": "text_classification", "train": [1]}, "train: expected a mapping, got a list"),
        ({"model": 3, "task": "text_classification"}, "model: expected a string, got 3"),
    ],
)
def test_bad_config_names_the_key(data, message):
    with pytest.raises(ConfigError) as error:
        load_config(data)
    assert str(error.value) == f"config: {message}"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"task": {"name": "text_clasification"}}, "task.name: unknown task 'text_clasification' (did you mean 'text_classification'?)"),
        ({"task": {"name": "text_classification", "text_feild": "body"}}, "task.text_feild: unknown key (did you mean 'text_field'?)"),
        ({"task": "text_classification", "optimizer": {"name": "sgd", "momentun": 0.5}}, "optimizer.momentun: unknown key (did you mean 'momentum'?)"),
        ({"task": "text_classification", "optimizer": "adamw", "head": "sequence_clasifier"}, "head: unknown head 'sequence_clasifier' (did you mean 'sequence_classifier'?)"),
        ({"task": "text_classification", "train": {"early_stopping": {"metric": "acc"}}}, "train.early_stopping.metric: task 'text_classification' has no metric 'acc'"),
    ],
)
def test_bad_component_names_and_options_name_the_key(data, message):
    config = load_config({"model": "m", **data})
    with pytest.raises(lccore.LccoreError) as error:
        resolve(config, lccore.Engine())
    assert str(error.value).startswith(message)


def test_yaml_file_paths_are_relative_to_the_config_and_overrides_apply(tmp_path):
    (tmp_path / "data").mkdir()
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"model": "m", "task": {"name": "text_classification", "train": "data/train.jsonl"}}))
    config = load_config(path, ["train.epochs=1", "optimizer.lr=1e-4", "train.mixed_precision=bf16", "task.dev=data/dev.jsonl", "train.early_stopping.patience=2"])
    assert config.task.train == str(tmp_path / "data" / "train.jsonl")
    assert config.task.dev == str(tmp_path / "data" / "dev.jsonl")
    assert (config.train.epochs, config.optimizer.lr, config.train.mixed_precision) == (1, 1e-4, "bf16")
    assert config.train.early_stopping.patience == 2


def test_config_file_errors_name_the_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: m\ntask: text_classification\ntrain:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        load_config(path)
    path.write_text("model: m\ntask: text_classification\ntrain: {epochz: 1}\n")
    with pytest.raises(ConfigError, match=r"^.*bad\.yaml: train\.epochz: unknown key \(did you mean 'epochs'\?\)$"):
        load_config(path)
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config({"model": "m", "task": "text_classification"}, ["train.epochs"])


def test_yaml_is_loaded_safely(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("model: !!python/object/apply:os.system ['echo pwned']\ntask: text_classification\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(path)


def test_structure_accepts_a_bare_name_for_sections():
    assert structure(RunConfig, {"model": "m", "task": "t", "optimizer": "sgd"}).optimizer.name == "sgd"
    assert structure(TrainConfig, {"max_grad_norm": None}).max_grad_norm is None
