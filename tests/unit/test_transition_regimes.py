"""scripts/transition_regimes.py: the measured half-way ε and the regimes table, on hand-worked numbers."""

import importlib.util
import math
from pathlib import Path

import pytest

PATH = Path(__file__).resolve().parents[2] / "scripts" / "transition_regimes.py"
_spec = importlib.util.spec_from_file_location("transition_regimes", PATH)
script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(script)

PLANS = "nnUNetPlans_f16"


def _conf(trainer, plans=PLANS):
    return f"{trainer}_ep22_it40_lr1e-2_seed0__{plans}__2d"


def test_half_way_interpolates_in_log_eps_between_the_points_around_the_level():
    # 0.8 at ε = 1, 0.2 at ε = 100: the level 0.5 lies half-way in log ε, at ε = 10
    assert script.half_way([1, 100], [0.8, 0.2], 0.5) == (pytest.approx(10.0), "")
    # a quarter of the way down: 10^(2·¼)
    assert script.half_way([1, 10, 100], [0.9, 0.9, 0.1], 0.7)[0] == pytest.approx(10**1.25)
    assert script.half_way([1, 10], [0.9, 0.8], 0.45) == (None, "above")
    assert script.half_way([1, 10], [0.3, 0.0], 0.45) == (1.0, "at or below")


def test_type_means_split_the_lesion_dsc_by_type_and_leave_other_classes_out():
    rows = [
        {"configuration": "c", "case": "t0", "class": "lesion", "dsc": "0.9"},
        {"configuration": "c", "case": "t1", "class": "lesion", "dsc": "0.1"},
        {"configuration": "c", "case": "t2", "class": "lesion", "dsc": "0.3"},
        {"configuration": "c", "case": "t1", "class": "dark", "dsc": "1.0"},
        {"configuration": "c", "case": "t3", "class": "lesion", "dsc": "0.5"},  # no type: not a test case
    ]
    means = script.type_means(rows, {"t0": "A", "t1": "B", "t2": "B"})
    assert means == {"c": {"A": 0.9, "B": pytest.approx(0.2)}}


def _prediction():
    return {
        "dataset": "Dataset973_ToyTransitionEmpty1In2",
        "batch_size": 3,
        "model": {"rho_half": 0.5, "steepness": 4.0, "segmented": 0.9, "left_out": 0.1},
        "classes": [
            {
                "name": "lesion",
                "empty": 0.5,
                "mean_volume": 150.0,
                "v_hat": 75.0,
                "eps_window_I": [2.9, 10.5],
                "eps_half_I": 5.35,
                "min_batch_BI": 4,
                "curve": {
                    "eps": [1e-6, 1.0, 10.0, 100.0],
                    "push_ratio_I": [1e-7, 0.2, 2.0, 1.5],
                    "retained_I": [1.0, 0.9, 0.3, 0.0],
                    "batch_size": [1, 2, 3, 4],
                    "retained_BI": [1.0, 0.5, 0.16, 0.08],
                },
            }
        ],
    }


def test_a_regime_compares_the_measured_half_way_eps_with_the_predicted_window():
    means = {
        _conf("TrainerDiceI"): {"A": 0.98, "B": 0.90},
        _conf("TrainerDiceI_eps1"): {"A": 0.98, "B": 0.85},
        _conf("TrainerDiceI_eps1e1"): {"A": 0.97, "B": 0.05},
        _conf("TrainerDiceIEps"): {"A": 0.97, "B": 0.0},  # the heuristic: not a point of the named-ε sweep
        _conf("TrainerDiceBI", "nnUNetPlans_f16_bs2"): {"A": 0.99, "B": 0.45},
        _conf("TrainerDiceBI", "nnUNetPlans_f16_bs4"): {"A": 0.99, "B": 0.0},
    }
    row = script.regime(_prediction(), means)
    assert [p["eps"] for p in row["sweep_I"]] == [1e-7, 1.0, 10.0]
    # half of 0.90 = 0.45 between 0.85 at ε = 1 and 0.05 at ε = 10: ½ of the way in log ε
    assert row["measured_half_I"] == pytest.approx(10**0.5)
    assert row["inside"] and row["ratio"] == pytest.approx(10**0.5 / 5.35)
    assert [(p["batch"], p["kept"], p["predicted"]) for p in row["sweep_BI"]] == [(2, 0.5, 0.5), (4, 0.0, 0.08)]
    table = script.markdown([row]).splitlines()
    assert table[2].startswith("| Dataset973_ToyTransitionEmpty1In2 | 0.50 | 150 | 75 | 2.9–10 (5.3) |")
    assert "| 3.2 | yes | ×0.59 |" in table[2]
    assert table[-1] == "| Dataset973_ToyTransitionEmpty1In2 | 4 | 4 | 0.00 | 0.00 | 0.08 |"
    # measured share of DSC B kept beside the predicted R, read off the curve (log-linear between its points,
    # its first value below them: the curve is flat at small ε)
    assert row["sweep_I"][1]["kept"] == pytest.approx(0.85 / 0.9) and row["sweep_I"][1]["predicted"] == 0.9
    assert "| Dataset973_ToyTransitionEmpty1In2 | 1e-07: 1.00 (1), 1: 0.94 (0.9), 10: 0.06 (0.3) |" in table


