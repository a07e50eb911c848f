"""Seeded training: the same seed gives the same weights, patches, augmentations and losses.

nnU-Net seeds nothing: network weights come from torch's global generator, patches from NumPy's,
augmentations from both, inside data-augmentation workers that batchgenerators' "non-deterministic"
augmenter reads in whatever order they finish. A seeded trainer (name option ``seed<K>``)

* seeds Python, NumPy and torch in the training process when training starts, before nnU-Net
  builds the network (a fresh run) and the data loaders;
* swaps nnU-Net's ``NonDetMultiThreadedAugmenter`` for batchgenerators' ordered
  ``MultiThreadedAugmenter`` (batches are read from the workers in turn) and gives every worker its
  own seed for NumPy, torch and Python; with ``nnUNet_n_proc_DA=0`` augmentation runs in the
  training process and draws from its seeded generators.

What stays non-deterministic: CUDA kernels (nnU-Net sets ``cudnn.benchmark = True``; atomic adds in
some backward passes), a different number of CPU threads or augmentation workers, another machine
or library version, and a run resumed with ``--c`` (generator states are not in nnU-Net's
checkpoint; the resumed part is seeded from the seed and the epoch it resumes at, so it repeats
itself, but it differs from an uninterrupted run).
"""

from __future__ import annotations

import contextlib
import itertools
import random

import numpy as np
import torch


def derived_seed(seed: int, *stream: int) -> int:
    """A 32-bit seed for one stream of a run (epoch, loader, worker), independent of the others."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1)[0])


def seed_process(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (torch's on every CUDA device too)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _SeededWorker:
    """A data loader that seeds the augmentation worker running it (batchgenerators seeds NumPy only).

    batchgenerators' ordered augmenter calls ``set_thread_id`` once in each worker before the first
    batch; that is where torch and Python are seeded, one thread per worker as nnU-Net's own
    augmenter sets it.
    """

    def __init__(self, loader, seeds: list[int]) -> None:
        self.loader = loader
        self.seeds = seeds

    def set_thread_id(self, thread_id: int) -> None:
        torch.set_num_threads(1)
        seed_process(self.seeds[thread_id])
        self.loader.set_thread_id(thread_id)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.loader)


@contextlib.contextmanager
def ordered_augmenters(trainer_module, seed: int):
    """While active, nnU-Net's ``get_dataloaders`` builds seeded, ordered augmenters.

    ``trainer_module`` is the module whose ``NonDetMultiThreadedAugmenter`` name nnU-Net's
    ``get_dataloaders`` uses; it is replaced for the duration of the block only. The first call
    builds the training augmenter, the second the validation one, each with its own worker seeds.
    """
    from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter

    streams = itertools.count()
    original = trainer_module.NonDetMultiThreadedAugmenter  # AttributeError if nnU-Net renames it

    def build(data_loader, transform, num_processes, num_cached=2, seeds=None, pin_memory=False, wait_time=0.02):
        stream = next(streams)
        worker_seeds = [derived_seed(seed, stream, worker) for worker in range(num_processes)]
        return MultiThreadedAugmenter(
            _SeededWorker(data_loader, worker_seeds),
            transform,
            num_processes,
            num_cached_per_queue=max(2, num_cached // num_processes),
            seeds=worker_seeds,
            pin_memory=pin_memory,
            wait_time=wait_time,
        )

    trainer_module.NonDetMultiThreadedAugmenter = build
    try:
        yield
    finally:
        trainer_module.NonDetMultiThreadedAugmenter = original
