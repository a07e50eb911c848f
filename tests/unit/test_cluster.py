"""Experiment grids on SLURM, without SLURM: the spec, the plan, the job scripts, the state, the status."""

import argparse
import contextlib
import io
import json
import os
import pickle
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from nnunet_dicephi._problems import InputError
from nnunet_dicephi.cluster import process, slurm, tasks
from nnunet_dicephi.cluster import spec as spec_module
from nnunet_dicephi.cluster import status as status_module
from nnunet_dicephi.cluster.cli import add_parser
from nnunet_dicephi.cluster.lock import LOCK_FILE, ExperimentBusy, experiment_lock
from nnunet_dicephi.cluster.process import TaskRun
from nnunet_dicephi.cluster.runner import StageJob, TrainJob
from nnunet_dicephi.cluster.spec import SpecError, format_time, load_spec, parse_spec, parse_time, tomllib
from nnunet_dicephi.cluster.tasks import FoldState, Task, TaskId, fold_state, plan_jobs, resolve_datasets

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "grid.toml"
REFERENCE = ROOT / "tests" / "expected" / "grid_dry_run.txt"
HOSTILE = "'; rm -rf ~; echo '"


def minimal(**changes) -> dict:
    data = {
        "experiment": {"name": "toy", "output": "out"},
        "environment": {"nnUNet_raw": "raw", "nnUNet_preprocessed": "pre", "nnUNet_results": "res", "device": "cpu"},
        "resources": {"cpus": 2, "mem_gb": 4, "time": "01:00:00"},
        "dataset": [{"id": 901, "configurations": ["2d"], "trainers": ["TrainerDiceI", "TrainerDiceBI"]}],
    }
    for path, value in changes.items():
        *parents, key = path.split(".")
        table = data
        for part in parents:
            table = table[int(part)] if isinstance(table, list) else table.setdefault(part, {})
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    return data


def problems(data: dict, **kwargs) -> dict[str, str]:
    with pytest.raises(SpecError) as info:
        parse_spec(data, kwargs.pop("base", "/base"), environ=kwargs.pop("environ", {}), **kwargs)
    return dict(info.value.problems)


# --- the spec -------------------------------------------------------------------------------------


def test_the_example_spec_is_valid_and_says_what_the_paper_ran():
    spec = load_spec(EXAMPLE, environ={})
    (dataset,) = spec.datasets
    assert dataset.id == 137 and dataset.configurations == ("3d_fullres",)
    assert dataset.trainers == ("TrainerDiceI", "TrainerDiceBI", "TrainerDiceIEps")
    assert dataset.folds == (0, 1, 2, 3, 4)
    train = spec.resources.train
    assert (train.gpus, train.cpus, train.mem_gb, train.time_min) == (1, 8, 64.0, 48 * 60)
    assert train.signal_delay_s == 600 and train.max_requeues == 10
    assert spec.resources.preprocess.gpus == 0 and spec.resources.preprocess.cpus == 16
    assert spec.output == (EXAMPLE.parent / "runs" / "brats2021").resolve()
    assert spec.environment.modules == ("cuda/12.1",) and spec.environment.device == "cuda"


def test_defaults_relative_paths_and_folders_from_the_environment():
    data = minimal(**{"environment.nnUNet_results": None})
    spec = parse_spec(data, "/base", environ={"nnUNet_results": "/elsewhere/results"})
    assert spec.environment.nnunet_raw == Path("/base/raw")
    assert spec.environment.nnunet_results == Path("/elsewhere/results")
    assert spec.output == Path("/base/out") and spec.state_file == Path("/base/out/cluster_state.json")
    (dataset,) = spec.datasets
    assert dataset.folds == (0, 1, 2, 3, 4) and dataset.plans == "nnUNetPlans" and dataset.preprocess
    assert spec.report_spec.output == Path("/base/out/report") and spec.report_spec.enabled
    assert spec.resources.report.gpus == 0 and spec.resources.train.cpus == 2


@pytest.mark.parametrize(
    ("path", "key", "expected"),
    [
        ("resources", "gpu", "did you mean 'gpus'?"),
        ("resources.train", "time_limit", "known keys"),
        ("dataset.0", "trainer", "did you mean 'trainers'?"),
        ("environment", "nnUNet_result", "did you mean 'nnUNet_results'?"),
        ("", "experiments", "did you mean 'experiment'?"),
    ],
)
def test_unknown_keys_are_named_with_the_closest_known_key(path, key, expected):
    found = problems(minimal(**{f"{path}.{key}" if path else key: 1}))
    where = f"{path.replace('.0', '[0]')}.{key}" if path else key
    assert expected in found[where] and "unknown key" in found[where]


@pytest.mark.parametrize(
    ("text", "minutes"),
    [(90, 90), ("90", 90), ("30:00", 30), ("00:00:30", 1), ("48:00:00", 2880), ("1-00:00:00", 1440), ("2-12", 3600)],
)
def test_slurm_times(text, minutes):
    assert parse_time(text) == minutes


@pytest.mark.parametrize("text", ["48h", "25:61:00", "0", 0, -5, "1:2:3:4", True, 1.5, "", "1-2:3:4:5"])
def test_bad_times_are_refused(text):
    with pytest.raises(ValueError):
        parse_time(text)
    found = problems(minimal(**{"resources.time": text}))
    assert "resources.time" in found


def test_format_time():
    assert format_time(2880) == "2-00:00:00" and format_time(90) == "01:30:00"


@pytest.mark.parametrize(
    ("folds", "path", "message"),
    [
        ([0, 5], "dataset[0].folds[1]", "a fold is 0, 1, 2, 3, 4"),
        ([0, 0], "dataset[0].folds[1]", "listed twice"),
        ([True], "dataset[0].folds[0]", "a fold is"),
        ("some", "dataset[0].folds", "expected a list"),
        ([], "dataset[0].folds", "expected a list"),
    ],
)
def test_bad_folds_are_refused(folds, path, message):
    assert message in problems(minimal(**{"dataset.0.folds": folds}))[path]


