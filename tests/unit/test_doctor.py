"""``nnunet-dicephi doctor``: each finding and its fix, the exit status, a closed pipe; and the last
lines of nnU-Net's stock commands when a trainer name or a manifest is wrong."""

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nnunet_dicephi import doctor
from nnunet_dicephi._register import lookup_folder
from nnunet_dicephi.doctor import Here, diagnose
from tests.conftest import module_folder

BIN = Path(sys.executable).parent
FOLDER = lookup_folder()
HEADER = "nnunet-dicephi doctor: can nnUNetv2_train use these trainers here?"
FOUND = {name: {"found": f"nnunet_dicephi.trainers.{name}"} for name in doctor.LOOKUP_NAMES}


def _probe(**changes):
    """What the probe reports on a CPU machine where everything works."""
    report = {
        "python": sys.executable,
        "prefix": sys.prefix,
        "python_version": "3.11.7",
        "hook": True,
        "ext_trainer": FOLDER,
        "dicephi_installed": True,
        "nnunet": "2.8.1",
        "nnunet_path": "/site/nnunetv2",
        "external_lookup": True,
        "lookups": FOUND,
        "torch": "2.9.0",
        "cuda_build": None,
        "gpus": [],
        "mps": False,
        "triton": False,
    }
    return {**report, **changes}


GPU = {"cuda_build": "12.8", "gpus": [["NVIDIA H100 80GB HBM3", 85 * 10**9]], "triton": True}


@pytest.fixture
def folders(tmp_path):
    env = {}
    for variable in doctor.PATHS:
        (tmp_path / variable).mkdir()
        env[variable] = str(tmp_path / variable)
    return env


def _here(command=str(BIN / "nnUNetv2_train")):
    return Here("0.2.0", sys.executable, sys.prefix, command, FOLDER)


def _by_topic(checks):
    return {check.topic: check for check in checks}


def test_a_cpu_machine_where_everything_is_found(folders):
    checks = _by_topic(diagnose(_probe(), folders, _here()))
    assert not [c for c in checks.values() if c.status == "problem"]
    assert checks["trainer lookup"].detail == (
        "nnU-Net's lookup finds TrainerDiceBI and TrainerDiceBI_eps1e-5 through nnUNet_extTrainer "
        "(set by the start-up hook)"
    )
    assert checks["device"].status == "note" and checks["device"].fix.startswith("pass -device cpu")
    assert checks["torch.compile"].detail.startswith("off: nnU-Net compiles on CUDA only")
    assert checks["mixed precision"].detail.startswith("off: float32 on the CPU")
    assert checks["versions"].detail == "nnunet-dicephi 0.2.0, nnU-Net 2.8.1, torch 2.9.0 (CPU build), Python 3.11.7"
    exported = _by_topic(diagnose(_probe(), {**folders, "NNUNET_DICEPHI_NO_REGISTER": "1"}, _here()))
    assert exported["trainer lookup"].detail.endswith("through nnUNet_extTrainer (as you set it)")


@pytest.mark.parametrize(
    ("setting", "compiled"), [(None, True), ("t", True), ("TRUE", True), ("1", True), ("f", False), ("0", False)]
)
def test_on_cuda_nnunet_compiles_unless_nnunet_compile_says_otherwise(folders, setting, compiled):
    env = {**folders, **({} if setting is None else {"nnUNet_compile": setting})}
    checks = _by_topic(diagnose(_probe(**GPU), env, _here()))
    assert checks["device"].status == "ok"
    assert checks["device"].detail == "CUDA: cuda:0 NVIDIA H100 80GB HBM3, 79.2 GiB"
    assert checks["torch.compile"].detail.startswith("on (" if compiled else "off (")
    assert checks["mixed precision"].detail.startswith("fp16 autocast with a GradScaler")


def test_compiling_without_triton_blocks_training_on_cuda(folders):
    check = _by_topic(diagnose(_probe(**{**GPU, "triton": False}), folders, _here()))["torch.compile"]
    assert check.status == "problem" and check.fix == "pip install triton, or export nnUNet_compile=f"
    off = _by_topic(diagnose(_probe(**{**GPU, "triton": False}), {**folders, "nnUNet_compile": "f"}, _here()))
    assert off["torch.compile"].status == "ok"


def test_a_gpu_that_torch_cannot_see_is_named_with_cuda_visible_devices(folders):
    env = {**folders, "CUDA_VISIBLE_DEVICES": ""}
    check = _by_topic(diagnose(_probe(cuda_build="12.8"), env, _here()))["device"]
    assert check.detail.startswith(
        "CPU only (torch's CUDA 12.8 build sees no GPU with CUDA_VISIBLE_DEVICES=''; no MPS)"
    )


