"""The job model: every task of an experiment grid, what it runs, what it waits for, and when it is done.

Pure functions over the spec and the results folders; nothing here starts a process. Per dataset
the grid is

    preprocess (one task) → train (configuration × trainer × fold)
      → predict (cross-validation summary; test set per configuration × trainer)

and one report after every dataset's predictions. :func:`grid_tasks` builds every task once, with
its commands (:func:`nnunet_command` and its neighbours are the one place that knows nnU-Net's
command lines); :class:`Progress` says whether a task is done, for the plan and for ``status`` alike:

* a training fold is **done** with ``checkpoint_final.pth`` and ``validation/summary.json``; with a
  checkpoint only it is **interrupted** and resumes with ``--c`` (decided again when it starts);
* preprocessing is done when its marker or nnU-Net's preprocessed cases exist, and every plans
  variant the runs use is written;
* a prediction or the report is done when its marker exists, everything it reads is done, and
  nothing it reads changed after it ran; otherwise it is **stale** (a retraining, a new preprocessing).

:func:`plan_jobs` keeps what is neither done nor still queued (``active``: task id → SLURM job id)
and groups it into what one executor call runs (one job, or one array of training folds).
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
RESUME = "--c"
"""``nnUNetv2_train``'s option to continue from the fold's latest checkpoint."""
CROSSVAL = "crossval"


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
    """A task (``stage``, ``dataset``, ``item``) or a stage of one dataset (no ``item``).

    Its text, ``train/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d/fold_0``, is the key of the
    state files and the log path; it is written here only, and never parsed back.
    """

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
    """One unit of work, for any executor: argv lists run one after the other, never through a shell.

    A training task has a ``fold_dir`` and one command, fresh: it runs with ``--c`` when the fold has a
    checkpoint as it starts (:attr:`planned` is that decision now). Every other task writes its
    ``marker`` when all its commands succeeded. ``inputs`` are the tasks whose outputs it reads.
    """

    id: TaskId
    commands: tuple[tuple[str, ...], ...]
    fold_dir: Path | None = None
    marker: Path | None = None
    inputs: tuple[TaskId, ...] = ()
    label: tuple[str, str, str] = ("", "", "")
    """Configuration, trainer and fold, as ``status`` shows them."""

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
    after: tuple[TaskId, ...] = ()
    """Groups of this plan that must succeed first."""
    after_jobs: tuple[str, ...] = ()
    """SLURM job ids from earlier submissions, still queued or running, that must succeed first."""

    @property
    def stage(self) -> str:
        return self.id.stage

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
    """Dataset id → folder name; checks what must exist before anything runs.

    With ``planned_toys`` a toy dataset not written yet resolves to the folder it will be written
    to, unchecked (for a dry run).

    Raises:
        SpecError: a dataset is nowhere to be found, a dataset with ``preprocess = false`` is not
            preprocessed, a test folder or the virtual environment is missing.
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
    """Whether the dataset's raw dataset.json holds a partial-label manifest (a toy not yet written: its scenario's).

    nnU-Net's ``find_best_configuration`` scores every structure against label maps in which an
    unannotated structure is background, and fails outright when a class is in no validation case and
    never predicted (its mean Dice is NaN). Grids leave that selection out for such datasets; the
    report's validation tables leave the unannotated (case, class) pairs out instead.
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


def preprocess_command(dataset: DatasetSpec, processes: int) -> tuple[str, ...]:
    planner = ("-pl", dataset.planner) if dataset.planner else ()
    return (
        *("nnUNetv2_plan_and_preprocess", "-d", str(dataset.id), "-c", *dataset.configurations, *planner),
        *("-np", str(processes), "--verify_dataset_integrity"),
    )


def train_command(dataset: DatasetSpec, configuration: str, fold, trainer: str, plans: str, device: str):
    """``nnUNetv2_train`` for one fold, fresh: the job adds ``--c`` (:func:`resumed`) as it starts from a checkpoint."""
    options = ("-tr", trainer, "-p", plans, "-device", device)
    return ("nnUNetv2_train", str(dataset.id), configuration, str(fold), *options)


def find_best_command(dataset: DatasetSpec, plans: str, trainers: Sequence[str], processes: int) -> tuple[str, ...]:
    return (
        *("nnUNetv2_find_best_configuration", str(dataset.id), "-p", plans, "-c", *dataset.configurations),
        *("-tr", *trainers, "-f", *map(str, dataset.folds), "--disable_ensembling", "-np", str(processes)),
    )


def predict_commands(spec: ExperimentSpec, dataset: DatasetSpec, run: tuple[str, str, str], images, labels, target):
    """``nnUNetv2_predict`` of the test set with a trainer's folds, then its evaluation when there are labels."""
    configuration, trainer, plans = run
    workers, cpus = str(min(3, spec.resources.predict.cpus)), str(spec.resources.predict.cpus)
    commands = [
        (
            *("nnUNetv2_predict", "-i", str(images), "-o", str(target), "-d", str(dataset.id), "-c", configuration),
            *("-tr", trainer, "-p", plans, "-f", *map(str, dataset.folds), "-device", spec.environment.device),
            *("-npp", workers, "-nps", workers),
        )
    ]
    if labels is not None:
        files = ("-djfile", str(target / "dataset.json"), "-pfile", str(target / "plans.json"))
        commands.append(("nnUNetv2_evaluate_folder", str(labels), str(target), *files, "-np", cpus))
    return commands


