"""``nnunet-dicephi register`` / ``unregister`` on fake nnU-Net installations in tmp_path.

A fake installation has nnU-Net's package layout (``<pkg>/training/nnUNetTrainer/variants``) under a
unique package name, so that nnU-Net's own recursive lookup can import it beside the real nnunetv2.
"""

import argparse
import contextlib
import os
import subprocess
import sys

import pytest

import nnunet_dicephi.trainers as T
from nnunet_dicephi import registration
from nnunet_dicephi.registration import MARKER, MODULE_FILE, MODULE_TEXT, RegistrationError, describe


def _fake_nnunet(root, name, *, version=None, external_lookup=False):
    package = root / name
    trainers = package / "training" / "nnUNetTrainer"
    (trainers / "variants").mkdir(parents=True)
    for folder in (package, package / "training", trainers, trainers / "variants"):
        (folder / "__init__.py").write_text("")
    (trainers / "nnUNetTrainer.py").write_text("class nnUNetTrainer:\n    pass\n")
    (package / "utilities").mkdir()
    lookup = "import os\nos.environ.get('nnUNet_extTrainer')\n" if external_lookup else "# the lookup before 2.8\n"
    (package / "utilities" / "find_objects.py").write_text(lookup)
    if version is not None:
        info = root / f"nnunetv2-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: nnunetv2\nVersion: {version}\n")
    return describe(package)


@pytest.fixture
def fake(tmp_path, monkeypatch, request):
    """nnU-Net 2.6.0's layout: no nnUNet_extTrainer lookup; importable as a package of its own name."""
    name = f"fake_nnunetv2_{abs(hash(request.node.nodeid)) % 10**8}"
    monkeypatch.syspath_prepend(str(tmp_path))
    nnunet = _fake_nnunet(tmp_path, name, version="2.6.0")
    yield nnunet
    nnunet.folder.chmod(0o755)
    for module in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[module]


def test_describe_reads_the_version_beside_the_package_and_the_lookup_from_its_source(tmp_path):
    old = _fake_nnunet(tmp_path / "a", "nnunetv2", version="2.6.0")
    new = _fake_nnunet(tmp_path / "b", "nnunetv2", version="2.8.1", external_lookup=True)
    checkout = _fake_nnunet(tmp_path / "c", "nnunetv2")
    assert (old.version, old.external_lookup) == ("2.6.0", False)
    assert (new.version, new.external_lookup) == ("2.8.1", True)
    assert checkout.version is None and checkout.name == f"nnU-Net at {checkout.package}"
    assert old.module_path == tmp_path / "a" / "nnunetv2" / "training" / "nnUNetTrainer" / "variants" / MODULE_FILE


def test_register_places_a_module_that_nnunets_own_lookup_finds(fake):
    from nnunetv2.utilities.find_class_by_name import recursive_find_python_class

    message = registration.register(fake)
    assert message.startswith("registered with nnU-Net 2.6.0") and str(fake.module_path) in message
    assert fake.module_path.read_text() == MODULE_TEXT and MARKER in MODULE_TEXT.splitlines()
    assert registration.is_registered(fake)
    # nnU-Net < 2.8 imports every module below its trainer package by dotted name and asks hasattr
    package = fake.package.name
    trainers = str(fake.package / "training" / "nnUNetTrainer")
    for name in ("TrainerDiceBI", "TrainerDiceBI_eps1e-5_CE_ep1_it2"):
        found = recursive_find_python_class(trainers, name, f"{package}.training.nnUNetTrainer")
        assert found is getattr(T, name)  # the canonical class: it pickles and is nnU-Net's subclass
        assert found.__module__ == "nnunet_dicephi.trainers"
    assert recursive_find_python_class(trainers, "nnUNetTrainer_5epochs", f"{package}.training.nnUNetTrainer") is None


def test_register_and_unregister_are_idempotent(fake):
    registration.register(fake)
    before = fake.module_path.stat()
    assert registration.register(fake).startswith("already registered with nnU-Net 2.6.0")
    after = fake.module_path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)

    # an earlier version's module (marker, other text) is replaced
    fake.module_path.write_text(MARKER + "\nfrom nnunet_dicephi.trainers import TrainerDiceBI\n")
    assert registration.register(fake).startswith("registered")
    assert fake.module_path.read_text() == MODULE_TEXT

    compiled = fake.folder / "__pycache__" / "dicephi_trainers.cpython-311.pyc"
    compiled.parent.mkdir()
    compiled.write_bytes(b"")
    assert registration.unregister(fake).startswith("unregistered from nnU-Net 2.6.0")
    assert not fake.module_path.exists() and not compiled.exists()
    assert sorted(p.name for p in fake.folder.iterdir()) == ["__init__.py", "__pycache__"]
    assert registration.unregister(fake).startswith("not registered with nnU-Net 2.6.0")
    assert not registration.is_registered(fake)


