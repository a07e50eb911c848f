"""From a spec to a plan of jobs: what to run, in which order, and what to skip.

Pure functions over the spec and the results folders; nothing here talks to SLURM. Per dataset
the plan is

    preprocess (one job) → train (one array: configuration × trainer × fold)
      → predict (one array: cross-validation summary, test set per configuration × trainer)

and one report job after every dataset's predict array. A training fold is

* **done** when ``fold_X/checkpoint_final.pth`` and ``fold_X/validation/summary.json`` exist:
  skipped;
* **interrupted** when it has a checkpoint (``checkpoint_latest``, ``_final`` or ``_best``) but no
  validation summary: resumed with ``nnUNetv2_train ... --c``;
* **fresh** otherwise.

The job decides fresh/``--c`` again when it starts (see :mod:`nnunet_dicephi.cluster.runner`), so
a job that was requeued after its time limit or a preemption resumes as well. Stages already
queued or running (``active``: key → job id from the state file and the scheduler) are never
submitted twice; new jobs wait for them instead.
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


@dataclass(frozen=True)
class TrainUnit:
    """One cell of the grid: (dataset, configuration, trainer, fold)."""

    dataset_id: int
    dataset: str
    configuration: str
    trainer: str
    plans: str
    fold: int | str

    @property
    def trainer_folder(self) -> str:
        return results_folder_name(self.trainer, self.plans, self.configuration)

    @property
    def key(self) -> str:
        return f"train/{self.dataset}/{self.trainer_folder}/fold_{self.fold}"

    def fold_dir(self, results: Path) -> Path:
        return results / self.dataset / self.trainer_folder / f"fold_{self.fold}"


@dataclass(frozen=True)
class Task:
    """One unit of work: a SLURM job, or one task of the training array.

    ``commands`` run one after the other (argv lists, never through a shell). A training task has a
    ``fold_dir``: its single command is run fresh or with ``--c`` depending on that folder when the
    task starts; ``commands`` shows what it would run now.
    """

    key: str
    commands: tuple[tuple[str, ...], ...]
    fold_dir: Path | None = None
    note: str = ""
    marker: Path | None = None
    """Written by the job when all its commands succeeded (every stage but training)."""
    reads: tuple[str, ...] = ()
    """Trainer folders whose folds a prediction reads: it is redone when one of them trains again."""


@dataclass(frozen=True)
class JobGroup:
    """What one ``sbatch`` submits: one job, or one array of tasks (training)."""

    stage: str
    key: str
    name: str
    tasks: tuple[Task, ...]
    resources: Resources
    after: tuple[str, ...] = ()
    """Keys of groups of this plan that must succeed first."""
    after_jobs: tuple[str, ...] = ()
    """SLURM job ids from earlier submissions, still queued or running, that must succeed first."""


@dataclass(frozen=True)
class Plan:
    """Groups in submission order (dependencies first) and what was skipped, with why."""

    groups: tuple[JobGroup, ...]
    skipped: tuple[tuple[str, str], ...]

    def group(self, key: str) -> JobGroup:
        return next(g for g in self.groups if g.key == key)


def grid(spec: ExperimentSpec, names: Mapping[int, str]) -> list[TrainUnit]:
    """Every training unit of the spec, in spec order (dataset, configuration, run, fold)."""
    return [
        TrainUnit(d.id, names[d.id], configuration, trainer, plans, fold)
        for d in spec.datasets
        for configuration in d.configurations
        for trainer, plans in d.runs
        for fold in d.folds
    ]


def marker_path(spec: ExperimentSpec, key: str) -> Path:
    """Where the job of ``key`` (``preprocess/...``, ``predict/...``, ``report``) records its success."""
    return spec.output / "markers" / (key.replace("/", "-") + ".done")


# --- the nnU-Net side of "done" --------------------------------------------------------------------


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
    """Dataset id → folder name; checks what must exist before submitting.

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
        if dataset.preprocess and not (env.nnunet_raw / name).is_dir():
            if not preprocessed(spec, dataset, name):
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


def _data_identifier(configurations: dict, name: str) -> str | None:
    seen = set()
    while name in configurations and name not in seen:
        seen.add(name)
        config = configurations[name]
        if "data_identifier" in config:
            return config["data_identifier"]
        name = config.get("inherits_from", "")
    return None


