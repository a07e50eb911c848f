"""The stock nnU-Net commands, in fresh subprocesses, with this project's trainers (CPU, tiny data)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_dicephi.synthetic import write_dataset
from tests.conftest import module_folder

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def nnunet_env(tmp_path_factory, request):
    with module_folder(tmp_path_factory, request, "nnunet") as root:
        yield _prepared(root)


def _prepared(root):
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}  # registration must do it
    env.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
        OMP_NUM_THREADS="1",
        nnUNet_def_n_proc="1",  # nnU-Net's 8 spawned processes cost ~40 s per final validation here
    )
    write_dataset(root / "raw", 901, "Blobs", cases=5)
    run(env, "nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "2d", "-np", "1", "--verify_dataset_integrity")
    return env, root


def run(env, command, *args, extra_env=None):
    result = subprocess.run(
        [str(BIN / command), *args], env={**env, **(extra_env or {})}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (
        f"{command} {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def test_train_and_predict_with_a_parametric_trainer(nnunet_env):
    env, root = nnunet_env
    name = "TrainerDiceBI_eps1e-5_CE_ep1_it2"
    run(env, "nnUNetv2_train", "901", "2d", "0", "-tr", name, "-device", "cpu", extra_env={"nnUNet_n_proc_DA": "0"})
    fold = root / "results" / "Dataset901_Blobs" / f"{name}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    record = json.loads((fold / "dicephi_loss.json").read_text())
    assert record["trainer_name"] == name and record["phi"] == "BI" and record["ce"] is True
    assert record["initial_lr"] == 1e-2  # with CE: nnU-Net's own rate
    assert record["eps_per_level"][0]["eps_nr"] == pytest.approx(1e-5)
    assert record["eps_per_level"][1]["eps_nr"] == pytest.approx(1e-5 / 4)

    # --val re-runs the final validation from the checkpoint; find_best_configuration reads the results
    (fold / "validation" / "summary.json").unlink()
    run(env, "nnUNetv2_train", "901", "2d", "0", "-tr", name, "-device", "cpu", "--val")
    assert (fold / "validation" / "summary.json").is_file()
    run(env, "nnUNetv2_find_best_configuration", "901", "-c", "2d", "-tr", name, "-f", "0", "--disable_ensembling")
    assert (root / "results" / "Dataset901_Blobs" / "inference_instructions.txt").is_file()

    images = root / "raw" / "Dataset901_Blobs" / "imagesTr"
    out = root / "predicted"
    run(
        env,
        "nnUNetv2_predict",
        "-i",
        str(images),
        "-o",
        str(out),
        "-d",
        "901",
        "-c",
        "2d",
        "-f",
        "0",
        "-tr",
        name,
        "-device",
        "cpu",
        "-npp",
        "1",
        "-nps",
        "1",
    )
    assert len(list(out.glob("*.nii.gz"))) == 5


def test_unknown_trainer_name_is_explained(nnunet_env):
    env, _ = nnunet_env
    result = subprocess.run(
        [str(BIN / "nnUNetv2_train"), "901", "2d", "0", "-tr", "TrainerDiceBI_CE_eps1e-5", "-device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "Closest valid name: TrainerDiceBI_eps1e-5_CE" in result.stderr


@pytest.fixture(scope="module")
def partial_env(nnunet_env):
    env, root = nnunet_env
    write_dataset(root / "raw", 902, "PartialBlobs", cases=5, seed=1, unannotated={0: ("dark",), 1: ("dark",)})
    run(env, "nnUNetv2_plan_and_preprocess", "-d", "902", "-c", "2d", "-np", "1")
    return env, root


def _fold(root, dataset, name):
    return root / "results" / dataset / f"{name}__nnUNetPlans__2d" / "fold_0"


def test_heuristic_eps_partial_manifest_kill_and_resume(partial_env):
    import signal
    import time

    import torch

    env, root = partial_env
    stats = json.loads(run(env, "nnunet-dicephi", "stats", "902", "2d", "0").stdout)
    assert stats["channels"] == ["0", "1", "2"] and len(stats["heuristic_eps"]) == 3
    # dark is missing in 2 of the 5 cases, 1 of fold 0's 4 training cases: its ε runs over the other 3
    # (background where every label is annotated)
    assert stats["annotated_cases"] == [3, 4, 3] and stats["heuristic_eps"][2] > 0

    name = "TrainerDiceIEps_CE_ep4_it2"
    env_da = {**env, "nnUNet_n_proc_DA": "0"}
    fold = _fold(root, "Dataset902_PartialBlobs", name)
    marker = root / "halted_at_epoch_2"
    # nnUNetv2_train halted at the start of epoch 2 (epoch 1's checkpoint written), then killed there
    args = [sys.executable, "-m", "tests.e2e.train_until", "2", str(marker), "902", "2d", "0", "-tr", name]
    process = subprocess.Popen([*args, "-device", "cpu"], env=env_da, cwd=REPO, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not marker.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), f"training never reached epoch 2 (exit status {process.poll()})"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (fold / "checkpoint_final.pth").exists()
    first_record = json.loads((fold / "dicephi_loss.json").read_text())
    assert first_record["eps_per_class"] == pytest.approx(stats["heuristic_eps"], abs=5e-4)  # stats: 3 decimals
    assert first_record["partial_labels"] == {"cases_listed": 2, "cases_partial": 2}

    result = run(
        env,
        "nnUNetv2_train",
        "902",
        "2d",
        "0",
        "-tr",
        name,
        "-device",
        "cpu",
        "--c",
        extra_env={"nnUNet_n_proc_DA": "0"},
    )
    assert (fold / "checkpoint_final.pth").is_file()
    assert not list(fold.glob("*.partial"))  # a save the kill cut short is swept on resume
    assert json.loads((fold / "dicephi_loss.json").read_text()) == first_record
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["dicephi"]["eps_per_class"] == first_record["eps_per_class"]
    assert checkpoint["current_epoch"] == 4
    assert "Epoch 3" in result.stdout

    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert summary["dicephi_partial_labels"].startswith("means over annotated")
    assert (fold / "validation" / "summary_all_pairs.json").is_file()

    # its checkpoint under another trainer's name: --c refuses rather than train one loss as another
    other = _fold(root, "Dataset902_PartialBlobs", "TrainerDiceBI_ep4_it2")
    other.mkdir(parents=True)
    shutil.copy(fold / "checkpoint_final.pth", other / "checkpoint_final.pth")
    refused = subprocess.run(
        [str(BIN / "nnUNetv2_train"), "902", "2d", "0", "-tr", "TrainerDiceBI_ep4_it2", "-device", "cpu", "--c"],
        env=env_da,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode != 0
    assert f"recorded {name} (" in refused.stderr and f"-tr {name}," in refused.stderr


def test_mime_trainer_uses_dataset_constants(partial_env):
    env, root = partial_env
    result = run(
        env,
        "nnUNetv2_train",
        "902",
        "2d",
        "0",
        "-tr",
        "TrainerMime_ep1_it2",
        "-device",
        "cpu",
        extra_env={"nnUNet_n_proc_DA": "0"},
    )
    record = json.loads(
        (_fold(root, "Dataset902_PartialBlobs", "TrainerMime_ep1_it2") / "dicephi_loss.json").read_text()
    )
    stats = json.loads(run(env, "nnunet-dicephi", "stats", "902", "2d", "0").stdout)
    assert record["mime"]["a"] == pytest.approx(stats["mime_a"], rel=1e-5)
    # a loss without CE trains at 1e-3 (LossConfig.default_lr); nnU-Net reports the rate each epoch
    assert record["initial_lr"] == 1e-3 and "Current learning rate: 0.001\n" in result.stdout


def test_weighted_ce_trainer_records_its_class_weights_and_validates_with_them(partial_env):
    import torch

    from nnunet_dicephi.losses import inverse_frequency_weights

    env, root = partial_env
    name = "TrainerWCE_ep1_it2"
    train = ["nnUNetv2_train", "902", "2d", "0", "-tr", name, "-device", "cpu"]
    result = run(env, *train, extra_env={"nnUNet_n_proc_DA": "0"})
    fold = _fold(root, "Dataset902_PartialBlobs", name)
    record = json.loads((fold / "dicephi_loss.json").read_text())
    # the cached statistics of fold 0 (the heuristic ε's): expected class volumes of a training patch
    cache = root / "preprocessed" / "Dataset902_PartialBlobs" / "dicephi_statistics"
    (volumes,) = [json.loads(p.read_text())["statistics"]["expected_volume"] for p in cache.glob("*_2d_fold0_*.json")]
    assert (
        record["data_fingerprint"]["fingerprint"]
        == json.loads(next(cache.glob("*_fold0_*")).read_text())["key"]["data"]
    )
    assert record["class_weights"] == pytest.approx(inverse_frequency_weights(torch.tensor(volumes)).tolist())
    assert record["class_weights"][0] == min(record["class_weights"])  # background: the most frequent class
    assert record["initial_lr"] == 1e-2 and "Current learning rate: 0.01\n" in result.stdout
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert checkpoint["dicephi"]["class_weights"] == record["class_weights"]

    # --val takes the recorded weights even when the cached statistics are gone
    shutil.rmtree(cache)
    (fold / "validation" / "summary.json").unlink()
    run(env, *train, "--val")
    assert (fold / "validation" / "summary.json").is_file()
    assert not cache.exists()


def test_broken_manifest_is_refused_with_every_offender(nnunet_env):
    env, root = nnunet_env
    write_dataset(
        root / "raw",
        903,
        "BadManifest",
        cases=5,
        seed=2,
        extra_json={
            "dicephi_partial_labels": {"complete": True, "cases": {"case_000": ["bright", "glow"], "case_999": []}}
        },
    )
    run(env, "nnUNetv2_plan_and_preprocess", "-d", "903", "-c", "2d", "-np", "1")
    result = subprocess.run(
        [str(BIN / "nnUNetv2_train"), "903", "2d", "0", "-tr", "TrainerDiceI_ep1_it2", "-device", "cpu"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    for offender in (
        "unknown label 'glow'",
        "case ids not in the dataset: case_999",
        "these cases are not listed: case_001, case_002, case_003, case_004",
    ):
        assert offender in result.stderr


def _train_losses(env, root, name, results, workers):
    run(
        env,
        "nnUNetv2_train",
        *("901", "2d", "0", "-tr", name, "-device", "cpu"),
        extra_env={"nnUNet_results": str(root / results), "nnUNet_n_proc_DA": workers},
    )
    import torch

    fold = root / results / "Dataset901_Blobs" / f"{name}__nnUNetPlans__2d" / "fold_0"
    checkpoint = torch.load(fold / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    return checkpoint["logging"]["train_losses"], (fold / "dicephi_validation.jsonl").read_text()


@pytest.mark.parametrize("workers", ["2", "0"])
def test_a_seeded_training_repeats_itself(nnunet_env, workers):
    """Same seed, same losses (augmentation in two ordered workers, or in the training process)."""
    env, root = nnunet_env
    first = _train_losses(env, root, "TrainerDiceI_ep2_it4_seed7", f"seeded_a{workers}", workers)
    again = _train_losses(env, root, "TrainerDiceI_ep2_it4_seed7", f"seeded_b{workers}", workers)
    assert len(first[0]) == 2
    assert first == again  # losses of every epoch, bit for bit, and the per-case validation counts
    if workers == "2":
        other = _train_losses(env, root, "TrainerDiceI_ep2_it4_seed8", "seeded_c", workers)
        assert other[0] != first[0]
