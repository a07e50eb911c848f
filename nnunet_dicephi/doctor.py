"""``nnunet-dicephi doctor``: can ``nnUNetv2_train -tr TrainerDiceBI`` run here, and how will it train?

What matters is what a fresh ``nnUNetv2_train`` sees, not what this process sees: the start-up hook
may not run there (``pip install --target``, ``python -S``), and the ``nnUNetv2_train`` on ``PATH``
may belong to another Python. So one child process, started with the interpreter of the
``nnUNetv2_train`` on ``PATH``, answers for it (:func:`_probe`); everything it reports is judged
here, by a pure function (:func:`diagnose`). This process imports neither torch nor nnU-Net.

Whether nnU-Net's lookup finds a trainer is read from the sources (:func:`_static_lookup`). The
lookup imports each module of nnU-Net's trainer package, then (2.8 and later) of each folder on
``nnUNet_extTrainer``, in ``pkgutil`` order, and returns the first answer to ``hasattr(module,
name)``; the statements a module runs at import say the same without running them. Importing
them is most of what the lookup costs (nnU-Net's trainer module pulls in torch's compiler, timm,
matplotlib: 5 s of CPU), so the child runs nnU-Net's lookup itself only with ``--thorough``, or
where the sources cannot tell (someone else's module-level ``__getattr__``, a name bound under an
``if``, compiled modules). The sources show a syntax error, a relative import in a top-level module
and an import of a module that is not installed, as nnU-Net's lookup would meet them; not a module
that raises anything else while it runs (``--thorough`` does). The child still imports torch: only
torch can say which GPUs it sees.
"""

from __future__ import annotations

import argparse
import dataclasses
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
LookupBy = Literal["sources", "import"]
"""How the child answers the lookup: read from the sources (the default), or nnU-Net's own lookup run
(``--thorough``)."""

Status = Literal["ok", "note", "problem"]


@dataclass(frozen=True)
class Check:
    """One line of the report: ``problem`` blocks training, ``note`` is worth knowing, ``ok`` is fine."""

    status: Status
    topic: str
    detail: str
    fix: str = ""
    how: str = ""
    """How the finding was made, where that is not obvious (the trainer lookup)."""

    def lines(self) -> list[str]:
        head = f"{self.status:<8} {self.topic}: {self.detail}"
        return [head] + [f"{'':9}{label}: {text}" for label, text in (("fix", self.fix), ("how", self.how)) if text]


# --- what a fresh nnUNetv2_train sees --------------------------------------------------------
#
# The functions from here to _probe run in the child as source text (see probe_source), so they
# import only the standard library, inside the function, and refer to no constant of this module.