def test_mps_is_named_with_its_device_option(folders):
    checks = _by_topic(diagnose(_probe(mps=True), folders, _here()))
    assert checks["device"].fix == "pass -device mps to nnUNetv2_train"
    assert "not on MPS" in checks["torch.compile"].detail


MISSING = {name: {"missing": f"RuntimeError: Could not find requested nnunet trainer {name} in …"} for name in FOUND}


@pytest.mark.parametrize(
    ("environ", "hook", "why"),
    [
        (
            {"NNUNET_DICEPHI_NO_REGISTER": "1"},
            False,
            "the start-up hook is switched off (NNUNET_DICEPHI_NO_REGISTER=1)",
        ),
        ({}, False, "the start-up hook did not run (installed with pip --target, or Python started with -S?)"),
    ],
)
def test_a_lookup_without_the_folder_says_why_and_what_to_export(folders, environ, hook, why):
    probe = _probe(hook=hook, ext_trainer=None, lookups=MISSING)
    check = _by_topic(diagnose(probe, {**folders, **environ}, _here()))["trainer lookup"]
    assert check.status == "problem"
    assert check.detail.startswith("nnU-Net does not find TrainerDiceBI and TrainerDiceBI_eps1e-5: nnUNet_extTrainer")
    assert check.detail.endswith(why)
    assert check.fix == f"export nnUNet_extTrainer={FOLDER}"
    mine = _probe(hook=hook, ext_trainer="/my/trainers", lookups=MISSING)
    keeping = _by_topic(diagnose(mine, {**folders, **environ}, _here()))["trainer lookup"]
    assert keeping.fix == f'export nnUNet_extTrainer="$nnUNet_extTrainer{os.pathsep}{FOLDER}"'


def test_nnunet_before_2_8_needs_register(folders):
    probe = _probe(nnunet="2.6.2", external_lookup=False, lookups=MISSING)
    check = _by_topic(diagnose(probe, folders, _here()))["trainer lookup"]
    assert check.status == "problem" and "before 2.8 it searches its own trainer package only" in check.detail
    assert check.fix.startswith("nnunet-dicephi register")
    registered = _probe(nnunet="2.6.2", external_lookup=False, ext_trainer=None)
    found = _by_topic(diagnose(registered, folders, _here()))["trainer lookup"]
    assert found.status == "ok" and found.detail.endswith("in nnU-Net's own trainer package (nnunet-dicephi register)")


def test_a_lookup_that_crashes_or_finds_another_class_is_a_problem(folders):
    crashed = {name: {"error": "ImportError: attempted relative import with no known parent package"} for name in FOUND}
    check = _by_topic(diagnose(_probe(lookups=crashed), folders, _here()))["trainer lookup"]
    assert check.status == "problem" and check.detail.endswith("attempted relative import with no known parent package")
    assert "traceback: nnUNetv2_train 1 2d 0 -tr TrainerDiceBI (" in check.fix
    other = {**FOUND, "TrainerDiceBI": {"found": "my_trainers.TrainerDiceBI"}}
    check = _by_topic(diagnose(_probe(lookups=other), folders, _here()))["trainer lookup"]
    assert check.status == "problem" and check.detail.endswith(
        "another class for TrainerDiceBI: my_trainers.TrainerDiceBI"
    )


def test_the_nnunetv2_train_on_path_and_its_python(folders):
    missing = _by_topic(diagnose(_probe(), folders, _here(command=None)))["nnUNetv2_train"]
    assert missing.status == "problem" and missing.fix.startswith("activate the environment")
    elsewhere = _probe(python="/other/env/bin/python", prefix="/other/env", dicephi_installed=False, lookups=MISSING)
    check = _by_topic(diagnose(elsewhere, folders, _here()))["nnUNetv2_train"]
    assert check.status == "problem" and check.detail.endswith(
        "runs /other/env/bin/python, where nnunet-dicephi is not installed"
    )
    assert check.fix.startswith(f"put {BIN} first on PATH")
    installed = _probe(python="/other/env/bin/python", prefix="/other/env")
    check = _by_topic(diagnose(installed, folders, _here()))["nnUNetv2_train"]
    assert check.status == "note" and check.detail.endswith("the lines below describe that one")


def test_a_probe_that_cannot_import_nnunet(folders):
    checks = diagnose(
        {"python": sys.executable, "error": "ModuleNotFoundError: No module named 'nnunetv2'"}, folders, _here()
    )
    problem = _by_topic(checks)["nnU-Net"]
    assert problem.status == "problem" and problem.detail.endswith("No module named 'nnunetv2'")
    assert [c.topic for c in checks][-3:] == list(doctor.PATHS)  # the folders are checked all the same


