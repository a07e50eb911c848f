"""``nnunet-dicephi run SPEC``: the experiment grid of ``submit`` on this machine, without a scheduler.

The plan is :func:`~nnunet_dicephi.cluster.jobs.plan_jobs`'s, the one ``submit`` submits: what is
done is skipped (finished folds, stage markers), a training fold with a checkpoint resumes with
``--c``, and the decision is taken again when a fold starts. A run stopped in any way (Ctrl-C, a
kill, a reboot) therefore continues where it stopped when started again.

Every task of the plan (a preprocessing job, a training fold, a prediction, the report) is one unit
here. A unit starts once every unit of the groups its group waits for has succeeded, in plan order,
as long as a *slot* is free: one slot by default, ``jobs`` slots on the CPU, or one slot per GPU of
``gpus`` (the unit's processes see only that GPU, through ``CUDA_VISIBLE_DEVICES``). A unit that
fails blocks its dependants; the others go on. Each unit writes one log,
``<output>/logs/<key>.log``; the state of every unit is kept in ``<output>/local_state.json`` for
``nnunet-dicephi status``.

A run holds the experiment's lock (:mod:`.lock`, the one ``submit`` takes) from start to end, and
leaves alone what SLURM still queues or runs for the experiment (``cluster_state.json`` and
``squeue``): those units are skipped, and the units that need them are blocked until a later run.

Spec keys that only a SLURM job can use (``venv``, ``modules``, ``setup``, the resources but the
preprocessing CPUs) are not applied here; the commands run in this Python environment.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nnunet_dicephi._files import write_text_atomically
from nnunet_dicephi._problems import InputError

from . import slurm
from .experiment import STAGES, ExperimentSpec
from .jobs import Plan, Task, find_dataset, plan_jobs, resolve_datasets, toy_folder_name
from .lock import ExperimentBusy, experiment_lock
from .runner import TrainJob, executable
from .state import active_jobs, read_record

STATE_FILE = "local_state.json"
STATE_VERSION = 1
STOP_GRACE_S = 30.0
_POLL_S = 0.2
LOG_TAIL_LINES = 25


@dataclass
class _Unit:
    """One task of the plan, as it runs here."""

    task: Task
    stage: str
    after: frozenset[str]
    """Keys of the units that must succeed first."""
    log: Path
    slurm_jobs: tuple[str, ...] = ()
    """SLURM jobs of an earlier ``submit``, still queued or running, that must succeed first."""
    status: str = "pending"
    commands: list[tuple[str, ...]] = field(default_factory=list)
    """What is still to run (decided when the unit starts)."""
    process: subprocess.Popen | None = None
    slot: str | None = None
    started: str = ""
    ended: str = ""
    detail: str = ""

    @property
    def key(self) -> str:
        return self.task.key


@dataclass(frozen=True)
class LocalResult:
    """What one ``run`` did: the plan, and per unit key its final status."""

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
    """The units recorded by the latest local run (``{}`` when there was none).

    Raises:
        InputError: the file is unreadable (e.g. cut short) or of another version.
    """
    state = read_record(
        state_path(spec),
        STATE_VERSION,
        "the record of the latest local run",
        "remove it to start that record afresh (the results, logs and markers are kept)",
    )
    return state or {}


def _alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def local_statuses(spec: ExperimentSpec) -> dict[str, tuple[str, str, str]]:
    """Key → (status, job, detail) from the latest local run, as ``status`` shows them.

    A unit recorded as running or pending whose run is gone (killed, rebooted) is *interrupted*:
    ``run`` resumes it.
    """
    state = load_local_state(spec)
    if not state:
        return {}
    runner_alive = _alive(state.get("pid"))
    out = {}
    for key, unit in state.get("units", {}).items():
        status, detail = unit.get("status", "unknown"), unit.get("detail", "")
        if status in ("running", "pending") and not runner_alive:
            status, detail = "interrupted", "the local run stopped; run SPEC again to resume"
        elif status == "failed":
            detail = f"{detail}; log: {unit.get('log', '')}".strip("; ")
        out[key] = (status, "local", detail)
    return out


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _log_path(spec: ExperimentSpec, key: str) -> Path:
    return spec.output / "logs" / f"{key}.log"


def _units(spec: ExperimentSpec, plan: Plan) -> list[_Unit]:
    keys_of = {group.key: [task.key for task in group.tasks] for group in plan.groups}
    units = []
    for group in plan.groups:
        after = frozenset(key for upstream in group.after for key in keys_of[upstream])
        for task in group.tasks:
            units.append(_Unit(task, group.stage, after, _log_path(spec, task.key), group.after_jobs))
    return units


def _slots(jobs: int, gpus: Sequence[str] | None) -> list[str | None]:
    if gpus:
        return list(gpus)
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1; got {jobs}")
    return [None] * jobs


class _Run:
    """The scheduling loop: start ready units in free slots, poll, record, until nothing is left."""

    def __init__(
        self,
        spec: ExperimentSpec,
        units: list[_Unit],
        slots: list[str | None],
        progress: bool,
        say: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self._say = say
        self.units = units
        self.by_key = {unit.key: unit for unit in units}
        self.free = list(slots)
        self.environment = {**os.environ, **spec.environment.paths(), **dict(spec.environment.variables)}
        self.bar = None
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=len(units), desc="jobs", unit="job", dynamic_ncols=True)

    # --- records -------------------------------------------------------------------------------

    def save(self) -> None:
        state = {
            "version": STATE_VERSION,
            "experiment": self.spec.name,
            "pid": os.getpid(),
            "saved": _now(),
            "units": {
                unit.key: {
                    "status": unit.status,
                    "stage": unit.stage,
                    "log": str(unit.log),
                    "pid": unit.process.pid if unit.process is not None else None,
                    "slot": unit.slot,
                    "started": unit.started,
                    "ended": unit.ended,
                    "detail": unit.detail,
                }
                for unit in self.units
            },
        }
        self.spec.output.mkdir(parents=True, exist_ok=True)
        write_text_atomically(state_path(self.spec), json.dumps(state, indent=2) + "\n")

    def say(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        else:
            self._say(message)

    def _log(self, unit: _Unit, message: str) -> None:
        unit.log.parent.mkdir(parents=True, exist_ok=True)
        with unit.log.open("a", encoding="utf-8") as log:
            log.write(f"[nnunet-dicephi {_now()}] {message}\n")

    # --- one unit ------------------------------------------------------------------------------

    def _decide(self, unit: _Unit) -> list[tuple[str, ...]]:
        """The commands to run now; a training fold judged from its folder (fresh, ``--c`` or done)."""
        if unit.task.fold_dir is None:
            return list(unit.task.commands)
        job = TrainJob(unit.key, unit.task.commands[0], str(unit.task.fold_dir))
        unit.log.parent.mkdir(parents=True, exist_ok=True)
        with unit.log.open("a", encoding="utf-8") as log, contextlib.redirect_stdout(log):
            argv = job.command()
        return [] if argv is None else [argv]

    def _start(self, unit: _Unit, slot: str | None) -> None:
        unit.status, unit.slot, unit.started = "running", slot, _now()
        unit.commands = self._decide(unit)
        self._next_command(unit)

    def _next_command(self, unit: _Unit) -> None:
        if not unit.commands:
            self._finish(unit, "done")
            return
        argv = unit.commands.pop(0)
        argv = (executable(argv[0]), *argv[1:])
        environment = dict(self.environment)
        if unit.slot is not None:
            environment["CUDA_VISIBLE_DEVICES"] = unit.slot
        self._log(unit, "$ " + shlex.join(argv))
        with unit.log.open("ab") as log:
            unit.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=environment, start_new_session=True
            )
        self.save()

    def _finish(self, unit: _Unit, status: str, detail: str = "") -> None:
        unit.status, unit.detail, unit.ended, unit.process = status, detail, _now(), None
        if status == "done" and unit.task.marker is not None:
            unit.task.marker.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomically(unit.task.marker, "\n".join(shlex.join(c) for c in unit.task.commands) + "\n")
        self.free.append(unit.slot)
        self._log(unit, f"{status}{': ' + detail if detail else ''}")
        if self.bar is not None:
            self.bar.update(1)
        self.say(f"{status:>7}  {unit.key}{' (' + detail + ')' if detail else ''}")
        if status == "failed":
            self._block_dependants(unit.key, "failed")
        self.save()

    def _block(self, unit: _Unit, detail: str) -> None:
        unit.status, unit.detail, unit.ended = "blocked", detail, _now()
        if self.bar is not None:
            self.bar.update(1)
        self.say(f"blocked  {unit.key} ({detail})")
        self._block_dependants(unit.key, "is blocked")

    def _block_dependants(self, key: str, why: str) -> None:
        """Block the pending units that need ``key``, which ``why`` (failed, is blocked), and theirs."""
        for unit in self.units:
            if unit.status == "pending" and key in unit.after:
                self._block(unit, f"{key} {why}")

    def _poll(self, unit: _Unit) -> None:
        code = unit.process.poll() if unit.process is not None else None
        if code is None:
            return
        if code == 0:
            self._next_command(unit)
        else:
            how = f"signal {-code}" if code < 0 else f"exit status {code}"
            self._finish(unit, "failed", f"{Path(str(unit.process.args[0])).name} ended with {how}")

    # --- the loop ------------------------------------------------------------------------------

    def _ready(self, unit: _Unit) -> bool:
        return unit.status == "pending" and all(self.by_key[k].status == "done" for k in unit.after if k in self.by_key)

    def run(self) -> None:
        for unit in self.units:
            if unit.slurm_jobs and unit.status == "pending":
                jobs = ", ".join(unit.slurm_jobs)
                self._block(unit, f"waits for SLURM job(s) {jobs} of an earlier submit; run again once they have ended")
        self.save()
        try:
            while any(unit.status in ("pending", "running") for unit in self.units):
                for unit in self.units:
                    if self.free and self._ready(unit):
                        self._start(unit, self.free.pop(0))
                for unit in self.units:
                    if unit.status == "running":
                        self._poll(unit)
                if not any(unit.status == "running" for unit in self.units) and not any(
                    self._ready(unit) for unit in self.units
                ):
                    break  # what is left waits for something that will never succeed
                time.sleep(_POLL_S)
        except BaseException:
            self.stop()
            raise
        finally:
            if self.bar is not None:
                self.bar.close()

    def stop(self) -> None:
        """Stop every running unit with its workers (SIGTERM, then SIGKILL) and record it as interrupted."""
        running = [unit for unit in self.units if unit.status == "running" and unit.process is not None]
        for unit in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(unit.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for unit in running:
            while unit.process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.1)
            if unit.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(unit.process.pid, signal.SIGKILL)
                unit.process.wait()
            unit.status, unit.detail, unit.process = "interrupted", "stopped; run SPEC again to resume", None
            self._log(unit, "interrupted")
        self.save()


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log (empty when there is none)."""
    if not path.is_file():
        return ""
    with path.open("rb") as log:
        log.seek(0, os.SEEK_END)
        size = log.tell()
        log.seek(max(0, size - 64 * 1024))
        text = log.read().decode("utf-8", errors="replace")
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


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


