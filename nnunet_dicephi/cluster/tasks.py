"""The job model: every task of an experiment grid, what it runs, what it waits for, and when it is done.

Pure functions over the spec and the results folders; nothing here starts a process. :func:`grid_tasks`
builds every task once, with its nnU-Net command lines; :class:`Progress` judges done and stale for the
plan and ``status`` alike; :func:`plan_jobs` groups what is left into what one executor call runs. The
rules (done, interrupted, stale) are those of ``docs/experiment-grids.md``.
"""

from __future__ import annotations

import enum
import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nnunet_dicephi._nnunet_names import results_folder_name

from .experiment import STAGES, DatasetSpec, ExperimentSpec, Resources, SpecError
from .variants import variants_command

CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")
RESUME = "--c"  # nnUNetv2_train's option to continue from the fold's latest checkpoint


class FoldState(str, enum.Enum):
    """Where one training fold stands on disk."""

    DONE = "done"
    INTERRUPTED = "interrupted"
    FRESH = "fresh"


def fold_state(fold_dir: str | os.PathLike) -> FoldState:
    """Done (final checkpoint and validation), interrupted (a checkpoint to ``--c`` from) or fresh."""
    fold_dir = Path(fold_dir)
    if (fold_dir / "checkpoint_final.pth").is_file() and (fold_dir / "validation" / "summary.json").is_file():
        return FoldState.DONE
    if any((fold_dir / name).is_file() for name in CHECKPOINTS):
        return FoldState.INTERRUPTED
    return FoldState.FRESH


@dataclass(frozen=True, order=True)
class TaskId:
    """A task, or a stage of one dataset (no ``item``); its text keys the state files and the logs."""

    stage: str
    dataset: str = ""
    item: str = ""

    def __str__(self) -> str:
        return "/".join(part for part in (self.stage, self.dataset, self.item) if part)

    @property
    def group(self) -> TaskId:
        """The stage of the dataset that the task belongs to (one job, or one training array)."""
        return TaskId(self.stage, self.dataset)


@dataclass(frozen=True)
class Task:
    """One unit of work for any executor: argv lists run one after the other, never through a shell.

    A training task has a ``fold_dir`` and one fresh command (``--c`` is decided as it starts; :attr:`planned`
    is that decision now); any other task writes its ``marker`` on success. ``inputs``: the tasks it reads.
    """

    id: TaskId
    commands: tuple[tuple[str, ...], ...]
    fold_dir: Path | None = None
    marker: Path | None = None
    inputs: tuple[TaskId, ...] = ()
    label: tuple[str, str, str] = ("", "", "")  # configuration, trainer and fold, as status shows them

    @property
    def key(self) -> str:
        return str(self.id)

    @property
    def resume(self) -> bool:
        return self.fold_dir is not None and fold_state(self.fold_dir) is FoldState.INTERRUPTED

    @property
    def planned(self) -> tuple[tuple[str, ...], ...]:
        """What the task would run if it started now."""
        if self.fold_dir is None:
            return self.commands
        return tuple(resumed(c, resume=self.resume) for c in self.commands)

    @property
    def note(self) -> str:
        if self.fold_dir is None:
            return ""
        return "resume from its checkpoint with --c" if self.resume else "fresh"


@dataclass(frozen=True)
class Group:
    """What one executor call runs: one job, or one array of tasks (training, prediction)."""

    id: TaskId
    name: str
    tasks: tuple[Task, ...]
    resources: Resources
    after: tuple[TaskId, ...] = ()  # groups of this plan that must succeed first
    after_jobs: tuple[str, ...] = ()  # SLURM jobs of earlier submissions, still queued, that must succeed first

    @property
    def key(self) -> str:
        return str(self.id)


@dataclass(frozen=True)
class Plan:
    """Groups in submission order (dependencies first) and what was skipped, with why."""

    groups: tuple[Group, ...]
    skipped: tuple[tuple[str, str], ...]

    def group(self, key: str) -> Group:
        return next(g for g in self.groups if g.key == key)


def marker_path(spec: ExperimentSpec, task: TaskId | str) -> Path:
    """Where a task that is not training records its success."""
    return spec.output / "markers" / (str(task).replace("/", "-") + ".done")


