"""`lccore explain`: the explain plugin's command (``register_commands``): attributions for texts,
or the explainers' faithfulness on a data file."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import lccore


def add_commands(commands) -> None:
    explain = commands.add("explain", help="attribute a run's predictions to the input words, or measure explainers' faithfulness")
    explain.add_argument("run_dir")
    explain.add_argument("--text", action="append", default=[], metavar="TEXT", help="a text to explain (repeatable)")
    explain.add_argument("--text-pair", action="append", default=[], metavar="TEXT", help="the second text of a pair, for each --text in order (a run trained with task.text_pair_field)")
    explain.add_argument("--explainer", action="append", metavar="NAME", help="shap (default), integrated_gradients, attention, random, or a plugin's (repeatable)")
    explain.add_argument("--target", metavar="LABEL", help="the class to explain (default: the predicted one); for NER an entity's text or type")
    explain.add_argument("--option", dest="options", action="append", default=[], metavar="[EXPLAINER.]KEY=VALUE", help="an explainer option, e.g. n_steps=32 (repeatable)")
    explain.add_argument("--top", type=commands.bounded(int, 1, 1 << 20), default=5, metavar="N", help="words printed per explanation (default 5)")
    explain.add_argument("--html", metavar="FILE", help="also write a static HTML page with the text coloured by attribution")
    explain.add_argument("--overwrite", action="store_true", help="replace an --html file that exists")
    explain.add_argument("--json", action="store_true", help="print the attribution records (or the faithfulness scores) as JSON")
    explain.add_argument("--evaluate", action="store_true", help="faithfulness: comprehensiveness and sufficiency of each explainer and of random, on --data")
    explain.add_argument("--data", metavar="FILE", help="with --evaluate: JSONL of texts (strings or objects the task reads), or '-' for stdin")
    explain.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    explain.set_defaults(command=functools.partial(run_explain, commands))


def _explain(explainer, predictor, texts, *, progress: bool) -> list[dict]:
    """``explainer.explain``, with a progress bar when the explainer draws one (``progress`` is optional in the contract)."""
    import inspect

    accepts = "progress" in inspect.signature(explainer.explain).parameters
    return explainer.explain(predictor, texts, progress=progress) if accepts else explainer.explain(predictor, texts)


def run_explain(commands, args) -> int:
    from lccore.config import safe_load_yaml

    asked = args.explainer or ["shap"]
    if args.evaluate:
        if not args.data or args.text or args.html:
            raise lccore.ConfigError("explain --evaluate: give the texts with --data FILE.jsonl (not --text or --html)")
    elif not args.text or args.data:
        raise lccore.ConfigError("explain: give --text TEXT (repeatable), or --evaluate --data FILE.jsonl")
    if args.text_pair and len(args.text_pair) != len(args.text):
        raise lccore.ConfigError(f"explain: {len(args.text_pair)} --text-pair for {len(args.text)} --text; give one --text-pair for each --text")
    names = asked + (["random"] if args.evaluate and "random" not in asked else [])
    options: dict[str, dict] = {name: ({"target": args.target} if args.target is not None else {}) for name in names}
    for item in args.options:
        key, sep, raw = item.partition("=")
        owner, _, field = key.rpartition(".")
        if not sep or not field or (owner and owner not in names):
            raise lccore.ConfigError(f"--option {item!r}: expected [EXPLAINER.]KEY=VALUE with EXPLAINER one of {', '.join(names)}, e.g. n_steps=32")
        for name in [owner] if owner else asked:
            options[name][field] = safe_load_yaml(raw, f"--option {key}") if raw else ""
    # Explainers and their options are checked before the model loads: a typo fails in a second.
    engine = lccore.Engine()
    explainers = {name: engine.create("explainer", name, options[name], key=f"explainer.{name}") for name in names}
    commands.check_output_path(args.html, "--html", overwrite=args.overwrite, inputs=[args.data])
    commands.quiet_transformers()
    from lccore.predictor import read_prediction_inputs

    predictor = lccore.load(args.run_dir)
    if args.evaluate:
        texts = [value for _, value in read_prediction_inputs(args.data)]
        explainers["random"].faithfulness(predictor, [])  # a run it cannot score fails before the explaining
        results = {}
        for name, explainer in explainers.items():
            records = _explain(explainer, predictor, texts, progress=not args.quiet)
            scorer = explainer if hasattr(explainer, "faithfulness") else explainers["random"]
            evaluations = sum(r.get("cost", {}).get("model_evaluations", 0) for r in records)
            results[name] = {**scorer.faithfulness(predictor, records), "model_evaluations_per_text": round(evaluations / max(1, len(texts)), 1)}
        if args.json:
            print(json.dumps(results, indent=2))
            return 0
        print(f"{'explainer':<22} {'comprehensiveness':>18} {'sufficiency':>12} {'texts':>6} {'evaluations/text':>17}")
        number = (lambda value: "n/a" if value is None else f"{value:.4f}")  # None: no text had words to remove
        for name, row in results.items():
            print(f"{name:<22} {number(row['comprehensiveness']):>18} {number(row['sufficiency']):>12} {row['texts']:>6} {row['model_evaluations_per_text']:>17}")
        print("comprehensiveness: drop in p(predicted class) when the top 10-50% of the words are deleted (higher is better);\n"
              "sufficiency: the drop when only those words are kept (lower is better); averaged over the bins and the texts")
        return 0
    texts = [{"text": text, "text_pair": pair} for text, pair in zip(args.text, args.text_pair)] if args.text_pair else args.text
    records = [r for explainer in explainers.values() for r in _explain(explainer, predictor, texts, progress=not args.quiet)]
    if args.html:
        renderer = next((e for e in explainers.values() if hasattr(e, "render_html")), None) or engine.create("explainer", "random")
        Path(args.html).write_text(renderer.render_html(records, title=f"lccore explain: {Path(args.run_dir).name}"), encoding="utf-8")
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        for record in records:
            print(explanation_summary(record, args.top))
    if args.html:
        print(f"explanation page written to {args.html}", file=sys.stderr if args.json else sys.stdout)
    return 0


def explanation_summary(record: dict, top: int) -> str:
    """A record as lines: the text, what was explained, and its top words by |score|."""
    target, cost = record["target"], record.get("cost", {})
    if not target:
        what = "nothing to explain"
    elif "text" in target:
        what = f"entity '{target['text']}' ({target['label']}), p = {record['target_score']:.3f}"
    else:
        predicted = record["prediction"].get("label")
        what = f"{target['label']} (p = {record['target_score']:.3f})" + ("" if predicted == target["label"] else f"; predicted: {predicted}")
    shown = json.dumps(record["text"], ensure_ascii=False) + ("" if record.get("text_pair") is None else " | " + json.dumps(record["text_pair"], ensure_ascii=False))
    lines = [shown, f"  {what}  [{record['method']}: {cost.get('model_evaluations', '?')} model evaluations, {cost.get('seconds', 0):.2f} s]"]
    for word in sorted(record["words"], key=lambda w: -abs(w["score"]))[:top]:
        lines.append(f"  {word['score']:+.4f}  {word['text']}" + (" (text_pair)" if word.get("field") == "text_pair" else ""))
    lines += [f"  note: {note}" for note in record.get("notes", ())]
    return "\n".join(lines)
