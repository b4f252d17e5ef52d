"""Data files compressed with gzip, bzip2 or xz (how corpora are kept and shipped) are read as they
are decompressed, by every reader, with the format named by the suffix before the compression's."""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import shutil

import pytest
from conftest import ner_sentences, write_conll

import lccore
from lccore import data
from lccore.errors import DataError

COMPRESS = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}


def compressed(path, suffix):
    target = path.with_name(path.name + suffix)
    target.write_bytes(COMPRESS[suffix](path.read_bytes()))
    return target


@pytest.mark.parametrize("suffix", sorted(COMPRESS))
def test_records_lines_and_progress_come_through_the_decompressor(tmp_path, suffix):
    rows = [{"text": f"row {i} \u00e9t\u00e9", "label": "a" if i % 2 else "b"} for i in range(500)]
    plain = tmp_path / "rows.jsonl"
    plain.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    packed = compressed(plain, suffix)
    assert data.data_suffix(packed) == ".jsonl" and data.data_suffix(tmp_path / "a.v2.csv") == ".csv"
    before = data.bytes_read()
    assert [row for _, row in data.read_records(packed)] == rows
    assert data.bytes_read() - before == packed.stat().st_size  # a bar over the files' sizes ends at 100%
    table = tmp_path / "rows.csv"
    table.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows), encoding="utf-8")
    assert [row for _, row in data.read_records(compressed(table, suffix))] == rows


def test_a_damaged_or_cut_file_is_one_line_naming_it(tmp_path):
    plain = tmp_path / "rows.jsonl"
    plain.write_text("".join(json.dumps({"text": f"row {i}", "label": "a"}) + "\n" for i in range(2000)), encoding="utf-8")
    packed = compressed(plain, ".gz")
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(packed.read_bytes()[: packed.stat().st_size // 2])
    with pytest.raises(DataError, match=r"cut.jsonl.gz:\d+: cannot decompress it \(EOFError: "):
        list(data.read_records(cut))
    fake = tmp_path / "fake.jsonl.xz"
    fake.write_text('{"text": "not xz"}\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"fake.jsonl.xz:1: cannot decompress it \(LZMAError: "):
        list(data.read_records(fake))
    with pytest.raises(DataError, match=r"rows.jsonl.zst: unsupported file type '.zst'.*\.gz, \.bz2, \.xz"):
        list(data.read_records(shutil.copy(plain, tmp_path / "rows.jsonl.zst")))


def test_a_run_trains_on_compressed_files_as_on_plain_ones(tiny_config, tmp_path):
    from pathlib import Path

    plain = lccore.train({**tiny_config, "train": {**tiny_config["train"], "epochs": 1}}, tmp_path / "plain", progress=False)
    task = dict(tiny_config["task"], train=str(compressed(Path(tiny_config["task"]["train"]), ".gz")),
                dev=str(compressed(Path(tiny_config["task"]["dev"]), ".xz")))
    packed = lccore.train({**tiny_config, "task": task, "train": {**tiny_config["train"], "epochs": 1}}, tmp_path / "packed", progress=False)
    assert [row["loss"] for row in packed.metrics["train"]] == [row["loss"] for row in plain.metrics["train"]]
    assert packed.metrics["dev"] == plain.metrics["dev"]


def test_ner_conll_and_squad_json_read_compressed(tmp_path):
    engine = lccore.Engine()
    ner = engine.create("task", "ner", {})
    conll = write_conll(tmp_path / "train.conll", ner_sentences(20, 1))
    strip = lambda examples: [(e.tokens, e.tags, e.text, e.offsets) for e in examples]  # noqa: E731 - `where` names the file read
    assert strip(ner.read(compressed(conll, ".bz2"))) == strip(ner.read(conll))
    qa = engine.create("task", "extractive_qa", {})
    squad = tmp_path / "train.json"
    squad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "Ada wrote programs.", "qas": [
        {"id": "1", "question": "Who wrote programs?", "answers": [{"text": "Ada", "answer_start": 0}]}]}]}]}), encoding="utf-8")
    [packed], [plain] = qa.read(compressed(squad, ".gz")), qa.read(squad)
    assert (packed.question, packed.context, packed.answers) == (plain.question, plain.context, plain.answers)
