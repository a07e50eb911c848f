"""The experiment spec: a TOML file describing a grid of nnU-Net runs and where and how to run it.

A spec names datasets × configurations × trainers × folds, the SLURM resources of each stage and
the environment of the jobs. :func:`load_spec` reads and validates it as a whole: every problem
(unknown key, wrong type, bad time, fold out of range, trainer name that does not resolve, ...) is
collected with its key path into one :class:`SpecError`, so a spec is either refused before anything
is submitted or accepted completely. Relative paths are resolved against the spec file's folder.

Example (``examples/grid.toml`` is the documented version)::

    [experiment]
    name = "brats2021"
    output = "runs/brats2021"

    [environment]
    nnUNet_raw = "/data/nnUNet_raw"
    nnUNet_preprocessed = "/data/nnUNet_preprocessed"
    nnUNet_results = "/data/nnUNet_results"
    device = "cuda"
    modules = ["cuda/12.1"]
    venv = "/home/me/venvs/dicephi"

    [resources]
    partition = "gpu"
    gpus = 1
    cpus = 8
    mem_gb = 64
    time = "48:00:00"

    [[dataset]]
    id = 137
    configurations = ["3d_fullres"]
    trainers = ["TrainerDiceI", "TrainerDiceBI", "TrainerDiceIEps"]
    folds = [0, 1, 2, 3, 4]

This module imports neither torch, nnU-Net nor submitit.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nnunet_dicephi import loss_config

from ._toml import _CONTROL, TableReader, _join, _kind
from .experiment import (
    DEVICES,
    FOLDS,
    PATH_VARIABLES,
    STAGES,
    DatasetSpec,
    Environment,
    ExperimentSpec,
    ReportSpec,
    Resources,
    SpecError,
    StageResources,
    format_time,
    parse_time,
)
from .variants import variant_name

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "STAGES",
    "ExperimentSpec",
    "SpecError",
    "check_trainer",
    "format_time",
    "load_spec",
    "parse_spec",
    "parse_time",
]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CONFIGURATION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*")
_SBATCH_OPTION = re.compile(r"--(?P<key>[a-z][a-z0-9-]*)(=(?P<value>.*))?", re.S)
# options this tool sets itself: a spec that sets them through extra_sbatch would silently break
# the chaining (dependency), the logs the status reads (output, error) or the array (array)
_RESERVED_SBATCH = ("dependency", "array", "output", "error", "job-name", "open-mode", "signal", "wrap")


_RESOURCE_KEYS = (
    "partition",
    "account",
    "qos",
    "cpus",
    "gpus",
    "mem_gb",
    "time",
    "extra_sbatch",
    "signal_delay_s",
    "max_requeues",
    "array_parallelism",
)


def _resource_values(reader: TableReader, table: dict, path: str) -> dict:
    """The resource keys present in ``table``, converted; stage sub-tables are left to the caller."""
    out: dict[str, Any] = {}
    for key in ("partition", "account", "qos"):
        if key in table:
            value = reader.string(table, path, key, pattern=_NAME, what="a SLURM name (letters, digits, . _ -)")
            if value is not None:
                out[key] = value
    for key, low in (("cpus", 1), ("gpus", 0), ("signal_delay_s", 1), ("max_requeues", 0), ("array_parallelism", 1)):
        if key in table:
            value = reader.integer(table, path, key, None, low=low)
            if value is not None:
                out[key] = value
    if "mem_gb" in table:
        value = table["mem_gb"]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            reader.add(_join(path, "mem_gb"), f"expected a positive number of GB, got {_kind(value)}")
        else:
            out["mem_gb"] = float(value)
    if "time" in table:
        try:
            out["time_min"] = parse_time(table["time"])
        except ValueError as error:
            reader.add(_join(path, "time"), str(error))
    if "extra_sbatch" in table:
        options = []
        for i, text in enumerate(reader.strings(table, path, "extra_sbatch")):
            match = _SBATCH_OPTION.fullmatch(text)
            item = f"{_join(path, 'extra_sbatch')}[{i}]"
            if match is None:
                reader.add(item, f"{text!r} is not a long sbatch option such as '--constraint=a100' or '--exclusive'")
            elif match["key"] in _RESERVED_SBATCH:
                reader.add(item, f"--{match['key']} is set by nnunet-dicephi itself and cannot be overridden")
            else:
                options.append((match["key"], True if match["value"] is None else match["value"]))
        out["extra_sbatch"] = tuple(options)
    return out


def _read_resources(reader: TableReader, data: Any) -> StageResources:
    table = reader.table(data, "resources", _RESOURCE_KEYS + STAGES)
    common = _resource_values(reader, table, "resources")
    stages = {}
    for stage in STAGES:
        own = {}
        if stage in table:
            sub = reader.table(table[stage], f"resources.{stage}", _RESOURCE_KEYS)
            own = _resource_values(reader, sub, f"resources.{stage}")
        values = dict(common)
        if stage in ("preprocess", "report") and "gpus" not in own:
            values["gpus"] = 0  # nnU-Net's planning and the report never use a GPU
        values.update(own)
        stages[stage] = Resources(**values)
    return StageResources(**stages)


def _read_environment(
    reader: TableReader, data: Any, environ: Mapping[str, str], default_device: str
) -> Environment | None:
    allowed = (*PATH_VARIABLES, "device", "venv", "modules", "setup", "variables")
    table = reader.table(data, "environment", allowed)
    paths = {}
    for key in PATH_VARIABLES:
        if key in table:
            paths[key] = reader.path(table, "environment", key)
        elif environ.get(key):
            paths[key] = Path(environ[key]).expanduser().resolve()
        else:
            reader.add(f"environment.{key}", "missing: set it here or export it before submitting")
            paths[key] = None
    device = reader.string(table, "environment", "device") or default_device
    if device not in DEVICES:
        reader.add("environment.device", f"must be one of {', '.join(DEVICES)}; got {device!r}")
    venv = reader.path(table, "environment", "venv")
    modules = reader.strings(
        table, "environment", "modules", pattern=re.compile(r"[^\s]+"), what="a module name without spaces"
    )
    setup = reader.strings(table, "environment", "setup")
    variables = []
    if "variables" in table:
        values = table["variables"]
        if not isinstance(values, dict):
            reader.add("environment.variables", f"expected a table of NAME = value, got {_kind(values)}")
            values = {}
        for name, value in values.items():
            path = f"environment.variables.{name}"
            if not _IDENTIFIER.fullmatch(name):
                reader.add(path, "not a valid environment variable name")
            elif name in PATH_VARIABLES:
                reader.add(path, f"set {name} in [environment] itself")
            elif isinstance(value, bool) or not isinstance(value, (str, int, float)):
                reader.add(path, f"expected a string or number, got {_kind(value)}")
            elif isinstance(value, str) and _CONTROL.search(value):
                reader.add(path, "must not contain control characters (newline, tab, NUL, ...)")
            else:
                variables.append((name, str(value)))
    if any(p is None for p in paths.values()):
        return None
    return Environment(
        nnunet_raw=paths["nnUNet_raw"],
        nnunet_preprocessed=paths["nnUNet_preprocessed"],
        nnunet_results=paths["nnUNet_results"],
        device=device,
        venv=venv,
        modules=modules,
        setup=setup,
        variables=tuple(variables),
    )


def check_trainer(name: str) -> str | None:
    """None when nnU-Net will find ``name``, else why not (with the closest valid name).

    This project's names are checked with its grammar (no import of torch or nnU-Net); nnU-Net's
    own trainers (``nnUNetTrainer...``, for baselines) with nnU-Net's lookup.
    """
    if name.startswith("nnUNetTrainer"):
        if not re.fullmatch(r"nnUNetTrainer[A-Za-z0-9_]*", name):
            return f"{name!r} is not a class name"
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its search on stdout
            found = _nnunet_finds(name)
        return None if found else f"nnU-Net has no trainer {name!r}"
    try:
        loss_config.parse_trainer_name(name)
    except loss_config.TrainerNameError as error:
        # the naming module explains with its whole grammar; one line per problem here, the
        # grammar once at the end of the error (see parse_spec)
        first, closest = str(error).splitlines()[:2]
        return f"{first} {closest}"
    return None


def _nnunet_finds(name: str) -> bool:
    """Whether nnU-Net's lookup finds the trainer ``name``: its own function from 2.8, its search before."""
    try:
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    except ImportError:  # before 2.8: nnU-Net's own trainer package only, searched as get_trainer_from_args does
        import nnunetv2
        from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

        folder = os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")
        return recursive_find_python_class(folder, name, "nnunetv2.training.nnUNetTrainer") is not None
    try:
        recursive_find_trainer_class_by_name(name)
    except RuntimeError:
        return False
    return True


