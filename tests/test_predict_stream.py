"""Streamed prediction: a window of rows at a time, written as done, resumable after a kill."""

from __future__ import annotations

import json

import pytest
from conftest import sentiment_rows

import lccore
from lccore.cli import main as cli
from lccore.predictor import Predictor
from lccore_predict.files import PREDICT_STATE_SUFFIX, predict_file


def write_inputs(path, count: int, seed: int = 11):
    path.write_text("".join(json.dumps(row["text"]) + "\n" for row in sentiment_rows(count, seed=seed)))
    return path


@pytest.fixture(scope="module")
def predictor(trained_run):
    return lccore.load(trained_run.output_dir)


def test_windows_give_the_records_of_one_in_memory_predict_in_input_order(predictor, tmp_path):
    inputs = write_inputs(tmp_path / "in.jsonl", 50)
    texts = [json.loads(line) for line in inputs.read_text().splitlines()]
    whole = predictor.predict(texts)
    assert list(predictor.predict_stream(texts, window=7)) == whole
    assert predict_file(predictor, str(inputs), str(tmp_path / "out.jsonl"), window=7, progress=False) == 50
    assert [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()] == whole
    assert not (tmp_path / ("out.jsonl" + PREDICT_STATE_SUFFIX)).exists()  # complete: nothing to resume


def test_a_stream_reads_only_one_window_ahead(predictor):
    read = []

    def inputs():
        for row in sentiment_rows(40, seed=3):
            read.append(row)
            yield row["text"]

    stream = predictor.predict_stream(inputs(), window=8)
    next(stream)
    assert len(read) == 8  # the first window, not the input
    assert len(list(stream)) == 39 and len(read) == 40


def interrupt_after(monkeypatch, windows: int):
    """Make the predictor fail (as a kill would stop it) when asked for window ``windows`` + 1."""
    calls = []
    original = Predictor.predict_parsed

    def predict_parsed(self, examples, **kwargs):
        calls.append(len(examples))
        if len(calls) > windows:
            raise KeyboardInterrupt
        return original(self, examples, **kwargs)

    monkeypatch.setattr(Predictor, "predict_parsed", predict_parsed)
    return calls


def test_a_killed_prediction_resumes_to_the_file_an_uninterrupted_one_writes(predictor, tmp_path, monkeypatch):
    inputs = write_inputs(tmp_path / "in.jsonl", 50)
    predict_file(predictor, str(inputs), str(tmp_path / "straight.jsonl"), window=7, progress=False)
    straight = (tmp_path / "straight.jsonl").read_bytes()

    out = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 3)
        with pytest.raises(KeyboardInterrupt):
            predict_file(predictor, str(inputs), str(out), window=7, progress=False)
    assert out.read_bytes() == straight[: len(b"".join(straight.splitlines(keepends=True)[:21]))]  # 3 windows, whole rows
    # A kill while a window was written: its rows are there, but not yet in the record; and a cut row.
    with out.open("ab") as handle:
        handle.write(straight.splitlines(keepends=True)[21] + b'{"label": "posi')
    assert predict_file(predictor, str(inputs), str(out), resume=True, window=7, progress=False) == 29
    assert out.read_bytes() == straight
    assert not (tmp_path / ("out.jsonl" + PREDICT_STATE_SUFFIX)).exists()


def test_long_lived_objects_are_left_out_of_collections_while_predicting_and_given_back_after(predictor, tmp_path, monkeypatch):
    import gc

    inputs = write_inputs(tmp_path / "in.jsonl", 20)
    frozen_while_predicting = []
    original = Predictor.predict_parsed
    monkeypatch.setattr(Predictor, "predict_parsed", lambda self, examples, **kw: frozen_while_predicting.append(gc.get_freeze_count()) or original(self, examples, **kw))
    with monkeypatch.context() as patch:
        interrupt_after(patch, 1)
        with pytest.raises(KeyboardInterrupt):
            predict_file(predictor, str(inputs), str(tmp_path / "out.jsonl"), window=7, progress=False)
    assert frozen_while_predicting[0] > 10_000  # the model and the libraries: not scanned by each window's full collections
    assert gc.get_freeze_count() == 0  # given back, after an interruption too
    gc.freeze()  # a program that froze objects itself keeps its freeze
    try:
        mine = gc.get_freeze_count()
        predict_file(predictor, str(inputs), str(tmp_path / "again.jsonl"), window=7, progress=False)
        assert gc.get_freeze_count() > mine // 2  # still frozen (less what refcounting freed meanwhile)
    finally:
        gc.unfreeze()


