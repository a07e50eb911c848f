"""``nnunet-dicephi status``: per stage and training fold, done / running / pending / failed / ... .

Sources, in order of authority: the results folders and markers (done, or stale as the plan judges it:
:class:`~.tasks.Progress`); ``squeue`` (pending, running, or blocked when a dependency can never be
satisfied); ``scontrol show job`` (a job that ended without its outputs failed, or is blocked when
cancelled for a failed dependency); submitit's result pickle (its error). Keys that no SLURM job ran
take their status from the latest local run; without any record a fold is interrupted (it has a
checkpoint) or missing. No slurmdbd (``sacct``) is needed.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Mapping

from . import slurm
from .experiment import ExperimentSpec
from .local import local_statuses
from .slurm import JobRecord, latest_jobs, load_state
from .tasks import FoldState, Progress, fold_state, grid_tasks, resolve_datasets

PROBLEMS = ("failed", "blocked")
ORDER = ("done", "running", "pending", "failed", "blocked", "interrupted", "stale", "missing", "unknown")


Row = namedtuple("Row", "stage dataset configuration trainer fold status job_id detail")  # a line of the table


def job_status(
    record: JobRecord | None, queue: Mapping[str, slurm.JobInfo] | None, known: Mapping[str, slurm.JobInfo] | None
) -> tuple[str, str, str]:
    """(status, job id, detail) of an item that is not done, from the queue, the controller and submitit's files."""
    if record is None:
        return "missing", "", ""
    job = record.job_id
    info = (queue or {}).get(job)
    if info is not None:
        return info.status, job, info.reason if info.reason not in ("", "None") else ""
    paths, result = slurm.job_paths(record.folder, job), slurm.result_of(record.folder, job)
    message = ""
    if result is not None and result[0] == "error":
        lines = [line.strip() for line in result[1].splitlines() if line.strip()]
        message = lines[-1] if lines else "error"
    elif queue is None:  # no scheduler to ask: only a job's own error report is certain
        return "unknown", job, "scheduler not reachable"
    info = (known or {}).get(job) if queue is not None else None
    if info is not None:
        if info.reason == slurm.NEVER_RUNS or (info.state == "CANCELLED" and slurm.NEVER_RUNS in info.reason):
            return "blocked", job, "never ran: a job it depends on failed"
        what = f"{info.state} (exit {info.exit_code})" if info.exit_code else info.state
        if info.state == "COMPLETED" and not message:
            message = "the job ended but its outputs are missing"
        return "failed", job, f"{what}: {message or 'see ' + str(paths.stderr)}; log {paths.stderr}"
    if message:
        return "failed", job, f"{message}; log {paths.stderr}"
    if result is not None:
        return "failed", job, f"the job ended but its outputs are missing; log {paths.stdout}"
    if not paths.stderr.exists() and not paths.stdout.exists():
        return "blocked", job, "never ran (cancelled before it started, e.g. a dependency failed)"
    return "failed", job, f"ended without a result (killed, cancelled or out of memory?); log {paths.stderr}"


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
    cells = [tuple(c or "-" for c in row[:-1]) + (row[-1],) for row in [header, *rows]]
    widths = [max(len(c[i]) for c in cells) for i in range(len(header) - 1)]
    lines = ["  ".join(c[i].ljust(widths[i]) for i in range(len(widths))) + "  " + c[-1] for c in cells]
    counts = {s: sum(r.status == s for r in rows) for s in ORDER}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return "\n".join(line.rstrip() for line in lines)


def status(spec: ExperimentSpec) -> tuple[list[Row], list[str]]:
    """The rows and notes (e.g. scheduler not reachable) for ``spec``."""
    names = resolve_datasets(spec)
    records = latest_jobs(load_state(spec.state_file, spec.name))
    notes, queue, known = [], None if records else {}, None if records else {}
    if records:
        try:
            queue, known = slurm.queued_jobs(), slurm.known_jobs()
        except slurm.SubmissionError as error:
            notes.append(f"scheduler not reachable ({error}); job states from files only")
    return collect(spec, names, records, queue, known, local_statuses(spec)), notes


def exit_status(rows: list[Row]) -> int:
    """1 when any job failed or is blocked, else 0."""
    return 1 if any(r.status in PROBLEMS for r in rows) else 0


def as_json(rows: list[Row]) -> str:
    return json.dumps([r._asdict() for r in rows], indent=2)
