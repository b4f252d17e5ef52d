"""Shared fixtures: a tiny BERT built from a config (no hub), and small labelled data files."""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One PyTorch thread per process (the workers and every process a test starts inherit it): two
# pytest workers on a 2-core machine, each with a thread per core, oversubscribe the cores; the
# tiny test models gain nothing from intra-op threads (test_resume, test_bad_input and test_ner:
# 131 s -> 115 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")
if "torch" in sys.modules:  # already imported by a pytest plugin: the variable came too late for it
    sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
# Tokenised data is cached in a folder of the test session's own, never in the user's ~/.cache.
if "LCCORE_CACHE" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["LCCORE_CACHE"] = tempfile.mkdtemp(prefix="lccore-test-cache-")
    atexit.register(shutil.rmtree, os.environ["LCCORE_CACHE"], ignore_errors=True)

POSITIVE = ["great", "wonderful", "superb", "lovely", "brilliant", "delightful"]
NEGATIVE = ["awful", "terrible", "boring", "dreadful", "horrible", "dull"]
NEUTRAL = ["the", "film", "was", "a", "plot", "and", "acting", "really", "quite", "book", "meal", "it", "very", "show"]
PEOPLE = ["alice", "bob", "carol", "dave", "erin"]
PLACES = [["paris"], ["london"], ["rome"], ["new", "york"], ["bos", "##ton"]]
NER_FILLER = ["lives", "in", "visited", "met", "works", "at", "today", "with", "from", "went", "to", ".", ","]
QA_WORDS = ["where", "does", "live", "who", "?", "nobody", "knows", "anything"]
RE_WORDS = ["@", "#", "*", "^", "per", "loc", "born", "heard", "of"]


