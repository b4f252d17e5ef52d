"""Batches that waste little padding: length-grouped for training, length-sorted for inference."""

from __future__ import annotations

import random
from typing import Iterator, Sequence


#: Batches per length-sorted pool. Smaller pools make batches less alike: pools of 4 scored higher
#: on small data sets in benchmarks/defaults.py (sentiment-500 0.767 vs 0.754) and still cut most of
#: the padding (Rotten Tomatoes: 33.6 positions an example vs 28.0 with 50, 48.1 random); not yet
#: the default (issue 23: the tests' tiny-model thresholds were set with pools of 50).
POOL_BATCHES = 50


class LengthGroupedBatchSampler:
    """Shuffled batches of examples of similar length.

    Indices are shuffled, cut into pools of ``pool_batches`` batches, each pool is sorted by length
    and cut into batches, and the batches are shuffled again. Each pass draws a new order from
    ``seed`` and the pass number, so a run is reproducible. The lengths may be a numpy array (as
    the data layer gives them), so only one pass's order is ever a Python list.

    The one short batch (when the examples are not a multiple of the batch size) comes last:
    Accelerate splits only full batches between processes, skips a short one met before the end
    and completes the last one with examples from the pass's first batch, so a pass has as many
    steps on any number of processes.
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, *, group_by_length: bool = True, pool_batches: int = POOL_BATCHES):
        import numpy as np

        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.group_by_length = group_by_length
        self.pool_size = batch_size * pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        rng = random.Random(self.seed * 100_003 + self.epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if not self.group_by_length:
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]  # the short one is last
        batches = []
        for start in range(0, len(order), self.pool_size):
            pool = sorted(order[start : start + self.pool_size], key=self.lengths.__getitem__, reverse=True)
            batches.extend(pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size))
        rng.shuffle(batches)
        batches.sort(key=lambda batch: len(batch) < self.batch_size)  # stable: only the short batch moves, to the end
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return (len(self.lengths) + self.batch_size - 1) // self.batch_size


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches of indices in order of decreasing length; callers restore input order afterwards."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i], reverse=True)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