def test_a_transition_outside_the_sweep_is_named_as_such_not_interpolated():
    means = {_conf("TrainerDiceI"): {"B": 0.9}, _conf("TrainerDiceI_eps1"): {"B": 0.2}}
    row = script.regime(_prediction(), means)
    assert row["censored"] == "at or below" and not row["inside"] and row["ratio"] is None
    assert "| ≤ 1 | no | — |" in script.markdown([row])
    means = {_conf("TrainerDiceI"): {"B": 0.9}, _conf("TrainerDiceI_eps1e2"): {"B": 0.8}}
    row = script.regime(_prediction(), means)
    assert row["censored"] == "above" and row["measured_half_I"] is None and not math.isnan(row["reference_dsc_B"])
    assert "| > 100 | no |" in script.markdown([row])


def test_seeds_are_averaged_at_each_eps_and_each_seed_gets_its_own_half_way_eps():
    means = {
        _conf("TrainerDiceI"): {"B": 0.9},
        _conf("TrainerDiceI").replace("seed0", "seed1"): {"B": 0.8},
        _conf("TrainerDiceI_eps1e1"): {"B": 0.9},  # seed 0 still at 0.9: its level 0.45 is crossed later
        _conf("TrainerDiceI_eps1e1").replace("seed0", "seed1"): {"B": 0.0},
        _conf("TrainerDiceI_eps1e2"): {"B": 0.0},
        _conf("TrainerDiceI_eps1e2").replace("seed0", "seed1"): {"B": 0.0},
        _conf("TrainerDiceI").replace("seed0", "seed2"): {"B": 0.1},  # seed 2 only at ε ≈ 0: left out
    }
    row = script.regime(_prediction(), means)
    assert [(p["eps"], p["seeds"], p["dsc_B"]) for p in row["sweep_I"]] == [
        (1e-7, [0, 1], pytest.approx(0.85)),
        (10.0, [0, 1], pytest.approx(0.45)),
        (100.0, [0, 1], 0.0),
    ]
    assert row["measured_half_I"] == pytest.approx(10 ** (1 + 0.025 / 0.45))  # 0.45 → 0: the level 0.425
    assert row["measured_half_I_per_seed"] == {0: [pytest.approx(10**1.5), ""], 1: [10.0, "at or below"]}
    assert "(seeds: 32, ≤ 10)" in script.markdown([row])


def test_trainings_of_another_length_are_not_points_of_the_sweep_but_a_table_of_their_own():
    means = {
        _conf("TrainerDiceI"): {"B": 0.9},
        _conf("TrainerDiceI_eps1"): {"B": 0.85},
        _conf("TrainerDiceI_eps1e1"): {"B": 0.05},
        _conf("TrainerDiceI_eps1").replace("ep22", "ep66"): {"A": 0.97, "B": 0.09},
    }
    row = script.regime(_prediction(), means)
    assert [p["eps"] for p in row["sweep_I"]] == [1e-7, 1.0, 10.0]
    (longer,) = row["longer_I"]
    assert (longer["eps"], longer["epochs"], longer["seeds"], longer["dsc_B"]) == (1.0, 66, [0], 0.09)
    # R at 66 epochs: ρ = 0.2 at ε = 1 (the curve), ρ½ = ½ over 66 epochs' factor
    factor = script.schedule_factor(66, 40, 1e-2)
    assert longer["kept"] == pytest.approx(0.1) and longer["predicted"] == pytest.approx(1 / (1 + (0.4 * factor) ** 4))
    assert "| Dataset973_ToyTransitionEmpty1In2 | 1 | 66 | 0.97 | 0.09 | 0.10 | 0.35 |" in script.markdown([row])