def test_resume_refuses_another_input_run_or_options(predictor, tmp_path, monkeypatch):
    inputs = write_inputs(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    with monkeypatch.context() as patch:
        interrupt_after(patch, 2)
        with pytest.raises(KeyboardInterrupt):
            predict_file(predictor, str(inputs), str(out), window=5, progress=False)
    written = out.read_bytes()
    with pytest.raises(lccore.ConfigError, match="another --batch-size"):
        predict_file(predictor, str(inputs), str(out), resume=True, window=5, batch_size=3, progress=False)
    other = write_inputs(tmp_path / "other.jsonl", 30, seed=12)
    with pytest.raises(lccore.ConfigError, match="another input file"):
        predict_file(predictor, str(other), str(out), resume=True, window=5, progress=False)
    lines = inputs.read_text().splitlines(keepends=True)
    inputs.write_text(lines[1] + lines[0] + "".join(lines[2:]))  # the same file, its rows changed
    with pytest.raises(lccore.ConfigError, match="predicted from other input rows"):
        predict_file(predictor, str(inputs), str(out), resume=True, window=5, progress=False)
    state = tmp_path / ("out.jsonl" + PREDICT_STATE_SUFFIX)
    recorded = state.read_text()
    assert '"chosen_precision": null' in recorded
    state.write_text(recorded.replace('"chosen_precision": null', '"chosen_precision": "x"'))
    with pytest.raises(lccore.ConfigError, match="unreadable"):
        predict_file(predictor, str(inputs), str(out), resume=True, window=5, progress=False)
    state.write_text(recorded)
    with pytest.raises(lccore.ConfigError, match="no record of an interrupted lccore predict"):
        predict_file(predictor, str(inputs), str(tmp_path / "never.jsonl"), resume=True, window=5, progress=False)
    assert out.read_bytes() == written  # a refused resume changes nothing


def test_a_bad_row_stops_after_the_rows_before_it_are_written_and_resume_continues_after_the_fix(trained_run, tmp_path, capsys):
    inputs = write_inputs(tmp_path / "in.jsonl", 40)
    straight = tmp_path / "straight.jsonl"
    assert cli(["predict", str(trained_run.output_dir), "--input", str(inputs), "--output", str(straight), "-q"]) == 0
    lines = inputs.read_text().splitlines(keepends=True)
    good = lines[29]
    lines[29] = '"cut short\n'
    inputs.write_text("".join(lines))
    out = tmp_path / "out.jsonl"
    assert cli(["predict", str(trained_run.output_dir), "--input", str(inputs), "--output", str(out), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "in.jsonl:30" in err
    assert out.read_text().splitlines() == straight.read_text().splitlines()[:29]  # every row before the bad one
    lines[29] = good
    inputs.write_text("".join(lines))
    assert cli(["predict", str(trained_run.output_dir), "--input", str(inputs), "--output", str(out), "--resume", "-q"]) == 0
    assert out.read_bytes() == straight.read_bytes()


def test_resume_needs_files_not_pipes(trained_run, tmp_path, capsys):
    inputs = write_inputs(tmp_path / "in.jsonl", 3)
    assert cli(["predict", str(trained_run.output_dir), "--input", str(inputs), "--resume", "-q"]) == 2
    assert "--resume: needs an --input file and an --output file" in capsys.readouterr().err


def test_two_processes_write_the_file_one_writes(trained_run, tmp_path):
    import os
    import subprocess
    import sys

    inputs = write_inputs(tmp_path / "in.jsonl", 45)
    one = tmp_path / "one.jsonl"
    assert cli(["predict", str(trained_run.output_dir), "--input", str(inputs), "--output", str(one), "--window", "4", "-q"]) == 0
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "lccore"]
    two = tmp_path / "two.jsonl"
    result = subprocess.run([*launcher, "predict", str(trained_run.output_dir), "--input", str(inputs), "--output", str(two), "--window", "4", "-q"],
                            capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert two.read_bytes() == one.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "one.jsonl", "two.jsonl"]  # the shards are gone


def test_windows_keep_ner_offsets_and_a_guard_per_row(ner_run, ner_files, tmp_path):
    """Another task (entities with offsets) and an ethics guard: the streamed file is the
    in-memory predictions, a blocked row refused in its place."""
    predictor = lccore.load(ner_run.output_dir, ethics=[{"name": "blocklist", "terms": ["zzyzx"]}])
    rows = [json.loads(line) for line in ner_files["test"].read_text().splitlines()][:20]
    rows[5] = {"tokens": ["zzyzx", "visited", "paris"], "tags": ["O", "O", "B-LOC"]}
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    predict_file(predictor, str(inputs), str(tmp_path / "out.jsonl"), window=3, progress=False)
    streamed = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert streamed == predictor.predict(rows)
    assert streamed[5]["refused"] is True and any(record.get("entities") for record in streamed)