def _read_dataset(reader: TableReader, data: Any, path: str) -> DatasetSpec | None:
    allowed = (
        "id",
        "configurations",
        "trainers",
        "folds",
        "plans",
        "planner",
        "preprocess",
        "test_images",
        "test_labels",
        "toy",
        "toy_seed",
        "base_features",
        "sweep",
    )
    table = reader.table(data, path, allowed)
    if not table and not isinstance(data, dict):
        return None
    before = len(reader.problems)
    if "id" not in table:
        reader.add(f"{path}.id", "missing (required)")
    dataset_id = reader.integer(table, path, "id", None, low=1, high=999)
    configurations = reader.strings(
        table, path, "configurations", required=True, pattern=_CONFIGURATION, what="a configuration name"
    )
    for i, configuration in enumerate(configurations):
        if configuration == "3d_cascade_fullres":
            reader.add(
                f"{path}.configurations[{i}]",
                "the cascade needs 3d_lowres predictions of every fold first; run it with nnU-Net's own tools",
            )
    trainers = reader.strings(table, path, "trainers", required="sweep" not in table)
    for i, trainer in enumerate(trainers):
        problem = check_trainer(trainer)
        if problem is not None:
            reader.add(f"{path}.trainers[{i}]", problem)
    folds = _read_folds(reader, table, path)
    plans = reader.string(table, path, "plans", pattern=_NAME, what="a plans identifier") or "nnUNetPlans"
    planner = reader.string(table, path, "planner", pattern=_IDENTIFIER, what="a planner class name")
    preprocess = reader.boolean(table, path, "preprocess", True)
    test_images = reader.path(table, path, "test_images")
    test_labels = reader.path(table, path, "test_labels")
    if test_labels is not None and test_images is None:
        reader.add(f"{path}.test_labels", "needs test_images")
    toy = _read_toy(reader, table, path)
    toy_seed = reader.integer(table, path, "toy_seed", 0, low=0)
    base_features = reader.integer(table, path, "base_features", None, low=1)
    trained_plans = variant_name(plans, base_features=base_features)
    sweep_runs = _read_sweeps(reader, table.get("sweep"), f"{path}.sweep", trained_plans) if "sweep" in table else ()
    if not trainers and not sweep_runs and "sweep" in table and len(reader.problems) == before:
        reader.add(f"{path}.sweep", "expands to no trainer")
    if len(reader.problems) > before:
        return None
    return DatasetSpec(
        id=dataset_id,
        configurations=configurations,
        trainers=trainers,
        folds=folds,
        plans=plans,
        planner=planner,
        preprocess=preprocess,
        test_images=test_images,
        test_labels=test_labels,
        sweep_runs=sweep_runs,
        toy=toy,
        toy_seed=toy_seed,
        base_features=base_features,
    )