def test_each_other_training_length_gets_its_own_half_way_eps_against_its_own_or_the_sweeps_reference():
    means = {
        _conf("TrainerDiceI"): {"B": 0.9},
        _conf("TrainerDiceI_eps1e1"): {"B": 0.8},
        _conf("TrainerDiceI_eps3e1"): {"B": 0.8},
        _conf("TrainerDiceI_eps1e2"): {"B": 0.0},
        # 66 epochs with its own ε ≈ 0 (level 0.4): 0.8 at ε = 1, 0.0 at ε = 10
        _conf("TrainerDiceI").replace("ep22", "ep66"): {"B": 0.8},
        _conf("TrainerDiceI_eps1").replace("ep22", "ep66"): {"B": 0.8},
        _conf("TrainerDiceI_eps1e1").replace("ep22", "ep66"): {"B": 0.0},
        # 44 epochs without one (the sweep's level 0.45): already 0.1 at its smallest ε
        _conf("TrainerDiceI_eps3").replace("ep22", "ep44"): {"B": 0.1},
        _conf("TrainerDiceI_eps1e1").replace("ep22", "ep44"): {"B": 0.0},
        # 88 epochs at one ε: no sweep, no half-way ε
        _conf("TrainerDiceI_eps3").replace("ep22", "ep88"): {"B": 0.0},
    }
    row = script.regime(_prediction(), means)
    forty_four, sixty_six = row["longer_half_I"]
    assert (forty_four["epochs"], forty_four["measured_half_I"], forty_four["censored"]) == (44, 3.0, "at or below")
    assert forty_four["ratio"] is None and not forty_four["inside"]
    assert (sixty_six["epochs"], sixty_six["eps"]) == (66, [1.0, 10.0])
    assert sixty_six["measured_half_I"] == pytest.approx(10**0.5) and sixty_six["inside"]  # 0.8 → 0.0: level 0.4
    assert sixty_six["ratio"] == pytest.approx(10**0.5 / 5.35)
    shown = script.markdown([row])
    at_low, at_half, at_high = script.window_at(
        _prediction()["classes"][0], _prediction()["model"], script.schedule_factor(66, 40, 1e-2)
    )
    assert sixty_six["eps_window_I_at_length"] == [pytest.approx(at_low), pytest.approx(at_high)]
    assert sixty_six["schedule_factor"] == pytest.approx(2.917, abs=1e-3) and at_high < 10**0.5
    assert not sixty_six["inside_at_length"] and sixty_six["ratio_at_length"] == pytest.approx(10**0.5 / at_half)
    assert "| Dataset973_ToyTransitionEmpty1In2 | 44 | 2.9–10 (5.3) | no | 1.96 |" in shown
    assert "| ≤ 3 | no | — |" in shown
    assert (
        "| Dataset973_ToyTransitionEmpty1In2 | 66 | 2.9–10 (5.3) | yes | 2.92 | 0.00093–1.1 (0.14) | 3.2 | no |"
        in shown
    )


def test_the_timeline_reads_when_type_b_left_the_validation_images_from_the_trainers_record(tmp_path):
    import numpy as np

    from nnunet_dicephi.evaluation import append_validation_record

    types = {"v0": "A", "v1": "B"}
    folds = {}
    # per epoch [tp, fp, fn] of type B's case: segmented (DSC 0.9), left out at epoch 3, back, left out from 5
    b_counts = [(9, 1, 1), (9, 1, 1), (0, 0, 10), (9, 1, 1), (0, 0, 10), (0, 1, 10)]
    for trainer, left_out in (("TrainerDiceI_eps1e1", True), ("TrainerDiceI", False)):
        conf = _conf(trainer)
        folds[conf] = tmp_path / conf / "fold_0"
        folds[conf].mkdir(parents=True)
        for epoch, b in enumerate(b_counts):
            counts_b = b if left_out else (9, 1, 1)
            cases = {"v0": np.array([[9], [1], [1]]), "v1": np.array([[counts_b[0]], [counts_b[1]], [counts_b[2]]])}
            append_validation_record(folds[conf] / "dicephi_validation.jsonl", epoch, cases)
    folds[_conf("TrainerDiceI_eps1e2")] = tmp_path / "none"  # no record: not in the timeline
    left_out = script.left_out_epochs(folds, types)
    assert left_out == {_conf("TrainerDiceI_eps1e1"): (5, 6), _conf("TrainerDiceI"): (None, 6)}
    means = {conf: {"B": 0.5} for conf in folds}
    row = script.regime(_prediction(), means, left_out)
    assert [(p["eps"], p["left_out_from"]) for p in row["timeline"]] == [(1e-7, None), (10.0, 5)]
    # the push by then: ρ = 2.0 at ε = 10 (the curve) times 5 of the 22 epochs' poly learning rate
    poly = [(1 - t / 22) ** 0.9 for t in range(22)]
    assert row["timeline"][1]["amount"] == pytest.approx(2.0 * sum(poly[:5]) / sum(poly))
    assert row["timeline"][0]["amount"] is None
    assert "| Dataset973_ToyTransitionEmpty1In2 | 6 | 1e-07: —, 10: 5 (0.76) |" in script.markdown([row])


