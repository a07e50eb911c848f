r"""A regime's own speed, read from a short pilot training: ``nnunet-dicephi advise … --pilot FOLD_FOLDER``.

The transition model (:mod:`~nnunet_dicephi.analysis.advise`) predicts ρ, the push on an empty map
relative to the background, from the label statistics alone. How much push a dataset needs before a
hidden structure leaves is not among them: the regimes of docs/studies.md needed from a quarter
(spheres in 3-D, which the network tells apart by their look) to twice (lesions four times as large)
what the demo's data needed. A pilot measures it. It is a Φ = I Dice training at an ε strong enough
to leave the structure out within a short schedule (:data:`PILOT_SCHEDULE`, at the ε where
ρ · factor = :data:`PILOT_PUSH`); its per-epoch validation record (``dicephi_validation.jsonl``,
written by every trainer of this project) shows when the class was segmented and when it left:

* segmented from the first epoch whose validation DSC reaches :data:`SEGMENTED_SHARE` of the
  pilot's best;
* left out from the first epoch after which the DSC stays below :data:`LEFT_SHARE` of the best.

The push it received in between, in reference trainings,

.. math::

    A = \rho(\epsilon_\text{pilot})\,\frac{S(t_\text{left}) - S(t_\text{segmented})}{S_\text{ref}},

(S: the iterations weighted by nnU-Net's poly learning rate, as in the time law) over the demo's
:data:`PUSH_TO_LEAVE` is the regime's speed s; the class's ρ½ becomes ``ρ½ · s``. A pilot that
ends before the class left gives a lower bound on s. Every function here is a pure function of
numbers and records; :func:`read_pilot` reads a fold folder.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from nnunet_dicephi.analysis.advise import REFERENCE_SCHEDULE, lr_weighted_steps, schedule_factor

__all__ = [
    "PUSH_TO_LEAVE",
    "PILOT_SCHEDULE",
    "PILOT_PUSH",
    "SEGMENTED_SHARE",
    "LEFT_SHARE",
    "MIN_BEST",
    "PilotError",
    "PilotRun",
    "ClassReading",
    "pilot_trainer",
    "transition_epochs",
    "dsc_per_epoch",
    "read_class",
    "read_pilot",
    "read_cases",
    "pilot_factor",
    "suggested_eps",
    "combined_speed",
    "speed_span",
]

PUSH_TO_LEAVE = 0.72
"""A on the demo's data: the geometric mean over its six Φ = I trainings that left type B out
(examples/transition_regimes.toml, Dataset976: ε 20 and 44 at 22 epochs, 4.4 and 9.5 at 66, 2.1 at
132; scripts/transition_regimes.py prints each). The model's ρ½ was read on the same data, so a
regime with speed 1 is one that needs what the demo's data needed."""
PILOT_SCHEDULE = (60, 40, 1e-2)
"""Epochs, iterations per epoch and initial learning rate of the suggested pilot: 2.7 reference
trainings, 2 400 iterations (1 % of nnU-Net's default training)."""
PILOT_PUSH = 2.0
"""The suggested pilot's ε gives ρ · factor = 2 (before calibration): a regime of speed s leaves
after about s · 0.72 / 2 of the pilot, so speeds from 0.25 to 2.5 leave in its course."""
SEGMENTED_SHARE = 0.9
"""The class counts as segmented from the first epoch whose DSC reaches this share of the best."""
LEFT_SHARE = 0.5
"""The class counts as left out from the first epoch after which its DSC stays below this share of
the best."""
MIN_BEST = 0.5
"""A pilot whose best validation DSC of the class stays below this never segmented it: no reading."""


class PilotError(ValueError):
    """A pilot folder that cannot calibrate the model (the message says why and what to run instead)."""


@dataclass(frozen=True)
class PilotRun:
    """What a pilot's fold folder holds: its loss record and per-epoch validation record."""

    folder: str
    trainer: str
    schedule: tuple[int, int, float]
    """Epochs, iterations per epoch and initial learning rate it was trained with."""
    eps: tuple[float, ...] | float
    """ε per map at the full-resolution output: one number, or one per foreground class."""
    fingerprint: str
    record: dict
    """``{epoch: {case: counts (foreground classes, 3)}}``, as
    :func:`~nnunet_dicephi.evaluation.read_validation_record` reads it."""

    def eps_of(self, index: int) -> float:
        """ε per map of the ``index``-th foreground channel."""
        return float(self.eps[index]) if isinstance(self.eps, tuple) else float(self.eps)


@dataclass(frozen=True)
class ClassReading:
    """One class's reading from a pilot: when it was segmented and left, and the speed that follows."""

    name: str
    eps: float
    rho: float
    """ρ at the pilot's ε (the model's, uncalibrated)."""
    cases: int
    """Validation cases the DSC pools (annotated for the class, and among ``--pilot-cases``)."""
    best: float
    segmented_epoch: int | None
    """Epochs trained when the class was first segmented (1-based); None: never."""
    left_epoch: int | None
    """Epochs trained from which it stayed left out; None: it had not left by the record's end."""
    recorded_epochs: int
    amount: float | None
    """A (module docstring); up to the record's end when it had not left (then a lower bound)."""
    speed: float | None
    """A / :data:`PUSH_TO_LEAVE`; a lower bound when ``bound``; None without a reading."""
    bound: bool
    note: str = ""

    def to_json(self) -> dict:
        return asdict(self)