def test_nnunet_folders_set_existing_and_writable(tmp_path, folders):
    checks = _by_topic(diagnose(_probe(), {}, _here()))
    assert [checks[v].status for v in doctor.PATHS] == ["note", "problem", "problem"]  # raw: not for training
    assert checks["nnUNet_results"].fix == "export nnUNet_results=/path/to/nnUNet_results"

    (tmp_path / "nnUNet_preprocessed" / "Dataset901_Blobs").mkdir()
    later = {**folders, "nnUNet_results": str(tmp_path / "new" / "results")}
    checks = _by_topic(diagnose(_probe(), later, _here()))
    assert checks["nnUNet_results"].status == "ok" and "nnUNetv2_train creates it" in checks["nnUNet_results"].detail
    assert checks["nnUNet_preprocessed"].detail.endswith("(1 dataset: Dataset901_Blobs)")

    absent = {**folders, "nnUNet_preprocessed": str(tmp_path / "absent")}  # before the first planning
    check = _by_topic(diagnose(_probe(), absent, _here()))["nnUNet_preprocessed"]
    assert check.status == "ok" and "nnUNetv2_plan_and_preprocess creates it" in check.detail
    (tmp_path / "file").write_text("")
    check = _by_topic(diagnose(_probe(), {**folders, "nnUNet_results": str(tmp_path / "file")}, _here()))
    assert check["nnUNet_results"].status == "problem" and check["nnUNet_results"].detail.endswith("is not a folder")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_folder_is_a_problem(tmp_path, folders):
    os.chmod(folders["nnUNet_results"], 0o500)
    try:
        check = _by_topic(diagnose(_probe(), folders, _here()))["nnUNet_results"]
    finally:
        os.chmod(folders["nnUNet_results"], 0o700)
    assert check.status == "problem" and check.detail.endswith("is not writable by this user")


@pytest.mark.parametrize(
    ("verb", "probe", "status", "last"),
    [
        ("doctor", _probe(), 0, "ready: nnUNetv2_train finds the trainers"),
        (
            "doctor",
            _probe(lookups=MISSING, ext_trainer=None, hook=False),
            1,
            "1 problem to fix before training (see fix: above)",
        ),
        (
            "info",
            _probe(lookups=MISSING, ext_trainer=None, hook=False),
            0,
            "1 problem to fix before training (see fix: above)",
        ),
    ],
)
def test_exit_status_and_last_line(monkeypatch, capsys, folders, verb, probe, status, last):
    from nnunet_dicephi.cli import main

    for variable, value in folders.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.setenv("PATH", os.pathsep.join([str(BIN), os.environ.get("PATH", "")]))
    monkeypatch.setattr(doctor, "start_probe", lambda python, env, by="sources": None)
    monkeypatch.setattr(doctor, "finish_probe", lambda process: probe)
    assert main([verb]) == status
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == HEADER and lines[-1] == last


def test_each_line_says_ok_note_or_problem_and_the_fix_below():
    check = doctor.Check("problem", "nnUNet_results", "not set", "export nnUNet_results=/path")
    assert check.lines() == ["problem  nnUNet_results: not set", "         fix: export nnUNet_results=/path"]


def test_the_python_of_a_console_script(tmp_path):
    script = tmp_path / "nnUNetv2_train"
    script.write_text(f"#!{sys.executable}\nimport sys\n")
    assert doctor.trainer_command_python(str(script)) == sys.executable
    script.write_text("#!/bin/sh\n'''exec' /very/long/path/python \"$0\" \"$@\"\n")
    assert doctor.trainer_command_python(str(script)) is None
    assert doctor.trainer_command_python(str(tmp_path / "absent")) is None
    assert doctor.trainer_command_python(None) is None


def test_another_python_gets_the_environment_without_this_processs_hook():
    env = {"nnUNet_extTrainer": os.pathsep.join(["/mine", FOLDER]), "HOME": "/h"}
    assert doctor.probe_environment(env, sys.executable, True, FOLDER) == env  # the same hook runs there
    other = doctor.probe_environment(env, "/other/python", True, FOLDER)
    assert other == {"nnUNet_extTrainer": "/mine", "HOME": "/h"}
    assert "nnUNet_extTrainer" not in doctor.probe_environment({"nnUNet_extTrainer": FOLDER}, "/other/py", True, FOLDER)
    assert doctor.probe_environment(env, "/other/python", False, FOLDER) == env  # the user exported it


