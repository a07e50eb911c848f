"""What an experiment spec describes, once validated: the grid, its resources, its environment.

:func:`~nnunet_dicephi.cluster.spec.load_spec` builds these from a TOML file; the jobs, the SLURM
submission, the local runner and the status read them. Nothing here reads files.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnunet_dicephi._problems import InputError

from .variants import parse_variant, variant_name

STAGES = ("preprocess", "train", "predict", "report")
DEVICES = ("cuda", "cpu", "mps")
FOLDS = (0, 1, 2, 3, 4)
PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")


class SpecError(InputError):
    """The spec cannot be used; ``problems`` lists ``(key path, message)`` for every problem found."""

    def __init__(self, problems: list[tuple[str, str]], source: str | os.PathLike | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source is not None else ""
        lines = [f"{where}{len(self.problems)} problem(s) in the experiment spec; nothing was started:"]
        lines += [f"  {path}: {message}" if path else f"  {message}" for path, message in self.problems]
        super().__init__("\n".join(lines))


def this_machines_device() -> str:
    """``cuda`` where torch sees a GPU, else ``cpu`` (imports torch; ``mps`` is named explicitly)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --- the spec -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Resources:
    """SLURM resources of one stage's jobs (one job, or each task of the training array)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    cpus: int = 1
    gpus: int = 0
    mem_gb: float | None = None
    time_min: int = 60
    extra_sbatch: tuple[tuple[str, str | bool], ...] = ()
    """Further ``#SBATCH`` options as ``(name, value)``; ``True`` for a flag without value."""
    signal_delay_s: int = 120
    """SIGUSR2 this many seconds before the time limit: the job stops, is requeued and resumes."""
    max_requeues: int = 3
    """How often a job may be requeued after its time limit (submitit's ``max_num_timeout``)."""
    array_parallelism: int | None = None
    """At most this many tasks of the training array run at once (``--array=...%N``)."""


@dataclass(frozen=True)
class StageResources:
    """Resources per stage, after merging ``[resources]`` with ``[resources.<stage>]``."""

    preprocess: Resources = field(default_factory=lambda: Resources(gpus=0))
    train: Resources = field(default_factory=Resources)
    predict: Resources = field(default_factory=Resources)
    report: Resources = field(default_factory=lambda: Resources(gpus=0))

    def of(self, stage: str) -> Resources:
        return getattr(self, stage)


@dataclass(frozen=True)
class Environment:
    """What every job gets: nnU-Net's folders, device, modules, virtual environment, variables."""

    nnunet_raw: Path
    nnunet_preprocessed: Path
    nnunet_results: Path
    device: str = "cuda"
    venv: Path | None = None
    modules: tuple[str, ...] = ()
    setup: tuple[str, ...] = ()
    """Shell lines run verbatim before each job (trusted input, like the rest of a job script)."""
    variables: tuple[tuple[str, str], ...] = ()

    def paths(self) -> dict[str, str]:
        """nnU-Net's three folder variables."""
        return {
            "nnUNet_raw": str(self.nnunet_raw),
            "nnUNet_preprocessed": str(self.nnunet_preprocessed),
            "nnUNet_results": str(self.nnunet_results),
        }


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset's part of the grid: configurations × runs (trainer, plans) × folds."""

    id: int
    configurations: tuple[str, ...]
    trainers: tuple[str, ...]
    """Trainers run with :attr:`plans`."""
    folds: tuple[int | str, ...] = FOLDS
    plans: str = "nnUNetPlans"
    planner: str | None = None
    preprocess: bool = True
    """Run ``nnUNetv2_plan_and_preprocess`` (skipped when already done); False: it must exist."""
    test_images: Path | None = None
    test_labels: Path | None = None
    sweep_runs: tuple[tuple[str, str], ...] = ()
    """(trainer, plans) pairs that the spec's sweeps add; plans may be a variant (:mod:`.variants`)."""
    toy: str | None = None
    """A toy scenario (:mod:`nnunet_dicephi.toys`) that ``run`` writes when the dataset is missing."""
    toy_seed: int = 0
    base_features: int | None = None
    """Train a narrower network: the plans variant ``<plans>_f<F>``, F features in the first stage."""

    @property
    def trained_plans(self) -> str:
        """The plans the listed trainers train with: :attr:`plans`, or its narrower variant."""
        return variant_name(self.plans, base_features=self.base_features)

    @property
    def runs(self) -> tuple[tuple[str, str], ...]:
        """Every (trainer, plans) pair of this dataset, the listed trainers first, each once."""
        return tuple(dict.fromkeys([*((t, self.trained_plans) for t in self.trainers), *self.sweep_runs]))

    @property
    def plans_identifiers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(plans for _, plans in self.runs))

    @property
    def plans_variants(self) -> tuple[str, ...]:
        """The variants of :attr:`plans` that the runs use, to be written after preprocessing."""
        return tuple(p for p in self.plans_identifiers if parse_variant(self.plans, p) is not None)