def _read_toy(reader: TableReader, table: dict, path: str) -> str | None:
    toy = reader.string(table, path, "toy")
    if toy is None:
        return None
    from nnunet_dicephi.toys import scenario_named

    try:
        return scenario_named(toy).name
    except ValueError as error:
        reader.add(f"{path}.toy", str(error))
        return None


_SWEEP_KEYS = ("loss", "phi", "eps", "batch_sizes", "seeds", "epochs", "iterations", "lr")


def _sweep_values(reader: TableReader, table: dict, path: str, key: str, check) -> list:
    """A sweep key as a list (a single value is a list of one); ``check(value)`` → problem or None."""
    if key not in table:
        return []
    values = table[key] if isinstance(table[key], list) else [table[key]]
    if not values:
        reader.add(_join(path, key), "must not be empty")
    out = []
    for i, value in enumerate(values):
        problem = check(value)
        if problem:
            reader.add(f"{_join(path, key)}[{i}]", problem)
        elif value in out:
            reader.add(f"{_join(path, key)}[{i}]", f"{value!r} is listed twice")
        else:
            out.append(value)
    return out


def _check_eps(value: Any) -> str | None:
    if value == loss_config.HEURISTIC or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    ):
        return None
    return f'an ε is a number of voxels >= 0 or "H" (the heuristic); got {_kind(value)}'