def test_the_lookup_line_says_how_it_was_made(folders):
    read = _by_topic(diagnose(_probe(lookup_by="sources"), folders, _here()))["trainer lookup"]
    assert read.detail == (
        "nnU-Net's lookup finds TrainerDiceBI and TrainerDiceBI_eps1e-5 through nnUNet_extTrainer "
        "(set by the start-up hook)"
    )
    assert read.lines()[1] == (
        "         how: read from the sources by nnU-Net 2.8.1's rules (its trainer package, then the folders on "
        "nnUNet_extTrainer), not imported; --thorough runs nnU-Net's lookup itself"
    )
    old = _probe(nnunet="2.6.2", external_lookup=False, lookups=MISSING, lookup_by="sources")
    check = _by_topic(diagnose(old, folders, _here()))["trainer lookup"]
    assert [line.split(":")[0].strip() for line in check.lines()[1:]] == ["fix", "how"]  # the fix comes first
    assert "by nnU-Net 2.6.2's rules (its trainer package), not imported" in check.how
    thorough = _by_topic(diagnose(_probe(lookup_by="import"), folders, _here()))["trainer lookup"]
    assert thorough.how == "nnU-Net's own lookup, run as nnUNetv2_train runs it (--thorough)"
    why = "/x/mine.py has a module-level __getattr__"
    fallen_back = _by_topic(diagnose(_probe(lookup_by="import", lookup_why=why), folders, _here()))
    assert fallen_back["trainer lookup"].how.endswith(f"the sources could not tell ({why})")


def test_thorough_asks_the_probe_to_run_nnunets_lookup(monkeypatch, capsys, folders):
    from nnunet_dicephi.cli import main

    asked = []
    monkeypatch.setattr(doctor, "start_probe", lambda python, env, by="sources": asked.append(by))
    monkeypatch.setattr(doctor, "finish_probe", lambda process: _probe(lookup_by=asked[-1]))
    for argv in (["doctor"], ["doctor", "--thorough"], ["info", "--thorough"]):
        main(argv)
    assert asked == ["sources", "import", "import"]
    assert "(--thorough)" in capsys.readouterr().out


# --- nnU-Net's lookup, read from the sources ------------------------------------------------------

NAMES = (*doctor.LOOKUP_NAMES, "TrainerDiceBX")  # a preset, a parametric name, a name outside the grammar
SHIM = Path(FOLDER, "dicephi_trainers.py").read_text()
CLASH = (
    "from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer\n\n\n"
    "class TrainerDiceBI(nnUNetTrainer):\n    pass\n"
)
NOT_INSTALLED = "ModuleNotFoundError: No module named 'dp_not_installed'"
NNUNET = Path(importlib.util.find_spec("nnunetv2").submodule_search_locations[0])  # not imported


def _found(top):
    return importlib.util.find_spec(top) is not None


def _ours(*names):
    return {name: ("found", f"nnunet_dicephi.trainers.{name}") for name in names}


def _all(kind, detail=None):
    return dict.fromkeys(NAMES, (kind, detail))


def _write(root, files):
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return str(root)