def test_the_window_at_another_length_scales_every_rho_threshold_by_the_inverse_of_the_training():
    prediction = _prediction()
    (predicted,) = prediction["classes"]
    # twice the training: ρ½ = 0.25, edges 0.25·9^(∓¼); the curve ρ = 1e-7, 0.2, 2.0 at ε = 1e-6, 1, 10
    low, half, high = script.window_at(predicted, prediction["model"], 2.0)
    edge = 9**0.25
    assert half == pytest.approx(10 ** ((0.25 - 0.2) / 1.8))
    assert low == pytest.approx(10 ** (-6 + 6 * (0.25 / edge - 1e-7) / (0.2 - 1e-7)))
    assert high == pytest.approx(10 ** ((0.25 * edge - 0.2) / 1.8))
    # a tenth of the training: ρ½ = 5, beyond the curve's largest ρ (2.0): never reached
    assert script.window_at(predicted, prediction["model"], 0.1) == (None, None, None)


def test_with_an_onset_the_window_scales_by_the_training_past_it_and_a_speed_multiplies_rho_half():
    prediction = _prediction()
    (predicted,) = prediction["classes"]
    model = prediction["model"] | {"rho_half_reference": 0.5, "onset": 0.5}
    # 3 reference trainings, 0.5 of them before the onset: ρ½ = 0.5 · 0.5 / 2.5 = 0.1; at speed 2.5: 0.25,
    # the ρ½ of twice the training without an onset (the test above)
    assert script.window_at(predicted, model, 3.0, 2.5) == pytest.approx(
        script.window_at(predicted, prediction["model"], 2.0)
    )
    assert script.share_at_length(predicted, model, 1.0, 3.0) == pytest.approx(1 / (1 + (0.2 / 0.1) ** 4))


def test_the_time_law_fit_recovers_rho_half_and_the_onset_and_says_what_no_onset_would_leave():
    # ρ at the half-way ε of a law with ρ½ = 0.6 and f₀ = 0.3, at 1, 3 and 6 reference trainings
    points = [(f, 0.6 * 0.7 / (f - 0.3)) for f in (1.0, 3.0, 6.0)]
    fit = script.fit_time_law(points)
    assert fit["rho_half"] == pytest.approx(0.6) and fit["onset"] == pytest.approx(0.3)
    assert fit["residual"] == pytest.approx(0.0, abs=1e-9) and fit["residual_without_onset"] > 0.1
    # the plain 1/f law is the onset 0
    plain = script.fit_time_law([(1.0, 0.5), (2.0, 0.25), (4.0, 0.125)])
    assert plain["onset"] == 0.0 and plain["rho_half"] == pytest.approx(0.5)
    assert script.fit_time_law([(1.0, 0.5)]) is None  # one length fits nothing
    means = {_conf("TrainerDiceI"): {"B": 0.9}, _conf("TrainerDiceI_eps1e1"): {"B": 0.1}}
    row = script.regime(_prediction(), means) | {"time_law_fit": fit}
    shown = script.markdown([row])
    assert "| Dataset973_ToyTransitionEmpty1In2 | 1.00: 0.6, 3.00: 0.156, 6.00: 0.0737 | 0.60 | 0.30 | 0.000 (" in shown