def refuse_live_local_units(spec: ExperimentSpec, verb: str) -> None:
    """Refuse ``verb`` while a unit of an earlier run still runs (its run was killed with SIGKILL).

    Raises:
        ExperimentBusy: naming each such unit and its pid.
    """
    state = load_local_state(spec)
    alive = [
        (key, unit["pid"])
        for key, unit in state.get("units", {}).items()
        if unit.get("status") == "running" and _alive(unit.get("pid"))
    ]
    if alive:
        listed = ", ".join(f"{key} (pid {pid})" for key, pid in alive)
        raise ExperimentBusy(
            f"processes of an earlier 'nnunet-dicephi run' still run: {listed}; wait for them or stop them "
            f"(kill -- -PID stops one with its workers), then {verb} again"
        )


def slurm_active(spec: ExperimentSpec, say: Callable[[str], None]) -> dict[str, str]:
    """Key → job id of what SLURM still queues or runs for the experiment, for the plan to leave alone.

    Without SLURM on this machine the jobs recorded by ``submit`` cannot run here: a note, and none.

    Raises:
        InputError: the scheduler is there but does not answer.
    """
    try:
        return active_jobs(spec)
    except slurm.NoScheduler as error:
        say(f"note: the SLURM jobs recorded in {spec.state_file} were not checked ({error})")
        return {}
    except slurm.SubmissionError as error:
        raise InputError(
            f"cannot tell whether the SLURM jobs recorded in {spec.state_file} still run ({error}); "
            "run again once squeue answers"
        ) from None


