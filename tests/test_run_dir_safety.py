"""lccore deletes only what it can show it wrote, and one process writes a run directory at a time."""

from __future__ import annotations

import json
import os

import pytest
import yaml

import lccore
from lccore.errors import RunDirError
from lccore.rundir import LOCK_FILE, MARKER_FILE, RunDir

from test_bad_input import assert_one_line_error, run_cli


@pytest.fixture
def quick_config(tiny_config):
    return {**tiny_config, "train": {**tiny_config["train"], "epochs": 1}}


def user_folder(folder, config: dict):
    """A folder of the user's own: their config (named config.yaml, as a run's is) and notes."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "keep.jsonl").write_text('{"text": "x", "label": "a"}\n')
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def contents(folder):
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_resume_in_a_users_folder_deletes_nothing(quick_config, tmp_path):
    # the user's config is a resolved one (copied from an earlier run), so it matches what
    # `--resume` compares against: only the marker protects the folder
    from lccore.config import resolve

    resolved, _, _ = resolve(lccore.load_config(quick_config), lccore.Engine())
    before = user_folder(tmp_path / "work", resolved.to_dict())
    result = run_cli("train", "config.yaml", "--output", ".", "--resume", cwd=tmp_path / "work")
    assert_one_line_error(result, "will not clear it")
    assert contents(tmp_path / "work") == before


def test_overwrite_refuses_a_folder_lccore_did_not_write(quick_config, tmp_path):
    before = user_folder(tmp_path / "data", quick_config)
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(quick_config))
    result = run_cli("train", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "data"), "--overwrite")
    assert_one_line_error(result, "not an lccore run directory", MARKER_FILE)
    assert contents(tmp_path / "data") == before
    # the same for a library user, and for export --merge --overwrite
    with pytest.raises(RunDirError, match="not an lccore run directory"):
        lccore.train(quick_config, tmp_path / "data", overwrite=True, progress=False)
    assert contents(tmp_path / "data") == before


def test_overwrite_and_restart_remove_only_lccores_files(quick_config, tmp_path):
    out = tmp_path / "run"
    lccore.train(quick_config, out, progress=False)
    assert json.loads((out / MARKER_FILE).read_text())["written_by"] == "lccore"
    (out / "my-analysis.ipynb").write_text("{}")  # the user's file inside a run directory
    (out / "model" / "note.txt").write_text("inside lccore's folder")
    lccore.train(quick_config, out, overwrite=True, progress=False)
    assert (out / "my-analysis.ipynb").read_text() == "{}"
    assert not (out / "model" / "note.txt").exists()  # model/ is lccore's, replaced whole
    assert (out / "manifest.json").exists() and not (out / LOCK_FILE).exists()

    # a resume with no checkpoint yet starts again in a run lccore wrote, and keeps the user's file
    (out / "manifest.json").unlink()
    lccore.train(quick_config, out, resume=True, progress=False)
    assert (out / "my-analysis.ipynb").read_text() == "{}" and (out / "manifest.json").exists()


def test_a_second_process_on_the_same_run_directory_is_refused(quick_config, tmp_path):
    out = tmp_path / "run"
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(quick_config))
    with RunDir(out):  # this process holds the run directory, as a running `lccore train` does
        result = run_cli("train", str(tmp_path / "cfg.yaml"), "--output", str(out), "--resume")
        assert_one_line_error(result, f"in use by another lccore process (PID {os.getpid()})")
        result = run_cli("train", str(tmp_path / "cfg.yaml"), "--output", str(out), "--overwrite")
        assert_one_line_error(result, f"PID {os.getpid()}")
    assert not (out / LOCK_FILE).exists()  # released; the folder is free again
    with RunDir(out, resume=True):
        pass


def test_a_failed_start_leaves_no_folder_behind(quick_config, tmp_path):
    with pytest.raises(lccore.PluginError):
        lccore.train({**quick_config, "task": {**quick_config["task"], "name": "no_such_task"}}, tmp_path / "new" / "run", progress=False)
    assert not (tmp_path / "new" / "run").exists()


def test_commands_that_write_a_file_leave_an_existing_one_alone_unless_told(trained_run, tmp_path, capsys):
    """A typo'd --output (the test file, yesterday's predictions) was silently replaced."""
    from lccore.cli import main

    run = str(trained_run.output_dir)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('"a great film"\n"an awful film"\n', encoding="utf-8")
    mine = tmp_path / "mine.jsonl"
    mine.write_text("the user's own rows\n", encoding="utf-8")
    writers = [
        ["predict", run, "--input", str(inputs), "--output", str(mine), "-q"],
        ["ethics", "check", "--policy", "pii", "--input", str(inputs), "--output", str(mine)],
        ["explain", run, "--text", "a great film", "--explainer", "random", "--html", str(mine), "-q"],
        ["audit", run, "--data", str(inputs), "--html", str(mine), "-q"],
    ]
    for command in writers:
        assert main(command) == 2, command
        error = capsys.readouterr().err.strip()
        assert "mine.jsonl: the file exists; pass --overwrite" in error and "\n" not in error, command
        assert mine.read_text(encoding="utf-8") == "the user's own rows\n", command

    # told: replaced; the file read is never the file written, --overwrite or not
    assert main(writers[0] + ["--overwrite"]) == 0
    rows = [json.loads(line) for line in mine.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 2 and all("label" in row for row in rows)
    capsys.readouterr()
    before = inputs.read_bytes()
    assert main(["predict", run, "--input", str(inputs), "--output", str(inputs), "--overwrite", "-q"]) == 2
    assert "is the file the command reads" in capsys.readouterr().err
    assert inputs.read_bytes() == before
    assert main(["predict", run, "--input", str(inputs), "--output", str(mine), "--overwrite", "--resume"]) == 2
