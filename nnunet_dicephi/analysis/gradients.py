r"""The Eq. 4 gradient explorer: how hard the Dice loss pushes an empty map toward empty.

This module is the ``nnunet-dicephi gradients`` verb and its table; the model is in :mod:`.eq4`,
the ε sweeps and scenarios in :mod:`.sweeps`, the figures in :mod:`.gradient_plots`.

The derivative of the general Dice loss (MICCAI 2022, Eq. 3) with respect to one predicted
probability takes two values per subset φ of Φ (Eq. 4):

.. math::

    \frac{\partial \mathrm{DL}}{\partial \tilde y_\omega}
        = -\frac{1}{|\Phi|}\left(\frac{2 y_\omega}{U_\phi + \epsilon_{dr}}
          - \frac{2 I_\phi + \epsilon_{nr}}{(U_\phi + \epsilon_{dr})^2}\right),
    \qquad I_\phi = \sum_{\phi} y\,\tilde y, \quad U_\phi = \sum_{\phi} (y + \tilde y).

Both values depend on the prediction only through the subset sums, so one training step is fully
described by a few numbers per map. The model used here (one output channel, as the paper's BRATS
runs) is a batch of B maps of N voxels each:

* an *empty* map (no labelled voxel) on which the network predicts a false-positive volume
  :math:`F = \sum_i \tilde y_i`;
* a *non-empty* map with V labelled voxels, of which the network covers ``overlap``·V
  (:math:`I = aV`), plus ``outside``·V predicted volume off the label
  (:math:`U = V + aV + oV`). The defaults a = o = ½ are the paper's Eq. 5 assumptions
  (Σỹ ≈ Σy, 50 % overlap).

A share ``empty_fraction`` of the batch is empty (at least one map, and at least one non-empty map
when B ≥ 2). For B = 1 a batch holds one map, so the empty and the non-empty map are two
different steps; this is why Φ = I and Φ = BI coincide at B = 1.

For Φ = I the subset of an empty map holds no label, :math:`I_\phi = 0`, :math:`U_\phi = F`, and

.. math::

    \frac{\partial \mathrm{DL}}{\partial \tilde y_\omega}
        = \frac{1}{B}\,\frac{\epsilon_{nr}}{(F + \epsilon_{dr})^2}
        \approx \frac{\epsilon_{nr}}{B F^2} \quad (F \gg \epsilon_{dr}),

negligible for ε = 1e-7: the map is ignored, which is what makes Φ = I handle *missing* labels.
For ε_nr = ε_dr = ε this push is largest at ε = F, and the heuristic ε = v̂ (Sect. 2.3, the
expected labelled volume of one map) puts that maximum where an unlearned empty map predicts a
typical volume. For Φ = BI the empty map shares its subset with the labelled maps of the batch,
so it receives exactly the background gradient of those maps: empty maps are *learned*.

For ε → ∞ every gradient tends to ±1/(|Φ|·ε) on every map alike: the Dice loss becomes the
L1 loss Σ|y − ỹ|/ε, with no class balancing and a vanishing scale. The transition between the two
regimes is what :func:`transition` computes and the sweep recipe (:func:`sweep_names`) trains.

Φ = CI and Φ = BCI: with one output channel in the loss a batch element's classes are that one
channel, so CI gives the values of I and BCI those of BI (the core :func:`eq4_gradients` handles
any number of channels). Deep supervision is not modelled: the values are those of the
full-resolution output. Only numpy is imported at module level.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from nnunet_dicephi._cli import add_verb, refuse
from nnunet_dicephi.loss_config import PHIS

from .eq4 import (
    Eq4Gradients,
    StepGradients,
    batch_gradients,
    empty_maps_in_batch,
    eq4_gradients,
    heuristic_eps,
    maps_per_subset,
    step_gradients,
    step_sums,
    transition,
)
from .gradient_plots import plot_gradient_vs_fp, plot_transition
from .sweeps import (  # noqa: F401
    REPORT_COMMAND,
    TINY_EPS,
    Scenario,
    SweepEntry,
    _default_eps,
    _Eps,
    _eps_text,
    _one_digit,
    _subset_eps,
    scenarios_from_statistics,
    sweep_eps,
    sweep_names,
    sweep_recipe,
    sweep_spec,
)

__all__ = [
    "PHIS",
    "BRATS_PATCH_VOXELS",
    "BRATS_VOLUME",
    "Eq4Gradients",
    "StepGradients",
    "Scenario",
    "SweepEntry",
    "eq4_gradients",
    "maps_per_subset",
    "step_sums",
    "step_gradients",
    "empty_maps_in_batch",
    "batch_gradients",
    "transition",
    "heuristic_eps",
    "sweep_eps",
    "sweep_names",
    "sweep_recipe",
    "sweep_spec",
    "scenarios_from_statistics",
    "add_parser",
]

BRATS_PATCH_VOXELS = 80 * 80 * 48
"""The paper's BRATS output segment, 80×80×48 voxels."""
BRATS_VOLUME = 12412.0
"""The paper's ε for fully labelled BRATS (mean tumour voxels of a patch), used as V of a non-empty map.

With a quarter of the maps empty this gives v̂ ≈ 9300, close to the paper's 8789 for its partially
labelled BRATS (75 of 285 cases empty)."""