def dry_run(spec: ExperimentSpec, stages: Sequence[str] = STAGES, say: Callable[[str], None] = print) -> Plan:
    """Print what :func:`run_local` would run now, each command as one shell line; runs nothing."""
    for dataset in spec.datasets:
        if dataset.toy is not None and find_dataset(spec, dataset) is None:
            say(f"write {toy_folder_name(dataset)} (toy {dataset.toy}, seed {dataset.toy_seed})")
    plan = plan_jobs(spec, resolve_datasets(spec, planned_toys=True), stages=stages, active=slurm_active(spec, say))
    for key, why in plan.skipped:
        say(f"skip  {key} ({why})")
    waiting: set[str] = set()  # groups that wait for SLURM jobs, directly or through another group
    for group in plan.groups:
        held = [*group.after_jobs, *waiting.intersection(group.after)]
        if held:
            waiting.add(group.key)
        verb, note = ("wait ", f" (after {', '.join(held)}: blocked in this run)") if held else ("run  ", "")
        for task in group.tasks:
            say(f"{verb} {task.key}{note}" + "".join(f"\n        $ {shlex.join(c)}" for c in task.commands))
    return plan


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
    """Run the plan of ``spec`` on this machine; see the module docstring.

    Args:
        spec: the validated spec.
        stages: the stages to run (others are neither run nor waited for).
        jobs: units at once on the CPU (ignored with ``gpus``).
        gpus: GPU ids; one unit at a time per GPU.
        progress: a progress bar over the units.
        say: where the summary lines go.
        prepare: called with the spec, under the run's lock, before the plan is made (e.g. to write
            toy datasets the spec names).

    Raises:
        ExperimentBusy: a ``run`` or ``submit`` of the experiment holds its lock, or processes of an
            earlier run still train.
    """
    slots = _slots(jobs, gpus)
    with experiment_lock(spec.output, "run"), _terminate_as_exit():
        refuse_live_local_units(spec, "run")
        if prepare is not None:
            prepare(spec)
        names = resolve_datasets(spec)
        plan = plan_jobs(spec, names, stages=stages, active=slurm_active(spec, say))
        for key, why in plan.skipped:
            say(f"skipped  {key} ({why})")
        units = _units(spec, plan)
        if not units:
            say("nothing to run")
        runner = _Run(spec, units, slots, progress, say)
        runner.run()
    statuses = {unit.key: unit.status for unit in units}
    for unit in units:
        if unit.status == "failed":
            say(f"\n{unit.key} failed ({unit.detail}); the end of {unit.log}:\n{log_tail(unit.log)}")
    counts: Mapping[str, int] = {s: sum(v == s for v in statuses.values()) for s in ("done", "failed", "blocked")}
    say(", ".join(f"{n} {s}" for s, n in counts.items() if n) or "nothing run")
    return LocalResult(plan, statuses, {unit.key: unit.log for unit in units})
