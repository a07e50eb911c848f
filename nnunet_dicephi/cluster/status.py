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

A prediction or report done before what it reads changed (a retraining, a new preprocessing) is
**stale**, as the plan judges it (:class:`~.tasks.Progress`).

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

from . import slurm
from .experiment import ExperimentSpec
from .slurm import JobRecord, latest_jobs, load_state
from .tasks import FoldState, Progress, fold_state, grid_tasks, resolve_datasets

PROBLEMS = ("failed", "blocked")
ORDER = ("done", "running", "pending", "failed", "blocked", "interrupted", "stale", "missing", "unknown")


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
    paths = slurm.job_paths(record.folder, record.job_id)
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
        return "failed", f"{what}: {message or 'see ' + str(paths.stderr)}; log {paths.stderr}"
    if message:
        return "failed", f"{message}; log {paths.stderr}"
    if result is not None:
        return "failed", f"the job ended but its outputs are missing; log {paths.stdout}"
    if not paths.stderr.exists() and not paths.stdout.exists():
        return "blocked", "never ran (cancelled before it started, e.g. a dependency failed)"
    return "failed", f"ended without a result (killed, cancelled or out of memory?); log {paths.stderr}"


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
        return info.status, record.job_id, info.reason if info.reason not in ("", "None") else ""
    status, detail = _ended(record, known)
    return status, record.job_id, detail


def collect(
    spec: ExperimentSpec,
    names: Mapping[int, str],
    records: Mapping[str, JobRecord],
    queue: Mapping[str, slurm.JobInfo] | None,
    known: Mapping[str, slurm.JobInfo] | None,
    local: Mapping[str, tuple[str, str, str]] | None = None,
) -> list[Row]:
    """The status rows from the folders, the recorded jobs and what the scheduler said.

    ``local`` holds task id → (status, job, detail) of a local run (:func:`.local.local_statuses`),
    used for tasks that no SLURM job has run.
    """
    local = dict(local or {})
    tasks = grid_tasks(spec, names)
    progress = Progress(spec, names, tasks)
    rows = []
    for task in tasks:
        key, state = str(task.id), progress.state(task)
        record = records.get(key)
        if state == "done":
            status, job_id, detail = "done", getattr(record, "job_id", ""), ""
        elif key not in records and key in local:
            status, job_id, detail = local[key]
        else:
            status, job_id, detail = job_status(record, queue, known)
        if state == "stale" and status not in ("running", "pending"):
            status, detail = "stale", "what it reads is not done or changed since it ran; submit or run redoes it"
        if status == "missing" and task.fold_dir is not None and fold_state(task.fold_dir) is FoldState.INTERRUPTED:
            status, detail = "interrupted", "has a checkpoint; submit or run resumes it with --c"
        rows.append(Row(task.id.stage, task.id.dataset, *task.label, status, job_id, detail))
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
    from .local import local_statuses

    names = resolve_datasets(spec)
    records = latest_jobs(load_state(spec.state_file, spec.name))
    notes = []
    queue = known = None
    if records:
        try:
            queue, known = slurm.queued_jobs(), slurm.known_jobs()
        except slurm.SubmissionError as error:
            notes.append(f"scheduler not reachable ({error}); job states from files only")
    else:
        queue, known = {}, {}
    return collect(spec, names, records, queue, known, local_statuses(spec)), notes


def exit_status(rows: list[Row]) -> int:
    """1 when any job failed or is blocked, else 0."""
    return 1 if any(r.status in PROBLEMS for r in rows) else 0


def as_json(rows: list[Row]) -> str:
    return json.dumps([asdict(r) for r in rows], indent=2)
