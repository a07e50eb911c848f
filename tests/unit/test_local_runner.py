"""``nnunet-dicephi run``: the grid on this machine, with stand-ins for nnU-Net's commands.

The stand-ins (one script, named like each command) write what the real commands leave behind
(plans and preprocessed cases, checkpoints and the validation summary) and append their argv to a
calls file, so the tests see the order, the ``--c`` decisions and the environment of every job.
The end-to-end layer runs the same verb with nnU-Net itself.
"""

import _thread
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from nnunet_dicephi._problems import InputError
from nnunet_dicephi.cluster import local, process, slurm
from nnunet_dicephi.cluster import status as status_module
from nnunet_dicephi.cluster.experiment import smoke_variant
from nnunet_dicephi.cluster.lock import ExperimentBusy, experiment_lock
from nnunet_dicephi.cluster.spec import SpecError, parse_spec
from nnunet_dicephi.cluster.tasks import plan_jobs, resolve_datasets
from nnunet_dicephi.cluster.variants import Variant, parse_variant, variant_name, variants_command, write_variants

FAKE = textwrap.dedent(
    """\
    import json, os, sys, time, zipfile
    from pathlib import Path

    command, args = sys.argv[1], sys.argv[2:]
    with open(os.environ["FAKE_CALLS"], "a") as calls:
        calls.write(json.dumps([command, *args]) + "\\n")
    root = Path(os.environ["FAKE_ROOT"])
    if command == "nnUNetv2_plan_and_preprocess":
        folder = Path(os.environ["nnUNet_preprocessed"]) / "Dataset901_Toy"
        (folder / "nnUNetPlans_2d").mkdir(parents=True, exist_ok=True)
        configuration = {"data_identifier": "nnUNetPlans_2d", "batch_size": 4}
        plans = {"plans_name": "nnUNetPlans", "configurations": {"2d": configuration}}
        (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
        (folder / "dataset.json").write_text(json.dumps({"numTraining": 2}))
        for case in ("a", "b"):
            (folder / "nnUNetPlans_2d" / f"{case}.pkl").write_text("")
    elif command == "nnUNetv2_train":
        dataset, configuration, fold = args[:3]
        trainer, plans = args[args.index("-tr") + 1], args[args.index("-p") + 1]
        if trainer in os.environ.get("FAKE_FAIL", "").split(","):
            print("fake failure: CUDA out of memory (stand-in)")
            sys.exit(3)
        folder = f"{trainer}__{plans}__{configuration}"
        out = Path(os.environ["nnUNet_results"]) / "Dataset901_Toy" / folder / f"fold_{fold}"
        out.mkdir(parents=True, exist_ok=True)
        def checkpoint(name):
            with zipfile.ZipFile(out / name, "w") as archive:
                archive.writestr("data.pkl", "weights")
        if trainer in os.environ.get("FAKE_SLOW", "").split(",") and "--c" not in args:
            checkpoint("checkpoint_latest.pth")
            print("epoch 1 of many", flush=True)
            time.sleep(120)
        checkpoint("checkpoint_final.pth")
        (out / "validation").mkdir(exist_ok=True)
        (out / "validation" / "summary.json").write_text("{}")
    elif command == "nnunet-dicephi":
        report = Path(args[args.index("-o") + 1])
        report.mkdir(parents=True, exist_ok=True)
        (report / "report.md").write_text("stand-in report")
    """
)
COMMANDS = (
    "nnUNetv2_plan_and_preprocess",
    "nnUNetv2_train",
    "nnUNetv2_find_best_configuration",
    "nnUNetv2_predict",
    "nnUNetv2_evaluate_folder",
    "nnunet-dicephi",
    "python",
)


