"""SLURM through submitit: job scripts, submission, and what the scheduler says about jobs.

submitit writes the sbatch script, pickles the callable (:mod:`nnunet_dicephi.cluster.runner`),
submits job arrays, and handles the time limit: ``#SBATCH --signal=USR2@<delay>`` plus a
checkpoint-and-requeue handler in the job. The script text comes from submitit's own pure function
(``_make_sbatch_string``, the one its executor uses), so ``--dry-run`` shows exactly what is
submitted. Job states come from ``squeue`` and ``scontrol`` (no slurmdbd needed) and, for jobs the
controller has forgotten, from submitit's result pickles. submitit is imported inside functions only.
"""

from __future__ import annotations

import getpass
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .experiment import Environment, ExperimentSpec, Resources
from .jobs import JobGroup, Task, with_resume

ACTIVE_STATES = {
    "PENDING": "pending",
    "REQUEUED": "pending",
    "REQUEUE_HOLD": "pending",
    "REQUEUE_FED": "pending",
    "RESV_DEL_HOLD": "pending",
    "SPECIAL_EXIT": "pending",
    "CONFIGURING": "running",
    "RUNNING": "running",
    "COMPLETING": "running",
    "RESIZING": "running",
    "SIGNALING": "running",
    "STAGE_OUT": "running",
    "SUSPENDED": "running",
    "STOPPED": "running",
}
NEVER_RUNS = "DependencyNeverSatisfied"


class SubmissionError(RuntimeError):
    """sbatch refused a job, or the scheduler cannot be reached."""


class NoScheduler(SubmissionError):
    """This machine has no SLURM commands (``squeue``, ``sbatch``, ...)."""


# --- job scripts (pure) ---------------------------------------------------------------------------


def setup_lines(environment: Environment) -> list[str]:
    """Shell lines before the job's command: modules, virtual environment, variables, user setup.

    Every value is quoted with :func:`shlex.quote`; only the spec's ``setup`` lines are shell code
    by design.
    """
    lines = ["set -e"]  # a failed `module load` or `source` must not run the job in a wrong environment
    lines += [f"module load {shlex.quote(m)}" for m in environment.modules]
    if environment.venv is not None:
        lines.append(f"source {shlex.quote(str(environment.venv / 'bin' / 'activate'))}")
    variables = [*environment.paths().items(), *environment.variables]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in variables]
    lines += list(environment.setup)
    return lines


def python_command(environment: Environment) -> str:
    """The interpreter that runs submitit in the job: the spec's venv, else the submitting one."""
    python = environment.venv / "bin" / "python" if environment.venv is not None else Path(sys.executable)
    return shlex.quote(str(python))


def memory_text(mem_gb: float) -> str:
    """Memory as submitit spells it (``64GB``, ``1536MB``)."""
    return f"{int(mem_gb)}GB" if mem_gb == int(mem_gb) else f"{int(mem_gb * 1024)}MB"


def executor_parameters(
    resources: Resources,
    *,
    name: str,
    setup: Sequence[str],
    dependency: str | None = None,
) -> dict:
    """``SlurmExecutor.update_parameters`` keywords for one job group."""
    params: dict = {
        "job_name": name,
        "time": resources.time_min,
        "nodes": 1,
        "ntasks_per_node": 1,
        "cpus_per_task": resources.cpus,
        "signal_delay_s": resources.signal_delay_s,
        "setup": list(setup),
    }
    for key in ("partition", "account", "qos"):
        value = getattr(resources, key)
        if value:
            params[key] = value
    if resources.gpus:
        params["gpus_per_node"] = resources.gpus
    if resources.mem_gb is not None:
        params["mem"] = memory_text(resources.mem_gb)
    if resources.array_parallelism is not None:
        params["array_parallelism"] = resources.array_parallelism
    # --requeue: SLURM may requeue the job on preemption or node failure; the job resumes itself
    additional: dict = {"requeue": True}
    if dependency:
        params["dependency"] = dependency
        # a job whose dependency failed is cancelled, not left pending forever
        additional["kill-on-invalid-dep"] = "yes"
    additional.update(dict(resources.extra_sbatch))
    params["additional_parameters"] = additional
    return params


def dependency_text(job_ids: Sequence[str]) -> str | None:
    return "afterok:" + ":".join(job_ids) if job_ids else None


def render_script(spec: ExperimentSpec, group: JobGroup, folder: Path, dependency: str | None) -> str:
    """The sbatch script submitit writes for ``group``."""
    from submitit.slurm.slurm import _make_sbatch_string

    params = executor_parameters(
        group.resources, name=group.name, setup=setup_lines(spec.environment), dependency=dependency
    )
    command = " ".join([python_command(spec.environment), "-u -m submitit.core._submit", shlex.quote(str(folder))])
    map_count = len(group.tasks) if len(group.tasks) > 1 else None
    return _make_sbatch_string(command=command, folder=folder, map_count=map_count, **params)


def _task_lines(task: Task, index: int | None) -> list[str]:
    head = f"# task {index}: {task.key}" if index is not None else f"# {task.key}"
    lines = [head + (f" ({task.note})" if task.note else "")]
    lines += [f"#   $ {shlex.join(c)}" for c in task.commands]
    return lines


