"""``nnunet-dicephi doctor``: can ``nnUNetv2_train -tr TrainerDiceBI`` run here, and how will it train?

What matters is what a fresh ``nnUNetv2_train`` sees, not what this process sees: the start-up hook
may not run there (``pip install --target``, ``python -S``), and the ``nnUNetv2_train`` on ``PATH``
may belong to another Python. So one child process, started with the interpreter of the
``nnUNetv2_train`` on ``PATH``, runs nnU-Net's own trainer lookup and reads the device
(:func:`_probe`); everything it reports is judged here, by a pure function (:func:`diagnose`).
This process imports neither torch nor nnU-Net; the child's import of nnU-Net's trainer module (and
with it torch), which every ``nnUNetv2_train`` pays too, is nearly all of the doctor's time.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nnunet_dicephi._cli import add_verb

EXT_TRAINER = "nnUNet_extTrainer"
NO_REGISTER = "NNUNET_DICEPHI_NO_REGISTER"
HOOK_MODULE = "nnunet_dicephi._register"
LOOKUP_NAMES = ("TrainerDiceBI", "TrainerDiceBI_eps1e-5")
"""A preset and a parametric name (built on demand by the module's ``__getattr__``)."""
PROBE_TIMEOUT_S = 300

Status = Literal["ok", "note", "problem"]


@dataclass(frozen=True)
class Check:
    """One line of the report: ``problem`` blocks training, ``note`` is worth knowing, ``ok`` is fine."""

    status: Status
    topic: str
    detail: str
    fix: str = ""

    def lines(self) -> list[str]:
        head = f"{self.status:<8} {self.topic}: {self.detail}"
        return [head, f"{'':9}fix: {self.fix}"] if self.fix else [head]


# --- what a fresh nnUNetv2_train sees --------------------------------------------------------


def _probe() -> None:
    """Print, as one JSON line, what a fresh interpreter finds: nnU-Net's lookup, torch, the device.

    Runs in the child process as source text (``python -c``), so it needs nothing of this package:
    it also reports on an interpreter where nnunet-dicephi is not installed.
    """
    import contextlib
    import importlib.metadata
    import importlib.util
    import io
    import json
    import os
    import sys

    names = sys.argv[1:]
    if sys.path and sys.path[0] == "":  # `python -c` searches the working folder first; nnUNetv2_train does not
        del sys.path[0]
    report = {
        "python": sys.executable,
        "prefix": sys.prefix,
        "python_version": sys.version.split()[0],
        "hook": "nnunet_dicephi._register" in sys.modules,  # imported at start-up by the .pth, if at all
        "ext_trainer": os.environ.get("nnUNet_extTrainer"),
        "dicephi_installed": importlib.util.find_spec("nnunet_dicephi") is not None,
        "lookups": {},
    }
    noise = io.StringIO()  # nnU-Net's lookup prints what it searches; keep stdout for the report
    with contextlib.redirect_stdout(noise), contextlib.redirect_stderr(noise):
        try:
            import nnunetv2

            report["nnunet"] = importlib.metadata.version("nnunetv2")
            report["nnunet_path"] = nnunetv2.__path__[0]
            try:
                from nnunetv2.utilities import find_objects
            except ImportError:  # before 2.8 the lookup searched nnU-Net's own trainer package only
                find_objects = None
            report["external_lookup"] = find_objects is not None and hasattr(find_objects, "nnUNet_extTrainer")
            if find_objects is not None:
                find = find_objects.recursive_find_trainer_class_by_name
            else:

                def find(name):  # get_trainer_from_args of nnU-Net 2.5 to 2.7, without the dataset
                    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

                    folder = os.path.join(nnunetv2.__path__[0], "training", "nnUNetTrainer")
                    found = recursive_find_python_class(folder, name, "nnunetv2.training.nnUNetTrainer")
                    if found is None:
                        raise RuntimeError(f"Could not find requested nnunet trainer {name}")
                    return found

            for name in names:
                try:
                    found = find(name)
                    report["lookups"][name] = {"found": f"{found.__module__}.{found.__qualname__}"}
                except Exception as error:  # a name not found, or a module on the search path that fails
                    kind = "missing" if "Could not find requested nnunet trainer" in str(error) else "error"
                    report["lookups"][name] = {kind: f"{type(error).__name__}: {error}"}
            import torch

            report["torch"] = torch.__version__
            report["cuda_build"] = torch.version.cuda
            report["gpus"] = [
                [torch.cuda.get_device_name(i), torch.cuda.get_device_properties(i).total_memory]
                for i in range(torch.cuda.device_count() if torch.cuda.is_available() else 0)
            ]
            mps = getattr(torch.backends, "mps", None)
            report["mps"] = bool(mps is not None and mps.is_available())
            report["triton"] = importlib.util.find_spec("triton") is not None
        except Exception as error:
            report["error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(report))


def trainer_command_python(command: str | None) -> str | None:
    """The interpreter named on the ``#!`` line of a console script such as ``nnUNetv2_train``."""
    if command is None:
        return None
    try:
        with open(command, "rb") as handle:
            first = handle.readline(512).decode("utf-8", "replace").strip()
    except OSError:
        return None
    words = first[2:].split() if first.startswith("#!") else []
    if words and "python" in os.path.basename(words[0]) and os.path.isfile(words[0]):
        return words[0]
    return None  # a launcher (#!/bin/sh ... exec) or something else: assume this interpreter


def probe_environment(environ: Mapping[str, str], python: str, hook_ran_here: bool, folder: str | None) -> dict:
    """The environment for the probe: ours, less what this process's start-up hook added, if another Python runs it.

    In the same Python the hook adds the same folder again (or the user's own entry stays), so the
    environment passes as it is. Another Python must show whether *its* start-up finds the trainers.
    """
    env = dict(environ)
    same = Path(python).absolute().parent == Path(sys.executable).absolute().parent  # one environment's bin/
    entries = env.get(EXT_TRAINER, "").split(os.pathsep)
    if not same and hook_ran_here and folder is not None and entries and entries[-1] == folder:
        rest = os.pathsep.join(entries[:-1])
        if rest:
            env[EXT_TRAINER] = rest
        else:
            env.pop(EXT_TRAINER, None)
    return env


def start_probe(python: str, env: Mapping[str, str]) -> subprocess.Popen:
    source = textwrap.dedent(inspect.getsource(_probe)) + "\n_probe()\n"
    return subprocess.Popen(
        [python, "-c", source, *LOOKUP_NAMES],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish_probe(process: subprocess.Popen, timeout: float = PROBE_TIMEOUT_S) -> dict:
    """The probe's report; a report with ``error`` when it failed or did not finish."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        return {"error": f"the check did not finish in {timeout:.0f} s"}
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                break
    last = " | ".join(line for line in err.strip().splitlines()[-3:])
    return {"error": f"{process.args[0]} exited with status {process.returncode}: {last or 'no output'}"}


# --- judging it ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Here:
    """What this process knows that the probe does not."""

    version: str
    """nnunet-dicephi's version."""
    python: str
    prefix: str
    """``sys.prefix``: which environment (a venv's folder) this Python belongs to."""
    trainer_command: str | None
    """The ``nnUNetv2_train`` on PATH (None when there is none)."""
    folder: str | None
    """This installation's lookup folder (the one the start-up hook puts on ``nnUNet_extTrainer``)."""


def diagnose(probe: Mapping[str, Any], environ: Mapping[str, str], here: Here) -> list[Check]:
    """Every line of the report, from the probe's findings and the environment."""
    checks = [_versions(probe, here), _trainer_command(probe, here)]
    if "error" in probe:
        checks.append(
            Check(
                "problem",
                "nnU-Net",
                f"{probe.get('python', here.python)} could not import nnU-Net and torch: {probe['error']}",
                "pip install nnunet-dicephi (it brings nnunetv2 and torch) into the Python that runs nnUNetv2_train",
            )
        )
    else:
        checks += [_device(probe, environ), _lookup(probe, environ, here), *_compile_and_precision(probe, environ)]
    checks += [_path_check(variable, environ.get(variable)) for variable in PATHS]
    return checks


def _versions(probe: Mapping[str, Any], here: Here) -> Check:
    parts = [f"nnunet-dicephi {here.version}"]
    if probe.get("nnunet"):
        parts.append(f"nnU-Net {probe['nnunet']}")
    if probe.get("torch"):
        build = f"CUDA {probe['cuda_build']} build" if probe.get("cuda_build") else "CPU build"
        parts.append(f"torch {probe['torch']} ({build})")
    parts.append(f"Python {probe.get('python_version') or sys.version.split()[0]}")
    return Check("ok", "versions", ", ".join(parts))


def _trainer_command(probe: Mapping[str, Any], here: Here) -> Check:
    if here.trainer_command is None:
        return Check(
            "problem",
            "nnUNetv2_train",
            "not on PATH",
            f"activate the environment nnunet-dicephi is installed in, e.g. . {Path(here.python).parent}/activate",
        )
    python = probe.get("python", here.python)
    if probe.get("prefix", here.prefix) == here.prefix:
        return Check("ok", "nnUNetv2_train", f"{here.trainer_command} (this Python)")
    if not probe.get("dicephi_installed", True):
        return Check(
            "problem",
            "nnUNetv2_train",
            f"{here.trainer_command} runs {python}, where nnunet-dicephi is not installed",
            f"put {Path(here.python).parent} first on PATH, or pip install nnunet-dicephi for {python}",
        )
    return Check(
        "note",
        "nnUNetv2_train",
        f"{here.trainer_command} runs {python}, not this command's {here.python}: the lines below describe that one",
    )


def _gib(size: int) -> str:
    return f"{size / 2**30:.1f} GiB"


def _device(probe: Mapping[str, Any], environ: Mapping[str, str]) -> Check:
    gpus = probe.get("gpus") or []
    if gpus:
        listed = "; ".join(f"cuda:{i} {name}, {_gib(memory)}" for i, (name, memory) in enumerate(gpus))
        return Check("ok", "device", f"CUDA: {listed}")
    if probe.get("cuda_build"):
        no_gpu = f"torch's CUDA {probe['cuda_build']} build sees no GPU"
        visible = environ.get("CUDA_VISIBLE_DEVICES")
        no_gpu += f" with CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    else:
        no_gpu = "torch is a CPU build"
    if probe.get("mps"):
        return Check("note", "device", f"MPS, Apple's GPU ({no_gpu})", "pass -device mps to nnUNetv2_train")
    return Check(
        "note",
        "device",
        f"CPU only ({no_gpu}; no MPS): nnUNetv2_train's default, -device cuda, fails here",
        "pass -device cpu to nnUNetv2_train (slow: fine for toys and tests)",
    )


def _lookup(probe: Mapping[str, Any], environ: Mapping[str, str], here: Here) -> Check:
    lookups: Mapping[str, Mapping[str, str]] = probe.get("lookups", {})
    names = " and ".join(lookups) or "no name"
    found = {name: result["found"] for name, result in lookups.items() if "found" in result}
    foreign = {name: where for name, where in found.items() if not where.startswith("nnunet_dicephi.trainers.")}
    if foreign:
        name, where = next(iter(foreign.items()))
        return Check(
            "problem",
            "trainer lookup",
            f"nnU-Net's lookup finds another class for {name}: {where}",
            "rename or remove that class: nnU-Net takes the first class of that name it finds",
        )
    folder_on = here.folder is not None and here.folder in (probe.get("ext_trainer") or "").split(os.pathsep)
    if len(found) == len(lookups) and lookups:
        if folder_on and probe.get("external_lookup"):
            how = "set by the start-up hook" if probe.get("hook") and not _switched_off(environ) else "as you set it"
            route = f"through {EXT_TRAINER} ({how})"
        elif not probe.get("external_lookup"):
            route = "in nnU-Net's own trainer package (nnunet-dicephi register)"
        else:
            route = "(placed in nnU-Net's own trainer package by nnunet-dicephi register, or from a folder of yours)"
        return Check("ok", "trainer lookup", f"nnU-Net's lookup finds {names} {route}")
    errors = [result["error"] for result in lookups.values() if "error" in result]
    if errors:
        return Check(
            "problem",
            "trainer lookup",
            f"nnU-Net's lookup failed: {errors[0].splitlines()[0]}",
            "a module in a folder on nnUNet_extTrainer or in nnU-Net's trainer package fails to import; its "
            f"traceback: nnUNetv2_train 1 2d 0 -tr {LOOKUP_NAMES[0]} (the lookup comes first, no dataset needed)",
        )
    missing = " and ".join(name for name in lookups if name not in found)
    if not probe.get("external_lookup"):
        return Check(
            "problem",
            "trainer lookup",
            f"nnU-Net {probe.get('nnunet', '')} does not find {missing}: before 2.8 it searches its own trainer "
            f"package only, not {EXT_TRAINER}",
            "nnunet-dicephi register (undo with nnunet-dicephi unregister), or pip install 'nnunetv2>=2.8'",
        )
    if here.folder is None:
        return Check(
            "problem",
            "trainer lookup",
            f"nnU-Net does not find {missing}",
            "pip install --force-reinstall nnunet-dicephi",
        )
    if folder_on:
        return Check(
            "problem",
            "trainer lookup",
            f"nnU-Net does not find {missing} although {here.folder} is on {EXT_TRAINER}",
            f"pip install nnunet-dicephi into {probe.get('python', here.python)} (the folder's module imports it)",
        )
    if _switched_off(environ):
        why = f"the start-up hook is switched off ({NO_REGISTER}={environ[NO_REGISTER]})"
    elif not probe.get("hook"):
        why = "the start-up hook did not run (installed with pip --target, or Python started with -S?)"
    else:
        why = f"the start-up hook ran but {EXT_TRAINER} does not hold {here.folder}"
    value = probe.get("ext_trainer") or ""
    export = f'"${EXT_TRAINER}{os.pathsep}{here.folder}"' if value else shlex.quote(here.folder)
    return Check(
        "problem",
        "trainer lookup",
        f"nnU-Net does not find {missing}: {EXT_TRAINER}={value!r} lacks this package's folder; {why}",
        f"export {EXT_TRAINER}={export}",
    )


def _switched_off(environ: Mapping[str, str]) -> bool:
    """Whether the start-up hook is switched off (it still runs, and leaves the variable alone)."""
    return environ.get(NO_REGISTER, "").strip() not in ("", "0")


def _compile_and_precision(probe: Mapping[str, Any], environ: Mapping[str, str]) -> list[Check]:
    """What nnU-Net's ``_do_i_compile()`` and its autocast rule choose on the device found."""
    setting = environ.get("nnUNet_compile")
    said = "nnUNet_compile unset" if setting is None else f"nnUNet_compile={setting}"
    if not probe.get("gpus"):
        where = "MPS" if probe.get("mps") else "the CPU"
        return [
            Check("ok", "torch.compile", f"off: nnU-Net compiles on CUDA only, not on {where} ({said})"),
            Check("ok", "mixed precision", f"off: float32 on {where} (nnU-Net's fp16 autocast is for CUDA only)"),
        ]
    precision = Check(
        "ok", "mixed precision", "fp16 autocast with a GradScaler (nnU-Net on CUDA); the losses compute in float32"
    )
    if os.name == "nt":
        compiled = Check("ok", "torch.compile", f"off: nnU-Net does not compile on Windows ({said})")
    elif setting is not None and setting.lower() not in ("true", "1", "t"):
        compiled = Check("ok", "torch.compile", f"off ({said})")
    elif not probe.get("triton"):
        compiled = Check(
            "problem",
            "torch.compile",
            f"on ({said}), but triton, which torch.compile needs on CUDA, is not installed",
            "pip install triton, or export nnUNet_compile=f",
        )
    else:
        compiled = Check(
            "ok",
            "torch.compile",
            f"on ({said}): the network and these trainers' loss; the first iterations compile (minutes)",
        )
    return [compiled, precision]


PATHS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
_USE = {
    "nnUNet_raw": "nnUNetv2_plan_and_preprocess reads datasets from it; nnunet-dicephi convert and toy write there",
    "nnUNet_preprocessed": "nnUNetv2_train reads plans and preprocessed data from it",
    "nnUNet_results": "nnUNetv2_train writes its checkpoints there",
}


def _path_check(variable: str, value: str | None) -> Check:
    """Set? exists? writable? Only nnUNet_raw is not needed by nnUNetv2_train itself."""
    blocking: Status = "note" if variable == "nnUNet_raw" else "problem"
    if not value:
        return Check(blocking, variable, f"not set; {_USE[variable]}", f"export {variable}=/path/to/{variable}")
    path = Path(value)
    if not path.exists():
        if variable == "nnUNet_results" and _creatable(path):
            return Check("ok", variable, f"{value} (does not exist yet: nnUNetv2_train creates it)")
        return Check(blocking, variable, f"{value} does not exist", f"mkdir -p {shlex.quote(value)}")
    another = f"export {variable}=/path/to/another/folder"
    if not path.is_dir():
        return Check(blocking, variable, f"{value} is not a folder", another)
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        fix = f"chmod u+rwx {shlex.quote(value)}, or {another}"
        return Check(blocking, variable, f"{value} is not writable by this user", fix)
    datasets = sorted(p.name for p in path.iterdir() if p.name.startswith("Dataset") and p.is_dir())
    if not datasets and variable != "nnUNet_results":
        raw = variable == "nnUNet_raw"
        writer = "nnunet-dicephi convert and toy write" if raw else "nnUNetv2_plan_and_preprocess writes"
        return Check("ok", variable, f"{value} (no dataset yet; {writer} them here)")
    shown = ", ".join(datasets[:3]) + (", …" if len(datasets) > 3 else "")
    counted = f"{len(datasets)} dataset{'s' if len(datasets) > 1 else ''}"
    return Check("ok", variable, value + (f" ({counted}: {shown})" if datasets else ""))


def _creatable(path: Path) -> bool:
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return os.access(parent, os.W_OK | os.X_OK)


# --- the verb --------------------------------------------------------------------------------


def _lookup_folder() -> str | None:
    """This installation's lookup folder, read from the start-up hook's module without letting it act here."""
    saved = os.environ.get(EXT_TRAINER)
    from nnunet_dicephi import _register  # importing it runs the hook once: undo that, this process only looks

    if saved is None:
        os.environ.pop(EXT_TRAINER, None)
    else:
        os.environ[EXT_TRAINER] = saved
    return _register.lookup_folder()


def run_doctor(args: argparse.Namespace) -> int:
    """Check that nnU-Net's own commands can train with these trainers here, and say how they will train.

    Versions of nnunet-dicephi, nnU-Net, torch and Python; the nnUNetv2_train on PATH and its Python;
    the device (CUDA with each GPU's name and memory, MPS or CPU); whether nnU-Net's own trainer lookup,
    run in a fresh process as nnUNetv2_train runs it, finds a preset (TrainerDiceBI) and a parametric
    name (TrainerDiceBI_eps1e-5), and if not why; torch.compile and mixed precision as nnU-Net will
    choose them; nnUNet_raw, nnUNet_preprocessed and nnUNet_results (set, existing, writable). Each line
    says ok, note or problem, with the fix. Exit status 1 when a problem blocks training. Takes a few
    seconds: the lookup imports torch and nnU-Net.
    """
    print("nnunet-dicephi doctor: can nnUNetv2_train use these trainers here?", flush=True)
    import nnunet_dicephi

    hook_ran_here = HOOK_MODULE in sys.modules  # imported at start-up by the .pth, if at all
    command = shutil.which("nnUNetv2_train")
    python = trainer_command_python(command) or sys.executable
    folder = _lookup_folder()
    process = start_probe(python, probe_environment(os.environ, python, hook_ran_here, folder))
    here = Here(nnunet_dicephi.__version__, sys.executable, sys.prefix, command, folder)
    checks = diagnose(finish_probe(process), os.environ, here)
    for check in checks:
        print("\n".join(check.lines()))
    problems = sum(check.status == "problem" for check in checks)
    if problems:
        print(f"{problems} problem{'s' if problems > 1 else ''} to fix before training (see fix: above)")
        return 1
    print("ready: nnUNetv2_train finds the trainers")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """The doctor's report, with exit status 0 whatever it finds.

    The same lines as nnunet-dicephi doctor (versions, device, trainer lookup, compile and precision,
    nnU-Net's folders), for scripts and logs that record the setting; doctor's exit status is 1 when a
    problem blocks training.
    """
    run_doctor(args)
    return 0


def add_parser(verbs: Any) -> None:
    """Add the ``doctor`` and ``info`` verbs to the subparsers of the ``nnunet-dicephi`` command."""
    add_verb(verbs, "doctor", run_doctor)
    add_verb(verbs, "info", run_info)