def _scenarios(root):
    """Folders for nnUNet_extTrainer (nnU-Net 2.8), each with what nnU-Net's lookup returns per name.

    The modules' names start with dp_, so that no installed module of the same name answers first.
    """
    from nnunet_dicephi.registration import MODULE_TEXT

    def folder(name, files):
        return _write(root / name, files)

    missing = ("missing", None)
    return {
        "this package's folder": (FOLDER, {**_all(*missing), **_ours(*doctor.LOOKUP_NAMES)}),
        "unset": (None, _all(*missing)),
        "empty and absent entries skipped": (
            os.pathsep.join(["", str(root / "absent"), FOLDER]),
            {**_all(*missing), **_ours(*doctor.LOOKUP_NAMES)},
        ),
        "a class of the same name first": (
            os.pathsep.join([folder("clash", {"dp_clash.py": CLASH}), FOLDER]),
            {**_all(*missing), **_ours(*doctor.LOOKUP_NAMES), "TrainerDiceBI": ("found", "dp_clash.TrainerDiceBI")},
        ),
        "the registered module's text": (
            folder("registered", {"dp_registered.py": MODULE_TEXT}),
            {**_all(*missing), **_ours(*doctor.LOOKUP_NAMES)},
        ),
        "presets only (import *)": (
            folder("star", {"dp_star.py": "from nnunet_dicephi.trainers import *  # noqa: F403\n"}),
            {**_all(*missing), **_ours("TrainerDiceBI")},
        ),
        "sub-packages, after the plain modules": (
            folder(
                "nested",
                {
                    "dp_plain.py": "x = 1\n",
                    "dp_pkg/__init__.py": "",
                    "dp_pkg/inner/__init__.py": "",
                    "dp_pkg/inner/dp_mod.py": SHIM,
                },
            ),
            {**_all(*missing), **_ours(*doctor.LOOKUP_NAMES)},
        ),
        "a relative import in a top-level module": (
            folder("relative", {"dp_relative.py": "from . import helper\n"}),
            _all("error", "ImportError: attempted relative import with no known parent package"),
        ),
        "a syntax error before this package's folder": (
            os.pathsep.join([folder("syntax", {"dp_syntax.py": "def broken(:\n"}), FOLDER]),
            _all("error", None),
        ),
        "a dependency not installed": (
            folder("dependency", {"dp_dependency.py": "from dp_not_installed.trainers import *\n"}),
            _all("error", NOT_INSTALLED),
        ),
        "a package whose __init__ fails": (
            folder("init", {"dp_broken/__init__.py": "import dp_not_installed\n", "dp_broken/dp_m.py": ""}),
            _all("error", NOT_INSTALLED),
        ),
        "an import error caught": (
            folder(
                "caught",
                {"dp_caught.py": "try:\n    from dp_not_installed import *\nexcept ImportError:\n    pass\n"},
            ),
            _all(*missing),
        ),
        "a module-level __getattr__ of someone else's": (
            folder("getattr", {"dp_getattr.py": "def __getattr__(name):\n    raise AttributeError(name)\n"}),
            _all("undecided", None),
        ),
        "a class under an if": (
            folder(
                "conditional",
                {
                    "dp_conditional.py": CLASH.replace("class", "if True:\n    class").replace(
                        "    pass", "        pass"
                    )
                },
            ),
            {**_all(*missing), "TrainerDiceBI": ("undecided", None)},
        ),
    }


def _matches(result, expected):
    kind, detail = expected
    return set(result) == {kind} and (detail is None or result[kind] == detail)


def test_the_sources_say_what_nnunets_lookup_finds_in_each_folder(tmp_path):
    for scenario, (value, expected) in _scenarios(tmp_path).items():
        found = doctor._static_lookup(NAMES, str(NNUNET), True, value, doctor._ours(NAMES))
        for name in NAMES:
            assert _matches(found[name], expected[name]), (scenario, name, found[name])
    syntax = _scenarios(tmp_path)["a syntax error before this package's folder"][0]
    found = doctor._static_lookup(NAMES, str(NNUNET), True, syntax, doctor._ours(NAMES))
    assert found["TrainerDiceBI"]["error"].startswith("SyntaxError: ") and "dp_syntax.py, line 1" in str(found)


def _fake_nnunet(root, package="nnunetv2", **files):
    """A package laid out as nnU-Net's trainer package, holding only ``files``."""
    base = {"__init__.py": "", "training/__init__.py": "", "training/nnUNetTrainer/__init__.py": ""}
    trainers = {f"training/nnUNetTrainer/{path}": text for path, text in files.items()}
    return _write(root / package, {**base, **trainers})


def _packages(root):
    """Trainer packages as nnU-Net's (searched alone before 2.8, first from 2.8 on), with what its search finds."""
    from nnunet_dicephi.registration import MODULE_TEXT

    missing = _all("missing")
    variants = {"variants/__init__.py": "", "variants/loss/__init__.py": "", "variants/loss/dp_loss.py": "x = 1\n"}
    registered = {**variants, "variants/dicephi_trainers.py": MODULE_TEXT, "variants/zz.py": CLASH}
    clash = {**variants, "variants/aa.py": CLASH, "variants/dicephi_trainers.py": MODULE_TEXT}
    where = "dp_fake_clash.training.nnUNetTrainer.variants.aa.TrainerDiceBI"
    return {
        "dp_fake_bare": (_fake_nnunet(root, "dp_fake_bare", **variants), missing),
        "dp_fake_registered": (
            _fake_nnunet(root, "dp_fake_registered", **registered),
            {**missing, **_ours(*doctor.LOOKUP_NAMES)},
        ),
        "dp_fake_clash": (
            _fake_nnunet(root, "dp_fake_clash", **clash),
            {**missing, **_ours(*doctor.LOOKUP_NAMES), "TrainerDiceBI": ("found", where)},
        ),
    }


