"""The gradient explorer's figures: Eq. 4 against false positives, and the ε transition."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .eq4 import batch_gradients, empty_maps_in_batch, transition
from .sweeps import TINY_EPS, Scenario, _Eps


def _figure(**kwargs):
    # a bare Figure renders with Agg and leaves pyplot's global backend alone
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _prefix(scenario: Scenario) -> str:
    return "" if scenario.name.startswith("V=") else f"{scenario.name}: "


def plot_gradient_vs_fp(
    scenario: Scenario,
    phis: Sequence[str],
    batch_sizes: Sequence[int],
    eps_list: Sequence[_Eps],
    path: str,
    *,
    empty_fraction: float,
    overlap: float,
    outside: float,
) -> None:
    """Gradient on an empty-map voxel (solid) and on a y = 0 voxel of a non-empty map (dashed) vs F."""
    fp = np.logspace(-2, math.log10(scenario.patch_voxels), 241)
    fig = _figure(figsize=(3.6 * len(batch_sizes) + 0.6, 3.0 * len(phis) + 0.6), layout="constrained")
    axes = fig.subplots(len(phis), len(batch_sizes), squeeze=False, sharex=True)
    colors = [f"C{i}" for i in range(len(eps_list))]
    step = {"empty_fraction": empty_fraction, "overlap": overlap, "outside": outside}
    for row, phi in enumerate(phis):
        for col, batch in enumerate(batch_sizes):
            ax = axes[row, col]
            for color, eps in zip(colors, eps_list):
                g = scenario.gradients(fp, eps, phi=phi, batch_size=batch, **step)
                ax.loglog(fp, np.where(g.empty > 0, g.empty, np.nan), color=color, label=f"ε = {eps.label()}")
                ax.loglog(fp, np.where(g.background > 0, g.background, np.nan), color=color, ls="--", lw=0.9)
            ax.axvline(scenario.v_hat, color="grey", lw=0.7, ls=":")
            empty = 1 if batch == 1 else empty_maps_in_batch(batch, empty_fraction)
            ax.set_title(f"Φ = {phi}, B = {batch} ({empty} empty)", fontsize=9)
            if row == len(phis) - 1:
                ax.set_xlabel("F = Σỹ predicted on the empty map (voxels)")
            if col == 0:
                ax.set_ylabel("∂DL/∂ỹ per voxel")
    fig.legend(
        *axes[0, 0].get_legend_handles_labels(),
        loc="outside lower center",
        ncols=min(len(eps_list), 4),
        fontsize=8,
        title="solid: voxel of an empty map\ndashed: y=0 voxel of a non-empty map (equal under BI)",
        title_fontsize=8,
    )
    fig.suptitle(
        f"{_prefix(scenario)}V = {scenario.volume:.6g}, v̂ = {scenario.v_hat:.6g} (dotted), N = {scenario.patch_voxels}",
        fontsize=10,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")


def plot_transition(
    scenario: Scenario,
    path: str,
    *,
    fp: float,
    batch_sizes: Sequence[int],
    empty_fraction: float,
    overlap: float,
    outside: float,
    sweep: Sequence[float] = (),
) -> None:
    """Φ = I as ε runs from 1e-7 to 100·v̂: ratios to the non-empty map (top), magnitudes (bottom)."""
    eps = np.logspace(-7, math.log10(100 * max(scenario.v_hat, fp, 1.0)), 401)
    fig = _figure(figsize=(7.0, 6.4), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    common = {"volume": scenario.volume, "empty_fraction": empty_fraction, "overlap": overlap, "outside": outside}
    g = transition(eps, fp=fp, batch_size=2, **common)
    top.loglog(eps, g.empty_to_background, color="C0", label="Φ = I: empty / y=0 of non-empty map")
    top.loglog(eps, g.empty_to_label, color="C1", label="Φ = I: empty / |y=1 of non-empty map|")
    top.axhline(1.0, color="C0", ls="--", lw=0.8, label="Φ = BI (B > 1): empty / y=0 = 1")
    for style, batch in zip(("--", "-.", ":"), sorted({b for b in batch_sizes if b >= 2})):
        ref = batch_gradients(fp=fp, phi="BI", batch_size=batch, eps_nr=TINY_EPS, eps_dr=TINY_EPS, **common)
        top.axhline(
            float(ref.empty_to_label), color="C1", ls=style, lw=0.8, label=f"Φ = BI, B = {batch}: empty / |y=1|"
        )
    top.set_ylabel("push on the empty map,\nrelative to the non-empty map")
    top.set_ylim(max(1e-16, float(np.nanmin(g.empty_to_background)) / 3), 10)
    for factor, style in ((0.1, ":"), (1.0, "-"), (10.0, "--")):
        f_value = min(fp * factor, float(scenario.patch_voxels))
        gf = transition(eps, fp=f_value, batch_size=1, **common)
        bottom.loglog(eps, gf.empty, color="C0", ls=style, label=f"empty map, F = {f_value:.3g}")
    g1 = transition(eps, fp=fp, batch_size=1, **common)
    bottom.loglog(eps, g1.background, color="C2", label="y=0 of non-empty map")
    bottom.loglog(eps, np.abs(g1.label), color="C1", label="|y=1| of non-empty map")
    bottom.set_ylabel("B · ∂DL/∂ỹ per voxel (Φ = I)")
    bottom.set_xlabel("ε = ε_nr = ε_dr (voxels)")
    for ax in (top, bottom):
        ax.axvline(scenario.v_hat, color="k", lw=0.8, ls=":", label=f"v̂ = {scenario.v_hat:.6g} (heuristic ε)")
        for value in sweep:  # the runs of the sweep recipe
            ax.axvline(value, color="grey", lw=0.4, alpha=0.6)
    top.legend(fontsize=7, loc="lower right")
    bottom.legend(fontsize=7, loc="lower right")
    fig.suptitle(
        f"{_prefix(scenario)}from ignoring to learning empty maps (Φ = I; V = {scenario.volume:.6g}, F = {fp:.6g})",
        fontsize=10,
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