@dataclass(frozen=True)
class ReportSpec:
    """The last stage: ``nnunet-dicephi report`` over every trainer folder of the grid."""

    output: Path
    enabled: bool = True
    n_resamples: int = 10000


@dataclass(frozen=True)
class ExperimentSpec:
    """A validated experiment spec; build it with :func:`load_spec` or :func:`parse_spec`."""

    name: str
    output: Path
    environment: Environment
    datasets: tuple[DatasetSpec, ...]
    resources: StageResources = field(default_factory=StageResources)
    report: ReportSpec | None = None
    source: Path | None = None

    @property
    def state_file(self) -> Path:
        return self.output / "cluster_state.json"

    @property
    def report_spec(self) -> ReportSpec:
        return self.report if self.report is not None else ReportSpec(output=self.output / "report")


# --- SLURM times ----------------------------------------------------------------------------------


def parse_time(value: Any) -> int:
    """SLURM's time formats → whole minutes (rounded up).

    Accepts minutes as an integer, or ``"M"``, ``"M:S"``, ``"H:M:S"``, ``"D-H"``, ``"D-H:M"``,
    ``"D-H:M:S"``. Raises ValueError for anything else or a time that is not positive.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected minutes or a time such as '48:00:00'; got {value!r}")
    if isinstance(value, int):
        seconds = value * 60
    elif isinstance(value, str):
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a SLURM time: minutes, 'HH:MM:SS', 'D-HH:MM:SS', ...")
        days, a, b, c = match.groups()
        numbers = [int(x) for x in (a, b, c) if x is not None]
        if days is not None:  # D-H, D-H:M, D-H:M:S
            hours, minutes, secs = (numbers + [0, 0])[:3]
            seconds = ((int(days) * 24 + hours) * 60 + minutes) * 60 + secs
            parts = numbers[1:]
        elif len(numbers) == 1:  # M
            seconds, parts = numbers[0] * 60, []
        elif len(numbers) == 2:  # M:S
            seconds, parts = numbers[0] * 60 + numbers[1], numbers[1:]
        else:  # H:M:S
            seconds, parts = (numbers[0] * 60 + numbers[1]) * 60 + numbers[2], numbers[1:]
        if any(p >= 60 for p in parts):
            raise ValueError(f"{value!r}: minutes and seconds must be below 60")
    else:
        raise ValueError(f"expected minutes or a time such as '48:00:00'; got {type(value).__name__}")
    if seconds <= 0:
        raise ValueError(f"{value!r}: the time must be positive")
    return math.ceil(seconds / 60)


def format_time(minutes: int) -> str:
    """Minutes → ``D-HH:MM:00`` / ``HH:MM:00``, as SLURM prints times."""
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


# --- smoke runs -------------------------------------------------------------------------------------

SMOKE_EPOCHS, SMOKE_ITERATIONS = 1, 2


def smoke_variant(
    spec: ExperimentSpec, epochs: int = SMOKE_EPOCHS, iterations: int = SMOKE_ITERATIONS
) -> ExperimentSpec:
    """The same grid with tiny trainings, written apart: a check that a spec runs end to end.

    Every trainer name gets ``_ep<epochs>_it<iterations>`` (its own results folders, so a real run's
    folds are never touched), and the experiment's output (state, logs, markers, report) moves to
    ``<output>/smoke``. Trainer names outside the project's grammar cannot be shortened: InputError.
    """
    import dataclasses

    from nnunet_dicephi.loss_config import TrainerNameError, parse_trainer_name, trainer_name

    def shortened(name: str) -> str:
        try:
            config = parse_trainer_name(name)
        except TrainerNameError:
            raise InputError(
                f"--smoke shortens trainings through the trainer name; {name!r} is not a name of nnunet-dicephi's "
                "grammar (its epochs cannot be set from the name)"
            ) from None
        return trainer_name(dataclasses.replace(config, epochs=epochs, iterations=iterations))

    datasets = tuple(
        dataclasses.replace(
            d,
            trainers=tuple(dict.fromkeys(shortened(t) for t in d.trainers)),
            sweep_runs=tuple(dict.fromkeys((shortened(t), plans) for t, plans in d.sweep_runs)),
        )
        for d in spec.datasets
    )
    output = spec.output / "smoke"
    report = dataclasses.replace(spec.report_spec, output=output / "report")
    return dataclasses.replace(spec, name=f"{spec.name}-smoke", output=output, datasets=datasets, report=report)
