"""Comparing configurations: per-class summaries, the paired bootstrap, detection AUC."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from .metrics import METRICS, CaseMetrics

CONFIDENCE_LEVEL = 0.95


@dataclass(frozen=True)
class PairedComparison:
    """Paired bootstrap of the mean difference ``a − b`` over common cases."""

    n: int
    mean_a: float
    mean_b: float
    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    note: str = ""


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_resamples: int = 10000,
    seed: int = 0,
    confidence_level: float = CONFIDENCE_LEVEL,
) -> PairedComparison:
    """Bootstrap the mean paired difference ``a − b``; two-sided p-value and percentile interval.

    ``p = min(1, 2 · min(P(m* ≤ 0), P(m* ≥ 0)))`` over the bootstrap distribution of the mean
    difference ``m*`` (see the module docstring). NaN, with a note, for fewer than 2 pairs.
    """
    from scipy.stats import bootstrap

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    mean_a = float(a.mean()) if n else math.nan
    mean_b = float(b.mean()) if n else math.nan
    if n < 2:
        return PairedComparison(
            n, mean_a, mean_b, mean_a - mean_b, math.nan, math.nan, math.nan, f"{n} common case(s); at least 2 needed"
        )
    difference = a - b
    # one-sample bootstrap of the differences = scipy's paired bootstrap of the two samples; the
    # percentile interval matches the p-value (p < α exactly when the (1 − α) interval excludes 0)
    result = bootstrap(
        (difference,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=confidence_level,
        method="percentile",
        **_seeded(np.random.default_rng(seed)),
    )
    means = result.bootstrap_distribution
    p_value = min(1.0, 2.0 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
    return PairedComparison(
        n,
        mean_a,
        mean_b,
        float(difference.mean()),
        float(result.confidence_interval.low),
        float(result.confidence_interval.high),
        p_value,
    )


def _seeded(generator: np.random.Generator) -> dict:
    import inspect

    from scipy.stats import bootstrap

    # scipy ≥ 1.15 names the generator `rng`; older releases `random_state`
    return {"rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state": generator}


PER_CASE_COLUMNS = (
    "dataset",
    "configuration",
    "case",
    "fold",
    "class",
    "label",
    "annotated",
    "reference_empty",
    "prediction_empty",
    "dsc",
    "jaccard",
    "reference_ml",
    "predicted_ml",
    "delta_ml",
    "reference_voxels",
    "predicted_voxels",
    "overlap_voxels",
    "voxel_ml",
    "prediction_file",
    "reference_file",
)
SUMMARY_COLUMNS = (
    "dataset",
    "class",
    "label",
    "configuration",
    "n",
    "n_unannotated",
    "n_empty_reference",
    "n_empty_prediction",
    "dsc_mean",
    "dsc_std",
    "dsc_nonempty_reference_mean",
    "dsc_nnunet_mean",
    "dsc_pooled",
    "jaccard_mean",
    "reference_ml_mean",
    "predicted_ml_mean",
    "delta_ml_mean",
    "abs_delta_ml_mean",
    "auc",
    "auc_note",
)
PAIRWISE_COLUMNS = (
    "dataset",
    "class",
    "metric",
    "configuration_a",
    "configuration_b",
    "n_common",
    "mean_a",
    "mean_b",
    "mean_difference",
    "ci_low",
    "ci_high",
    "p_value",
    "n_resamples",
    "seed",
    "note",
)


def _mean(values: np.ndarray) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def detection_auc(reference_empty: np.ndarray, predicted_ml: np.ndarray) -> tuple[float, str]:
    """AUC of the predicted volume as a score for "the reference is not empty"; NaN and why when undefined."""
    from sklearn.metrics import roc_auc_score

    present = ~np.asarray(reference_empty, dtype=bool)
    if present.size == 0:
        return math.nan, "no annotated cases"
    if present.all():
        return math.nan, "undefined: no annotated case has an empty reference"
    if not present.any():
        return math.nan, "undefined: every annotated reference is empty"
    return float(roc_auc_score(present, np.asarray(predicted_ml, dtype=float))), ""


def pooled_dsc(pairs: pd.DataFrame) -> float:
    """The DSC of the voxel counts summed over (case, class) pairs: 2 Σ|Y ∩ Ŷ| / (Σ|Y| + Σ|Ŷ|).

    Large structures weigh more than small ones and an empty image adds only its false positives, so
    a both-empty pair counts for nothing (not as 1, as in the mean); 1 when every pair is empty.
    """
    total = pairs[["reference_voxels", "predicted_voxels", "overlap_voxels"]].sum()
    return CaseMetrics(**{column: int(count) for column, count in total.items()}, voxel_ml=math.nan).dsc


def _groups(per_case: pd.DataFrame):
    """(dataset, class, configuration, rows) in the order of the inputs and of dataset.json's labels."""
    for dataset in dict.fromkeys(per_case["dataset"]):
        in_dataset = per_case[per_case["dataset"] == dataset]
        for name in dict.fromkeys(in_dataset["class"]):
            of_class = in_dataset[in_dataset["class"] == name]
            for configuration in dict.fromkeys(of_class["configuration"]):
                yield dataset, name, configuration, of_class[of_class["configuration"] == configuration]


