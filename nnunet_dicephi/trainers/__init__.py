"""nnU-Net trainers of this project: the presets, and any name of the grammar on demand.

``from nnunet_dicephi.trainers import TrainerDiceBI`` returns a preset; any other valid name, e.g.
``TrainerDiceBI_eps1e-5_CE``, is built on first access (PEP 562) and cached, so nnU-Net's lookup by
``hasattr`` finds it. Classes are named exactly as requested and live in this module, so they pickle.
"""

from __future__ import annotations

import sys

from nnunet_dicephi.loss_config import GRAMMAR, PRESETS, LossConfig, TrainerNameError, parse_trainer_name, trainer_name

from .base import DeepSupervisedLoss, DicePhiTrainer, build_level_loss

__all__ = [
    "DicePhiTrainer",
    "DeepSupervisedLoss",
    "build_level_loss",
    "LossConfig",
    "TrainerNameError",
    "GRAMMAR",
    "parse_trainer_name",
    "trainer_name",
    "trainer_class",
    *PRESETS,
]

_CLASSES: dict[str, type[DicePhiTrainer]] = {}


def trainer_class(name: str) -> type[DicePhiTrainer]:
    """The trainer class called ``name`` (a preset or any valid name); raises TrainerNameError."""
    if name not in _CLASSES:
        config = PRESETS.get(name) or parse_trainer_name(name)
        cls = type(name, (DicePhiTrainer,), {"loss_config": config, "__module__": __name__, "__qualname__": name})
        cls.__doc__ = f"nnU-Net trainer with the loss {trainer_name(config)}: {config}"
        _CLASSES[name] = cls
    return _CLASSES[name]


for _name in PRESETS:
    globals()[_name] = trainer_class(_name)


def __getattr__(name: str) -> type[DicePhiTrainer]:
    # nnU-Net looks trainers up with hasattr(), which only swallows AttributeError: anything that is
    # not ours must raise exactly that. A name that looks like ours but breaks the grammar is
    # explained on stderr, since nnU-Net's own message will only say it was not found.
    if not name.startswith("Trainer"):
        raise AttributeError(name)
    try:
        return trainer_class(name)
    except TrainerNameError as error:
        if not name.startswith("__"):
            print(f"nnunet-dicephi: {error}", file=sys.stderr)
            _repeat_after_nnunets_traceback(name, str(error))
        raise AttributeError(name) from None


_NOT_FOUND = "Could not find requested nnunet trainer "
"""How nnU-Net's RuntimeError for a trainer name its lookup did not find begins."""
_EXPLAINED: dict[str, str] = {}
"""Names explained on stderr in this process → the explanation without the grammar."""


def _repeat_after_nnunets_traceback(name: str, explanation: str) -> None:
    """Repeat the explanation of ``name`` if the process dies of nnU-Net not finding that trainer.

    The explanation is printed while nnU-Net searches; then nnU-Net raises "Could not find requested
    nnunet trainer … specify … nnUNet_extTrainer" — which is set, and right — and its traceback
    buries the explanation. A ``sys.excepthook`` (chained to the one before) makes the problem and the
    closest valid name the last lines a user reads. A caller that catches nnU-Net's error sees nothing.
    """
    if not _EXPLAINED:
        previous = sys.excepthook

        def repeat_after(kind, value, traceback):
            previous(kind, value, traceback)
            message = str(value)
            missing = message[len(_NOT_FOUND) :].split(" ", 1)[0] if message.startswith(_NOT_FOUND) else None
            if isinstance(value, RuntimeError) and missing in _EXPLAINED:
                print(
                    "\nnnunet-dicephi: nnU-Net's error above is about the name, not about nnUNet_extTrainer "
                    "(the grammar of names is printed above the traceback):\n" + _EXPLAINED[missing],
                    file=sys.stderr,
                )

        sys.excepthook = repeat_after
    _EXPLAINED[name] = explanation.partition("\nGrammar:")[0]
