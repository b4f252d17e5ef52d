"""Bad input: a one-line error naming the file and line (or key), exit status 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml


def run_cli(*args, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "lccore.cli", *args], capture_output=True, text=True, input=stdin, timeout=300, cwd=cwd)


def assert_one_line_error(result, *fragments):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("lccore: error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def config_with(tmp_path, tiny_model, sentiment_files):
    """Write a config whose training file has the given bytes; return its path."""

    def make(train_bytes: bytes, name="train.jsonl", **task):
        data = tmp_path / name
        data.write_bytes(train_bytes)
        config = {"model": tiny_model, "task": {"name": "text_classification", "train": str(data), "dev": str(sentiment_files["dev"]), **task}}
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path, data

    return make


GOOD = b'{"text": "great", "label": "positive"}\n{"text": "awful", "label": "negative"}\n'


@pytest.mark.parametrize(
    "content, name, expected",
    [
        (b"", "train.jsonl", ["train.jsonl: file is empty"]),
        (GOOD + b'{"text": "ok", "label": \n', "train.jsonl", ["train.jsonl:3: malformed JSON"]),
        (GOOD + b'{"text": "caf\xe9", "label": "positive"}\n', "train.jsonl", ["train.jsonl:3: not valid UTF-8"]),
        (GOOD + b'{"txt": "no text key", "label": "positive"}\n', "train.jsonl", ["train.jsonl:3: missing key 'text'"]),
        (GOOD + b'["a", "list"]\n', "train.jsonl", ["train.jsonl:3: expected a JSON object"]),
        (b'text,label\ngreat,positive\nawful,negative,extra\n', "train.csv", ["train.csv:3: expected 2 fields"]),
        (b'body,label\ngreat,positive\n', "train.csv", ["train.csv:1: header must have columns text, label"]),
        (b'{"text": "only one label", "label": "positive"}\n', "train.jsonl", ["needs at least 2 labels"]),
        (GOOD, "train.txt", ["train.txt: unsupported file type '.txt'"]),
    ],
)
def test_bad_training_data(config_with, tmp_path, content, name, expected):
    config, _ = config_with(content, name)
    assert_one_line_error(run_cli("train", str(config), "--output", str(tmp_path / "run")), *expected)
    assert not (tmp_path / "run").exists()  # nothing written for a run that never started


def test_missing_data_file(config_with, tmp_path):
    config, data = config_with(GOOD)
    data.unlink()
    assert_one_line_error(run_cli("train", str(config), "--output", str(tmp_path / "run")), "train.jsonl: no such file")


def test_csv_training_data_is_accepted(config_with, tmp_path, tiny_model):
    rows = "text,label\n" + "".join(f'"{w}, really",{lab}\n' for w, lab in [("great", "positive"), ("awful", "negative")] * 8)
    config, _ = config_with(rows.encode(), "train.csv")
    result = run_cli("train", str(config), "--output", str(tmp_path / "run"), "--set", "train.epochs=1", "-q")
    assert result.returncode == 0, result.stderr


def test_config_typo_exits_2(config_with, tmp_path):
    config, _ = config_with(GOOD)
    result = run_cli("train", str(config), "--output", str(tmp_path / "run"), "--set", "train.epoch=1")
    assert_one_line_error(result, "train.epoch: unknown key (did you mean 'epochs'?)")
    result = run_cli("train", str(tmp_path / "nope.yaml"), "--output", str(tmp_path / "run"))
    assert_one_line_error(result, "nope.yaml: no such config file")


def test_unknown_label_at_evaluation(trained_run, tmp_path):
    data = tmp_path / "eval.jsonl"
    data.write_text('{"text": "great", "label": "positive"}\n{"text": "meh", "label": "neutral"}\n')
    assert_one_line_error(run_cli("evaluate", str(trained_run.output_dir), "--data", str(data)), "eval.jsonl:2: label 'neutral' was not seen in training")


def test_bad_prediction_input(trained_run, tmp_path):
    result = run_cli("predict", str(trained_run.output_dir), "--input", "-", stdin='"fine"\n{"txt": 1}\n')
    assert_one_line_error(result, "<stdin>:2: expected a string or an object with a string 'text'")
    result = run_cli("predict", str(trained_run.output_dir), "--input", "-", stdin='"fine"\nnot json\n')
    assert_one_line_error(result, "<stdin>:2: malformed JSON")


def test_not_a_run_directory(tmp_path):
    assert_one_line_error(run_cli("predict", str(tmp_path), "--input", "-", stdin='"x"\n'), "not a finished lccore run")
    assert_one_line_error(run_cli("evaluate", str(tmp_path / "missing"), "--data", "x.jsonl"), "no such run directory")


def test_output_directory_is_not_overwritten_by_accident(trained_run, tmp_path):
    config = trained_run.output_dir / "config.yaml"
    result = run_cli("train", str(config), "--output", str(trained_run.output_dir))
    assert_one_line_error(result, "directory is not empty", "--overwrite")
    assert json.loads((trained_run.output_dir / "metrics.json").read_text())["test"]["after"]


def test_model_that_cannot_be_loaded(config_with, tmp_path):
    config, _ = config_with(GOOD)
    result = run_cli("train", str(config), "--output", str(tmp_path / "run"), "--set", "model=no-such-org/no-such-model")
    assert_one_line_error(result, "model: cannot load 'no-such-org/no-such-model'")
    assert not (tmp_path / "run").exists()
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    result = run_cli("train", str(config), "--output", str(tmp_path / "run"), "--set", f"model={broken}")
    assert_one_line_error(result, f"model: cannot load '{broken}'")


@pytest.mark.parametrize(("args", "named"), [
    ([b"generate", b"runs/chat", b"--prompt", b"\xff hello"], "the value of --prompt"),
    ([b"generate", b"runs/chat", b"--prompt=caf\xe9"], "the value of --prompt"),
    ([b"explain", b"runs/sentiment", b"--text", b"ok", b"--text", b"\xc3"], "the value of --text"),
    ([b"kg", b"ask", b"kg-store", b"where does \xffmaria live?"], "argument 4 of the command line"),
])
def test_arguments_that_are_not_utf8_are_refused_naming_them(args, named):
    """Bytes that are not UTF-8 on the command line (Python keeps them as lone surrogates) reached
    the tokenizer as a traceback; they are refused before anything loads."""
    result = subprocess.run([sys.executable, "-m", "lccore.cli", *args], capture_output=True, timeout=300)
    result = subprocess.CompletedProcess(result.args, result.returncode, result.stdout.decode(), result.stderr.decode("utf-8", "replace"))
    assert_one_line_error(result, named, "is not valid UTF-8", "expected UTF-8 text or an existing path")


def test_a_path_whose_name_is_not_utf8_is_still_a_path(tmp_path):
    """A file's name may be any bytes: an existing one passes to the command (here: not a run)."""
    folder = tmp_path / "r\udcffn"  # the bytes b"r\xffn"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-m", "lccore.cli", b"evaluate", bytes(folder)], capture_output=True, timeout=300)
    stderr = result.stderr.decode("utf-8", "replace")
    assert result.returncode == 2 and "not a finished lccore run (missing config.yaml)" in stderr and "Traceback" not in stderr, stderr
