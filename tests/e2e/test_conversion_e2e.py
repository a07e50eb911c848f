"""Each converter's fixture → nnU-Net's planner with --verify_dataset_integrity → a project trainer (CPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import module_folder
from tests.fixtures_conversion import make_acdc, make_brats2018, make_wmh2017

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
TRAINER = "TrainerDiceI_ep1_it2"
# thin volumes: nnU-Net's 2d configuration on 32 × 32 slices plans and trains in seconds
SHAPE = (3, 32, 32)


@pytest.fixture(scope="module")
def env(tmp_path_factory, request):
    with module_folder(tmp_path_factory, request, "conversion_e2e") as root:
        yield _environment(root)


def _environment(root):
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}  # the install's hook must find trainers
    env.update(
        nnUNet_raw=str(root / "raw"),
        nnUNet_preprocessed=str(root / "preprocessed"),
        nnUNet_results=str(root / "results"),
        OMP_NUM_THREADS="1",
        # nnU-Net spawns 8 processes by default (fingerprints, integrity check, validation export); each
        # imports torch, which costs more than the whole tiny dataset on two shared cores
        nnUNet_def_n_proc="1",
    )
    return env, root


def run(env, *args, extra_env=None):
    result = subprocess.run(
        [str(a) for a in args], env={**env, **(extra_env or {})}, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(map(str, args))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    )
    return result


def plan_and_train(env, root: Path, dataset_id: int, dataset: str) -> Path:
    run(
        env,
        BIN / "nnUNetv2_plan_and_preprocess",
        *("-d", dataset_id, "-c", "2d", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"),
    )
    # nnUNet_n_proc_DA=0 only for training: the planner refuses zero threads
    run(
        env,
        BIN / "nnUNetv2_train",
        *(dataset_id, "2d", "0", "-tr", TRAINER, "-device", "cpu"),
        extra_env={"nnUNet_n_proc_DA": "0"},
    )
    fold = root / "results" / dataset / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    return fold


def test_brats2018_lgg_empty_missing_view_plans_and_trains(env):
    env, root = env
    source = make_brats2018(root / "download_brats", hgg=3, lgg=2, shape=SHAPE)
    run(env, sys.executable, SCRIPTS / "convert_brats2018.py", source, "-d", "611", "--scheme", "lgg-empty", "-j", "2")
    dataset = "Dataset611_BraTS2018LGGMissing"
    assert json.loads((root / "raw" / dataset / "dataset.json").read_text())["dicephi_partial_labels"]["cases"] == {
        "LGG_Brats18_TCIA10_100_1": [],
        "LGG_Brats18_TCIA10_101_1": [],
    }
    fold = plan_and_train(env, root, 611, dataset)
    record = json.loads((fold / "dicephi_loss.json").read_text())
    assert record["trainer_name"] == TRAINER and record["partial_labels"]["cases_listed"] == 2


def test_acdc_es_myo_empty_with_its_grouped_split_plans_and_trains(env):
    env, root = env
    source = make_acdc(root / "download_acdc", patients=5, shape=SHAPE)
    run(env, sys.executable, SCRIPTS / "convert_acdc.py", source, "-d", "612", "--scheme", "es-myo-empty", "-j", "2")
    dataset = "Dataset612_ACDCMyoESMissing"
    run(
        env,
        BIN / "nnUNetv2_plan_and_preprocess",
        *("-d", "612", "-c", "2d", "-np", "1", "-npfp", "1", "--verify_dataset_integrity"),
    )
    # nnU-Net's planner copied the raw split already; the explicit step confirms it
    installed = run(env, sys.executable, "-m", "nnunet_dicephi.conversion", "install-splits", "612")
    assert installed.stdout.startswith("unchanged: ")
    split = json.loads((root / "raw" / dataset / "splits_final.json").read_text())
    assert json.loads((root / "preprocessed" / dataset / "splits_final.json").read_text()) == split
    run(
        env,
        BIN / "nnUNetv2_train",
        *("612", "2d", "0", "-tr", TRAINER, "-device", "cpu"),
        extra_env={"nnUNet_n_proc_DA": "0"},
    )
    fold = root / "results" / dataset / f"{TRAINER}__nnUNetPlans__2d" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    validated = sorted(p.name[: -len(".nii.gz")] for p in (fold / "validation").glob("*.nii.gz"))
    assert validated == split[0]["val"] and len(validated) == 2  # both frames of one patient
    record = json.loads((fold / "dicephi_loss.json").read_text())
    assert record["partial_labels"]["cases_listed"] == 5


def test_wmh2017_plans_and_trains(env):
    env, root = env
    source = make_wmh2017(root / "download_wmh", subjects=2, shape=SHAPE, layout="2022")
    run(env, sys.executable, SCRIPTS / "convert_wmh2017.py", source, "-d", "613", "-j", "1", "--quiet")
    plan_and_train(env, root, 613, "Dataset613_WMH2017")
