"""`lccore audit`: the ethics plugin's command (``register_commands``)."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lccore


def add_commands(commands) -> None:
    audit = commands.add("audit", help="counterfactual bias audit of a text classification run: swap identity terms, measure flips")
    audit.add_argument("run_dir")
    audit.add_argument("--data", required=True, help="JSONL of texts (strings or objects the task reads), or '-' for stdin")
    audit.add_argument("--terms", metavar="FILE", help="YAML/JSON identity-term groups {group: {class: [terms]}} added to the bundled ones")
    audit.add_argument("--top", type=commands.bounded(int, 1, 1000), default=5, metavar="N", help="worst examples kept per group (default 5, at most 1000)")
    audit.add_argument("--json", action="store_true", help="print the full report as JSON")
    audit.add_argument("--html", metavar="FILE", help="also write the report as an HTML page (groups, flip-rate bars, the worst counterfactuals)")
    audit.add_argument("--overwrite", action="store_true", help="replace an --html file that exists")
    audit.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    audit.set_defaults(command=functools.partial(run_audit, commands))


def run_audit(commands, args) -> int:
    import transformers

    from lccore.predictor import read_prediction_inputs

    from .audit import audit, load_terms, render, render_html

    groups = load_terms(args.terms)  # a bad term file or --html path fails before the model loads
    commands.check_output_path(args.html, "--html", overwrite=args.overwrite, inputs=[args.data, args.terms])
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    predictor = lccore.load(args.run_dir)
    texts = []
    for where, value in read_prediction_inputs(args.data):
        texts.append(value if isinstance(value, str) else getattr(predictor.task.parse_input(value, where), "text", None))
        if not isinstance(texts[-1], str):
            raise lccore.DataError(f"{where}: expected a string or an object with a text")
    report = audit(predictor, texts, groups, top=args.top, progress=not args.quiet)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render(report))
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
        if not args.json:
            print(f"report written to {args.html}")
    return 0
