"""`lccore pretrain`: the language_modeling plugin's command (``register_commands``): a run of
task mlm or clm, on a hub model or folder, or on one built from scratch (``model: {architecture:
...}``), whose model then fine-tunes like any pretrained one."""

from __future__ import annotations

import functools

import lccore


def add_commands(commands) -> None:
    pretrain = commands.add("pretrain", help="self-supervised pretraining (task mlm or clm), from scratch or continued")
    pretrain.add_argument("config", help="YAML run config: task mlm|clm; model a hub id/folder, or {architecture: bert|gpt2, ...} from scratch")
    pretrain.add_argument("--output", required=True, help="run directory to write (the model and tokenizer go to RUN_DIR/model)")
    pretrain.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    pretrain.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    pretrain.add_argument("--resume", action="store_true", help="continue an interrupted run from its newest intact checkpoint")
    pretrain.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    pretrain.set_defaults(command=functools.partial(run_pretrain, commands))


def run_pretrain(commands, args) -> int:
    config = lccore.load_config(args.config, args.overrides)
    engine = lccore.Engine(disable=config.plugins.disable)
    objective = getattr(engine.create("task", config.task.name, config.task.options, key="task"), "objective", None)
    if objective is None:
        raise lccore.ConfigError(f"task.name: '{config.task.name}' is not a language-modelling task; pretraining takes mlm or clm (use `lccore train` for other tasks)")
    run = commands.train_and_report(config, args, engine)
    if run.is_main_process:
        print(f"fine-tune it with `model: {run.model_dir}` in a run config")
    return 0
