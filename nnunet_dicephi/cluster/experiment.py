"""The experiment spec's schema, declared once: each TOML table is a model, each key a field.

The models are the schema that :func:`.spec.load_spec` validates a TOML file against and the validated
spec that everything else reads. A value that is more than a type is checked by a small function that
raises ValueError in the project's words, or :class:`Problems` for several at once. Nothing here reads
files; validation needs the context ``{"base", "environ", "default_device"}``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from nnunet_dicephi import loss_config
from nnunet_dicephi._problems import InputError

from .variants import parse_variant, variant_name

STAGES = ("preprocess", "train", "predict", "report")
DEVICES = ("cuda", "cpu", "mps")
FOLDS = (0, 1, 2, 3, 4)
PATH_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SBATCH_OPTION = re.compile(r"--(?P<key>[a-z][a-z0-9-]*)(=(?P<value>.*))?", re.S)
# options this tool sets itself: a spec that sets them through extra_sbatch would silently break
# the chaining (dependency), the logs the status reads (output, error) or the array (array)
_RESERVED_SBATCH = ("dependency", "array", "output", "error", "job-name", "open-mode", "signal", "wrap")


class SpecError(InputError):
    """The spec cannot be used; ``problems`` lists ``(key path, message)`` for every problem found."""

    def __init__(self, problems: list[tuple[str, str]], source: str | os.PathLike | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f"{source}: " if source is not None else ""
        lines = [f"{where}{len(self.problems)} problem(s) in the experiment spec; nothing was started:"]
        lines += [f"  {path}: {message}" if path else f"  {message}" for path, message in self.problems]
        super().__init__("\n".join(lines))


class Problems(ValueError):
    """Several problems of one value, each at a key path below it (``(1,)``, ``("NAME",)``, ``()``)."""

    def __init__(self, *items: tuple[tuple[str | int, ...], str]) -> None:
        super().__init__("; ".join(message for _, message in items))
        self.items = items


def this_machines_device() -> str:
    """``cuda`` where torch sees a GPU, else ``cpu`` (imports torch; ``mps`` is named explicitly)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def parse_time(value: Any) -> int:
    """SLURM's time formats (minutes, ``M``, ``M:S``, ``H:M:S``, ``D-H``, ``D-H:M``, ``D-H:M:S``) → whole minutes."""
    if _whole(value):
        seconds = value * 60
    else:
        if not isinstance(value, str):
            raise ValueError(f"expected minutes or a time such as '48:00:00'; got {kind(value)}")
        match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a SLURM time: minutes, 'HH:MM:SS', 'D-HH:MM:SS', ...")
        days, *parts = match.groups()
        numbers = [int(x) for x in parts if x is not None]
        if any(n >= 60 for n in numbers[1:]):
            raise ValueError(f"{value!r}: minutes and seconds must be below 60")
        units = (3600, 60, 1) if days is not None or len(numbers) == 3 else (60, 1)  # H[:M[:S]] or M[:S]
        seconds = int(days or 0) * 86400 + sum(n * unit for n, unit in zip(numbers, units))
    if seconds <= 0:
        raise ValueError(f"{value!r}: the time must be positive")
    return math.ceil(seconds / 60)


def format_time(minutes: int) -> str:
    """Minutes → ``D-HH:MM:00`` / ``HH:MM:00``, as SLURM prints times."""
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


# --- values ---------------------------------------------------------------------------------------


def kind(value: Any) -> str:
    """A value as a message names it: ``a table``, ``str 'x'``, ``int 5``."""
    if isinstance(value, (bool, dict, list)):
        return {bool: "a boolean", dict: "a table", list: "a list"}[type(value)]
    return f"{type(value).__name__} {value!r}"


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _accept(test: Callable[[Any], bool], expected: str) -> Callable[[Any], Any]:
    """A check that passes the values ``test`` accepts and names any other in ``expected`` (at ``{}``)."""

    def check(value: Any) -> Any:
        if test(value):
            return value
        raise ValueError(expected.format(kind(value)))

    return check