def test_before_2_8_only_nnunets_own_package_is_searched(tmp_path):
    from nnunet_dicephi.registration import MODULE_TEXT

    bare = _fake_nnunet(tmp_path / "bare", **{"nnUNetTrainer.py": "class nnUNetTrainer:\n    pass\n"})
    found = doctor._static_lookup(NAMES, bare, False, FOLDER, doctor._ours(NAMES))
    assert set(found["TrainerDiceBI"]) == {"missing"}  # nnUNet_extTrainer is not read before 2.8
    placed = {"variants/__init__.py": "", "variants/dicephi_trainers.py": MODULE_TEXT}
    registered = _fake_nnunet(tmp_path / "registered", **placed)
    found = doctor._static_lookup(NAMES, registered, False, None, doctor._ours(NAMES))
    assert {name: found[name] for name in doctor.LOOKUP_NAMES} == {
        name: {"found": where} for name, (_, where) in _ours(*doctor.LOOKUP_NAMES).items()
    }
    for package, (folder, expected) in _packages(tmp_path / "packages").items():
        trainers, prefix = os.path.join(folder, "training", "nnUNetTrainer"), f"{package}.training.nnUNetTrainer"
        for name in NAMES:
            kind, detail = doctor._search_folder(trainers, prefix, name, lambda top: True, doctor._ours(NAMES), {})
            assert _matches({"missing" if kind == "absent" else kind: detail}, expected[name]), (package, name)


def test_a_registered_module_without_nnunet_dicephi_stays_out_of_the_way(tmp_path):
    """The registered module catches the missing package; the lookup folder's module does not."""
    from nnunet_dicephi.registration import MODULE_TEXT

    _write(tmp_path, {"registered.py": MODULE_TEXT, "shim.py": SHIM})

    def without_us(top):
        return top != "nnunet_dicephi"

    _write(tmp_path, {"uncaught.py": "try:\n    import dp_not_installed\nexcept KeyError:\n    pass\n"})
    outcome = doctor._module_outcome(str(tmp_path / "uncaught.py"), "TrainerDiceBI", "uncaught", False, _found, None)
    assert outcome == ("error", NOT_INSTALLED)  # only a handler of ImportError (or a base) catches it
    for module, expected in (
        ("registered", ("absent", "")),
        ("shim", ("error", "ModuleNotFoundError: No module named 'nnunet_dicephi'")),
    ):
        outcome = doctor._module_outcome(
            str(tmp_path / f"{module}.py"), "TrainerDiceBI", module, False, without_us, None
        )
        assert outcome == expected


@pytest.mark.parametrize(
    ("source", "undecided"),
    [
        ("from json import *\n", "runs from json import *"),
        ("from json import TrainerDiceBI\n", "binds TrainerDiceBI otherwise than by a class statement"),
        ("globals()['TrainerDiceBI'] = object\n", "through globals(), setattr() or exec()"),
        ("for TrainerDiceBI in range(2):\n    pass\n", "binds TrainerDiceBI on some paths only"),
        ("if False:\n    import dp_not_installed\n", "may fail to import (" + NOT_INSTALLED + ") on some paths"),
    ],
)
def test_what_the_sources_cannot_tell_is_left_to_nnunets_lookup(tmp_path, source, undecided):
    _write(tmp_path, {"dp_module.py": source})
    kind, why = doctor._module_outcome(
        str(tmp_path / "dp_module.py"), "TrainerDiceBI", "dp_module", False, _found, doctor._ours(NAMES)
    )
    assert kind == "undecided" and why.endswith(undecided)


