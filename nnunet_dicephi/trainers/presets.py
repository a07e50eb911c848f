"""The named presets: the papers' configurations and their Dice+CE forms (no torch import)."""

from __future__ import annotations

from .naming import HEURISTIC, LossConfig

_DICE_ONLY = {
    "TrainerDiceI": LossConfig(phi="I"),
    "TrainerDiceCI": LossConfig(phi="CI"),
    "TrainerDiceBI": LossConfig(phi="BI"),
    "TrainerDiceBCI": LossConfig(phi="BCI"),
    "TrainerDiceIEps": LossConfig(phi="I", eps_nr=HEURISTIC, eps_dr=HEURISTIC),
    "TrainerVNetDice": LossConfig(loss="VNetDice"),
    "TrainerGDL": LossConfig(loss="GDL", phi="CI"),
    "TrainerJaccard": LossConfig(loss="Jaccard"),
    "TrainerTversky": LossConfig(loss="Tversky"),
    "TrainerLovasz": LossConfig(loss="Lovasz", phi=None),
    "TrainerMime": LossConfig(loss="Mime", phi=None),
    "TrainerLeafDice": LossConfig(loss="LeafDice"),
    "TrainerMarginalDice": LossConfig(loss="MarginalDice"),
}

PRESETS: dict[str, LossConfig] = {
    **_DICE_ONLY,
    **{f"{name}_CE": LossConfig(**{**config.__dict__, "ce": True}) for name, config in _DICE_ONLY.items()},
}
"""Preset name → configuration. Every other valid name resolves through the grammar."""