def _text(value: Any, pattern: re.Pattern | None = None, what: str = "") -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {kind(value)}")
    if _CONTROL.search(value):
        raise ValueError("must not contain control characters (newline, tab, NUL, ...)")
    if pattern is not None and not pattern.fullmatch(value):
        raise ValueError(f"{value!r} is not {what}")
    return value


def _integer(low: int, high: int | None = None) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if not _whole(value):
            raise ValueError(f"expected an integer, got {kind(value)}")
        if value < low or (high is not None and value > high):
            raise ValueError(
                f"must be {f'at least {low}' if high is None else f'between {low} and {high}'}; got {value}"
            )
        return value

    return check


def _number(what: str, low: float, high: float = math.inf) -> Callable[[Any], float]:
    what = f"expected {what}, got {{}}"
    number = _accept(lambda v: not isinstance(v, bool) and isinstance(v, (int, float)) and low < v < high, what)
    return lambda value: float(number(value))


def _path(value: Any, info: ValidationInfo) -> Path:
    """A path; relative ones are relative to the spec file's folder."""
    if _text(value) == "":
        raise ValueError("must not be empty")
    return (Path(info.context["base"]) / os.path.expanduser(value)).resolve()


def _each(check: Callable[[Any], Any], single: type = str, required: bool = False) -> Callable[[Any], tuple]:
    """A list of distinct values, each checked by ``check``; a single ``single`` is a list of one."""

    def validate(value: Any) -> tuple:
        values = [value] if isinstance(value, single) and not isinstance(value, list) else value
        if not isinstance(values, list):
            raise ValueError(f"expected a list of strings, got {kind(value)}")
        out, problems = [], [((), "must not be empty")] if required and not values else []
        for i, item in enumerate(values):
            try:
                item = check(item)
            except ValueError as error:
                problems.append(((i,), str(error)))
                continue
            if item in out:
                problems.append(((i,), f"{item!r} is listed twice"))
            out.append(item)
        if problems:
            raise Problems(*problems)
        return tuple(out)

    return validate


def _tables(what: str) -> Callable[[Any], Any]:
    """``[[what]]`` tables; one ``[what]`` table is a list of one."""
    check = _accept(lambda v: isinstance(v, list), f"expected [[{what}]] tables, got {{}}")
    return lambda value: [value] if isinstance(value, dict) else check(value)


def _sbatch_option(value: Any) -> tuple[str, str | bool]:
    match = _SBATCH_OPTION.fullmatch(_text(value))
    if match is None:
        raise ValueError(f"{value!r} is not a long sbatch option such as '--constraint=a100' or '--exclusive'")
    if match["key"] in _RESERVED_SBATCH:
        raise ValueError(f"--{match['key']} is set by nnunet-dicephi itself and cannot be overridden")
    return match["key"], True if match["value"] is None else match["value"]


