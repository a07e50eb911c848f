"""The executor for this machine, and ``nnunet-dicephi run SPEC``: the grid of ``submit`` without a scheduler.

:class:`LocalExecutor` runs tasks in *slots* (one by default, ``jobs`` on the CPU, or one per GPU of
``gpus``, seen through ``CUDA_VISIBLE_DEVICES``) once the tasks they wait for have succeeded; what a
task runs is decided as it starts (:class:`~.process.TaskRun`), a failed task blocks its dependants,
and each task writes ``<output>/logs/<task id>.log``. The demo runs its nnU-Net commands through it.
``run`` plans with :func:`~.tasks.plan_jobs`, holds the experiment's lock, records every task in
``<output>/local_state.json`` for ``status`` and leaves alone what SLURM still runs
(``docs/experiment-grids.md``).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import shlex
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_dicephi._problems import InputError

from . import slurm
from .experiment import STAGES, ExperimentSpec
from .lock import ExperimentBusy, experiment_lock, read_record, write_record
from .process import TaskRun, alive, ended, executable, log_tail, start, stop
from .tasks import Plan, Task, TaskId, find_dataset, plan_jobs, resolve_datasets, toy_folder_name

STATE_FILE = "local_state.json"
STATE_VERSION = 1
STOP_GRACE_S = 30.0
_POLL_S = 0.2


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class Unit:
    """One task as the local executor runs it."""

    task: Task
    log: Path
    after: frozenset[TaskId] = frozenset()
    slurm_jobs: tuple[str, ...] = ()  # jobs of an earlier submit, still queued or running, that must succeed first
    status: str = "pending"
    commands: list[tuple[str, ...]] = field(default_factory=list)
    process: object = None
    slot: str | None = None
    started: str = ""
    ended: str = ""
    detail: str = ""

    @property
    def key(self) -> str:
        return str(self.task.id)

    def note(self, message: str) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("a", encoding="utf-8") as log:
            log.write(f"[nnunet-dicephi {_now()}] {message}\n")


class LocalExecutor:
    """Runs units in slots on this machine, polling, until every unit has ended or can never start."""

    def __init__(
        self,
        slots: Sequence[str | None],
        environment: dict[str, str],
        *,
        say: Callable[[str], None] = print,
        on_change: Callable[[list[Unit]], None] = lambda units: None,
        on_end: Callable[[Unit], None] = lambda unit: None,
        on_poll: Callable[[], None] = lambda: None,
    ) -> None:
        self.free = list(slots)
        self.environment = environment
        self.say, self.on_change, self.on_end, self.on_poll = say, on_change, on_end, on_poll
        self.units: list[Unit] = []

    def run(self, units: list[Unit]) -> None:
        """Run ``units`` to their end; on any exception (Ctrl-C, SIGTERM) stop the running ones first."""
        self.units = units
        for unit in units:
            if unit.slurm_jobs and unit.status == "pending":
                jobs = ", ".join(unit.slurm_jobs)
                why = f"waits for SLURM job(s) {jobs} of an earlier submit; run again once they have ended"
                self._end(unit, "blocked", why)
        self.on_change(units)
        try:
            while any(u.status in ("pending", "running") for u in units):
                for unit in units:
                    if self.free and self._ready(unit):
                        self._start(unit, self.free.pop(0))
                for unit in units:
                    if unit.status == "running" and (code := unit.process.poll()) is not None:
                        if code == 0:
                            self._next(unit)
                        else:
                            command = Path(str(unit.process.args[0])).name
                            self._end(unit, "failed", f"{command} ended with {ended(code)}")
                if not any(u.status == "running" for u in units) and not any(self._ready(u) for u in units):
                    break  # what is left waits for something that will never succeed
                self.on_poll()
                time.sleep(_POLL_S)
        except BaseException:
            self.stop()
            raise

    def _ready(self, unit: Unit) -> bool:
        done = {u.task.id for u in self.units if u.status == "done"}
        return unit.status == "pending" and {u.task.id for u in self.units} & unit.after <= done

    def _start(self, unit: Unit, slot: str | None) -> None:
        unit.status, unit.slot, unit.started = "running", slot, _now()
        unit.log.parent.mkdir(parents=True, exist_ok=True)
        with unit.log.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            unit.commands = TaskRun(unit.task).commands()
        self._next(unit)

    def _next(self, unit: Unit) -> None:
        if not unit.commands:
            TaskRun(unit.task).succeeded()
            return self._end(unit, "done")
        argv = unit.commands.pop(0)
        slot = {"CUDA_VISIBLE_DEVICES": unit.slot} if unit.slot is not None else {}
        try:
            argv = (executable(argv[0]), *argv[1:])
            unit.note("$ " + shlex.join(argv))
            with unit.log.open("ab") as log:
                unit.process = start(argv, log=log, env={**self.environment, **slot})
        except OSError as error:  # not found, not executable
            return self._end(unit, "failed", str(error))
        self.on_change(self.units)

    def _end(self, unit: Unit, status: str, detail: str = "") -> None:
        """Done, failed, or blocked (never started); what waits for a unit that is not done is blocked."""
        if unit.status == "running":
            self.free.append(unit.slot)
            unit.note(f"{status}{': ' + detail if detail else ''}")
        unit.status, unit.detail, unit.ended, unit.process = status, detail, _now(), None
        self.on_end(unit)
        self.say(f"{status:>7}  {unit.key}{' (' + detail + ')' if detail else ''}")
        why = "failed" if status == "failed" else "is blocked"
        for other in self.units if status != "done" else []:
            if other.status == "pending" and unit.task.id in other.after:
                self._end(other, "blocked", f"{unit.key} {why}")
        self.on_change(self.units)

    def stop(self) -> None:
        """Stop every running unit with its workers (SIGTERM, then SIGKILL) and record it as interrupted."""
        running = [u for u in self.units if u.status == "running" and u.process is not None]
        stop([u.process for u in running], STOP_GRACE_S)
        for unit in running:
            unit.process.wait()
            unit.status, unit.detail, unit.process = "interrupted", "stopped; run SPEC again to resume", None
            unit.note("interrupted")
        self.on_change(self.units)


# --- ``nnunet-dicephi run`` -----------------------------------------------------------------------


@dataclass(frozen=True)
class LocalResult:
    """What one ``run`` did: the plan, and per task its final status and log."""

    plan: Plan
    statuses: dict[str, str]
    logs: dict[str, Path]

    @property
    def failed(self) -> list[str]:
        return [key for key, status in self.statuses.items() if status == "failed"]

    @property
    def exit_status(self) -> int:
        return 1 if any(status in ("failed", "blocked") for status in self.statuses.values()) else 0


def state_path(spec: ExperimentSpec) -> Path:
    return spec.output / STATE_FILE


def load_local_state(spec: ExperimentSpec) -> dict:
    """The units recorded by the latest local run (``{}`` when there was none); InputError if unreadable."""
    remedy = "remove it to start that record afresh (the results, logs and markers are kept)"
    return read_record(state_path(spec), STATE_VERSION, "the record of the latest local run", remedy) or {}


def save_local_state(spec: ExperimentSpec, units: list[Unit]) -> None:
    kept = ("status", "slot", "started", "ended", "detail")
    record = {
        u.key: {"stage": u.task.id.stage, "log": str(u.log), "pid": getattr(u.process, "pid", None)}
        | {name: getattr(u, name) for name in kept}
        for u in units
    }
    state = {"version": STATE_VERSION, "experiment": spec.name, "pid": os.getpid(), "saved": _now(), "units": record}
    write_record(state_path(spec), state)


def local_statuses(spec: ExperimentSpec) -> dict[str, tuple[str, str, str]]:
    """Task id → (status, job, detail) from the latest local run; a unit whose run is gone is *interrupted*."""
    state = load_local_state(spec)
    runner_alive = alive(state.get("pid"))
    out = {}
    for key, unit in state.get("units", {}).items():
        status, detail = unit.get("status", "unknown"), unit.get("detail", "")
        if status in ("running", "pending") and not runner_alive:
            status, detail = "interrupted", "the local run stopped; run SPEC again to resume"
        elif status == "failed":
            detail = f"{detail}; log: {unit.get('log', '')}".strip("; ")
        out[key] = (status, "local", detail)
    return out


def refuse_live_local_units(spec: ExperimentSpec, verb: str) -> None:
    """ExperimentBusy, naming each unit and pid, while a unit of an earlier run still runs (its run was killed)."""
    units = load_local_state(spec).get("units", {})
    running = [(k, u["pid"]) for k, u in units.items() if u.get("status") == "running" and alive(u.get("pid"))]
    if running:
        listed = ", ".join(f"{key} (pid {pid})" for key, pid in running)
        raise ExperimentBusy(
            f"processes of an earlier 'nnunet-dicephi run' still run: {listed}; wait for them or stop them "
            f"(kill -- -PID stops one with its workers), then {verb} again"
        )


def slurm_active(spec: ExperimentSpec, say: Callable[[str], None]) -> dict[str, str]:
    """Task id → job id of what SLURM still runs for the experiment; none, with a note, without SLURM here."""
    try:
        return slurm.active_jobs(spec)
    except slurm.NoScheduler as error:
        say(f"note: the SLURM jobs recorded in {spec.state_file} were not checked ({error})")
        return {}
    except slurm.SubmissionError as error:
        raise InputError(
            f"cannot tell whether the SLURM jobs recorded in {spec.state_file} still run ({error}); "
            "run again once squeue answers"
        ) from None


def plan_units(spec: ExperimentSpec, plan: Plan) -> list[Unit]:
    """The plan's tasks as units; a unit waits for every task of the groups its group waits for."""
    members = {g.id: [t.id for t in g.tasks] for g in plan.groups}
    units = []
    for g in plan.groups:
        after = frozenset(i for a in g.after for i in members[a])
        units += [Unit(t, spec.output / "logs" / f"{t.id}.log", after, g.after_jobs) for t in g.tasks]
    return units