def test_the_default_probe_does_not_import_nnunets_trainers():
    """What the lookup costs is importing nnU-Net's trainer package; the default reads it instead."""
    source = doctor.probe_source() + "import sys\nprint(sorted(m for m in sys.modules if m.startswith('nnunetv2.')))\n"
    result = subprocess.run(
        [sys.executable, "-c", source, "sources", *doctor.LOOKUP_NAMES],
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    report, imported = result.stdout.splitlines()[-2:]
    assert json.loads(report)["lookup_by"] == "sources"
    assert not [m for m in ast.literal_eval(imported) if m.startswith("nnunetv2.training")]


AGREEMENT = """
import contextlib, importlib.util, io, json, os, sys
from nnunet_dicephi import doctor
import nnunetv2
from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

scenarios, root, names = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3:]
ours, out = doctor._ours(names), {}
for scenario, value in scenarios.items():  # nnU-Net 2.8's lookup: its own package, then nnUNet_extTrainer
    if value is None:
        os.environ.pop("nnUNet_extTrainer", None)
    else:
        os.environ["nnUNet_extTrainer"] = value
    read = doctor._static_lookup(names, nnunetv2.__path__[0], True, value, ours)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        run = doctor._real_lookup(names)
    out[scenario] = {"sources": read, "import": run}
sys.path.insert(0, root)  # packages laid out as nnU-Net's: the search of its own package (alone before 2.8)
importable = lambda top: importlib.util.find_spec(top) is not None
for package in sorted(os.listdir(root)):
    folder, prefix = os.path.join(root, package, "training", "nnUNetTrainer"), f"{package}.training.nnUNetTrainer"
    read, run = {}, {}
    for name in names:
        kind, detail = doctor._search_folder(folder, prefix, name, importable, ours, {})
        read[name] = {"missing": ""} if kind == "absent" else {kind: detail}
        with contextlib.redirect_stderr(io.StringIO()):
            found = recursive_find_python_class(folder, name, prefix)
        run[name] = {"missing": ""} if found is None else {"found": f"{found.__module__}.{found.__qualname__}"}
    out[package] = {"sources": read, "import": run}
print(json.dumps(out))
"""


def _agree(read, run):
    """The sources say what the lookup says: the same class, the same error, or nothing found."""
    return read == run or set(read) == set(run) == {"missing"}


@pytest.mark.slow
def test_the_sources_agree_with_nnunets_lookup_in_each_folder(tmp_path):
    scenarios = _scenarios(tmp_path / "ext")
    values = json.dumps({scenario: value for scenario, (value, _) in scenarios.items()})
    scenarios.update(_packages(tmp_path / "packages"))
    result = subprocess.run(
        [sys.executable, "-c", AGREEMENT, values, str(tmp_path / "packages"), *NAMES],
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    answered = json.loads(result.stdout.splitlines()[-1])
    assert set(answered) == set(scenarios)
    for scenario, answers in answered.items():
        for name in NAMES:
            read, run = answers["sources"][name], answers["import"][name]
            assert _matches(read, scenarios[scenario][1][name]), (scenario, name, read)
            assert "undecided" in read or _agree(read, run), (scenario, name, read, run)


@pytest.mark.slow
def test_the_default_check_agrees_with_nnunets_own_lookup_here():
    """On this installation the default (read from the sources) reports exactly what --thorough does."""
    env = _clean_env()
    reports = {by: doctor.finish_probe(doctor.start_probe(sys.executable, env, by)) for by in ("sources", "import")}
    assert reports["sources"].pop("lookup_by") == "sources" and reports["import"].pop("lookup_by") == "import"
    assert reports["sources"] == reports["import"]
    assert set(reports["sources"]["lookups"]) == set(doctor.LOOKUP_NAMES)


@pytest.mark.parametrize(("argv", "status"), [(["doctor"], 141), (["--help"], 0)])
def test_a_closed_pipe_ends_quietly(argv, status):
    """The reader is gone before the first write (as `| head` is after its line): no traceback.

    The doctor's first line is flushed at once, so it stops there with the status of a command killed
    by SIGPIPE; argparse's --help swallows the error itself and exits 0.
    """
    process = subprocess.Popen(
        [str(BIN / "nnunet-dicephi"), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    process.stdout.close()
    stderr = process.stderr.read()
    assert process.wait() == status and stderr == ""


# --- in subprocesses, as a user runs them --------------------------------------------------------


def _clean_env(**changes):
    env = {k: v for k, v in os.environ.items() if not k.startswith("nnUNet_") and k != "NNUNET_DICEPHI_NO_REGISTER"}
    env["PATH"] = os.pathsep.join([str(BIN), env.get("PATH", "")])
    return {**env, **changes}


def _run(env, command, *args, cwd=None):
    """A console script of this environment (or bash), as a user's shell runs it."""
    program = command if command == "bash" else str(BIN / command)
    return subprocess.run([program, *args], env=env, capture_output=True, text=True, cwd=cwd)


def _last_lines(text, count):
    return [line for line in text.splitlines() if line.strip()][-count:]


@pytest.mark.slow
def test_doctor_piped_into_head():
    result = _run(_clean_env(), "bash", "-c", "set -o pipefail; nnunet-dicephi doctor | head -1")
    assert result.stdout == HEADER + "\n"
    assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    assert result.returncode == 141


@pytest.mark.slow
def test_doctor_names_the_folder_to_export_when_the_hook_is_off():
    result = _run(_clean_env(NNUNET_DICEPHI_NO_REGISTER="1"), "nnunet-dicephi", "doctor")
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    lookup = lines.index(next(line for line in lines if line.startswith("problem  trainer lookup: ")))
    assert "nnUNet_extTrainer=''" in lines[lookup] and "switched off" in lines[lookup]
    assert lines[lookup + 1] == f"         fix: export nnUNet_extTrainer={FOLDER}"
    assert result.stderr == ""


@pytest.mark.e2e
def test_a_wrong_trainer_name_ends_with_the_closest_valid_name(tmp_path):
    """nnU-Net's lookup runs before it reads a dataset, so none is needed."""
    result = _run(
        _clean_env(), "nnUNetv2_train", "999", "2d", "0", "-tr", "TrainerDiceBX", "-device", "cpu", cwd=tmp_path
    )
    assert result.returncode != 0
    last = _last_lines(result.stderr, 4)
    assert last[0].startswith("RuntimeError: Could not find requested nnunet trainer TrainerDiceBX")  # nnU-Net's
    assert last[1].startswith("nnunet-dicephi: nnU-Net's error above is about the name, not about nnUNet_extTrainer")
    assert last[2].startswith("'TrainerDiceBX' is not a valid nnunet-dicephi trainer name")
    assert last[3] == "Closest valid name: TrainerDiceBI"


@pytest.fixture(scope="module")
def bad_manifest(tmp_path_factory, request):
    """A preprocessed dataset whose manifest names an unknown label and an unknown case."""
    from nnunet_dicephi.synthetic import write_dataset

    with module_folder(tmp_path_factory, request, "doctor") as root:
        env = _clean_env(
            nnUNet_raw=str(root / "raw"),
            nnUNet_preprocessed=str(root / "preprocessed"),
            nnUNet_results=str(root / "results"),
            OMP_NUM_THREADS="1",
            nnUNet_def_n_proc="1",
        )
        manifest = {"cases": {"case_000": ["bright", "glow"], "case_999": []}}
        write_dataset(
            root / "raw", 904, "Doctor", cases=5, shape=(1, 32, 32), extra_json={"dicephi_partial_labels": manifest}
        )
        planned = _run(env, "nnUNetv2_plan_and_preprocess", "-d", "904", "-c", "2d", "-np", "1")
        assert planned.returncode == 0, planned.stderr[-3000:]
        yield env, root


@pytest.mark.e2e
def test_a_bad_manifest_ends_with_the_file_and_the_fix(bad_manifest):
    env, root = bad_manifest
    result = _run(env, "nnUNetv2_train", "904", "2d", "0", "-tr", "TrainerDiceI_ep1_it2", "-device", "cpu")
    assert result.returncode != 0
    copy = root / "preprocessed" / "Dataset904_Doctor" / "dataset.json"
    last = _last_lines(result.stderr, 4)
    assert (
        last[0]
        == f"nnunet_dicephi.partial_labels.ManifestError: invalid 'dicephi_partial_labels' in {copy} (2 problems):"
    )
    assert "unknown label 'glow'" in last[1] and last[2] == "  - case ids not in the dataset: case_999"
    raw = root / "raw" / "Dataset904_Doctor" / "dataset.json"
    assert last[3].startswith(
        f"That file is nnU-Net's copy of the raw dataset.json: fix it in {raw}, then copy that file to {copy} "
    )


@pytest.mark.e2e
def test_doctor_is_content_after_its_fix_is_applied(bad_manifest):
    """With the hook off and nnUNet_extTrainer exported as the doctor says, everything is ok."""
    env, _ = bad_manifest
    env = {**env, "NNUNET_DICEPHI_NO_REGISTER": "1", "nnUNet_extTrainer": FOLDER}
    result = _run(env, "nnunet-dicephi", "doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        "ok       trainer lookup: nnU-Net's lookup finds TrainerDiceBI and TrainerDiceBI_eps1e-5 through "
        "nnUNet_extTrainer (as you set it)" in result.stdout.splitlines()
    )
    assert "(1 dataset: Dataset904_Doctor)" in result.stdout
    assert result.stdout.splitlines()[-1] == "ready: nnUNetv2_train finds the trainers"


def test_folders_that_nnunet_creates_are_not_problems(tmp_path):
    """nnUNet_preprocessed and nnUNet_results are created by the commands that write them; a missing
    nnUNet_raw is a note (datasets must be put there)."""
    from nnunet_dicephi.doctor import _path_check

    missing = tmp_path / "not_yet"
    assert _path_check("nnUNet_preprocessed", str(missing)).status == "ok"
    assert "nnUNetv2_plan_and_preprocess creates it" in _path_check("nnUNet_preprocessed", str(missing)).detail
    assert _path_check("nnUNet_results", str(missing)).status == "ok"
    raw = _path_check("nnUNet_raw", str(missing))
    assert raw.status == "note" and raw.fix == f"mkdir -p {missing}"
    (tmp_path / "file").write_text("")
    assert _path_check("nnUNet_preprocessed", str(tmp_path / "file" / "below")).status == "problem"  # not creatable
