"""The SLURM executor and ``nnunet-dicephi submit``: groups of tasks as jobs, through submitit's public API.

submitit writes the sbatch script, pickles each task's :class:`~.process.TaskRun`, submits one job or one
array per group and handles the time limit (``--signal=USR2@<delay>``, checkpoint, requeue). ``--dry-run``
submits the same way to an ``sbatch`` that records instead of submitting. ``<output>/cluster_state.json``
lists every submission (time, submitit folder, task id → job id; the latest job of a task wins), rewritten
after each group. Job states come from ``squeue``, ``scontrol`` and submitit's result pickles (no
slurmdbd). submitit is imported inside functions only.
"""

from __future__ import annotations

import contextlib
import datetime
import getpass
import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections import namedtuple
from collections.abc import Callable, Collection, Iterable, Sequence
from pathlib import Path

from nnunet_dicephi._problems import InputError

from .experiment import STAGES, Environment, ExperimentSpec, Resources
from .lock import experiment_lock, read_record, write_record
from .process import TaskRun
from .tasks import Group, Plan, plan_jobs, resolve_datasets

ACTIVE_STATES = {
    **dict.fromkeys(("PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SPECIAL_EXIT"), "pending"),
    **dict.fromkeys(("CONFIGURING", "RUNNING", "COMPLETING", "RESIZING", "SIGNALING", "STAGE_OUT"), "running"),
    **dict.fromkeys(("SUSPENDED", "STOPPED"), "running"),
}
NEVER_RUNS = "DependencyNeverSatisfied"
VERSION = 1


class SubmissionError(RuntimeError):
    """sbatch refused a job, or the scheduler cannot be reached."""


class NoScheduler(SubmissionError):
    """This machine has no SLURM commands (``squeue``, ``sbatch``, ...)."""


# --- the executor ---------------------------------------------------------------------------------


def setup_lines(environment: Environment) -> list[str]:
    """Shell lines before the job's command: modules, venv, variables (each value quoted), the spec's setup."""
    lines = ["set -e"]  # a failed `module load` or `source` must not run the job in a wrong environment
    lines += [f"module load {shlex.quote(m)}" for m in environment.modules]
    if environment.venv is not None:
        lines.append(f"source {shlex.quote(str(environment.venv / 'bin' / 'activate'))}")
    variables = [*environment.paths().items(), *environment.variables]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in variables]
    return lines + list(environment.setup)


def python_command(environment: Environment) -> str:
    """The interpreter that runs submitit in the job: the spec's venv, else the submitting one."""
    python = environment.venv / "bin" / "python" if environment.venv is not None else Path(sys.executable)
    return shlex.quote(str(python))


def executor(spec: ExperimentSpec, group: Group, folder: Path, dependency: str | None):
    """A submitit executor for ``group``: its resources, the spec's environment, the dependency."""
    import submitit

    resources: Resources = group.resources
    python, requeues = python_command(spec.environment), resources.max_requeues
    ex = submitit.AutoExecutor(folder, cluster="slurm", slurm_max_num_timeout=requeues, slurm_python=python)
    params: dict = {"name": group.name, "timeout_min": resources.time_min, "nodes": 1, "tasks_per_node": 1}
    params |= {"cpus_per_task": resources.cpus, "slurm_signal_delay_s": resources.signal_delay_s}
    params["slurm_setup"] = setup_lines(spec.environment)
    for key in ("partition", "account", "qos", "array_parallelism"):
        if getattr(resources, key):
            params[f"slurm_{key}"] = getattr(resources, key)
    if resources.gpus:
        params["gpus_per_node"] = resources.gpus
    if resources.mem_gb is not None:
        params["mem_gb"] = resources.mem_gb
    # --requeue: SLURM may requeue the job on preemption or node failure; the job resumes itself
    additional: dict = {"requeue": True}
    if dependency:
        params["slurm_dependency"] = dependency
        additional["kill-on-invalid-dep"] = "yes"  # a job whose dependency failed is cancelled, not left pending
    params["slurm_additional_parameters"] = additional | dict(resources.extra_sbatch)
    ex.update_parameters(**params)
    return ex


