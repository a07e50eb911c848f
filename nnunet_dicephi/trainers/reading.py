"""A trainer built to read a fold's statistics (``stats``, ``gradients --dataset``), not to train."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

from .base import DicePhiTrainer


@contextlib.contextmanager
def reading_trainer(dataset: str, configuration: str, fold: str, trainer: str, plans: str) -> Iterator[DicePhiTrainer]:
    """The trainer ``nnUNetv2_train DATASET CONFIGURATION FOLD -tr TRAINER -p PLANS`` would build, on the CPU.

    nnU-Net's trainer creates its fold folder and a training log as it is built: this one sees
    ``nnUNet_results`` in a scratch folder, removed afterwards, so that no trainer folder without a
    training appears among the user's results. What nnU-Net reports goes to stderr, keeping stdout
    for the verb's own output.
    """
    import torch
    from nnunetv2.run.run_training import get_trainer_from_args

    from . import trainer_class

    trainer_class(trainer)  # validates the name before nnU-Net's lookup prints its own message
    fold_value = fold if fold == "all" else int(fold)
    with (
        tempfile.TemporaryDirectory(prefix="dicephi-reading-") as scratch,
        _results_in(scratch),
        contextlib.redirect_stdout(sys.stderr),
    ):
        yield get_trainer_from_args(str(dataset), configuration, fold_value, trainer, plans, device=torch.device("cpu"))


_LAZY = object()


@contextlib.contextmanager
def _results_in(folder: str) -> Iterator[None]:
    """nnU-Net's trainers see ``nnUNet_results`` = ``folder`` for the duration of the block.

    nnU-Net 2.8 reads the variable at each use (``nnunetv2.paths`` holds lazy ``_EnvPath`` objects),
    so setting it is enough. Before 2.8 the trainer module kept the string (or None) that
    ``nnunetv2.paths`` read at import, so that copy is replaced as well.
    """
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer_module = sys.modules[nnUNetTrainer.__module__]
    frozen = vars(trainer_module).get("nnUNet_results", _LAZY)
    replace_frozen = frozen is None or isinstance(frozen, str)
    previous = os.environ.get("nnUNet_results")
    os.environ["nnUNet_results"] = folder
    if replace_frozen:
        trainer_module.nnUNet_results = folder
    try:
        yield
    finally:
        if replace_frozen:
            trainer_module.nnUNet_results = frozen
        if previous is None:
            os.environ.pop("nnUNet_results", None)
        else:
            os.environ["nnUNet_results"] = previous