def _load_dataset(args: argparse.Namespace) -> tuple[list[Scenario], int]:
    """Scenarios and nnU-Net's batch size from a dataset fold, via the trainer's statistics pass."""
    from nnunet_dicephi.trainers.reading import reading_trainer

    with reading_trainer(args.dataset, args.configuration, args.fold, args.trainer, args.plans) as trainer:
        stats = trainer.dataset_statistics()
    scenarios = scenarios_from_statistics(
        stats.channels,
        stats.expected_volume,
        stats.patch_voxels,
        has_background=not trainer.label_manager.has_regions,
        empty_fraction=args.empty_fraction,
    )
    return scenarios, int(trainer.configuration_manager.batch_size)


# --- the table ----------------------------------------------------------------------------------


class _InputError(ValueError):
    """Bad command-line input: reported in one line, exit status 2."""


def _parse_eps(token: str) -> _Eps:
    parts = token.split(":")
    if len(parts) > 2:
        raise _InputError(f"--eps {token!r}: use EPS or EPS_NR:EPS_DR")
    values: list[float | str] = []
    for part in parts:
        if part.upper() == "H":
            values.append("H")
            continue
        try:
            value = float(part)
        except ValueError:
            raise _InputError(f"--eps {token!r}: {part!r} is neither a number of voxels nor H") from None
        if not (value >= 0 and math.isfinite(value)):
            raise _InputError(f"--eps {token!r}: ε must be a finite number of voxels >= 0")
        values.append(value)
    return _Eps(values[0], values[-1])


COLUMNS = (
    "scenario",
    "phi",
    "batch_size",
    "empty_maps",
    "eps_nr",
    "eps_dr",
    "eps_nr_subset",
    "eps_dr_subset",
    "volume",
    "fp",
    "v_hat",
    "patch_voxels",
    "grad_empty",
    "grad_background",
    "grad_label",
    "empty_to_background",
    "empty_to_label",
)


def _rows(
    scenarios: Sequence[Scenario],
    phis: Sequence[str],
    batch_sizes: Sequence[int],
    eps_list: Sequence[_Eps] | None,
    *,
    fp: float | None,
    empty_fraction: float,
    overlap: float,
    outside: float,
) -> list[dict]:
    rows = []
    step = {"empty_fraction": empty_fraction, "overlap": overlap, "outside": outside}
    for scenario in scenarios:
        f_value = scenario.v_hat if fp is None else fp
        for phi in phis:
            for batch in batch_sizes:
                for eps in eps_list or _default_eps(scenario.v_hat):
                    g = scenario.gradients(f_value, eps, phi=phi, batch_size=batch, **step)
                    rows.append(
                        {
                            "scenario": scenario.name,
                            "phi": phi,
                            "batch_size": batch,
                            "empty_maps": 1 if batch == 1 else empty_maps_in_batch(batch, empty_fraction),
                            "eps_nr": _eps_text(eps.nr),
                            "eps_dr": _eps_text(eps.dr),
                            "eps_nr_subset": _subset_eps(eps.nr, scenario.v_hat, phi, batch),
                            "eps_dr_subset": _subset_eps(eps.dr, scenario.v_hat, phi, batch),
                            "volume": scenario.volume,
                            "fp": f_value,
                            "v_hat": scenario.v_hat,
                            "patch_voxels": scenario.patch_voxels,
                            "grad_empty": float(g.empty),
                            "grad_background": float(g.background),
                            "grad_label": float(g.label),
                            "empty_to_background": float(g.empty_to_background),
                            "empty_to_label": float(g.empty_to_label),
                        }
                    )
    return rows


