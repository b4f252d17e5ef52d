"""The data layer: splits tokenised once, a chunk at a time, into a memory-mapped Arrow cache keyed
by what determines them; reused by a second run, a resume and `evaluate`; rebuilt when damaged."""

from __future__ import annotations

import errno
import json
import threading
import types

import pytest
from conftest import sentiment_rows, write_jsonl

import lccore
from lccore import checkpoints
from lccore.cli import main as cli
from lccore.data import features as data_features
from lccore.data.features import cache_entries, split_features, stored_form

LM_TEXTS = [f"text {i} : {'alice lives in paris and the film was great' if i % 2 else 'bob visited rome and the book was dull'} ." for i in range(60)]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("LCCORE_CACHE", str(folder))
    return folder


@pytest.fixture
def encode_calls(monkeypatch):
    """The number of examples given to each call of the first-party tasks' encode."""
    from lccore_language_modeling.task import LanguageModelingTask
    from lccore_text_classification.task import TextClassificationTask

    calls = []
    for cls in (LanguageModelingTask, TextClassificationTask):
        def counted(self, examples, tokenizer, max_length, original=cls.encode):
            calls.append(len(examples))
            return original(self, examples, tokenizer, max_length)

        monkeypatch.setattr(cls, "encode", counted)
    return calls


def lm_config(tmp_path, **train) -> dict:
    (tmp_path / "train.txt").write_text("".join(t + "\n" for t in LM_TEXTS))
    (tmp_path / "dev.txt").write_text("".join(t + "\n" for t in LM_TEXTS[:10]))
    return {
        "model": {"architecture": "bert", "hidden_size": 32, "num_layers": 1, "num_heads": 2, "vocab_size": 120},
        "task": {"name": "mlm", "train": str(tmp_path / "train.txt"), "dev": str(tmp_path / "dev.txt")},
        "train": {"epochs": 1, "batch_size": 8, "max_length": 32, "eval_every": 2, **train},
    }


def stop_at_step(step: int):
    """An in-process plugin that interrupts training (as Ctrl-C would) once ``step`` is done."""

    @lccore.hookimpl
    def on_train_step(run, step: int, logs):
        if step == stop_step:
            raise KeyboardInterrupt

    stop_step = step
    return types.SimpleNamespace(on_train_step=on_train_step, __name__="stop_at_step")


def test_a_second_run_and_a_resume_do_not_tokenise_again(tmp_path, cache, encode_calls):
    config = lm_config(tmp_path, max_steps=6, checkpoint_every=2)
    first = lccore.train(config, tmp_path / "first", progress=False)
    assert sum(encode_calls) == len(LM_TEXTS) + 10  # train and dev, once each
    assert {entry["kind"] for entry in cache_entries(cache)} == {"features", "scratch", "fitted"}

    encode_calls.clear()
    second = lccore.train(config, tmp_path / "second", progress=False)
    assert encode_calls == []  # both splits and the scratch tokenizer came from the cache
    assert second.metrics["train"] == first.metrics["train"] and second.metrics["dev"] == first.metrics["dev"]

    # Interrupted after step 4 (a checkpoint at step 4), then resumed: no tokenising, same end.
    out = tmp_path / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        lccore.train(config, out, progress=False, engine=lccore.Engine(plugins=[stop_at_step(5)]))
    assert checkpoints.checkpoint_dirs(out)[0].name == "step-00000004"
    encode_calls.clear()
    resumed = lccore.train(config, out, progress=False, resume=True)
    assert encode_calls == []
    assert resumed.metrics["train"] == first.metrics["train"]


def test_changed_data_is_tokenised_again_and_data_cache_false_adds_nothing(tmp_path, cache, encode_calls):
    config = lm_config(tmp_path, max_steps=2)
    lccore.train(config, tmp_path / "a", progress=False)
    with (tmp_path / "train.txt").open("a") as handle:
        handle.write("one more text about carol .\n")
    encode_calls.clear()
    lccore.train(config, tmp_path / "b", progress=False)
    assert len(LM_TEXTS) + 1 in encode_calls  # the changed training split again (and dev: a new scratch tokenizer learnt from it)
    before = cache_entries(cache)
    encode_calls.clear()
    lccore.train({**config, "data": {"cache": False}}, tmp_path / "c", progress=False)
    assert sum(encode_calls) == len(LM_TEXTS) + 1 + 10
    assert cache_entries(cache) == before


def test_a_damaged_entry_is_rebuilt_not_used(tmp_path, cache, encode_calls, capsys):
    config = lm_config(tmp_path, max_steps=2)
    first = lccore.train(config, tmp_path / "a", progress=False)
    for entry in cache_entries(cache):
        if entry["split"] == "train":
            arrow = data_features.Path(entry["path"]) / data_features.ARROW_FILE
            arrow.write_bytes(arrow.read_bytes()[:-40])  # cut short, as a full disk or a crash leaves it
    encode_calls.clear()
    again = lccore.train(config, tmp_path / "b", progress=False)
    assert sum(encode_calls) == len(LM_TEXTS)
    assert "is damaged" in capsys.readouterr().err
    assert again.metrics["train"] == first.metrics["train"]


