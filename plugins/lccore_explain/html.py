"""A self-contained static HTML page for attribution records.

No scripts, no event handlers, no external resources: the only active content is one ``<style>``
element, which the page's own Content-Security-Policy allows by its SHA-256 hash, so the page
also opens under a strict policy (``default-src 'none'``). Words are coloured on a diverging
scale, red for words that raise the target's probability and blue for words that lower it, in
five steps of |score| on one absolute scale (the deepest at |score| >= FULL_SCALE, a fifth of the
probability; a word that moves it by 0.004 stays pale however small the others are); hovering a
word shows its score, and each section names its largest |score|.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

LEVELS = 5
#: |score| (a change in the target's probability) coloured deepest: the same scale for every text.
FULL_SCALE = 0.2
RED, BLUE = (214, 39, 40), (31, 119, 180)

CSS = "\n".join(
    [
        "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222;line-height:1.5}",
        "h1{font-size:1.4rem}h2{font-size:1.1rem;margin:.2rem 0}",
        "section{border:1px solid #ddd;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}",
        ".text{font-size:1.15rem;line-height:2;margin:.6rem 0}",
        ".text span{padding:.1rem .15rem;border-radius:3px}",
        ".meta,.notes{color:#555;font-size:.9rem;margin:.2rem 0}",
        "table{border-collapse:collapse;font-size:.9rem}td,th{padding:.15rem .6rem;text-align:left;border-bottom:1px solid #eee}",
        "td.num{text-align:right;font-variant-numeric:tabular-nums}",
        *(f".p{i}{{background:rgba({RED[0]},{RED[1]},{RED[2]},{i / LEVELS * 0.85:.2f})}}" for i in range(1, LEVELS + 1)),
        *(f".n{i}{{background:rgba({BLUE[0]},{BLUE[1]},{BLUE[2]},{i / LEVELS * 0.85:.2f})}}" for i in range(1, LEVELS + 1)),
        ".warn{color:#8a4b00}",
    ]
)


def page(records: list[dict], *, title: str = "lccore explanation", heading_extra: str = "") -> str:
    """One page explaining each record: its prediction, target, method, cost and coloured text."""
    return document(title, legend() + heading_extra + "".join(section(r) for r in records))


def document(title: str, body: str) -> str:
    digest = base64.b64encode(hashlib.sha256(CSS.encode("utf-8")).digest()).decode("ascii")
    policy = f"default-src 'none'; style-src 'sha256-{digest}'; img-src 'none'; form-action 'none'; base-uri 'none'"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<meta http-equiv=\"Content-Security-Policy\" content=\"{policy}\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}</body>\n</html>\n"
    )


def legend() -> str:
    return (
        f"<p class=\"meta\">Word colour: <span class=\"p{LEVELS}\">&nbsp;raises the target's probability&nbsp;</span> "
        f"<span class=\"n{LEVELS}\">&nbsp;lowers it&nbsp;</span>; deeper is stronger, the deepest at |score| {FULL_SCALE} or more "
        "(one scale for every text: small attributions stay pale). "
        "Hover a word for its score.</p>\n"
    )


def coloured_text(record: dict) -> str:
    """The text with each word in a span coloured by its score; the text between words as is. A
    pair's two texts are shown one after the other, apart."""
    if record.get("text_pair") is None:
        return coloured_field(record["text"], record["words"])
    parts = [coloured_field(record[field], [w for w in record["words"] if w.get("field", "text") == field]) for field in ("text", "text_pair")]
    return '<span class="pair">' + '</span><br><span class="pair-sep">&#8597;</span><br><span class="pair">'.join(parts) + "</span>"


def coloured_field(text: str, words: list[dict]) -> str:
    out, position = [], 0
    for word in words:
        out.append(escape(text[position : word["start"]]))
        level = min(LEVELS, int(abs(word["score"]) / FULL_SCALE * LEVELS + 0.5))
        kind = "p" if word["score"] > 0 else "n"
        css = f" class=\"{kind}{level}\"" if level else ""
        out.append(f"<span{css} title=\"{word['score']:+.4g}\">{escape(text[word['start'] : word['end']])}</span>")
        position = word["end"]
    out.append(escape(text[position:]))
    return "".join(out)