def dry_run(spec: ExperimentSpec, stages: Sequence[str] = STAGES, say: Callable[[str], None] = print) -> Plan:
    """Print what :func:`run_local` would run now, each command as one shell line; runs nothing."""
    for dataset in spec.datasets:
        if dataset.toy is not None and find_dataset(spec, dataset) is None:
            say(f"write {toy_folder_name(dataset)} (toy {dataset.toy}, seed {dataset.toy_seed})")
    plan = plan_jobs(spec, resolve_datasets(spec, planned_toys=True), stages=stages, active=slurm_active(spec, say))
    for key, why in plan.skipped:
        say(f"skip  {key} ({why})")
    waiting: set[TaskId] = set()  # groups that wait for SLURM jobs, directly or through another group
    for group in plan.groups:
        held = [*group.after_jobs, *(str(g) for g in waiting.intersection(group.after))]
        if held:
            waiting.add(group.id)
        verb, note = ("wait ", f" (after {', '.join(held)}: blocked in this run)") if held else ("run  ", "")
        for task in group.tasks:
            say(f"{verb} {task.id}{note}" + "".join(f"\n        $ {shlex.join(c)}" for c in task.planned))
    return plan


@contextlib.contextmanager
def _terminate_as_exit():
    """SIGTERM (``kill``) unwinds like Ctrl-C, so that the running units are stopped and recorded."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_local(
    spec: ExperimentSpec,
    *,
    stages: Sequence[str] = STAGES,
    jobs: int = 1,
    gpus: Sequence[str] | None = None,
    progress: bool = True,
    say: Callable[[str], None] = print,
    prepare: Callable[[ExperimentSpec], None] | None = None,
) -> LocalResult:
    """Run the plan of ``spec`` on this machine: ``jobs`` units at once on the CPU, or one per GPU of ``gpus``.

    ``progress``: a progress bar over the units; ``say``: where the summary lines go; ``prepare``: called
    with the spec under the run's lock before the plan is made (e.g. to write the toy datasets it names).

    Raises:
        ExperimentBusy: a ``run`` or ``submit`` holds the experiment, or processes of an earlier run still train.
    """
    if not gpus and jobs < 1:
        raise ValueError(f"jobs must be at least 1; got {jobs}")
    with experiment_lock(spec.output, "run"), _terminate_as_exit():
        refuse_live_local_units(spec, "run")
        if prepare is not None:
            prepare(spec)
        plan = plan_jobs(spec, resolve_datasets(spec), stages=stages, active=slurm_active(spec, say))
        for key, why in plan.skipped:
            say(f"skipped  {key} ({why})")
        units = plan_units(spec, plan)
        if not units:
            say("nothing to run")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(units), desc="jobs", unit="job", dynamic_ncols=True)
        environment = {**os.environ, **spec.environment.paths(), **dict(spec.environment.variables)}
        executor = LocalExecutor(
            list(gpus) if gpus else [None] * jobs,
            environment,
            say=bar.write if bar is not None else say,
            on_change=lambda units: save_local_state(spec, units),
            on_end=lambda unit: bar.update(1) if bar is not None else None,
        )
        try:
            executor.run(units)
        finally:
            if bar is not None:
                bar.close()
    statuses = {unit.key: unit.status for unit in units}
    for unit in units:
        if unit.status == "failed":
            say(f"\n{unit.key} failed ({unit.detail}); the end of {unit.log}:\n{log_tail(unit.log)}")
    counts = {s: sum(v == s for v in statuses.values()) for s in ("done", "failed", "blocked")}
    say(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing run")
    return LocalResult(plan, statuses, {unit.key: unit.log for unit in units})