def minimal(**changes) -> dict:
    data = {
        "experiment": {"name": "toy", "output": "out"},
        "environment": {"nnUNet_raw": "raw", "nnUNet_preprocessed": "pre", "nnUNet_results": "res", "device": "cpu"},
        "report": {"n_resamples": 100},
        "dataset": [{"id": 901, "configurations": ["2d"], "trainers": ["TrainerDiceI", "TrainerDiceBI"], "folds": [0]}],
    }
    for path, value in changes.items():
        *parents, key = path.split(".")
        table = data
        for part in parents:
            table = table[int(part)] if isinstance(table, list) else table.setdefault(part, {})
        table[key] = value
    return data


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """Stand-in commands, a toy raw dataset, and a spec builder; returns (make_spec, calls)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "fake.py"
    script.write_text(FAKE)
    for name in COMMANDS:
        wrapper = bin_dir / name
        if name == "python":
            wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
        else:
            wrapper.write_text(f'#!/bin/sh\nexec {sys.executable} {script} {name} "$@"\n')
        wrapper.chmod(0o755)
    monkeypatch.setattr(local, "executable", lambda name: str(bin_dir / name))
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_CALLS", str(calls))
    monkeypatch.setenv("FAKE_ROOT", str(tmp_path))
    (tmp_path / "raw" / "Dataset901_Toy").mkdir(parents=True)

    def make_spec(**changes):
        return parse_spec(minimal(**changes), tmp_path, environ={})

    def called() -> list[list[str]]:
        return [json.loads(line) for line in calls.read_text().splitlines()] if calls.is_file() else []

    return make_spec, called


def run(spec, **kwargs):
    lines = []
    result = local.run_local(spec, progress=False, say=lines.append, **kwargs)
    return result, "\n".join(lines)


def test_the_grid_runs_in_dependency_order_and_a_second_run_skips_what_is_done(fake):
    make_spec, called = fake
    spec = make_spec()
    result, _ = run(spec)
    assert result.exit_status == 0 and set(result.statuses.values()) == {"done"}
    commands = [c[0] for c in called()]
    assert commands[0] == "nnUNetv2_plan_and_preprocess"
    assert commands[1:3] == ["nnUNetv2_train", "nnUNetv2_train"]
    assert commands[-1] == "nnunet-dicephi" and "nnUNetv2_find_best_configuration" in commands
    train = [c for c in called() if c[0] == "nnUNetv2_train"]
    assert all("--c" not in c for c in train) and {c[c.index("-tr") + 1] for c in train} == {
        "TrainerDiceI",
        "TrainerDiceBI",
    }
    # one log per job, and the state status reads
    for key, log in result.logs.items():
        assert log.is_file() and log.name.endswith(".log"), key
    assert all(status == "done" for status, _, _ in local.local_statuses(spec).values())
    before = len(called())
    again, text = run(spec)
    assert again.statuses == {} and len(called()) == before
    assert "already preprocessed" in text and "nothing to run" in text


def test_a_failing_job_stops_its_dependants_shows_its_log_and_the_rest_goes_on(fake, monkeypatch):
    make_spec, called = fake
    monkeypatch.setenv("FAKE_FAIL", "TrainerDiceBI")
    spec = make_spec()
    result, text = run(spec)
    assert result.exit_status == 1
    failed = "train/Dataset901_Toy/TrainerDiceBI__nnUNetPlans__2d/fold_0"
    assert result.failed == [failed]
    assert result.statuses["train/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d/fold_0"] == "done"
    blocked = [key for key, status in result.statuses.items() if status == "blocked"]
    assert "report" in blocked and any(key.startswith("predict/") for key in blocked)
    assert "fake failure: CUDA out of memory" in text and "exit status 3" in text
    assert not any(c[0] in ("nnUNetv2_predict", "nnunet-dicephi") for c in called())
    rows = status_module.collect(spec, resolve_datasets(spec), {}, {}, {}, local.local_statuses(spec))
    by_trainer = {(r.stage, r.trainer): r for r in rows}
    assert by_trainer[("train", "TrainerDiceBI")].status == "failed"
    assert "exit status 3" in by_trainer[("train", "TrainerDiceBI")].detail
    assert by_trainer[("report", "")].status == "blocked"
    assert status_module.exit_status(rows) == 1
    # fixed and run again: only what is left runs, and everything ends done
    monkeypatch.delenv("FAKE_FAIL")
    again, _ = run(spec)
    assert again.exit_status == 0 and failed in again.statuses
    assert "train/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d/fold_0" not in again.statuses


def test_a_run_interrupted_mid_training_stops_its_jobs_and_resumes_with_c(fake, monkeypatch):
    make_spec, called = fake
    monkeypatch.setenv("FAKE_SLOW", "TrainerDiceI")
    spec = make_spec(**{"dataset.0.trainers": ["TrainerDiceI"]})
    fold = spec.environment.nnunet_results / "Dataset901_Toy" / "TrainerDiceI__nnUNetPlans__2d" / "fold_0"

    key = "train/Dataset901_Toy/TrainerDiceI__nnUNetPlans__2d/fold_0"
    log = spec.output / "logs" / f"{key}.log"

    def interrupt_when_training():
        # the stand-in prints this once its checkpoint is closed, then sleeps for 120 s
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (log.is_file() and "epoch 1 of many" in log.read_text()):
            time.sleep(0.05)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_training, daemon=True).start()
    # a shell's background job (`pytest &`) starts with SIGINT ignored, and then interrupt_main does nothing
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            run(spec)
    finally:
        signal.signal(signal.SIGINT, previous)
    # the stand-in was stopped, not waited for: it never got to its final checkpoint
    assert (fold / "checkpoint_latest.pth").is_file() and not (fold / "checkpoint_final.pth").exists()
    statuses = local.local_statuses(spec)
    assert statuses[key][0] == "interrupted"
    rows = status_module.collect(spec, resolve_datasets(spec), {}, {}, {}, statuses)
    assert {r.status for r in rows if r.stage == "train"} == {"interrupted"}
    result, _ = run(spec)
    assert result.exit_status == 0 and result.statuses[key] == "done"
    train = [c for c in called() if c[0] == "nnUNetv2_train"]
    assert len(train) == 2 and "--c" not in train[0] and train[1][-1] == "--c"
    assert train[1].count("--c") == 1  # the plan already said --c; the runner must not add another
    text = log.read_text()
    assert "interrupted" in text and "resuming from checkpoint_latest.pth with --c" in text


def test_jobs_run_side_by_side_and_gpus_are_given_one_each(fake, monkeypatch):
    make_spec, _ = fake
    seen = []
    real_popen = process.subprocess.Popen

    def popen(argv, **kwargs):
        seen.append((Path(argv[0]).name, kwargs["env"].get("CUDA_VISIBLE_DEVICES")))
        return real_popen(argv, **kwargs)

    monkeypatch.setattr(process.subprocess, "Popen", popen)
    spec = make_spec(**{"environment.device": "cuda", "resources.train.gpus": 1})
    result, _ = run(spec, gpus=["0", "1"])
    assert result.exit_status == 0
    train = [gpu for name, gpu in seen if name == "nnUNetv2_train"]
    assert sorted(train) == ["0", "1"]  # the two folds started together, one per GPU
    assert all(gpu in ("0", "1") for _, gpu in seen)
    with pytest.raises(ValueError, match="jobs must be at least 1"):
        local.run_local(spec, jobs=0, progress=False, say=lambda _: None)


def test_runs_and_submits_of_the_same_experiment_exclude_each_other(fake, monkeypatch):
    make_spec, called = fake
    spec = make_spec()
    for holder in ("run", "submit"):
        with (
            experiment_lock(spec.output, holder),
            pytest.raises(ExperimentBusy, match=f"another nnunet-dicephi {holder}"),
        ):
            run(spec)
    monkeypatch.setattr(slurm, "queued_jobs", lambda user=None: {})
    with experiment_lock(spec.output, "run"), pytest.raises(ExperimentBusy, match="another nnunet-dicephi run"):
        slurm.submit(spec, say=lambda _: None)
    assert called() == [] and not spec.state_file.exists()


def test_processes_of_a_killed_run_are_not_joined_by_a_new_one(fake):
    make_spec, _ = fake
    spec = make_spec()
    spec.output.mkdir(parents=True)
    alive = {"status": "running", "pid": os.getpid(), "log": "x"}
    record = {"version": local.STATE_VERSION, "pid": 999999999, "units": {"train/x/fold_0": alive}}
    local.state_path(spec).write_text(json.dumps(record))
    with pytest.raises(ExperimentBusy, match=r"still run: train/x/fold_0 \(pid"):
        run(spec)


def test_a_run_leaves_the_folds_that_slurm_still_runs_and_blocks_what_needs_them(fake, monkeypatch):
    make_spec, called = fake
    spec = make_spec()
    key = "train/Dataset901_Toy/TrainerDiceBI__nnUNetPlans__2d/fold_0"
    submitted = slurm.load_state(spec.state_file, spec.name)
    slurm.new_submission(submitted, str(spec.output / "slurm" / "1"))["jobs"][key] = "78_1"
    slurm.save_state(spec.state_file, submitted)

    def squeue_fails(user=None):
        raise slurm.SubmissionError("squeue -h failed: slurm_load_jobs error: Unable to contact slurm controller")

    monkeypatch.setattr(slurm, "queued_jobs", squeue_fails)
    with pytest.raises(InputError, match="cannot tell whether the SLURM jobs recorded in .*cluster_state.json still"):
        run(spec)
    assert called() == []

    monkeypatch.setattr(slurm, "queued_jobs", lambda user=None: slurm.parse_squeue("78_1|RUNNING|None\n"))
    result, text = run(spec)
    trained = [c[c.index("-tr") + 1] for c in called() if c[0] == "nnUNetv2_train"]
    assert trained == ["TrainerDiceI"] and key not in result.statuses
    assert f"skipped  {key} (still queued or running as job 78_1)" in text
    crossval = "predict/Dataset901_Toy/crossval"
    assert result.statuses[crossval] == "blocked" and result.statuses["report"] == "blocked"
    assert "waits for SLURM job(s) 78_1 of an earlier submit" in text
    assert f"blocked  report ({crossval} is blocked)" in text
    statuses = local.local_statuses(spec)
    assert "waits for SLURM job(s) 78_1" in statuses[crossval][2]

    def no_slurm(user=None):
        raise slurm.NoScheduler("squeue not found: is this a SLURM login node?")

    # without SLURM on this machine, its jobs cannot be running here
    monkeypatch.setattr(slurm, "queued_jobs", no_slurm)
    again, text = run(spec)
    assert "were not checked (squeue not found" in text
    assert again.exit_status == 0 and again.statuses[key] == "done"


def test_a_truncated_local_state_is_named_with_what_to_do(fake):
    make_spec, _ = fake
    spec = make_spec()
    spec.output.mkdir(parents=True)
    path = local.state_path(spec)
    path.write_text('{"version": 1, "units": {"train/x/fold_0": {"status": "runn')  # a full disk, say
    for read in (local.local_statuses, status_module.status, run):
        with pytest.raises(InputError) as info:
            read(spec)
        message = str(info.value)
        assert str(path) in message and "remove it to start that record afresh" in message, message
        assert "\n" not in message
    path.unlink()
    result, _ = run(spec)
    assert result.exit_status == 0 and json.loads(path.read_text())["version"] == local.STATE_VERSION


# --- sweeps and batch-size variants -----------------------------------------------------------------


def test_a_sweep_expands_into_trainer_names_and_batch_size_plans(tmp_path):
    data = minimal(**{"dataset.0.trainers": ["TrainerDiceI"]})
    data["dataset"][0]["sweep"] = [
        {"phi": "I", "eps": [1e-7, 1e-3, 10, "H", 1000]},
        {"phi": "BI", "batch_sizes": [1, 2, 4]},
        {"loss": "Mime"},
        {"phi": "BCI", "seeds": [0, 1], "epochs": 22, "iterations": 40, "lr": 1e-2},
    ]
    (dataset,) = parse_spec(data, tmp_path, environ={}).datasets
    runs = dataset.runs
    assert runs[0] == ("TrainerDiceI", "nnUNetPlans")  # listed first; the sweep's ε = 1e-7 is the same run
    names = [t for t, p in runs if p == "nnUNetPlans"]
    assert names == [
        "TrainerDiceI",
        "TrainerDiceI_eps1e-3",
        "TrainerDiceI_eps1e1",
        "TrainerDiceIEps",
        "TrainerDiceI_eps1e3",
        "TrainerMime",
        "TrainerDiceBCI_ep22_it40_lr1e-2_seed0",
        "TrainerDiceBCI_ep22_it40_lr1e-2_seed1",
    ]
    assert [(t, p) for t, p in runs if t == "TrainerDiceBI"] == [
        ("TrainerDiceBI", variant_name("nnUNetPlans", batch_size=b)) for b in (1, 2, 4)
    ]
    assert dataset.plans_variants == ("nnUNetPlans_bs1", "nnUNetPlans_bs2", "nnUNetPlans_bs4")


def test_a_sweep_is_checked_like_the_rest_of_the_spec(tmp_path):
    data = minimal()
    data["dataset"][0]["sweep"] = [
        {"phi": "IB", "eps": [-1, "heuristic"], "batch_sizes": [0], "colour": "red"},
        {"loss": "Lovasz", "eps": [10]},
        {"loss": "Dyce"},
    ]
    with pytest.raises(SpecError) as info:
        parse_spec(data, tmp_path, environ={})
    found = dict(info.value.problems)
    assert "unknown key" in found["dataset[0].sweep[0].colour"]
    assert "Φ is one of I, CI, BI, BCI" in found["dataset[0].sweep[0].phi[0]"]
    assert "number of voxels >= 0" in found["dataset[0].sweep[0].eps[0]"]
    assert "number of voxels >= 0" in found["dataset[0].sweep[0].eps[1]"]
    assert "positive integer" in found["dataset[0].sweep[0].batch_sizes[0]"]
    assert "Lovasz takes no ε" in found["dataset[0].sweep[1].eps"]
    assert "unknown loss 'Dyce'" in found["dataset[0].sweep[2].loss"]


def test_batch_size_variants_are_written_after_preprocessing_and_keep_the_data(fake, tmp_path):
    make_spec, called = fake
    spec = make_spec(**{"dataset.0.trainers": [], "dataset.0.sweep": [{"phi": "BI", "batch_sizes": [2, 8]}]})
    names = resolve_datasets(spec)
    preprocess = plan_jobs(spec, names, stages=["preprocess"], active={}).groups[0].tasks[0]
    assert [c[0] for c in preprocess.commands] == ["nnUNetv2_plan_and_preprocess", "python"]
    result, _ = run(spec, stages=["preprocess", "train"])
    assert result.exit_status == 0
    folder = spec.environment.nnunet_preprocessed / "Dataset901_Toy"
    base = json.loads((folder / "nnUNetPlans.json").read_text())
    for b in (2, 8):
        variant = json.loads((folder / f"nnUNetPlans_bs{b}.json").read_text())
        assert variant["plans_name"] == f"nnUNetPlans_bs{b}"
        assert variant["configurations"]["2d"]["batch_size"] == b
        assert variant["configurations"]["2d"]["data_identifier"] == base["configurations"]["2d"]["data_identifier"]
    trained = sorted(c[c.index("-p") + 1] for c in called() if c[0] == "nnUNetv2_train")
    assert trained == ["nnUNetPlans_bs2", "nnUNetPlans_bs8"]
    # a variant added later is written without preprocessing again
    spec = make_spec(**{"dataset.0.trainers": [], "dataset.0.sweep": [{"phi": "BI", "batch_sizes": [2, 8, 16]}]})
    (task,) = plan_jobs(spec, names, stages=["preprocess"], active={}).groups[0].tasks
    assert [c[0] for c in task.commands] == ["python"] and task.commands[0][-1] == "nnUNetPlans_bs16"


def test_variants_refuse_a_dataset_that_is_not_preprocessed(tmp_path):
    with pytest.raises(ValueError, match="preprocess the dataset first"):
        write_variants(tmp_path, "nnUNetPlans", ["nnUNetPlans_bs2"])


def test_a_narrower_network_is_a_variant_too_and_combines_with_batch_sizes(fake, tmp_path):
    make_spec, called = fake
    spec = make_spec(**{"dataset.0.base_features": 16, "dataset.0.sweep": [{"phi": "BI", "batch_sizes": [2]}]})
    (dataset,) = spec.datasets
    assert dataset.runs == (
        ("TrainerDiceI", "nnUNetPlans_f16"),
        ("TrainerDiceBI", "nnUNetPlans_f16"),
        ("TrainerDiceBI", "nnUNetPlans_f16_bs2"),
    )
    assert parse_variant("nnUNetPlans", "nnUNetPlans_f16_bs2") == Variant(16, 2)
    assert parse_variant("nnUNetPlans", "nnUNetPlans") is None and parse_variant("nnUNetPlans", "Other_bs2") is None
    folder = tmp_path / "pre" / "Dataset901_Toy"
    folder.mkdir(parents=True)
    arch = {"features_per_stage": [32, 64, 128, 256], "n_stages": 4}
    base = {
        "plans_name": "nnUNetPlans",
        "configurations": {"2d": {"batch_size": 3, "architecture": {"arch_kwargs": arch}}},
    }
    (folder / "nnUNetPlans.json").write_text(json.dumps(base))
    write_variants(folder, "nnUNetPlans", ["nnUNetPlans_f16", "nnUNetPlans_f16_bs2"])
    narrow = json.loads((folder / "nnUNetPlans_f16.json").read_text())["configurations"]["2d"]
    assert narrow["architecture"]["arch_kwargs"]["features_per_stage"] == [16, 32, 64, 128]
    assert narrow["batch_size"] == 3 and narrow["architecture"]["arch_kwargs"]["n_stages"] == 4
    both = json.loads((folder / "nnUNetPlans_f16_bs2.json").read_text())["configurations"]["2d"]
    assert both["batch_size"] == 2 and both["architecture"]["arch_kwargs"]["features_per_stage"][0] == 16
    with pytest.raises(ValueError, match="is not a variant of"):
        write_variants(folder, "nnUNetPlans", ["nnUNetPlans_wide"])


def test_the_variants_command_runs_as_the_grid_runs_it(tmp_path):
    folder = tmp_path / "Dataset901_Toy"
    folder.mkdir()
    plans = {"plans_name": "nnUNetPlans", "configurations": {"2d": {"batch_size": 3}}}
    (folder / "nnUNetPlans.json").write_text(json.dumps(plans))
    python, *argv = variants_command(folder, "nnUNetPlans", ["nnUNetPlans_bs2"])
    assert python == "python" and argv[:2] == ["-m", "nnunet_dicephi.cluster.write_variants"]
    run = subprocess.run([sys.executable, "-W", "error", *argv], capture_output=True, text=True)
    assert run.returncode == 0 and run.stderr == ""  # no runpy warning about a module imported twice
    assert json.loads((folder / "nnUNetPlans_bs2.json").read_text())["configurations"]["2d"]["batch_size"] == 2
    bad = subprocess.run([sys.executable, *argv[:-1], "nnUNetPlans_wide"], capture_output=True, text=True)
    assert bad.returncode == 2 and "is not a variant of" in bad.stderr


def test_smoke_shortens_every_training_and_writes_apart(tmp_path):
    data = minimal()
    data["dataset"][0]["sweep"] = [{"phi": "I", "eps": [10]}]
    spec = parse_spec(data, tmp_path, environ={})
    smoke = smoke_variant(spec)
    (dataset,) = smoke.datasets
    assert [t for t, _ in dataset.runs] == [
        "TrainerDiceI_ep1_it2",
        "TrainerDiceBI_ep1_it2",
        "TrainerDiceI_eps1e1_ep1_it2",
    ]
    assert smoke.output == spec.output / "smoke" and smoke.report_spec.output == spec.output / "smoke" / "report"
    data["dataset"][0]["trainers"] = ["nnUNetTrainer"]
    with pytest.raises(ValueError, match="not a name of nnunet-dicephi's grammar"):
        smoke_variant(parse_spec(data, tmp_path, environ={}))


def test_a_toy_dataset_is_checked_and_brings_its_test_set(tmp_path):
    data = minimal(**{"dataset.0.toy": "rare-klass"})
    with pytest.raises(SpecError) as info:
        parse_spec(data, tmp_path, environ={})
    assert "did you mean 'rare-class'?" in dict(info.value.problems)["dataset[0].toy"]
    from nnunet_dicephi.cluster.tasks import dataset_tasks, toy_folder_name

    spec = parse_spec(minimal(**{"dataset.0.toy": "rare-class", "dataset.0.toy_seed": 3}), tmp_path, environ={})
    (dataset,) = spec.datasets
    assert (dataset.toy, dataset.toy_seed) == ("rare-class", 3)
    name = toy_folder_name(dataset)
    assert name == "Dataset901_ToyRareClass"
    assert resolve_datasets(spec, planned_toys=True) == {901: name}
    predict = [c for task in dataset_tasks(spec, dataset, name) for c in task.commands if c[0] == "nnUNetv2_predict"]
    assert predict and all(str(spec.environment.nnunet_raw / name / "imagesTs") in c for c in predict)