def _module_outcome(path, name, module, is_package, importable, ours, trees=None):
    """What ``import_module(module)`` and then ``hasattr(module, name)`` give, read from the source at ``path``.

    Only the statements that run at import count, not function or class bodies. ``name`` None asks
    only whether the import fails (a package's ``__init__``). ``importable(top)`` says whether a
    top-level module can be found; ``ours`` holds which names ``from nnunet_dicephi.trainers import
    *`` (``star``) and that module's ``__getattr__`` (``getattr``) provide, None when unknown.
    Returns ``(kind, detail)``: ``("found", "module.Class")``, ``("absent", "")``, ``("error",
    "Type: message")`` as the import would raise it, or ``("undecided", why)``. ``trees`` keeps the
    parsed files for the next name.
    """
    import ast

    ours_module = "nnunet_dicephi.trainers"
    if not path or not path.endswith(".py"):
        return "undecided", f"{path or module} is not Python source"
    trees = {} if trees is None else trees
    if path not in trees:
        try:
            with open(path, "rb") as handle:
                trees[path] = ast.parse(handle.read(), path)
        except SyntaxError as error:
            trees[path] = ("error", f"{type(error).__name__}: {error}")
        except (OSError, ValueError) as error:
            trees[path] = ("undecided", f"{path} cannot be read ({error})")
    tree = trees[path]
    if isinstance(tree, tuple):
        return tree
    package = module if is_package else module.rpartition(".")[0]
    found = {"sure": None, "maybe": False, "star": [], "getattr": [], "dynamic": False, "fails": None}

    class Fails(Exception):
        pass

    def bind(bound, how, conditional):
        if bound == name:
            if conditional:
                found["maybe"] = True
            else:
                found["sure"] = how

    def failure(node):
        """Why the import statement ``node`` raises, or None."""
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = package.split(".") if package else []
            if not parts:
                return "ImportError: attempted relative import with no known parent package"
            if node.level > len(parts):
                return "ImportError: attempted relative import beyond top-level package"
            return None  # within the package being searched, which exists
        targets = [node.module] if isinstance(node, ast.ImportFrom) else [alias.name for alias in node.names]
        for target in targets:
            top = target.split(".")[0]
            if not importable(top):
                return f"ModuleNotFoundError: No module named '{top}'"
        return None

    def source_of(node):
        if not node.level:
            return node.module
        parts = package.split(".")
        return ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))

    def catches(handler):
        """Whether ``except ...:`` catches an ImportError."""
        caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        bases = ("ImportError", "ModuleNotFoundError", "Exception", "BaseException")
        return handler.type is None or any(isinstance(kind, ast.Name) and kind.id in bases for kind in caught)

    def visit(statements, conditional, guarded):
        """Record what ``statements`` bind; False when a caught import error ended the block early."""
        for node in statements:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                why = failure(node)
                if why is not None:
                    if guarded:  # inside try: ... except ImportError: the handler catches it
                        return False
                    if conditional:
                        found["fails"] = found["fails"] or f"{path} may fail to import ({why}) on some paths"
                        continue
                    raise Fails(why)
                for alias in node.names:
                    if isinstance(node, ast.Import):
                        bind(alias.asname or alias.name.split(".")[0], ("other", None), conditional)
                    elif alias.name == "*":
                        found["star"].append((source_of(node), conditional))
                    else:
                        if alias.name == "__getattr__" and alias.asname in (None, "__getattr__"):
                            found["getattr"].append((source_of(node), conditional))
                        bind(alias.asname or alias.name, ("from", source_of(node)), conditional)
            elif isinstance(node, ast.ClassDef):
                bind(node.name, ("class", None), conditional)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                bind(node.name, ("other", None), conditional)
                if node.name == "__getattr__":
                    found["getattr"].append((None, conditional))
            elif isinstance(node, (ast.Try, getattr(ast, "TryStar", ast.Try))):
                completed = visit(node.body, conditional, guarded or any(map(catches, node.handlers)))
                for handler in node.handlers:
                    visit(handler.body, True, guarded)
                if completed:
                    visit(node.orelse, conditional, guarded)
                visit(node.finalbody, conditional, guarded)
            elif isinstance(node, (ast.With, ast.AsyncWith)):
                visit(node.body, conditional, guarded)
            elif isinstance(node, (ast.If, ast.For, ast.AsyncFor, ast.While)):
                visit(node.body, True, guarded)
                visit(node.orelse, True, guarded)
            elif type(node).__name__ == "Match":
                for case in node.cases:
                    visit(case.body, True, guarded)
            else:
                expressions(node, conditional)
                continue
            headers = [getattr(node, field, None) for field in ("test", "target", "iter", "items", "subject")]
            for header in headers:  # a loop's target, a with's "as", a walrus: bound, though maybe not for good
                for part in header if isinstance(header, list) else [header]:
                    if part is not None:
                        expressions(part, True)
        return True

    def expressions(node, conditional):
        for part in ast.walk(node):
            if isinstance(part, ast.Name) and isinstance(part.ctx, ast.Store):
                bind(part.id, ("other", None), conditional)
            elif isinstance(part, ast.Call) and isinstance(part.func, ast.Name):
                if part.func.id in ("globals", "locals", "vars", "setattr", "exec"):
                    found["dynamic"] = True

    try:
        visit(tree.body, False, False)
    except Fails as error:
        return "error", str(error)
    if found["fails"]:
        return "undecided", found["fails"]
    if name is None:
        return "absent", ""
    where = f"{ours_module}.{name}"
    if found["sure"] is not None:
        how, source = found["sure"]
        if how == "class":
            return "found", f"{module}.{name}"
        if how == "from" and source == ours_module and ours is not None and name in ours["getattr"]:
            return "found", where
        return "undecided", f"{path} binds {name} otherwise than by a class statement"
    if found["maybe"]:
        return "undecided", f"{path} binds {name} on some paths only"
    for source, conditional in found["star"]:
        if source != ours_module or ours is None:
            return "undecided", f"{path} runs from {source} import *"
        if name in ours["star"]:
            return ("undecided", f"{path} imports * on some paths only") if conditional else ("found", where)
    for source, conditional in found["getattr"]:
        if source != ours_module or ours is None:
            return "undecided", f"{path} has a module-level __getattr__" + (f" from {source}" if source else "")
        if name in ours["getattr"]:
            return ("undecided", f"{path} imports __getattr__ on some paths only") if conditional else ("found", where)
    if found["dynamic"]:
        return "undecided", f"{path} sets names at import through globals(), setattr() or exec()"
    return "absent", ""


