"""Reading an experiment spec: TOML → :class:`~.experiment.ExperimentSpec`, every problem named with its key path.

The format is ``docs/experiment-grids.md`` (its key table is tested against the schema) and
``examples/grid.toml``. This module imports neither torch, nnU-Net nor submitit.
"""

from __future__ import annotations

import difflib
import os
import sys
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from nnunet_dicephi import loss_config

from .experiment import (
    PATH_VARIABLES,
    STAGES,
    ExperimentSpec,
    Problems,
    SpecError,
    check_trainer,
    format_time,
    kind,
    parse_time,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "STAGES",
    "ExperimentSpec",
    "SpecError",
    "check_trainer",
    "format_time",
    "load_spec",
    "parse_spec",
    "parse_time",
]


def table_at(loc: tuple[str | int, ...]) -> type[BaseModel]:
    """The model of the TOML table at the key path ``loc`` (list indices skipped)."""
    model: type[BaseModel] = ExperimentSpec
    for part in loc:
        if isinstance(part, str):
            field = next(f for name, f in model.model_fields.items() if (f.alias or name) == part)
            model = next(models_in(field.annotation))
    return model


def models_in(annotation: Any):
    """The models (tables) in a type: ``Sweep`` in ``tuple[Sweep, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from models_in(argument)


def _path(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _message(error: Any) -> str:
    """Pydantic's error in the project's words."""
    loc, key = error["loc"], error["loc"][-1] if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        known = [field.alias or name for name, field in table_at(loc[:-1]).model_fields.items()]
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        return "unknown key; " + (f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(known)}")
    if error["type"] == "missing":
        if len(loc) == 1:
            return "missing [[dataset]]" if key == "dataset" else f"missing section [{key}]"
        return "missing: set it here or export it before submitting" if key in PATH_VARIABLES else "missing (required)"
    if error["type"] == "model_type":
        return f"expected a table, got {kind(error['input'])}"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    return error["msg"]  # pragma: no cover - every other check raises in the project's words


def _problems(error: ValidationError) -> list[tuple[str, str]]:
    problems = []
    for item in error.errors(include_url=False):
        cause = item.get("ctx", {}).get("error")
        if isinstance(cause, Problems):
            problems += [(_path(item["loc"] + sub), message) for sub, message in cause.items]
        else:
            problems.append((_path(item["loc"]), _message(item)))
    return problems


def parse_spec(
    data: Mapping[str, Any],
    base: str | os.PathLike = ".",
    *,
    environ: Mapping[str, str] | None = None,
    source: str | os.PathLike | None = None,
    default_device: str = "cuda",
) -> ExperimentSpec:
    """Validate a spec already read from TOML, then expand its sweeps; relative paths against ``base``.

    ``environ`` (default ``os.environ``) gives nnU-Net's folders that the spec leaves out;
    ``default_device`` is the device where ``[environment]`` names none (``cuda`` for ``submit``,
    this machine's for ``run``); ``source`` is the spec file, for messages.

    Raises:
        SpecError: naming every problem with its key path.
    """
    context = {
        "base": Path(base).resolve(),
        "environ": os.environ if environ is None else environ,
        "default_device": default_device,
    }
    # the folders may come from the environment, so an absent [environment] is checked as an empty one
    problems = [] if "environment" in data else [("environment", "missing section [environment]")]
    try:
        spec = ExperimentSpec.model_validate({"environment": {}, **data}, context=context)
    except ValidationError as error:
        problems += _problems(error)
    else:
        for i, dataset in enumerate(spec.datasets):
            for j, sweep in enumerate(dataset.sweep):
                problems += [(f"dataset[{i}].sweep[{j}]", p) for p in sweep.expand(dataset.trained_plans)[1]]
    if problems:
        if any("Closest valid name" in message for _, message in problems):
            problems.append(("", "Trainer names:\n" + loss_config.GRAMMAR))
        raise SpecError(problems, source)
    spec._source = Path(source).resolve() if source is not None else None
    return spec


def load_spec(
    path: str | os.PathLike, *, environ: Mapping[str, str] | None = None, default_device: str = "cuda"
) -> ExperimentSpec:
    """Read and validate a TOML spec file (see :func:`parse_spec`); SpecError if missing, not TOML, or refused."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise SpecError([("", f"no such file: {path}")], path) from None
    except tomllib.TOMLDecodeError as error:
        raise SpecError([("", f"not valid TOML: {error}")], path) from None
    return parse_spec(data, path.resolve().parent, environ=environ, source=path, default_device=default_device)
