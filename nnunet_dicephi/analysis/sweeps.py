"""ε sweeps: log-spaced ε around v̂, their trainer names and shell recipe, and scenarios from data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from nnunet_dicephi._nnunet_names import SEPARATOR, results_folder_name
from nnunet_dicephi.loss_config import DEFAULT_EPS

from .eq4 import StepGradients, batch_gradients, maps_per_subset

TINY_EPS = DEFAULT_EPS
REPORT_COMMAND = "nnunet-dicephi report {folders} --folds {folds} -o eps_sweep_report"
"""How the sweep's runs are compared: ``nnunet-dicephi report`` over the trainers' results folders."""


def _results_folder(dataset: str) -> str:
    """The dataset's folder under ``$nnUNet_results`` as a shell word (a glob when given by id)."""
    name = f"Dataset{int(dataset):03d}_*" if dataset.isdigit() else dataset
    return f'"$nnUNet_results"/{name}'


class SweepEntry(NamedTuple):
    """One run of the ε sweep."""

    eps: float | str
    """ε_nr = ε_dr in voxels, or ``"H"`` for the heuristic."""
    trainer: str
    """Its canonical trainer name."""


def _one_digit(x: float) -> float:
    """Round to one significant digit, so that the trainer name stays short (3e3, not 2983)."""
    return float(f"{x:.0e}")


_DECADE_STEPS = {1: (1.0,), 2: (1.0, 3.0), 3: (1.0, 2.0, 5.0)}


def sweep_eps(v_hat: float, *, per_decade: int = 1, low: float = TINY_EPS, high_factor: float = 10.0) -> list[float]:
    """Log-spaced ε from ``low`` (the paper's 1e-7), then 1 voxel … through v̂ … to ``high_factor``·v̂.

    Between ``low`` and one voxel the push on an empty map stays ≈ ε/F², negligible for any
    predicted volume F of a voxel or more, so the decades below one voxel are skipped. Values have
    one significant digit (steps 1, 3 for two per decade; 1, 2, 5 for three).
    """
    if not v_hat > 0:
        raise ValueError(f"the heuristic ε must be > 0 to place a sweep; got {v_hat}")
    if per_decade < 1:
        raise ValueError(f"per_decade must be >= 1; got {per_decade}")
    steps = _DECADE_STEPS.get(per_decade) or tuple(
        sorted({_one_digit(10 ** (k / per_decade)) for k in range(per_decade)})
    )
    high = high_factor * v_hat
    values = [low]
    decade = 0
    while True:
        for step in steps:
            value = _one_digit(step * 10.0**decade)
            if value > low and value not in values:
                values.append(value)
            if value >= high:
                return values
        decade += 1


def sweep_names(
    v_hat: float,
    *,
    per_decade: int = 1,
    epochs: int | None = None,
    high_factor: float = 10.0,
) -> list[SweepEntry]:
    """Trainer names of the Φ = I ε sweep, the heuristic (``TrainerDiceIEps``) placed at v̂.

    Every name is checked to parse back to its configuration with the project's name grammar and
    to be safe for nnU-Net (no ``.``, no ``__``). Imports the trainer package (and with it nnU-Net).
    """
    from nnunet_dicephi.loss_config import HEURISTIC, LossConfig, parse_trainer_name, trainer_name

    numbers = sweep_eps(v_hat, per_decade=per_decade, high_factor=high_factor)
    ordered: list[tuple[float, float | str]] = [(e, e) for e in numbers] + [(v_hat, HEURISTIC)]
    ordered.sort(key=lambda pair: (pair[0], isinstance(pair[1], str)))
    entries = []
    for _, eps in ordered:
        config = LossConfig(loss="Dice", phi="I", eps_nr=eps, eps_dr=eps, epochs=epochs)
        name = trainer_name(config)
        if parse_trainer_name(name) != config or "." in name or SEPARATOR in name:
            raise AssertionError(f"sweep name {name!r} does not round-trip")  # a bug in the grammar
        entries.append(SweepEntry(eps, name))
    return entries


def sweep_recipe(
    entries: Sequence[SweepEntry],
    *,
    v_hat: dict[str, float],
    dataset: str = "DATASET",
    configuration: str = "CONFIGURATION",
    folds: Sequence[str] = ("0", "1", "2", "3", "4"),
    plans: str = "nnUNetPlans",
    reference: Sequence[str] = ("TrainerDiceBI",),
) -> str:
    """The sweep as text: ε and trainer names, the ``nnUNetv2_train`` command lines, the report command."""
    plans_option = "" if plans == "nnUNetPlans" else f" -p {plans}"
    width = max(len(e.trainer) for e in entries)
    lines = [
        "# ε sweep for Φ = I, from ignoring empty maps (ε = 1e-7) to learning them (ε ≳ v̂)",
        "# v̂ (heuristic ε, voxels): " + ", ".join(f"{k} = {v:.6g}" for k, v in v_hat.items()),
        "#",
        f"# {'trainer':<{width}}  ε_nr = ε_dr",
    ]
    for entry in entries:
        eps = "H (v̂ of each class)" if isinstance(entry.eps, str) else f"{entry.eps:g}"
        lines.append(f"# {entry.trainer:<{width}}  {eps}")
    for name in reference:
        lines.append(f"# {name:<{width}}  reference: Φ = BI learns empty maps with B > 1")
    trainers = [e.trainer for e in entries] + list(reference)
    lines.append("")
    for name in trainers:
        for fold in folds:
            lines.append(f"nnUNetv2_train {dataset} {configuration} {fold} -tr {name}{plans_option}")
    lines += [
        "",
        REPORT_COMMAND.format(
            folders=" \\\n    ".join(
                f"{_results_folder(dataset)}/{results_folder_name(t, plans, configuration)}" for t in trainers
            ),
            folds=" ".join(folds),
        ),
        "",
    ]
    return "\n".join(lines)


