"""Recall and precision of the `pii` policy's recognizers per PII type, on a labelled file of PII
in varied formats (benchmarks/data/pii_labelled.jsonl: e-mail addresses, US/UK/DE/FR phone
numbers, Visa/Mastercard/Amex/Discover numbers with spaces or dashes, IBANs grouped or not,
IPv4/IPv6, mixed rows, and look-alikes that are not PII: dates, versions, prices, invalid cards).

    python benchmarks/pii_recall.py [--data FILE] [--json OUT.json]

A prediction counts when its type and offsets both match the label exactly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lccore_ethics.pii import score

DATA = Path(__file__).with_name("data") / "pii_labelled.jsonl"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DATA), help="labelled JSONL: {text, spans: [{start, end, type}]}")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    result = score(rows)
    print(f"{len(rows)} labelled texts, {sum(len(r['spans']) for r in rows)} PII spans, {sum(not r['spans'] for r in rows)} texts without PII")
    print(f"{'type':<12} {'gold':>5} {'found':>6} {'correct':>8} {'recall':>7} {'precision':>10}")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for kind, c in result.items():
        print(f"{kind:<12} {c['gold']:>5} {c['found']:>6} {c['correct']:>8} {fmt(c['recall']):>7} {fmt(c['precision']):>10}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
