"""Independent float64 references written straight from the equations, with explicit subsets.

Deliberately naive: Python loops over the subsets of Φ and over their (b, c) maps, NumPy for the
voxel sums. Nothing here shares code with the package.
"""

from __future__ import annotations

import numpy as np


def subsets(phi: str, maps: list[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Group the kept (b, c) maps into the subsets of Φ (empty subsets never appear)."""
    if phi == "I":
        return [[m] for m in maps]
    if phi == "CI":
        keys = sorted({b for b, _ in maps})
        return [[m for m in maps if m[0] == k] for k in keys]
    if phi == "BI":
        keys = sorted({c for _, c in maps})
        return [[m for m in maps if m[1] == k] for k in keys]
    if phi == "BCI":
        return [maps] if maps else []
    raise AssertionError(phi)


def kept(batch, classes, annotated, voxel_mask, include_background):
    maps = []
    for b in range(batch):
        if voxel_mask is not None and voxel_mask[b].sum() == 0:
            continue
        for c in range(classes):
            if c == 0 and not include_background:
                continue
            if annotated is not None and not annotated[b, c]:
                continue
            maps.append((b, c))
    return maps


def _eps(eps, phi_maps, per="subset"):
    """ε of one subset: a number once; a per-class value once per class in it, or once per map."""
    if np.ndim(eps) == 0:
        return float(eps)
    if per == "map":
        return float(sum(eps[c] for _, c in phi_maps))
    return float(sum(eps[c] for c in sorted({c for _, c in phi_maps})))


def dice_terms(
    p,
    y,
    phi,
    eps_nr,
    eps_dr,
    squared,
    weights,
    voxel_mask,
    annotated,
    include_background,
    drop_empty=False,
    weighting="term",
    eps_per="subset",
):
    """Per-subset (numerator, denominator, maps, weight) of Eq. 3.

    ``weighting="inside"``: w[b, c] inside the sums and subset weight 1; ``"term"``: the subset's
    weight is the mean of w over its maps.
    """
    batch, classes = p.shape[:2]
    p = p.reshape(batch, classes, -1)
    y = y.reshape(batch, classes, -1)
    m = np.ones((batch, p.shape[-1])) if voxel_mask is None else voxel_mask.reshape(batch, -1).astype(float)
    w = np.ones((batch, classes)) if weights is None else np.broadcast_to(weights, (batch, classes))
    inside = w if weighting == "inside" else np.ones((batch, classes))
    terms = []
    for phi_maps in subsets(phi, kept(batch, classes, annotated, voxel_mask, include_background)):
        num = den = labels = 0.0
        for b, c in phi_maps:
            num += 2 * inside[b, c] * np.sum(m[b] * y[b, c] * p[b, c])
            union = y[b, c] ** 2 + p[b, c] ** 2 if squared else y[b, c] + p[b, c]
            den += inside[b, c] * np.sum(m[b] * union)
            labels += np.sum(m[b] * y[b, c])
        if drop_empty and labels == 0:
            continue
        weight = 1.0 if weighting == "inside" else float(np.mean([w[b, c] for b, c in phi_maps]))
        terms.append((num + _eps(eps_nr, phi_maps, eps_per), den + _eps(eps_dr, phi_maps, eps_per), phi_maps, weight))
    return terms


def dice_loss(
    p,
    y,
    phi="I",
    eps_nr=1e-7,
    eps_dr=1e-7,
    squared=False,
    weights=None,
    voxel_mask=None,
    annotated=None,
    include_background=True,
    drop_empty=False,
    weighting="term",
    eps_per="subset",
    subsets_counted=None,
):
    """Eq. 3: (1/|Φ|) Σ_φ w_φ (1 − (2 Σ y ỹ + ε_nr) / (Σ (y + ỹ) + ε_dr)).

    |Φ| is the number of subsets left, or ``subsets_counted`` when given (leaf Dice as Fidon's).
    """
    terms = dice_terms(
        p,
        y,
        phi,
        eps_nr,
        eps_dr,
        squared,
        weights,
        voxel_mask,
        annotated,
        include_background,
        drop_empty,
        weighting,
        eps_per,
    )
    if not terms:
        return 0.0
    total = sum(weight * (1.0 - (num / den if den > 0 else 1.0)) for num, den, _, weight in terms)
    return total / (len(terms) if subsets_counted is None else subsets_counted)


def dice_gradient(p, y, phi="I", eps_nr=1e-7, eps_dr=1e-7, voxel_mask=None, annotated=None, include_background=True):
    """Eq. 4: ∂DL/∂ỹ_ω = −(1/|Φ|)(2 y_ω / (U + ε_dr) − (2 I + ε_nr) / (U + ε_dr)²), 0 outside Φ."""
    terms = dice_terms(p, y, phi, eps_nr, eps_dr, False, None, voxel_mask, annotated, include_background)
    batch, classes = p.shape[:2]
    grad = np.zeros((batch, classes, int(np.prod(p.shape[2:]))))
    yy = y.reshape(batch, classes, -1)
    m = np.ones((batch, grad.shape[-1])) if voxel_mask is None else voxel_mask.reshape(batch, -1).astype(float)
    for num, den, phi_maps, _ in terms:
        for b, c in phi_maps:
            grad[b, c] = -(1 / len(terms)) * (2 * yy[b, c] / den - num / den**2) * m[b]
    return grad.reshape(p.shape)


def jaccard_loss(p, y, phi="I", eps_nr=1e-7, eps_dr=1e-7):
    batch, classes = p.shape[:2]
    p, y = p.reshape(batch, classes, -1), y.reshape(batch, classes, -1)
    values = []
    for phi_maps in subsets(phi, kept(batch, classes, None, None, True)):
        inter = sum(np.sum(y[b, c] * p[b, c]) for b, c in phi_maps)
        union = sum(np.sum(y[b, c] + p[b, c]) for b, c in phi_maps) - inter
        values.append((inter + eps_nr) / (union + eps_dr))
    return 1 - np.mean(values)


def tversky_loss(p, y, alpha, beta, phi="I", eps_nr=1e-7, eps_dr=1e-7):
    batch, classes = p.shape[:2]
    p, y = p.reshape(batch, classes, -1), y.reshape(batch, classes, -1)
    values = []
    for phi_maps in subsets(phi, kept(batch, classes, None, None, True)):
        tp = sum(np.sum(y[b, c] * p[b, c]) for b, c in phi_maps)
        fp = sum(np.sum((1 - y[b, c]) * p[b, c]) for b, c in phi_maps)
        fn = sum(np.sum(y[b, c] * (1 - p[b, c])) for b, c in phi_maps)
        values.append((tp + eps_nr) / (tp + alpha * fp + beta * fn + eps_dr))
    return 1 - np.mean(values)


def lovasz_map(errors: np.ndarray, labels: np.ndarray) -> float:
    """Lovász extension of the Jaccard loss for one map, evaluated by its definition on sorted errors."""
    order = np.argsort(-errors, kind="stable")
    e, g = errors[order], labels[order]
    jaccard = []
    for k in range(1, len(e) + 1):
        top = np.zeros(len(e), bool)
        top[:k] = True
        # Jaccard loss of the set of the k largest errors counted as mistakes
        inter = np.sum(g * ~top)
        union = np.sum(g) + np.sum((1 - g) * top)
        jaccard.append(1 - inter / union)
    jaccard = np.array(jaccard)
    return float(np.sum(e * np.diff(np.concatenate(([0.0], jaccard)))))
