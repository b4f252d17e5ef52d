"""Pretraining preprocessing as the corpus grows: lccore against Hugging Face `datasets`.

    pip install datasets          # the baseline's library
    HF_HUB_OFFLINE=1 python benchmarks/data_scale.py [--sizes 5 10 20] [--repeats 1] [--num-proc 1] [--json OUT.json]

For each corpus size (MB of generated English-like text, one text per line) both systems go from
the text file to one optimiser step of a tiny BERT built from scratch (hidden 64, 2 layers,
max_length 128), training the same WordPiece tokenizer on the corpus first:

- **lccore**: `lccore pretrain` with `task: mlm`, `train.max_steps: 1` (its whole run: read,
  train the tokenizer, tokenise, pack, one step, write the run), with an empty cache
  (`LCCORE_CACHE`);
- **lccore again**: the same command once more on the same cache (a second run or a resume:
  nothing is tokenised again);
- **baseline**: the same tokenizer (`lccore.scratch.train_tokenizer`, fed the file's lines as
  they are read), then `datasets`' `load_dataset("text")`, `map(tokenize, batched=True)`,
  `group_texts` into blocks of 128, and one step through transformers' masked-LM collator.

Both tokenise with `--num-proc` processes (lccore's `data.num_proc`, `map`'s `num_proc`).

Each is timed as a whole process, with its peak resident memory (the child's `ru_maxrss`), in
interleaved rounds; the medians and the ratios lccore / baseline are printed. Issue 16's goals:
time ≤ 1.1× the baseline's, peak memory flat in the corpus size, and a second run ≤ 15% of the
first run's time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = (
    "the a of and to in is was for on that with as by at from it this be are an or have had not but which one all "
    "were they their there when been has more if will would who so no what can about out up into than them some "
    "could time only other new these two may first then do any like my now over such our man me even most made "
    "after also did many before must through back years where much your way well down should because each just "
    "those people how too little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come since against go came "
    "right used take three river mountain language model corpus training holiday village market winter summer"
).split()


def write_corpus(path: Path, megabytes: float, seed: int = 0) -> int:
    """Lines of 8 to 40 words drawn with a Zipf-like skew, until the file holds ``megabytes``."""
    rng, weights = random.Random(seed), [1 / (rank + 1) for rank in range(len(WORDS))]
    target, written, lines = int(megabytes * 1_000_000), 0, 0
    with path.open("w", encoding="utf-8") as handle:
        while written < target:
            line = " ".join(rng.choices(WORDS, weights, k=rng.randint(8, 40))).capitalize() + ".\n"
            handle.write(line)
            written += len(line)
            lines += 1
    return lines


SPEC = {"architecture": "bert", "hidden_size": 64, "num_layers": 2, "num_heads": 2, "vocab_size": 8000}
MAX_LENGTH = 128


def run_lccore(corpus: Path, workdir: Path, cache: str, num_proc: int) -> None:
    import yaml

    config = {"model": SPEC, "task": {"name": "mlm", "train": str(corpus)}, "data": {"num_proc": num_proc},
              "train": {"max_steps": 1, "batch_size": 16, "max_length": MAX_LENGTH, "seed": 1}}
    (workdir / "pretrain.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    subprocess.run([sys.executable, "-m", "lccore", "pretrain", str(workdir / "pretrain.yaml"), "--output", str(workdir / "run"), "-q"],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "LCCORE_CACHE": cache})


class CorpusLines:
    """The corpus's non-blank lines, read from the file on every pass."""

    def __init__(self, path: Path):
        self.path = path

    def __iter__(self):
        with self.path.open(encoding="utf-8") as handle:
            yield from (line.rstrip("\n") for line in handle if line.strip())


def run_baseline(corpus: Path, workdir: Path, cache: str, num_proc: int) -> None:
    import datasets
    import torch
    from transformers import BertConfig, BertForMaskedLM, DataCollatorForLanguageModeling

    from lccore.config import ScratchModelConfig
    from lccore.scratch import train_tokenizer

    datasets.disable_progress_bars()
    tokenizer = train_tokenizer(ScratchModelConfig(**SPEC), CorpusLines(corpus))  # streamed from the file, as lccore does
    raw = datasets.load_dataset("text", data_files=str(corpus), split="train", cache_dir=str(workdir / "cache"))
    tokenised = raw.map(lambda batch: tokenizer(batch["text"], add_special_tokens=False), batched=True, remove_columns=["text"],
                        num_proc=num_proc if num_proc > 1 else None)
    block, cls, sep = MAX_LENGTH - 2, tokenizer.cls_token_id, tokenizer.sep_token_id

    def group_texts(batch):  # the run_mlm.py recipe: join, cut into blocks
        ids = [token for row in batch["input_ids"] for token in row + [sep]]
        blocks = [[cls] + ids[i : i + block] + [sep] for i in range(0, len(ids) - block + 1, block)]
        return {"input_ids": blocks, "attention_mask": [[1] * len(b) for b in blocks]}

    blocks = tokenised.map(group_texts, batched=True, remove_columns=tokenised.column_names, num_proc=num_proc if num_proc > 1 else None)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=SPEC["hidden_size"], num_hidden_layers=SPEC["num_layers"],
                        num_attention_heads=SPEC["num_heads"], intermediate_size=4 * SPEC["hidden_size"], max_position_embeddings=512)
    torch.manual_seed(1)
    model = BertForMaskedLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    loader = torch.utils.data.DataLoader(blocks.with_format("python"), batch_size=16, shuffle=True, collate_fn=collator)
    loss = model(**next(iter(loader))).loss
    loss.backward()
    optimizer.step()


