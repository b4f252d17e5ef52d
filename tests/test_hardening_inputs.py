"""Hostile input gets one line and a non-zero exit: numbers out of range, YAML bombs, odd JSON and
CSV, paths that cannot be written, damaged weights and checkpoints, broken pipes, rude plugins."""

from __future__ import annotations

import errno
import itertools
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import yaml

import lccore
from lccore import checkpoints
from lccore.config import load_config, safe_load_yaml
from lccore.errors import ConfigError, DataError, RunDirError

from conftest import make_distribution
from test_bad_input import assert_one_line_error, run_cli


@pytest.fixture
def cli(capsys, monkeypatch):
    """``lccore ARGS`` in this process (no interpreter start-up per case), as ``run_cli`` returns it."""
    import io

    from lccore.cli import main

    def run(*args, stdin=""):
        # bytes: standard input as a pipe gives it (read as bytes, whatever the locale); text: as a program's StringIO
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="latin-1") if isinstance(stdin, bytes) else io.StringIO(stdin))
        status = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, status, out, err)

    return run


# --- numbers -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["predict", "evaluate"])
@pytest.mark.parametrize("value", ["-1", "0", "99999999999", "abc"])
def test_batch_size_flags_are_range_checked(cli, trained_run, command, value):
    data = ["--input", "-"] if command == "predict" else ["--data", trained_run.config.task.test]
    result = cli(command, str(trained_run.output_dir), *data, "--batch-size", value, stdin='"fine"\n')
    assert_one_line_error(result, "--batch-size", f"lccore {command} --help")


@pytest.mark.parametrize("flag, value", [("--seed", "-5"), ("--seed", str(2**40)), ("--top-p", "1.5"), ("--temperature", "nan"), ("--max-new-tokens", "0")])
def test_generation_flags_are_range_checked(cli, flag, value, tmp_path):
    assert_one_line_error(cli("generate", str(tmp_path), "--prompt", "hi", flag, value), flag)


def test_python_api_refuses_a_bad_batch_size(trained_run):
    predictor = trained_run.load()
    for bad in (0, -1, 2.5):
        with pytest.raises(ConfigError, match="batch_size"):
            predictor.predict(["fine"], batch_size=bad)


@pytest.mark.parametrize("override, fragment", [
    ("train.seed=-1", "train.seed: must be at least 0"),
    ("train.seed=99999999999", "train.seed: must be at most"),
    ("optimizer.lr=.nan", "optimizer.lr: expected a finite number"),
    ("optimizer.lr=.inf", "optimizer.lr: expected a finite number"),
    ("train.epochs=100000000000000000000000", "train.epochs"),
    ("train.batch_size=1000000000", "train.batch_size: must be at most"),
])
def test_config_numbers_are_range_checked(tiny_config, override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config(tiny_config, [override])


def test_max_length_above_the_models_positions(cli, tiny_config, tmp_path):
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**tiny_config, "train": {**tiny_config["train"], "max_length": 4096}}))
    result = cli("train", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "run"))
    assert_one_line_error(result, "train.max_length: 4096", "128 positions")
    assert not (tmp_path / "run").exists()


# --- YAML ----------------------------------------------------------------------------------------

