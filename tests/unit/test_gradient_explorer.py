"""The Eq. 4 gradient explorer against autograd of the library's loss, its limits, the sweep and the CLI."""

import argparse
import csv
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from nnunet_dicephi.analysis import gradients as G
from nnunet_dicephi.losses import soft_dice_loss

RTOL = 1e-10


# --- explicit tensors built from the step model -------------------------------------------------


def model_tensors(batch, empty_maps, *, voxels, volume, fp, overlap, outside):
    """Probabilities and target ``(B, 1, N)`` whose per-map sums are exactly the model's.

    Empty maps predict F/N on every voxel; a non-empty map has ``volume`` label voxels predicted at
    ``overlap`` and spreads ``outside``·V over its other voxels.
    """
    probs = torch.empty(batch, 1, voxels, dtype=torch.float64)
    target = torch.zeros(batch, 1, voxels, dtype=torch.float64)
    for b in range(batch):
        if b < empty_maps:
            probs[b] = fp / voxels
        else:
            target[b, 0, :volume] = 1.0
            probs[b, 0, :volume] = overlap
            probs[b, 0, volume:] = outside * volume / (voxels - volume)
    assert float(probs.max()) <= 1.0
    return probs, target


def autograd(probs, target, **kwargs):
    probs = probs.clone().requires_grad_()
    soft_dice_loss(probs, target, **kwargs).backward()
    return probs.grad


def assert_close(actual, expected, rtol=RTOL):
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=0)


EPS_PAIRS = [(1e-7, 1e-7), (0.0, 5.0), (30.0, 2.0), (200.0, 50.0), (1e4, 3e3)]