def pilot_trainer(eps: float) -> str:
    """The suggested pilot's trainer name at ``eps`` (rounded to two significant digits)."""
    from nnunet_dicephi.loss_config import format_number

    epochs, iterations, lr = PILOT_SCHEDULE
    return f"TrainerDiceI_eps{format_number(float(f'{eps:.2g}'))}_ep{epochs}_it{iterations}_lr{format_number(lr)}"


def transition_epochs(dsc: Sequence[float]) -> tuple[float, int | None, int | None]:
    """``(best, segmented, left)`` of a per-epoch DSC (NaN: the epoch's patches missed the cases).

    ``segmented``: index of the first epoch at :data:`SEGMENTED_SHARE` of the best or more;
    ``left``: index of the first epoch after the last one at :data:`LEFT_SHARE` of the best or more
    (None when that last one is the last recorded epoch).
    """
    values = np.asarray(dsc, dtype=np.float64)
    finite = np.flatnonzero(np.isfinite(values))
    if not len(finite):
        return math.nan, None, None
    best = float(values[finite].max())
    segmented = int(next(i for i in finite if values[i] >= SEGMENTED_SHARE * best))
    last_above = int(max(i for i in finite if values[i] >= LEFT_SHARE * best))
    after = [int(i) for i in finite if i > last_above]
    return best, segmented, (after[0] if after else None)


def dsc_per_epoch(
    record: Mapping[int, Mapping[str, np.ndarray]], index: int, cases: set[str] | None
) -> tuple[list[int], list[float], int]:
    """Pooled DSC of the ``index``-th foreground class per epoch over ``cases`` (all when None).

    Returns the epochs, the DSC (NaN where the pooled counts are all 0) and how many cases pooled.
    """
    epochs = sorted(record)
    used: set[str] = set()
    values = []
    for epoch in epochs:
        tp = fp = fn = 0.0
        for case, counts in record[epoch].items():
            if cases is not None and case not in cases:
                continue
            used.add(case)
            tp, fp, fn = tp + counts[index, 0], fp + counts[index, 1], fn + counts[index, 2]
        values.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else math.nan)
    return epochs, values, len(used)


def read_class(
    run: PilotRun, index: int, name: str, rho_at: Callable[[float], float], cases: set[str] | None
) -> ClassReading:
    """The reading of one class: ``rho_at(ε)`` is the model's ρ of the class at ε per map (Φ = I)."""
    eps = run.eps_of(index)
    epochs, dsc, pooled = dsc_per_epoch(run.record, index, cases)
    rho = float(rho_at(eps))
    best, segmented, left = transition_epochs(dsc)
    base = dict(name=name, eps=eps, rho=rho, cases=pooled, best=best, recorded_epochs=len(epochs))
    unread = dict(segmented_epoch=None, left_epoch=None, amount=None, speed=None, bound=False)
    if not pooled or not math.isfinite(best):
        return ClassReading(**base, **unread, note="no validation case of the pilot holds the class")
    if best < MIN_BEST:
        note = f"the pilot never segmented it (best validation DSC {best:.2f}): no reading"
        return ClassReading(**base, **unread, note=note)
    done = [e + 1 for e in epochs]  # a record's epoch e is validated after e + 1 epochs of training
    start = done[segmented]
    end = done[left] if left is not None else done[-1]
    reference = lr_weighted_steps(*REFERENCE_SCHEDULE)
    push = lr_weighted_steps(*run.schedule, end) - lr_weighted_steps(*run.schedule, start)
    amount = rho * push / reference
    note = ""
    if left is None:
        note = (
            f"not left out by epoch {done[-1]} of the pilot: its speed is at least {amount / PUSH_TO_LEAVE:.2g} "
            "(a longer pilot, or one at a larger ε, reads it)"
        )
    elif end - start <= 2:
        note = (
            f"left out within {end - start} epochs of being segmented: the speed may read high "
            "(a pilot at a smaller ε reads it better)"
        )
    return ClassReading(
        **base,
        segmented_epoch=start,
        left_epoch=end if left is not None else None,
        amount=amount,
        speed=amount / PUSH_TO_LEAVE if amount > 0 else None,
        bound=left is None,
        note=note,
    )


