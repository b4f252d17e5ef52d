"""Counterfactual bias audit of a text-classification run (``lccore audit``): identity terms are
swapped (gender, first names, nationality; CheckList's invariance tests) and the prediction should
not move. Reported per group: how often the predicted label flips and how far the probability of
the originally predicted label shifts, with the worst examples."""

from __future__ import annotations

import json
import re
from pathlib import Path

import lccore

TERMS_FILE = Path(__file__).with_name("data") / "identity_terms.yaml"


def load_terms(extra: str | Path | None = None) -> dict[str, dict[str, list[str]]]:
    """The bundled identity-term groups, with the groups of ``extra`` (YAML or JSON) added or replacing them."""
    import yaml

    from lccore.config import safe_load_yaml

    groups = yaml.safe_load(TERMS_FILE.read_text(encoding="utf-8"))  # the plugin's own file
    if extra:
        path = Path(extra)
        if not path.is_file():
            raise lccore.ConfigError(f"--terms {path}: no such file")
        text = path.read_text(encoding="utf-8")
        if path.suffix != ".json":  # YAML through lccore's loader: aliases bounded, cycles refused
            added = safe_load_yaml(text, f"--terms {path}")
        else:
            try:
                added = json.loads(text)
            except (ValueError, RecursionError) as exc:
                raise lccore.ConfigError(f"--terms {path}: not valid JSON: {exc}") from None
        if not isinstance(added, dict):
            raise lccore.ConfigError(f"--terms {path}: expected a mapping of groups to {{class: [terms]}}")
        groups.update(added)
    for group, classes in groups.items():
        if not isinstance(classes, dict) or len(classes) < 2 or not all(isinstance(t, list) and t and all(isinstance(x, str) for x in t) for t in classes.values()):
            raise lccore.ConfigError(f"identity terms: group '{group}' needs two or more classes, each a list of terms")
    return groups


def _cased(word: str, like: str) -> str:
    if like.isupper() and len(like) > 1:
        return word.upper()
    if like[:1].isupper():
        return word[:1].upper() + word[1:]
    return word