@pytest.mark.parametrize("phi", ["I", "BI"])
@pytest.mark.parametrize("batch", [1, 2, 4])
@pytest.mark.parametrize("eps_nr, eps_dr", EPS_PAIRS)
def test_step_gradients_equal_autograd_of_soft_dice_loss(phi, batch, eps_nr, eps_dr):
    voxels, volume, fp, overlap, outside = 96, 14, 7.25, 0.6, 0.35
    for empty_maps in sorted({0, 1, batch // 2, batch}):
        probs, target = model_tensors(
            batch, empty_maps, voxels=voxels, volume=volume, fp=fp, overlap=overlap, outside=outside
        )
        # one output channel, as the paper's BRATS runs: the channel is the foreground, so it stays in
        grad = autograd(probs, target, phi=phi, eps_nr=eps_nr, eps_dr=eps_dr, include_background=True).numpy()
        g = G.step_gradients(
            volume,
            fp,
            phi=phi,
            batch_size=batch,
            empty_maps=empty_maps,
            eps_nr=eps_nr,
            eps_dr=eps_dr,
            overlap=overlap,
            outside=outside,
        )
        if empty_maps:
            assert_close(grad[:empty_maps, 0], np.full((empty_maps, voxels), g.empty))
        else:
            assert np.isnan(g.empty)
        if empty_maps < batch:
            assert_close(grad[empty_maps:, 0, :volume], np.full((batch - empty_maps, volume), g.label))
            assert_close(grad[empty_maps:, 0, volume:], np.full((batch - empty_maps, voxels - volume), g.background))
        else:
            assert np.isnan(g.background) and np.isnan(g.label)


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_batch_gradients_use_the_documented_batch(batch):
    kwargs = {"phi": "BI", "eps_nr": 3.0, "eps_dr": 8.0}
    g = G.batch_gradients(40.0, 12.0, batch_size=batch, empty_fraction=0.5, **kwargs)
    if batch == 1:  # two steps of one map each
        empty = G.step_gradients(40.0, 12.0, batch_size=1, empty_maps=1, **kwargs)
        labelled = G.step_gradients(40.0, 12.0, batch_size=1, empty_maps=0, **kwargs)
        assert (g.empty, g.background, g.label) == (empty.empty, labelled.background, labelled.label)
    else:
        step = G.step_gradients(40.0, 12.0, batch_size=batch, empty_maps=batch // 2, **kwargs)
        assert g == step
    assert [G.empty_maps_in_batch(b, f) for b, f in [(2, 0.0), (2, 0.99), (4, 0.25), (4, 0.5), (8, 0.3)]] == [
        1,
        1,
        1,
        2,
        2,
    ]


@given(
    phi=st.sampled_from(G.PHIS),
    batch=st.integers(1, 3),
    classes=st.integers(1, 3),
    voxels=st.integers(2, 12),
    eps_nr=st.sampled_from([0.0, 1e-7, 0.5, 3.0, 40.0]),
    eps_dr=st.sampled_from([1e-7, 0.5, 3.0, 40.0]),
    per_map=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_core_is_two_valued_and_equals_autograd_for_every_phi(
    phi, batch, classes, voxels, eps_nr, eps_dr, per_map, seed
):
    # random soft predictions, random binary targets (some maps empty), any number of channels
    g = torch.Generator().manual_seed(seed)
    probs = torch.rand(batch, classes, voxels, generator=g, dtype=torch.float64)
    target = (torch.rand(batch, classes, voxels, generator=g) < 0.3).to(torch.float64)
    target[0, 0] = 0.0  # at least one empty map
    eps = {"eps_nr": eps_nr, "eps_dr": eps_dr}
    if per_map:
        # a (C,) tensor ε added once per map (the trainers' heuristic): maps_per_subset times per subset
        kwargs = {name: torch.full((classes,), value, dtype=torch.float64) for name, value in eps.items()}
        kwargs["eps_per"] = "map"
        scale = G.maps_per_subset(phi, batch, classes)
    else:
        kwargs, scale = eps, 1
    grad = autograd(probs, target, phi=phi, include_background=True, **kwargs).numpy()
    sums = ((probs * target).sum(-1), probs.sum(-1), target.sum(-1))
    e = G.eq4_gradients(*(s.numpy() for s in sums), phi=phi, eps_nr=eps_nr * scale, eps_dr=eps_dr * scale)
    expected = np.where(target.numpy() == 1, e.label[..., None], e.background[..., None])
    np.testing.assert_allclose(grad, expected, rtol=1e-10, atol=1e-15)
    # two values per subset: every map of a subset carries the same pair
    for axis in {"I": (), "CI": (1,), "BI": (0,), "BCI": (0, 1)}[phi]:
        for values in (e.background, e.label):
            assert np.ptp(values, axis=axis).max() == 0


def test_core_broadcasts_over_a_grid_and_passes_no_gradient_through_a_zero_denominator():
    inter, pred, target = G.step_sums(10.0, np.array([0.0, 1.0, 100.0]), batch_size=2, empty_maps=1)
    grid = G.eq4_gradients(inter, pred, target, phi="I", eps_nr=np.array([1.0, 2.0, 3.0]), eps_dr=0.0)
    assert grid.background.shape == (2, 1, 3)
    # the empty map with F = 0 and ε_dr = 0: denominator 0, so no gradient (as soft_dice_loss)
    assert grid.background[0, 0, 0] == 0.0 and grid.label[0, 0, 0] == 0.0
    one = G.eq4_gradients(inter[..., 2], pred[..., 2], target[..., 2], phi="I", eps_nr=3.0, eps_dr=0.0)
    assert_close(grid.background[..., 2], one.background)
    curve = G.eq4_gradients(inter[..., 2], pred[..., 2], target[..., 2], phi="BI", eps_nr=[1.0, 5.0], eps_dr=1.0)
    assert curve.label.shape == (2, 1, 2)


# --- the known limits ---------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_phi_i_ignores_an_empty_map_with_tiny_eps(batch):
    # Φ = I: the empty map is its own subset, I_φ = 0 and U_φ = F, so Eq. 4 gives
    # g = (1/B)·ε_nr/(F + ε_dr)² ≈ ε/(B·F²) for F ≫ ε: nothing for ε = 1e-7
    eps, fp = 1e-7, 1000.0
    g = G.batch_gradients(5000.0, fp, phi="I", batch_size=batch, empty_fraction=0.5, eps_nr=eps, eps_dr=eps)
    assert_close(g.empty, eps / (batch * (fp + eps) ** 2))
    assert_close(g.empty, eps / (batch * fp**2), rtol=1e-9)
    assert g.empty_to_background < 1e-8 and g.empty_to_label < 1e-8


@pytest.mark.parametrize("batch", [2, 4])
def test_phi_bi_learns_an_empty_map_beside_a_labelled_one(batch):
    eps, fp, volume = 1e-7, 1000.0, 5000.0
    g = G.batch_gradients(volume, fp, phi="BI", batch_size=batch, empty_fraction=0.5, eps_nr=eps, eps_dr=eps)
    # one subset: the empty map gets the background gradient of the labelled maps, 2I/U² > 0
    labelled, empty = batch - batch // 2, batch // 2
    inter, union = labelled * 0.5 * volume, labelled * 2 * volume + empty * fp
    assert_close(g.empty, (2 * inter + eps) / (union + eps) ** 2)
    assert g.empty == g.background and g.empty_to_background == 1.0
    phi_i = G.batch_gradients(volume, fp, phi="I", batch_size=batch, empty_fraction=0.5, eps_nr=eps, eps_dr=eps)
    assert g.empty > 1e6 * phi_i.empty


@pytest.mark.parametrize("batch", [2, 4])
@pytest.mark.parametrize("volume", [800.0, 12412.0])
def test_heuristic_eps_under_phi_i_pushes_like_phi_bi(batch, volume):
    f = 0.25
    v_hat = G.heuristic_eps([volume], f)
    common = {"batch_size": batch, "empty_fraction": f}
    heuristic = G.batch_gradients(volume, v_hat, phi="I", eps_nr=v_hat, eps_dr=v_hat, **common)
    batch_wise = G.batch_gradients(volume, v_hat, phi="BI", eps_nr=1e-7, eps_dr=1e-7, **common)
    assert 0.3 < heuristic.empty / batch_wise.empty < 3
    assert 0.3 < heuristic.empty_to_background < 3


def test_heuristic_matches_infinite_batch_phi_bi_as_in_eq5():
    # Eq. 5: Σỹ = Σy = v̂ per map, 50 % overlap (a = ½, U = 2v̂ per map). Φ = BI with a huge
    # batch of such maps and Φ = I on an empty map with F = v̂ and ε = v̂ push y = 0 voxels alike.
    v_hat, batch = 1234.0, 20000
    bi = G.step_gradients(v_hat, 0.0, phi="BI", batch_size=batch, empty_maps=0, eps_nr=1e-7, eps_dr=1e-7)
    i = G.step_gradients(v_hat, v_hat, phi="I", batch_size=batch, empty_maps=1, eps_nr=v_hat, eps_dr=v_hat)
    assert_close(batch * i.empty, 1 / (4 * v_hat))
    assert_close(batch * bi.background, 1 / (4 * v_hat), rtol=1e-9)


def test_large_eps_turns_dice_into_l1():
    # ε → ∞: DL ≈ Σ|y − ỹ|/ε, so every voxel gets ±1/(|Φ|·ε) whatever its map
    eps = 1e12
    g = G.batch_gradients(3000.0, 500.0, phi="I", batch_size=2, empty_fraction=0.5, eps_nr=eps, eps_dr=eps)
    assert_close(2 * eps * g.empty, 1.0, rtol=1e-7)
    assert_close(2 * eps * g.background, 1.0, rtol=1e-7)
    assert_close(2 * eps * g.label, -1.0, rtol=1e-7)


@given(fp=st.floats(1.0, 1e5), volume=st.floats(10.0, 1e5))
def test_transition_push_on_an_empty_map_peaks_at_eps_equal_f(fp, volume):
    # d/dε [ε/(F + ε)²] = (F − ε)/(F + ε)³
    eps = fp * np.array([0.5, 0.9, 1.0, 1.1, 2.0])
    g = G.transition(eps, volume=volume, fp=fp)
    assert int(np.argmax(g.empty)) == 2


def test_transition_runs_from_ignoring_to_l1():
    eps = np.logspace(-7, 9, 50)
    g = G.transition(eps, volume=12412.0, fp=9309.0, batch_size=4)
    for k in (0, 17, 49):
        one = G.batch_gradients(
            12412.0, 9309.0, phi="I", batch_size=4, empty_fraction=0.25, eps_nr=eps[k], eps_dr=eps[k]
        )
        assert_close(g.empty[k], one.empty)
        assert_close(g.empty_to_label[k], one.empty_to_label)
    ratio = g.empty_to_background
    assert ratio[0] < 1e-10 and abs(ratio[-1] - 1) < 1e-4
    assert_close(ratio[1] / ratio[0], eps[1] / eps[0], rtol=1e-5)  # ∝ ε while ε ≪ F
    # under Φ = I the ratios do not depend on B (|Φ| = B cancels)
    assert_close(G.transition(eps, volume=12412.0, fp=9309.0, batch_size=1).empty_to_label, g.empty_to_label)


# --- the sweep ----------------------------------------------------------------------------------


@given(v_hat=st.floats(0.5, 1e7), per_decade=st.integers(1, 4))
def test_sweep_eps_is_log_spaced_from_tiny_to_ten_v_hat(v_hat, per_decade):
    values = G.sweep_eps(v_hat, per_decade=per_decade)
    assert values[0] == 1e-7 and values[1] == 1.0
    assert all(a < b for a, b in zip(values, values[1:]))
    assert values[-1] >= 10 * v_hat and (len(values) < 3 or values[-2] < 10 * v_hat)
    assert all(float(f"{v:.0e}") == v for v in values)  # one significant digit: short names


@pytest.mark.parametrize("v_hat, per_decade, epochs", [(12412.0, 1, None), (8789.0, 2, 50), (0.8, 3, None)])
def test_sweep_names_parse_back_to_their_eps(v_hat, per_decade, epochs):
    from nnunet_dicephi.loss_config import HEURISTIC, parse_trainer_name

    entries = G.sweep_names(v_hat, per_decade=per_decade, epochs=epochs)
    assert [e.eps for e in entries if e.eps != HEURISTIC] == G.sweep_eps(v_hat, per_decade=per_decade)
    for entry in entries:
        config = parse_trainer_name(entry.trainer)
        assert (config.loss, config.phi, config.eps_nr, config.eps_dr) == ("Dice", "I", entry.eps, entry.eps)
        assert config.epochs == epochs
        assert "." not in entry.trainer and "__" not in entry.trainer
    names = [e.trainer for e in entries]
    assert names[0] == ("TrainerDiceI" if epochs is None else f"TrainerDiceI_ep{epochs}")
    assert len(set(names)) == len(names)
    # the heuristic sits at v̂ in the ε order
    heuristic = [e.eps for e in entries].index(HEURISTIC)
    numbers = [e.eps for e in entries]
    assert numbers[heuristic - 1] <= v_hat and (heuristic + 1 == len(numbers) or numbers[heuristic + 1] > v_hat)
    if epochs is None:
        assert "TrainerDiceIEps" in names and "TrainerDiceI_eps1e3" in names or v_hat < 100


def test_sweep_recipe_lists_every_fold_and_the_report():
    entries = [G.SweepEntry(1e-7, "TrainerDiceI"), G.SweepEntry("H", "TrainerDiceIEps")]
    text = G.sweep_recipe(entries, v_hat={"class 1": 12.5}, dataset="901", configuration="2d", folds=["0", "3"])
    for name in ("TrainerDiceI", "TrainerDiceIEps", "TrainerDiceBI"):
        for fold in ("0", "3"):
            assert f"nnUNetv2_train 901 2d {fold} -tr {name}\n" in text
    report = text[text.index("nnunet-dicephi report") :]
    for name in ("TrainerDiceI", "TrainerDiceIEps", "TrainerDiceBI"):
        assert f'"$nnUNet_results"/Dataset901_*/{name}__nnUNetPlans__2d ' in report
    assert report.rstrip().endswith("--folds 0 3 -o eps_sweep_report")
    assert " -p Other" in G.sweep_recipe(entries, v_hat={"c": 1.0}, plans="Other")


def test_the_sweep_as_a_spec_loads_and_expands_into_the_same_trainers(tmp_path):
    from nnunet_dicephi.cluster.spec import parse_spec, tomllib

    entries = G.sweep_names(50.0, epochs=5)
    text = G.sweep_spec(entries, dataset="901", configuration="2d", folds=["0", "3"], epochs=5)
    environ = {"nnUNet_raw": "r", "nnUNet_preprocessed": "p", "nnUNet_results": "s"}
    spec = parse_spec(tomllib.loads(text), tmp_path, environ=environ)
    (dataset,) = spec.datasets
    assert dataset.id == 901 and dataset.folds == (0, 3) and dataset.configurations == ("2d",)
    eps_runs = [t for t, plans in dataset.runs if plans == "nnUNetPlans"]
    assert eps_runs == [e.trainer for e in entries]  # the recipe's names, the heuristic among them
    assert [p for t, p in dataset.runs if t.startswith("TrainerDiceBI")] == [f"nnUNetPlans_bs{b}" for b in (1, 2, 4)]


# --- scenarios from dataset statistics ----------------------------------------------------------


def test_scenarios_from_statistics_drop_background_and_keep_mean_volume():
    scenarios = G.scenarios_from_statistics(
        ("0", "1", "2", "3"), (9000.0, 300.0, 0.0, 900.0), 10000, has_background=True, empty_fraction=0.25
    )
    assert [s.name for s in scenarios] == ["class 1", "class 3"]  # class 2 never labelled: nothing to show
    assert scenarios[0].v_hat == 300.0 and scenarios[0].volume == 400.0 and scenarios[0].patch_voxels == 10000
    regions = G.scenarios_from_statistics(
        ("(1, 2)", "(2,)"), (9000.0, 50.0), 10000, has_background=False, empty_fraction=0.5
    )
    assert [s.volume for s in regions] == [10000.0, 100.0]  # V capped at the patch
    assert regions[0].slug == "class_1_2"


# --- the command line ---------------------------------------------------------------------------


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="nnunet-dicephi")
    G.add_parser(parser.add_subparsers(dest="verb", required=True))
    try:
        args = parser.parse_args(["gradients", *argv])
    except SystemExit as exit_:
        return exit_.code
    return args.func(args)


def test_cli_on_given_volumes_writes_table_plots_and_sweep(tmp_path, capsys):
    out = tmp_path / "explore"
    argv = ["--volumes", "500", "2000", "--patch-voxels", "32768", "--batch-size", "1", "2", "--phi", "I", "BI"]
    argv += ["--eps", "1e-7", "H", "100:1e3", "--empty-fraction", "0.5", "--sweep", "--folds", "0", "1", "-o", str(out)]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "g empty" in printed and "nnUNetv2_train DATASET CONFIGURATION 1 -tr TrainerDiceIEps" in printed
    files = sorted(p.name for p in out.iterdir())
    assert files == [
        "gradient_vs_fp_V2000.png",
        "gradient_vs_fp_V500.png",
        "gradients.csv",
        "settings.json",
        "sweep.txt",
        "table.txt",
        "transition_V2000.png",
        "transition_V500.png",
    ]
    assert all((out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for f in files if f.endswith(".png"))
    assert not [p for p in tmp_path.iterdir() if p.name != "explore"]  # no temporary folder left
    rows = list(csv.DictReader((out / "gradients.csv").open()))
    assert len(rows) == 2 * 2 * 2 * 3
    v_hat = 0.5 * (500 + 2000) / 2
    for row in rows:
        assert float(row["v_hat"]) == v_hat and float(row["fp"]) == v_hat
        batch, phi = int(row["batch_size"]), row["phi"]
        per_map = batch if phi == "BI" else 1  # H is a per-class ε: once per map of the subset
        nr = {"1e-07": 1e-7, "H": v_hat * per_map, "100": 100.0}[row["eps_nr"]]
        dr = {"1e-07": 1e-7, "H": v_hat * per_map, "1000": 1000.0}[row["eps_dr"]]
        assert float(row["eps_nr_subset"]) == nr and float(row["eps_dr_subset"]) == dr
        g = G.batch_gradients(
            float(row["volume"]), v_hat, phi=phi, batch_size=batch, empty_fraction=0.5, eps_nr=nr, eps_dr=dr
        )
        assert float(row["grad_empty"]) == float(g.empty)
        assert float(row["empty_to_label"]) == float(g.empty_to_label)
    sweep = (out / "sweep.txt").read_text()
    assert "-tr TrainerDiceI_eps1e3" in sweep and "DATASET/TrainerDiceIEps__nnUNetPlans__CONFIGURATION" in sweep


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--volumes", "-5"], "--volumes"),
        (["--volumes", "40000", "--patch-voxels", "1000"], "--volumes"),
        (["--phi", "I", "XI"], "unknown Φ 'XI'"),
        (["--batch-size", "2", "0"], "--batch-size"),
        (["--eps", "abc"], "--eps"),
        (["--eps", "-1"], "--eps"),
        (["--empty-fraction", "1"], "--empty-fraction"),
        (["--overlap", "1.5"], "--overlap"),
        (["--fp", "1e9"], "--fp"),
        (["--dataset", "901"], "--configuration and --fold"),
        (["--dataset", "901", "--volumes", "3", "--configuration", "2d", "--fold", "0"], "not both"),
    ],
)
def test_cli_bad_input_exits_2_with_one_message(tmp_path, capsys, argv, message):
    assert run_cli([*argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("nnunet-dicephi gradients: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_cli_refuses_a_non_empty_output_without_force(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("keep me")
    small = ["--phi", "I", "--eps", "1", "-o", str(out)]
    assert run_cli(small) == 2
    assert "--force" in capsys.readouterr().err and (out / "old.txt").exists()
    assert run_cli([*small, "--force"]) == 2  # not an earlier output of this command: never deleted
    assert "gradients.csv" in capsys.readouterr().err and (out / "old.txt").exists()
    (out / "old.txt").unlink()
    assert run_cli(small) == 0  # an empty folder is used
    (out / "extra.txt").write_text("from the earlier run")
    assert run_cli([*small, "--force"]) == 0  # an earlier output is replaced whole
    assert not (out / "extra.txt").exists() and (out / "gradients.csv").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_dataset_path_uses_the_statistics_and_the_plans_batch_size(tmp_path, capsys, monkeypatch):
    def fake_load(args):
        scenarios = G.scenarios_from_statistics(
            ("0", "1"), (5e4, 120.0), 4096, has_background=True, empty_fraction=args.empty_fraction
        )
        return scenarios, 3

    monkeypatch.setattr(G, "_load_dataset", fake_load)
    argv = [
        "--dataset",
        "901",
        "--configuration",
        "2d",
        "--fold",
        "2",
        "--eps",
        "H",
        "--sweep",
        "-o",
        str(tmp_path / "o"),
    ]
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    rows = list(csv.DictReader((tmp_path / "o" / "gradients.csv").open()))
    assert {(r["scenario"], r["batch_size"], r["eps_nr"]) for r in rows} == {("class 1", "3", "H")}  # B of the plans
    assert float(rows[0]["v_hat"]) == 120.0 and float(rows[0]["volume"]) == 160.0
    assert "nnUNetv2_train 901 2d 2 -tr TrainerDiceIEps" in printed
    assert "nnUNetv2_train 901 2d 0 " not in printed  # only the given fold

    def broken(args):
        raise RuntimeError("nnUNet_preprocessed is not set")

    monkeypatch.setattr(G, "_load_dataset", broken)
    assert run_cli([*argv[:-1], str(tmp_path / "p")]) == 2
    assert "nnUNet_preprocessed is not set" in capsys.readouterr().err


def test_module_import_is_cheap():
    code = (
        "import sys, nnunet_dicephi.analysis.gradients; "
        "heavy = [m for m in ('torch', 'matplotlib', 'nnunetv2', 'scipy') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_default_eps_are_tiny_small_heuristic_large():
    labels = [e.label() for e in G._default_eps(9309.0)]
    assert labels == ["1e-07", "90", "H", "90000"]
    assert math.isclose(G.heuristic_eps([12412.0], 0.25), 9309.0)
