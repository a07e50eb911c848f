"""Experiment grids: a TOML spec → preprocess → train → predict → report, on SLURM (``submit``) or here (``run``).

Importing this package is cheap (no torch, nnU-Net or submitit); the CLI verbs come from :func:`add_parser`,
and ``docs/architecture.md`` says which module holds what.
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
