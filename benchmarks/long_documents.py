"""Long documents: lccore's encoding against one tokenizer call on the whole texts.

    HF_HUB_OFFLINE=1 python benchmarks/long_documents.py [--sizes 10 100 1000] [--total-mb 20] [--json OUT.json]

A classifier reads the first `max_length` (128) tokens of each text, but a tokenizer encodes a
whole text before it truncates (at about 140 bytes of memory a character). For each document size
(KB), documents of Rotten Tomatoes review sentences, `--total-mb` of them in all, are encoded in
batches of 1,000 (lccore's chunk) by

- **baseline**: MiniLM's fast tokenizer, `tokenizer(texts, truncation=True, max_length=128)`, what
  lccore did before `lccore.data.clip_text` and what a `datasets.map` recipe does;
- **lccore**: the `text_classification` task's `encode` (the text clipped first, then the same call).

and, for pretraining, which reads every token (`mlm`, `clm`), by

- **baseline**: `tokenizer(texts, add_special_tokens=False)`, one call per batch (lccore before);
- **lccore**: `lccore.data.tokenize_in_pieces` (what the `mlm`/`clm` tasks call: no tokenizer call
  reads more than 1 M characters; long texts in pieces cut before whitespace).

Each runs in a process of its own (peak resident memory: its `ru_maxrss`); the token ids are
compared (they must be equal), and the medians and ratios lccore / baseline printed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _common import default_model, load_reviews  # noqa: E402

WORKER = r"""
import hashlib, json, resource, sys, time
from transformers import AutoTokenizer
kind, model, path = sys.argv[1:4]
texts = [json.loads(line)["text"] for line in open(path, encoding="utf-8")]
tokenizer = AutoTokenizer.from_pretrained(model)
digest, start = hashlib.sha256(), time.perf_counter()
for begin in range(0, len(texts), 1000):
    chunk = texts[begin:begin + 1000]
    if kind == "baseline":
        ids = tokenizer(chunk, truncation=True, max_length=128)["input_ids"]
    elif kind == "baseline-all":
        ids = tokenizer(chunk, add_special_tokens=False)["input_ids"]
    elif kind == "lccore-all":
        from lccore.data import tokenize_in_pieces
        ids = tokenize_in_pieces(tokenizer, chunk)
    else:
        import lccore
        task = lccore.Engine().create("task", "text_classification", {})
        task.labels = ["x"]
        examples = [task.parse_input(text, "bench") for text in chunk]
        ids = [feature["input_ids"] for feature in task.encode(examples, tokenizer, 128)]
    digest.update(json.dumps(ids).encode())
print(json.dumps({"seconds": time.perf_counter() - start, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "ids_sha256": digest.hexdigest()}))
"""


def documents(size_kb: int, total_mb: float, seed: int = 0) -> list[str]:
    sentences = [r["text"] for r in load_reviews()]
    rng = random.Random(seed)
    count = max(1, int(total_mb * 1024 // size_kb))
    made = []
    for _ in range(count):
        parts, length = [], 0
        while length < size_kb * 1024:
            sentence = rng.choice(sentences)
            parts.append(sentence)
            length += len(sentence) + 1
        made.append(" ".join(parts))
    return made


def measure(kind: str, model: str, path: Path) -> dict:
    result = subprocess.run([sys.executable, "-c", WORKER, kind, model, str(path)], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000], help="document sizes, KB")
    parser.add_argument("--total-mb", type=float, default=20.0, help="MB of documents per size")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    model, rows = default_model(), []
    with tempfile.TemporaryDirectory() as folder:
        for size in args.sizes:
            path = Path(folder) / f"docs-{size}.jsonl"
            with path.open("w", encoding="utf-8") as handle:
                for text in documents(size, args.total_mb):
                    handle.write(json.dumps({"text": text}) + "\n")
            for reads, suffix in (("first 128 tokens", ""), ("every token", "-all")):
                runs = {kind: [measure(kind + suffix, model, path) for _ in range(args.repeats)] for kind in ("baseline", "lccore")}
                if len({r["ids_sha256"] for kind in runs for r in runs[kind]}) != 1:
                    raise SystemExit(f"{size} KB, {reads}: lccore's token ids differ from the baseline's")
                row = {"document_kb": size, "reads": reads, "documents": sum(1 for _ in path.open())}
                for kind, results in runs.items():
                    row[f"{kind}_seconds"] = statistics.median(r["seconds"] for r in results)
                    row[f"{kind}_peak_mb"] = statistics.median(r["peak_mb"] for r in results)
                row["time_ratio"] = row["lccore_seconds"] / row["baseline_seconds"]
                row["memory_ratio"] = row["lccore_peak_mb"] / row["baseline_peak_mb"]
                rows.append(row)
                print(f"{size:>6} KB x {row['documents']:>5}, {reads:>16}: baseline {row['baseline_seconds']:7.2f} s {row['baseline_peak_mb']:7.0f} MB | "
                      f"lccore {row['lccore_seconds']:7.2f} s {row['lccore_peak_mb']:7.0f} MB | lccore/baseline time {row['time_ratio']:.3f}, "
                      f"peak memory {row['memory_ratio']:.3f}; same token ids", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