def _submit(spec: ExperimentSpec, group: Group, folder: Path, dependency: str | None) -> list:
    """Submit one group (one job, or one array) through submitit; its jobs."""
    ex = executor(spec, group, folder, dependency)
    with ex.batch():
        return [ex.submit(TaskRun(task)) for task in group.tasks]


def submit_group(spec: ExperimentSpec, group: Group, folder: Path, dependency: str | None) -> list[str]:
    """Submit one group; returns the job id of each task."""
    try:
        return [job.job_id for job in _submit(spec, group, folder, dependency)]
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as error:
        raise SubmissionError(f"submitting {group.key} failed: {error}") from error


def dependency_text(job_ids: Sequence[str]) -> str | None:
    return "afterok:" + ":".join(job_ids) if job_ids else None


def array_id(job_id: str) -> str:
    """The id that a dependency on a whole group names (an array's id without the task)."""
    from submitit.slurm.slurm import read_job_id

    return read_job_id(job_id)[0][0]


@contextlib.contextmanager
def _recording_sbatch():
    """A folder, and PATH with an ``sbatch`` there that records instead of submitting (and an ``srun``)."""
    with tempfile.TemporaryDirectory() as tmp:
        for name, line in (("sbatch", 'echo "Submitted batch job 1"'), ("srun", "exit 0")):
            (Path(tmp) / name).write_text(f"#!/bin/sh\n{line}\n")
            (Path(tmp) / name).chmod(0o755)
        path = os.environ.get("PATH", "")
        os.environ["PATH"] = tmp + os.pathsep + path
        try:
            yield Path(tmp)
        finally:
            os.environ["PATH"] = path


def render_script(spec: ExperimentSpec, group: Group, folder: Path, dependency: str | None) -> str:
    """The sbatch script submitit writes for ``group`` into ``folder`` (submitted to a recording ``sbatch``)."""
    with _recording_sbatch() as tmp:
        scratch = tmp / "jobs"
        text = _submit(spec, group, scratch, dependency)[0].paths.submission_file.read_text(encoding="utf-8")
    # the scratch folder, as submitit wrote it (quoted word by word), becomes the folder asked for
    lines = []
    for line in text.splitlines():
        if line.startswith("#SBATCH --") and "=" in line:
            flag, value = line.split("=", 1)
            line = f"{flag}={shlex.quote(shlex.split(value)[0].replace(str(scratch), str(folder)))}"
        elif line.startswith("srun "):
            line = shlex.join(word.replace(str(scratch), str(folder)) for word in shlex.split(line))
        lines.append(line)
    return "\n".join(lines) + "\n"


def render_plan(spec: ExperimentSpec, groups: Sequence[Group], folder: Path) -> str:
    """``submit --dry-run``: per group, what its job(s) run and the sbatch script submitted."""
    out = []
    for group in groups:
        deps = [f"{{{key}}}" for key in group.after] + list(group.after_jobs)
        multi = len(group.tasks) > 1
        kind = f"array of {len(group.tasks)} tasks" if multi else "job"
        out.append(f"# ==== {group.key}: {kind} {group.name!r} ====")
        if deps:
            out.append("# waits for: " + ", ".join(deps) + " (ids in braces: jobs of this submission)")
        for i, task in enumerate(group.tasks):
            note = f" ({task.note})" if task.note else ""
            out.append(f"# task {i}: {task.id}{note}" if multi else f"# {task.id}{note}")
            out += [f"#   $ {shlex.join(c)}" for c in task.planned]
        out.append(render_script(spec, group, folder, dependency_text(deps)).rstrip("\n"))
        out.append("")
    return "\n".join(out)


# --- what the scheduler says ----------------------------------------------------------------------


JobInfo = namedtuple("JobInfo", "job_id state reason exit_code status")  # one job (or array task) as SLURM says


def job_info(job_id: str, state: str, reason: str = "", exit_code: str = "") -> JobInfo:
    """A job as SLURM reports it; status: pending, running or blocked while active, else the state in lower case."""
    status = ("blocked" if NEVER_RUNS in reason else ACTIVE_STATES[state]) if state in ACTIVE_STATES else state.lower()
    return JobInfo(job_id, state, reason, exit_code, status)