def test_many_chunks_predict_one_record_per_example_as_one_encode_does(tmp_path, cache, tiny_model, monkeypatch):
    from transformers import AutoTokenizer

    from lccore.predictor import run_model

    engine = lccore.Engine()
    task = engine.create("task", "text_classification", {})
    examples = list(task.read(write_jsonl(tmp_path / "data.jsonl", sentiment_rows(53, seed=3))))
    task.fit(examples)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    monkeypatch.setattr(data_features, "CHUNK_EXAMPLES", 10)
    monkeypatch.setattr(data_features, "RECORD_BATCH_BYTES", 1)  # an Arrow record batch per chunk
    chunked = split_features(task, lambda: examples, tokenizer=tokenizer, max_length=32, key="k", name="data", cache=cache, progress=False)
    whole = [stored_form(f) for f in task.encode(examples, tokenizer, 32)]
    assert len(chunked.chunks()) == 6 and chunked.examples == 53 and chunked.folder is not None
    assert chunked.rows.table.column("input_ids").num_chunks == 6
    assert [chunked[i] for i in range(len(chunked))] == whole
    # batches drawn across record batches, in any order, and ranges spanning them
    shuffled = [41, 3, 52, 17, 3, 29, 0]
    assert chunked.__getitems__(shuffled) == [whole[i] for i in shuffled]
    assert chunked.__getitems__(range(5, 47)) == whole[5:47]
    head = engine.create("head", task.default_head, {})
    model = head.build(tiny_model, task.head_spec())
    chunked_predictions, _ = run_model(model, task, tokenizer, chunked, batch_size=8, device="cpu")
    whole_predictions, _ = run_model(model, task, tokenizer, whole, batch_size=8, device="cpu")
    assert len(chunked_predictions) == 53
    assert [p["label"] for p in chunked_predictions] == [p["label"] for p in whole_predictions]


def test_language_modelling_keeps_its_per_text_bookkeeping_across_chunks(tmp_path, cache, monkeypatch):
    """Packed blocks refer to the texts of their own chunk: every text gets its own record, in
    order, scoring its own tokens, however many chunks the file took."""
    from transformers import AutoTokenizer

    from lccore.config import ScratchModelConfig
    from lccore.predictor import run_model
    from lccore.scratch import build

    engine = lccore.Engine()
    task = engine.create("task", "clm", {})
    (tmp_path / "texts.txt").write_text("".join(t + "\n" for t in LM_TEXTS))
    examples = list(task.read(tmp_path / "texts.txt"))
    source = build(ScratchModelConfig(architecture="gpt2", hidden_size=32, num_layers=1, num_heads=2, vocab_size=300),
                   [e.text for e in examples], tmp_path / "model", max_length=32, seed=0)
    tokenizer = AutoTokenizer.from_pretrained(source)
    model = engine.create("head", "causal_lm", {}).build(source, {})
    monkeypatch.setattr(data_features, "CHUNK_EXAMPLES", 7)
    chunked = split_features(task, lambda: examples, tokenizer=tokenizer, max_length=32, key="lm", name="texts", cache=cache, progress=False)
    predictions, _ = run_model(model, task, tokenizer, chunked, batch_size=8, device="cpu")
    assert len(chunked.chunks()) == 9 and len(predictions) == len(LM_TEXTS)
    # A causal LM scores every token of a text and its end-of-text but the first of each block.
    sizes = [len(tokenizer(e.text, add_special_tokens=False)["input_ids"]) + 1 for e in examples]
    assert all(size - 1 <= p["tokens"] <= size for p, size in zip(predictions, sizes))
    assert sum(p["tokens"] for p in predictions) == sum(sizes) - len(chunked)
    assert all(p["perplexity"] > 1 for p in predictions)


def test_one_process_tokenises_while_another_waits(tmp_path, cache, tiny_model):
    from transformers import AutoTokenizer

    engine = lccore.Engine()
    task = engine.create("task", "text_classification", {})
    examples = list(task.read(write_jsonl(tmp_path / "data.jsonl", sentiment_rows(30, seed=1))))
    task.fit(examples)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    passes, results = [], []

    def examples_once():
        passes.append(1)
        return examples

    def build():
        results.append(split_features(task, examples_once, tokenizer=tokenizer, max_length=32, key="shared", name="d", cache=cache, progress=False))

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(passes) == 1 and len(results) == 3
    assert all(len(r) == 30 for r in results)