def sentiment_rows(count: int, seed: int) -> list[dict]:
    """Short texts whose label is given by one sentiment word among neutral filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(count):
        label = "positive" if i % 2 == 0 else "negative"
        words = rng.sample(NEUTRAL, rng.randint(2, 8)) + [rng.choice(POSITIVE if label == "positive" else NEGATIVE)]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return rows


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_tiny_model(directory: Path) -> str:
    """A 2-layer, 32-wide BERT with a word-level vocabulary, saved in Hugging Face format."""
    from lccore.testing import build_tiny_model as build

    words = POSITIVE + NEGATIVE + NEUTRAL + PEOPLE + NER_FILLER + QA_WORDS + RE_WORDS + [piece for place in PLACES for piece in place] + ["good", "bad"]
    return build(directory, words)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-bert"))


def build_sentiment_files(directory: Path) -> dict[str, Path]:
    return {
        "train": write_jsonl(directory / "train.jsonl", sentiment_rows(160, seed=1)),
        "dev": write_jsonl(directory / "dev.jsonl", sentiment_rows(40, seed=2)),
        "test": write_jsonl(directory / "test.jsonl", sentiment_rows(40, seed=3)),
    }


@pytest.fixture(scope="session")
def sentiment_files(tmp_path_factory) -> dict[str, Path]:
    return build_sentiment_files(tmp_path_factory.mktemp("sentiment"))


#: The tests' tiny models have random weights and train at 60x BERT's fine-tuning rate: that is
#: training from scratch, which wants a warmup and a decay over the run (lccore's defaults are for
#: pretrained models: no warmup, the rate held until the last 10%; docs/config.md says why).
FROM_SCRATCH_SCHEDULE = {"schedule": "linear", "warmup_ratio": 0.1}


def build_tiny_config(tiny_model: str, sentiment_files: dict) -> dict:
    return {
        "model": tiny_model,
        "task": {"name": "text_classification", **{k: str(v) for k, v in sentiment_files.items()}},
        "optimizer": {"lr": 3e-3, **FROM_SCRATCH_SCHEDULE},
        "train": {"epochs": 10, "batch_size": 16, "max_length": 32, "seed": 7},
    }


@pytest.fixture(scope="session")
def tiny_config(tiny_model, sentiment_files) -> dict:
    return build_tiny_config(tiny_model, sentiment_files)


@pytest.fixture(scope="session")
def trained_run(tiny_config, tmp_path_factory):
    """One finished tiny run, shared by the tests that only read it."""
    import lccore

    return lccore.train(tiny_config, tmp_path_factory.mktemp("runs") / "tiny", progress=False)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path (and PYTHONPATH, for subprocesses) to install throw-away plugins into."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.delenv("LCCORE_DISABLE_PLUGINS", raising=False)
    return folder


def stop_process(process, timeout: float = 20) -> None:
    """Terminate a server started by a test, and kill it if it does not stop in ``timeout`` s."""
    import subprocess

    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_distribution(site: Path, dist_name: str, modules: dict[str, str], entry_points: dict[str, str], version: str = "1.2.3") -> Path:
    """Install a throw-away distribution into ``site`` (a folder put on sys.path): its modules and a
    ``.dist-info`` with entry points, exactly what pip leaves behind."""
    import textwrap

    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source), encoding="utf-8")
    info = site / f"{dist_name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: {version}\n", encoding="utf-8")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lccore]\n{lines}", encoding="utf-8")
    return site


# --- a small NER run (PER, LOC), shared by the NER, ethics and explain tests -------------------------

CITIES = [["paris"], ["london"], ["rome"], ["new", "york"], ["boston"]]  # "boston" is two word pieces


def ner_sentences(count: int, seed: int) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        person, city = rng.choice(PEOPLE), rng.choice(CITIES)
        pattern = rng.randrange(3)
        if pattern == 0:
            tokens = [person, "lives", "in", *city, "."]
            tags = ["B-PER", "O", "O", "B-LOC"] + ["I-LOC"] * (len(city) - 1) + ["O"]
        elif pattern == 1:
            other = rng.choice([p for p in PEOPLE if p != person])
            tokens = ["today", person, "met", other, "in", *city]
            tags = ["O", "B-PER", "O", "B-PER", "O", "B-LOC"] + ["I-LOC"] * (len(city) - 1)
        else:
            tokens = ["from", *city, ",", person, "went", "to", "the", "show"]
            tags = ["O", "B-LOC"] + ["I-LOC"] * (len(city) - 1) + ["O", "B-PER", "O", "O", "O", "O"]
        sentences.append((tokens, tags))
    return sentences


def write_conll(path, sentences):
    blocks = ["-DOCSTART- -X- O\n"]
    for tokens, tags in sentences:
        blocks.append("".join(f"{t.capitalize()} NNP {tag}\n" for t, tag in zip(tokens, tags)))
    path.write_text("\n".join(blocks), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def ner_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ner")
    return {
        "train": write_conll(folder / "train.conll", ner_sentences(150, 1)),
        "dev": write_jsonl(folder / "dev.jsonl", [{"tokens": t, "tags": g} for t, g in ner_sentences(30, 2)]),
        "test": write_jsonl(folder / "test.jsonl", [{"tokens": t, "tags": g} for t, g in ner_sentences(40, 3)]),
    }


@pytest.fixture(scope="session")
def ner_config(tiny_model, ner_files):
    return {
        "model": tiny_model,
        "task": {"name": "ner", **{k: str(v) for k, v in ner_files.items()}},
        "optimizer": {"lr": 3e-3},
        "train": {"epochs": 8, "batch_size": 16, "max_length": 32, "seed": 3},
    }


@pytest.fixture(scope="session")
def ner_run(ner_config, tmp_path_factory):
    import lccore

    return lccore.train(ner_config, tmp_path_factory.mktemp("ner-run") / "run", progress=False)


# --- a tiny GPT-2 and a dialogue run that memorises its replies (generation, serve tests) ----------

END = "<|endoftext|>"
CONVERSATIONS = [
    [{"role": "user", "content": "what is the capital of france?"}, {"role": "assistant", "content": "paris is the capital of france."}],
    [
        {"role": "system", "content": "you answer briefly."},
        {"role": "user", "content": "what colour is the sky?"},
        {"role": "assistant", "content": "blue."},
    ],
    [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "hi there, how can i help?"},
        {"role": "user", "content": "tell me a joke"},
        {"role": "assistant", "content": "why did the chicken cross the road?"},
    ],
    [{"role": "user", "content": "count to three"}, {"role": "assistant", "content": "one two three."}],
]
STORY = ["the cat sat on the mat and looked at the road.", "a dog ran to the house to see the cat."]


def byte_level_bpe(texts, specials, vocab_size, add_prefix_space=False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


@pytest.fixture(scope="session")
def gpt2_model(tmp_path_factory) -> str:
    """A 2-layer, 32-wide GPT-2 with a byte-level BPE vocabulary learnt from the test texts."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from lccore_generation.dialogue import default_render

    texts = [default_render([(m["role"], m["content"]) for m in c], END, False) for c in CONVERSATIONS] + STORY
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_level_bpe(texts, [END], 600), bos_token=END, eos_token=END, unk_token=END, pad_token=END,
        model_input_names=["input_ids", "attention_mask"],
    )
    config = GPT2Config(
        vocab_size=len(tokenizer), n_embd=32, n_layer=2, n_head=2, n_positions=256,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    directory = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="session")
def dialogue_run(gpt2_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("dialogue")
    data = write_jsonl(folder / "chat.jsonl", [{"messages": c} for c in CONVERSATIONS * 8])
    config = {
        "model": gpt2_model,
        "task": {"name": "dialogue", "train": str(data), "test": str(data)},
        "optimizer": {"lr": 5e-3},
        "train": {"epochs": 40, "batch_size": 8, "max_length": 64, "seed": 0},
    }
    import lccore

    return lccore.train(config, folder / "run", progress=False)


class RecordedBar:
    """Stands in for :func:`lccore.progress_bar` in tests: keeps what a command asked for and how far it got."""

    def __init__(self, *, total, desc, unit, enabled=True, **options):
        from tqdm.auto import tqdm

        self.total, self.desc, self.unit, self.enabled, self.options, self.postfix = total, desc, unit, enabled, options, None
        self._bar = tqdm(total=total, disable=True)

    @property
    def n(self):
        return self._bar.n

    def update(self, count=1):
        self._bar.n += count

    def set_postfix_str(self, text, refresh=True):
        self.postfix = text

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture
def bars(monkeypatch) -> list[RecordedBar]:
    """The progress bars lccore's commands and plugins draw (through :func:`lccore.progress_bar`) while the test runs."""
    import lccore

    made: list[RecordedBar] = []

    def record(**kwargs):
        made.append(RecordedBar(**kwargs))
        return made[-1]

    monkeypatch.setattr(lccore, "progress_bar", record)
    return made
