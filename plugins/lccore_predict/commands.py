"""``lccore predict RUN_DIR --input IN.jsonl [--output OUT.jsonl]``."""

from __future__ import annotations

import functools
import os
import sys

from lccore import ConfigError, ethics


def add_commands(commands) -> None:
    batch_size, window = commands.bounded(int, 1, 1 << 20), commands.bounded(int, 1, 1 << 20)
    predict = commands.add("predict", help="predict for JSONL inputs (one output row per input row, in order)")
    predict.add_argument("run_dir")
    predict.add_argument("--input", required=True, help="JSONL file of strings or objects, or '-' for stdin")
    predict.add_argument("--output", default="-", help="JSONL file to write, or '-' for stdout (default)")
    predict.add_argument("--batch-size", type=batch_size, help="examples per batch (default: train.eval_batch_size)")
    predict.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32", help="autocast precision for the forward pass; auto: bf16 when a measurement on the first inputs finds it faster and in agreement with fp32")
    predict.add_argument("--policy", action="append", default=[], metavar="NAME", help="an ethics policy for inputs and outputs, after the run config's 'ethics' list (repeatable)")
    predict.add_argument("--ethics-config", metavar="FILE", help="YAML file with an 'ethics:' list of policies")
    predict.add_argument("--audit-log", metavar="FILE", help="append the ethics decisions here (JSONL; hashes, never the text)")
    predict.add_argument("--window", type=window, help="rows read, predicted (sorted by length into batches) and written at a time (default 4096): memory grows with it")
    predict.add_argument("--resume", action="store_true", help="continue an interrupted prediction into --output after its last complete row (same run, input rows and options)")
    predict.add_argument("--overwrite", action="store_true", help="replace an --output file that exists (without it, an existing file is left alone)")
    predict.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    predict.set_defaults(command=functools.partial(run_predict, commands))


def run_predict(commands, args) -> int:
    commands.quiet_transformers()
    from lccore.predictor import load

    from .files import predict_file, predict_file_sharded

    extra = ethics.items_from_cli(args.policy, args.ethics_config)  # checked before the model loads
    if args.resume and args.overwrite:
        raise ConfigError("--resume and --overwrite: choose one (continue the output, or replace it)")
    # --resume continues the file it finds; otherwise a file already there is the user's
    commands.check_output_path(args.output, "--output", overwrite=args.overwrite or args.resume, inputs=[args.input, args.audit_log])
    commands.check_output_path(args.audit_log, "--audit-log", inputs=[args.input])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: the windows are shared out, one output in input order
        import torch
        from accelerate import PartialState

        if args.resume:
            raise ConfigError("--resume: not under several processes; resume with one (plain lccore predict)")
        state = PartialState(cpu=not torch.cuda.is_available())
        predictor = load(args.run_dir, device=str(state.device), precision=args.precision, ethics=extra, audit_log=args.audit_log)
        predict_file_sharded(predictor, args.input, args.output, rank=state.process_index, processes=state.num_processes,
                             barrier=state.wait_for_everyone, batch_size=args.batch_size, window=args.window, progress=False)
        return 0
    predictor = load(args.run_dir, precision=args.precision, ethics=extra, audit_log=args.audit_log)
    # A window of rows at a time, each written and flushed as it is done (README: lccore predict streams).
    predict_file(predictor, args.input, args.output, resume=args.resume, batch_size=args.batch_size, window=args.window, progress=not args.quiet)
    choice = predictor.precision_choice
    if choice:  # every time, --quiet too: it decides the numbers written
        reason = choice.get("reason") or (f"bf16 {choice['bf16_speedup']:.2f}x the speed of fp32 on this machine, "
                                          f"{choice['agreement']:.1%} of {choice['measured_on']} predictions agree")
        print(f"precision auto: {choice['chosen']} ({reason})", file=sys.stderr)
    return 0
