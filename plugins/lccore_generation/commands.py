"""`lccore generate`: the generation plugin's command (``register_commands``): a run's model
answers a prompt, or a JSONL file of them, through the ``generate`` reasoner."""

from __future__ import annotations

import functools
import json
import sys

import lccore


#: ``generate --input`` answers this many batches (of ``train.eval_batch_size``) before it writes them.
GENERATE_WINDOW_BATCHES = 8


def add_commands(commands) -> None:
    generate = commands.add("generate", help="generate text with a run's model: a reply, a summary, a translation or a continuation")
    generate.add_argument("run_dir")
    generate.add_argument("--prompt", help="the query: a user message (dialogue run), a source text (summarization, translation) or a plain prompt")
    generate.add_argument("--input", help="JSONL file of queries (strings or objects), or '-' for stdin: one JSON answer line per input line, generated in batches")
    generate.add_argument("--strategy", help="greedy (default), beam, sample or prompt_lookup")
    generate.add_argument("--max-new-tokens", type=commands.bounded(int, 1, 1 << 16), help="most tokens generated (default 64)")
    generate.add_argument("--temperature", type=commands.bounded(float, 0.01, 100.0), help="sample: divides the logits (default 1.0)")
    generate.add_argument("--top-k", type=commands.bounded(int, 1, 1 << 21), help="sample: draw from the k most likely tokens only")
    generate.add_argument("--top-p", type=commands.bounded(float, 0.01, 1.0), help="sample: nucleus probability mass (default 1.0)")
    generate.add_argument("--num-beams", type=commands.bounded(int, 2, 64), help="beam: beams kept (default 4)")
    generate.add_argument("--repetition-penalty", type=commands.bounded(float, 0.01, 100.0), help="above 1 discourages repeated tokens (default 1.0)")
    generate.add_argument("--stop", nargs="+", action="extend", metavar="S", help="stop strings: the text ends before the first one")
    generate.add_argument("--seed", type=commands.bounded(int, 0, 2**32 - 1), help="sample: seed for reproducible draws")
    generate.add_argument("--stream", action="store_true", help="print the text as it is generated")
    generate.add_argument("--json", action="store_true", help="print the answer record {text, tokens, finish_reason} as JSON")
    generate.add_argument("--policy", action="append", default=[], metavar="NAME", help="ethics policy on the prompt (input) and the text (output), besides the run's own (repeatable)")
    generate.add_argument("--audit-log", metavar="FILE", help="append the ethics decisions to this JSONL file")
    generate.set_defaults(command=functools.partial(run_generate, commands))


def run_generate(commands, args) -> int:
    if (args.prompt is None) == (args.input is None):
        raise lccore.ConfigError("generate: give either --prompt TEXT or --input FILE.jsonl")
    if args.stream and (args.input is not None or args.json):
        raise lccore.ConfigError("generate: --stream prints one prompt's text as it comes; use it with --prompt, without --input or --json")
    flags = {
        "strategy": args.strategy, "max_new_tokens": args.max_new_tokens, "temperature": args.temperature, "top_k": args.top_k,
        "top_p": args.top_p, "num_beams": args.num_beams, "repetition_penalty": args.repetition_penalty, "stop": args.stop, "seed": args.seed,
    }
    # Options are checked before the model loads: a typo fails in a second.
    reasoner = lccore.Engine().create("reasoner", "generate", {k: v for k, v in flags.items() if v is not None}, key="generate")
    commands.quiet_transformers()
    from lccore import ethics
    from lccore.data.features import windows
    from lccore.predictor import read_prediction_inputs

    extra = ethics.items_from_cli(args.policy)
    commands.check_output_path(args.audit_log, "--audit-log")
    predictor = lccore.load(args.run_dir, ethics=extra, audit_log=args.audit_log)
    # Input policies on a text prompt, output policies on the generated text.
    guarded = predictor.guard.wrap(reasoner, predictor=predictor)
    if args.input is not None:
        # A window of batches at a time, written before the next is read: the answers come as they
        # are made, memory stays flat in the input's size, and a bad row stops after those before it.
        window = GENERATE_WINDOW_BATCHES * predictor.config.train.eval_batch_size
        with lccore.progress_bar(total=None, desc="generate", unit="row", enabled=True, delay=1.0) as bar:
            for rows in windows(read_prediction_inputs(args.input), window):
                answers = guarded.answer_batch([value for _, value in rows], wheres=[where for where, _ in rows])
                sys.stdout.write("".join(json.dumps(a, ensure_ascii=False) + "\n" for a in answers))
                sys.stdout.flush()
                bar.update(len(rows))
    elif args.stream:  # with output policies, each sentence is shown once they have passed it
        for piece in guarded.stream(args.prompt):
            if isinstance(piece, dict):
                sys.stdout.write("\n" + json.dumps(piece, ensure_ascii=False))
                break
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
    else:
        answer = guarded.answer(args.prompt)
        print(json.dumps(answer, ensure_ascii=False) if args.json or answer.get("refused") else answer["text"])
    return 0
