"""Experiment grids on SLURM: a TOML spec → preprocess → training array → predict → report.

Importing this package is cheap (no torch, nnU-Net or submitit); the CLI verbs come from
:func:`add_parser`. See :mod:`.spec` for the spec format, :mod:`.tasks` for the job model (every
task, its commands, when it is done, the plan), :mod:`.process` for how a task runs on any executor,
:mod:`.slurm` for the SLURM executor and ``submit``, :mod:`.local` for this machine's executor and
``run``, :mod:`.lock` for the lock that ``run`` and ``submit`` share, :mod:`.status` for the table.
"""

from .cli import add_parser, run_status, run_submit
from .spec import ExperimentSpec, SpecError, load_spec, parse_spec
from .tasks import FoldState, Plan, fold_state, plan_jobs, resolve_datasets

__all__ = [
    "ExperimentSpec",
    "FoldState",
    "Plan",
    "SpecError",
    "add_parser",
    "fold_state",
    "load_spec",
    "parse_spec",
    "plan_jobs",
    "resolve_datasets",
    "run_status",
    "run_submit",
]
