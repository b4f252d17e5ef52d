"""`data.streaming`: the training split read, shuffled through a seeded buffer, tokenised and
packed on the fly with the cached path's layout, never cached, resumed at the exact example."""

from __future__ import annotations

import json
import random

import pytest
from test_data_cache import LM_TEXTS, cache, encode_calls, lm_config, stop_at_step  # noqa: F401 (fixtures)

import lccore
from lccore import checkpoints
from lccore.cli import main as cli
from lccore.data import features as data_features
from lccore.data.features import cache_entries, split_features
from lccore.data.stream import StreamedSplit, shuffled


def test_the_shuffle_buffer_is_a_seeded_permutation():
    items = list(range(200))
    first = list(shuffled(items, 16, random.Random(3)))
    assert sorted(first) == items and first != items
    assert list(shuffled(items, 16, random.Random(3))) == first
    assert list(shuffled(items, 16, random.Random(4))) != first
    assert list(shuffled(items, 1, random.Random(3))) == items  # a buffer of one keeps the order
    # an item can only move as far forward as the buffer reaches
    assert all(position >= item - 16 for position, item in enumerate(first))


@pytest.fixture
def lm_split(tmp_path, monkeypatch):
    """An mlm task with a tokenizer built from scratch on LM_TEXTS, and chunks of 7 texts."""
    from transformers import AutoTokenizer

    from lccore.config import ScratchModelConfig
    from lccore.scratch import build

    monkeypatch.setattr(data_features, "CHUNK_EXAMPLES", 7)
    task = lccore.Engine().create("task", "mlm", {})
    (tmp_path / "texts.txt").write_text("".join(t + "\n" for t in LM_TEXTS))
    examples = list(task.read(tmp_path / "texts.txt"))
    source = build(ScratchModelConfig(architecture="bert", hidden_size=32, num_layers=1, num_heads=2, vocab_size=200),
                   [e.text for e in examples], tmp_path / "model", max_length=16, seed=0)
    return task, examples, AutoTokenizer.from_pretrained(source)


def test_a_stream_in_file_order_gives_the_cached_features(tmp_path, cache, lm_split):  # noqa: F811
    task, examples, tokenizer = lm_split
    cached = split_features(task, lambda: examples, tokenizer=tokenizer, max_length=16, key="k", name="texts", cache=cache, progress=False)
    stream = StreamedSplit(task, lambda: iter(examples), tokenizer=tokenizer, max_length=16, batch_size=5, seed=0, shuffle_buffer=1)
    batches = list(stream.batches(0))
    assert all(len(batch) == 5 for batch in batches[:-1]) and 0 < len(batches[-1]) <= 5
    assert [row for batch in batches for row in batch] == cached.__getitems__(range(len(cached)))
    assert stream.examples == len(examples)


def test_a_pass_resumed_from_any_batch_gives_the_rest_exactly(lm_split):
    task, examples, tokenizer = lm_split

    def stream():
        return StreamedSplit(task, lambda: iter(examples), tokenizer=tokenizer, max_length=16, batch_size=3, seed=7, shuffle_buffer=8)

    whole = list(stream().batches(2))
    assert whole != list(stream().batches(3))  # another pass, another order
    for done in range(len(whole) + 1):
        reading = stream()
        for _ in zip(range(done), reading.batches(2)):  # a run that trained on `done` batches, then wrote a checkpoint
            pass
        position = reading.position_after(done)
        assert done == 0 or position[0] % 7 == 0  # whole chunks of examples are skipped without encoding them
        assert list(stream().batches(2, position, done)) == whole[done:], done


def test_a_streamed_run_caches_no_training_features_and_resumes_to_the_same_end(tmp_path, cache, encode_calls, monkeypatch):  # noqa: F811
    monkeypatch.setattr(data_features, "CHUNK_EXAMPLES", 7)
    config = lm_config(tmp_path, max_steps=14, checkpoint_every=3, batch_size=4)
    config["data"] = {"streaming": True, "shuffle_buffer": 16}
    first = lccore.train(config, tmp_path / "first", progress=False)
    assert len(first.metrics["train"]) == 14 and first.metrics["train"][-1]["epoch"] >= 2  # more than one pass
    splits = {entry["split"] for entry in cache_entries(cache) if entry["kind"] == "features"}
    assert splits == {"dev"}  # the training split was never written
    manifest = json.loads((tmp_path / "first" / "manifest.json").read_text())
    assert manifest["data"]["train"]["examples"] == len(LM_TEXTS)

    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        lccore.train(config, out, progress=False, engine=lccore.Engine(plugins=[stop_at_step(8)]))
    newest = checkpoints.checkpoint_dirs(out)[0]
    assert newest.name == "step-00000006"
    loop = json.loads((newest / checkpoints.LOOP_FILE).read_text())
    assert loop["stream"] is not None
    resumed = lccore.train(config, out, progress=False, resume=True)
    assert resumed.metrics["train"] == first.metrics["train"]
    assert resumed.metrics["dev"] == first.metrics["dev"]


def test_streaming_without_a_step_budget_is_one_line(tmp_path, capsys):
    config = lm_config(tmp_path)
    config["data"] = {"streaming": True}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert cli(["pretrain", str(path), "--output", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.streaming" in err and "train.max_steps" in err
    assert not (tmp_path / "run").exists()


def test_two_processes_stream_the_same_batches_as_one(tiny_config, tmp_path):
    """Under torchrun every process reads the stream and trains on its half of each batch."""
    from test_resume import train_on_two_processes, without_dropout

    config = json.loads(json.dumps(tiny_config))
    config["model"] = without_dropout(tiny_config["model"], tmp_path / "model")
    config["train"].update(max_steps=13)  # 160 examples at batch 16: 10 batches a pass, so two passes
    config["data"] = {"streaming": True, "shuffle_buffer": 32}
    train_on_two_processes(config, tmp_path / "two")
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    single = lccore.train(config, tmp_path / "one", progress=False)
    assert len(two["train"]) == len(single.metrics["train"]) == 13
    for one, two_processes in zip(single.metrics["train"], two["train"]):
        assert one["loss"] == pytest.approx(two_processes["loss"], rel=1e-3, abs=1e-4)


def test_a_file_changed_while_it_is_streamed_stops_the_run_with_one_line(tmp_path, lm_split):
    task, _, tokenizer = lm_split
    path = tmp_path / "texts.txt"
    stream = StreamedSplit(task, lambda: task.read(path), tokenizer=tokenizer, max_length=16, batch_size=4, seed=0, shuffle_buffer=4, files=[str(path)])
    assert list(stream.batches(0))
    with path.open("a") as handle:
        handle.write("a text added while the run was training .\n")
    with pytest.raises(lccore.DataError, match=r"texts.txt: changed while the run was streaming it"):
        next(stream.batches(1))


def test_a_row_that_turns_bad_deep_in_a_streamed_file_is_one_line_naming_it(tmp_path, tiny_model, capsys):
    """A pretrained model and `mlm`: nothing reads the corpus before training does, so the bad
    row is first met mid-pass, after steps have run."""
    rows = [json.dumps({"text": f"text number {i} about the film and the book ."}) for i in range(150)]
    rows[137] = '{"text": "cut short'
    (tmp_path / "corpus.jsonl").write_text("\n".join(rows) + "\n")
    config = {"model": tiny_model, "task": {"name": "mlm", "train": str(tmp_path / "corpus.jsonl")},
              "train": {"max_steps": 50, "batch_size": 4, "max_length": 16}, "data": {"streaming": True, "shuffle_buffer": 1}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    assert cli(["pretrain", str(path), "--output", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "corpus.jsonl:138" in err