def read_pilot(folder: str | os.PathLike) -> PilotRun:
    """A pilot's fold folder: its ``dicephi_loss.json`` and ``dicephi_validation.jsonl``.

    Raises :class:`PilotError` for a folder that is not a Φ = I Dice training of this project
    (naming what is wrong and what would do).
    """
    from nnunet_dicephi.evaluation import VALIDATION_FILE, read_validation_record

    folder = os.fspath(folder)
    loss_file, record_file = os.path.join(folder, "dicephi_loss.json"), os.path.join(folder, VALIDATION_FILE)
    for path in (loss_file, record_file):
        if not os.path.isfile(path):
            raise PilotError(
                f"{folder} holds no {os.path.basename(path)}: give the fold_N folder of a TrainerDiceI_eps… "
                "training of this project (trainings on region-based labels record no validation counts)"
            )
    try:
        with open(loss_file, encoding="utf-8") as handle:
            loss = json.load(handle)
        trainer = str(loss["trainer_name"])
        schedule = (int(loss["epochs"]), int(loss["iterations"]), float(loss["initial_lr"]))
        level = min(loss["eps_per_level"], key=lambda entry: abs(float(entry["scale"]) - 1.0))
        eps_nr, eps_dr = level["eps_nr"], level["eps_dr"]
        fingerprint = str(loss["data_fingerprint"]["fingerprint"])
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise PilotError(f"{loss_file} is not a loss record this version reads ({error})") from error
    kind = (
        loss.get("loss") == "Dice"
        and loss.get("phi") == "I"
        and not loss.get("include_background")
        and not loss.get("ce")
        and not loss.get("exclusion")
        and loss.get("mime") is None
        and eps_nr == eps_dr
    )
    if not kind:
        raise PilotError(
            f"{trainer} is not a pilot the model reads: it takes a Φ = I Dice training with ε_nr = ε_dr, no "
            "background, no cross-entropy (TrainerDiceI_eps<ε>_…; advise suggests one)"
        )
    record = read_validation_record(record_file)
    if not record:
        raise PilotError(f"{record_file} holds no epoch yet: let the pilot train")
    eps: tuple[float, ...] | float
    if isinstance(eps_nr, list):  # one ε per output channel (the heuristic): the foreground's
        foreground = max((counts.shape[0] for cases in record.values() for counts in cases.values()), default=0)
        eps = tuple(float(x) for x in eps_nr[len(eps_nr) - foreground :])
    else:
        eps = float(eps_nr)
    return PilotRun(folder, trainer, schedule, eps, fingerprint, record)


def read_cases(path: str | os.PathLike) -> set[str]:
    """``--pilot-cases``: a JSON list of case identifiers, or a text file with one per line."""
    with open(path, encoding="utf-8") as handle:
        text = handle.read()
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            cases = json.loads(stripped)
        except ValueError as error:
            raise PilotError(f"{path}: not a JSON list of case identifiers ({error})") from error
        if not all(isinstance(c, str) for c in cases):
            raise PilotError(f"{path}: every case identifier must be a string")
        found = set(cases)
    else:
        found = {line.strip() for line in text.splitlines() if line.strip()}
    if not found:
        raise PilotError(f"{path} names no case")
    return found


def pilot_factor() -> float:
    """The suggested pilot's training in reference trainings."""
    return schedule_factor(*PILOT_SCHEDULE)


def suggested_eps(rho_at: Callable[[np.ndarray], np.ndarray], low: float, high: float) -> float:
    """The suggested pilot's ε: the smallest in [low, high] with ρ · :func:`pilot_factor` ≥ :data:`PILOT_PUSH`.

    ``rho_at``: the class's ρ against ε per map (Φ = I, before calibration). Where ρ never gets that
    high (it peaks near ε ≈ v̂), the ε of its peak.
    """
    from nnunet_dicephi.analysis.advise import _crossing

    factor = pilot_factor()
    reached = _crossing(lambda x: -np.asarray(rho_at(x)) * factor, low, high, -PILOT_PUSH)
    if reached is not None:
        return reached
    grid = np.logspace(math.log10(low), math.log10(high), 400)
    return float(grid[int(np.argmax(rho_at(grid)))])


def speed_span(readings: Sequence[ClassReading]) -> tuple[float, float] | None:
    """The slowest and the fastest speed of several pilots of one class; None below two readings.

    A pilot's seed moves its reading (two pilots of one regime up to ×1.8 apart, docs/studies.md):
    the spread of the pilots is the measure of what the mean does not know, and ``advise``'s Φ = I
    window runs over it.
    """
    read = [r.speed for r in readings if r.speed]
    return (min(read), max(read)) if len(read) > 1 else None


def combined_speed(readings: Sequence[ClassReading]) -> tuple[float | None, bool]:
    """The speed several pilots give one class: the geometric mean of the speeds they read.

    Two pilots of one regime read speeds up to ×1.8 apart (docs/studies.md): the mean of two is the
    finer measurement. Returns ``(speed, bound)``: None without any reading; a lower bound when one
    of the speeds it averages is one.
    """
    read = [r for r in readings if r.speed]
    if not read:
        return None, False
    speed = math.exp(sum(math.log(r.speed) for r in read) / len(read))
    return speed, any(r.bound for r in read)
