"""The report's Markdown and figures."""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from nnunet_dicephi._nnunet_names import SEPARATOR, parse_results_folder_name

from .inputs import Configuration
from .metrics import METRICS


def _number(value: float, digits: str = ".3f") -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, digits)


def _p(value: float, n_resamples: int) -> str:
    if math.isnan(value):
        return "–"
    return f"< {1 / n_resamples:.0e}" if value == 0 else f"{value:.3g}"


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    def line(cells: Iterable[object]) -> str:
        # a "|" inside a cell (|ΔV|) would end the cell
        return "| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |"

    return [line(header), "|" + "---|" * len(header)] + [line(row) for row in rows]


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


CONVENTIONS = """\
- **DSC** = 2|Y ∩ Ŷ| / (|Y| + |Ŷ|) per case and class. **Empty reference and empty prediction → DSC = 1**
  (a correctly predicted empty map; nnU-Net's evaluator gives NaN there and leaves the case out of its mean);
  empty reference and non-empty prediction → 0; non-empty reference and empty prediction → 0.
  *DSC* is the mean over all annotated cases (± sample standard deviation), *DSC non-empty ref.* the mean over
  cases with a non-empty reference, *DSC nnU-Net* the mean over cases where nnU-Net's DSC is defined (not both
  empty), which is the number in nnU-Net's `summary.json`; *DSC pooled* = 2 Σ|Y ∩ Ŷ| / (Σ|Y| + Σ|Ŷ|) over the voxel
  counts of all annotated cases (a both-empty case adds nothing, a false positive on an empty image costs its
  size). *Jaccard* (`per_case.csv`, `jaccard_mean` in `summary.csv`)
  = |Y ∩ Ŷ| / |Y ∪ Ŷ| = DSC / (2 − DSC) per case (1 when both are empty), averaged like the DSC.
- **ΔV** = predicted − reference volume in ml, from the reference image's voxel spacing (2D images: 1 mm thick).
  Reference voxels with the ignore label are left out of the DSC and of both volumes, as in nnU-Net.
- **Partial labels**: (case, class) pairs that the dataset.json manifest (`dicephi_partial_labels`) marks as
  not annotated are left out of every statistic and counted as *unannotated*; they stay in `per_case.csv` with
  `annotated = False`.
- **AUC**: ROC of the predicted volume as a score for detecting a non-empty reference (the paper's Fig. 2); only
  defined when the annotated cases include both empty and non-empty references.
- **p**: paired non-parametric bootstrap over the cases both configurations have (annotated in both): the mean
  of the differences a − b is resampled ({n_resamples} resamples, seed {seed}); p = min(1, 2 min(P(m* ≤ 0),
  P(m* ≥ 0))) over the bootstrap distribution of the mean difference m*, with the 95 % percentile interval.
"""