def describe_prediction(record: dict) -> str:
    prediction, target = record["prediction"], record["target"]
    if not target:
        return "no target (nothing predicted to explain)"
    if "text" in target:  # an entity
        return f"entity {escape(target['text'])!s} ({escape(target['label'])}, tag {escape(target['tag'])}), score {prediction.get('score', record['target_score']):.3f}"
    predicted = prediction.get("label")
    line = f"prediction: {escape(str(predicted))} ({prediction.get('score', 0.0):.3f})"
    if target.get("label") != predicted:
        line += f"; explained class: {escape(str(target['label']))} (p = {record['target_score']:.3f})"
    return line


def describe_method(record: dict) -> str:
    cost = record.get("cost", {})
    parts = [f"method: {escape(record['method'])}", f"model evaluations: {cost.get('model_evaluations', '?')}"]
    if cost.get("gradient_evaluations"):
        parts.append(f"with gradients: {cost['gradient_evaluations']}")
    if "seconds" in cost:
        parts.append(f"{cost['seconds']:.2f} s")
    largest = max((abs(w["score"]) for w in record.get("words", ())), default=0.0)
    parts.append(f"largest |score|: {largest:.3g}")
    if "convergence_delta" in record.get("details", {}):
        parts.append(f"convergence delta: {record['details']['convergence_delta']:+.2g}")
    return " · ".join(parts)


def section(record: dict, caption: str = "") -> str:
    top = sorted(record["words"], key=lambda w: -abs(w["score"]))[:5]
    rows = "".join(f"<tr><td>{escape(w['text'])}</td><td class=\"num\">{w['score']:+.4f}</td></tr>" for w in top)
    notes = "".join(f"<li>{escape(note)}</li>" for note in record.get("notes", ()))
    return (
        "<section>\n"
        + (f"<p class=\"meta\">{escape(caption)}</p>\n" if caption else "")
        + f"<h2>{describe_prediction(record)}</h2>\n"
        + f"<p class=\"meta\">{describe_method(record)}</p>\n"
        + f"<p class=\"meta\">baseline: {escape(record.get('baseline', ''))}</p>\n"
        + f"<p class=\"text\">{coloured_text(record)}</p>\n"
        + (f"<ul class=\"notes\">{notes}</ul>\n" if notes else "")
        + (f"<table><tr><th>word</th><th>score</th></tr>{rows}</table>\n" if rows else "")
        + "</section>\n"
    )


def probe_page(steps: list[dict], *, title: str) -> str:
    """Every probe text, explained at each evaluation: how the model's reasons changed in training."""
    body = [legend()]
    explainers = sorted({name for step in steps for name in step["explanations"]})
    for name in explainers:
        by_text: dict[int, list[tuple[dict, dict]]] = {}
        for step in steps:
            for r in step["explanations"].get(name, []):
                by_text.setdefault(r["text_index"], []).append((step, r))
        for index in sorted(by_text):
            rows = []
            for step, r in by_text[index]:
                metrics = ", ".join(f"{k} {v:.3f}" for k, v in step.get("metrics", {}).items() if isinstance(v, (int, float)))
                rows.append(
                    f"<tr><td class=\"num\">{step['step']}</td><td>{describe_prediction(r)}<br><span class=\"meta\">{escape(metrics)}</span></td>"
                    f"<td class=\"text\">{coloured_text(r)}</td></tr>"
                )
            body.append(
                f"<section>\n<h2>{escape(name)}: probe text {index + 1}</h2>\n<table><tr><th>step</th><th>prediction</th><th>attribution</th></tr>"
                + "".join(rows) + "</table>\n</section>\n"
            )
    return document(title, "".join(body))