def test_a_window_without_an_upper_edge_is_open_above_not_a_hold_nor_a_miss():
    prediction = _prediction()
    (predicted,) = prediction["classes"]
    row = {"measured_half_I": 5.0, "censored": "", "sweep_I": [{"eps": 10.0}]}
    schedule = {"epochs": 22, "factor": 1.0}
    # speed 3: ρ½ = 1.5, the upper edge 1.5·9^¼ = 2.6 beyond the curve's largest ρ (2.0)
    (window,) = script.calibrated_windows(row, predicted, prediction["model"], schedule, 3.0)
    assert window["eps_window_I"][1] is None and window["eps_window_I"][0] < 5.0
    assert window["open_above"] and not window["inside"] and not window["outside"]
    (below,) = script.calibrated_windows(row | {"measured_half_I": 1.5}, predicted, prediction["model"], schedule, 3.0)
    assert below["outside"] and not below["open_above"]
    assert script._judged(window) == "open above" and script._judged(below) == "no"


def test_a_pilot_is_read_for_the_speed_not_counted_as_a_sweep_point():
    pilot = "TrainerDiceI_eps3_ep60_it40_lr1e-2_seed1__nnUNetPlans_f16__2d"
    means = {_conf("TrainerDiceI"): {"B": 0.9}, _conf("TrainerDiceI_eps1e1"): {"B": 0.1}, pilot: {"B": 0.0}}
    row = script.regime(_prediction(), means)
    assert [p["eps"] for p in row["sweep_I"]] == [1e-7, 10.0] and row["longer_I"] == []
    assert script.sweep_trainer(means) == "TrainerDiceI_ep22_it40_lr1e-2_seed0"
    assert script.is_pilot(script.parse_trainer_name(pilot.split("__")[0]))
    assert not script.is_pilot(script.parse_trainer_name("TrainerDiceI_eps3_ep60_it40_lr5e-3"))  # another rate


def test_the_pilots_speed_scales_the_window_at_every_length_and_meets_the_measured_half_way_eps():
    means = {
        _conf("TrainerDiceI"): {"B": 0.9},
        _conf("TrainerDiceI_eps1"): {"B": 0.9},
        _conf("TrainerDiceI_eps1e1"): {"B": 0.0},  # half-way (0.45) at √10 ≈ 3.2
        _conf("TrainerDiceI_eps1").replace("ep22", "ep66"): {"B": 0.0},  # at or below 1 at 66 epochs
        _conf("TrainerDiceI_eps1e1").replace("ep22", "ep66"): {"B": 0.0},
    }
    prediction = _prediction()
    row = script.regime(prediction, means)
    reading = {"eps": 3.0, "segmented_epoch": 2, "left_epoch": 20, "recorded_epochs": 60, "amount": 0.36}
    reading |= {"speed": 0.5, "bound": False, "note": ""}
    prediction["classes"][0]["pilot"] = reading
    prediction["schedule"] = {"epochs": 22, "factor": 1.0}
    row["pilots"] = [script.calibrate(row, prediction, 1)]
    at_22, at_66 = row["pilots"][0]["calibrated"]
    # speed ½: ρ½ halves, as if the training were twice as long
    low, half, high = script.window_at(prediction["classes"][0], prediction["model"], 2.0)
    assert at_22["eps_window_I"] == [low, high] and at_22["eps_half_I"] == half
    assert at_22["measured_half_I"] == pytest.approx(10**0.5) and at_22["inside"] == (low <= 10**0.5 <= high)
    assert at_22["ratio"] == pytest.approx(10**0.5 / half)
    assert at_66["epochs"] == 66 and at_66["censored"] == "at or below" and at_66["ratio"] is None
    assert not at_66["inside"] and not at_66["outside"]  # at or below 1: the window reaches below 1 too
    # ten times as slow at 66 epochs: the window starts above ε = 1, so "at or below 1" lies outside it
    (_, fast_66) = script.calibrated_windows(
        row, prediction["classes"][0], prediction["model"], {"epochs": 22, "factor": 1.0}, 10.0
    )
    assert fast_66["eps_window_I"][0] > 1 and fast_66["outside"] and not fast_66["inside"]
    shown = script.markdown([row])
    assert "| Dataset973_ToyTransitionEmpty1In2 | 3, 1, 2 → 20 | 0.36 | 0.5 | 22 |" in shown
    # a pilot that had not left: a bound, shown as such
    reading |= {"left_epoch": None, "bound": True}
    row["pilots"] = [script.calibrate(row, prediction, 1)]
    assert "| 3, 1, 2 → > 60 | ≥ 0.36 | ≥ 0.5 | 22 |" in script.markdown([row])
    # a pilot without a reading: its note, no window
    prediction["classes"][0]["pilot"] = reading | {"speed": None, "amount": None, "note": "never segmented"}
    row["pilots"] = [script.calibrate(row, prediction, 1)]
    assert row["pilots"][0]["calibrated"] == [] and "| never segmented |" in script.markdown([row])
    # two pilots at once: the class's speed is their mean, and a table of its own
    prediction["classes"][0] |= {"pilots": [reading | {"speed": 0.25}, reading | {"speed": 1.0}], "speed": 0.5}
    row["pilots_together"] = script.calibrate(row, prediction)
    assert row["pilots_together"]["speeds"] == [0.25, 1.0] and row["pilots_together"]["speed"] == 0.5
    assert row["pilots_together"]["calibrated"][0]["eps_window_I"] == [low, high]  # the speed ½ above
    assert "| Dataset973_ToyTransitionEmpty1In2 | 0.25, 1 → 0.5 | 22 |" in script.markdown([row])
    # with their span (advise's speed_span): the window runs from the slowest's lower edge to the fastest's upper
    prediction["classes"][0]["speed_span"] = [0.25, 1.0]
    spanned = script.calibrate(row, prediction)["calibrated"][0]
    slowest = script.window_at(prediction["classes"][0], prediction["model"], 1.0, 0.25)
    fastest = script.window_at(prediction["classes"][0], prediction["model"], 1.0, 1.0)
    assert spanned["eps_window_I"] == [slowest[0], fastest[2]] and spanned["eps_half_I"] == half
    assert slowest[0] < low and high < fastest[2]  # wider than the mean speed's on both sides


