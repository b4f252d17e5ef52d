"""Speed of the `pii` and `toxicity` ethics policies on 1 MB of text, against the same text cut to
100 KB (the baseline, measured in the same run): a linear policy takes about 10 times as long on
10 times the text, a quadratic one about 100 times.

    python benchmarks/policy_speed.py [--size 1000000] [--repeats 3] [--json OUT.json]

Texts: ordinary prose with PII and profanity sprinkled in (deterministic), the same written with
fullwidth digits and zero-width characters, and inputs that made the old patterns backtrack or
rescan ('a%' repeated, for the e-mail pattern; one listed word repeated, for the toxicity policy;
spaced digits, for the card and phone patterns). Each is timed through ``policy.inspect``, the
median of ``--repeats`` calls.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import lccore
from lccore import ethics

WORDS = "the model was trained on reviews and it said that a film could be warm funny or dull while the plot".split()
PII = ["jane.doe@example.com", "+44 20 7946 0958", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "192.168.1.10", "Jane_O'Neil@example.com"]


def prose(size: int, seed: int = 0) -> str:
    rng, parts, length = random.Random(seed), [], 0
    while length < size:
        words = rng.choices(WORDS, k=30)
        words[rng.randrange(30)] = rng.choice(PII)
        if rng.random() < 0.2:
            words[rng.randrange(30)] = "shit"
        sentence = " ".join(words) + ". "
        parts.append(sentence)
        length += len(sentence)
    return "".join(parts)[:size]


def evasive(size: int) -> str:
    """Prose whose digits are fullwidth and whose PII has zero-width characters inside."""
    text = prose(size, seed=1).translate({ord(d): 0xFF10 + int(d) for d in "0123456789"})
    return text.replace("@", "\u200b@\u200b")[:size]


TEXTS = {
    "prose": prose,
    "fullwidth + zero-width": evasive,
    "'a%' repeated": lambda n: ("a%" * (n // 2 + 1))[:n],
    "'shit ' repeated": lambda n: ("shit " * (n // 5 + 1))[:n],
    "'1 ' repeated": lambda n: ("1 " * (n // 2 + 1))[:n],
}


def timed(policy, text: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        policy.inspect(text, "input")
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000, help="characters of the large text (default 1,000,000); the baseline is a tenth of it")
    parser.add_argument("--repeats", type=int, default=3, help="calls per measurement; the median is kept")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if not 1000 <= args.size <= 50_000_000 or not 1 <= args.repeats <= 20:
        parser.error("--size must lie in 1000..50,000,000 and --repeats in 1..20")
    engine = lccore.Engine(use_env=False)
    policies = dict(ethics.build_policies(engine, ["pii", {"name": "toxicity", "action": "redact"}]))
    rows = []
    print(f"{'policy':<9} {'text':<24} {'100 KB s':>9} {'1 MB s':>8} {'1 MB chars/s':>13} {'1 MB / 100 KB':>14}")
    for name, policy in policies.items():
        policy.inspect("warm-up: mail a@example.com, card ４１１１", "input")  # first use builds the Unicode tables
        for label, make in TEXTS.items():
            small, large = make(args.size // 10), make(args.size)
            small_s, large_s = timed(policy, small, args.repeats), timed(policy, large, args.repeats)
            ratio = large_s / small_s
            rows.append({"policy": name, "text": label, "chars": len(large), "baseline_chars": len(small), "seconds": large_s, "baseline_seconds": small_s, "chars_per_s": len(large) / large_s, "ratio": ratio})
            print(f"{name:<9} {label:<24} {small_s:>9.3f} {large_s:>8.3f} {len(large) / large_s:>13,.0f} {ratio:>13.1f}x", flush=True)
    # The three composed, each redacting: the kernel maps each later policy's spans back through
    # the earlier redactions (lccore.ethics.apply), which must stay linear too.
    composed = ethics.build_policies(engine, ["pii", {"name": "toxicity", "action": "redact"}, {"name": "blocklist", "terms": ["plot"], "action": "redact"}])
    apply_all = type("Composed", (), {"inspect": lambda self, text, stage: ethics.apply(composed, text, stage)})()
    small, large = prose(args.size // 10), prose(args.size)
    small_s, large_s = timed(apply_all, small, args.repeats), timed(apply_all, large, args.repeats)
    rows.append({"policy": "all three", "text": "prose", "chars": len(large), "baseline_chars": len(small), "seconds": large_s, "baseline_seconds": small_s, "chars_per_s": len(large) / large_s, "ratio": large_s / small_s})
    print(f"{'all three':<9} {'prose (ethics.apply)':<24} {small_s:>9.3f} {large_s:>8.3f} {len(large) / large_s:>13,.0f} {large_s / small_s:>13.1f}x", flush=True)
    worst = max(r["ratio"] for r in rows)
    print(f"largest 1 MB / 100 KB ratio: {worst:.1f}x (linear: about 10x; quadratic: about 100x)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
