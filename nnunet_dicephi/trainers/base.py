"""The one base trainer: nnU-Net's ``nnUNetTrainer`` with the loss taken from a :class:`LossConfig`.

Everything else — planning, patch sampling, augmentation, deep supervision targets, checkpoints,
``--c``, ``--val``, inference — is nnU-Net's own. The class attribute ``loss_config`` is the only
difference between trainers; nnU-Net's constructor signature is kept exactly, because nnU-Net
rebuilds trainers from their name and its five standard arguments.
"""

from __future__ import annotations

import json
import os
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import Tensor, nn

from nnunet_dicephi import losses as L

from .naming import HEURISTIC, LossConfig, trainer_name

CONFIG_FILE = "dicephi_loss.json"


class DeepSupervisedLoss(nn.Module):
    """Weighted sum of one loss module per deep-supervision output, each with its own ε.

    nnU-Net's ``DeepSupervisionWrapper`` applies one module to every output; a count-valued ε must
    instead shrink with each output's voxel count, so every level here has its own module.
    """

    def __init__(self, levels: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        if len(levels) != len(weights) or not any(w != 0 for w in weights):
            raise ValueError("one loss per level and at least one non-zero weight are needed")
        self.levels = nn.ModuleList(levels)
        self.weights = tuple(float(w) for w in weights)

    def forward(self, outputs, targets, annotated: Tensor | None = None) -> Tensor:
        if not isinstance(outputs, (list, tuple)):
            return self.levels[0](outputs, targets, annotated)
        total = None
        for weight, loss, output, target in zip(self.weights, self.levels, outputs, targets):
            if weight == 0.0:
                continue
            value = weight * loss(output, target, annotated)
            total = value if total is None else total + value
        return total


def build_level_loss(
    config: LossConfig, *, eps_nr, eps_dr, has_regions: bool, ignore_label: int | None, mime: tuple | None = None
) -> nn.Module:
    """The loss module for one output, from the configuration and that output's ε."""
    common = {
        "nonlinearity": "sigmoid" if has_regions else "softmax",
        "include_background": True if has_regions else config.include_background,
        "ignore_label": ignore_label,
    }
    overlap = {"phi": config.phi, "eps_nr": eps_nr, "eps_dr": eps_dr, **common}
    if config.loss == "Dice":
        region = L.DiceLoss(**overlap)
    elif config.loss == "VNetDice":
        region = L.VNetDiceLoss(**overlap)
    elif config.loss == "LeafDice":
        region = L.LeafDiceLoss(**overlap)
    elif config.loss == "MarginalDice":
        region = L.MarginalDiceLoss(**overlap)
    elif config.loss == "GDL":
        region = L.GeneralizedDiceLoss(**overlap)
    elif config.loss == "Jaccard":
        region = L.JaccardLoss(**overlap)
    elif config.loss == "Tversky":
        region = L.TverskyLoss(alpha=config.alpha, beta=config.beta, **overlap)
    elif config.loss == "Lovasz":
        region = L.LovaszSoftmaxLoss(**common)
    elif config.loss == "Mime":
        if mime is None:
            raise ValueError("the Mime loss needs its constants a, b from the dataset statistics")
        region = L.MimeLoss(a=mime[0], b=mime[1], **common)
    else:  # LossConfig validates the name; this is unreachable
        raise AssertionError(config.loss)
    return L.DiceCELoss(region) if config.ce else region


class DicePhiTrainer(nnUNetTrainer):
    """Base of every trainer of this project; subclasses only set ``loss_config``."""

    loss_config: ClassVar[LossConfig] = LossConfig()

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own signature
    ) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        config = self.loss_config
        if config.epochs is not None:
            self.num_epochs = config.epochs
        if config.iterations is not None:
            self.num_iterations_per_epoch = config.iterations
            self.num_val_iterations_per_epoch = max(1, config.iterations // 5)

    # --- loss --------------------------------------------------------------------------------

    def _level_scales(self) -> list[float]:
        """Voxel-count ratio of each deep-supervision output to the full-resolution patch."""
        if not self.enable_deep_supervision:
            return [1.0]
        return [float(np.prod(scale)) for scale in self._get_deep_supervision_scales()]

    def _eps_full_resolution(self) -> tuple:
        config = self.loss_config
        if config.uses_heuristic_eps:
            raise NotImplementedError(
                f"{trainer_name(config)} uses the heuristic ε, which needs the dataset statistics pass; "
                "use a numeric ε (e.g. _eps1e3) with this version"
            )
        return config.eps_nr, config.eps_dr

    def _build_loss(self) -> nn.Module:
        config = self.loss_config
        eps_nr, eps_dr = self._eps_full_resolution()
        lm = self.label_manager
        ignore = lm.ignore_label if lm.ignore_label is not None else None
        levels = [
            build_level_loss(
                config,
                eps_nr=_scaled(eps_nr, scale),
                eps_dr=_scaled(eps_dr, scale),
                has_regions=lm.has_regions,
                ignore_label=ignore,
            )
            for scale in self._level_scales()
        ]
        weights = np.array([1 / (2**i) for i in range(len(levels))])
        if len(levels) > 1:
            # nnU-Net's choice: the lowest output gets no weight (a tiny one under DDP without
            # compile, so every parameter still receives a gradient)
            weights[-1] = 1e-6 if self.is_ddp and not self._do_i_compile() else 0.0
        weights = weights / weights.sum()
        return DeepSupervisedLoss(levels, weights.tolist())

    # --- recording the configuration ----------------------------------------------------------

    def on_train_start(self) -> None:
        super().on_train_start()
        record = self.loss_config.to_dict()
        record["eps_per_level"] = (
            [
                {
                    "scale": scale,
                    "eps_nr": _jsonable(_scaled(self.loss_config.eps_nr, scale)),
                    "eps_dr": _jsonable(_scaled(self.loss_config.eps_dr, scale)),
                }
                for scale in self._level_scales()
            ]
            if not self.loss_config.uses_heuristic_eps
            else None
        )
        self.print_to_log_file("nnunet-dicephi loss configuration: " + json.dumps(record, sort_keys=True))
        if self.local_rank == 0:
            _write_json_atomically(os.path.join(self.output_folder, CONFIG_FILE), record)


def _scaled(eps, scale: float):
    if eps == HEURISTIC:
        return eps
    return float(eps) * scale


def _jsonable(value):
    return value.tolist() if isinstance(value, Tensor) else value


def _write_json_atomically(path: str, payload: dict) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)
