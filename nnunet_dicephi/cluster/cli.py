"""The ``submit`` and ``status`` verbs of ``nnunet-dicephi`` (wired in by :func:`add_parser`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from nnunet_dicephi._cli import add_verb, refuse

from .experiment import STAGES


def run_submit(args: argparse.Namespace) -> int:
    """Run an experiment grid (TOML spec) on SLURM: preprocess → train array → predict → report.

    Submits, chained with SLURM dependencies, nnU-Net preprocessing (once per dataset), one job array
    of training folds (configuration × trainer × fold) per dataset, prediction/evaluation per dataset
    and one report. Finished folds are skipped, interrupted ones resume with --c, jobs still queued are
    not submitted again. Jobs are requeued before their time limit and resume from their latest
    checkpoint. Exit status 2 when the spec is refused (nothing is submitted) or sbatch fails.
    """
    from . import slurm
    from .spec import SpecError, load_spec
    from .submit import dry_run, submit

    try:
        spec = load_spec(args.spec)
        stages = args.stages or STAGES
        if args.dry_run:
            dry_run(spec, stages)
        else:
            submit(spec, stages)
    except (SpecError, slurm.SubmissionError, RuntimeError, ValueError, OSError) as error:
        return refuse("submit", error)
    return 0


def run_status(args: argparse.Namespace) -> int:
    """What of an experiment grid is done, running, pending, failed or missing.

    One line per stage job and training fold, from the results folders, the jobs recorded at submission
    and the scheduler (squeue, scontrol; no slurmdbd needed). Exit status 1 when a job failed or can
    never run, 2 when the spec is refused.
    """
    from .spec import SpecError, load_spec
    from .status import as_json, exit_status, status, table

    try:
        spec = load_spec(args.spec)
        rows, notes = status(spec)
    except (SpecError, RuntimeError, ValueError, OSError) as error:
        return refuse("status", error)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    print(as_json(rows) if args.json else table(rows))
    return exit_status(rows)


def _stages(text: str) -> list[str]:
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise argparse.ArgumentTypeError(f"stages are {', '.join(STAGES)}; got {text!r}")
    return stages


def add_parser(verbs: Any) -> None:
    """Add the ``submit`` and ``status`` verbs to the subparsers object of ``nnunet-dicephi``."""
    submit = add_verb(verbs, "submit", run_submit)
    submit.add_argument("spec", metavar="SPEC", help="experiment spec (TOML), see examples/grid.toml")
    submit.add_argument("--dry-run", action="store_true", help="print the job scripts; submit nothing")
    submit.add_argument(
        "--stages",
        type=_stages,
        metavar="STAGES",
        help=f"comma-separated subset of {','.join(STAGES)} (default: all)",
    )
    status = add_verb(verbs, "status", run_status)
    status.add_argument("spec", metavar="SPEC", help="experiment spec (TOML)")
    status.add_argument("--json", action="store_true", help="print the rows as JSON")