def test_fold_all_is_accepted():
    data = minimal(**{"dataset.0.folds": "all"})
    assert parse_spec(data, "/b", environ={}).datasets[0].folds == ("all",)


def test_unresolvable_trainers_are_refused_with_the_closest_name_and_the_grammar_once():
    data = minimal(**{"dataset.0.trainers": ["TrainerDiceBI_CE_eps1e-5", "TrainerDiceX", "TrainerDiceIEps_ep2_it2"]})
    with pytest.raises(SpecError) as info:
        parse_spec(data, "/b", environ={})
    found = dict(info.value.problems)
    assert "Closest valid name: TrainerDiceBI_eps1e-5_CE" in found["dataset[0].trainers[0]"]
    assert "Closest valid name: TrainerDiceI" in found["dataset[0].trainers[1]"]
    assert "dataset[0].trainers[2]" not in found
    assert str(info.value).count("Grammar") == 0 and str(info.value).count("Trainer names:") == 1


def test_nnunet_baseline_trainers_are_looked_up_in_nnunet_quietly(monkeypatch, capsys):
    import nnunetv2.utilities.find_objects as find_objects

    from nnunet_dicephi.cluster.spec import check_trainer

    def lookup(name):
        print("Searching in: ...")  # nnU-Net narrates on stdout; `status --json` must stay clean
        if name != "nnUNetTrainer_5epochs":
            raise RuntimeError(f"Could not find requested nnunet trainer {name}")
        return object

    monkeypatch.setattr(find_objects, "recursive_find_trainer_class_by_name", lookup)
    assert check_trainer("nnUNetTrainer_5epochs") is None
    assert check_trainer("nnUNetTrainerFoo") == "nnU-Net has no trainer 'nnUNetTrainerFoo'"
    assert check_trainer("nnUNetTrainer; rm") == "'nnUNetTrainer; rm' is not a class name"
    assert capsys.readouterr().out == ""