# --- the datasets ---------------------------------------------------------------------------------

_DATASET_FOLDER = re.compile(r"Dataset(\d{3})_[A-Za-z0-9._-]+")


def find_dataset(spec: ExperimentSpec, dataset: DatasetSpec) -> str | None:
    """``DatasetXXX_Name`` from nnUNet_raw, else nnUNet_preprocessed, else nnUNet_results."""
    env = spec.environment
    roots = (env.nnunet_raw,) if dataset.preprocess else ()
    for root in (*roots, env.nnunet_preprocessed, env.nnunet_results, env.nnunet_raw):
        if root.is_dir():
            for child in sorted(root.iterdir()):
                match = _DATASET_FOLDER.fullmatch(child.name)
                if match and int(match[1]) == dataset.id and child.is_dir():
                    return child.name
    return None


def toy_folder_name(dataset: DatasetSpec) -> str:
    """The folder that a toy dataset is written to (:func:`nnunet_dicephi.toys.write_toy`'s default name)."""
    from nnunet_dicephi.toys import SCENARIOS

    return f"Dataset{dataset.id:03d}_{SCENARIOS[dataset.toy].dataset_name}"


def resolve_datasets(spec: ExperimentSpec, *, planned_toys: bool = False) -> dict[int, str]:
    """Dataset id → folder name, checking what must exist; ``planned_toys``: a toy not written yet is its future folder.

    Raises:
        SpecError: a dataset, its preprocessing (``preprocess = false``), a test folder or the venv is missing.
    """
    names, problems = {}, []
    env = spec.environment
    for i, dataset in enumerate(spec.datasets):
        name = find_dataset(spec, dataset)
        if name is None and planned_toys and dataset.toy is not None:
            names[dataset.id] = toy_folder_name(dataset)
            continue
        if name is None:
            where = env.nnunet_raw if dataset.preprocess else env.nnunet_preprocessed
            problems.append((f"dataset[{i}].id", f"no Dataset{dataset.id:03d}_* folder in {where}"))
            continue
        names[dataset.id] = name
        if dataset.preprocess and not (env.nnunet_raw / name).is_dir() and not preprocessed(spec, dataset, name):
            problems.append((f"dataset[{i}].id", f"{name} is not in nnUNet_raw ({env.nnunet_raw})"))
        if not dataset.preprocess and not preprocessed(spec, dataset, name):
            problems.append(
                (f"dataset[{i}].preprocess", f"false, but {name} is not preprocessed in {env.nnunet_preprocessed}")
            )
        for key, folder in zip(("test_images", "test_labels"), test_folders(spec, dataset, name)):
            if folder is not None and not folder.is_dir():
                problems.append((f"dataset[{i}].{key}", f"no such folder: {folder}"))
    if env.venv is not None and not (env.venv / "bin" / "python").exists():
        problems.append(("environment.venv", f"{env.venv} has no bin/python"))
    if problems:
        raise SpecError(problems, spec.source)
    return names