def measure(system: str, corpus: Path, cache: str, num_proc: int) -> dict:
    """Run one system in a child process; its wall time and peak RSS."""
    with tempfile.TemporaryDirectory(prefix="lccore-data-scale-") as workdir:
        start = time.perf_counter()
        result = subprocess.run([sys.executable, __file__, "--child", system, str(corpus), workdir, cache, str(num_proc)], capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{system} failed on {corpus}:\n{result.stderr[-2000:]}")
    return {"seconds": seconds, "peak_rss_mb": json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mb"]}


def child(system: str, corpus: str, workdir: str, cache: str, num_proc: str) -> None:
    """In a fresh process: run the system (lccore in a grandchild) and report the peak RSS of all
    the work (this process and its children: the largest of them, as ru_maxrss gives it)."""
    (run_baseline if system == "baseline" else run_lccore)(Path(corpus), Path(workdir), cache, int(num_proc))
    own, children = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(json.dumps({"peak_rss_mb": max(own, children) / 1024}))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:7])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[5.0, 10.0, 20.0], help="corpus sizes in MB (default 5 10 20)")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds; the median is kept (default 1)")
    parser.add_argument("--num-proc", type=int, default=1, help="tokenising processes for both systems (data.num_proc, map's num_proc; default 1)")
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    if not all(0.1 <= size <= 10_000 for size in args.sizes) or not 1 <= args.repeats <= 10 or not 1 <= args.num_proc <= 64:
        parser.error("--sizes must lie in 0.1..10000 MB, --repeats in 1..10 and --num-proc in 1..64")
    try:
        import datasets  # noqa: F401
    except ImportError:
        raise SystemExit("the baseline needs Hugging Face datasets: pip install datasets") from None
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    rows = []
    print(f"{'MB':>6} {'lines':>8} {'lccore s':>9} {'baseline s':>11} {'time ratio':>11} {'lccore MB RSS':>14} {'baseline MB RSS':>16} {'RSS ratio':>10} "
          f"{'again s':>8} {'again/first':>12}")
    with tempfile.TemporaryDirectory(prefix="lccore-corpus-") as folder:
        for size in args.sizes:
            corpus = Path(folder) / f"corpus-{size:g}MB.txt"
            lines = write_corpus(corpus, size)
            runs = {"lccore": [], "baseline": [], "lccore_again": []}
            for round_ in range(args.repeats):
                with tempfile.TemporaryDirectory(prefix="lccore-cache-") as cache:  # lccore starts with an empty cache
                    for system in (("lccore", "lccore_again", "baseline") if round_ % 2 == 0 else ("baseline", "lccore", "lccore_again")):
                        runs[system].append(measure(system, corpus, cache, args.num_proc))
            row = {"megabytes": size, "lines": lines}
            for system, measured in runs.items():
                row[system] = {key: statistics.median(m[key] for m in measured) for key in ("seconds", "peak_rss_mb")}
            row["time_ratio"] = row["lccore"]["seconds"] / row["baseline"]["seconds"]
            row["rss_ratio"] = row["lccore"]["peak_rss_mb"] / row["baseline"]["peak_rss_mb"]
            row["again_ratio"] = row["lccore_again"]["seconds"] / row["lccore"]["seconds"]
            rows.append(row)
            print(f"{size:>6g} {lines:>8} {row['lccore']['seconds']:>9.1f} {row['baseline']['seconds']:>11.1f} {row['time_ratio']:>10.2f}x "
                  f"{row['lccore']['peak_rss_mb']:>14.0f} {row['baseline']['peak_rss_mb']:>16.0f} {row['rss_ratio']:>9.2f}x "
                  f"{row['lccore_again']['seconds']:>8.1f} {row['again_ratio']:>11.2f}x", flush=True)
            corpus.unlink()
    first, last = rows[0], rows[-1]
    growth = {system: (last[system]["peak_rss_mb"] - first[system]["peak_rss_mb"]) / max(last["megabytes"] - first["megabytes"], 1e-9) for system in ("lccore", "baseline")}
    print(f"peak RSS growth per MB of text: lccore {growth['lccore']:.1f} MB, baseline {growth['baseline']:.1f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "rss_growth_mb_per_mb": growth}, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
