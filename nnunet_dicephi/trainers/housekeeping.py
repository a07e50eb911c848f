"""What the trainer does beside the loss: checkpoints written once and whole, a throttled progress plot.

Nothing here changes what a model learns; a reader of the trainer can skip this module.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator

import torch

PARTIAL_SUFFIX = ".partial"
"""nnU-Net's checkpoint is written to ``<filename>.partial`` and renamed to ``filename`` once complete."""


class _TorchAddingEntries:
    """``torch`` as nnU-Net's trainer module sees it inside :func:`checkpoint_with`.

    Its ``save`` writes nnU-Net's checkpoint dict with the extra entries added, into
    ``<filename>.partial``, and renames that over ``filename`` once its data is on the disk; every
    other name is torch's own.
    """

    def __init__(self, entries: dict) -> None:
        self.entries = entries
        self.written: list[str] = []

    def __getattr__(self, name: str):
        return getattr(torch, name)

    def save(self, obj, f, *args, **kwargs) -> None:
        path = os.fspath(f)
        partial = path + PARTIAL_SUFFIX
        with open(partial, "wb") as handle:
            torch.save({**obj, **self.entries}, handle, *args, **kwargs)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        self.written.append(path)


@contextlib.contextmanager
def checkpoint_with(entries: dict) -> Iterator[list[str]]:
    """While active, nnU-Net's ``save_checkpoint`` writes its checkpoint with ``entries`` added, once and whole.

    nnU-Net builds the checkpoint dict inside ``save_checkpoint`` and passes it straight to
    ``torch.save(checkpoint, filename)``: its dict has no free slot, and a job killed mid-save (a
    SLURM time limit, a pre-emption) left a truncated ``checkpoint_latest.pth`` that ``--c`` could
    not read. For the duration of the block the ``torch`` of nnU-Net's trainer module saves
    atomically with the entries added, so the checkpoint is written once, with whatever else the
    installed nnU-Net puts in it (2.6 to 2.8 build the same dict). Yields the paths written, for the
    caller to check that nnU-Net saved through ``torch.save`` at all.
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    module = sys.modules[nnUNetTrainer.__module__]
    original = module.torch  # AttributeError if nnU-Net stops importing torch under that name
    adding = _TorchAddingEntries(entries)
    module.torch = adding
    try:
        yield adding.written
    finally:
        module.torch = original


def remove_partial_checkpoints(folder: str) -> list[str]:
    """Delete what a save killed half-way left in ``folder``; the checkpoint it was for is intact."""
    removed = sorted(
        name for name in os.listdir(folder) if name.startswith("checkpoint_") and name.endswith(".pth" + PARTIAL_SUFFIX)
    )
    for name in removed:
        os.remove(os.path.join(folder, name))
    return removed


class ThrottledPlot:
    """The logger's ``plot_progress_png``, drawn at most once per ``interval_s`` and always after the last epoch.

    nnU-Net redraws ``progress.png`` (a 30 x 54 inch figure, about 1 s on a CPU) after every epoch;
    with epochs of a few seconds (short runs, sweeps, the demo) that took a fifth of the training
    time. Long epochs are plotted after each one as before.
    """

    def __init__(self, plot: Callable[[str], None], interval_s: float, is_last_epoch: Callable[[], bool]) -> None:
        self.plot = plot
        self.interval_s = interval_s
        self.is_last_epoch = is_last_epoch
        self.plotted_at = -float("inf")

    def __call__(self, output_folder: str) -> None:
        now = time.monotonic()
        if self.is_last_epoch() or now - self.plotted_at >= self.interval_s:
            self.plotted_at = now
            self.plot(output_folder)


def throttle_progress_plot(trainer) -> None:
    """Make ``trainer``'s logger plot as :class:`ThrottledPlot` says (an instance attribute shadows its method)."""
    trainer.logger.plot_progress_png = ThrottledPlot(
        trainer.logger.plot_progress_png,
        trainer.progress_plot_interval_s,
        lambda: trainer.current_epoch >= trainer.num_epochs - 1,
    )