def _check_count(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    return f"expected a positive integer, got {_kind(value)}"


def _check_seed(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    return f"expected an integer >= 0, got {_kind(value)}"


def _sweep_lr(reader: TableReader, table: dict, path: str) -> float | None:
    value = table.get("lr")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 10:
        reader.add(_join(path, "lr"), f"expected a learning rate between 0 and 10, got {_kind(value)}")
        return None
    return float(value)


def _read_sweeps(reader: TableReader, data: Any, path: str, plans: str) -> tuple[tuple[str, str], ...]:
    """``[[dataset.sweep]]`` tables → (trainer, plans) pairs: loss × Φ × ε × seed, × batch size.

    ``phi`` and ``eps`` list the values swept (a single value is a list of one; left out: the loss's
    default Φ, ε = 1e-7). ``batch_sizes`` trains each name with the plans variant
    ``<plans>_bs<B>`` (:mod:`.variants`); left out, the plans' own batch size. ``seeds`` adds the
    trainers' ``seed<K>`` option; ``epochs``, ``iterations`` and ``lr`` (single values) the
    ``ep``, ``it`` and ``lr`` options of every name of the table.
    """
    import dataclasses

    tables = data if isinstance(data, list) else [data]
    runs: list[tuple[str, str]] = []
    for index, item in enumerate(tables):
        where = f"{path}[{index}]"
        table = reader.table(item, where, _SWEEP_KEYS)
        if not table:
            continue
        loss = reader.string(table, where, "loss") or "Dice"
        if loss not in loss_config.REGISTRY:
            reader.add(f"{where}.loss", f"unknown loss {loss!r}; losses: {', '.join(loss_config.REGISTRY)}")
            continue
        phis = _sweep_values(
            reader,
            table,
            where,
            "phi",
            lambda v: None if v in loss_config.PHIS else f"Φ is one of {', '.join(loss_config.PHIS)}; got {_kind(v)}",
        )
        eps_values = _sweep_values(reader, table, where, "eps", _check_eps)
        batch_sizes = _sweep_values(reader, table, where, "batch_sizes", _check_count)
        seeds = _sweep_values(reader, table, where, "seeds", _check_seed)
        training = {
            "epochs": reader.integer(table, where, "epochs", None, low=1),
            "iterations": reader.integer(table, where, "iterations", None, low=1),
            "lr": _sweep_lr(reader, table, where),
        }
        default_phi = loss_config.REGISTRY[loss].default_phi
        if eps_values and not loss_config.REGISTRY[loss].takes_eps:
            reader.add(f"{where}.eps", f"{loss} takes no ε; sweep phi, batch_sizes or seeds instead")
            continue
        if phis and default_phi is None:
            reader.add(f"{where}.phi", f"{loss} takes no Φ")
            continue
        base = loss_config.LossConfig(loss=loss, phi=default_phi, **training)
        for phi in phis or [default_phi]:
            for eps in eps_values or [loss_config.DEFAULT_EPS]:
                for seed in seeds or [None]:
                    try:
                        config = dataclasses.replace(base, phi=phi, eps_nr=eps, eps_dr=eps, seed=seed)
                    except ValueError as error:
                        reader.add(where, f"{loss}, Φ = {phi}, ε = {eps}: {error}")
                        continue
                    name = loss_config.trainer_name(config)
                    variants = [f"{plans}_bs{b}" for b in batch_sizes] or [plans]
                    runs.extend((name, variant) for variant in variants)
    return tuple(dict.fromkeys(runs))


def _read_folds(reader: TableReader, table: dict, path: str) -> tuple[int | str, ...]:
    if "folds" not in table:
        return FOLDS
    value = table["folds"]
    if value == "all":
        return ("all",)
    if not isinstance(value, list) or not value:
        reader.add(f"{path}.folds", f'expected a list such as [0, 1, 2, 3, 4] or "all", got {_kind(value)}')
        return FOLDS
    folds: list[int | str] = []
    for i, fold in enumerate(value):
        if fold == "all" or (isinstance(fold, int) and not isinstance(fold, bool) and fold in FOLDS):
            if fold in folds:
                reader.add(f"{path}.folds[{i}]", f"fold {fold!r} is listed twice")
            folds.append(fold)
        else:
            reader.add(f"{path}.folds[{i}]", f'a fold is 0, 1, 2, 3, 4 or "all"; got {_kind(fold)}')
    return tuple(dict.fromkeys(folds))


def parse_spec(
    data: Mapping[str, Any],
    base: str | os.PathLike = ".",
    *,
    environ: Mapping[str, str] | None = None,
    source: str | os.PathLike | None = None,
    default_device: str = "cuda",
) -> ExperimentSpec:
    """Validate a spec already read from TOML; relative paths are resolved against ``base``.

    Args:
        data: the TOML document as a dict.
        base: folder that relative paths are relative to (the spec file's folder).
        environ: where nnU-Net's folder variables come from when the spec does not set them
            (default: ``os.environ``).
        source: the spec file, for messages.
        default_device: the device where ``[environment]`` names none: ``cuda`` for SLURM's GPU
            nodes (``submit``), this machine's own for ``run``
            (:func:`~nnunet_dicephi.cluster.experiment.this_machines_device`).

    Returns:
        The validated spec.

    Raises:
        SpecError: naming every problem with its key path.
    """
    environ = os.environ if environ is None else environ
    reader = TableReader(Path(base).resolve())
    top = reader.table(data, "", ("experiment", "environment", "resources", "dataset", "report"))
    for section in ("experiment", "environment", "dataset"):
        if section not in top:
            reader.add(section, f"missing section [{section}]" if section != "dataset" else "missing [[dataset]]")
    experiment = reader.table(top.get("experiment", {}), "experiment", ("name", "output"))
    name = reader.string(
        experiment,
        "experiment",
        "name",
        required="experiment" in top,
        pattern=_NAME,
        what="a name (letters, digits, . _ -)",
    )
    output = reader.path(experiment, "experiment", "output", default=f"runs/{name or 'experiment'}")
    environment = _read_environment(reader, top.get("environment", {}), environ, default_device)
    resources = _read_resources(reader, top.get("resources", {}))
    datasets = []
    raw = top.get("dataset", [])
    if isinstance(raw, dict):
        raw = [raw]  # [dataset] written for [[dataset]]
    if not isinstance(raw, list):
        reader.add("dataset", f"expected [[dataset]] tables, got {_kind(raw)}")
        raw = []
    for i, item in enumerate(raw):
        dataset = _read_dataset(reader, item, f"dataset[{i}]")
        if dataset is not None:
            datasets.append(dataset)
    ids = [d.id for d in datasets]
    for i, dataset_id in enumerate(ids):
        if dataset_id in ids[:i]:
            reader.add(f"dataset[{i}].id", f"dataset {dataset_id} appears twice; list all its runs in one [[dataset]]")
    report = None
    if "report" in top:
        table = reader.table(top["report"], "report", ("output", "enabled", "n_resamples"))
        report = ReportSpec(
            output=reader.path(table, "report", "output", default=str((output or Path(".")) / "report")),
            enabled=reader.boolean(table, "report", "enabled", True),
            n_resamples=reader.integer(table, "report", "n_resamples", 10000, low=1),
        )
    if environment is not None and resources.train.gpus == 0 and environment.device == "cuda":
        reader.add("resources.train.gpus", 'device is "cuda" but training asks for no GPU; set gpus = 1')
    if reader.problems:
        problems = list(reader.problems)
        if any("Closest valid name" in message for _, message in problems):
            problems.append(("", "Trainer names:\n" + loss_config.GRAMMAR))
        raise SpecError(problems, source)
    assert name is not None and output is not None and environment is not None
    return ExperimentSpec(
        name=name,
        output=output,
        environment=environment,
        datasets=tuple(datasets),
        resources=resources,
        report=report,
        source=Path(source).resolve() if source is not None else None,
    )


def load_spec(
    path: str | os.PathLike, *, environ: Mapping[str, str] | None = None, default_device: str = "cuda"
) -> ExperimentSpec:
    """Read and validate a TOML spec file (``default_device``: see :func:`parse_spec`).

    Raises:
        SpecError: the file is missing, is not TOML, or has problems (all of them are named).
    """
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise SpecError([("", f"no such file: {path}")], path) from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError([("", f"not valid TOML: {error}")], path) from None
    return parse_spec(data, path.resolve().parent, environ=environ, source=path, default_device=default_device)