def test_validating_trainer_names_imports_neither_torch_nor_nnunet():
    code = (
        "import sys; from nnunet_dicephi.cluster.spec import load_spec; "
        f"load_spec({str(EXAMPLE)!r}, environ={{}}); "
        "print(sorted(m for m in ('torch', 'nnunetv2', 'submitit') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_missing_sections_and_every_problem_at_once():
    data = minimal(**{"environment": None, "resources.cpus": 0, "dataset.0.id": 1000, "experiment.name": "a b"})
    found = problems(data)
    assert found["environment"] == "missing section [environment]"
    assert "missing" in found["environment.nnUNet_raw"]
    assert found["resources.cpus"] == "must be at least 1; got 0"
    assert "between 1 and 999" in found["dataset[0].id"]
    assert "is not a name" in found["experiment.name"]
    assert "missing [[dataset]]" in problems(minimal(dataset=None))["dataset"]
    assert "missing section [experiment]" in problems(minimal(experiment=None))["experiment"]


def test_more_refusals():
    found = problems(
        minimal(
            **{
                "environment.device": "gpu",
                "environment.variables": {"nnUNet_raw": "x", "1BAD": "y", "OK": [1]},
                "resources.extra_sbatch": ["--dependency=afterok:1", "constraint=a100", "--comment=ok"],
                "dataset.0.configurations": ["3d_cascade_fullres"],
                "dataset.0.test_labels": "labels",
            }
        )
    )
    assert "must be one of cuda, cpu, mps" in found["environment.device"]
    assert "set nnUNet_raw in [environment] itself" in found["environment.variables.nnUNet_raw"]
    assert "not a valid environment variable name" in found["environment.variables.1BAD"]
    assert "expected a string or number" in found["environment.variables.OK"]
    assert "set by nnunet-dicephi itself" in found["resources.extra_sbatch[0]"]
    assert "not a long sbatch option" in found["resources.extra_sbatch[1]"]
    assert "resources.extra_sbatch[2]" not in found
    assert "cascade" in found["dataset[0].configurations[0]"]
    assert found["dataset[0].test_labels"] == "needs test_images"
    gpu = problems(minimal(**{"environment.device": "cuda"}))
    assert "training asks for no GPU" in gpu["resources.train.gpus"]
    twice = problems(minimal(dataset=[minimal()["dataset"][0], minimal()["dataset"][0]]))
    assert "appears twice" in twice["dataset[1].id"]


def test_nnunets_own_trainer_names_are_checked_before_nnunet_2_8_too(monkeypatch):
    from nnunet_dicephi.cluster.spec import check_trainer

    assert check_trainer("nnUNetTrainer") is None
    assert check_trainer("nnUNetTrainerNoSuchThing") == "nnU-Net has no trainer 'nnUNetTrainerNoSuchThing'"
    monkeypatch.setitem(sys.modules, "nnunetv2.utilities.find_objects", None)  # 2.6, 2.7: no such module
    assert check_trainer("nnUNetTrainer") is None
    assert check_trainer("nnUNetTrainerNoSuchThing") == "nnU-Net has no trainer 'nnUNetTrainerNoSuchThing'"


def test_a_spec_without_a_device_gets_the_verbs_default_and_run_this_machines(tmp_path):
    no_device = minimal(**{"environment.device": None})
    # submit: SLURM's GPU nodes, so a spec that asks for no GPU is told to
    assert "set gpus = 1" in problems(no_device)["resources.train.gpus"]
    with_gpu = minimal(**{"environment.device": None, "resources.gpus": 1})
    assert parse_spec(with_gpu, "/base", environ={}).environment.device == "cuda"
    # run on a CPU machine: the CPU, and no advice to ask SLURM for a GPU
    assert parse_spec(no_device, "/base", environ={}, default_device="cpu").environment.device == "cpu"
    (tmp_path / "raw" / "Dataset901_Toy").mkdir(parents=True)
    spec = write_spec(tmp_path, no_device)
    code, out, err = cli("run", "--dry-run", str(spec))
    assert code == 0, err
    assert "-device cpu" in out and "-device cuda" not in out


@pytest.mark.parametrize(
    "path",
    ["experiment.name", "resources.partition", "environment.nnUNet_raw", "environment.venv", "dataset.0.plans"],
)
def test_control_characters_are_refused_everywhere(path):
    found = problems(minimal(**{path: "x\nsrun rm -rf ~"}))
    assert any("control characters" in m or "is not" in m for m in found.values()), found


def test_a_toml_syntax_error_and_a_missing_file_are_spec_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[experiment\nname = 1\n")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(bad)
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "missing.toml")


# --- hostile values are quoted --------------------------------------------------------------------


def test_hostile_paths_and_values_are_quoted_in_the_job_script(tmp_path):
    data = minimal(
        **{
            "environment.nnUNet_raw": f"/data/{HOSTILE}",
            "environment.nnUNet_results": "/data/$(touch pwned)",
            "environment.venv": f"/venv/{HOSTILE}",
            "environment.modules": ["cuda/12;touch_pwned"],
            "environment.variables": {"COMMENT": f"`touch pwned` {HOSTILE}"},
            "resources.extra_sbatch": [f"--comment={HOSTILE}"],
        }
    )
    spec = parse_spec(data, "/base", environ={})
    lines = slurm.setup_lines(spec.environment)
    exports = [line for line in lines if line.startswith("export ")]
    script = "\n".join(exports) + '\nprintf "%s\\n" "$nnUNet_raw" "$nnUNet_results" "$COMMENT"'
    out = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == [f"/data/{HOSTILE}", "/data/$(touch pwned)", f"`touch pwned` {HOSTILE}"]
    assert not list(tmp_path.iterdir()), "a spec value ran as shell code"
    assert shlex.split(next(x for x in lines if x.startswith("module")))[2] == "cuda/12;touch_pwned"
    assert shlex.split(next(x for x in lines if x.startswith("source")))[1] == f"/venv/{HOSTILE}/bin/activate"
    assert shlex.split(slurm.python_command(spec.environment)) == [f"/venv/{HOSTILE}/bin/python"]

    plan = plan_jobs(spec, {901: "Dataset901_Toy"})
    text = slurm.render_script(spec, plan.groups[0], tmp_path / "logs", None)
    comment = next(line for line in text.splitlines() if line.startswith("#SBATCH --comment"))
    assert shlex.split(comment.split("=", 1)[1]) == [HOSTILE]
    # the commands run without a shell: the hostile path is one argument
    (command,) = plan.group("predict/Dataset901_Toy").tasks[0].commands[:1]
    assert command[0] == "nnUNetv2_find_best_configuration"
    report = plan.group("report").tasks[0].commands[0]
    assert report[2].startswith("/data/$(touch pwned)/Dataset901_Toy/")


# --- the plan -------------------------------------------------------------------------------------


@pytest.fixture
def grid_env(tmp_path):
    """A spec over a fake dataset: 2 trainers × folds 0–2, nothing preprocessed or trained yet."""
    (tmp_path / "raw" / "Dataset901_Toy").mkdir(parents=True)
    data = minimal(**{"dataset.0.folds": [0, 1, 2]})
    spec = parse_spec(data, tmp_path, environ={})
    return spec, tmp_path


def keys(ids) -> tuple[str, ...]:
    return tuple(str(i) for i in ids)


def fold(root: Path, trainer: str, number, *files: str) -> Path:
    folder = root / "res" / "Dataset901_Toy" / f"{trainer}__nnUNetPlans__2d" / f"fold_{number}"
    for name in files:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text("x")
    return folder


def fake_preprocessed(root: Path) -> None:
    folder = root / "pre" / "Dataset901_Toy"
    (folder / "nnUNetPlans_2d").mkdir(parents=True)
    (folder / "nnUNetPlans.json").write_text(
        json.dumps({"configurations": {"2d": {"data_identifier": "nnUNetPlans_2d"}}})
    )
    (folder / "dataset.json").write_text(json.dumps({"numTraining": 2}))
    for case in ("a", "b"):
        (folder / "nnUNetPlans_2d" / f"{case}.pkl").write_text("x")


def test_fold_states(tmp_path):
    assert fold_state(tmp_path / "nothing") is FoldState.FRESH
    assert fold_state(fold(tmp_path, "T", 0, "checkpoint_latest.pth")) is FoldState.INTERRUPTED
    assert fold_state(fold(tmp_path, "T", 1, "checkpoint_final.pth")) is FoldState.INTERRUPTED  # no validation yet
    assert fold_state(fold(tmp_path, "T", 2, "checkpoint_best.pth")) is FoldState.INTERRUPTED
    done = fold(tmp_path, "T", 3, "checkpoint_final.pth", "validation/summary.json")
    assert fold_state(done) is FoldState.DONE


def test_the_plan_skips_done_folds_resumes_interrupted_ones_and_chains_the_stages(grid_env):
    spec, root = grid_env
    fold(root, "TrainerDiceI", 0, "checkpoint_final.pth", "validation/summary.json")
    fold(root, "TrainerDiceI", 1, "checkpoint_latest.pth")
    fold(root, "TrainerDiceBI", 0, "checkpoint_final.pth")
    plan = plan_jobs(spec, {901: "Dataset901_Toy"})
    assert [g.key for g in plan.groups] == [
        "preprocess/Dataset901_Toy",
        "train/Dataset901_Toy",
        "predict/Dataset901_Toy",
        "report",
    ]
    train = plan.group("train/Dataset901_Toy")
    assert keys(train.after) == ("preprocess/Dataset901_Toy",) and train.name == "toy-train-901"
    notes = {t.key.split("/", 2)[2]: (t.note, t.planned[0]) for t in train.tasks}
    assert "TrainerDiceI__nnUNetPlans__2d/fold_0" not in notes
    assert notes["TrainerDiceI__nnUNetPlans__2d/fold_1"][1][-1] == "--c"
    assert notes["TrainerDiceBI__nnUNetPlans__2d/fold_0"][0].startswith("resume")
    assert notes["TrainerDiceI__nnUNetPlans__2d/fold_2"] == (
        "fresh",
        ("nnUNetv2_train", "901", "2d", "2", "-tr", "TrainerDiceI", "-p", "nnUNetPlans", "-device", "cpu"),
    )
    assert len(train.tasks) == 5
    assert ("train/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d/fold_0", "done") in plan.skipped
    assert keys(plan.group("predict/Dataset901_Toy").after) == ("train/Dataset901_Toy",)
    assert keys(plan.group("report").after) == ("predict/Dataset901_Toy",)
    (preprocess,) = plan.group("preprocess/Dataset901_Toy").tasks[0].commands
    assert preprocess == (
        "nnUNetv2_plan_and_preprocess", "-d", "901", "-c", "2d", "-np", "2", "--verify_dataset_integrity",
    )  # fmt: skip


def test_the_plan_waits_for_active_jobs_and_never_submits_them_twice(grid_env):
    spec, root = grid_env
    unit = "train/Dataset901_Toy/TrainerDiceBI__nnUNetPlans__2d/fold_2"
    active = {"preprocess/Dataset901_Toy": "77", unit: "78_5"}
    plan = plan_jobs(spec, {901: "Dataset901_Toy"}, active=active)
    assert [g.key for g in plan.groups] == ["train/Dataset901_Toy", "predict/Dataset901_Toy", "report"]
    train = plan.group("train/Dataset901_Toy")
    assert keys(train.after) == () and train.after_jobs == ("77",)
    assert unit not in [t.key for t in train.tasks] and (unit, "still queued or running as job 78_5") in plan.skipped
    predict = plan.group("predict/Dataset901_Toy")
    assert keys(predict.after) == ("train/Dataset901_Toy",) and predict.after_jobs == ("78_5",)


def test_the_plan_for_a_finished_grid_is_empty_and_a_preprocessed_dataset_is_not_preprocessed_again(grid_env):
    spec, root = grid_env
    fake_preprocessed(root)
    for trainer in ("TrainerDiceI", "TrainerDiceBI"):
        for number in (0, 1, 2):
            fold(root, trainer, number, "checkpoint_final.pth", "validation/summary.json")
    plan = plan_jobs(spec, {901: "Dataset901_Toy"})
    assert [g.key for g in plan.groups] == ["predict/Dataset901_Toy", "report"]  # never predicted yet
    assert ("preprocess/Dataset901_Toy", "already preprocessed") in plan.skipped
    assert keys(plan.group("predict/Dataset901_Toy").after) == ()
    for key in ("predict/Dataset901_Toy/crossval", "report"):
        tasks.marker_path(spec, key).parent.mkdir(parents=True, exist_ok=True)
        tasks.marker_path(spec, key).write_text("done")
    (spec.report_spec.output).mkdir(parents=True)
    (spec.report_spec.output / "report.md").write_text("# report")
    plan = plan_jobs(spec, {901: "Dataset901_Toy"})
    assert plan.groups == () and {why for _, why in plan.skipped} == {"done", "already preprocessed"}


def test_a_new_training_redoes_only_the_predictions_that_read_it(tmp_path):
    (tmp_path / "raw" / "Dataset901_Toy").mkdir(parents=True)
    for name in ("images", "labels"):
        (tmp_path / name).mkdir()
    data = minimal(**{"dataset.0.folds": [0], "dataset.0.test_images": "images", "dataset.0.test_labels": "labels"})
    spec = parse_spec(data, tmp_path, environ={})
    fake_preprocessed(tmp_path)
    fold(tmp_path, "TrainerDiceI", 0, "checkpoint_final.pth", "validation/summary.json")
    predict = [t for t in tasks.dataset_tasks(spec, spec.datasets[0], "Dataset901_Toy") if t.id.stage == "predict"]
    for key in [t.key for t in predict] + ["report"]:
        tasks.marker_path(spec, key).parent.mkdir(parents=True, exist_ok=True)
        tasks.marker_path(spec, key).write_text("done")
    # TrainerDiceBI was added to the grid after everything else had run
    plan = plan_jobs(spec, {901: "Dataset901_Toy"})
    assert [t.key for t in plan.group("predict/Dataset901_Toy").tasks] == [
        "predict/Dataset901_Toy/crossval",  # the cross-validation summary compares both trainers
        "predict/Dataset901_Toy/TrainerDiceBI__nnUNetPlans__2d",
    ]
    assert ("predict/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d", "done") in plan.skipped
    # preprocessing again makes every prediction stale
    shutil.rmtree(tmp_path / "pre")
    tasks.marker_path(spec, "preprocess/Dataset901_Toy").unlink(missing_ok=True)
    plan = plan_jobs(spec, {901: "Dataset901_Toy"})
    assert len(plan.group("predict/Dataset901_Toy").tasks) == 3


def test_plan_and_status_agree_that_predictions_older_than_a_retraining_are_stale(tmp_path):
    (tmp_path / "raw" / "Dataset901_Toy").mkdir(parents=True)
    for name in ("images", "labels"):
        (tmp_path / name).mkdir()
    data = minimal(**{"dataset.0.folds": [0], "dataset.0.test_images": "images", "dataset.0.test_labels": "labels"})
    spec = parse_spec(data, tmp_path, environ={})
    names = {901: "Dataset901_Toy"}
    fake_preprocessed(tmp_path)
    folds = [
        fold(tmp_path, t, 0, "checkpoint_final.pth", "validation/summary.json")
        for t in ("TrainerDiceI", "TrainerDiceBI")
    ]
    for task in tasks.grid_tasks(spec, names):
        if task.marker is not None and task.id.stage != "preprocess":
            task.marker.parent.mkdir(parents=True, exist_ok=True)
            task.marker.write_text("done")
    (spec.report_spec.output).mkdir(parents=True)
    (spec.report_spec.output / "report.md").write_text("# report")
    assert plan_jobs(spec, names).groups == ()
    assert {r.status for r in status_module.collect(spec, names, {}, {}, {})} == {"done"}
    # TrainerDiceI trained again after the predictions: what reads it is redone, and status says so
    later = time.time() + 60
    os.utime(folds[0] / "checkpoint_final.pth", (later, later))
    plan = plan_jobs(spec, names)
    redone = ["predict/Dataset901_Toy/crossval", "predict/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d"]
    assert [t.key for g in plan.groups for t in g.tasks] == [*redone, "report"]
    rows = {(r.stage, r.trainer): r.status for r in status_module.collect(spec, names, {}, {}, {})}
    assert rows[("predict", "cross-validation")] == rows[("predict", "TrainerDiceI")] == rows[("report", "")] == "stale"
    assert rows[("predict", "TrainerDiceBI")] == rows[("train", "TrainerDiceI")] == "done"


def test_selected_stages_only(grid_env):
    spec, _ = grid_env
    plan = plan_jobs(spec, {901: "Dataset901_Toy"}, stages=["train", "report"])
    assert [g.key for g in plan.groups] == ["train/Dataset901_Toy", "report"]
    assert keys(plan.group("report").after) == ("train/Dataset901_Toy",)  # still waits for the training
    assert ("predict/Dataset901_Toy", "stage not selected") in plan.skipped
    with pytest.raises(ValueError, match="unknown stage"):
        plan_jobs(spec, {901: "Dataset901_Toy"}, stages=["deploy"])


def test_fold_all_test_sets_and_datasets_with_other_folds(tmp_path):
    for name in ("Dataset901_Toy", "Dataset902_Two"):
        (tmp_path / "raw" / name).mkdir(parents=True)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    second = {"id": 902, "configurations": ["2d"], "trainers": ["TrainerDiceI"], "folds": [0]}
    data = minimal(**{"dataset.0.folds": "all", "dataset.0.test_images": "images", "dataset.0.test_labels": "labels"})
    data["dataset"].append(second)
    spec = parse_spec(data, tmp_path, environ={})
    names = resolve_datasets(spec)
    assert names == {901: "Dataset901_Toy", 902: "Dataset902_Two"}
    plan = plan_jobs(spec, names)
    predict = plan.group("predict/Dataset901_Toy")  # one array task per trainer; no find_best for fold "all"
    assert [t.key for t in predict.tasks] == [
        "predict/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d",
        "predict/Dataset901_Toy/TrainerDiceBI__nnUNetPlans__2d",
    ]
    assert all([c[0] for c in t.commands] == ["nnUNetv2_predict", "nnUNetv2_evaluate_folder"] for t in predict.tasks)
    assert [t.key for t in plan.group("predict/Dataset902_Two").tasks] == ["predict/Dataset902_Two/crossval"]
    reports = plan.group("report").tasks[0].commands
    outputs = [c[c.index("-o") + 1] for c in reports]
    assert outputs == [str(spec.output / "report" / n) for n in ("Dataset901_Toy", "Dataset902_Two")] + [
        str(spec.output / "report" / "test_Dataset901_Toy")
    ]
    assert "--reference" in reports[2] and reports[0][reports[0].index("--folds") + 1] == "all"


def test_resolving_datasets_names_what_is_missing(tmp_path):
    data = minimal(**{"environment.venv": "venv", "dataset.0.test_images": "nowhere"})
    data["dataset"].append({"id": 5, "configurations": ["2d"], "trainers": ["TrainerDiceI"], "preprocess": False})
    (tmp_path / "pre" / "Dataset005_Five").mkdir(parents=True)
    spec = parse_spec(data, tmp_path, environ={})
    with pytest.raises(SpecError) as info:
        resolve_datasets(spec)
    found = dict(info.value.problems)
    assert "no Dataset901_* folder" in found["dataset[0].id"]
    assert "not preprocessed" in found["dataset[1].preprocess"]
    assert "has no bin/python" in found["environment.venv"]


# --- the job script -------------------------------------------------------------------------------


def test_the_dry_run_of_the_example_matches_the_committed_reference_line_by_line():
    spec = parse_spec(tomllib.loads(EXAMPLE.read_text()), "/examples", environ={})
    plan = plan_jobs(spec, {137: "Dataset137_BraTS2021"})
    rendered = slurm.render_plan(spec, plan.groups, spec.output / "slurm" / "DRY-RUN").rstrip("\n").splitlines()
    expected = REFERENCE.read_text().rstrip("\n").splitlines()
    for number, (got, want) in enumerate(zip(rendered, expected), start=1):
        assert got == want, f"{REFERENCE.name} line {number}"
    assert len(rendered) == len(expected)


def test_the_training_array_script_carries_the_requeue_machinery():
    spec = parse_spec(tomllib.loads(EXAMPLE.read_text()), "/examples", environ={})
    plan = plan_jobs(spec, {137: "Dataset137_BraTS2021"})
    text = slurm.render_script(spec, plan.group("train/Dataset137_BraTS2021"), Path("/logs"), "afterok:12")
    for line in (
        "#SBATCH --array=0-14%15",
        "#SBATCH --signal=USR2@600",
        "#SBATCH --requeue",
        "#SBATCH --dependency=afterok:12",
        "#SBATCH --kill-on-invalid-dep=yes",
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --time=2880",
    ):
        assert line in text.splitlines()


def test_callables_pickle_and_training_decides_resume_itself(grid_env):
    spec, root = grid_env
    fold(root, "TrainerDiceI", 1, "checkpoint_latest.pth")
    plan = plan_jobs(spec, {901: "Dataset901_Toy"})
    functions = [TaskRun(task) for task in plan.group("train/Dataset901_Toy").tasks]
    assert all(f.task.commands[0][-1] != "--c" for f in functions)  # --c is decided when the job starts
    assert pickle.loads(pickle.dumps(functions[0])) == functions[0]
    (stage,) = [TaskRun(task) for task in plan.group("report").tasks]
    assert stage.task.marker == tasks.marker_path(spec, "report")


def train_run(argv, folder) -> TaskRun:
    return TaskRun(Task(TaskId("train", "x"), (tuple(argv),), fold_dir=Path(folder)))


# --- inside the job -------------------------------------------------------------------------------


def good_checkpoint(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", b"weights")


def test_a_training_job_runs_fresh_resumes_or_does_nothing(tmp_path, capsys):
    folder = tmp_path / "fold_0"
    argv = ("nnUNetv2_train", "1", "2d", "0")
    job = train_run(argv, folder)
    assert job.commands() == [argv]
    good_checkpoint(folder / "checkpoint_latest.pth")
    assert job.commands() == [(*argv, "--c")]
    assert "resuming from checkpoint_latest.pth with --c" in capsys.readouterr().out
    good_checkpoint(folder / "checkpoint_final.pth")
    (folder / "validation").mkdir()
    (folder / "validation" / "summary.json").write_text("{}")
    assert job.commands() == [] and job() == "train/x: already finished"
    # a job pickled by an earlier release runs as the same task
    assert TrainJob("train/x", argv, str(folder))() == "train/x: already finished"


def test_one_function_adds_or_removes_c_and_never_twice(tmp_path):
    fresh = ("nnUNetv2_train", "1", "2d", "0")
    for argv in (fresh, (*fresh, "--c"), (*fresh, "--c", "--c")):
        assert tasks.resumed(argv, resume=False) == fresh
        assert tasks.resumed(argv, resume=True) == (*fresh, "--c")
    # the job decides from the fold, whatever the command it was given says
    folder = tmp_path / "fold_0"
    job = train_run((*fresh, "--c"), folder)
    assert job.commands() == [fresh]
    good_checkpoint(folder / "checkpoint_latest.pth")
    assert job.commands() == [(*fresh, "--c")]


def test_a_checkpoint_broken_by_a_kill_is_moved_aside(tmp_path, capsys):
    folder = tmp_path / "fold_0"
    good_checkpoint(folder / "checkpoint_best.pth")
    (folder / "checkpoint_latest.pth").write_bytes(b"PK\x03\x04 half a checkpoint")
    job = train_run(("nnUNetv2_train",), folder)
    assert job.commands() == [("nnUNetv2_train", "--c")]  # nnU-Net falls back to checkpoint_best
    assert (folder / "checkpoint_latest.pth.broken").is_file() and not (folder / "checkpoint_latest.pth").exists()
    assert "is incomplete" in capsys.readouterr().out


def test_a_stage_job_runs_its_commands_then_writes_its_marker(tmp_path):
    marker = tmp_path / "markers" / "report.done"
    ok = TaskRun(Task(TaskId("report"), ((sys.executable, "-c", "print('hi')"),), marker=marker))
    assert ok() == "report: done" and marker.is_file()
    failing = Task(TaskId("predict", "x"), ((sys.executable, "-c", "import sys; sys.exit(3)"),), marker=tmp_path / "m")
    with pytest.raises(process.CommandFailed, match="exit status 3"):
        TaskRun(failing)()
    assert not (tmp_path / "m").exists()
    # a job pickled by an earlier release runs as the same task
    marker.unlink()
    assert StageJob("report", ok.task.commands, str(marker))() == "report: done" and marker.is_file()


def test_the_command_ignores_the_warning_signal_and_is_stopped_by_the_checkpoint():
    errors = []

    def run():
        try:
            process.run_command((sys.executable, "-c", "import time; time.sleep(60)"))
        except process.CommandFailed as error:
            errors.append(str(error))

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 30
    while process._CHILD is None and time.monotonic() < deadline:
        time.sleep(0.05)
    child = process._CHILD  # set once Popen returned, i.e. after the exec: SIGUSR2 is ignored by now
    assert child is not None, "the command did not start within 30 s"
    os.kill(child.pid, signal.SIGUSR2)  # SLURM's warning reaches every process of the step
    delayed = train_run(("nnUNetv2_train",), "/nowhere").checkpoint()
    thread.join(timeout=60)
    # an ignored signal is dropped when sent; had SIGUSR2 killed the command, it would have ended
    # with signal 12 before the checkpoint's SIGTERM (15) could reach it
    assert errors and "signal 15" in errors[0], "SIGUSR2 must not kill the command; submitit's handler decides"
    assert delayed.function == train_run(("nnUNetv2_train",), "/nowhere")


# --- the state file -------------------------------------------------------------------------------


def test_the_state_file_is_written_atomically_and_the_latest_job_wins(tmp_path, monkeypatch):
    path = tmp_path / "cluster_state.json"
    assert slurm.load_state(path, "toy")["submissions"] == []
    current = slurm.load_state(path, "toy")
    slurm.new_submission(current, "f1")["jobs"].update({"a": "1", "b": "2_0"})
    slurm.save_state(path, current)
    slurm.new_submission(current, "f2")["jobs"].update({"a": "3"})
    latest = slurm.latest_jobs(current)
    assert (latest["a"].job_id, latest["a"].folder) == ("3", "f2") and latest["b"].job_id == "2_0"

    before = path.read_text()

    def crash(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        slurm.save_state(path, current)
    assert path.read_text() == before  # a crash mid-write leaves the old state whole
    monkeypatch.undo()
    path.write_text(json.dumps({"version": 99}))
    with pytest.raises(InputError, match="cluster_state.json is of another version"):
        slurm.load_state(path, "toy")


HOLD_THE_LOCK = """\
import sys, time
from nnunet_dicephi.cluster.lock import experiment_lock
with experiment_lock(sys.argv[1], "run"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_run_and_submit_share_one_lock_that_a_killed_holder_leaves_free(tmp_path):
    for holder, other in (("submit", "run"), ("run", "submit"), ("submit", "submit")):
        with experiment_lock(tmp_path, holder):
            with pytest.raises(ExperimentBusy, match=rf"another nnunet-dicephi {holder} \(pid {os.getpid()}\)"):
                with experiment_lock(tmp_path, other):
                    pass
        assert not any(tmp_path.iterdir()), "the lock file is removed with the lock"
    # a holder killed with SIGKILL leaves its file; its lock went with it
    process = subprocess.Popen([sys.executable, "-c", HOLD_THE_LOCK, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "held\n"
        with pytest.raises(ExperimentBusy, match=rf"run \(pid {process.pid}\)"):
            with experiment_lock(tmp_path, "submit"):
                pass
    finally:
        process.kill()
        process.wait(timeout=60)
    assert (tmp_path / LOCK_FILE).is_file()
    with experiment_lock(tmp_path, "submit"):
        assert "submit" in (tmp_path / LOCK_FILE).read_text()
    assert not any(tmp_path.iterdir())


def test_submit_refuses_while_processes_of_a_killed_run_still_train(grid_env, monkeypatch):
    spec, _ = grid_env
    key = "train/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d/fold_0"
    spec.output.mkdir(parents=True)
    training = {"status": "running", "pid": os.getpid(), "log": "x"}  # alive; its run (the pid below) is not
    (spec.output / "local_state.json").write_text(
        json.dumps({"version": 1, "pid": 999999999, "units": {key: training}})
    )
    monkeypatch.setattr(slurm, "queued_jobs", lambda user=None: {})

    def submit_group(*args):
        raise AssertionError("nothing may be submitted")

    monkeypatch.setattr(slurm, "submit_group", submit_group)
    with pytest.raises(ExperimentBusy, match=rf"still run: {key} \(pid {os.getpid()}\).* then submit again"):
        slurm.submit(spec, say=lambda _: None)
    assert not (spec.output / LOCK_FILE).exists() and not spec.state_file.exists()


def test_a_submit_without_slurm_is_refused_and_leaves_nothing_behind(tmp_path, monkeypatch):
    (tmp_path / "raw" / "Dataset901_Toy").mkdir(parents=True)
    spec = write_spec(tmp_path, minimal())
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))
    code, out, err = cli("submit", str(spec))
    assert code == 2 and "squeue not found" in err, err
    assert not any((tmp_path / "out").iterdir()), "no lock, state or submission folder left behind"


# --- the scheduler's answers and the status -------------------------------------------------------


def test_parsing_squeue_and_scontrol():
    queue = slurm.parse_squeue("12|RUNNING|None\n13_0|PENDING|Dependency\n13_1|PENDING|DependencyNeverSatisfied\n")
    assert queue["12"].status == "running" and queue["13_0"].status == "pending"
    assert queue["13_1"].status == "blocked"
    known = slurm.parse_scontrol(
        "JobId=20 JobName=x JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0\n"
        "JobId=21 ArrayJobId=21 ArrayTaskId=0-2%3 JobState=CANCELLED Reason=DependencyNeverSatisfied ExitCode=0:0\n"
        "No jobs in the system\n"
    )
    assert known["20"].exit_code == "1:0" and known["20"].status == "failed"
    assert {"21_0", "21_1", "21_2"} <= set(known) and known["21_2"].reason == "DependencyNeverSatisfied"


def test_status_from_folders_records_queue_and_finished_jobs(grid_env):
    spec, root = grid_env
    names = {901: "Dataset901_Toy"}
    logs = root / "logs"
    logs.mkdir()
    fake_preprocessed(root)
    fold(root, "TrainerDiceI", 0, "checkpoint_final.pth", "validation/summary.json")
    fold(root, "TrainerDiceBI", 2, "checkpoint_latest.pth")
    units = [t.key for t in tasks.grid_tasks(spec, names) if t.id.stage == "train"]  # I0 I1 I2 BI0 BI1 BI2
    jobs_by_key = {"preprocess/Dataset901_Toy": "10", units[0]: "11_0", units[1]: "11_1", units[2]: "11_2"}
    jobs_by_key.update({units[3]: "11_3", units[4]: "11_4", "predict/Dataset901_Toy/crossval": "12", "report": "13"})
    records = {k: slurm.JobRecord(k, v, str(logs), "t") for k, v in jobs_by_key.items()}
    with open(logs / "11_2_0_result.pkl", "wb") as handle:
        pickle.dump(("error", "Traceback ...\nCommandFailed: nnUNetv2_train failed with exit status 1"), handle)
    (logs / "11_4_0_log.err").write_text("killed")
    queue = slurm.parse_squeue("11_1|RUNNING|None\n12|PENDING|Dependency\n13|PENDING|DependencyNeverSatisfied\n")
    known = slurm.parse_scontrol(
        "JobId=33 ArrayJobId=11 ArrayTaskId=2 JobState=FAILED Reason=NonZeroExitCode ExitCode=1:0"
    )
    rows = status_module.collect(spec, names, records, queue, known)
    got = [(r.stage, r.trainer, r.fold, r.status) for r in rows]
    assert got == [
        ("preprocess", "", "", "done"),
        ("train", "TrainerDiceI", "0", "done"),
        ("train", "TrainerDiceI", "1", "running"),
        ("train", "TrainerDiceI", "2", "failed"),
        ("train", "TrainerDiceBI", "0", "blocked"),  # no log, no record: never ran
        ("train", "TrainerDiceBI", "1", "failed"),  # a log but no result: killed
        ("train", "TrainerDiceBI", "2", "interrupted"),
        ("predict", "cross-validation", "", "pending"),
        ("report", "", "", "blocked"),
    ]
    failed = rows[3]
    assert "FAILED (exit 1:0)" in failed.detail and "CommandFailed: nnUNetv2_train failed" in failed.detail
    assert status_module.exit_status(rows) == 1
    assert status_module.exit_status([r for r in rows if r.status not in ("failed", "blocked")]) == 0
    text = status_module.table(rows)
    assert text.splitlines()[0].split() == [
        "STAGE",
        "DATASET",
        "CONFIGURATION",
        "TRAINER",
        "FOLD",
        "STATUS",
        "JOB",
        "DETAIL",
    ]
    assert text.splitlines()[-1] == "2 done, 1 running, 1 pending, 2 failed, 2 blocked, 1 interrupted"
    unknown = status_module.collect(spec, names, records, None, None)
    assert unknown[2].status == "unknown" and unknown[6].status == "interrupted"
    assert unknown[3].status == "failed"  # its result pickle says so, scheduler or not


# --- the command line -----------------------------------------------------------------------------


def cli(*argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="nnunet-dicephi")
    add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


def write_spec(tmp_path: Path, data: dict) -> Path:
    def toml(value):
        if isinstance(value, str):
            return json.dumps(value)
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return "[" + ", ".join(toml(v) for v in value) + "]"
        return str(value)

    lines = []
    for section, table in data.items():
        for item in table if isinstance(table, list) else [table]:
            lines.append(f"[[{section}]]" if isinstance(table, list) else f"[{section}]")
            lines += [f"{key} = {toml(value)}" for key, value in item.items()]
    path = tmp_path / "grid.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_submit_refuses_a_bad_spec_with_one_message_and_exit_status_2(tmp_path):
    spec = write_spec(tmp_path, minimal(**{"resources.gpu": 1, "dataset.0.folds": [7]}))
    code, out, err = cli("submit", str(spec))
    assert code == 2 and out == ""
    assert err.startswith("nnunet-dicephi submit: error: ") and "nothing was started" in err
    assert "resources.gpu: unknown key; did you mean 'gpus'?" in err and "dataset[0].folds[0]" in err
    code, _, err = cli("status", str(spec))
    assert code == 2 and err.startswith("nnunet-dicephi status: error: ")
    code, _, err = cli("submit", str(tmp_path / "missing.toml"))
    assert code == 2 and "no such file" in err
    with pytest.raises(SystemExit):
        cli("submit", "--stages", "deploy", str(spec))


@pytest.mark.parametrize("verb", ["submit", "run", "status"])
def test_input_errors_are_refused_in_one_line_and_bugs_keep_their_traceback(verb, tmp_path, monkeypatch):
    spec = write_spec(tmp_path, minimal())

    def refused(path, **options):
        raise InputError("the spec names no such thing; name another")

    monkeypatch.setattr(spec_module, "load_spec", refused)
    code, out, err = cli(verb, str(spec))
    assert (code, out, err) == (2, "", f"nnunet-dicephi {verb}: error: the spec names no such thing; name another\n")
    for bug in (RuntimeError("a bug"), ValueError("a bug"), KeyError("a bug"), OSError("a bug")):

        def broken(path, bug=bug, **options):
            raise bug

        monkeypatch.setattr(spec_module, "load_spec", broken)
        with pytest.raises(type(bug), match="a bug"):
            cli(verb, str(spec))


def test_run_dry_run_prints_each_command_as_the_shell_line_that_runs_it(tmp_path):
    (tmp_path / "raw" / "Dataset901_Toy").mkdir(parents=True)
    images = tmp_path / "test images; touch pwned"
    images.mkdir()
    spec_path = write_spec(tmp_path, minimal(**{"dataset.0.test_images": str(images)}))
    code, out, err = cli("run", "--dry-run", str(spec_path))
    assert code == 0, err
    lines = [line.split("$ ", 1)[1] for line in out.splitlines() if line.lstrip().startswith("$ ")]
    spec = load_spec(spec_path, environ={})
    plan = plan_jobs(spec, resolve_datasets(spec))
    assert [shlex.split(line) for line in lines] == [list(c) for g in plan.groups for t in g.tasks for c in t.planned]
    # pasted into a shell, a line runs its command with these very arguments, and nothing else
    predict = next(line for line in lines if line.startswith("nnUNetv2_predict "))
    shell = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + predict.removeprefix("nnUNetv2_predict ")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    arguments = shell.stdout.splitlines()
    assert arguments[arguments.index("-i") + 1] == str(images)
    assert not list(tmp_path.glob("pwned*"))


def test_submit_dry_run_prints_the_scripts_and_submits_nothing(tmp_path):
    (tmp_path / "raw" / "Dataset901_Toy").mkdir(parents=True)
    spec = write_spec(tmp_path, minimal())
    code, out, err = cli("submit", "--dry-run", "--stages", "preprocess,train", str(spec))
    assert code == 0, err
    assert (
        "#SBATCH --array=0-9%10" in out
        and "# task 9: train/Dataset901_Toy/TrainerDiceBI__nnUNetPlans__2d/fold_4" in out
    )
    assert "#   predict/Dataset901_Toy: stage not selected" in out
    assert not (tmp_path / "out" / "cluster_state.json").exists()
    code, out, _ = cli("status", str(spec))
    assert code == 0 and out.splitlines()[-1] == "13 missing"  # 1 preprocess, 10 folds, 1 predict, 1 report


def test_results_folder_names_are_nnunets():
    from nnunetv2.utilities.file_path_utilities import (
        convert_identifier_to_trainer_plans_config,
        convert_trainer_plans_config_to_identifier,
    )

    from nnunet_dicephi._nnunet_names import parse_results_folder_name, results_folder_name

    name = results_folder_name("TrainerDiceBI_eps1e-5_CE", "nnUNetResEncUNetMPlans", "3d_fullres")
    assert name == convert_trainer_plans_config_to_identifier(
        "TrainerDiceBI_eps1e-5_CE", "nnUNetResEncUNetMPlans", "3d_fullres"
    )
    assert list(
        parse_results_folder_name(f"/results/Dataset501_X/{name}")
    ) == convert_identifier_to_trainer_plans_config(name)
    with pytest.raises(ValueError, match="not an nnU-Net results folder name"):
        parse_results_folder_name("predictions_of_my_model")


def test_a_partially_labelled_dataset_gets_no_cross_validation_selection(tmp_path):
    """nnU-Net's find_best_configuration scores unannotated structures as background (and fails on a
    class absent from every validation case): a dataset with a manifest is trained, predicted and
    reported without it."""
    raw = tmp_path / "raw" / "Dataset901_Toy"
    raw.mkdir(parents=True)
    spec = parse_spec(minimal(**{"dataset.0.folds": [0]}), tmp_path, environ={})

    def items():
        return [t.key for t in tasks.dataset_tasks(spec, spec.datasets[0], "Dataset901_Toy") if t.id.stage == "predict"]

    (raw / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}}))
    assert items() == ["predict/Dataset901_Toy/crossval"]
    (raw / "dataset.json").write_text(json.dumps({"dicephi_partial_labels": {"cases": {"x": []}}}))
    assert items() == []
    report = tasks.grid_tasks(spec, {901: "Dataset901_Toy"})[-1]
    assert report.key == "report" and not [i for i in report.inputs if i.stage == "predict"]