def _variables(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ValueError(f"expected a table of NAME = value, got {kind(value)}")
    problems = []
    for name, item in value.items():
        if not _IDENTIFIER.fullmatch(name):
            problems.append(((name,), "not a valid environment variable name"))
        elif name in PATH_VARIABLES:
            problems.append(((name,), f"set {name} in [environment] itself"))
        elif isinstance(item, bool) or not isinstance(item, (str, int, float)):
            problems.append(((name,), f"expected a string or number, got {kind(item)}"))
        elif isinstance(item, str) and _CONTROL.search(item):
            problems.append(((name,), "must not contain control characters (newline, tab, NUL, ...)"))
    if problems:
        raise Problems(*problems)
    return tuple((name, str(item)) for name, item in value.items())


def _device(value: Any) -> str:
    if _text(value) not in DEVICES:
        raise ValueError(f"must be one of {', '.join(DEVICES)}; got {value!r}")
    return value


def _configuration(value: Any) -> str:
    if _text(value, re.compile(r"[A-Za-z0-9][A-Za-z0-9_]*"), "a configuration name") == "3d_cascade_fullres":
        raise ValueError("the cascade needs 3d_lowres predictions of every fold first; run it with nnU-Net's own tools")
    return value


def _trainer(value: Any) -> str:
    problem = check_trainer(_text(value))
    if problem is not None:
        raise ValueError(problem)
    return value


def check_trainer(name: str) -> str | None:
    """None when nnU-Net will find ``name``, else why not: this project's grammar, or nnU-Net's lookup for its own."""
    if name.startswith("nnUNetTrainer"):
        if not re.fullmatch(r"nnUNetTrainer[A-Za-z0-9_]*", name):
            return f"{name!r} is not a class name"
        with contextlib.redirect_stdout(io.StringIO()):  # nnU-Net narrates its search on stdout
            found = _nnunet_finds(name)
        return None if found else f"nnU-Net has no trainer {name!r}"
    try:
        loss_config.parse_trainer_name(name)
    except loss_config.TrainerNameError as error:
        # one line per problem here, the whole grammar once at the end of the error (see parse_spec)
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


_fold = _accept(lambda v: v == "all" or (_whole(v) and v in FOLDS), 'a fold is 0, 1, 2, 3, 4 or "all"; got {}')


def _folds(value: Any) -> tuple[int | str, ...]:
    if value == "all":
        return ("all",)
    if not isinstance(value, list) or not value:
        raise ValueError(f'expected a list such as [0, 1, 2, 3, 4] or "all", got {kind(value)}')
    return _each(_fold)(value)


def _toy(value: Any) -> str:
    from nnunet_dicephi.toys import scenario_named

    return scenario_named(_text(value)).name


def _loss(value: Any) -> str:
    if _text(value) not in loss_config.REGISTRY:
        raise ValueError(f"unknown loss {value!r}; losses: {', '.join(loss_config.REGISTRY)}")
    return value


_phi = _accept(lambda v: v in loss_config.PHIS, f"Φ is one of {', '.join(loss_config.PHIS)}; got {{}}")
_eps = _accept(
    lambda v: v == loss_config.HEURISTIC or (isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0),
    'an ε is a number of voxels >= 0 or "H" (the heuristic); got {}',
)

SpecPath = Annotated[Path, PlainValidator(_path)]
SlurmName = Annotated[str, PlainValidator(lambda v: _text(v, _NAME, "a SLURM name (letters, digits, . _ -)"))]
Count = Annotated[int, PlainValidator(_integer(1))]
Count0 = Annotated[int, PlainValidator(_integer(0))]
Bool = Annotated[bool, PlainValidator(_accept(lambda v: isinstance(v, bool), "expected true or false, got {}"))]


def _values(check: Callable[[Any], Any]) -> Any:
    """A swept key: one value or a list of distinct ones."""
    return Annotated[tuple[Any, ...], PlainValidator(_each(check, single=object, required=True))]


# --- the tables -----------------------------------------------------------------------------------


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Experiment(_Table):
    """``[experiment]``."""

    name: Annotated[str, PlainValidator(lambda v: _text(v, _NAME, "a name (letters, digits, . _ -)"))]
    output: SpecPath | None = None

    @model_validator(mode="before")
    @classmethod
    def _default_output(cls, data: Any) -> Any:
        if isinstance(data, dict) and "output" not in data:
            return {**data, "output": f"runs/{data['name'] if isinstance(data.get('name'), str) else 'experiment'}"}
        return data


class Environment(_Table):
    """``[environment]``: what every job gets: nnU-Net's folders, device, modules, venv, variables."""

    nnunet_raw: SpecPath = Field(alias="nnUNet_raw")
    nnunet_preprocessed: SpecPath = Field(alias="nnUNet_preprocessed")
    nnunet_results: SpecPath = Field(alias="nnUNet_results")
    device: Annotated[str, PlainValidator(_device)] = "cuda"
    venv: SpecPath | None = None
    modules: Annotated[
        tuple[str, ...], PlainValidator(_each(lambda v: _text(v, re.compile(r"\S+"), "a module name without spaces")))
    ] = ()
    setup: Annotated[tuple[str, ...], PlainValidator(_each(_text))] = ()
    variables: Annotated[tuple[tuple[str, str], ...], PlainValidator(_variables)] = ()

    @model_validator(mode="before")
    @classmethod
    def _from_the_caller(cls, data: Any, info: ValidationInfo) -> Any:
        """nnU-Net's folders that the spec leaves out come from the environment; the device from the verb."""
        if not isinstance(data, dict):
            return data
        environ = info.context["environ"]
        found = {k: str(Path(environ[k]).expanduser().resolve()) for k in PATH_VARIABLES if environ.get(k)}
        return {"device": info.context["default_device"], **found, **data}

    def paths(self) -> dict[str, str]:
        """nnU-Net's three folder variables."""
        return {key: str(getattr(self, key.lower())) for key in PATH_VARIABLES}


class Resources(_Table):
    """SLURM resources of one stage's jobs (one job, or each task of the training array)."""

    partition: SlurmName | None = None
    account: SlurmName | None = None
    qos: SlurmName | None = None
    cpus: Count = 1
    gpus: Count0 = 0
    mem_gb: Annotated[float, PlainValidator(_number("a positive number of GB", 0))] | None = None
    time_min: Annotated[int, PlainValidator(parse_time)] = Field(60, alias="time")
    extra_sbatch: Annotated[tuple[tuple[str, str | bool], ...], PlainValidator(_each(_sbatch_option))] = ()
    """Further ``#SBATCH`` options as ``(name, value)``; ``True`` for a flag without value."""
    signal_delay_s: Count = 120
    max_requeues: Count0 = 3
    array_parallelism: Count | None = None


class StageResources(Resources):
    """``[resources]``, overridden per stage by ``[resources.<stage>]``; each stage's merge after validation."""

    preprocess: Resources = Field(default_factory=Resources)
    train: Resources = Field(default_factory=Resources)
    predict: Resources = Field(default_factory=Resources)
    report: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _merge(self) -> StageResources:
        common = {key: getattr(self, key) for key in self.model_fields_set if key not in STAGES}
        for stage in STAGES:
            own = getattr(self, stage)
            values = dict(common)
            if stage in ("preprocess", "report") and "gpus" not in own.model_fields_set:
                values["gpus"] = 0  # nnU-Net's planning and the report never use a GPU
            values.update({key: getattr(own, key) for key in own.model_fields_set})
            self.__dict__[stage] = Resources().model_copy(update=values)
        return self


class Sweep(_Table):
    """``[[dataset.sweep]]``: loss × Φ × ε × seed, × batch size (a single value is a list of one)."""

    loss: Annotated[str, PlainValidator(_loss)] = "Dice"
    phi: _values(_phi) = ()
    eps: _values(_eps) = ()
    batch_sizes: _values(_accept(lambda v: _whole(v) and v >= 1, "expected a positive integer, got {}")) = ()
    seeds: _values(_accept(lambda v: _whole(v) and v >= 0, "expected an integer >= 0, got {}")) = ()
    epochs: Count | None = None
    iterations: Count | None = None
    lr: Annotated[float, PlainValidator(_number("a learning rate between 0 and 10", 0, 10))] | None = None

    @model_validator(mode="after")
    def _fits_the_loss(self) -> Sweep:
        if self.eps and not loss_config.REGISTRY[self.loss].takes_eps:
            raise Problems((("eps",), f"{self.loss} takes no ε; sweep phi, batch_sizes or seeds instead"))
        if self.phi and loss_config.REGISTRY[self.loss].default_phi is None:
            raise Problems((("phi",), f"{self.loss} takes no Φ"))
        return self

    def expand(self, plans: str) -> tuple[list[tuple[str, str]], list[str]]:
        """The (trainer, plans) pairs of this table, and the combinations that make no loss."""
        default_phi = loss_config.REGISTRY[self.loss].default_phi
        base = loss_config.LossConfig(
            loss=self.loss, phi=default_phi, epochs=self.epochs, iterations=self.iterations, lr=self.lr
        )
        runs, problems = [], []
        for phi in self.phi or [default_phi]:
            for eps in self.eps or [loss_config.DEFAULT_EPS]:
                for seed in self.seeds or [None]:
                    try:
                        config = dataclasses.replace(base, phi=phi, eps_nr=eps, eps_dr=eps, seed=seed)
                    except ValueError as error:
                        problems.append(f"{self.loss}, Φ = {phi}, ε = {eps}: {error}")
                        continue
                    name = loss_config.trainer_name(config)
                    runs += [(name, variant_name(plans, batch_size=b)) for b in self.batch_sizes or [None]]
        return runs, problems


class DatasetSpec(_Table):
    """``[[dataset]]``: one dataset's part of the grid: configurations × runs (trainer, plans) × folds."""

    id: Annotated[int, PlainValidator(_integer(1, 999))]
    configurations: Annotated[tuple[str, ...], PlainValidator(_each(_configuration, required=True))]
    trainers: Annotated[tuple[str, ...], PlainValidator(_each(_trainer))] = ()
    folds: Annotated[tuple[int | str, ...], PlainValidator(_folds)] = FOLDS
    plans: Annotated[str, PlainValidator(lambda v: _text(v, _NAME, "a plans identifier"))] = "nnUNetPlans"
    planner: Annotated[str, PlainValidator(lambda v: _text(v, _IDENTIFIER, "a planner class name"))] | None = None
    preprocess: Bool = True
    test_images: SpecPath | None = None
    test_labels: SpecPath | None = None
    toy: Annotated[str, PlainValidator(_toy)] | None = None
    toy_seed: Count0 = 0
    base_features: Count | None = None
    sweep: Annotated[tuple[Sweep, ...], BeforeValidator(_tables("dataset.sweep"))] = ()

    @model_validator(mode="wrap")
    @classmethod
    def _across_keys(cls, data: Any, handler: Any) -> DatasetSpec:
        """Rules between keys, read from the table as written: checked even where a value is refused."""
        problems = []
        if isinstance(data, dict):
            if "test_labels" in data and "test_images" not in data:
                problems.append((("test_labels",), "needs test_images"))
            if "sweep" not in data and data.get("trainers", []) == []:
                problems.append((("trainers",), "must not be empty" if "trainers" in data else "missing (required)"))
            elif data.get("sweep") in ([], {}) and not data.get("trainers"):
                problems.append((("sweep",), "expands to no trainer"))
        try:
            dataset = handler(data)
        except ValidationError as error:
            if not problems:
                raise
            # pydantic's InitErrorDetails, written as the plain dicts they are (pydantic_core is not a dependency)
            details: list[Any] = [{**e, "ctx": e.get("ctx", {})} for e in error.errors(include_url=False)]
            details.append({"type": "value_error", "loc": (), "input": data, "ctx": {"error": Problems(*problems)}})
            raise ValidationError.from_exception_data(cls.__name__, details) from None
        if problems:
            raise Problems(*problems)
        return dataset

    @property
    def trained_plans(self) -> str:
        """The plans the listed trainers train with: :attr:`plans`, or its narrower variant."""
        return variant_name(self.plans, base_features=self.base_features)

    @property
    def runs(self) -> tuple[tuple[str, str], ...]:
        """Every (trainer, plans) pair of this dataset, the listed trainers first, each once."""
        swept = [run for sweep in self.sweep for run in sweep.expand(self.trained_plans)[0]]
        return tuple(dict.fromkeys([*((t, self.trained_plans) for t in self.trainers), *swept]))

    @property
    def plans_identifiers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(plans for _, plans in self.runs))

    @property
    def plans_variants(self) -> tuple[str, ...]:
        """The variants of :attr:`plans` that the runs use, to be written after preprocessing."""
        return tuple(p for p in self.plans_identifiers if parse_variant(self.plans, p) is not None)


