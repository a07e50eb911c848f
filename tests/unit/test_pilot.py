"""Reading a regime's speed from a pilot's validation record (``advise --pilot``), on hand-worked records."""

import json
import math

import numpy as np
import pytest

from nnunet_dicephi.analysis import pilot as P
from nnunet_dicephi.loss_config import parse_trainer_name

NAN = math.nan


def test_segmented_and_left_epochs_of_a_dsc_trace():
    # best 0.96: segmented from the first value ≥ 0.864, left after the last value ≥ 0.48
    best, segmented, left = P.transition_epochs([0.2, 0.9, 0.96, 0.7, 0.5, 0.1, 0.3, 0.0])
    assert (best, segmented, left) == (0.96, 1, 5)
    # a dip that comes back is not leaving; NaN epochs (patches that missed the cases) are skipped
    assert P.transition_epochs([0.9, 0.1, 0.9, NAN, 0.2, NAN, 0.0])[1:] == (0, 4)
    assert P.transition_epochs([0.9, 0.1, 0.9, 0.8, NAN]) == (0.9, 0, None)  # still segmented at the end
    assert P.transition_epochs([NAN, NAN])[1:] == (None, None)


def _record(dsc_per_epoch, cases=("a", "b"), volume=100.0):
    """A validation record whose pooled DSC over ``cases`` is the given one at each epoch (half the cases' sum)."""
    record = {}
    for epoch, dsc in enumerate(dsc_per_epoch):
        tp = dsc * volume / (2 - dsc)  # fp = 0, fn = volume − tp: DSC = 2tp / (tp + volume)
        record[epoch] = {case: np.array([[tp, 0.0, volume - tp]]) for case in cases}
        record[epoch]["other"] = np.array([[volume, 0.0, 0.0]])  # a perfect case outside ``cases``
    return record


def test_pooled_dsc_per_epoch_over_the_chosen_cases():
    record = _record([0.5, 0.9])
    epochs, dsc, pooled = P.dsc_per_epoch(record, 0, {"a", "b"})
    assert epochs == [0, 1] and dsc == pytest.approx([0.5, 0.9]) and pooled == 2
    _, dsc, pooled = P.dsc_per_epoch(record, 0, None)  # every case: the perfect one pulls it up
    assert pooled == 3 and dsc[0] > 0.5
    _, dsc, pooled = P.dsc_per_epoch({0: {"a": np.zeros((1, 3))}}, 0, None)
    assert math.isnan(dsc[0]) and pooled == 1  # nothing predicted, nothing labelled: no DSC


def _run(record, eps=20.0, schedule=(6, 10, 0.01)):
    return P.PilotRun("f", "TrainerDiceI_eps20_ep6_it10_lr1e-2", schedule, eps, "x", record)


def test_the_push_between_segmented_and_left_in_reference_trainings():
    run = _run(_record([0.5, 0.95, 0.96, 0.9, 0.2, 0.1]))
    reading = P.read_class(run, 0, "lesion", lambda eps: 0.01 * eps, {"a", "b"})
    # segmented after epoch 2 of training, left after epoch 5: poly rate of epochs 2, 3 and 4 of 6
    push = 10 * 0.01 * sum((1 - t / 6) ** 0.9 for t in (2, 3, 4))
    reference = 40 * 1e-2 * sum((1 - t / 22) ** 0.9 for t in range(22))
    assert (reading.segmented_epoch, reading.left_epoch, reading.recorded_epochs) == (2, 5, 6)
    assert reading.rho == pytest.approx(0.2) and reading.cases == 2 and not reading.bound
    assert reading.amount == pytest.approx(0.2 * push / reference)
    assert reading.speed == pytest.approx(reading.amount / P.PUSH_TO_LEAVE)


def test_a_pilot_that_has_not_left_gives_a_lower_bound_and_one_that_never_segmented_none():
    still = P.read_class(_run(_record([0.5, 0.95, 0.9, 0.8])), 0, "lesion", lambda eps: 0.5, {"a", "b"})
    push = 10 * 0.01 * sum((1 - t / 6) ** 0.9 for t in (2, 3))  # up to the record's end (4 of 6 epochs)
    reference = 40 * 1e-2 * sum((1 - t / 22) ** 0.9 for t in range(22))
    assert still.bound and still.left_epoch is None and still.amount == pytest.approx(0.5 * push / reference)
    assert "at least" in still.note
    never = P.read_class(_run(_record([0.1, 0.3, 0.2])), 0, "lesion", lambda eps: 0.5, {"a", "b"})
    assert never.speed is None and "never segmented" in never.note
    nobody = P.read_class(_run(_record([0.9])), 0, "lesion", lambda eps: 0.5, {"z"})
    assert nobody.speed is None and nobody.cases == 0 and "no validation case" in nobody.note
    early = P.read_class(_run(_record([0.95, 0.9, 0.1, 0.0])), 0, "lesion", lambda eps: 0.5, {"a", "b"})
    assert early.left_epoch == 3 and "may read high" in early.note