def _csv_text(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _table_text(rows: Sequence[dict]) -> str:
    header = (
        "scenario",
        "Φ",
        "B",
        "empty",
        "ε_nr",
        "ε_dr",
        "V",
        "F",
        "g empty",
        "g bg",
        "g label",
        "emp/bg",
        "emp/lab",
    )
    body = [
        (
            r["scenario"],
            r["phi"],
            str(r["batch_size"]),
            f"{r['empty_maps']}/{r['batch_size']}",
            r["eps_nr"],
            r["eps_dr"],
            f"{r['volume']:.6g}",
            f"{r['fp']:.6g}",
            f"{r['grad_empty']:.3e}",
            f"{r['grad_background']:.3e}",
            f"{r['grad_label']:.3e}",
            f"{r['empty_to_background']:.3g}",
            f"{r['empty_to_label']:.3g}",
        )
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in body)) for i, h in enumerate(header)]
    left = {0, 1, 4, 5}

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    lines = [line(header), "  ".join("-" * w for w in widths), *(line(b) for b in body)]
    lines += [
        "",
        "g = ∂DL/∂ỹ per voxel (Eq. 4): on an empty map (push toward empty), on y=0 and y=1 voxels of a",
        "non-empty map. emp/bg = g empty / g bg (1: the empty map is pushed like the background of a",
        "labelled map; ≈0: it is ignored). emp/lab = g empty / |g label|. H = v̂ per map (×B under BI).",
        "B = 1: the empty and the non-empty map are two steps.",
    ]
    return "\n".join(lines)


# --- the command line ---------------------------------------------------------------------------


def add_parser(verbs) -> None:
    """Add the ``gradients`` verb to the ``nnunet-dicephi`` subparsers ``verbs``."""
    p = add_verb(verbs, "gradients", run_gradients)
    source = p.add_argument_group("maps (given volumes, or a dataset fold)")
    source.add_argument(
        "--volumes",
        nargs="+",
        type=float,
        metavar="V",
        help=f"labelled voxels of non-empty maps, one scenario each (default: {BRATS_VOLUME:g}, BRATS-like)",
    )
    source.add_argument(
        "--patch-voxels",
        type=int,
        metavar="N",
        help=f"voxels of one map (default: {BRATS_PATCH_VOXELS} = 80x80x48)",
    )
    source.add_argument(
        "--v-hat", type=float, metavar="VOXELS", help="heuristic epsilon for --volumes (default: (1-f) * mean(V))"
    )
    source.add_argument("--dataset", help="dataset id or name: N and v-hat per class from the statistics pass")
    source.add_argument("--configuration", help="nnU-Net configuration, with --dataset")
    source.add_argument("--fold", help="fold number or 'all', with --dataset")
    source.add_argument("--plans", default="nnUNetPlans", help="plans identifier (default: nnUNetPlans)")
    source.add_argument("--trainer", default="TrainerDiceIEps", help="trainer whose patch sampling to model")
    model = p.add_argument_group("the step model")
    model.add_argument(
        "--phi",
        nargs="+",
        default=["I", "BI"],
        help="reduction sets: I CI BI BCI (default: I BI); with one output channel CI = I and BCI = BI",
    )
    model.add_argument(
        "--batch-size",
        nargs="+",
        type=int,
        metavar="B",
        help="batch sizes (default: 2, or the plans' with --dataset)",
    )
    model.add_argument(
        "--eps",
        nargs="+",
        metavar="EPS",
        help="epsilon values: a number of voxels, H (heuristic v-hat, per map), or EPS_NR:EPS_DR "
        "(default: 1e-7, v-hat/100, H, 10*v-hat)",
    )
    model.add_argument(
        "--empty-fraction",
        type=float,
        default=0.25,
        metavar="F",
        help="share f of empty maps (default: 0.25; B>1 has 1..B-1)",
    )
    model.add_argument(
        "--overlap", type=float, default=0.5, metavar="A", help="covered share a of a label: I = aV (default 0.5)"
    )
    model.add_argument(
        "--outside", type=float, default=0.5, metavar="O", help="false positives on a non-empty map, in V (0.5)"
    )
    model.add_argument(
        "--fp", type=float, metavar="F", help="F, volume predicted on an empty map, for the table (default: v-hat)"
    )
    sweep = p.add_argument_group("sweep recipe")
    sweep.add_argument(
        "--sweep",
        action="store_true",
        help="print and write the epsilon sweep (sweep.txt; with a dataset, sweep.toml for nnunet-dicephi run)",
    )
    sweep.add_argument(
        "--per-decade", type=int, default=1, metavar="K", help="sweep values per decade: 1, 2 or 3 (default 1)"
    )
    sweep.add_argument(
        "--folds", nargs="+", metavar="FOLD", help="folds to train in the sweep (default: 0-4, or --fold)"
    )
    sweep.add_argument("--epochs", type=int, metavar="K", help="append _ep<K> to the sweep's trainer names")
    p.add_argument("-o", "--output", default="dicephi_gradients", help="output folder (default: ./dicephi_gradients)")
    p.add_argument("--force", action="store_true", help="replace an existing, non-empty output folder")