def _search_folder(folder, prefix, name, importable, ours, trees, pending=()):
    """nnU-Net's ``_recursive_find_python_class(folder, name, prefix)``, read from the sources.

    The modules of ``folder`` in ``pkgutil`` order, then each sub-package the same way; the first
    module that has ``name`` (or fails to import) ends the search. Importing a module first runs the
    ``__init__`` of every package above it that is not imported yet (``pending``). Returns
    ``(kind, detail)`` as :func:`_module_outcome`.
    """
    import importlib.util
    import os
    import pkgutil

    def shadowed(name):
        """Where else a top-level ``name`` is found; one already imported would answer instead (None: nowhere)."""
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            return None
        if spec is None:
            return None
        places = [spec.origin, *(spec.submodule_search_locations or [])]
        if any(place and os.path.dirname(os.path.abspath(place)) == os.path.abspath(folder) for place in places):
            return None  # this very folder is on sys.path too
        return spec.origin or "a namespace package"

    modules = list(pkgutil.iter_modules([folder]))
    for info in modules:
        if info.ispkg:
            continue
        for init, package in pending:
            kind, detail = _module_outcome(init, None, package, True, importable, ours, trees)
            if kind != "absent":
                return kind, detail
        pending = ()
        module = info.name if prefix is None else f"{prefix}.{info.name}"
        spec = info.module_finder.find_spec(info.name)
        if prefix is None and shadowed(info.name):  # a top-level name: a module imported before would answer
            return "undecided", f"{module} in {folder} is also the name of {shadowed(info.name)}"
        kind, detail = _module_outcome(spec.origin if spec else None, name, module, False, importable, ours, trees)
        if kind != "absent":
            return kind, detail
    for info in modules:
        if info.ispkg:
            package = info.name if prefix is None else f"{prefix}.{info.name}"
            if prefix is None and shadowed(info.name):
                return "undecided", f"{package} in {folder} is also the name of {shadowed(info.name)}"
            inside = os.path.join(folder, info.name)
            spec = info.module_finder.find_spec(info.name)
            kind, detail = _search_folder(
                inside, package, name, importable, ours, trees, (*pending, (spec.origin if spec else None, package))
            )
            if kind != "absent":
                return kind, detail
    return "absent", ""


