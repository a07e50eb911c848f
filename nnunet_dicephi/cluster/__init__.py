"""Experiment grids on SLURM: a TOML spec → preprocess → training array → predict → report.

Importing this package is cheap (no torch, nnU-Net or submitit); the CLI verbs come from
:func:`add_parser`. See :mod:`.spec` for the spec format, :mod:`.jobs` for the plan (skip /
resume / fresh), :mod:`.runner` for what runs inside a job, :mod:`.slurm` for submitit and the
scheduler's answers, :mod:`.local` for ``run``, :mod:`.lock` for the lock that ``run`` and ``submit``
share, :mod:`.status` for the status table.
"""

from .cli import add_parser, run_status, run_submit
from .jobs import FoldState, Plan, fold_state, plan_jobs, resolve_datasets
from .spec import ExperimentSpec, SpecError, load_spec, parse_spec

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