@dataclass(frozen=True)
class _Settings:
    scenarios: tuple[Scenario, ...]
    phis: tuple[str, ...]
    batch_sizes: tuple[int, ...]
    eps: tuple[_Eps, ...] | None
    fp: float | None
    empty_fraction: float
    overlap: float
    outside: float


def _check_number(name: str, value: float | None, low: float, high: float | None = None, *, open_high=False) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and value >= low and (high is None or (value < high if open_high else value <= high))
    if not ok:
        bound = f" and {'<' if open_high else '<='} {high:g}" if high is not None else ""
        raise _InputError(f"{name} must be >= {low:g}{bound}; got {value:g}")


def _validate_common(args: argparse.Namespace) -> None:
    bad = [phi for phi in args.phi if phi not in PHIS]
    if bad:
        raise _InputError(f"unknown Φ {', '.join(map(repr, bad))}; choose from {' '.join(PHIS)}")
    if args.batch_size is not None and any(b < 1 for b in args.batch_size):
        raise _InputError(f"--batch-size must be >= 1; got {' '.join(map(str, args.batch_size))}")
    _check_number("--empty-fraction", args.empty_fraction, 0.0, 1.0, open_high=True)
    _check_number("--overlap", args.overlap, 0.0, 1.0)
    _check_number("--outside", args.outside, 0.0)
    _check_number("--fp", args.fp, 0.0)
    if args.per_decade < 1:
        raise _InputError(f"--per-decade must be >= 1; got {args.per_decade}")
    if args.epochs is not None and args.epochs < 1:
        raise _InputError(f"--epochs must be >= 1; got {args.epochs}")


def _settings(args: argparse.Namespace) -> _Settings:
    _validate_common(args)
    eps = tuple(_parse_eps(t) for t in args.eps) if args.eps else None
    if args.dataset is not None:
        if args.volumes or args.patch_voxels or args.v_hat:
            raise _InputError("give either --dataset or --volumes/--patch-voxels/--v-hat, not both")
        if args.configuration is None or args.fold is None:
            raise _InputError("--dataset needs --configuration and --fold")
        if args.fold != "all" and not args.fold.isdigit():
            raise _InputError(f"--fold must be a fold number or 'all'; got {args.fold!r}")
        try:
            scenarios, plan_batch = _load_dataset(args)
        except Exception as error:  # nnU-Net's many failure types become one clear message
            raise _InputError(f"cannot read the statistics of dataset {args.dataset}: {error}") from None
        if not scenarios:
            raise _InputError(f"dataset {args.dataset}: no foreground class with labelled voxels in its patches")
        batch_sizes = tuple(args.batch_size or [plan_batch])
    else:
        volumes = args.volumes or [BRATS_VOLUME]
        patch = args.patch_voxels if args.patch_voxels is not None else BRATS_PATCH_VOXELS
        if patch < 1:
            raise _InputError(f"--patch-voxels must be >= 1; got {patch}")
        for v in volumes:
            if not (math.isfinite(v) and 0 < v <= patch):
                raise _InputError(f"--volumes: each V must be > 0 and at most --patch-voxels ({patch}); got {v:g}")
        _check_number("--v-hat", args.v_hat, 0.0)
        if args.v_hat == 0:
            raise _InputError("--v-hat must be > 0")
        v_hat = args.v_hat if args.v_hat is not None else heuristic_eps(volumes, args.empty_fraction)
        scenarios = [Scenario(f"V={v:g}", float(v), float(v_hat), int(patch)) for v in volumes]
        batch_sizes = tuple(args.batch_size or [2])
    for scenario in scenarios:
        if args.fp is not None and args.fp > scenario.patch_voxels:
            raise _InputError(f"--fp {args.fp:g} exceeds the map's {scenario.patch_voxels} voxels")
    if len({s.slug for s in scenarios}) < len(scenarios):
        raise _InputError("scenarios must differ (repeated --volumes?)")
    return _Settings(
        tuple(scenarios),
        tuple(dict.fromkeys(args.phi)),
        tuple(dict.fromkeys(batch_sizes)),
        eps,
        args.fp,
        args.empty_fraction,
        args.overlap,
        args.outside,
    )


