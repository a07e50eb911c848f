"""``nnunet-dicephi register`` / ``unregister``: the trainers for nnU-Net releases without ``nnUNet_extTrainer``.

nnU-Net's stock commands find a trainer by importing every module under its own package
``nnunetv2/training/nnUNetTrainer`` and asking each ``hasattr(module, name)``. From 2.8.0 they also
search the folders on ``nnUNet_extTrainer``, which this package's start-up hook sets
(:mod:`nnunet_dicephi._register`); 2.6 and 2.7 search their own package only. ``register`` places
one module of re-exports there, ``variants/dicephi_trainers.py``; ``unregister`` removes it again.

The module holds no logic: the classes stay in :mod:`nnunet_dicephi.trainers`, so they keep their
canonical module and pickle, and its module-level ``__getattr__`` (re-exported; ``import *`` skips
dunders) makes every parametric name visible to ``hasattr``. It carries a marker line: ``unregister``
removes only a file that has it, and ``register`` never overwrites one that lacks it. If
nnunet-dicephi is uninstalled while the file is registered, the file imports nothing and stays out of
nnU-Net's way, since its lookup stops at the first module that fails to import.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nnunet_dicephi._cli import add_verb, refuse
from nnunet_dicephi._files import write_text_atomically
from nnunet_dicephi._problems import InputError

MODULE_FILE = "dicephi_trainers.py"
"""The registered module's name inside nnU-Net's ``training/nnUNetTrainer/variants`` folder."""
MARKER = "# nnunet-dicephi: registered trainer module; `nnunet-dicephi unregister` removes it"
"""The line that marks the file as this package's (``unregister`` checks for it)."""

MODULE_TEXT = f'''{MARKER}
"""nnunet-dicephi's trainers for nnU-Net's own lookup: re-exports only (written by ``nnunet-dicephi register``).

The classes live in ``nnunet_dicephi.trainers``; its ``__getattr__`` builds every parametric name on
demand. Remove this file with ``nnunet-dicephi unregister`` (or delete it: nothing else refers to it).
"""

try:
    from nnunet_dicephi.trainers import *  # noqa: F403 - the presets
    from nnunet_dicephi.trainers import __getattr__  # noqa: F401 - parametric names; not copied by import *
except ModuleNotFoundError as error:
    # nnunet-dicephi was uninstalled without unregistering: stay importable, so that nnU-Net's
    # lookup, which stops at a module that fails to import, still finds its other trainers
    if error.name != "nnunet_dicephi":
        raise
'''


class RegistrationError(InputError):
    """The module cannot be placed or removed; the message says why and what to do."""


@dataclass(frozen=True)
class NnUNet:
    """Where the nnU-Net that ``nnUNetv2_*`` would import is installed, and what its lookup can do."""

    package: Path
    """The ``nnunetv2`` package folder."""
    version: str | None
    """Its release, from the metadata beside it (None for a source checkout without metadata)."""
    external_lookup: bool
    """Whether its lookup also searches ``nnUNet_extTrainer`` (nnU-Net 2.8.0 and later)."""

    @property
    def folder(self) -> Path:
        """nnU-Net's trainer variants folder, which its lookup imports module by module."""
        return self.package / "training" / "nnUNetTrainer" / "variants"

    @property
    def module_path(self) -> Path:
        return self.folder / MODULE_FILE

    @property
    def name(self) -> str:
        return f"nnU-Net {self.version}" if self.version else f"nnU-Net at {self.package}"


def find_nnunet() -> NnUNet:
    """The ``nnunetv2`` this interpreter imports, found without importing it (nor torch)."""
    spec = importlib.util.find_spec("nnunetv2")
    if spec is None or not spec.submodule_search_locations:
        raise RegistrationError("nnU-Net (nnunetv2) is not installed in this environment: pip install nnunetv2")
    return describe(Path(next(iter(spec.submodule_search_locations))))


def describe(package: str | os.PathLike) -> NnUNet:
    """The :class:`NnUNet` of the ``nnunetv2`` package folder ``package``.

    The external-trainer lookup is detected from the source rather than the version number, so a
    checkout between releases is judged by what it does.
    """
    package = Path(package).resolve()
    finder = package / "utilities" / "find_objects.py"
    try:
        external = "nnUNet_extTrainer" in finder.read_text(encoding="utf-8")
    except OSError:  # no find_objects.py: the lookup before 2.8.0
        external = False
    return NnUNet(package, _version_beside(package), external)


def _version_beside(package: Path) -> str | None:
    """The version in the metadata installed beside ``package`` (pip's ``--target`` folders included)."""
    for distribution in importlib.metadata.distributions(name="nnunetv2", path=[str(package.parent)]):
        return distribution.version
    return None


def is_registered(nnunet: NnUNet) -> bool:
    """Whether the variants folder holds this package's module (with the marker)."""
    return _owned(nnunet.module_path)