def _run(args: list[str], timeout: float = 30) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise NoScheduler(f"{args[0]} not found: is this a SLURM login node?") from None
    except subprocess.TimeoutExpired:
        raise SubmissionError(f"{' '.join(args)} did not answer within {timeout:.0f} s") from None
    if result.returncode != 0:
        raise SubmissionError(f"{' '.join(args)} failed: {(result.stderr or result.stdout).strip()}")
    return result.stdout


def parse_squeue(text: str) -> dict[str, JobInfo]:
    """``squeue -h -r -o '%i|%T|%r'`` → job id (``123`` or ``123_4``) → info."""
    rows = [[*line.strip().split("|"), ""] for line in text.splitlines()]
    return {row[0]: job_info(*row[:3]) for row in rows if len(row) > 2 and row[0]}


def queued_jobs(user: str | None = None) -> dict[str, JobInfo]:
    """The user's jobs that SLURM still queues or runs, array tasks one by one."""
    return parse_squeue(_run(["squeue", "-h", "-r", "-u", user or getpass.getuser(), "-o", "%i|%T|%r"]))


def parse_scontrol(text: str) -> dict[str, JobInfo]:
    """``scontrol -o show job`` → job id (``123`` or ``123_4``) → info, finished jobs included."""
    from submitit.slurm.slurm import read_job_id

    jobs = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" not in fields or "JobState" not in fields:
            continue
        ids = [fields["JobId"]]
        if fields.get("ArrayJobId") and fields.get("ArrayTaskId"):
            ranges = read_job_id(f"{fields['ArrayJobId']}_[{fields['ArrayTaskId']}]")
            ids = [f"{r[0]}_{i}" for r in ranges for i in range(int(r[1]), int(r[-1]) + 1)]
        for job_id in ids:
            jobs[job_id] = job_info(job_id, fields["JobState"], fields.get("Reason", ""), fields.get("ExitCode", ""))
    return jobs


def known_jobs() -> dict[str, JobInfo]:
    """Every job the controller still remembers (finished ones for ``MinJobAge`` seconds)."""
    return parse_scontrol(_run(["scontrol", "-o", "show", "job"]))


def job_paths(folder: str | Path, job_id: str):
    """The paths of a job (or array task) submitted into ``folder``: ``stdout``, ``stderr``, ``result_pickle``."""
    import submitit

    return submitit.SlurmJob(folder=folder, job_id=job_id).paths


def result_of(folder: str | Path, job_id: str) -> tuple[str, str] | None:
    """The result pickle submitit wrote for a job: ``("success", text)`` or ``("error", traceback)``; None if absent."""
    import pickle

    try:
        with open(job_paths(folder, job_id).result_pickle, "rb") as handle:
            outcome, value = pickle.load(handle)
    except Exception:  # absent, half-written or foreign: it says nothing
        return None
    return str(outcome), str(value)


# --- the state file -------------------------------------------------------------------------------


JobRecord = namedtuple("JobRecord", "key job_id folder submitted")  # the latest job of one task


_WHAT = "the record of the jobs submitted to SLURM"
_REMEDY = (
    "once no job of this experiment is queued or running (submit would submit those again), remove it to start "
    "that record afresh"
)


def load_state(path: str | os.PathLike, experiment: str) -> dict:
    """The state file's content, or an empty state when there is none yet; InputError if unreadable."""
    state = read_record(path, VERSION, _WHAT, _REMEDY)
    if state is None:
        return {"version": VERSION, "experiment": experiment, "submissions": []}
    if not isinstance(state.get("submissions"), list):
        raise InputError(f"{_WHAT} {path} holds no list of submissions; {_REMEDY}")
    return state


save_state = write_record


def new_submission(state: dict, folder: str | os.PathLike) -> dict:
    """Append an empty submission record and return it (fill its ``jobs`` as groups are submitted)."""
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    state["submissions"].append({"time": now, "folder": str(folder), "jobs": {}})
    return state["submissions"][-1]