class ReportSpec(_Table):
    """``[report]``: ``nnunet-dicephi report`` over every trainer folder of the grid."""

    output: SpecPath | None = None
    enabled: Bool = True
    n_resamples: Count = 10000


class ExperimentSpec(_Table):
    """A validated experiment spec; build it with :func:`~nnunet_dicephi.cluster.spec.load_spec`."""

    experiment: Experiment
    environment: Environment
    resources: StageResources = Field(default_factory=StageResources)
    datasets: Annotated[tuple[DatasetSpec, ...], BeforeValidator(_tables("dataset"))] = Field(alias="dataset")
    report: ReportSpec | None = None
    _source: Path | None = PrivateAttr(None)

    @field_validator("datasets")
    @classmethod
    def _once_each(cls, datasets: tuple[DatasetSpec, ...]) -> tuple[DatasetSpec, ...]:
        ids = [d.id for d in datasets]
        message = "dataset {} appears twice; list all its runs in one [[dataset]]"
        twice = [((i, "id"), message.format(n)) for i, n in enumerate(ids) if n in ids[:i]]
        if twice:
            raise Problems(*twice)
        return datasets

    @model_validator(mode="after")
    def _gpu_for_cuda(self) -> ExperimentSpec:
        if self.resources.train.gpus == 0 and self.environment.device == "cuda":
            message = 'device is "cuda" but training asks for no GPU; set gpus = 1'
            raise Problems((("resources", "train", "gpus"), message))
        return self

    @property
    def name(self) -> str:
        return self.experiment.name

    @property
    def output(self) -> Path:
        return self.experiment.output

    @property
    def source(self) -> Path | None:
        """The spec file, if the spec came from one."""
        return self._source

    @property
    def state_file(self) -> Path:
        return self.output / "cluster_state.json"

    @property
    def report_spec(self) -> ReportSpec:
        report = self.report or ReportSpec()
        return report if report.output is not None else report.model_copy(update={"output": self.output / "report"})


