"""Predicted against measured transition, per regime: the table of docs/studies.md from a finished run.

    python scripts/transition_regimes.py examples/transition_regimes.toml            # markdown table
    python scripts/transition_regimes.py examples/transition_regimes.toml --json     # for scripts

For every dataset of the spec whose raw folder holds ``lesion_types.json`` (the ``missing-vs-empty``
and ``transition-*`` toys), it reads the test report of ``nnunet-dicephi run``
(``<output>/report/test_<Dataset>/per_case.csv``) and splits the test DSC of the class ``lesion`` by
lesion type. Type B's training labels are empty maps, so its test DSC is what the empty maps did:
high where they were ignored, 0 where they were learned. The prediction is ``nnunet-dicephi advise``'s
for the plans the Φ = I sweep trained with (``--json``; cached beside the trainers' statistics).

Per regime: the predicted window in ε (R from 0.9 to 0.1) and its half-way ε, the measured DSC B at
each ε of the Φ = I sweep, and the measured half-way ε: where DSC B falls to half its value at the
smallest ε (ε ≈ 0, the empty maps ignored), interpolated linearly in log ε between the two sweep
points around it. For a Φ = BI sweep over B: the predicted share R of DSC B kept at each B against
the measured DSC B over its ε ≈ 0 value. Φ = I trained for another number of epochs than the sweep
(a check of what the training length does) gets a table of its own, and a half-way ε of its own where
it has two ε or more. Last, when in training each Φ = I run left type B out: the first epoch from
which its validation DSC stays at 0.1 or less (the trainers' per-epoch validation record, on the
fully labelled validation images).

A Φ = I training at ``advise``'s pilot schedule (60 epochs × 40 iterations at 1e-2) is a pilot, not a
sweep point: ``advise --pilot`` reads the regime's speed from it, on the validation cases of type B
(``--pilot-cases``), and the last table sets the windows that speed gives, at every training length
with a measured half-way ε, against it.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import tempfile
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from nnunet_dicephi.analysis.advise import REFERENCE_SCHEDULE, lr_weighted_steps, rho_half_at, schedule_factor
from nnunet_dicephi.analysis.pilot import PILOT_SCHEDULE
from nnunet_dicephi.loss_config import HEURISTIC, parse_trainer_name

CLASS = "lesion"


def half_way(xs: Sequence[float], values: Sequence[float], level: float) -> tuple[float | None, str]:
    """Where ``values`` (over ascending ``xs``) first fall to ``level``, linear in log x between two points.

    Returns ``(x, "")``; ``(None, "above")`` when no value falls to the level; ``(xs[0], "at or below")``
    when the first one already does (the crossing lies at or below the sweep's smallest x).
    """
    for i, (x, value) in enumerate(zip(xs, values)):
        if value <= level:
            if i == 0:
                return float(x), "at or below"
            x0, v0 = xs[i - 1], values[i - 1]
            t = (v0 - level) / (v0 - value)
            return float(10 ** (math.log10(x0) + t * (math.log10(x) - math.log10(x0)))), ""
    return None, "above"


def type_means(rows: Sequence[Mapping[str, str]], types: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """Mean test DSC of :data:`CLASS` per configuration and lesion type (``types``: case → ``A``/``B``)."""
    sums: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        if row["class"] == CLASS and row["case"] in types and row["dsc"] not in ("", "nan"):
            sums[row["configuration"]][types[row["case"]]].append(float(row["dsc"]))
    return {conf: {kind: sum(v) / len(v) for kind, v in by_type.items()} for conf, by_type in sums.items()}


def members(
    means: Mapping[str, Mapping[str, float]], plans_batch: int
) -> dict[str, list[tuple[float, dict[int, dict[str, float]]]]]:
    """The configurations as sweep points, ascending: ``{"I": [(ε, {seed: dsc})], "BI": [(B, {seed: dsc})]}``.

    The sweeps are the trainings of the most common length; Φ = I trained longer or shorter goes to
    ``"I_other"`` as ``(ε, (epochs, iterations, lr), {seed: dsc})`` (the check of what the training
    length does; nnU-Net's 250 iterations where the name gives none).
    """
    losses = {conf: parse_trainer_name(conf.split("__")[0]) for conf in means}
    usual = _usual_length(losses.values())
    points: dict = {"I": defaultdict(dict), "BI": defaultdict(dict), "I_other": defaultdict(dict)}
    for configuration, dsc in means.items():
        plans, loss = configuration.split("__")[1], losses[configuration]
        if loss.loss != "Dice" or loss.eps_nr == HEURISTIC or loss.eps_nr != loss.eps_dr:
            continue
        seed = loss.seed if loss.seed is not None else 0
        if is_pilot(loss):
            continue
        if loss.epochs != usual:
            if loss.phi == "I" and "_bs" not in plans:
                points["I_other"][(float(loss.eps_nr), _schedule(loss))][seed] = dict(dsc)
        elif loss.phi == "I" and "_bs" not in plans:
            points["I"][float(loss.eps_nr)][seed] = dict(dsc)
        elif loss.phi == "BI":
            batch = int(plans.rsplit("_bs", 1)[1]) if "_bs" in plans else plans_batch
            points["BI"][float(batch)][seed] = dict(dsc)
    out = {phi: sorted(p.items()) for phi, p in points.items() if phi != "I_other"}
    out["I_other"] = [(eps, schedule, per_seed) for (eps, schedule), per_seed in sorted(points["I_other"].items())]
    return out


def is_pilot(loss) -> bool:
    """A pilot of ``advise --pilot`` (Φ = I at :data:`PILOT_SCHEDULE`): read for the speed, not a sweep point."""
    return loss.phi == "I" and _schedule(loss) == PILOT_SCHEDULE


def _usual_length(losses) -> int | None:
    """The most common number of epochs among ``losses``: the sweeps' training length."""
    lengths = [loss.epochs for loss in losses if not is_pilot(loss)]
    return max(set(lengths), key=lengths.count) if lengths else None


def _schedule(loss) -> tuple[int, int, float]:
    """Epochs, iterations per epoch and initial rate a trainer trains with (nnU-Net's 1000 × 250 by default)."""
    return loss.epochs or 1000, loss.iterations or 250, loss.initial_lr


def sweep_trainer(means: Mapping[str, Mapping[str, float]]) -> str:
    """A trainer of the Φ = I sweep (the most common length), for ``advise -tr``: the training it models."""
    losses = {conf.split("__")[0]: parse_trainer_name(conf.split("__")[0]) for conf in means}
    usual = _usual_length(losses.values())
    return min(name for name, loss in losses.items() if loss.epochs == usual and loss.phi == "I" and not is_pilot(loss))


def _on_curve(xs: Sequence[float], ys: Sequence[float], x: float) -> float | None:
    """``ys`` at ``x``, linear in log x between the points of the predicted curve, flat beyond its ends."""
    if not len(xs):
        return None
    if x <= xs[0] or x >= xs[-1]:
        return ys[0] if x <= xs[0] else ys[-1]
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if x0 <= x <= x1:
            return y0 + (math.log(x) - math.log(x0)) / (math.log(x1) - math.log(x0)) * (y1 - y0)
    return None


def _mean(per_seed: Mapping[int, Mapping[str, float]], kind: str) -> float:
    values = [dsc[kind] for dsc in per_seed.values() if kind in dsc]
    return sum(values) / len(values) if values else math.nan


def regime(
    prediction: Mapping, means: Mapping[str, Mapping[str, float]], left_out: Mapping[str, tuple] | None = None
) -> dict:
    """One regime's row: the prediction for :data:`CLASS` beside what the sweeps measured.

    ``left_out`` (configuration → ``(epoch or None, epochs)``, from :func:`left_out_epochs`) adds when
    each Φ = I training left type B out of the validation images: ``row["timeline"]``.

    The measured half-way ε is taken on the DSC B averaged over the training seeds at each ε (the
    level: half its average at ε ≈ 0), and per seed (``measured_half_I_per_seed``) for the spread;
    a seed not trained at every ε of the sweep is left out of both.
    """
    predicted = next(c for c in prediction["classes"] if c["name"] == CLASS)
    sweeps = members(means, int(prediction["batch_size"]))
    complete = set.intersection(*(set(per_seed) for _, per_seed in sweeps["I"])) if sweeps["I"] else set()
    sweeps["I"] = [
        (x, {seed: dsc for seed, dsc in per_seed.items() if seed in complete}) for x, per_seed in sweeps["I"]
    ]
    row: dict = {
        "dataset": prediction["dataset"],
        "batch_size": prediction["batch_size"],
        "empty": predicted["empty"],
        "mean_volume": predicted["mean_volume"],
        "v_hat": predicted["v_hat"],
        "eps_window_I": predicted["eps_window_I"],
        "eps_half_I": predicted["eps_half_I"],
        "min_batch_BI": predicted["min_batch_BI"],
        "sweep_I": [
            {"eps": x, "seeds": sorted(per_seed), "dsc_A": _mean(per_seed, "A"), "dsc_B": _mean(per_seed, "B")}
            for x, per_seed in sweeps["I"]
        ],
        "sweep_BI": [],
    }
    if not sweeps["I"] or not math.isfinite(row["sweep_I"][0]["dsc_B"]):
        return row
    reference = row["sweep_I"][0]["dsc_B"]
    curve = predicted["curve"]
    for point in row["sweep_I"]:
        point["kept"] = point["dsc_B"] / reference
        point["predicted"] = _on_curve(curve["eps"], curve["retained_I"], point["eps"])
    xs = [p["eps"] for p in row["sweep_I"]][1:]
    measured, censored = half_way(xs, [p["dsc_B"] for p in row["sweep_I"]][1:], reference / 2)
    low, high = predicted["eps_window_I"]
    seeds = sorted({seed for _, per_seed in sweeps["I"] for seed in per_seed})
    per_seed_half = {}
    for seed in seeds:
        own = [(x, p[seed]["B"]) for x, p in sweeps["I"] if seed in p and "B" in p[seed]]
        if len(own) == len(sweeps["I"]):
            per_seed_half[seed] = half_way([x for x, _ in own][1:], [v for _, v in own][1:], own[0][1] / 2)
    row.update(
        reference_dsc_B=reference,
        measured_half_I=measured,
        censored=censored,
        inside=bool(measured is not None and not censored and low <= measured <= high),
        ratio=measured / predicted["eps_half_I"] if measured is not None and not censored else None,
        measured_half_I_per_seed={seed: list(value) for seed, value in per_seed_half.items()},
    )
    row["longer_I"] = [
        {
            "eps": eps,
            "epochs": schedule[0],
            "iterations": schedule[1],
            "lr": schedule[2],
            "seeds": sorted(per_seed),
            "dsc_A": _mean(per_seed, "A"),
            "dsc_B": _mean(per_seed, "B"),
            "kept": _mean(per_seed, "B") / reference,
            "predicted": share_at_length(predicted, prediction["model"], eps, schedule_factor(*schedule)),
        }
        for eps, schedule, per_seed in sweeps["I_other"]
    ]
    row["longer_half_I"] = _half_by_length(row["longer_I"], reference, predicted, prediction["model"])
    row["time_law_fit"] = fit_time_law(half_way_points(row, predicted))
    row["timeline"] = _timeline(means, left_out or {}, curve)
    retained_at = dict(zip(predicted["curve"]["batch_size"], predicted["curve"]["retained_BI"]))
    for x, per_seed in sweeps["BI"]:
        dsc_b = _mean(per_seed, "B")
        row["sweep_BI"].append(
            {
                "batch": int(x),
                "seeds": sorted(per_seed),
                "dsc_A": _mean(per_seed, "A"),
                "dsc_B": dsc_b,
                "kept": dsc_b / reference,
                "predicted": retained_at.get(int(x)),
            }
        )
    return row


def left_out_epochs(fold_folders: Mapping[str, Path], validation_types: Mapping[str, str]) -> dict[str, tuple]:
    """Per configuration: the epoch (1-based) from which type B stays left out of the validation images.

    Read from the trainer's per-epoch validation record (``dicephi_validation.jsonl``: nnU-Net's online
    pseudo-Dice per validation case, whose labels are complete), with the demo's rule: the validation
    DSC of type B at most ``LEFT_OUT_MAX`` from that epoch to the end. ``(None, epochs)`` when it never
    is; configurations without a record are left out.
    """
    from nnunet_dicephi.demo import left_out_since, validation_trend
    from nnunet_dicephi.evaluation import VALIDATION_FILE, read_validation_record

    out = {}
    for configuration, folder in fold_folders.items():
        record_file = folder / VALIDATION_FILE
        if record_file.is_file():
            trend = validation_trend(read_validation_record(record_file), validation_types)
            since = left_out_since(trend)
            out[configuration] = (None if since is None else since + 1, len(trend["epochs"]))
    return out


def _timeline(
    means: Mapping[str, Mapping[str, float]], left_out: Mapping[str, tuple], curve: Mapping | None = None
) -> list[dict]:
    """When each Φ = I run left type B out, and the push it had received by then (the time law).

    ``amount``: ρ (``advise``'s curve at the run's ε) times the learning-rate-weighted training up to
    that epoch, in reference trainings; under the time law it is about the same for every run of a
    regime (docs/advise.md).
    """
    points = []
    reference = lr_weighted_steps(*REFERENCE_SCHEDULE)
    for configuration in sorted(means):
        loss = parse_trainer_name(configuration.split("__")[0])
        if is_pilot(loss):
            continue
        if configuration in left_out and loss.phi == "I" and "_bs" not in configuration.split("__")[1]:
            epoch, epochs = left_out[configuration]
            eps = float(loss.eps_nr)
            rho = _on_curve(curve["eps"], curve["push_ratio_I"], eps) if curve else None
            amount = None
            if epoch is not None and rho is not None:
                elapsed = lr_weighted_steps(*_schedule(loss), epoch)
                amount = rho * elapsed / reference
            seed = loss.seed if loss.seed is not None else 0
            points.append(
                {"eps": eps, "epochs": epochs, "seed": seed, "left_out_from": epoch, "rho": rho, "amount": amount}
            )
    return sorted(points, key=lambda p: (p["epochs"], p["eps"], p["seed"]))


def _rho_half(model: Mapping, factor: float, speed: float = 1.0) -> float:
    """ρ½ of ``advise``'s model after ``factor`` reference trainings (the time law), times a regime's speed."""
    reference = model.get("rho_half_reference", model["rho_half"])
    return rho_half_at(factor, reference, model.get("onset", 0.0)) * speed


def share_at_length(predicted: Mapping, model: Mapping, eps: float, factor: float) -> float | None:
    """R at ``eps`` for a training of ``factor`` times the reference: ρ from the curve, ρ½ from the time law."""
    rho = _on_curve(predicted["curve"]["eps"], predicted["curve"]["push_ratio_I"], eps)
    if rho is None:
        return None
    return 1 / (1 + (max(rho, 0.0) / _rho_half(model, factor)) ** model["steepness"])


def _crossing(xs: Sequence[float], ys: Sequence[float], level: float) -> float | None:
    """The first x at which ``ys`` reaches ``level`` from below, linear in log x; None when it never does."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), zip(xs[1:], ys[1:])):
        if y0 < level <= y1:
            return math.exp(math.log(x0) + (level - y0) / (y1 - y0) * (math.log(x1) - math.log(x0)))
    return None


def window_at(
    predicted: Mapping, model: Mapping, factor: float, speed: float = 1.0
) -> tuple[float | None, float | None, float | None]:
    """The predicted window and half-way ε under the time law, at ``factor`` times the reference training.

    ``factor``: ``advise``'s :func:`~nnunet_dicephi.analysis.advise.schedule_factor`; ``speed``: a
    pilot's reading, which multiplies ρ½.

    The law (docs/advise.md): the empty maps are learned once ρ times the learning-rate-weighted
    training past the onset reaches a fixed amount, so that every ρ threshold of the model (ρ½ and
    the window's edges) scales as 1/(factor − onset). The ε are read off ``advise``'s curve of ρ
    against ε; None where ρ never reaches the threshold.
    """
    curve = predicted["curve"]
    rho_half, k = _rho_half(model, factor, speed), model["steepness"]
    odds_low = (1 / model["segmented"] - 1) ** (1 / k)  # R = 0.9: ρ = ρ½·(1/9)^(1/k)
    odds_high = (1 / model["left_out"] - 1) ** (1 / k)
    return tuple(_crossing(curve["eps"], curve["push_ratio_I"], rho_half * odds) for odds in (odds_low, 1.0, odds_high))


def _half_by_length(points: Sequence[Mapping], reference: float, predicted: Mapping, model: Mapping) -> list[dict]:
    """The half-way ε of each other training length whose sweep has two ε or more.

    The level is half the DSC B at ε ≈ 0 of that length when it was trained, else of the sweep's
    length (``reference``): at ε ≈ 0 the empty maps are ignored at any length. Beside it, the window
    the time law predicts at that length (:func:`window_at`).
    """
    by_length: dict[tuple, list[Mapping]] = defaultdict(list)
    for point in points:
        by_length[(point["epochs"], point["iterations"], point["lr"])].append(point)
    low, high = predicted["eps_window_I"]
    out = []
    for (epochs, iterations, lr), own in sorted(by_length.items()):
        own = sorted(own, key=lambda p: p["eps"])
        level = reference / 2
        if own[0]["eps"] < low / 100:  # trained at ε ≈ 0 too: its own reference
            level, own = own[0]["dsc_B"] / 2, own[1:]
        if len(own) < 2:
            continue
        measured, censored = half_way([p["eps"] for p in own], [p["dsc_B"] for p in own], level)
        factor = schedule_factor(epochs, iterations, lr)
        at_low, at_half, at_high = window_at(predicted, model, factor)
        found = measured is not None and not censored
        out.append(
            {
                "epochs": epochs,
                "eps": [p["eps"] for p in own],
                "measured_half_I": measured,
                "censored": censored,
                "inside": bool(found and low <= measured <= high),
                "ratio": measured / predicted["eps_half_I"] if found else None,
                "schedule_factor": factor,
                "eps_window_I_at_length": [at_low, at_high],
                "eps_half_I_at_length": at_half,
                "inside_at_length": bool(found and at_low and at_high and at_low <= measured <= at_high),
                "ratio_at_length": measured / at_half if found and at_half else None,
            }
        )
    return out


def fit_time_law(points: Sequence[tuple[float, float]], step: float = 0.01) -> dict | None:
    """ρ½ at the reference training and the onset f₀ that fit measured half-way points best.

    ``points``: ``(factor, ρ at the measured half-way ε)`` per training length. The law
    ρ½(f) = ρ½ · (1 − f₀)/(f − f₀) is a straight line in log: for each f₀ on a grid below the shortest
    length, log ρ½·(1 − f₀) is the mean of log ρ·(f − f₀); the f₀ with the smallest spread wins.
    ``residual``: that spread, the root mean square of log ρ about the law. None below two lengths.
    """
    if len({f for f, _ in points}) < 2:
        return None
    shortest = min(f for f, _ in points)
    best = None
    for onset in np.arange(0.0, shortest - step / 2, step):
        logs = np.log([rho * (f - onset) for f, rho in points])
        residual = float(np.sqrt(np.mean((logs - logs.mean()) ** 2)))
        if best is None or residual < best[0] - 1e-12:
            best = (residual, float(onset), float(np.exp(logs.mean())))
    residual, onset, amount = best
    without = np.log([rho * f for f, rho in points])
    return {
        "rho_half": amount / (1 - onset),
        "onset": onset,
        "residual": residual,
        "residual_without_onset": float(np.sqrt(np.mean((without - without.mean()) ** 2))),
        "points": [list(p) for p in points],
    }


def half_way_points(row: Mapping, predicted: Mapping) -> list[tuple[float, float]]:
    """``(factor, ρ at the measured half-way ε)`` of each training length whose half-way ε was found."""
    curve = predicted["curve"]
    found = []
    if row.get("measured_half_I") is not None and not row.get("censored"):
        found.append((1.0, row["measured_half_I"]))  # the sweep trains the reference schedule
    found += [
        (h["schedule_factor"], h["measured_half_I"])
        for h in row.get("longer_half_I", [])
        if h["measured_half_I"] is not None and not h["censored"]
    ]
    points = [(f, _on_curve(curve["eps"], curve["push_ratio_I"], eps)) for f, eps in found]
    return [(f, rho) for f, rho in points if rho]


def calibrate(row: Mapping, prediction: Mapping, seed: int | None = None) -> dict:
    """What one pilot read, and the windows its speed gives beside the measured half-way ε of each length.

    ``prediction``: ``advise --json --pilot …`` (one pilot or several) for the sweep's plans and
    training. Returns ``{"seed", "reading", "speed", "speeds", "calibrated"}``: the (first) pilot's
    reading of the class (None without one), the speed the class takes (several pilots: the geometric
    mean of their ``speeds``) and, per training length with a measured half-way ε (the sweep's, then
    the longer ones), the time law's window at that length with ρ½ times the speed
    (:func:`calibrated_windows`).
    """
    predicted = next(c for c in prediction["classes"] if c["name"] == CLASS)
    reading = predicted.get("pilot")
    speed = predicted.get("speed", reading.get("speed") if reading else None)  # several pilots: their mean
    span = predicted.get("speed_span")  # several pilots: the window runs over their speeds
    windows = []
    if speed is not None:
        windows = calibrated_windows(row, predicted, prediction["model"], prediction["schedule"], speed, span)
    readings = predicted.get("pilots") or ([reading] if reading else [])
    return {
        "seed": seed,
        "reading": reading,
        "speed": speed,
        "speeds": [r["speed"] for r in readings],
        "speed_span": span,
        "calibrated": windows,
    }


def calibrated_windows(
    row: Mapping,
    predicted: Mapping,
    model: Mapping,
    schedule: Mapping,
    speed: float,
    span: Sequence[float] | None = None,
) -> list[dict]:
    """At each training length with a measured half-way ε: the window with ρ½ times ``speed``, and the measure.

    ``span``: the slowest and fastest of several pilots' speeds (``advise``'s ``speed_span``): the
    window runs from the lower edge at the slowest to the upper edge at the fastest, as ``advise``'s.
    """
    if "measured_half_I" not in row:
        return []
    out = []
    lengths = [
        (schedule["epochs"], schedule["factor"], row["measured_half_I"], row["censored"], row["sweep_I"][-1]["eps"])
    ]
    lengths += [
        (h["epochs"], h["schedule_factor"], h["measured_half_I"], h["censored"], h["eps"][-1])
        for h in row.get("longer_half_I", [])
    ]
    for epochs, factor, measured, censored, last in lengths:
        low, half, high = window_at(predicted, model, factor, speed)
        if span:
            low, high = window_at(predicted, model, factor, span[0])[0], window_at(predicted, model, factor, span[1])[2]
        found = measured is not None and not censored
        inside = bool(found and low and high and low <= measured <= high)
        # a half-way ε known only as a bound is outside when the bound already lies beyond the window
        beyond = (censored == "above" and high is not None and last >= high) or (
            censored == "at or below" and low is not None and measured < low
        )
        # no upper edge: ρ never reaches it at this length and speed, and a measure above the lower edge
        # agrees with the window without meeting a window's width
        open_above = bool(found and low is not None and high is None and measured >= low)
        out.append(
            {
                "epochs": epochs,
                "schedule_factor": factor,
                "eps_window_I": [low, high],
                "eps_half_I": half,
                "measured_half_I": measured,
                "censored": censored,
                "last_eps": last,
                "inside": inside,
                "open_above": open_above,
                "outside": bool((found and not inside and not open_above) or beyond),
                "ratio": measured / half if found and half else None,
            }
        )
    return out


def sweep_speeds(row: Mapping, prediction: Mapping, fold_folders: Mapping[str, Path], cases: set[str]) -> list[dict]:
    """Every Φ = I training of the regime that left type B out, read as if it were the pilot.

    Not held out (these runs make the measured half-way ε): how much the speed, and the windows it
    gives, depend on the pilot's ε and length. Per run: its ε, length, seed, the reading and the
    calibrated windows (:func:`calibrated_windows`).
    """
    from nnunet_dicephi.analysis.pilot import PilotError, read_class, read_pilot

    predicted = next(c for c in prediction["classes"] if c["name"] == CLASS)
    curve = predicted["curve"]
    out = []
    for configuration, folder in sorted(fold_folders.items()):
        loss = parse_trainer_name(configuration.split("__")[0])
        if loss.phi != "I" or "_bs" in configuration.split("__")[1] or is_pilot(loss):
            continue
        try:
            run = read_pilot(folder)
        except PilotError:
            continue
        reading = read_class(run, 0, CLASS, lambda e: _on_curve(curve["eps"], curve["push_ratio_I"], e), cases)
        if reading.speed is None or reading.bound:
            continue
        windows = calibrated_windows(row, predicted, prediction["model"], prediction["schedule"], reading.speed)
        out.append(
            {"eps": reading.eps, "epochs": run.schedule[0], "seed": loss.seed or 0}
            | {"speed": reading.speed, "windows": windows}
        )
    return out


def _number(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.2g}" if abs(x) < 100 else f"{x:.0f}"


def _censored(x: float | None, why: str, last: float) -> str:
    return {"": _number(x), "above": f"> {_number(last)}"}.get(why, f"≤ {_number(x)}")


def _judged(window: Mapping) -> str:
    if window["inside"]:
        return "yes"
    if window.get("open_above"):
        return "open above"
    return "no" if window["outside"] else "—"


def _window_cells(window: Mapping) -> str:
    """A calibrated window's cells: the window (half), the measured half-way ε, the judgement, the ratio."""
    low, high = window["eps_window_I"]
    ratio = "—" if window["ratio"] is None else f"×{window['ratio']:.2f}"
    return (
        f"| {_number(low)}–{'∞' if high is None else _number(high)} ({_number(window['eps_half_I'])}) "
        f"| {_censored(window['measured_half_I'], window['censored'], window['last_eps'])} "
        f"| {_judged(window)} | {ratio} |"
    )


def markdown(rows: Sequence[dict]) -> str:
    """The regimes table (predicted window against the measured half-way ε), then the B sweeps."""
    lines = [
        "| regime | e | V̄ | v̂ | predicted window (half) | DSC B at ε = … | measured half-way ε | inside "
        "| measured / predicted |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        low, high = r["eps_window_I"]
        sweep = ", ".join(f"{_number(p['eps'])}: {p['dsc_B']:.2f}" for p in r["sweep_I"])
        last = r["sweep_I"][-1]["eps"]
        shown = _censored(r.get("measured_half_I"), r.get("censored", ""), last)
        per_seed = r.get("measured_half_I_per_seed", {})
        if len(per_seed) > 1:
            shown += " (seeds: " + ", ".join(_censored(x, why, last) for x, why in per_seed.values()) + ")"
        ratio = r.get("ratio")
        lines.append(
            f"| {r['dataset']} | {r['empty']:.2f} | {r['mean_volume']:.0f} | {r['v_hat']:.0f} | "
            f"{_number(low)}–{_number(high)} ({_number(r['eps_half_I'])}) | {sweep} | {shown} | "
            f"{'yes' if r.get('inside') else 'no'} | {'—' if ratio is None else f'×{ratio:.2f}'} |"
        )
    lines += ["", "| regime | ε: DSC B kept, measured (predicted R) |", "|---|---|"]
    for r in rows:
        points = ", ".join(
            f"{_number(p['eps'])}: {p['kept']:.2f} ({_number(p['predicted'])})" for p in r["sweep_I"] if "kept" in p
        )
        lines.append(f"| {r['dataset']} | {points} |")
    other = [(r, p) for r in rows for p in r.get("longer_I", [])]
    if other:
        lines += [
            "",
            "| regime | ε | epochs | DSC A | DSC B | kept (measured) | R at this length (predicted) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r, p in other:
            lines.append(
                f"| {r['dataset']} | {_number(p['eps'])} | {p['epochs']} | {p['dsc_A']:.2f} | {p['dsc_B']:.2f} | "
                f"{p['kept']:.2f} | {_number(p['predicted'])} |"
            )
    halves = [(r, h) for r in rows for h in r.get("longer_half_I", [])]
    if halves:
        lines += [
            "",
            "| regime | epochs | predicted window (half) | inside | × training | window at this length (half) "
            "| measured half-way ε | inside | measured / predicted |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r, h in halves:
            low, high = r["eps_window_I"]
            at_low, at_high = h["eps_window_I_at_length"]
            shown = _censored(h["measured_half_I"], h["censored"], h["eps"][-1])
            ratio = "—" if h["ratio_at_length"] is None else f"×{h['ratio_at_length']:.2f}"
            lines.append(
                f"| {r['dataset']} | {h['epochs']} | {_number(low)}–{_number(high)} ({_number(r['eps_half_I'])}) "
                f"| {'yes' if h['inside'] else 'no'} | {h['schedule_factor']:.2f} "
                f"| {_number(at_low)}–{_number(at_high)} ({_number(h['eps_half_I_at_length'])}) "
                f"| {shown} | {'yes' if h['inside_at_length'] else 'no'} | {ratio} |"
            )
    fitted = [r for r in rows if r.get("time_law_fit")]
    if fitted:
        lines += [
            "",
            "| regime | lengths (× reference: ρ at the measured half-way ε) | ρ½ at the reference | onset f₀ "
            "| spread in log ρ (without onset) |",
            "|---|---|---|---|---|",
        ]
        for r in fitted:
            fit = r["time_law_fit"]
            shown = ", ".join(f"{f:.2f}: {rho:.3g}" for f, rho in fit["points"])
            lines.append(
                f"| {r['dataset']} | {shown} | {fit['rho_half']:.2f} | {fit['onset']:.2f} "
                f"| {fit['residual']:.3f} ({fit['residual_without_onset']:.3f}) |"
            )
    timed = [r for r in rows if r.get("timeline")]
    if timed:
        lines += [
            "",
            "| regime | epochs | ε: type B left out of the validation images from epoch … (ρ · S/S_ref by then) |",
            "|---|---|---|",
        ]
        for r in timed:
            for epochs in sorted({p["epochs"] for p in r["timeline"]}):
                shown = ", ".join(
                    f"{_number(p['eps'])}: "
                    + ("—" if p["left_out_from"] is None else f"{p['left_out_from']}")
                    + ("" if p["amount"] is None else f" ({p['amount']:.2f})")
                    for p in r["timeline"]
                    if p["epochs"] == epochs
                )
                lines.append(f"| {r['dataset']} | {epochs} | {shown} |")
    piloted = [(r, p) for r in rows for p in r.get("pilots", []) if p["reading"]]
    if piloted:
        lines += [
            "",
            "| regime | pilot: ε, seed, epochs segmented → left out | push | speed | epochs "
            "| window with the speed (half) | measured half-way ε | inside | measured / predicted |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r, pilot in piloted:
            p = pilot["reading"]
            left = p["left_epoch"] if p["left_epoch"] else f"> {p['recorded_epochs']}"
            at = "≥ " if p["bound"] else ""
            head = (
                f"| {r['dataset']} | {_number(p['eps'])}, {pilot['seed']}, {p['segmented_epoch']} → {left} "
                f"| {at}{_number(p['amount'])} | {at}{_number(p['speed'])} "
            )
            if not pilot["calibrated"]:
                lines.append(head + f"| — | {p['note'] or '—'} | — | — | — |")
            for c in pilot["calibrated"]:
                lines.append(head + f"| {c['epochs']} {_window_cells(c)}")
    together = [r for r in rows if r.get("pilots_together") and r["pilots_together"]["calibrated"]]
    if together:
        lines += [
            "",
            "| regime | pilots' speeds → their geometric mean | epochs | window over the speeds (half at the mean) "
            "| measured half-way ε | inside | measured / predicted |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in together:
            both = r["pilots_together"]
            speeds = ", ".join("—" if x is None else f"{x:.2g}" for x in both["speeds"])
            for c in both["calibrated"]:
                lines.append(f"| {r['dataset']} | {speeds} → {both['speed']:.2g} | {c['epochs']} {_window_cells(c)}")
    spread = [r for r in rows if r.get("sweep_speeds")]
    if spread:
        lines += [
            "",
            "| regime | sweep runs read as pilots (ε/epochs: speed) | windows holding the measured half-way ε |",
            "|---|---|---|",
        ]
        for r in spread:
            runs = ", ".join(f"{_number(p['eps'])}/{p['epochs']}: {p['speed']:.2g}" for p in r["sweep_speeds"])
            judged = [w for p in r["sweep_speeds"] for w in p["windows"] if w["inside"] or w["outside"]]
            held = sum(w["inside"] for w in judged)
            opened = sum(w.get("open_above", False) for p in r["sweep_speeds"] for w in p["windows"])
            also = f" ({opened} more open above)" if opened else ""
            lines.append(f"| {r['dataset']} | {runs} | {held} of {len(judged)}{also} |")
    batch_rows = [r for r in rows if r["sweep_BI"]]
    if batch_rows:
        lines += [
            "",
            "| regime | predicted min B | B | DSC B | kept (measured) | R (predicted) |",
            "|---|---|---|---|---|---|",
        ]
        for r in batch_rows:
            for p in r["sweep_BI"]:
                lines.append(
                    f"| {r['dataset']} | {r['min_batch_BI']} | {p['batch']} | {p.get('dsc_B', math.nan):.2f} | "
                    f"{p['kept']:.2f} | {_number(p['predicted'])} |"
                )
    return "\n".join(lines)


def _predict(
    dataset: str,
    configuration: str,
    fold: str,
    plans: str,
    trainer: str,
    environ: Mapping[str, str],
    pilot: Sequence[str] = (),
) -> dict:
    """``advise --json`` for the sweep's plans and a trainer of the sweep (its training length).

    ``pilot``: ``--pilot`` and ``--pilot-cases`` arguments.
    """
    command = ["nnunet-dicephi", "advise", dataset, configuration, fold, "-p", plans, "-tr", trainer, "--json"]
    command += list(pilot)
    done = subprocess.run(command, env={**os.environ, **environ}, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr.strip()}")
    return json.loads(done.stdout)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="the study's spec, e.g. examples/transition_regimes.toml")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    from nnunet_dicephi.cluster.spec import load_spec

    spec = load_spec(args.spec, default_device="cpu")
    environment = spec.environment
    environ = {
        "nnUNet_raw": str(environment.nnunet_raw),
        "nnUNet_preprocessed": str(environment.nnunet_preprocessed),
        "nnUNet_results": str(environment.nnunet_results),
    }
    output = Path(spec.experiment.output or args.spec.parent)
    report = Path(spec.report.output) if spec.report is not None and spec.report.output else output / "report"
    rows = []
    for dataset in spec.datasets:
        raw = next(Path(environ["nnUNet_raw"]).glob(f"Dataset{dataset.id:03d}_*"), None)
        if raw is None or not (raw / "lesion_types.json").is_file():
            continue
        per_case = report / f"test_{raw.name}" / "per_case.csv"
        if not per_case.is_file():
            print(f"{raw.name}: no test report at {per_case} (run the spec first)", file=sys.stderr)
            continue
        with open(per_case, newline="", encoding="utf-8") as handle:
            means = type_means(
                list(csv.DictReader(handle)), json.loads((raw / "lesion_types.json").read_text())["test"]
            )
        plans = {conf.split("__")[1] for conf in means}
        base = min(plans, key=len)  # the sweep's plans; the B sweep's are <plans>_bs<B>
        configuration = next(iter(means)).split("__")[2]
        trainer = sweep_trainer(means)
        prediction = _predict(str(dataset.id), configuration, str(dataset.folds[0]), base, trainer, environ)
        results = Path(environ["nnUNet_results"]) / raw.name
        folds = {conf: results / conf / f"fold_{dataset.folds[0]}" for conf in means}
        validation_types = json.loads((raw / "lesion_types.json").read_text())["val"]
        row = regime(prediction, means, left_out_epochs(folds, validation_types))
        pilots = sorted(
            folder
            for folder in results.glob(f"*__{base}__{configuration}/fold_{dataset.folds[0]}")
            if is_pilot(parse_trainer_name(folder.parent.name.split("__")[0]))
        )
        row["pilots"] = []
        with tempfile.TemporaryDirectory() as scratch:  # each pilot's speed, read on type B (the hidden structure)
            cases = Path(scratch) / "type_B.json"
            cases.write_text(json.dumps(sorted(c for c, kind in validation_types.items() if kind == "B")))
            for folder in pilots:
                arguments = ["--pilot", str(folder), "--pilot-cases", str(cases)]
                with_pilot = _predict(
                    str(dataset.id), configuration, str(dataset.folds[0]), base, trainer, environ, arguments
                )
                seed = parse_trainer_name(folder.parent.name.split("__")[0]).seed
                row["pilots"].append(calibrate(row, with_pilot, seed))
            row["pilots_together"] = None
            if len(pilots) > 1:  # every pilot at once: the window spans their speeds, the half at their mean
                arguments = [a for folder in pilots for a in ("--pilot", str(folder))] + ["--pilot-cases", str(cases)]
                together = _predict(
                    str(dataset.id), configuration, str(dataset.folds[0]), base, trainer, environ, arguments
                )
                row["pilots_together"] = calibrate(row, together)
        b_cases = {c for c, kind in validation_types.items() if kind == "B"}
        row["sweep_speeds"] = sweep_speeds(row, prediction, folds, b_cases)
        rows.append(row)
    print(json.dumps(rows, indent=2) if args.json else markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
