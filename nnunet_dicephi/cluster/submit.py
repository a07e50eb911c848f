"""``nnunet-dicephi submit``: plan the grid against the results folders and the queue, then submit it."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from . import slurm
from .experiment import STAGES, ExperimentSpec
from .jobs import Plan, plan_jobs, resolve_datasets
from .local import refuse_live_local_units
from .lock import experiment_lock
from .state import active_jobs, load_state, new_submission, save_state


@dataclass(frozen=True)
class Submitted:
    """What one ``submit`` did: the plan, the submitit folder, and group key → job ids of its tasks."""

    plan: Plan
    folder: Path
    job_ids: dict[str, list[str]]


def _array_id(job_ids: list[str]) -> str:
    """The id that a dependency on the whole group names (an array's id without the task suffix)."""
    return job_ids[0].split("_")[0]


def submission_folder(spec: ExperimentSpec) -> Path:
    """A fresh submitit folder for each submission.

    Job ids restart on a fresh controller, and a stale ``<id>_result.pkl`` from an earlier cluster
    must never be taken for this job's result.
    """
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder = spec.output / "slurm" / stamp
    n = 1
    while folder.exists():
        n += 1
        folder = spec.output / "slurm" / f"{stamp}-{n}"
    return folder


def dry_run(spec: ExperimentSpec, stages: Iterable[str] = STAGES, say: Callable[[str], None] = print) -> Plan:
    """Print the job scripts that ``submit`` would submit now; submits nothing."""
    names = resolve_datasets(spec)
    try:
        active = active_jobs(spec)
    except slurm.SubmissionError as error:
        say(f"# note: queue not checked ({error}); jobs still queued would be shown again")
        active = {}
    plan = plan_jobs(spec, names, stages=stages, active=active)
    folder = spec.output / "slurm" / "DRY-RUN"
    say(slurm.render_plan(spec, plan.groups, folder).rstrip("\n"))
    say(_skipped_text(plan))
    return plan


def _skipped_text(plan: Plan) -> str:
    if not plan.skipped:
        return "# skipped: nothing"
    return "\n".join(["# skipped:"] + [f"#   {key}: {why}" for key, why in plan.skipped])


def submit(spec: ExperimentSpec, stages: Iterable[str] = STAGES, say: Callable[[str], None] = print) -> Submitted:
    """Submit what is not done and not already queued, chained with ``afterok`` dependencies.

    Raises:
        SpecError: a dataset, test folder or the virtual environment is missing.
        ExperimentBusy: a ``run`` or ``submit`` of the experiment holds its lock, or processes of an
            earlier ``run`` still train.
        SubmissionError: the scheduler cannot be reached or refused a job (the jobs submitted
            before that are recorded in the state file).
    """
    names = resolve_datasets(spec)
    with experiment_lock(spec.output, "submit"):
        refuse_live_local_units(spec, "submit")
        queue = slurm.queued_jobs()  # asked even with no job recorded: no SLURM, nothing written
        active = active_jobs(spec, queue)
        state = load_state(spec.state_file, spec.name)
        plan = plan_jobs(spec, names, stages=stages, active=active)
        folder = submission_folder(spec)
        job_ids: dict[str, list[str]] = {}
        if plan.groups:
            folder.mkdir(parents=True)
            submission = new_submission(state, folder)
            submission["groups"] = {}
            for group in plan.groups:
                deps = [_array_id(job_ids[k]) for k in group.after] + list(group.after_jobs)
                ids = slurm.submit_group(spec, group, folder, slurm.dependency_text(deps))
                job_ids[group.key] = ids
                submission["groups"][group.key] = _array_id(ids)
                for task, job_id in zip(group.tasks, ids):
                    submission["jobs"][task.key] = job_id
                save_state(spec.state_file, state)  # after each group: a failure later keeps this record
                shown = f"job {ids[0]}" if len(ids) == 1 else f"array {_array_id(ids)} ({len(ids)} tasks)"
                waits = f", after {', '.join(deps)}" if deps else ""
                say(f"submitted {group.key}: {shown}{waits}")
    done = sum(1 for _, why in plan.skipped if why == "done")
    say(
        f"experiment {spec.name!r}: {sum(len(v) for v in job_ids.values())} job(s) submitted"
        + (f", logs in {folder}" if job_ids else "")
        + f"; {len(plan.skipped)} skipped ({done} done)"
    )
    for key, why in plan.skipped:
        if why != "done":
            say(f"  skipped {key}: {why}")
    return Submitted(plan, folder, job_ids)