def test_a_full_disk_while_caching_is_one_line_and_leaves_no_partial_entry(tmp_path, cache, tiny_config, monkeypatch, capsys):
    from datasets.arrow_writer import ArrowWriter

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ArrowWriter, "write_table", full)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(tiny_config))
    assert cli(["train", str(config_path), "--output", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "disk full while caching" in err and str(cache) in err
    assert not list((cache / "features").glob("*.partial"))
    assert not (tmp_path / "run").exists()  # the run folder it created is gone too


def test_cache_ls_and_clear_remove_only_lccores_entries(tmp_path, cache, capsys):
    config = lm_config(tmp_path, max_steps=1)
    lccore.train(config, tmp_path / "run", progress=False)
    capsys.readouterr()
    assert cli(["cache", "ls", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["root"] == str(cache) and len(listed["entries"]) == 4 and listed["bytes"] > 0
    assert {e["split"] for e in listed["entries"] if e["kind"] == "features"} == {"train", "dev"}
    mine = cache / "features" / "my-notes.txt"
    mine.write_text("not lccore's")
    assert cli(["cache", "clear"]) == 0
    assert "removed 4 entries" in capsys.readouterr().out
    assert cache_entries(cache) == [] and mine.read_text() == "not lccore's"


def test_a_task_whose_features_hold_objects_still_trains_in_memory(tmp_path, cache, tiny_config, monkeypatch, capsys):
    """A third-party task written before the cache (objects in its features) keeps working: its
    splits stay in memory, and a warning says what to change."""
    from lccore_text_classification.task import TextClassificationTask

    original = TextClassificationTask.encode

    def with_objects(self, examples, tokenizer, max_length):
        return [dict(f, example=e) for f, e in zip(original(self, examples, tokenizer, max_length), examples)]

    monkeypatch.setattr(TextClassificationTask, "encode", with_objects)
    run = lccore.train(dict(tiny_config, train=dict(tiny_config["train"], epochs=1)), tmp_path / "run", progress=False)
    assert run.metrics["dev"]
    err = capsys.readouterr().err
    assert "kept in memory, not cached" in err and "docs/plugins.md" in err
    assert not [e for e in cache_entries(cache) if e["kind"] == "features"]


def test_evaluate_reuses_its_features(trained_run, sentiment_files, cache, encode_calls, capsys):
    assert cli(["evaluate", str(trained_run.output_dir), "--data", str(sentiment_files["dev"]), "-q"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert encode_calls
    encode_calls.clear()
    assert cli(["evaluate", str(trained_run.output_dir), "--data", str(sentiment_files["dev"]), "-q"]) == 0
    assert json.loads(capsys.readouterr().out) == first and encode_calls == []


def test_a_batch_of_short_blocks_with_nothing_masked_has_zero_loss_not_nan():
    """Each chunk's last packed block may be short; batched together, masking may pick no token:
    the loss is then zero (no signal), not the NaN of a mean over nothing that stops the run."""
    import torch
    from transformers.modeling_outputs import MaskedLMOutput

    engine = lccore.Engine()
    logits = torch.randn(2, 3, 10, requires_grad=True)
    labels = torch.full((2, 3), -100)
    nan = torch.nn.functional.cross_entropy(logits.view(-1, 10), labels.view(-1), ignore_index=-100)
    assert torch.isnan(nan)  # what the model itself reports
    for head_name in ("masked_lm", "causal_lm"):
        loss = engine.create("head", head_name, {}).loss(MaskedLMOutput(loss=nan, logits=logits), {"labels": labels})
        assert float(loss.detach()) == 0.0
        loss.backward()
        assert torch.isfinite(logits.grad).all()


def test_a_folder_in_the_cache_that_lccore_did_not_complete_is_never_removed(tmp_path, cache):
    from lccore.data.features import cached_folder

    built = []

    def build(directory):
        built.append(directory)
        (directory / "model.bin").write_text("weights")

    folder = cache / "scratch" / "somekey"
    folder.mkdir(parents=True)
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(lccore.DataError, match="not an lccore cache entry"):
        cached_folder(folder, build)
    assert (folder / "notes.txt").read_text() == "mine" and built == []
    (folder / "notes.txt").unlink()
    folder.rmdir()

    # A folder of the name lccore builds in, but not made by lccore: refused and kept.
    partial = folder.with_name("somekey.partial")
    partial.mkdir()
    (partial / "notes.txt").write_text("mine too")
    with pytest.raises(lccore.DataError, match="not a folder lccore was building"):
        cached_folder(folder, build)
    assert (partial / "notes.txt").read_text() == "mine too" and built == []
    (partial / "notes.txt").unlink()

    # One a killed build left (it holds lccore's marker) is replaced.
    (partial / data_features.PARTIAL_MARKER).touch()
    (partial / "model.bin").write_text("half")
    assert cached_folder(folder, build) == str(folder)
    assert len(built) == 1 and (folder / "entry.json").is_file() and (folder / "model.bin").read_text() == "weights"
    assert not partial.exists() and not (folder / data_features.PARTIAL_MARKER).exists()
    assert cached_folder(folder, build) == str(folder) and len(built) == 1  # reused


def test_worker_processes_write_the_same_entry_as_one_process(tmp_path, cache, tiny_model, monkeypatch):
    """`data.num_proc`: chunks are encoded in forked workers, and the entry is the same, in order."""
    import os

    from transformers import AutoTokenizer

    from lccore_text_classification.task import TextClassificationTask

    pids = tmp_path / "pids"

    def encode_noting_pid(self, examples, tokenizer, max_length, original=TextClassificationTask.encode):
        with pids.open("a") as handle:
            handle.write(f"{os.getpid()}\n")
        return original(self, examples, tokenizer, max_length)

    monkeypatch.setattr(TextClassificationTask, "encode", encode_noting_pid)
    monkeypatch.setattr(data_features, "CHUNK_EXAMPLES", 10)
    task = lccore.Engine().create("task", "text_classification", {})
    examples = list(task.read(write_jsonl(tmp_path / "data.jsonl", sentiment_rows(97, seed=5))))
    task.fit(examples)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    one = split_features(task, lambda: iter(examples), tokenizer=tokenizer, max_length=32, key="one", name="data", cache=cache, progress=False)
    pids.unlink()
    three = split_features(task, lambda: iter(examples), tokenizer=tokenizer, max_length=32, key="three", name="data", cache=cache,
                           progress=False, num_proc=3)
    workers = set(pids.read_text().split())
    assert str(os.getpid()) not in workers and len(workers) > 1
    assert three.chunk_ends == one.chunk_ends and three.examples == one.examples == 97
    assert three.__getitems__(range(len(three))) == one.__getitems__(range(len(one)))


@pytest.mark.parametrize("num_proc", [1, 2])
def test_a_split_is_read_only_a_few_chunks_ahead_of_what_is_written(tmp_path, tiny_model, monkeypatch, num_proc):
    """Memory stays bounded: reading runs at most two chunks per worker ahead of the writer."""
    from transformers import AutoTokenizer

    monkeypatch.setattr(data_features, "CHUNK_EXAMPLES", 10)
    task = lccore.Engine().create("task", "text_classification", {})
    examples = list(task.read(write_jsonl(tmp_path / "data.jsonl", sentiment_rows(300, seed=2))))
    task.fit(examples)
    read = []

    def reading():
        for example in examples:
            read.append(example)
            yield example

    bar = types.SimpleNamespace(update=lambda n: None)
    chunks = data_features._stored_chunks(task, reading(), AutoTokenizer.from_pretrained(tiny_model), 32, bar, num_proc)
    ahead = []
    for table, rows, examples_in_chunk in chunks:
        ahead.append(len(read))
    assert len(ahead) == 30 and len(read) == 300
    assert max(ahead[i] - 10 * (i + 1) for i in range(30)) <= 10 * 2 * num_proc


def test_an_error_in_a_worker_is_the_tasks_one_line_error(tmp_path, cache, tiny_config, monkeypatch, capsys):
    from lccore_text_classification.task import TextClassificationTask

    def failing(self, examples, tokenizer, max_length):
        raise lccore.DataError("row 7: a label the task has never seen")

    monkeypatch.setattr(TextClassificationTask, "encode", failing)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps({**tiny_config, "data": {"num_proc": 2}}))
    assert cli(["train", str(config_path), "--output", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err.splitlines()[-1]] and "row 7: a label the task has never seen" in err
    assert not list((cache / "features").glob("*.partial"))


def test_a_first_pass_with_no_count_shows_bytes_read_out_of_the_files_size(tmp_path, cache, monkeypatch):
    """A pretrained model and `mlm`: nothing counts the corpus before it is tokenised, so the
    bar runs over the file's bytes (rate and ETA) and ends at 100%."""
    from lccore import progress

    bars = []
    original = progress.progress_bar

    def recording(**options):
        bar = original(**options)
        bars.append((options, bar))
        return bar

    monkeypatch.setattr(progress, "progress_bar", recording)
    monkeypatch.setattr(data_features, "CHUNK_EXAMPLES", 7)
    config = lm_config(tmp_path, max_steps=1)
    config["model"] = str(lccore.train(lm_config(tmp_path, max_steps=1), tmp_path / "pre", progress=False).model_dir)
    config["train"]["max_length"] = 24  # other features than the first run cached
    bars.clear()
    lccore.train(config, tmp_path / "run", progress=True)
    (options, bar), = [(o, b) for o, b in bars if o["desc"] == "tokenise train"]
    size = (tmp_path / "train.txt").stat().st_size
    assert options["unit"] == "B" and options["total"] == size and bar.n == size
