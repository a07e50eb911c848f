"""nnU-Net's folder identifiers, in one place and without importing nnU-Net.

A trainer's results live in ``nnUNet_results/<Dataset>/<Trainer>__<Plans>__<Configuration>``;
nnU-Net writes and reads that name with ``convert_trainer_plans_config_to_identifier`` and
``convert_identifier_to_trainer_plans_config`` (``nnunetv2.utilities.file_path_utilities``), and
these two functions are the same (tested against them), for modules that must stay light.
"""

from __future__ import annotations

from typing import NamedTuple

SEPARATOR = "__"
"""nnU-Net splits its folder names on this; trainer names never contain it."""


class ResultsFolder(NamedTuple):
    trainer: str
    plans: str
    configuration: str


def results_folder_name(trainer: str, plans: str, configuration: str) -> str:
    """``<Trainer>__<Plans>__<Configuration>``: the folder nnU-Net trains into."""
    return SEPARATOR.join((trainer, plans, configuration))


def parse_results_folder_name(name: str) -> ResultsFolder:
    """The trainer, plans and configuration of a results folder's name (its last path component)."""
    parts = name.rstrip("/").rsplit("/", 1)[-1].split(SEPARATOR)
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"{name!r} is not an nnU-Net results folder name <Trainer>__<Plans>__<Configuration>")
    return ResultsFolder(*parts)