def _owned(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return any(line.rstrip("\r\n") == MARKER for line in handle)
    except OSError:  # missing, a folder, unreadable: not a file this package wrote
        return False


def _check_writable(nnunet: NnUNet, verb: str) -> None:
    if not nnunet.folder.is_dir():
        raise RegistrationError(
            f"{nnunet.folder} is missing: {nnunet.name} does not have the trainer package layout this "
            "command knows; it needs nnU-Net 2.6 or later"
        )
    if not os.access(nnunet.folder, os.W_OK | os.X_OK):
        raise RegistrationError(
            f"cannot {verb}: {nnunet.folder} (nnU-Net's trainer package) is not writable by this user; "
            "run the command as the owner of this Python environment (the user who installed nnU-Net)"
        )


def register(nnunet: NnUNet | None = None, *, force: bool = False) -> str:
    """Place the re-export module into nnU-Net's trainer package; returns what was done, in one line.

    On nnU-Net 2.8.0 and later nothing is placed unless ``force``: the start-up hook already puts
    this package's lookup folder on ``nnUNet_extTrainer``. Repeating it changes nothing; a file of
    the same name that is not this package's is left alone (:class:`RegistrationError`).
    """
    nnunet = nnunet or find_nnunet()
    path = nnunet.module_path
    if nnunet.external_lookup and not force:
        return (
            f"{nnunet.name} finds the trainers through nnUNet_extTrainer, which this installation sets at start-up: "
            "nothing to register (--force places the module anyway, e.g. with NNUNET_DICEPHI_NO_REGISTER=1)"
        )
    if path.exists() and not _owned(path):
        raise RegistrationError(
            f"{path} exists and is not nnunet-dicephi's (no marker line): left alone; rename it to register"
        )
    if path.is_file() and path.read_text(encoding="utf-8") == MODULE_TEXT:
        return f"already registered with {nnunet.name}: {path}"
    _check_writable(nnunet, "register")
    try:
        write_text_atomically(path, MODULE_TEXT)
    except PermissionError as error:
        raise RegistrationError(f"cannot register: {error}") from None
    return f"registered with {nnunet.name}: {path} (undo with: nnunet-dicephi unregister)"


def unregister(nnunet: NnUNet | None = None) -> str:
    """Remove the module that :func:`register` placed; returns what was done, in one line.

    Only a file with the marker line is removed (with its compiled copies); without one there is
    nothing to do, and a foreign file of the same name is left alone (:class:`RegistrationError`).
    """
    nnunet = nnunet or find_nnunet()
    path = nnunet.module_path
    if not path.exists():
        return f"not registered with {nnunet.name}: {path} does not exist"
    if not _owned(path):
        raise RegistrationError(f"{path} is not nnunet-dicephi's (no marker line): left alone")
    _check_writable(nnunet, "unregister")
    try:
        path.unlink()
    except FileNotFoundError:  # removed meanwhile by another unregister
        pass
    except PermissionError as error:
        raise RegistrationError(f"cannot unregister: {error}") from None
    for compiled in (nnunet.folder / "__pycache__").glob(f"{path.stem}.*.pyc"):
        with contextlib.suppress(OSError):
            compiled.unlink()
    return f"unregistered from {nnunet.name}: removed {path}"


def run_register(args: argparse.Namespace) -> int:
    """Let nnU-Net 2.6 and 2.7 find this package's trainers (2.8 and later find them already).

    Places one module of re-exports, variants/dicephi_trainers.py, in the trainer package of the
    nnU-Net this Python imports, so that nnUNetv2_train, nnUNetv2_predict and the others find
    TrainerDiceBI and every other name. Needs write access to nnU-Net's installation; running it
    again changes nothing; nnunet-dicephi unregister removes the module. Exit status 2 when it
    cannot be placed.
    """
    try:
        print(register(force=args.force))
    except RegistrationError as error:
        return refuse("register", error)
    return 0


def run_unregister(args: argparse.Namespace) -> int:
    """Remove the module that nnunet-dicephi register placed in nnU-Net's trainer package.

    Removes only the file that register wrote (it carries a marker line); running it again changes
    nothing. Run it before uninstalling nnunet-dicephi. Exit status 2 when the file cannot be removed.
    """
    try:
        print(unregister())
    except RegistrationError as error:
        return refuse("unregister", error)
    return 0


def add_parser(verbs: Any) -> None:
    """Add the ``register`` and ``unregister`` verbs to the subparsers of the ``nnunet-dicephi`` command."""
    parser = add_verb(verbs, "register", run_register)
    parser.add_argument(
        "--force",
        action="store_true",
        help="place the module on nnU-Net 2.8 and later too (where the start-up hook is switched off or not run)",
    )
    add_verb(verbs, "unregister", run_unregister)