def smoke_variant(spec: ExperimentSpec, epochs: int = 1, iterations: int = 2) -> ExperimentSpec:
    """The same grid with tiny trainings (every trainer name ``_ep<epochs>_it<iterations>``) in ``<output>/smoke``.

    Raises:
        InputError: a trainer name outside the project's grammar (its epochs cannot be set).
    """
    short = {"epochs": epochs, "iterations": iterations}

    def shortened(name: str) -> str:
        try:
            config = loss_config.parse_trainer_name(name)
        except loss_config.TrainerNameError:
            raise InputError(
                f"--smoke shortens trainings through the trainer name; {name!r} is not a name of nnunet-dicephi's "
                "grammar (its epochs cannot be set from the name)"
            ) from None
        return loss_config.trainer_name(dataclasses.replace(config, **short))

    datasets = tuple(
        d.model_copy(
            update={
                "trainers": tuple(dict.fromkeys(shortened(t) for t in d.trainers)),
                "sweep": tuple(s.model_copy(update=short) for s in d.sweep),
            }
        )
        for d in spec.datasets
    )
    output = spec.output / "smoke"
    experiment = spec.experiment.model_copy(update={"name": f"{spec.name}-smoke", "output": output})
    report = spec.report_spec.model_copy(update={"output": output / "report"})
    return spec.model_copy(update={"experiment": experiment, "datasets": datasets, "report": report})