def test_several_pilots_give_the_geometric_mean_of_their_speeds():
    fast = P.read_class(_run(_record([0.5, 0.95, 0.96, 0.9, 0.2, 0.1])), 0, "lesion", lambda eps: 0.8, {"a", "b"})
    slow = P.read_class(_run(_record([0.5, 0.95, 0.96, 0.9, 0.2, 0.1])), 0, "lesion", lambda eps: 0.2, {"a", "b"})
    assert P.combined_speed([fast]) == (pytest.approx(fast.speed), False)
    assert P.combined_speed([fast, slow]) == (pytest.approx(math.sqrt(fast.speed * slow.speed)), False)
    assert P.combined_speed([fast, slow])[0] == pytest.approx(fast.speed / 2)  # ρ four times smaller
    never = P.read_class(_run(_record([0.1, 0.3, 0.2])), 0, "lesion", lambda eps: 0.5, {"a", "b"})
    assert P.combined_speed([never, slow]) == (pytest.approx(slow.speed), False)  # no reading: left out
    assert P.combined_speed([never]) == (None, False)
    still = P.read_class(_run(_record([0.5, 0.95, 0.9, 0.8])), 0, "lesion", lambda eps: 0.5, {"a", "b"})
    assert P.combined_speed([still, fast])[1]  # a bound among them: the mean is a bound too


def test_the_span_of_several_pilots_is_their_slowest_and_fastest_speed():
    fast = P.read_class(_run(_record([0.5, 0.95, 0.96, 0.9, 0.2, 0.1])), 0, "lesion", lambda eps: 0.8, {"a", "b"})
    slow = P.read_class(_run(_record([0.5, 0.95, 0.96, 0.9, 0.2, 0.1])), 0, "lesion", lambda eps: 0.2, {"a", "b"})
    never = P.read_class(_run(_record([0.1, 0.3, 0.2])), 0, "lesion", lambda eps: 0.5, {"a", "b"})
    assert P.speed_span([fast, never, slow]) == (pytest.approx(slow.speed), pytest.approx(fast.speed))
    assert P.speed_span([fast]) is None and P.speed_span([fast, never]) is None  # one reading: no spread to span


def _pilot_folder(tmp_path, **loss):
    record = {
        "trainer_name": "TrainerDiceI_eps16_ep60_it40_lr1e-2",
        "epochs": 60,
        "iterations": 40,
        "initial_lr": 0.01,
        "eps_per_level": [
            {"scale": 0.25, "eps_nr": 4.0, "eps_dr": 4.0},
            {"scale": 1.0, "eps_nr": 16.0, "eps_dr": 16.0},
        ],
        "data_fingerprint": {"fingerprint": "abc"},
        "loss": "Dice",
        "phi": "I",
        "include_background": False,
        "ce": False,
        "exclusion": False,
        "mime": None,
        **loss,
    }
    (tmp_path / "dicephi_loss.json").write_text(json.dumps(record))
    (tmp_path / "dicephi_validation.jsonl").write_text(
        json.dumps({"epoch": 0, "cases": {"a": [[1.0, 0.0, 0.0], [2.0, 0.0, 0.0]]}}) + "\n"
    )
    return tmp_path


def test_read_pilot_takes_the_full_resolution_eps_and_refuses_what_the_model_does_not_cover(tmp_path):
    run = P.read_pilot(_pilot_folder(tmp_path))
    assert run.schedule == (60, 40, 0.01) and run.eps_of(0) == 16.0 and run.fingerprint == "abc"
    # the heuristic: one ε per output channel, background first; the foreground's are kept
    level = {"scale": 1.0, "eps_nr": [2000.0, 90.0, 30.0], "eps_dr": [2000.0, 90.0, 30.0]}
    run = P.read_pilot(_pilot_folder(tmp_path, eps_per_level=[level]))
    assert (run.eps_of(0), run.eps_of(1)) == (90.0, 30.0)
    for wrong in ({"phi": "BI"}, {"ce": True}, {"include_background": True}, {"loss": "Tversky"}):
        with pytest.raises(P.PilotError, match="not a pilot the model reads"):
            P.read_pilot(_pilot_folder(tmp_path, **wrong))
    (tmp_path / "dicephi_loss.json").write_text("{}")
    with pytest.raises(P.PilotError, match="not a loss record"):
        P.read_pilot(tmp_path)
    (tmp_path / "dicephi_validation.jsonl").unlink()
    with pytest.raises(P.PilotError, match="holds no dicephi_validation.jsonl"):
        P.read_pilot(tmp_path)


def test_pilot_cases_from_a_json_list_or_lines(tmp_path):
    listed, lines, empty = tmp_path / "a.json", tmp_path / "b.txt", tmp_path / "c.txt"
    listed.write_text('["x", "y"]')
    lines.write_text("x\n\n y \n")
    empty.write_text("\n")
    assert P.read_cases(listed) == P.read_cases(lines) == {"x", "y"}
    with pytest.raises(P.PilotError, match="names no case"):
        P.read_cases(empty)
    listed.write_text("[1, 2]")
    with pytest.raises(P.PilotError, match="must be a string"):
        P.read_cases(listed)


def test_the_suggested_pilot_reaches_the_pilot_push_and_its_name_parses():
    factor = P.pilot_factor()
    assert factor == pytest.approx(
        sum((1 - t / 60) ** 0.9 for t in range(60)) / sum((1 - t / 22) ** 0.9 for t in range(22))
    )
    eps = P.suggested_eps(lambda x: x / (10 + x), 1e-3, 1e3)  # rises to 1: reaches 2 / factor
    assert eps / (10 + eps) * factor >= P.PILOT_PUSH > (eps / 1.05) / (10 + eps / 1.05) * factor
    peaked = P.suggested_eps(lambda x: 0.1 * x / (1 + x**2), 1e-3, 1e3)  # peaks at x = 1, below 2 / factor
    assert peaked == pytest.approx(1.0, rel=0.05)
    config = parse_trainer_name(P.pilot_trainer(16.09))
    assert (float(config.eps_nr), config.epochs, config.iterations, config.initial_lr) == (16.0, 60, 40, 0.01)
    assert float(parse_trainer_name(P.pilot_trainer(8.74)).eps_nr) == 8.7
