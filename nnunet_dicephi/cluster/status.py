"""``nnunet-dicephi status``: per stage and training fold, done / running / pending / failed / ... .

Sources, in order of authority:

1. the results folders and the stage markers: a finished fold or stage is **done**, whatever its
   job says;
2. ``squeue``: a recorded job still queued is **pending** (or **blocked** when SLURM says its
   dependency can never be satisfied) or **running**;
3. ``scontrol show job`` (finished jobs, for ``MinJobAge``): a job that ended without producing
   the outputs **failed** (with its state and exit code), or is **blocked** when SLURM cancelled it
   because a dependency failed;
4. submitit's result pickle, for jobs the controller no longer remembers: its error message.

Without any job recorded, a fold is **interrupted** (it has a checkpoint) or **missing**. Keys that
no SLURM job ran take their status from the latest local run (``nnunet-dicephi run``,
:func:`~nnunet_dicephi.cluster.local.local_statuses`): running, pending, failed (with its log),
blocked, or interrupted when that run has stopped.
No slurmdbd (``sacct``) is needed. The exit status is 1 when anything failed or is blocked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from nnunet_dicephi._nnunet_names import parse_results_folder_name

from . import slurm
from .experiment import ExperimentSpec
from .jobs import CROSSVAL, FoldState, fold_state, grid, marker_path, predict_tasks, preprocessed, resolve_datasets
from .state import JobRecord, latest_jobs, load_state

PROBLEMS = ("failed", "blocked")
ORDER = ("done", "running", "pending", "failed", "blocked", "interrupted", "missing", "unknown")


@dataclass(frozen=True)
class Row:
    """One line of the status table."""

    stage: str
    dataset: str
    configuration: str
    trainer: str
    fold: str
    status: str
    job_id: str = ""
    detail: str = ""


def _ended(record: JobRecord, known: Mapping[str, slurm.JobInfo] | None) -> tuple[str, str]:
    """Status and detail of a recorded job that is no longer queued, its outputs missing."""
    out_log, err_log = slurm.log_paths(record.folder, record.job_id)
    result = slurm.result_of(record.folder, record.job_id)
    message = ""
    if result is not None and result[0] == "error":
        lines = [line for line in result[1].strip().splitlines() if line.strip()]
        message = lines[-1].strip() if lines else "error"
    info = (known or {}).get(record.job_id)
    if info is not None:
        if info.reason == slurm.NEVER_RUNS or (info.state == "CANCELLED" and slurm.NEVER_RUNS in info.reason):
            return "blocked", "never ran: a job it depends on failed"
        what = f"{info.state} (exit {info.exit_code})" if info.exit_code else info.state
        if info.state == "COMPLETED" and not message:
            message = "the job ended but its outputs are missing"
        return "failed", f"{what}: {message or 'see ' + str(err_log)}; log {err_log}"
    if message:
        return "failed", f"{message}; log {err_log}"
    if result is not None:
        return "failed", f"the job ended but its outputs are missing; log {out_log}"
    if not err_log.exists() and not out_log.exists():
        return "blocked", "never ran (cancelled before it started, e.g. a dependency failed)"
    return "failed", f"ended without a result (killed, cancelled or out of memory?); log {err_log}"


def job_status(
    record: JobRecord | None,
    queue: Mapping[str, slurm.JobInfo] | None,
    known: Mapping[str, slurm.JobInfo] | None,
) -> tuple[str, str, str]:
    """(status, job id, detail) of an item that is not done."""
    if record is None:
        return "missing", "", ""
    if queue is None:  # no scheduler to ask: only a job's own error report is certain
        result = slurm.result_of(record.folder, record.job_id)
        if result is not None and result[0] == "error":
            return ("failed", record.job_id, _ended(record, None)[1])
        return "unknown", record.job_id, "scheduler not reachable"
    info = queue.get(record.job_id)
    if info is not None:
        detail = info.reason if info.reason not in ("", "None") else ""
        return info.status, record.job_id, detail
    status, detail = _ended(record, known)
    return status, record.job_id, detail


def _with_plans(configuration: str, plans: str, default: str) -> str:
    """The configuration, and the plans when they are a variant (``2d (nnUNetPlans_bs2)``)."""
    return configuration if plans == default else f"{configuration} ({plans})"


def collect(
    spec: ExperimentSpec,
    names: Mapping[int, str],
    records: Mapping[str, JobRecord],
    queue: Mapping[str, slurm.JobInfo] | None,
    known: Mapping[str, slurm.JobInfo] | None,
    local: Mapping[str, tuple[str, str, str]] | None = None,
) -> list[Row]:
    """The status rows from the folders, the recorded jobs and what the scheduler said.

    ``local`` holds key → (status, job, detail) of a local run (:func:`.local.local_statuses`),
    used for keys that no SLURM job has run.
    """
    local = dict(local or {})

    def not_done(key: str) -> tuple[str, str, str]:
        if key not in records and key in local:
            return local[key]
        return job_status(records.get(key), queue, known)

    rows = []
    for dataset in spec.datasets:
        name = names[dataset.id]
        key = f"preprocess/{name}"
        if marker_path(spec, key).is_file() or preprocessed(spec, dataset, name):
            rows.append(Row("preprocess", name, "", "", "", "done", getattr(records.get(key), "job_id", "")))
        else:
            status, job_id, detail = not_done(key)
            rows.append(Row("preprocess", name, "", "", "", status, job_id, detail))
        for unit in grid(spec, names):
            if unit.dataset_id != dataset.id:
                continue
            record = records.get(unit.key)
            state = fold_state(unit.fold_dir(spec.environment.nnunet_results))
            if state is FoldState.DONE:
                status, job_id, detail = "done", getattr(record, "job_id", ""), ""
            else:
                status, job_id, detail = not_done(unit.key)
                if status == "missing" and state is FoldState.INTERRUPTED:
                    status, detail = "interrupted", "has a checkpoint; submit or run resumes it with --c"
            configuration = _with_plans(unit.configuration, unit.plans, dataset.plans)
            rows.append(Row("train", name, configuration, unit.trainer, str(unit.fold), status, job_id, detail))
        for task in predict_tasks(spec, dataset, name):
            last = task.key.rsplit("/", 1)[1]
            if last == CROSSVAL or last.startswith(CROSSVAL + "_"):
                trainer, configuration = "cross-validation", last[len(CROSSVAL) + 1 :]
            else:
                trainer, plans, configuration = parse_results_folder_name(last)
                configuration = _with_plans(configuration, plans, dataset.plans)
            if task.marker is not None and task.marker.is_file():
                status, job_id, detail = "done", getattr(records.get(task.key), "job_id", ""), ""
            else:
                status, job_id, detail = not_done(task.key)
            rows.append(Row("predict", name, configuration, trainer, "", status, job_id, detail))
    report = spec.report_spec
    if report.enabled:
        if marker_path(spec, "report").is_file() and (report.output / "report.md").is_file():
            rows.append(Row("report", "", "", "", "", "done", getattr(records.get("report"), "job_id", ""), ""))
        else:
            status, job_id, detail = not_done("report")
            rows.append(Row("report", "", "", "", "", status, job_id, detail))
    return rows


def table(rows: list[Row]) -> str:
    """A plain-text table, one row per stage job and training fold, and a one-line summary."""
    header = ("STAGE", "DATASET", "CONFIGURATION", "TRAINER", "FOLD", "STATUS", "JOB", "DETAIL")
    cells = [header] + [
        (r.stage, r.dataset, r.configuration, r.trainer, r.fold, r.status, r.job_id, r.detail) for r in rows
    ]
    cells = [tuple(c or "-" for c in row[:-1]) + (row[-1],) for row in cells]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(widths))) + "  " + c[-1] for c in cells]
    counts = {s: sum(r.status == s for r in rows) for s in ORDER}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(line.rstrip() for line in lines)


def status(spec: ExperimentSpec) -> tuple[list[Row], list[str]]:
    """The rows and notes (e.g. scheduler not reachable) for ``spec``."""
    names = resolve_datasets(spec)
    records = latest_jobs(load_state(spec.state_file, spec.name))
    notes = []
    queue = known = None
    if records:
        try:
            queue = slurm.queued_jobs()
            known = slurm.known_jobs()
        except slurm.SubmissionError as error:
            notes.append(f"scheduler not reachable ({error}); job states from files only")
    else:
        queue, known = {}, {}
    from .local import local_statuses

    return collect(spec, names, records, queue, known, local_statuses(spec)), notes


def exit_status(rows: list[Row]) -> int:
    """1 when any job failed or is blocked, else 0."""
    return 1 if any(r.status in PROBLEMS for r in rows) else 0


def as_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