def preprocessed(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> bool:
    """Whether the plans and every configuration's preprocessed cases exist."""
    folder = spec.environment.nnunet_preprocessed / name
    try:
        configurations = json.loads((folder / f"{dataset.plans}.json").read_text(encoding="utf-8"))["configurations"]
        cases = int(json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["numTraining"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for configuration in dataset.configurations:
        seen, identifier = set(), None
        while configuration in configurations and configuration not in seen and identifier is None:
            seen.add(configuration)
            identifier = configurations[configuration].get("data_identifier")
            configuration = configurations[configuration].get("inherits_from", "")
        if identifier is None or sum(1 for _ in (folder / identifier).glob("*.pkl")) < cases:
            return False
    return True


def missing_variants(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> list[str]:
    """The plans variants the runs use whose plans file is not written yet."""
    folder = spec.environment.nnunet_preprocessed / name
    return [plans for plans in dataset.plans_variants if not (folder / f"{plans}.json").is_file()]


def partially_labelled(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> bool:
    """Whether the raw dataset.json holds a partial-label manifest (a toy not yet written: its scenario's).

    Such a dataset gets no ``find_best_configuration``: it scores unannotated structures as background.
    """
    from nnunet_dicephi.partial_labels import MANIFEST_KEY

    path = spec.environment.nnunet_raw / name / "dataset.json"
    try:
        return MANIFEST_KEY in json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        if dataset.toy is None:
            return False
        from nnunet_dicephi.toys import SCENARIOS

        return SCENARIOS[dataset.toy].merges is not None


def test_folders(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> tuple[Path | None, Path | None]:
    """The test images and labels: the spec's, or a toy dataset's own imagesTs/labelsTs."""
    if dataset.test_images is None and dataset.toy is not None:
        folder = spec.environment.nnunet_raw / name
        return folder / "imagesTs", folder / "labelsTs"
    return dataset.test_images, dataset.test_labels


# --- nnU-Net's command lines ----------------------------------------------------------------------


def resumed(argv: Sequence[str], *, resume: bool) -> tuple[str, ...]:
    """An ``nnUNetv2_train`` command line with ``--c`` once when ``resume``, without it otherwise."""
    fresh = tuple(arg for arg in argv if arg != RESUME)
    return (*fresh, RESUME) if resume else fresh


def dataset_tasks(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> list[Task]:
    """The preprocessing, training and prediction tasks of one dataset, in that order, with their commands."""
    env, cpus, folds = spec.environment, str(spec.resources.predict.cpus), tuple(map(str, dataset.folds))
    preprocess = TaskId("preprocess", name)
    commands = []
    if dataset.preprocess and not preprocessed(spec, dataset, name) and not marker_path(spec, preprocess).is_file():
        planner = ("-pl", dataset.planner) if dataset.planner else ()
        command = (
            *("nnUNetv2_plan_and_preprocess", "-d", str(dataset.id), "-c", *dataset.configurations, *planner),
            *("-np", str(spec.resources.preprocess.cpus), "--verify_dataset_integrity"),
        )
        commands.append(command)
    variants = missing_variants(spec, dataset, name)
    if variants:  # after preprocessing: they copy its plans
        commands.append(variants_command(env.nnunet_preprocessed / name, dataset.plans, variants))
    tasks = [Task(preprocess, tuple(commands), marker=marker_path(spec, preprocess))]

    def shown(configuration: str, plans: str) -> str:
        return configuration if plans == dataset.plans else f"{configuration} ({plans})"  # 2d (nnUNetPlans_bs2)

    runs = [(c, t, p, results_folder_name(t, p, c)) for c in dataset.configurations for t, p in dataset.runs]
    trained: dict[str, list[TaskId]] = {}  # trainer folder → its folds
    for configuration, trainer, plans, folder in runs:
        for fold in dataset.folds:
            task = TaskId("train", name, f"{folder}/fold_{fold}")
            trained.setdefault(folder, []).append(task)
            argv = ("nnUNetv2_train", str(dataset.id), configuration, str(fold), "-tr", trainer, "-p", plans)
            fold_dir = env.nnunet_results / name / folder / f"fold_{fold}"
            label = (shown(configuration, plans), trainer, str(fold))
            tasks.append(Task(task, ((*argv, "-device", env.device),), fold_dir, inputs=(preprocess,), label=label))

    def prediction(item: str, commands: list, folders: Iterable[str], label: tuple[str, str, str]) -> Task:
        task = TaskId("predict", name, item)
        inputs = (preprocess, *(fold for folder in folders for fold in trained[folder]))
        return Task(task, tuple(commands), marker=marker_path(spec, task), inputs=inputs, label=label)

    if dataset.folds != ("all",) and not partially_labelled(spec, dataset, name):
        for plans in dataset.plans_identifiers:
            trainers = [t for t, p in dataset.runs if p == plans]
            command = (
                *("nnUNetv2_find_best_configuration", str(dataset.id), "-p", plans, "-c", *dataset.configurations),
                *("-tr", *trainers, "-f", *folds, "--disable_ensembling", "-np", cpus),
            )
            read = [results_folder_name(t, plans, c) for t in trainers for c in dataset.configurations]
            variant = "" if plans == dataset.plans else plans
            item = f"crossval_{variant}" if variant else "crossval"
            tasks.append(prediction(item, [command], read, (variant, "cross-validation", "")))
    images, labels = test_folders(spec, dataset, name)
    for configuration, trainer, plans, folder in runs if images is not None else []:
        target, workers = spec.output / "predictions" / name / folder, str(min(3, spec.resources.predict.cpus))
        commands = [
            (
                *("nnUNetv2_predict", "-i", str(images), "-o", str(target), "-d", str(dataset.id), "-c", configuration),
                *("-tr", trainer, "-p", plans, "-f", *folds, "-device", env.device, "-npp", workers, "-nps", workers),
            )
        ]
        if labels is not None:
            files = ("-djfile", str(target / "dataset.json"), "-pfile", str(target / "plans.json"))
            commands.append(("nnUNetv2_evaluate_folder", str(labels), str(target), *files, "-np", cpus))
        tasks.append(prediction(folder, commands, [folder], (shown(configuration, plans), trainer, "")))
    return tasks


def report_commands(spec: ExperimentSpec, names: Mapping[int, str]) -> tuple[tuple[str, ...], ...]:
    """``nnunet-dicephi report`` over the cross-validation, and over each dataset's test predictions."""
    report = spec.report_spec
    options = ("--force", "--n-resamples", str(report.n_resamples), "-j", str(spec.resources.report.cpus))

    def folders(dataset: DatasetSpec, root: Path) -> list[str]:
        return [str(root / results_folder_name(t, p, c)) for c in dataset.configurations for t, p in dataset.runs]

    def command(datasets: Sequence[DatasetSpec], out: Path) -> tuple[str, ...]:
        every = [f for d in datasets for f in folders(d, spec.environment.nnunet_results / names[d.id])]
        folds = map(str, datasets[0].folds)
        return ("nnunet-dicephi", "report", *every, "-o", str(out), "--folds", *folds, *options)

    if len({d.folds for d in spec.datasets}) == 1:  # one report; the report tool keeps datasets apart
        commands = [command(spec.datasets, report.output)]
    else:  # --folds applies to every folder given, so datasets with other folds get their own report
        commands = [command([d], report.output / names[d.id]) for d in spec.datasets]
    for d in spec.datasets:
        labels = test_folders(spec, d, names[d.id])[1]
        if labels is not None:
            predictions = folders(d, spec.output / "predictions" / names[d.id])
            out = ("-o", str(report.output / f"test_{names[d.id]}"))
            commands.append(("nnunet-dicephi", "report", *predictions, "--reference", str(labels), *out, *options))
    return tuple(commands)


def grid_tasks(spec: ExperimentSpec, names: Mapping[int, str]) -> list[Task]:
    """Every task of the spec, done or not, in spec order; the report last when it is enabled."""
    tasks = [t for d in spec.datasets for t in dataset_tasks(spec, d, names[d.id])]
    if spec.report_spec.enabled:
        report = TaskId("report")
        inputs = tuple(t.id for t in tasks if t.id.stage in ("train", "predict"))
        tasks.append(Task(report, report_commands(spec, names), marker=marker_path(spec, report), inputs=inputs))
    return tasks


# --- done -----------------------------------------------------------------------------------------


class Progress:
    """Whether each task of a grid is done, stale or still to run; the one judge for the plan and ``status``."""

    def __init__(self, spec: ExperimentSpec, names: Mapping[int, str], tasks: Sequence[Task]) -> None:
        self.spec = spec
        self.tasks = {t.id: t for t in tasks}
        self.datasets = {names[d.id]: d for d in spec.datasets}
        self._states: dict[TaskId, str] = {}

    def state(self, task: Task) -> str:
        """``done``, ``stale`` (done once, but what it reads is not done or changed since) or ``""``."""
        if task.id not in self._states:
            self._states[task.id] = self._judge(task)
        return self._states[task.id]

    def is_done(self, task: Task) -> bool:
        return self.state(task) == "done"

    def preprocess_reason(self, task: Task) -> str:
        return "already preprocessed" if self.datasets[task.id.dataset].preprocess else "preprocess = false"

    def finished_at(self, task: Task) -> float:
        """When a done task's outputs were written (0 when unknown, e.g. preprocessed by hand)."""
        stamp = task.fold_dir / "checkpoint_final.pth" if task.fold_dir is not None else task.marker
        try:
            return stamp.stat().st_mtime if stamp is not None else 0.0
        except OSError:
            return 0.0

    def _judge(self, task: Task) -> str:
        if task.fold_dir is not None:
            return "done" if fold_state(task.fold_dir) is FoldState.DONE else ""
        if task.id.stage == "preprocess":
            dataset, name = self.datasets[task.id.dataset], task.id.dataset
            made = task.marker.is_file() or preprocessed(self.spec, dataset, name)
            return "done" if made and not missing_variants(self.spec, dataset, name) else ""
        if not task.marker.is_file():
            return ""
        if task.id.stage == "report" and not (self.spec.report_spec.output / "report.md").is_file():
            return ""
        written = self.finished_at(task)
        for upstream in (self.tasks[i] for i in task.inputs):
            if not self.is_done(upstream) or self.finished_at(upstream) > written:
                return "stale"
        return "done"


# --- the plan -------------------------------------------------------------------------------------


def plan_jobs(
    spec: ExperimentSpec,
    names: Mapping[int, str],
    *,
    stages: Iterable[str] = STAGES,
    active: Mapping[str, str] | None = None,
) -> Plan:
    """What to run now: the tasks of ``stages`` neither done nor still queued, grouped per dataset and stage.

    ``names``: dataset id → folder (:func:`resolve_datasets`); ``active``: task id → SLURM job id of jobs
    still queued or running. A group waits for the nearest earlier stage of its datasets that has a group
    in the plan, and for every active job from there on.
    """
    stages = set(stages)
    unknown = stages - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; stages are {', '.join(STAGES)}")
    active = dict(active or {})
    tasks = grid_tasks(spec, names)
    progress = Progress(spec, names, tasks)
    ids = {name: number for number, name in names.items()}
    todo: dict[TaskId, list[Task]] = {}  # group → its tasks to run
    waiting: dict[TaskId, list[str]] = {}  # group → the active jobs of its tasks
    skipped: list[tuple[str, str]] = []
    planned: set[TaskId] = set()
    for task in tasks:
        key, stage = str(task.id), task.id.stage
        done = progress.is_done(task)
        # a queued job is left alone (a finished fold is done), unless this plan runs again what it reads
        rerun = stage != "train" and not planned.isdisjoint(task.inputs)
        if key in active and not rerun and not (done and stage == "train"):
            skipped.append((key, f"still queued or running as job {active[key]}"))
            waiting.setdefault(task.id.group, []).append(active[key])
        elif done:
            skipped.append((key, "done" if stage != "preprocess" else progress.preprocess_reason(task)))
        elif stage not in stages:
            if stage != "predict":  # the predict stage is named once per dataset, below
                state = f" ({fold_state(task.fold_dir).value})" if task.fold_dir is not None else ""
                skipped.append((key, f"stage not selected{state}"))
        else:
            todo.setdefault(task.id.group, []).append(task)
            planned.add(task.id)
    for dataset in spec.datasets:
        predict = TaskId("predict", names[dataset.id])
        if not any(t.id.group == predict for t in tasks):
            skipped.append((str(predict), 'nothing to predict (folds = "all" and no test_images)'))
        elif "predict" not in stages:
            skipped.append((str(predict), "stage not selected"))
    if not spec.report_spec.enabled:
        skipped.append(("report", "[report] enabled = false"))

    groups = []
    for group, members in todo.items():
        after: list[TaskId] = []
        after_jobs: list[str] = []
        for dataset in [group.dataset] if group.dataset else [names[d.id] for d in spec.datasets]:
            for stage in reversed(STAGES[: STAGES.index(group.stage)]):
                after_jobs += waiting.get(TaskId(stage, dataset), [])
                if TaskId(stage, dataset) in todo:
                    after.append(TaskId(stage, dataset))
                    break
        name = f"{spec.name}-{group.stage}" + (f"-{ids[group.dataset]}" if group.dataset else "")
        resources = getattr(spec.resources, group.stage)
        groups.append(Group(group, name, tuple(members), resources, tuple(after), tuple(dict.fromkeys(after_jobs))))
    return Plan(tuple(groups), tuple(skipped))
