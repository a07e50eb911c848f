"""The ``submit``, ``run`` and ``status`` verbs of ``nnunet-dicephi`` (wired in by :func:`add_parser`)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from nnunet_dicephi._cli import add_verb, positive_int, refuse
from nnunet_dicephi._problems import InputError

from .experiment import STAGES, ExperimentSpec


def run_submit(args: argparse.Namespace) -> int:
    """Run an experiment grid (TOML spec) on SLURM: preprocess → train array → predict → report.

    Submits, chained with SLURM dependencies, nnU-Net preprocessing (once per dataset), one job array
    of training folds (configuration × trainer × fold) per dataset, prediction/evaluation per dataset
    and one report. Finished folds are skipped, interrupted ones resume with --c, jobs still queued are
    not submitted again. Jobs are requeued before their time limit and resume from their latest
    checkpoint. Exit status 2 when the spec is refused (nothing is submitted) or sbatch fails.
    """
    from . import slurm
    from .spec import load_spec

    try:
        spec = load_spec(args.spec)
        stages = args.stages or STAGES
        if args.dry_run:
            slurm.dry_run(spec, stages)
        else:
            slurm.submit(spec, stages)
    except (InputError, slurm.SubmissionError) as error:
        return refuse("submit", error)
    return 0


def run_status(args: argparse.Namespace) -> int:
    """What of an experiment grid is done, running, pending, failed or missing.

    One line per stage job and training fold, from the results folders, the jobs recorded at submission
    and the scheduler (squeue, scontrol; no slurmdbd needed). Exit status 1 when a job failed or can
    never run, 2 when the spec is refused.
    """
    from .spec import load_spec
    from .status import as_json, exit_status, status, table

    try:
        spec = load_spec(args.spec)
        rows, notes = status(spec)
    except InputError as error:
        return refuse("status", error)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(as_json(rows) if args.json else table(rows))
    return exit_status(rows)


SMOKE_JOBS = 2
"""Jobs at once for ``--smoke``: tiny trainings spend their time starting up, which two jobs overlap."""


def run_run(args: argparse.Namespace) -> int:
    """Run an experiment grid (TOML spec) on this machine: preprocess → train → predict → report.

    The grid, skip and resume decisions of submit, without a scheduler: finished folds and stages
    are skipped, a fold with a checkpoint resumes with --c, so a run stopped in any way continues
    where it stopped. What SLURM still queues or runs for the experiment is left to it, and one run
    or submit of an experiment runs at a time. Training jobs run one after another; -j N runs N at
    once on the CPU, --gpus 0,1 one per listed GPU. One log per job under the experiment's
    output/logs. A failed job stops its dependants and is shown with the end of its log. --smoke
    runs the grid with tiny trainings (1 epoch of 2 iterations, two jobs at once) in output/smoke.
    Exit status 1 when a job failed, 2 when the spec is refused, 130 when interrupted.
    """
    from .experiment import smoke_variant, this_machines_device
    from .local import dry_run, run_local
    from .spec import load_spec

    try:
        spec = load_spec(args.spec, default_device=this_machines_device())
        if args.smoke:
            spec = smoke_variant(spec)
        if args.dry_run:
            dry_run(spec, args.stages or STAGES)
            return 0
        result = run_local(
            spec,
            stages=args.stages or STAGES,
            jobs=args.jobs or (SMOKE_JOBS if args.smoke else 1),
            gpus=args.gpus,
            progress=not args.quiet,
            prepare=_toy_datasets,
        )
    except InputError as error:
        return refuse("run", error)
    except KeyboardInterrupt:
        print("nnunet-dicephi run: interrupted; running jobs were stopped; run again to resume", file=sys.stderr)
        return 130
    return result.exit_status


def _toy_datasets(spec: ExperimentSpec) -> None:
    """Write the toy datasets the spec names and nnUNet_raw lacks (``toy = "<scenario>"``)."""
    toys = [d for d in spec.datasets if d.toy is not None]
    if not toys:
        return
    from nnunet_dicephi.toys import write_toy

    from .tasks import find_dataset

    for dataset in toys:
        if find_dataset(spec, dataset) is None:
            os.environ.update(spec.environment.paths())  # write_toy checks ids across nnU-Net's folders
            try:
                folder = write_toy(dataset.toy, dataset.id, seed=dataset.toy_seed)
            except ValueError as error:  # the target it refuses (an id taken, a folder in the way)
                raise InputError(f"cannot write the toy dataset {dataset.id} that the spec names: {error}") from None
            print(f"wrote toy dataset {folder}")


def _comma_list(valid: Callable[[list[str]], bool], expected: str) -> Callable[[str], list[str]]:
    """An argparse ``type`` for a comma-separated list that ``valid`` accepts."""

    def parse(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items or not valid(items):
            raise argparse.ArgumentTypeError(f"{expected}; got {text!r}")
        return items

    return parse


_gpus = _comma_list(
    lambda ids: all(i.isdigit() for i in ids) and len(set(ids)) == len(ids), "expected distinct GPU ids such as 0,1"
)
_stages = _comma_list(lambda stages: set(stages) <= set(STAGES), f"stages are {', '.join(STAGES)}")


def add_parser(verbs: Any) -> None:
    """Add the ``submit``, ``run`` and ``status`` verbs to the subparsers object of ``nnunet-dicephi``."""
    submit = add_verb(verbs, "submit", run_submit)
    submit.add_argument("spec", metavar="SPEC", help="experiment spec (TOML), see examples/grid.toml")
    submit.add_argument("--dry-run", action="store_true", help="print the job scripts; submit nothing")
    submit.add_argument(
        "--stages",
        type=_stages,
        metavar="STAGES",
        help=f"comma-separated subset of {','.join(STAGES)} (default: all)",
    )
    run = add_verb(verbs, "run", run_run)
    run.add_argument("spec", metavar="SPEC", help="experiment spec (TOML), see examples/")
    run.add_argument("--stages", type=_stages, metavar="STAGES", help=f"comma-separated subset of {','.join(STAGES)}")
    slots = run.add_mutually_exclusive_group()
    slots.add_argument(
        "-j",
        "--jobs",
        type=positive_int,
        metavar="N",
        help=(
            "jobs at once on the CPU (default 1: nnU-Net trains on every core, so two trainings at once"
            f" are slower than one after the other; {SMOKE_JOBS} with --smoke, whose jobs are mostly start-up)"
        ),
    )
    slots.add_argument("--gpus", type=_gpus, metavar="IDS", help="one job at a time per listed GPU, e.g. 0,1")
    run.add_argument("--smoke", action="store_true", help="tiny trainings in <output>/smoke: checks the spec runs")
    run.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    status = add_verb(verbs, "status", run_status)
    status.add_argument("spec", metavar="SPEC", help="experiment spec (TOML)")
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
