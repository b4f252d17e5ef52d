"""Counterfactual bias audit of a text-classification run (``lccore audit``): identity terms are
swapped (gender, first names, nationality; CheckList's invariance tests) and the prediction should
not move. Reported per group: how often the predicted label flips and how far the probability of
the originally predicted label shifts, with the worst examples."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable

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


def probabilities(predictor, texts: list[str], batch_size: int = 64, bar=None, first: int = 0):
    """Class probabilities (one row per text, in the task's label order); ``bar`` is moved a text
    at a time; ``first``: the number of the texts before these, for error messages."""
    import torch

    task, rows = predictor.task, []
    examples = [task.parse_input(text, f"audit {first + i + 1}") for i, text in enumerate(texts)]
    for start in range(0, len(examples), batch_size):
        features = task.encode(examples[start : start + batch_size], predictor.tokenizer, predictor.config.train.max_length)
        batch = {k: v.to(predictor.device) for k, v in task.collate(features, predictor.tokenizer).items() if k != "labels"}
        with torch.no_grad(), predictor.autocast():
            rows.append(torch.softmax(predictor.model(**batch).logits.float(), dim=-1).cpu())
        if bar is not None:
            bar.update(len(features))
    return torch.cat(rows) if rows else torch.empty(0)


#: Texts read, swapped and scored at a time: the audit of a file of any size holds one window.
AUDIT_WINDOW = 1024


def audit(predictor, texts: Iterable[str], groups: dict, *, top: int = 5, progress: bool = False, total: int | None = None) -> dict:
    """The report of the counterfactual audit of ``texts`` (read a window at a time; ``total``:
    how many there are, for the progress bar, when known)."""
    import heapq

    from lccore.data.features import batched

    labels = getattr(predictor.task, "labels", None)
    if not labels:
        raise lccore.ConfigError(f"audit: {predictor.run_dir} is not a text classification run (its task has no labels)")
    tallies = {group: {"texts": 0, "last_text": -1, "rows": 0, "flips": 0, "shift": 0.0, "by_class": {}, "worst": []} for group in groups}
    # the worst first: flips before the others, then the largest shift, then the order of the data
    worst_first = lambda row: (row["label"] == row["counterfactual_label"], -abs(row["score_shift"]), row["_order"])  # noqa: E731
    examples = 0
    with lccore.progress_bar(total=total, desc="audit", unit="text", enabled=progress) as bar:
        for window in batched(texts, AUDIT_WINDOW):
            pairs = [(examples + i, group, source, target, cf) for group, classes in groups.items() for i, text in enumerate(window)
                     for source, target, cf in counterfactuals(text, classes)]
            original = probabilities(predictor, window, first=examples)
            swapped = probabilities(predictor, [cf for *_, cf in pairs], first=examples)
            fresh = {group: [] for group in groups}
            for k, (i, group, source, target, cf) in enumerate(pairs):
                tally = tallies[group]
                label = int(original[i - examples].argmax())
                new_label = int(swapped[k].argmax())
                shift = float(swapped[k][label] - original[i - examples][label])
                row = {"text": window[i - examples], "counterfactual": cf, "from": source, "to": target, "label": labels[label],
                       "counterfactual_label": labels[new_label], "score_shift": round(shift, 6), "_order": tally["rows"]}
                flipped = row["label"] != row["counterfactual_label"]
                tally["texts"] += i != tally["last_text"]
                tally["last_text"] = i
                tally["rows"] += 1
                tally["flips"] += flipped
                tally["shift"] += abs(row["score_shift"])
                per_class = tally["by_class"].setdefault(target, [0, 0, 0.0])
                per_class[0] += 1
                per_class[1] += flipped
                per_class[2] += row["score_shift"]
                fresh[group].append(row)
            for group, rows in fresh.items():
                tallies[group]["worst"] = heapq.nsmallest(top, tallies[group]["worst"] + rows, key=worst_first)
            examples += len(window)
            bar.update(len(window))
    report = {"examples": examples, "labels": list(labels), "groups": {}}
    for group, tally in tallies.items():
        rows = tally["rows"]
        report["groups"][group] = {
            "texts_with_terms": tally["texts"],
            "counterfactuals": rows,
            "flip_rate": tally["flips"] / rows if rows else None,
            "mean_score_shift": tally["shift"] / rows if rows else None,
            "by_class": {t: {"counterfactuals": n, "flip_rate": flips / n, "mean_signed_shift": shift / n} for t, (n, flips, shift) in sorted(tally["by_class"].items())},
            "worst": [{key: value for key, value in row.items() if key != "_order"} for row in tally["worst"]],
        }
    total_tests = sum(g["counterfactuals"] for g in report["groups"].values())
    failures = sum(tally["flips"] for tally in tallies.values())
    report["invariance"] = {"tests": total_tests, "failures": failures, "pass_rate": (total_tests - failures) / total_tests if total_tests else None}
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