def test_each_sweep_run_that_left_type_b_is_read_as_if_it_were_the_pilot(tmp_path):
    import json

    from nnunet_dicephi.analysis.pilot import PUSH_TO_LEAVE

    def folder(configuration, b_dsc, eps, epochs=22):
        fold = tmp_path / configuration / "fold_0"
        fold.mkdir(parents=True)
        loss = {"trainer_name": configuration.split("__")[0], "epochs": epochs, "iterations": 40, "initial_lr": 0.01}
        loss |= {
            "eps_per_level": [{"scale": 1.0, "eps_nr": eps, "eps_dr": eps}],
            "data_fingerprint": {"fingerprint": "f"},
        }
        loss |= {"loss": "Dice", "phi": "I", "include_background": False, "ce": False, "exclusion": False, "mime": None}
        (fold / "dicephi_loss.json").write_text(json.dumps(loss))
        lines = [
            json.dumps({"epoch": e, "cases": {"v1": [[100 * d / (2 - d), 0.0, 100 - 100 * d / (2 - d)]]}})
            for e, d in enumerate(b_dsc)
        ]
        (fold / "dicephi_validation.jsonl").write_text("\n".join(lines) + "\n")
        return fold

    means = {
        _conf("TrainerDiceI"): {"B": 0.9},
        _conf("TrainerDiceI_eps1"): {"B": 0.9},
        _conf("TrainerDiceI_eps1e1"): {"B": 0.0},
    }
    folds = {
        _conf("TrainerDiceI"): folder(_conf("TrainerDiceI"), [0.9] * 22, 1e-7),  # never left: no reading
        _conf("TrainerDiceI_eps1e1"): folder(_conf("TrainerDiceI_eps1e1"), [0.9] * 5 + [0.0] * 17, 10.0),
        "TrainerDiceI_eps3_ep60_it40_lr1e-2_seed1__nnUNetPlans_f16__2d": folder("p", [0.9, 0.0], 3.0, 60),  # a pilot
    }
    prediction = _prediction() | {"schedule": {"epochs": 22, "factor": 1.0}}
    row = script.regime(prediction, means)
    (read,) = script.sweep_speeds(row, prediction, folds, {"v1"})
    # segmented after epoch 1, left after epoch 6: ρ = 2.0 at ε = 10 (the curve) times the poly rate of epochs 1–5
    poly = [(1 - t / 22) ** 0.9 for t in range(22)]
    assert (read["eps"], read["epochs"], read["seed"]) == (10.0, 22, 0)
    assert read["speed"] == pytest.approx(2.0 * sum(poly[1:6]) / sum(poly) / PUSH_TO_LEAVE)
    (window,) = read["windows"]  # the sweep's length only: no longer training here
    assert window["eps_window_I"] == list(
        script.window_at(prediction["classes"][0], prediction["model"], 1 / read["speed"])[::2]
    )
    assert "| Dataset973_ToyTransitionEmpty1In2 | 10/22: " in script.markdown([row | {"sweep_speeds": [read]}])