BOMB = """
model: m
task:
  name: text_classification
  options:
    a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]
    b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
    c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
    d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c]
    e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d]
    f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e]
    g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f]
    h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g]
    i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


@pytest.mark.parametrize("text, fragment", [
    (BOMB, "YAML aliases expand to more than"),
    ("model: m\ntask:\n  name: t\n  options: &loop\n    self: *loop\n", "refers to a value that contains it"),
    ("model: m\ntask: &t [1, *t]\n", "refers to a value that contains it"),
    ("model: " + "[" * 3000 + "]" * 3000 + "\ntask: t\n", "nested too deeply"),
])
def test_yaml_bombs_and_cycles_are_refused_anywhere(cli, tmp_path, text, fragment):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    result = cli("train", str(path), "--output", str(tmp_path / "run"))
    assert_one_line_error(result, str(path), fragment)
    # the same guard on every other way YAML comes in, however deep inside it the bomb sits
    with pytest.raises(ConfigError, match=fragment):
        safe_load_yaml("outer:\n  inner:\n" + textwrap.indent(text, "    "), "--ethics-config")


def test_a_set_override_cannot_smuggle_a_bomb(tiny_config):
    value = "[&a [x,x,x,x,x,x,x,x,x,x], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b], &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]"
    with pytest.raises(ConfigError, match="alias bomb"):
        load_config(tiny_config, [f"task.noise={value}"])


def test_a_directory_given_as_the_config(cli, tmp_path):
    assert_one_line_error(cli("train", str(tmp_path), "--output", str(tmp_path / "run")), "is a directory; expected a YAML config file")


@pytest.mark.parametrize("model", ["./no/such/dir", "../missing-model", "/no/such/model/dir", "models/a/b"])
def test_a_model_path_that_does_not_exist(cli, tiny_config, tmp_path, model):
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump({**tiny_config, "model": model}))
    result = cli("train", str(tmp_path / "cfg.yaml"), "--output", str(tmp_path / "run"))
    assert_one_line_error(result, f"model: {model}: no such folder")
    assert "Repo id" not in result.stderr


# --- JSON and CSV rows ---------------------------------------------------------------------------


@pytest.mark.parametrize("row, fragment", [
    ('"a lone \\ud800 surrogate"', "<stdin>:2: a lone surrogate (\\ud800)"),
    ('{"text": "x\\udfff"}', "<stdin>:2: a lone surrogate"),
    ("[" * 100000 + "]" * 100000, "<stdin>:2: JSON nested deeper than"),
    ('{"text": "fine", "meta": ' + "[" * 200 + "]" * 200 + "}", "<stdin>:2: JSON nested deeper than"),
])
def test_odd_json_rows_in_prediction_input(cli, trained_run, row, fragment):
    result = cli("predict", str(trained_run.output_dir), "--input", "-", stdin=f'"fine"\n{row}\n')
    assert_one_line_error(result, fragment)


def test_standard_input_is_read_as_utf8_bytes_like_a_file(cli, trained_run):
    """A BOM and CRLF endings (what Windows tools pipe) are fine; bytes that are not UTF-8 are named
    by line, whatever the locale decodes standard input as, after the rows before them are written."""
    result = cli("predict", trained_run.output_dir, "--input", "-", "-q", stdin='\ufeff"great film"\r\n\r\n"caf\u00e9 awful"\r\n'.encode())
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2
    result = cli("predict", trained_run.output_dir, "--input", "-", "-q", stdin=b'"fine"\n"caf\xe9"\n')
    assert result.returncode == 2 and len(result.stdout.splitlines()) == 1
    assert result.stderr.strip() == "lccore: error: <stdin>:2: not valid UTF-8 (byte 0xe9 at column 5)"
    assert cli("predict", trained_run.output_dir, "--input", "-", "-q", stdin=b"").returncode == 0  # an empty stream: no rows, no error


def test_a_pipe_is_read_once_and_a_folder_is_not_a_file(cli, trained_run, tmp_path, tiny_config):
    import threading

    fifo = tmp_path / "rows"  # what `--input <(command)` gives: a pipe, read once as it comes
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text('"great film"\n"awful film"\n'), daemon=True)
    writer.start()
    result = cli("predict", trained_run.output_dir, "--input", fifo, "-q")
    writer.join(5)
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2, result.stderr
    result = cli("predict", trained_run.output_dir, "--input", fifo, "--output", tmp_path / "out.jsonl", "--resume", "-q")
    assert result.returncode == 2 and "--resume: needs an --input file and an --output file, not '-' or a pipe" in result.stderr
    result = cli("predict", trained_run.output_dir, "--input", tmp_path, "-q")
    assert result.returncode == 2 and result.stderr.strip() == f"lccore: error: {tmp_path}: is a directory; expected a file"
    # training data is read pass after pass: a pipe is refused at once, never waited on
    with pytest.raises(DataError, match=r"rows: a pipe or a device, not a file; this data is read more than once"):
        lccore.train({**tiny_config, "task": {**tiny_config["task"], "train": str(fifo)}}, tmp_path / "run", progress=False)


def test_a_line_past_the_bound_is_refused_by_its_number_not_read_whole(tmp_path, monkeypatch):
    from lccore import data

    monkeypatch.setattr(data, "MAX_LINE_BYTES", 100)  # 256 MiB: a file with no line ends is not read into memory whole
    path = tmp_path / "rows.jsonl"
    path.write_text('"short"\n"' + "x" * 97 + '"\n' + "y" * 5000, encoding="utf-8")  # line 2: 100 bytes, the most
    with pytest.raises(DataError, match=r"rows.jsonl:3: a line longer than 0 MiB; split the data into lines"):
        list(data.read_lines(path))
    assert [n for n, _ in itertools.islice(data.read_lines(path), 2)] == [1, 2]  # up to it, read as before


def test_a_valid_surrogate_pair_is_text(cli, trained_run):
    result = cli("predict", str(trained_run.output_dir), "--input", "-", stdin='"great \\ud83d\\ude00"\n')
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["label"]


def test_lone_surrogate_in_a_training_file(tiny_config, tmp_path):
    train = tmp_path / "train.jsonl"
    train.write_text('{"text": "good", "label": "positive"}\n{"text": "bad \\udc00", "label": "negative"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2: a lone surrogate"):
        lccore.train({**tiny_config, "task": {"name": "text_classification", "train": str(train)}}, tmp_path / "run", progress=False)


def test_a_lone_surrogate_given_to_the_python_api_names_the_input(trained_run, dialogue_run):
    """A program's strings are not checked by any JSON reader: predict and the reasoners refuse a
    lone surrogate naming the input (it was a TypeError from deep in the tokenizer)."""
    predictor = lccore.load(trained_run.output_dir, device="cpu")
    with pytest.raises(DataError, match=r"^input 2: a lone surrogate \(\\ud800\)"):
        predictor.predict(["great", "dull \ud800"])
    with pytest.raises(DataError, match=r"^input 3: a lone surrogate"):
        list(predictor.predict_stream(["great", "dull", {"text": "\udfff"}], window=2))
    with pytest.raises(DataError, match=r"a lone surrogate \(\\udfff\)"):
        predictor.explain(["great", "dull \udfff"], explainer="random")
    generate = lccore.load(dialogue_run.output_dir, device="cpu").reasoner("generate")
    with pytest.raises(DataError, match=r"^query: a lone surrogate"):
        generate.answer({"messages": [{"role": "user", "content": "hello \ud800"}]})
    with pytest.raises(DataError, match=r"^query: a lone surrogate"):
        next(generate.stream("hello \udc80"))
    assert generate.answer("hello \U0001f600")["text"]  # an emoji passes


def test_csv_unterminated_quote_is_reported_where_it_starts(tiny_config, tmp_path):
    rows = ["text,label"] + [f"row {i},positive" for i in range(2, 6)] + ['"this quote never ends,negative'] + [f"row {i},negative" for i in range(7, 40)]
    train = tmp_path / "train.csv"
    train.write_text("\n".join(rows) + "\n")
    with pytest.raises(DataError, match=r"train\.csv:6: malformed CSV: a quoted field that starts on this line is never closed"):
        lccore.train({**tiny_config, "task": {"name": "text_classification", "train": str(train)}}, tmp_path / "run", progress=False)


# --- output paths, damaged weights, broken pipes --------------------------------------------------


@pytest.mark.parametrize("flag", ["--output", "--audit-log"])
def test_unwritable_output_paths_fail_before_the_model_loads(cli, trained_run, tmp_path, flag):
    (tmp_path / "readonly.jsonl").write_text("")
    (tmp_path / "readonly.jsonl").chmod(0o444)
    cases = {
        str(tmp_path / "missing" / "out.jsonl"): "does not exist",
        str(tmp_path): "is a directory",
    }
    if os.geteuid() != 0:  # root writes read-only files anyway
        cases[str(tmp_path / "readonly.jsonl")] = "read-only"
    for path, fragment in cases.items():
        result = cli("predict", str(trained_run.output_dir), "--input", "-", flag, path, stdin='"fine"\n')
        assert_one_line_error(result, flag, fragment)


def test_writing_to_a_full_disk_is_one_line(trained_run):
    result = subprocess.run([sys.executable, "-m", "lccore.cli", "predict", str(trained_run.output_dir), "--input", "-", "--output", "/dev/full", "-q"],
                            input='"fine"\n', capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == ["lccore: error: /dev/full: No space left on device"]


def test_a_truncated_model_file(cli, trained_run, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(trained_run.output_dir, damaged)
    weights = damaged / "model" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = cli("predict", str(damaged), "--input", "-", stdin='"fine"\n')
    assert_one_line_error(result, "model: cannot load", "damaged or truncated")


def test_a_closed_pipe_ends_quietly(trained_run, tmp_path):
    inputs = tmp_path / "many.jsonl"
    inputs.write_text('"a great and wonderful film, really"\n' * 3000)
    result = subprocess.run(f"{sys.executable} -m lccore.cli predict {trained_run.output_dir} --input {inputs} -q | head -n 1",
                            shell=True, capture_output=True, text=True, timeout=300)
    assert json.loads(result.stdout)["label"]
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr, result.stderr


# --- checkpoints ---------------------------------------------------------------------------------


def fake_checkpoints(tmp_path, count=2):
    """Checkpoint folders written by the real save(), from a tiny model and optimiser."""
    import torch

    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    run_dir = tmp_path / "run"
    loop = {"step": 0, "epoch": 0, "batches_done": 0, "best_value": None, "evaluations_without_improvement": 0, "metrics": {}, "data": {}}
    for step in range(1, count + 1):
        folder = checkpoints.partial_dir(run_dir, step)
        folder.mkdir(parents=True)
        checkpoints.write_rng_state(folder, 0)
        checkpoints.save(run_dir, step, model=model, optimizer=optimizer, scheduler=scheduler, loop={**loop, "step": step}, rank_count=1, keep=5)
    return run_dir, checkpoints.checkpoint_dirs(run_dir)


def rehash(folder):
    index = json.loads((folder / checkpoints.INDEX_FILE).read_text())
    index["files"] = {name: checkpoints._sha256(folder / name) for name in index["files"]}
    (folder / checkpoints.INDEX_FILE).write_text(json.dumps(index))


@pytest.mark.parametrize("index", ['[]', '{"files": 3}', '{"files": {"model.safetensors": 1}}', '{"files": {"../../etc/passwd": "x"}}', '{"files": {"shards/../../x.safetensors": "x"}}', '"files"'])
def test_a_checkpoint_index_of_the_wrong_shape_is_skipped_as_damaged(tmp_path, index):
    run_dir, (newest, older) = fake_checkpoints(tmp_path)
    (newest / checkpoints.INDEX_FILE).write_text(index)
    warnings = []
    assert checkpoints.newest_intact(run_dir, warn=warnings.append) == older
    assert "wrong shape" in warnings[0] or "unreadable" in warnings[0]


def test_a_checkpoint_that_does_not_unpickle_safely_is_skipped(tmp_path):
    import pickle

    run_dir, (newest, older) = fake_checkpoints(tmp_path)

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    (newest / checkpoints.OPTIMIZER_FILE).write_bytes(pickle.dumps(Payload()))
    rehash(newest)  # the attacker rewrote the index too: the hashes match
    warnings = []
    assert checkpoints.newest_intact(run_dir, warn=warnings.append) == older
    assert "optimizer.pt cannot be read safely" in warnings[0]
    assert not (tmp_path / "pwned").exists()
    (older / checkpoints.LOOP_FILE).write_text('["not", "a", "loop"]')
    rehash(older)
    assert checkpoints.newest_intact(run_dir, warn=warnings.append) is None
    assert "loop.json has the wrong shape" in warnings[-1]


def test_a_sharded_checkpoint_loads_back_and_a_forged_shard_is_skipped(tmp_path):
    """Shards (FSDP2's SHARDED_STATE_DICT; here one process writes them) hold the model's and the
    optimiser's tensors in safetensors; the rest of the optimiser's state is in optimizer.pt."""
    import torch

    torch.manual_seed(0)
    model, fresh = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    optimizer, fresh_optimizer = torch.optim.AdamW(model.parameters(), lr=0.1), torch.optim.AdamW(fresh.parameters(), lr=0.5)
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    run_dir = tmp_path / "run"
    loop = {"step": 1, "epoch": 0, "batches_done": 1, "best_value": None, "evaluations_without_improvement": 0, "metrics": {}, "data": {}}
    for step in (1, 2):
        folder = checkpoints.partial_dir(run_dir, step)
        folder.mkdir(parents=True)
        checkpoints.write_rng_state(folder, 0)
        state = checkpoints.save_shards(folder, model, optimizer)
        checkpoints.save(run_dir, step, model=None, optimizer=state, scheduler=scheduler, loop={**loop, "step": step}, rank_count=1, keep=5)
    newest, older = checkpoints.checkpoint_dirs(run_dir)
    assert not (newest / checkpoints.MODEL_FILE).exists() and list((newest / "shards").glob("*.safetensors"))
    assert checkpoints.problem(newest) is None
    checkpoints.load(newest, model=fresh, optimizer=fresh_optimizer, scheduler=torch.optim.lr_scheduler.LambdaLR(fresh_optimizer, lambda step: 1.0), rank=0)
    torch.testing.assert_close(fresh.weight, model.weight)
    assert fresh_optimizer.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(fresh_optimizer.state[fresh.weight]["exp_avg"], optimizer.state[model.weight]["exp_avg"])

    shard = next((newest / "shards").glob("*.safetensors"))
    shard.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}   ")
    rehash(newest)  # the hashes match the forged file
    warnings = []
    assert checkpoints.newest_intact(run_dir, warn=warnings.append) == older
    assert f"shards/{shard.name} cannot be read safely" in warnings[0]


def test_a_full_disk_while_checkpointing_removes_the_partial_folder(tmp_path, monkeypatch):
    import torch

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunDirError, match="cannot write the checkpoint of step 1: No space left on device; its partial folder was removed"):
        fake_checkpoints(tmp_path, count=1)
    assert list((tmp_path / "run" / checkpoints.CHECKPOINTS_DIR).iterdir()) == []


# --- plugins that misbehave at import ------------------------------------------------------------


def test_plugins_that_exit_interrupt_or_print_at_import_are_isolated(site, trained_run):
    make_distribution(site, "lccore-rude", {
        "rude_exit": "import sys\nsys.exit(3)\n",
        "rude_interrupt": "raise KeyboardInterrupt\n",
        "rude_print": "import lccore\nprint('hello from a plugin')\n@lccore.hookimpl\ndef register_tasks(register):\n    print('registering')\n",
    }, {"rude_exit": "rude_exit", "rude_interrupt": "rude_interrupt", "rude_print": "rude_print"})
    engine = lccore.Engine()
    assert engine.plugins["rude_exit"].status == "failed" and "sys.exit(3)" in engine.plugins["rude_exit"].reason
    assert engine.plugins["rude_interrupt"].status == "failed" and "KeyboardInterrupt" in engine.plugins["rude_interrupt"].reason
    assert engine.plugins["text_classification"].status == "loaded"
    result = run_cli("predict", str(trained_run.output_dir), "--input", "-", stdin='"fine"\n"awful"\n')
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["label"] for line in result.stdout.splitlines()]  # stdout is only the JSONL
    assert "hello from a plugin" in result.stderr