def summarize(per_case: pd.DataFrame) -> pd.DataFrame:
    """Summary per (dataset, class, configuration) over annotated pairs; see the module docstring."""
    import pandas as pd

    rows = []
    for dataset, name, configuration, group in _groups(per_case):
        used = group[group["annotated"]]
        dsc = used["dsc"].to_numpy(float)
        empty_reference = used["reference_empty"].to_numpy(bool)
        empty_prediction = used["prediction_empty"].to_numpy(bool)
        auc, auc_note = detection_auc(empty_reference, used["predicted_ml"].to_numpy(float))
        rows.append(
            {
                "dataset": dataset,
                "class": name,
                "label": group["label"].iloc[0],
                "configuration": configuration,
                "n": len(used),
                "n_unannotated": int((~group["annotated"]).sum()),
                "n_empty_reference": int(empty_reference.sum()),
                "n_empty_prediction": int(empty_prediction.sum()),
                "dsc_mean": _mean(dsc),
                "dsc_std": float(np.std(dsc, ddof=1)) if len(dsc) > 1 else math.nan,
                "dsc_nonempty_reference_mean": _mean(dsc[~empty_reference]),
                "dsc_nnunet_mean": _mean(dsc[~(empty_reference & empty_prediction)]),
                "dsc_pooled": pooled_dsc(used) if len(used) else math.nan,
                "jaccard_mean": _mean(used["jaccard"].to_numpy(float)),
                "reference_ml_mean": _mean(used["reference_ml"].to_numpy(float)),
                "predicted_ml_mean": _mean(used["predicted_ml"].to_numpy(float)),
                "delta_ml_mean": _mean(used["delta_ml"].to_numpy(float)),
                "abs_delta_ml_mean": _mean(np.abs(used["delta_ml"].to_numpy(float))),
                "auc": auc,
                "auc_note": auc_note,
            }
        )
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def compare_pairwise(per_case: pd.DataFrame, *, n_resamples: int = 10000, seed: int = 0) -> pd.DataFrame:
    """Paired bootstrap between every two configurations of a dataset, per class and metric."""
    import pandas as pd

    rows = []
    for (dataset, name), group in per_case.groupby(["dataset", "class"], sort=False):
        names = list(dict.fromkeys(group["configuration"]))
        for i, first in enumerate(names):
            for second in names[i + 1 :]:
                a = group[(group["configuration"] == first) & group["annotated"]].set_index("case")
                b = group[(group["configuration"] == second) & group["annotated"]].set_index("case")
                common = sorted(set(a.index) & set(b.index))
                for metric in METRICS:
                    result = paired_bootstrap(
                        a.loc[common, metric].to_numpy(float),
                        b.loc[common, metric].to_numpy(float),
                        n_resamples=n_resamples,
                        seed=seed,
                    )
                    rows.append(
                        {
                            "dataset": dataset,
                            "class": name,
                            "metric": metric,
                            "configuration_a": first,
                            "configuration_b": second,
                            "n_common": result.n,
                            "mean_a": result.mean_a,
                            "mean_b": result.mean_b,
                            "mean_difference": result.mean_difference,
                            "ci_low": result.ci_low,
                            "ci_high": result.ci_high,
                            "p_value": result.p_value,
                            "n_resamples": n_resamples,
                            "seed": seed,
                            "note": result.note,
                        }
                    )
    return pd.DataFrame(rows, columns=list(PAIRWISE_COLUMNS))