def render_plan(spec: ExperimentSpec, plan_groups: Sequence[JobGroup], folder: Path) -> str:
    """``submit --dry-run``: per group, what its job(s) run and the sbatch script submitted."""
    out = []
    for group in plan_groups:
        deps = [f"{{{key}}}" for key in group.after] + list(group.after_jobs)
        kind = f"array of {len(group.tasks)} tasks" if len(group.tasks) > 1 else "job"
        out.append(f"# ==== {group.key}: {kind} {group.name!r} ====")
        if deps:
            out.append("# waits for: " + ", ".join(deps) + " (ids in braces: jobs of this submission)")
        multi = len(group.tasks) > 1
        for i, task in enumerate(group.tasks):
            out += _task_lines(task, i if multi else None)
        out.append(render_script(spec, group, folder, dependency_text(deps)).rstrip("\n"))
        out.append("")
    return "\n".join(out)


def callables(spec: ExperimentSpec, group: JobGroup) -> list:
    """The objects submitit pickles and calls in the job(s) of ``group``."""
    from .runner import StageJob, TrainJob

    if group.stage == "train":
        out = []
        for task in group.tasks:
            (command,) = task.commands
            # the job decides --c itself when it starts
            out.append(TrainJob(task.key, with_resume(command, resume=False), str(task.fold_dir)))
        return out
    return [
        StageJob(task.key, task.commands, str(task.marker) if task.marker is not None else None) for task in group.tasks
    ]


def submit_group(spec: ExperimentSpec, group: JobGroup, folder: Path, dependency: str | None) -> list[str]:
    """Submit one group (one job, or one array); returns the job id of each task."""
    import submitit

    try:
        executor = submitit.SlurmExecutor(
            folder=folder, max_num_timeout=group.resources.max_requeues, python=python_command(spec.environment)
        )
        executor.update_parameters(
            **executor_parameters(
                group.resources, name=group.name, setup=setup_lines(spec.environment), dependency=dependency
            )
        )
        with executor.batch():
            jobs = [executor.submit(function) for function in callables(spec, group)]
    except (RuntimeError, subprocess.SubprocessError, OSError, ValueError) as error:
        raise SubmissionError(f"submitting {group.key} failed: {error}") from error
    return [job.job_id for job in jobs]


# --- what the scheduler says ----------------------------------------------------------------------


@dataclass(frozen=True)
class JobInfo:
    """One job (or array task) as SLURM reports it."""

    job_id: str
    state: str
    reason: str = ""
    exit_code: str = ""

    @property
    def status(self) -> str:
        """Pending, running or blocked while active, else the SLURM state in lower case."""
        if self.state in ACTIVE_STATES:
            if NEVER_RUNS in self.reason:
                return "blocked"
            return ACTIVE_STATES[self.state]
        return self.state.lower()


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
    jobs = {}
    for line in text.splitlines():
        parts = line.strip().split("|")
        if len(parts) >= 2 and parts[0]:
            jobs[parts[0]] = JobInfo(parts[0], parts[1], parts[2] if len(parts) > 2 else "")
    return jobs


def queued_jobs(user: str | None = None) -> dict[str, JobInfo]:
    """The user's jobs that SLURM still queues or runs, array tasks one by one."""
    user = user or getpass.getuser()
    return parse_squeue(_run(["squeue", "-h", "-r", "-u", user, "-o", "%i|%T|%r"]))


def _expand_tasks(text: str) -> list[str]:
    text = text.split("%")[0]
    out = []
    for part in text.split(","):
        if "-" in part:
            low, high = part.split("-", 1)
            if low.isdigit() and high.isdigit():
                out += [str(i) for i in range(int(low), int(high) + 1)]
        elif part.isdigit():
            out.append(part)
    return out


def parse_scontrol(text: str) -> dict[str, JobInfo]:
    """``scontrol -o show job`` → job id (``123`` or ``123_4``) → info, finished jobs included."""
    jobs = {}
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=(\S*)", line))
        if "JobId" not in fields or "JobState" not in fields:
            continue
        reason, exit_code = fields.get("Reason", ""), fields.get("ExitCode", "")
        array, tasks = fields.get("ArrayJobId"), fields.get("ArrayTaskId")
        ids = [f"{array}_{t}" for t in _expand_tasks(tasks)] if array and tasks else [fields["JobId"]]
        for job_id in ids:
            jobs[job_id] = JobInfo(job_id, fields["JobState"], reason, exit_code)
    return jobs


def known_jobs() -> dict[str, JobInfo]:
    """Every job the controller still remembers (finished ones for ``MinJobAge`` seconds)."""
    return parse_scontrol(_run(["scontrol", "-o", "show", "job"]))


def result_of(folder: str | Path, job_id: str) -> tuple[str, str] | None:
    """The result pickle submitit wrote for a job: ``("success", text)`` or ``("error", traceback)``; None if absent."""
    path = Path(folder) / f"{job_id}_0_result.pkl"
    if not path.is_file():
        return None
    import pickle

    try:
        with open(path, "rb") as handle:
            outcome, value = pickle.load(handle)
    except Exception:  # a half-written or foreign pickle says nothing
        return None
    return str(outcome), str(value)


def log_paths(folder: str | Path, job_id: str) -> tuple[Path, Path]:
    """The stdout and stderr logs of a job (or array task) submitted into ``folder``."""
    return Path(folder) / f"{job_id}_0_log.out", Path(folder) / f"{job_id}_0_log.err"


def describe_ids(ids: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in ids.items())