def preprocessed(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> bool:
    """Whether the plans and every configuration's preprocessed cases exist."""
    folder = spec.environment.nnunet_preprocessed / name
    try:
        plans = json.loads((folder / f"{dataset.plans}.json").read_text(encoding="utf-8"))
        cases = int(json.loads((folder / "dataset.json").read_text(encoding="utf-8"))["numTraining"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for configuration in dataset.configurations:
        identifier = _data_identifier(plans.get("configurations", {}), configuration)
        if identifier is None or not (folder / identifier).is_dir():
            return False
        if sum(1 for _ in (folder / identifier).glob("*.pkl")) < cases:
            return False
    return True


def missing_variants(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> list[str]:
    """The plans variants the runs use whose plans file is not written yet."""
    folder = spec.environment.nnunet_preprocessed / name
    return [plans for plans in dataset.plans_variants if not (folder / f"{plans}.json").is_file()]


# --- commands -------------------------------------------------------------------------------------


def _fold_text(folds: Sequence[int | str]) -> list[str]:
    return [str(f) for f in folds]


def preprocess_command(dataset: DatasetSpec, processes: int) -> tuple[str, ...]:
    planner = ("-pl", dataset.planner) if dataset.planner else ()
    return (
        "nnUNetv2_plan_and_preprocess",
        "-d",
        str(dataset.id),
        "-c",
        *dataset.configurations,
        *planner,
        "-np",
        str(processes),
        "--verify_dataset_integrity",
    )


RESUME = "--c"
"""``nnUNetv2_train``'s option to continue from the fold's latest checkpoint."""


def with_resume(argv: Sequence[str], *, resume: bool) -> tuple[str, ...]:
    """An ``nnUNetv2_train`` command line with ``--c`` once when ``resume``, without it otherwise.

    The one place that adds or removes ``--c``: the plan, the SLURM job and the local runner all
    decide through it, so a command that already had ``--c`` never gets it twice.
    """
    fresh = tuple(arg for arg in argv if arg != RESUME)
    return (*fresh, RESUME) if resume else fresh


def train_command(unit: TrainUnit, device: str, *, resume: bool = False) -> tuple[str, ...]:
    """``nnUNetv2_train`` for one fold, fresh or with ``--c`` (the job decides again when it starts)."""
    return with_resume(
        (
            "nnUNetv2_train",
            str(unit.dataset_id),
            unit.configuration,
            str(unit.fold),
            "-tr",
            unit.trainer,
            "-p",
            unit.plans,
            "-device",
            device,
        ),
        resume=resume,
    )


def prediction_folder(spec: ExperimentSpec, dataset_name: str, trainer_folder: str) -> Path:
    return spec.output / "predictions" / dataset_name / trainer_folder


CROSSVAL = "crossval"


def crossval_key(dataset: DatasetSpec, plans: str) -> str:
    """``crossval`` for the dataset's own plans, ``crossval_<plans>`` for a batch-size variant."""
    return CROSSVAL if plans == dataset.plans else f"{CROSSVAL}_{plans}"


def test_folders(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> tuple[Path | None, Path | None]:
    """The test images and labels: the spec's, or a toy dataset's own imagesTs/labelsTs."""
    if dataset.test_images is None and dataset.toy is not None:
        folder = spec.environment.nnunet_raw / name
        return folder / "imagesTs", folder / "labelsTs"
    return dataset.test_images, dataset.test_labels


def predict_tasks(spec: ExperimentSpec, dataset: DatasetSpec, name: str) -> list[Task]:
    """The predict stage of a dataset, one array task each.

    ``predict/<dataset>/crossval``: the cross-validation summary (``nnUNetv2_find_best_configuration``,
    not for fold "all"); ``predict/<dataset>/<trainer folder>``: the test set predicted with the
    trainer's folds (an ensemble), then evaluated when ``test_labels`` is given.
    """
    cpus = str(spec.resources.predict.cpus)
    test_images, test_labels = test_folders(spec, dataset, name)
    tasks = []
    if dataset.folds != ("all",):
        for plans in dataset.plans_identifiers:
            key = f"predict/{name}/{crossval_key(dataset, plans)}"
            trainers = [t for t, p in dataset.runs if p == plans]
            reads = tuple(results_folder_name(t, plans, c) for t in trainers for c in dataset.configurations)
            command = (
                "nnUNetv2_find_best_configuration",
                str(dataset.id),
                *("-p", plans, "-c", *dataset.configurations, "-tr", *trainers),
                *("-f", *_fold_text(dataset.folds), "--disable_ensembling", "-np", cpus),
            )
            tasks.append(Task(key, (command,), marker=marker_path(spec, key), reads=reads))
    if test_images is not None:
        workers = str(min(3, spec.resources.predict.cpus))
        for configuration in dataset.configurations:
            for trainer, plans in dataset.runs:
                folder = results_folder_name(trainer, plans, configuration)
                target = prediction_folder(spec, name, folder)
                commands = [
                    (
                        "nnUNetv2_predict",
                        *("-i", str(test_images), "-o", str(target)),
                        *("-d", str(dataset.id), "-c", configuration, "-tr", trainer, "-p", plans),
                        *("-f", *_fold_text(dataset.folds), "-device", spec.environment.device),
                        *("-npp", workers, "-nps", workers),
                    )
                ]
                if test_labels is not None:
                    commands.append(
                        (
                            "nnUNetv2_evaluate_folder",
                            *(str(test_labels), str(target)),
                            *("-djfile", str(target / "dataset.json"), "-pfile", str(target / "plans.json")),
                            *("-np", cpus),
                        )
                    )
                key = f"predict/{name}/{folder}"
                tasks.append(Task(key, tuple(commands), marker=marker_path(spec, key), reads=(folder,)))
    return tasks


def report_commands(spec: ExperimentSpec, names: Mapping[int, str]) -> tuple[tuple[str, ...], ...]:
    """``nnunet-dicephi report`` over the cross-validation, and over each dataset's test predictions."""
    report = spec.report_spec
    results = spec.environment.nnunet_results
    options = ("--force", "--n-resamples", str(report.n_resamples), "-j", str(spec.resources.report.cpus))

    def folders(dataset: DatasetSpec) -> list[str]:
        return [
            str(results / names[dataset.id] / results_folder_name(t, plans, c))
            for c in dataset.configurations
            for t, plans in dataset.runs
        ]

    commands = []
    fold_sets = {d.folds for d in spec.datasets}
    if len(fold_sets) == 1:  # one report; the report tool keeps datasets apart
        (folds,) = fold_sets
        every = [f for d in spec.datasets for f in folders(d)]
        commands.append(
            ("nnunet-dicephi", "report", *every, "-o", str(report.output), "--folds", *_fold_text(folds), *options)
        )
    else:  # --folds applies to every folder given, so datasets with other folds get their own report
        for d in spec.datasets:
            out = report.output / names[d.id]
            commands.append(
                ("nnunet-dicephi", "report", *folders(d), "-o", str(out), "--folds", *_fold_text(d.folds), *options)
            )
    for d in spec.datasets:
        test_labels = test_folders(spec, d, names[d.id])[1]
        if test_labels is None:
            continue
        predictions = [
            str(prediction_folder(spec, names[d.id], results_folder_name(t, plans, c)))
            for c in d.configurations
            for t, plans in d.runs
        ]
        out = report.output / f"test_{names[d.id]}"
        commands.append(
            ("nnunet-dicephi", "report", *predictions, "--reference", str(test_labels), "-o", str(out), *options)
        )
    return tuple(commands)


# --- the plan -------------------------------------------------------------------------------------


def plan_jobs(
    spec: ExperimentSpec,
    names: Mapping[int, str],
    *,
    stages: Iterable[str] = STAGES,
    active: Mapping[str, str] | None = None,
) -> Plan:
    """What to submit now.

    Args:
        spec: the validated spec.
        names: dataset id → ``DatasetXXX_Name`` (:func:`resolve_datasets`).
        stages: the stages to submit; others are neither submitted nor waited for (except when
            their jobs are still active).
        active: key → SLURM job id of jobs still queued or running from earlier submissions.

    Returns:
        The plan; groups come in an order where dependencies precede their dependents.
    """
    stages = set(stages)
    unknown = stages - set(STAGES)
    if unknown:
        raise ValueError(f"unknown stage(s) {', '.join(sorted(unknown))}; stages are {', '.join(STAGES)}")
    active = dict(active or {})
    env = spec.environment
    groups: list[JobGroup] = []
    skipped: list[tuple[str, str]] = []
    report_after: list[str] = []
    report_after_jobs: list[str] = []
    report_needed = False

    def depends(keys: Sequence[str]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        planned = {g.key for g in groups}
        return tuple(k for k in keys if k in planned), tuple(active[k] for k in keys if k in active)

    def add_group(stage: str, key: str, dataset_id: int, tasks: Sequence[Task], upstream: Sequence[str]) -> None:
        """One dataset's job (or array) of ``stage``, after whatever of ``upstream`` is planned or running."""
        after, after_jobs = depends(upstream)
        groups.append(
            JobGroup(
                stage=stage,
                key=key,
                name=f"{spec.name}-{stage}-{dataset_id}",
                tasks=tuple(tasks),
                resources=getattr(spec.resources, stage),
                after=after,
                after_jobs=after_jobs,
            )
        )

    for dataset in spec.datasets:
        name = names[dataset.id]
        upstream: list[str] = []  # keys of this dataset's jobs that the next stage waits for

        key = f"preprocess/{name}"
        variants = missing_variants(spec, dataset, name)
        if not dataset.preprocess:
            done = "preprocess = false"
        elif marker_path(spec, key).is_file() or preprocessed(spec, dataset, name):
            done = "already preprocessed"
        else:
            done = ""
        # preprocessing (not only new plans variants) makes every prediction of the dataset stale
        preprocessing = key in active or (not done and "preprocess" in stages)
        if key in active:
            skipped.append((key, f"still queued or running as job {active[key]}"))
            upstream.append(key)
        elif done and not variants:
            skipped.append((key, done))
        elif "preprocess" in stages:
            commands = [] if done else [preprocess_command(dataset, spec.resources.preprocess.cpus)]
            if variants:  # plans variants, after preprocessing: they copy its plans
                folder = env.nnunet_preprocessed / name
                commands.append(variants_command(folder, dataset.plans, variants))
            add_group("preprocess", key, dataset.id, [Task(key, tuple(commands), marker=marker_path(spec, key))], [])
            upstream.append(key)
        else:
            skipped.append((key, "stage not selected"))

        tasks, train_active = [], []
        training: set[str] = set()  # trainer folders with a fold to train or still training
        for unit in grid(spec, names):
            if unit.dataset_id != dataset.id:
                continue
            fold_dir = unit.fold_dir(env.nnunet_results)
            state = fold_state(fold_dir)
            if state is FoldState.DONE:
                skipped.append((unit.key, "done"))
            elif unit.key in active:
                skipped.append((unit.key, f"still queued or running as job {active[unit.key]}"))
                train_active.append(unit.key)
                training.add(unit.trainer_folder)
            elif "train" not in stages:
                skipped.append((unit.key, f"stage not selected ({state.value})"))
            else:
                resume = state is FoldState.INTERRUPTED
                command = train_command(unit, env.device, resume=resume)
                note = "resume from its checkpoint with --c" if resume else "fresh"
                tasks.append(Task(unit.key, (command,), fold_dir=fold_dir, note=note))
                training.add(unit.trainer_folder)
        train_key = f"train/{name}"
        train_upstream = list(upstream)
        if tasks:
            add_group("train", train_key, dataset.id, tasks, upstream)
            train_upstream = [train_key]
        # the predict job waits for whatever of this dataset is still to run
        upstream = train_upstream + train_active

        key = f"predict/{name}"
        tasks = predict_tasks(spec, dataset, name)
        if "predict" not in stages or not tasks:
            why = "stage not selected" if tasks else 'nothing to predict (folds = "all" and no test_images)'
            skipped.append((key, why))
            after, after_jobs = depends(upstream)  # the report still waits for the training
            report_after.extend(after)
            report_after_jobs.extend(after_jobs + tuple(active[t.key] for t in tasks if t.key in active))
        else:
            todo = []
            for task in tasks:
                # redone after preprocessing, or when one of the models it reads trains
                fresh_upstream = preprocessing or not training.isdisjoint(task.reads)
                if task.key in active and not fresh_upstream:
                    skipped.append((task.key, f"still queued or running as job {active[task.key]}"))
                    report_after_jobs.append(active[task.key])
                elif not fresh_upstream and task.marker is not None and task.marker.is_file():
                    skipped.append((task.key, "done"))
                else:
                    todo.append(task)
            if todo:
                add_group("predict", key, dataset.id, todo, upstream)
                report_after.append(key)
        report_needed |= bool(report_after) or bool(report_after_jobs)

    key = "report"
    report = spec.report_spec
    if not report.enabled:
        skipped.append((key, "[report] enabled = false"))
    elif "report" not in stages:
        skipped.append((key, "stage not selected"))
    elif key in active and not report_needed:
        skipped.append((key, f"still queued or running as job {active[key]}"))
    elif not report_needed and marker_path(spec, key).is_file() and (report.output / "report.md").is_file():
        skipped.append((key, "done"))
    else:
        groups.append(
            JobGroup(
                stage="report",
                key=key,
                name=f"{spec.name}-report",
                tasks=(Task(key, report_commands(spec, names), marker=marker_path(spec, key)),),
                resources=spec.resources.report,
                after=tuple(report_after),
                after_jobs=tuple(dict.fromkeys(report_after_jobs)),
            )
        )
    return Plan(tuple(groups), tuple(skipped))