def _static_lookup(names, package, external, ext_trainer, ours):
    """What nnU-Net's trainer lookup returns for each of ``names``, read from the sources.

    ``package`` is the ``nnunetv2`` folder; ``external`` whether its lookup also searches the folders
    on ``nnUNet_extTrainer`` (2.8 and later: only when its own trainer package has no such name,
    each existing folder in turn, as top-level modules with the folder first on ``sys.path``), and
    ``ext_trainer`` that variable's value. Each result is ``{"found": "module.Class"}``,
    ``{"missing": ...}``, ``{"error": "Type: message"}`` or ``{"undecided": why}``.
    """
    import importlib.util
    import os
    import sys

    def importable_from(base):
        known = {}

        def importable(top):
            if top not in known:
                if base is not None:
                    sys.path.insert(0, os.path.abspath(base))
                try:
                    known[top] = importlib.util.find_spec(top) is not None
                except (ImportError, ValueError):
                    known[top] = False
                finally:
                    if base is not None:
                        sys.path.remove(os.path.abspath(base))
            return known[top]

        return importable

    searches = [(os.path.join(package, "training", "nnUNetTrainer"), "nnunetv2.training.nnUNetTrainer", None)]
    if external and ext_trainer is not None:
        folders = [path for path in ext_trainer.split(os.pathsep) if path.strip() and os.path.exists(path)]
        searches += [(path, None, path) for path in folders]
    checkers = [importable_from(base) for _, _, base in searches]
    trees = {}
    results = {}
    for name in names:
        kind, detail = "absent", ""
        for (folder, prefix, _), importable in zip(searches, checkers):
            kind, detail = _search_folder(folder, prefix, name, importable, ours, trees)
            if kind != "absent":
                break
        where = "nnU-Net's trainer package" + (" nor on nnUNet_extTrainer" if len(searches) > 1 else "")
        results[name] = {"missing": f"{name} is not in {where}"} if kind == "absent" else {kind: detail}
    return results


def _ours(names):
    """Which of ``names`` ``nnunet_dicephi.trainers`` gives to ``import *`` (the presets) and builds in ``__getattr__``.

    Read from this Python's nnunet-dicephi without importing its trainers (nor torch); None when it
    has no such grammar module (not installed, or another version).
    """
    try:
        from nnunet_dicephi.loss_config import PRESETS, TrainerNameError, parse_trainer_name
    except ImportError:
        return None
    built = []
    for name in names:
        try:
            if name.startswith("Trainer") and (PRESETS.get(name) or parse_trainer_name(name)):
                built.append(name)
        except TrainerNameError:
            pass
    return {"star": [name for name in names if name in PRESETS], "getattr": built}


def _real_lookup(names):
    """nnU-Net's own trainer lookup on each of ``names``, as ``nnUNetv2_train`` runs it (imports its trainers)."""
    import os

    import nnunetv2

    try:
        from nnunetv2.utilities import find_objects
    except ImportError:  # before 2.8 the lookup searched nnU-Net's own trainer package only
        find_objects = None
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

    results = {}
    for name in names:
        try:
            found = find(name)
            results[name] = {"found": f"{found.__module__}.{found.__qualname__}"}
        except Exception as error:  # a name not found, or a module on the search path that fails
            kind = "missing" if "Could not find requested nnunet trainer" in str(error) else "error"
            results[name] = {kind: f"{type(error).__name__}: {error}"}
    return results


def _probe() -> None:
    """Print, as one JSON line, what a fresh interpreter finds: nnU-Net's lookup, torch, the device.

    Runs in the child process as source text (``python -c``), so it needs nothing of this package:
    it also reports on an interpreter where nnunet-dicephi is not installed. Its arguments: how to
    answer the lookup (:data:`LookupBy`), then the trainer names.
    """
    import contextlib
    import importlib.metadata
    import importlib.util
    import io
    import json
    import os
    import sys

    by, names = sys.argv[1], sys.argv[2:]
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
            package = report["nnunet_path"] = nnunetv2.__path__[0]
            try:  # 2.8 and later also search nnUNet_extTrainer; read from its source, as registration does
                with open(os.path.join(package, "utilities", "find_objects.py"), encoding="utf-8") as handle:
                    report["external_lookup"] = "nnUNet_extTrainer" in handle.read()
            except OSError:  # no find_objects.py: the lookup before 2.8.0
                report["external_lookup"] = False
            if by == "sources":
                ext = os.environ.get("nnUNet_extTrainer")
                try:
                    found = _static_lookup(names, package, report["external_lookup"], ext, _ours(names))
                except Exception as error:  # a folder that cannot be listed, say: nnU-Net's lookup will tell
                    found = {"": {"undecided": f"reading them failed: {type(error).__name__}: {error}"}}
                undecided = [result["undecided"] for result in found.values() if "undecided" in result]
                if undecided:  # nnU-Net's own lookup answers, and the report says why
                    report["lookup_why"] = undecided[0]
                else:
                    report["lookup_by"], report["lookups"] = "sources", found
            if "lookup_by" not in report:
                report["lookup_by"], report["lookups"] = "import", _real_lookup(names)
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


