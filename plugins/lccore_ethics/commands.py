"""`lccore ethics check` and `lccore audit`: the ethics plugin's commands (``register_commands``)."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import lccore


def add_commands(commands) -> None:
    commands.group("ethics", help="ethics policies: check texts for PII, toxicity and blocked terms")
    check = commands.add("check", group="ethics", help="one decision per input row: allow, flag, redact or block, with the redacted text")
    check.add_argument("--policy", action="append", default=[], metavar="NAME", help="a registered policy: pii, toxicity, blocklist, ... (repeatable, applied in order)")
    check.add_argument("--config", metavar="FILE", help="YAML file with an 'ethics:' list of policies and their options (applied before --policy)")
    check.add_argument("--option", dest="options", action="append", default=[], metavar="POLICY.KEY=VALUE", help="a policy option, e.g. pii.action=block (repeatable)")
    check.add_argument("--input", required=True, help="JSONL file of strings or {\"text\": ...} objects, or '-' for stdin")
    check.add_argument("--output", default="-", help="JSONL file to write, or '-' for stdout (default)")
    check.add_argument("--audit-log", metavar="FILE", help="append one JSON line per policy decision (hashes, never the text)")
    check.add_argument("--overwrite", action="store_true", help="replace an --output file that exists (without it, an existing file is left alone)")
    check.add_argument("--stage", choices=["training_data", "input", "output"], default="input", help="the stage the texts are checked at (default input)")
    check.set_defaults(command=functools.partial(run_check, commands))

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


def run_check(commands, args) -> int:
    from lccore import ethics
    from lccore.predictor import read_prediction_inputs

    items = ethics.items_from_cli(args.policy, args.config, args.options)
    if not items:
        raise lccore.ConfigError("ethics check: name at least one policy with --policy NAME or --config FILE")
    commands.check_output_path(args.output, "--output", overwrite=args.overwrite, inputs=[args.input, args.config, args.audit_log])
    commands.check_output_path(args.audit_log, "--audit-log", inputs=[args.input, args.config])
    policies = ethics.build_policies(lccore.Engine(), items)
    audit = ethics.AuditLog(args.audit_log)
    counts = dict.fromkeys(ethics.DECISIONS, 0)
    # Each text's row is written as it is checked: memory stays flat in the input's size.
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        with lccore.progress_bar(total=None, desc="check", unit="text", enabled=True, delay=1.0) as bar:
            for where, value in read_prediction_inputs(args.input):
                text = value.get("text") if isinstance(value, dict) else value
                if not isinstance(text, str):
                    raise lccore.DataError(f"{where}: expected a JSON string or an object with a string 'text'")
                result = ethics.apply(policies, text, args.stage)
                audit.record(text, args.stage, result, where=where)
                try:
                    out.write(json.dumps({k: result[k] for k in ("decision", "redacted", "reasons", "spans")}, ensure_ascii=False) + "\n")
                except OSError as exc:  # a full disk: name the file
                    raise OSError(exc.errno, exc.strerror, args.output) from None
                counts[result["decision"]] += 1
                bar.update()
    finally:
        audit.flush()
        if out is not sys.stdout:
            out.close()
    print(f"{sum(counts.values())} texts: " + ", ".join(f"{n} {d}" for d, n in counts.items()), file=sys.stderr)
    return 0


def run_audit(commands, args) -> int:
    from lccore.predictor import read_prediction_inputs

    from .audit import audit, load_terms, render, render_html

    groups = load_terms(args.terms)  # a bad term file or --html path fails before the model loads
    commands.check_output_path(args.html, "--html", overwrite=args.overwrite, inputs=[args.data, args.terms])
    commands.quiet_transformers()
    predictor = lccore.load(args.run_dir)

    def texts():  # read as the audit goes, a window at a time
        for where, value in read_prediction_inputs(args.data):
            text = value if isinstance(value, str) else getattr(predictor.task.parse_input(value, where), "text", None)
            if not isinstance(text, str):
                raise lccore.DataError(f"{where}: expected a string or an object with a text")
            yield text

    from lccore.data import is_stream, read_lines

    total = None if args.quiet or is_stream(args.data) else sum(1 for _, line in read_lines(args.data) if line.strip())
    report = audit(predictor, texts(), groups, top=args.top, progress=not args.quiet, total=total)
    print(json.dumps(report, indent=2, ensure_ascii=False) if args.json else render(report))
    if args.html:
        Path(args.html).write_text(render_html(report), encoding="utf-8")
        if not args.json:
            print(f"report written to {args.html}")
    return 0
