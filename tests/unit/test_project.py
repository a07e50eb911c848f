"""The README's two commands are what CI runs, and the console script answers."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _command(which):
    out = subprocess.run(
        [sys.executable, str(ROOT / ".ci" / "readme_command.py"), which], capture_output=True, text=True, check=True
    )
    return out.stdout.strip()


def test_readme_has_the_two_fresh_machine_commands():
    main, test = _command("main"), _command("test")
    assert main.startswith("python3 -m venv .venv") and "pip install ." in main
    assert main.endswith("nnunet-dicephi demo -o dicephi_demo")
    assert "pip install -e '.[test]'" in test and test.endswith("pytest")


def test_ci_runs_the_readme_test_command():
    text = (ROOT / ".ci" / "run").read_text()
    assert "readme_command.py test" in text


def test_console_script_info():
    from nnunet_dicephi.cli import main

    assert main(["info"]) == 0


def test_one_version_and_its_changelog_entry():
    import re

    import nnunet_dicephi
    from nnunet_dicephi.loss_config import SEMANTICS

    declared = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M)[1]
    assert declared == nnunet_dicephi.__version__
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert f"## {declared} — loss semantics {SEMANTICS}" in changelog


def test_the_conventions_page_covers_every_loss():
    import inspect

    from nnunet_dicephi import losses

    page = (ROOT / "docs" / "conventions.md").read_text()
    names = [
        name
        for name in losses.__all__
        if (name.endswith("_loss") or name.endswith("_entropy"))
        or (inspect.isclass(getattr(losses, name)) and name.endswith("Loss") and name != "SegmentationLoss")
    ]
    assert len(names) > 20
    missing = [name for name in names if f"`{name}`" not in page]
    assert not missing, f"docs/conventions.md does not name {missing}"


def test_every_direct_dependency_is_declared():
    """Third-party modules the package imports are in pyproject's dependencies, not borrowed from nnU-Net's."""
    import ast
    import re
    from importlib.metadata import packages_distributions

    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^dependencies = \[(.*?)^\]", text, re.M | re.S)[1]
    declared = {
        re.split(r"[<>=;\[ ]", line.strip().strip('",'))[0].lower() for line in block.splitlines() if '"' in line
    }
    stdlib = set(sys.stdlib_module_names)
    distributions = packages_distributions()
    imported = set()
    for path in (ROOT / "nnunet_dicephi").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                imported.add(node.module.split(".")[0])
    third_party = sorted(name for name in imported - stdlib - {"nnunet_dicephi", "tomli"} if name in distributions)
    assert "torch" in third_party and "pandas" in third_party
    undeclared = {
        name: distributions[name] for name in third_party if not {d.lower() for d in distributions[name]} & declared
    }
    assert not undeclared, f"imported but not declared in pyproject's dependencies: {undeclared}"


@pytest.mark.slow
def test_a_unit_failure_stops_the_run_before_the_end_to_end_layer(tmp_path):
    (tmp_path / "tests" / "unit").mkdir(parents=True)
    (tmp_path / "tests" / "e2e").mkdir()
    (tmp_path / "tests" / "conftest.py").write_text((ROOT / "tests" / "conftest.py").read_text())
    (tmp_path / "tests" / "unit" / "test_u.py").write_text(
        "def test_ok():\n    pass\n\ndef test_broken():\n    assert 0\n"
    )
    e2e = "import pytest\npytestmark = pytest.mark.e2e\n\ndef test_slow():\n    pass\n"
    (tmp_path / "tests" / "e2e" / "test_e.py").write_text(e2e)
    options = '[tool.pytest.ini_options]\ntestpaths = ["tests/unit", "tests/e2e"]\nmarkers = ["e2e: slow"]\n'
    (tmp_path / "pyproject.toml").write_text(options)
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode != 0  # 2: pytest reports the stop as an interruption
    assert "1 failed, 1 passed" in run.stdout and "test_slow" not in run.stdout
    assert "the end-to-end layer was not run" in run.stdout
    (tmp_path / "tests" / "unit" / "test_u.py").write_text("def test_ok():\n    pass\n")
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider"], cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0 and "2 passed" in run.stdout


@pytest.mark.slow
def test_the_typed_api_type_checks(tmp_path):
    """mypy over the loss package and the loss configuration (``[tool.mypy]`` in pyproject)."""
    run = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "Success" in run.stdout


def test_shared_cli_helpers():
    import argparse

    from nnunet_dicephi._cli import int_at_least, refuse

    at_least_two = int_at_least(2)
    assert at_least_two("7") == 7
    for text, message in (("1", "must be at least 2; got 1"), ("x", "expected an integer >= 2; got 'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            at_least_two(text)
    assert refuse("report", "no such folder") == 2


def test_one_problems_collector():
    from nnunet_dicephi._problems import Problems, one_message

    assert one_message("bad input", ["a"]) == "bad input: a"
    assert one_message("bad input", ["a", "b"]) == "bad input (2 problems):\n  - a\n  - b"
    problems = Problems("cannot build the report", KeyError)
    problems.raise_if_any()  # nothing yet
    problems.add("no predictions in x")
    with pytest.raises(KeyError, match="cannot build the report: no predictions in x"):
        problems.raise_if_any()


def test_links_between_the_documents_resolve():
    import re

    pages = [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) > 10
    broken = [
        (page.name, target)
        for page in pages
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
        if not target.startswith("http") and not (page.parent / target).exists()
    ]
    assert not broken, broken