def counterfactuals(text: str, classes: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    """(from class, to class, counterfactual text) for each other class of the group whose terms the text contains."""
    index = {}
    for name, terms in classes.items():
        for position, term in enumerate(terms):
            index.setdefault(term.lower(), (name, position))
    pattern = re.compile(r"(?<!\w)(" + "|".join(sorted(map(re.escape, index), key=len, reverse=True)) + r")(?!\w)", re.IGNORECASE)
    found = [(m, index[m.group().lower()]) for m in pattern.finditer(text)]
    if not found:
        return []
    out = []
    sources = {name for _, (name, _) in found}
    for target, terms in classes.items():
        if target in sources and len(sources) == 1:
            continue
        swapped, last = [], 0
        for match, (name, position) in found:
            swapped += [text[last : match.start()], match.group() if name == target else _cased(terms[position % len(terms)], match.group())]
            last = match.end()
        candidate = "".join(swapped) + text[last:]
        if candidate != text:
            out.append(("+".join(sorted(sources)), target, candidate))
    return out


def probabilities(predictor, texts: list[str], batch_size: int = 64, bar=None):
    """Class probabilities (one row per text, in the task's label order); ``bar`` is moved a text at a time."""
    import torch

    task, rows = predictor.task, []
    examples = [task.parse_input(text, f"audit {i + 1}") for i, text in enumerate(texts)]
    for start in range(0, len(examples), batch_size):
        features = task.encode(examples[start : start + batch_size], predictor.tokenizer, predictor.config.train.max_length)
        batch = {k: v.to(predictor.device) for k, v in task.collate(features, predictor.tokenizer).items() if k != "labels"}
        with torch.no_grad(), predictor.autocast():
            rows.append(torch.softmax(predictor.model(**batch).logits.float(), dim=-1).cpu())
        if bar is not None:
            bar.update(len(features))
    return torch.cat(rows) if rows else torch.empty(0)


def audit(predictor, texts: list[str], groups: dict, *, top: int = 5, progress: bool = False) -> dict:
    labels = getattr(predictor.task, "labels", None)
    if not labels:
        raise lccore.ConfigError(f"audit: {predictor.run_dir} is not a text classification run (its task has no labels)")
    pairs = [(i, group, source, target, cf) for group, classes in groups.items() for i, text in enumerate(texts) for source, target, cf in counterfactuals(text, classes)]
    with lccore.progress_bar(total=len(texts) + len(pairs), desc="audit", unit="text", enabled=progress) as bar:  # the texts, then their counterfactuals
        original = probabilities(predictor, texts, bar=bar)
        swapped = probabilities(predictor, [cf for *_, cf in pairs], bar=bar)
    report = {"examples": len(texts), "labels": list(labels), "groups": {}}
    for group in groups:
        rows = []
        for k, (i, g, source, target, cf) in enumerate(pairs):
            if g != group:
                continue
            label = int(original[i].argmax())
            new_label = int(swapped[k].argmax())
            shift = float(swapped[k][label] - original[i][label])
            rows.append({"text": texts[i], "counterfactual": cf, "from": source, "to": target, "label": labels[label], "counterfactual_label": labels[new_label], "score_shift": round(shift, 6)})
        flips = [r for r in rows if r["label"] != r["counterfactual_label"]]
        by_target = {}
        for r in rows:
            by_target.setdefault(r["to"], []).append(r)
        report["groups"][group] = {
            "texts_with_terms": len({r["text"] for r in rows}),
            "counterfactuals": len(rows),
            "flip_rate": len(flips) / len(rows) if rows else None,
            "mean_score_shift": sum(abs(r["score_shift"]) for r in rows) / len(rows) if rows else None,
            "by_class": {
                t: {"counterfactuals": len(rs), "flip_rate": sum(r["label"] != r["counterfactual_label"] for r in rs) / len(rs), "mean_signed_shift": sum(r["score_shift"] for r in rs) / len(rs)}
                for t, rs in sorted(by_target.items())
            },
            "worst": sorted(rows, key=lambda r: (r["label"] == r["counterfactual_label"], -abs(r["score_shift"])))[:top],
        }
    total = sum(g["counterfactuals"] for g in report["groups"].values())
    failures = sum(round((g["flip_rate"] or 0) * g["counterfactuals"]) for g in report["groups"].values())
    report["invariance"] = {"tests": total, "failures": failures, "pass_rate": (total - failures) / total if total else None}
    return report


def render(report: dict) -> str:
    lines = [f"{report['examples']} texts; invariance: {report['invariance']['tests'] - report['invariance']['failures']} of {report['invariance']['tests']} counterfactuals keep their label"]
    lines.append(f"{'group':<14} {'texts':>6} {'swaps':>6} {'flip rate':>10} {'mean |shift|':>13}")
    for name, group in report["groups"].items():
        fmt = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        lines.append(f"{name:<14} {group['texts_with_terms']:>6} {group['counterfactuals']:>6} {fmt(group['flip_rate']):>10} {fmt(group['mean_score_shift']):>13}")
    for name, group in report["groups"].items():
        for row in group["worst"][:3]:
            lines.append(f"  {name}: {row['label']} -> {row['counterfactual_label']} ({row['score_shift']:+.4f}): {json.dumps(row['counterfactual'], ensure_ascii=False)}")
    return "\n".join(lines)


def render_html(report: dict) -> str:
    """The report as one self-contained HTML page: per group the flip rate (as a bar), the mean
    score shift and the shift per target class, then the worst counterfactuals with the swapped
    words marked. Every text from the data is escaped."""
    from html import escape

    def number(value, digits: int = 3) -> str:
        return "n/a" if value is None else f"{value:.{digits}f}"

    def marked(text: str, other: str) -> str:
        """``text`` escaped, with the words that differ from ``other`` (the swapped terms) marked."""
        import difflib

        words, others = re.split(r"(\s+)", text), re.split(r"(\s+)", other)
        out = []
        for tag, i1, i2, _, _ in difflib.SequenceMatcher(None, words, others, autojunk=False).get_opcodes():
            chunk = escape("".join(words[i1:i2]))
            out.append(chunk if tag == "equal" or not chunk.strip() else f"<mark>{chunk}</mark>")
        return "".join(out)

    invariance = report["invariance"]
    rows = []
    for name, group in report["groups"].items():
        rate = group["flip_rate"]
        bar = f'<span class="bar" style="width:{100 * rate:.0f}px"></span>' if rate is not None else ""
        classes = ", ".join(f"{escape(t)}: {number(c['flip_rate'], 2)} flips, {c['mean_signed_shift']:+.3f}" for t, c in group["by_class"].items())
        rows.append(f"<tr><td>{escape(name)}</td><td>{group['texts_with_terms']}</td><td>{group['counterfactuals']}</td>"
                    f"<td>{bar} {number(rate)}</td><td>{number(group['mean_score_shift'])}</td><td>{classes}</td></tr>")
    examples = []
    for name, group in report["groups"].items():
        for row in group["worst"]:
            flipped = ' class="flip"' if row["label"] != row["counterfactual_label"] else ""
            examples.append(f"<tr{flipped}><td>{escape(name)}</td><td>{marked(row['text'], row['counterfactual'])}</td><td>{escape(row['label'])}</td>"
                            f"<td>{marked(row['counterfactual'], row['text'])}</td><td>{escape(row['counterfactual_label'])}</td><td>{row['score_shift']:+.4f}</td></tr>")
    passed = invariance["tests"] - invariance["failures"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>lccore bias audit</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }}
.bar {{ display: inline-block; height: 10px; background: #c0392b; }} tr.flip td {{ background: #fdecea; }} mark {{ background: #fff3b0; }}
</style></head><body>
<h1>Bias audit</h1>
<p>{report['examples']} texts; {passed} of {invariance['tests']} counterfactuals keep their label (invariance pass rate {number(invariance['pass_rate'])}).
Labels: {escape(", ".join(report['labels']))}.</p>
<h2>Per group</h2>
<table><tr><th>group</th><th>texts with terms</th><th>counterfactuals</th><th>flip rate</th><th>mean |score shift|</th><th>per target class: flip rate, mean signed shift</th></tr>
{chr(10).join(rows)}
</table>
<h2>Worst counterfactuals</h2>
<p>The identity term swapped is <mark>marked</mark>; rows whose label flipped are red. The score shift is the change of the original label's probability.</p>
<table><tr><th>group</th><th>text</th><th>label</th><th>counterfactual</th><th>label</th><th>score shift</th></tr>
{chr(10).join(examples)}
</table>
</body></html>
"""