def test_a_foreign_file_of_the_same_name_is_left_alone(fake):
    foreign = "class TrainerDiceBI:  # someone's own trainer\n    pass\n"
    fake.module_path.write_text(foreign)
    with pytest.raises(RegistrationError, match="is not nnunet-dicephi's .no marker line.: left alone"):
        registration.register(fake)
    with pytest.raises(RegistrationError, match="is not nnunet-dicephi's .no marker line.: left alone"):
        registration.unregister(fake)
    assert fake.module_path.read_text() == foreign and not registration.is_registered(fake)


@contextlib.contextmanager
def _read_only(fake):
    fake.folder.chmod(0o555)
    with pytest.MonkeyPatch.context() as patch:
        if hasattr(os, "geteuid") and os.geteuid() == 0:  # root writes anyway: simulate what others see
            patch.setattr(registration.os, "access", lambda path, mode: False)
        yield
    fake.folder.chmod(0o755)


def test_refuses_when_nnunet_is_not_writable(fake):
    with _read_only(fake), pytest.raises(RegistrationError, match=r"cannot register: .*\(nnU-Net's trainer package\)"):
        registration.register(fake)
    assert not fake.module_path.exists()
    assert sorted(p.name for p in fake.folder.iterdir()) == ["__init__.py"]  # no temporary file either

    registration.register(fake)
    with _read_only(fake), pytest.raises(RegistrationError, match="cannot unregister: .* is not writable by this user"):
        registration.unregister(fake)
    assert registration.is_registered(fake)


def test_nnunet_28_needs_no_module_unless_forced(tmp_path):
    nnunet = _fake_nnunet(tmp_path, "nnunetv2", version="2.8.1", external_lookup=True)
    message = registration.register(nnunet)
    assert "nnU-Net 2.8.1 finds the trainers through nnUNet_extTrainer" in message and "--force" in message
    assert not nnunet.module_path.exists()
    assert registration.register(nnunet, force=True).startswith("registered with nnU-Net 2.8.1")
    assert registration.is_registered(nnunet)


def test_the_installed_nnunet_is_found_and_left_unchanged():
    import nnunetv2

    nnunet = registration.find_nnunet()
    assert nnunet.package == describe(os.path.dirname(nnunetv2.__file__)).package
    if nnunet.external_lookup:  # this environment's nnU-Net >= 2.8: register writes nothing into it
        assert "nothing to register" in registration.register()
        assert not nnunet.module_path.exists()


def test_the_module_imports_nothing_once_nnunet_dicephi_is_uninstalled(fake):
    registration.register(fake)
    # -S: no site-packages, so nnunet_dicephi (and torch) cannot be imported, as after an uninstall
    result = subprocess.run(
        [sys.executable, "-S", str(fake.module_path)], capture_output=True, text=True, check=False, cwd=fake.folder
    )
    assert result.returncode == 0, result.stderr
    # any other import error is not hidden
    broken = fake.folder / "broken.py"
    broken.write_text(MODULE_TEXT.replace("from nnunet_dicephi.trainers import *", "import no_such_module_here"))
    result = subprocess.run([sys.executable, "-S", str(broken)], capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "No module named 'no_such_module_here'" in result.stderr


def _verbs(argv, fake, monkeypatch, capsys):
    monkeypatch.setattr(registration, "find_nnunet", lambda: fake)
    parser = argparse.ArgumentParser(prog="nnunet-dicephi")
    registration.add_parser(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(argv)
    status = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


def test_the_verbs_print_one_line_and_refuse_with_status_2(fake, monkeypatch, capsys):
    status, out, _ = _verbs(["register"], fake, monkeypatch, capsys)
    assert status == 0 and out.startswith("registered with nnU-Net 2.6.0") and registration.is_registered(fake)
    status, out, _ = _verbs(["unregister"], fake, monkeypatch, capsys)
    assert status == 0 and out.startswith("unregistered from nnU-Net 2.6.0")
    fake.module_path.write_text("# someone else's\n")
    status, out, err = _verbs(["unregister"], fake, monkeypatch, capsys)
    assert status == 2 and out == "" and err.startswith("nnunet-dicephi unregister: error: ")
    status, _, err = _verbs(["register", "--force"], fake, monkeypatch, capsys)
    assert status == 2 and err.startswith("nnunet-dicephi register: error: ")