def prediction_folder(spec: ExperimentSpec, dataset_name: str, trainer_folder: str) -> Path:
    return spec.output / "predictions" / dataset_name / trainer_folder


def crossval_item(dataset: DatasetSpec, plans: str) -> str:
    """``crossval`` for the dataset's own plans, ``crossval_<plans>`` for a batch-size variant."""
    return CROSSVAL if plans == dataset.plans else f"{CROSSVAL}_{plans}"


def _with_plans(configuration: str, plans: str, dataset: DatasetSpec) -> str:
    """The configuration, and the plans when they are a variant (``2d (nnUNetPlans_bs2)``)."""
    return configuration if plans == dataset.plans else f"{configuration} ({plans})"


def dataset_tasks(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> list[Task]:
    """The preprocessing, training and prediction tasks of one dataset, in that order."""
    env = spec.environment
    preprocess = TaskId("preprocess", name)
    commands = []
    if dataset.preprocess and not preprocessed(spec, dataset, name) and not marker_path(spec, preprocess).is_file():
        commands.append(preprocess_command(dataset, spec.resources.preprocess.cpus))
    variants = missing_variants(spec, dataset, name)
    if variants:  # after preprocessing: they copy its plans
        commands.append(variants_command(env.nnunet_preprocessed / name, dataset.plans, variants))
    tasks = [Task(preprocess, tuple(commands), marker=marker_path(spec, preprocess))]

    folds: dict[str, list[TaskId]] = {}  # trainer folder → its folds
    for configuration in dataset.configurations:
        for trainer, plans in dataset.runs:
            folder = results_folder_name(trainer, plans, configuration)
            for fold in dataset.folds:
                task = TaskId("train", name, f"{folder}/fold_{fold}")
                folds.setdefault(folder, []).append(task)
                argv = train_command(dataset, configuration, fold, trainer, plans, env.device)
                fold_dir = env.nnunet_results / name / folder / f"fold_{fold}"
                label = (_with_plans(configuration, plans, dataset), trainer, str(fold))
                tasks.append(Task(task, (argv,), fold_dir=fold_dir, inputs=(preprocess,), label=label))

    def prediction(item: str, commands, folders: Iterable[str], label: tuple[str, str, str]) -> Task:
        task = TaskId("predict", name, item)
        inputs = (preprocess, *(fold for folder in folders for fold in folds[folder]))
        return Task(task, tuple(commands), marker=marker_path(spec, task), inputs=inputs, label=label)

    if dataset.folds != ("all",) and not partially_labelled(spec, dataset, name):
        for plans in dataset.plans_identifiers:
            trainers = [t for t, p in dataset.runs if p == plans]
            command = find_best_command(dataset, plans, trainers, spec.resources.predict.cpus)
            read = [results_folder_name(t, plans, c) for t in trainers for c in dataset.configurations]
            item = crossval_item(dataset, plans)
            tasks.append(prediction(item, [command], read, (item[len(CROSSVAL) + 1 :], "cross-validation", "")))
    images, labels = test_folders(spec, dataset, name)
    if images is not None:
        for configuration in dataset.configurations:
            for trainer, plans in dataset.runs:
                folder = results_folder_name(trainer, plans, configuration)
                target = prediction_folder(spec, name, folder)
                commands = predict_commands(spec, dataset, (configuration, trainer, plans), images, labels, target)
                label = (_with_plans(configuration, plans, dataset), trainer, "")
                tasks.append(prediction(folder, commands, [folder], label))
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
    """What to run now: the tasks that are neither done nor still queued, grouped per dataset and stage.

    Args:
        spec: the validated spec.
        names: dataset id → ``DatasetXXX_Name`` (:func:`resolve_datasets`).
        stages: the stages to run; others are neither run nor waited for (except while their jobs
            are still active).
        active: task id (text) → SLURM job id of jobs still queued or running from earlier submissions.

    Returns:
        The plan; a group waits for the nearest earlier stage of its datasets that has a group in the
        plan, and for every active job from there on.
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
        resources = spec.resources.of(group.stage)
        groups.append(Group(group, name, tuple(members), resources, tuple(after), tuple(dict.fromkeys(after_jobs))))
    return Plan(tuple(groups), tuple(skipped))
