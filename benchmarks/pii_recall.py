"""Recall and precision of the `pii` policy's recognizers per PII type, on labelled files of PII
in varied formats, false positives counted:

- benchmarks/data/pii_labelled.jsonl: e-mail addresses, US/UK/DE/FR phone numbers,
  Visa/Mastercard/Amex/Discover numbers with spaces or dashes, IBANs grouped or not, IPv4/IPv6,
  mixed rows, and look-alikes that are not PII (dates, versions, prices, invalid cards);
- benchmarks/data/pii_evasions.jsonl: PII hidden by zero-width and other format characters,
  fullwidth or mathematical digits, combining marks, internationalised addresses (用户@例子.广告,
  jöran@bücher.de), apostrophes in local parts, cards written `4111 - 1111 - 1111 - 1111`; and
  look-alikes read by their context (version strings, order/invoice/tracking numbers, ISBNs,
  OIDs, UUIDs, dates).

    python benchmarks/pii_recall.py [--data FILE ...] [--json OUT.json]

A prediction counts when its type and offsets (into the original text) both match the label
exactly; every other prediction is a false positive.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lccore_ethics.pii import find_pii, score

DATA = [Path(__file__).with_name("data") / name for name in ("pii_labelled.jsonl", "pii_evasions.jsonl")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=[str(p) for p in DATA], help="labelled JSONL files: {text, spans: [{start, end, type}]}")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    figures = {}
    for path in map(Path, args.data):
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        result = score(rows)
        clean = [r for r in rows if not r["spans"]]
        flagged = [r["text"] for r in clean if find_pii(r["text"])]
        print(f"{path.name}: {len(rows)} labelled texts, {sum(len(r['spans']) for r in rows)} PII spans, {len(clean)} texts without PII")
        print(f"{'type':<12} {'gold':>5} {'found':>6} {'correct':>8} {'false pos':>10} {'recall':>7} {'precision':>10}")
        for kind, c in result.items():
            c["false_positives"] = c["found"] - c["correct"]
            print(f"{kind:<12} {c['gold']:>5} {c['found']:>6} {c['correct']:>8} {c['false_positives']:>10} {fmt(c['recall']):>7} {fmt(c['precision']):>10}")
        print(f"texts without PII that were flagged: {len(flagged)} of {len(clean)}" + "".join(f"\n  {t!r}" for t in flagged) + "\n")
        figures[path.name] = {"types": result, "clean_texts": len(clean), "clean_texts_flagged": flagged}
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, ensure_ascii=False), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