_PROBE_FUNCTIONS = (_module_outcome, _search_folder, _static_lookup, _ours, _real_lookup, _probe)


def probe_source() -> str:
    """The child's program: the probe's functions as source text, then the call."""
    parts = [textwrap.dedent(inspect.getsource(function)) for function in _PROBE_FUNCTIONS]
    return "\n\n".join(["from __future__ import annotations", *parts, "_probe()\n"])


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


def start_probe(python: str, env: Mapping[str, str], by: LookupBy = "sources") -> subprocess.Popen:
    """Start the probe in ``python`` with the environment ``env``; :func:`finish_probe` reads its report."""
    return subprocess.Popen(
        [python, "-c", probe_source(), by, *LOOKUP_NAMES],
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
    """The lookup's finding, with how it was made: read from the sources, or nnU-Net's lookup run."""
    check = _lookup_finding(probe, environ, here)
    by, why = probe.get("lookup_by"), probe.get("lookup_why")
    if by == "sources":
        then = f", then the folders on {EXT_TRAINER}" if probe.get("external_lookup") else ""
        how = (
            f"read from the sources by nnU-Net {probe.get('nnunet', '')}'s rules (its trainer package{then}), "
            "not imported; --thorough runs nnU-Net's lookup itself"
        )
    elif by == "import":
        run = "nnU-Net's own lookup, run as nnUNetv2_train runs it"
        how = f"{run}: the sources could not tell ({why})" if why else f"{run} (--thorough)"
    else:
        how = ""
    return dataclasses.replace(check, how=how)


def _lookup_finding(probe: Mapping[str, Any], environ: Mapping[str, str], here: Here) -> Check:
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
        creator = {"nnUNet_preprocessed": "nnUNetv2_plan_and_preprocess", "nnUNet_results": "nnUNetv2_train"}
        if variable in creator and _creatable(path):
            return Check("ok", variable, f"{value} (does not exist yet: {creator[variable]} creates it)")
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
    in a fresh process with the Python of nnUNetv2_train, finds a preset (TrainerDiceBI) and a
    parametric name (TrainerDiceBI_eps1e-5), and if not why; torch.compile and mixed precision as
    nnU-Net will choose them; nnUNet_raw, nnUNet_preprocessed and nnUNet_results (set, existing,
    writable). Each line says ok, note or problem, with the fix. Exit status 1 when a problem blocks
    training. Takes a few seconds (the check imports torch): the lookup is read from the modules'
    sources by nnU-Net's rules, and run only where they cannot tell or with --thorough.
    """
    print("nnunet-dicephi doctor: can nnUNetv2_train use these trainers here?", flush=True)
    import nnunet_dicephi

    hook_ran_here = HOOK_MODULE in sys.modules  # imported at start-up by the .pth, if at all
    command = shutil.which("nnUNetv2_train")
    python = trainer_command_python(command) or sys.executable
    folder = _lookup_folder()
    env = probe_environment(os.environ, python, hook_ran_here, folder)
    process = start_probe(python, env, "import" if getattr(args, "thorough", False) else "sources")
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


THOROUGH_HELP = (
    "run nnU-Net's trainer lookup itself, importing its trainer package as nnUNetv2_train does (about 5 s "
    "of CPU more), instead of reading the modules' sources by its rules; catches a module that fails at import"
)


def add_parser(verbs: Any) -> None:
    """Add the ``doctor`` and ``info`` verbs to the subparsers of the ``nnunet-dicephi`` command."""
    for name, run in (("doctor", run_doctor), ("info", run_info)):
        add_verb(verbs, name, run).add_argument("--thorough", action="store_true", help=THOROUGH_HELP)