def sweep_spec(
    entries: Sequence[SweepEntry],
    *,
    dataset: str,
    configuration: str,
    folds: Sequence[str],
    plans: str = "nnUNetPlans",
    batch_sizes: Sequence[int] = (1, 2, 4),
    epochs: int | None = None,
) -> str:
    """The sweep as an experiment spec for ``nnunet-dicephi run`` / ``submit`` (TOML text).

    Φ = I over the sweep's ε and Φ = BI over ``batch_sizes`` (plans variants), one ``[[dataset]]``.
    nnU-Net's folders are left out (``run`` takes them from the environment); ``dataset`` is an id.
    """
    numbers = [e.eps for e in entries]
    eps = ", ".join(f'"{v}"' if isinstance(v, str) else f"{v:g}" for v in numbers)
    fold_values = ", ".join(f'"{f}"' if f == "all" else str(int(f)) for f in folds)
    training = f"\nepochs = {epochs}" if epochs else ""
    return f"""# The Φ × ε transition for Dataset {dataset}, written by `nnunet-dicephi gradients --sweep`.
#   nnunet-dicephi run sweep.toml --smoke   # check that it runs, with tiny trainings
#   nnunet-dicephi run sweep.toml           # on this machine; `submit` for SLURM (add [resources])
# nnUNet_raw, nnUNet_preprocessed and nnUNet_results come from the environment.

[experiment]
name = "sweep{dataset}"
output = "sweep{dataset}"

[environment]
device = "cuda"                 # or "cpu" (then set gpus = 0)

[resources]
gpus = 1                        # per job under SLURM; `run --gpus 0,1` gives each job one of these

[[dataset]]
id = {dataset}
configurations = ["{configuration}"]
folds = [{fold_values}]
plans = "{plans}"
trainers = []

[[dataset.sweep]]               # Φ = I over ε: from ignoring empty maps to learning them (H: v̂)
phi = "I"
eps = [{eps}]{training}

[[dataset.sweep]]               # Φ = BI over the batch size: B = 1 is Φ = I; B ≥ 2 learns empty maps
phi = "BI"
batch_sizes = [{", ".join(str(b) for b in batch_sizes)}]{training}
"""


# --- scenarios: given volumes or a dataset fold -------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    """One class (or one given volume): what the model needs beyond Φ, B and ε."""

    name: str
    volume: float
    """V: labelled voxels of a non-empty map."""
    v_hat: float
    """The heuristic ε, E[Σ y] over all maps including empty ones."""
    patch_voxels: int
    """N: voxels of one map."""

    @property
    def slug(self) -> str:
        """The name as a file-name part."""
        text = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in self.name.replace("=", ""))
        return "_".join(part for part in text.split("_") if part) or "class"

    def gradients(
        self, fp: float | np.ndarray, eps: _Eps, *, phi: str, batch_size: int, **step: float
    ) -> StepGradients:
        """Eq. 4 for this class at F = ``fp`` predicted on an empty map (:func:`~.eq4.batch_gradients`).

        The heuristic ε (``"H"``) is v̂ once per map of a subset, as the trainers add it; ``step``
        holds ``empty_fraction``, ``overlap`` and ``outside``.
        """
        eps_nr, eps_dr = (_subset_eps(value, self.v_hat, phi, batch_size) for value in (eps.nr, eps.dr))
        return batch_gradients(self.volume, fp, phi=phi, batch_size=batch_size, eps_nr=eps_nr, eps_dr=eps_dr, **step)


def scenarios_from_statistics(
    channels: Sequence[str],
    expected_volume: Sequence[float],
    patch_voxels: int,
    *,
    has_background: bool,
    empty_fraction: float,
) -> list[Scenario]:
    """One scenario per foreground channel of the project's dataset statistics.

    v̂ is the statistics' expected patch volume; V = v̂/(1 − f) keeps E[Σ y] = v̂ when a share f of
    the maps is empty (capped at the patch). Channel 0 is dropped when it is the background.
    """
    pairs = list(zip(channels, expected_volume))[1 if has_background else 0 :]
    return [
        Scenario(f"class {name}", min(v / (1.0 - empty_fraction), float(patch_voxels)), float(v), int(patch_voxels))
        for name, v in pairs
        if v > 0
    ]


@dataclass(frozen=True)
class _Eps:
    nr: float | str
    dr: float | str

    def label(self) -> str:
        return _eps_text(self.nr) if self.nr == self.dr else f"{_eps_text(self.nr)}:{_eps_text(self.dr)}"


def _eps_text(value: float | str) -> str:
    return value if isinstance(value, str) else f"{value:g}"


def _default_eps(v_hat: float) -> list[_Eps]:
    """1e-7 (ignore), v̂/100 (small), H = v̂ (the heuristic), 10·v̂ (large)."""
    return [_Eps(TINY_EPS, TINY_EPS), _Eps(_one_digit(v_hat / 100), _one_digit(v_hat / 100)), _Eps("H", "H")] + [
        _Eps(_one_digit(10 * v_hat), _one_digit(10 * v_hat))
    ]


def _subset_eps(value: float | str, v_hat: float, phi: str, batch_size: int) -> float:
    # the heuristic is a per-class ε in the trainers: added once per map of a subset
    return v_hat * maps_per_subset(phi, batch_size) if value == "H" else float(value)