def latest_jobs(state: dict) -> dict[str, JobRecord]:
    """Task id → its most recent job record."""
    out = {}
    for submission in state["submissions"]:
        for key, job_id in submission["jobs"].items():
            out[key] = JobRecord(key, str(job_id), submission["folder"], submission["time"])
    return out


def active_jobs(spec: ExperimentSpec, queue: Collection[str] | None = None) -> dict[str, str]:
    """Task id → job id of the recorded jobs that SLURM still queues (``queue``: its ids; else ``squeue`` asked)."""
    records = latest_jobs(load_state(spec.state_file, spec.name))
    if records and queue is None:
        queue = queued_jobs()
    return {key: r.job_id for key, r in records.items() if r.job_id in (queue or ())}


# --- ``nnunet-dicephi submit`` --------------------------------------------------------------------


def submission_folder(spec: ExperimentSpec) -> Path:
    """A fresh submitit folder for each submission: a result pickle of an earlier cluster's job id is never read."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    folder, n = spec.output / "slurm" / stamp, 1
    while folder.exists():
        n += 1
        folder = spec.output / "slurm" / f"{stamp}-{n}"
    return folder


def dry_run(spec: ExperimentSpec, stages: Iterable[str] = STAGES, say: Callable[[str], None] = print) -> Plan:
    """Print the job scripts that ``submit`` would submit now; submits nothing."""
    names = resolve_datasets(spec)
    try:
        active = active_jobs(spec)
    except SubmissionError as error:
        say(f"# note: queue not checked ({error}); jobs still queued would be shown again")
        active = {}
    plan = plan_jobs(spec, names, stages=stages, active=active)
    say(render_plan(spec, plan.groups, spec.output / "slurm" / "DRY-RUN").rstrip("\n"))
    skipped = [f"#   {key}: {why}" for key, why in plan.skipped]
    say("\n".join(["# skipped:", *skipped]) if skipped else "# skipped: nothing")
    return plan


def submit(spec: ExperimentSpec, stages: Iterable[str] = STAGES, say: Callable[[str], None] = print) -> Plan:
    """Submit what is not done and not already queued, chained with ``afterok`` dependencies.

    Raises:
        SpecError: a dataset, test folder or the venv is missing.
        ExperimentBusy: a ``run`` or ``submit`` holds the experiment, or processes of an earlier run still train.
        SubmissionError: the scheduler cannot be reached or refused a job (those submitted before are recorded).
    """
    from .local import refuse_live_local_units

    names = resolve_datasets(spec)
    with experiment_lock(spec.output, "submit"):
        refuse_live_local_units(spec, "submit")
        active = active_jobs(spec, queued_jobs())  # asked even with no job recorded: no SLURM, nothing written
        state = load_state(spec.state_file, spec.name)
        plan = plan_jobs(spec, names, stages=stages, active=active)
        folder = submission_folder(spec)
        job_ids: dict[str, list[str]] = {}
        if plan.groups:
            folder.mkdir(parents=True)
            submission = new_submission(state, folder)
            submission["groups"] = {}
            for group in plan.groups:
                deps = [array_id(job_ids[str(k)][0]) for k in group.after] + list(group.after_jobs)
                ids = submit_group(spec, group, folder, dependency_text(deps))
                job_ids[group.key] = ids
                submission["groups"][group.key] = array_id(ids[0])
                submission["jobs"].update({str(task.id): job_id for task, job_id in zip(group.tasks, ids)})
                save_state(spec.state_file, state)  # after each group: a failure later keeps this record
                shown = f"job {ids[0]}" if len(ids) == 1 else f"array {array_id(ids[0])} ({len(ids)} tasks)"
                say(f"submitted {group.key}: {shown}" + (f", after {', '.join(deps)}" if deps else ""))
    done = sum(1 for _, why in plan.skipped if why == "done")
    say(
        f"experiment {spec.name!r}: {sum(len(v) for v in job_ids.values())} job(s) submitted"
        + (f", logs in {folder}" if job_ids else "")
        + f"; {len(plan.skipped)} skipped ({done} done)"
    )
    for key, why in plan.skipped:
        if why != "done":
            say(f"  skipped {key}: {why}")
    return plan