def markdown_report(
    configurations: Sequence[Configuration],
    summary: pd.DataFrame,
    pairwise: pd.DataFrame,
    *,
    n_resamples: int,
    seed: int,
    notes: Sequence[str] = (),
    figures: dict[str, list[tuple[str, str]]] | None = None,
) -> str:
    """The report: inputs, conventions, and per dataset and class the summary and pairwise tables."""
    lines = ["# nnunet-dicephi report", "", "## Inputs", ""]
    lines += _table(
        ("configuration", "dataset", "folder", "folds", "cases", "references"),
        (
            (
                c.name,
                c.dataset,
                f"`{c.folder}`",
                ", ".join(sorted({fold for fold, _ in c.predictions.values()})) or "–",
                len(c.predictions),
                f"`{c.reference_dir}`",
            )
            for c in configurations
        ),
    )
    lines += ["", "## Conventions", "", CONVENTIONS.format(n_resamples=n_resamples, seed=seed)]
    for dataset in dict.fromkeys(summary["dataset"]):
        lines += [f"## {dataset}", ""]
        dataset_summary = summary[summary["dataset"] == dataset]
        for name in dict.fromkeys(dataset_summary["class"]):
            rows = dataset_summary[dataset_summary["class"] == name]
            lines += [f"### {name} (label {rows['label'].iloc[0]})", ""]
            lines += _table(
                (
                    "configuration",
                    "n",
                    "unannotated",
                    "empty ref.",
                    "DSC",
                    "DSC non-empty ref.",
                    "DSC nnU-Net",
                    "DSC pooled",
                    "ΔV [ml]",
                    "|ΔV| [ml]",
                    "AUC",
                ),
                (
                    (
                        r.configuration,
                        r.n,
                        r.n_unannotated,
                        r.n_empty_reference,
                        f"{_number(r.dsc_mean)} ± {_number(r.dsc_std)}",
                        _number(r.dsc_nonempty_reference_mean),
                        _number(r.dsc_nnunet_mean),
                        _number(r.dsc_pooled),
                        _number(r.delta_ml_mean, ".4g"),
                        _number(r.abs_delta_ml_mean, ".4g"),
                        _number(r.auc),
                    )
                    for r in rows.itertuples()
                ),
            )
            reasons = {r.auc_note for r in rows.itertuples() if r.auc_note}
            lines += [""] + [f"AUC {reason}." for reason in sorted(reasons)] + ([""] if reasons else [])
            pairs = pairwise[(pairwise["dataset"] == dataset) & (pairwise["class"] == name)]
            if len(pairs):
                lines += _table(
                    ("a", "b", "metric", "n", "mean a", "mean b", "a − b [95 % CI]", "p"),
                    (
                        (
                            r.configuration_a,
                            r.configuration_b,
                            METRICS[r.metric],
                            r.n_common,
                            _number(r.mean_a, ".4g"),
                            _number(r.mean_b, ".4g"),
                            f"{_number(r.mean_difference, '.4g')} [{_number(r.ci_low, '.4g')}, "
                            f"{_number(r.ci_high, '.4g')}]" + (f" ({r.note})" if r.note else ""),
                            _p(r.p_value, n_resamples),
                        )
                        for r in pairs.itertuples()
                    ),
                )
                lines.append("")
        for title, file in (figures or {}).get(dataset, []):
            lines += [f"![{title}]({file})", ""]
    if notes:
        lines += ["## Notes", ""] + [f"- {note}" for note in notes] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _grid(n: int):
    from matplotlib.figure import Figure

    columns = min(n, 4)
    rows = math.ceil(n / columns)
    figure = Figure(figsize=(4.2 * columns, 3.8 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return figure, axes


def short_names(configurations: list[str]) -> tuple[dict[str, str], str]:
    """Labels for a figure, and what every configuration shares (for its title).

    A results folder ``<Trainer>_<options>__<plans>__<configuration>`` keeps its loss name and the
    parts that differ between ``configurations``: ``TrainerDiceI_ep22_it40_seed0__nnUNetPlans__2d``
    beside ``TrainerGDL_ep22_it40_seed0__nnUNetPlans__2d`` is ``TrainerDiceI``, and the title
    gets ``ep22_it40_seed0, nnUNetPlans, 2d``. Other names stay as they are.
    """
    unchanged = {name: name for name in configurations}, ""
    try:
        folders = [parse_results_folder_name(name) for name in configurations]
    except ValueError:  # not results folders
        return unchanged
    if not folders:
        return unchanged
    words = [folder.trainer.split("_") for folder in folders]
    shared_options = set.intersection(*(set(w[1:]) for w in words)) if len(folders) > 1 else set()
    differing = [field for field in ("plans", "configuration") if len({getattr(f, field) for f in folders}) > 1]
    labels = {}
    for name, folder, w in zip(configurations, folders, words):
        trainer = "_".join([w[0], *(o for o in w[1:] if o not in shared_options)])
        labels[name] = SEPARATOR.join([trainer, *(getattr(folder, field) for field in differing)])
    if len(set(labels.values())) < len(labels):  # never merge two configurations
        return unchanged
    common = "_".join(o for o in words[0][1:] if o in shared_options)
    same = [getattr(folders[0], field) for field in ("plans", "configuration") if field not in differing]
    shared = ([common] if common else []) + same
    return labels, ", ".join(shared)


def _title(dataset: str, shared: str) -> str:
    return f"{dataset}\nall: {shared}" if shared else dataset


def distribution_figure(per_case: pd.DataFrame, dataset: str, metric: str, ylabel: str, path: Path) -> None:
    """One panel per class of ``dataset``: ``metric`` of its annotated cases per configuration (box and points)."""
    data = per_case[(per_case["dataset"] == dataset) & per_case["annotated"]]
    classes = list(dict.fromkeys(per_case.loc[per_case["dataset"] == dataset, "class"]))
    configurations = list(dict.fromkeys(per_case.loc[per_case["dataset"] == dataset, "configuration"]))
    labels, shared = short_names(configurations)
    figure, axes = _grid(len(classes))
    jitter = np.random.default_rng(0)
    for ax, name in zip(axes, classes):
        values = [
            data[(data["class"] == name) & (data["configuration"] == c)][metric].to_numpy(float) for c in configurations
        ]
        positions = [i for i, v in enumerate(values) if len(v)]
        if positions:
            ax.boxplot(
                [values[i] for i in positions], positions=positions, widths=0.5, showfliers=False, showmeans=True
            )
            for i in positions:
                ax.plot(i + jitter.uniform(-0.15, 0.15, len(values[i])), values[i], ".", alpha=0.5, color="C0")
        else:
            ax.text(0.5, 0.5, "no annotated cases", ha="center", va="center", transform=ax.transAxes)
        if metric == "delta_ml":
            ax.axhline(0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks(range(len(configurations)), [labels[c] for c in configurations], rotation=30, ha="right")
        ax.set_title(name)
        ax.set_ylabel(ylabel)
    figure.suptitle(_title(dataset, shared))
    figure.savefig(path, dpi=120)


def _roc_figure(per_case: pd.DataFrame, summary: pd.DataFrame, dataset: str, path: Path) -> None:
    from sklearn.metrics import roc_curve

    data = per_case[(per_case["dataset"] == dataset) & per_case["annotated"]]
    rows = summary[summary["dataset"] == dataset]
    classes = list(dict.fromkeys(rows["class"]))
    labels, shared = short_names(list(dict.fromkeys(rows["configuration"])))
    figure, axes = _grid(len(classes))
    for ax, name in zip(axes, classes):
        ax.plot([0, 1], [0, 1], color="grey", linewidth=0.8, linestyle="--")
        undefined = []
        for r in rows[rows["class"] == name].itertuples():
            if math.isnan(r.auc):
                undefined.append(f"{labels[r.configuration]}: AUC {r.auc_note}")
                continue
            cases = data[(data["class"] == name) & (data["configuration"] == r.configuration)]
            fpr, tpr, _ = roc_curve(~cases["reference_empty"].to_numpy(bool), cases["predicted_ml"].to_numpy(float))
            ax.plot(fpr, tpr, label=f"{labels[r.configuration]} (AUC {r.auc:.3f})")
        if undefined:  # wrapped here: matplotlib wraps at the figure's edge, not the axes'
            text = "\n".join(textwrap.fill(line, 44) for line in undefined)
            ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=7, transform=ax.transAxes)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="lower right", fontsize=8)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="1 − specificity", ylabel="sensitivity")
        ax.set_title(f"{name}: detection by predicted volume")
    figure.suptitle(_title(dataset, shared))
    figure.savefig(path, dpi=120)


def write_figures(per_case: pd.DataFrame, summary: pd.DataFrame, folder: Path) -> dict[str, list[tuple[str, str]]]:
    """The PNG figures of every dataset; returns (title, file name) per dataset."""
    figures = {}
    for dataset in dict.fromkeys(per_case["dataset"]):
        safe = _safe(dataset)
        made = [
            ("DSC per class and configuration", f"dsc_{safe}.png"),
            ("ΔV per class and configuration", f"delta_volume_{safe}.png"),
        ]
        distribution_figure(per_case, dataset, "dsc", "DSC", folder / made[0][1])
        distribution_figure(per_case, dataset, "delta_ml", "ΔV [ml]", folder / made[1][1])
        # no ROC where no AUC is defined (no empty, or only empty, references): the table says why
        if summary.loc[summary["dataset"] == dataset, "auc"].notna().any():
            made.append(("ROC of the predicted volume for detecting each class", f"roc_{safe}.png"))
            _roc_figure(per_case, summary, dataset, folder / made[2][1])
        figures[dataset] = made
    return figures