def _check_output(path: str, force: bool) -> None:
    """Refuse an output folder this verb may not write (see ``output_folder_problem``)."""
    from nnunet_dicephi._files import output_folder_problem

    path = os.path.abspath(path)
    problem = output_folder_problem(
        path, force=force, marker="gradients.csv", command="nnunet-dicephi gradients", parent_must_exist=True
    )
    if problem is not None:
        raise _InputError(problem)


def _publish(tmp: str, path: str) -> None:
    """Move the finished folder into place; an old one (with --force) goes only once the new one is there."""
    from nnunet_dicephi._files import replace_folder

    replace_folder(tmp, path)


def run_gradients(args: argparse.Namespace) -> int:
    """Eq. 4 gradients on empty vs non-empty maps for (Phi, epsilon, B), and an epsilon sweep recipe.

    Models one training step (B maps of N voxels, some empty, some with V labelled voxels) and prints,
    writes as CSV and plots the Dice loss gradient (Eq. 4 of the MICCAI 2022 paper) on a voxel of an
    empty map against that on a non-empty map, for each Phi, epsilon and batch size: whether empty
    maps are learned (Phi=BI, large epsilon) or ignored (Phi=I, tiny epsilon). --sweep adds trainer
    names and commands for the transition from small to large epsilon.
    """
    from nnunet_dicephi._files import staging_folder, write_text_atomically

    try:
        settings = _settings(args)
        _check_output(args.output, args.force)
    except _InputError as error:
        return refuse("gradients", error)
    model = {"empty_fraction": settings.empty_fraction, "overlap": settings.overlap, "outside": settings.outside}
    rows = _rows(settings.scenarios, settings.phis, settings.batch_sizes, settings.eps, fp=settings.fp, **model)
    table = _table_text(rows)
    print(table)

    sweep_text, sweep_values, spec_text = None, [], None
    if args.sweep:
        v_hats = {s.name: s.v_hat for s in settings.scenarios}
        # the sweep's lower end (1e-7, then one voxel) is the same for every class; its upper end
        # follows the largest class
        entries = sweep_names(max(v_hats.values()), per_decade=args.per_decade, epochs=args.epochs)
        folds = args.folds or ([args.fold] if args.dataset is not None else ["0", "1", "2", "3", "4"])
        sweep_text = sweep_recipe(
            entries,
            v_hat=v_hats,
            dataset=str(args.dataset) if args.dataset is not None else "DATASET",
            configuration=args.configuration or "CONFIGURATION",
            folds=folds,
            plans=args.plans,
        )
        sweep_values = [e.eps for e in entries if not isinstance(e.eps, str)]
        print()
        print(sweep_text)
        dataset_id = re.fullmatch(r"(?:Dataset)?0*(\d+)(?:_.*)?", str(args.dataset or ""))
        if dataset_id and args.configuration:
            spec_text = sweep_spec(
                entries,
                dataset=dataset_id[1],
                configuration=args.configuration,
                folds=folds,
                plans=args.plans,
                epochs=args.epochs,
            )

    tmp = str(staging_folder(os.path.abspath(args.output)))
    try:
        write_text_atomically(os.path.join(tmp, "gradients.csv"), _csv_text(rows))
        write_text_atomically(os.path.join(tmp, "table.txt"), table + "\n")
        record = {
            "scenarios": [asdict(s) for s in settings.scenarios],
            "phi": list(settings.phis),
            "batch_size": list(settings.batch_sizes),
            "eps": None if settings.eps is None else [e.label() for e in settings.eps],
            "fp": settings.fp,
            **model,
        }
        write_text_atomically(os.path.join(tmp, "settings.json"), json.dumps(record, indent=2) + "\n")
        if sweep_text is not None:
            write_text_atomically(os.path.join(tmp, "sweep.txt"), sweep_text)
        if spec_text is not None:
            write_text_atomically(os.path.join(tmp, "sweep.toml"), spec_text)
        for scenario in settings.scenarios:
            plot_gradient_vs_fp(
                scenario,
                settings.phis,
                settings.batch_sizes,
                settings.eps or _default_eps(scenario.v_hat),
                os.path.join(tmp, f"gradient_vs_fp_{scenario.slug}.png"),
                **model,
            )
            plot_transition(
                scenario,
                os.path.join(tmp, f"transition_{scenario.slug}.png"),
                fp=scenario.v_hat if settings.fp is None else settings.fp,
                batch_sizes=settings.batch_sizes,
                sweep=sweep_values,
                **model,
            )
        _publish(tmp, args.output)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"\nwrote {os.path.abspath(args.output)}", file=sys.stderr)
    return 0
