"""The training split streamed: read, shuffled, encoded and batched on the fly, never cached.

For a corpus that should not be tokenised whole into the cache (``data.streaming: true``). Each
pass reads the split's files again, shuffles the examples through a seeded buffer (as
``datasets.IterableDataset.shuffle`` does), encodes them :data:`~lccore.data.features.CHUNK_EXAMPLES`
at a time exactly as the cached path does (same chunks, same packed blocks, features in the
form the cache stores them) and cuts the features into batches.

A stream has no length, so a streamed run counts optimiser steps (``train.max_steps``). It
resumes to the exact example: a checkpoint records, for the next batch, how many examples of the
pass were in chunks already encoded and how many features of the following chunk were used. A
resumed pass reads and shuffles the examples before that point again (cheap) without encoding
them, encodes the chunk it stopped in and skips the features already trained on.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from typing import Callable, Iterable, Iterator

from ..errors import DataError
from . import data_files
from . import features as data_features


def shuffled(items: Iterable, buffer_size: int, rng: random.Random) -> Iterator:
    """``items`` through a shuffle buffer of ``buffer_size``: once full, each new item takes the
    place of one drawn at random, which is given out; the rest come out shuffled at the end."""
    buffer: list = []
    for item in items:
        if len(buffer) < buffer_size:
            buffer.append(item)
            continue
        index = rng.randrange(buffer_size)
        yield buffer[index]
        buffer[index] = item
    rng.shuffle(buffer)
    yield from buffer


class StreamedSplit:
    """Batches of features from passes over a split (``examples()`` gives a fresh pass)."""

    def __init__(self, task, examples: Callable[[], Iterable], *, tokenizer, max_length: int, batch_size: int, seed: int,
                 shuffle_buffer: int, num_proc: int = 1, name: str = "train", progress: bool = False, files=()):
        self.task, self.examples_factory, self.tokenizer, self.max_length = task, examples, tokenizer, max_length
        self.batch_size, self.seed, self.shuffle_buffer, self.num_proc = batch_size, seed, shuffle_buffer, num_proc
        self.name, self.progress = name, progress
        #: examples in the last complete pass (None until a pass has ended)
        self.examples: int | None = None
        self._ends: dict[int, list[int]] = {}  # batch index in the pass -> position after it
        # the files as the run found them: a pass over a file changed since would train on other data
        self._files = {str(path): _stamp(path) for path in data_files(files) if files}

    def position_after(self, batches: int) -> list[int] | None:
        """Where the pass continues after its first ``batches`` batches: [examples in chunks
        already encoded, features of the next chunk already used]; None at the start of a pass."""
        return self._ends[batches - 1] if batches else None

    def batches(self, epoch: int, position: list[int] | None = None, first_batch: int = 0) -> Iterator[list[dict]]:
        """The batches of pass ``epoch`` (lists of features), from ``position`` (as
        :meth:`position_after` gave it) on; ``first_batch`` numbers the first one given."""
        from ..progress import progress_bar

        for path, stamp in self._files.items():
            if _stamp(path) != stamp:
                raise DataError(f"{path}: changed while the run was streaming it (size or modification time); "
                                "a streamed file must stay as it was until the run ends: restart the run")
        rng = random.Random(f"lccore-stream/{self.seed}/{epoch}")  # a str seed hashes the same in every process
        skipped_examples, skipped_features = position or (0, 0)
        examples = itertools.islice(shuffled(self.examples_factory(), self.shuffle_buffer, rng), skipped_examples, None)
        bar = progress_bar(total=None, desc=f"stream {self.name}", unit="ex", enabled=self.progress, delay=1.0, leave=False)
        self._ends = {}
        encoded, batch, index = skipped_examples, [], first_batch
        chunks = data_features._stored_chunks(self.task, examples, self.tokenizer, self.max_length, bar, self.num_proc)
        try:
            for table, _, examples_in_chunk in chunks:
                rows = _features(table)
                for offset in range(skipped_features, len(rows)):
                    batch.append(rows[offset])
                    if len(batch) == self.batch_size:
                        self._remember(index, [encoded, offset + 1])
                        yield batch
                        batch, index = [], index + 1
                skipped_features = 0
                encoded += examples_in_chunk
            if batch:
                self._remember(index, [encoded, 0])
                yield batch
            if position is None:
                self.examples = encoded
        finally:  # a run that stops mid-pass closes this generator: the workers go at once
            chunks.close()
            bar.close()

    def _remember(self, index: int, end: list[int]) -> None:
        self._ends[index] = end
        self._ends.pop(index - 64, None)  # a checkpoint asks for a batch just given out


def _stamp(path) -> tuple[int, int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return status.st_size, status.st_mtime_ns


def _features(table) -> list[dict]:
    """A chunk's features back from the Arrow table they were encoded into (the cache's form)."""
    if table is None:
        return []
    ids, extras = table.column("input_ids").to_pylist(), table.column("extra").to_pylist()
    return [{"input_ids": row_ids, **json.loads(extra)} for row_ids, extra in zip(ids, extras)]
