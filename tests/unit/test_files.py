"""Staging folders and atomic writes: unique names across processes and hosts, the usual permissions,
and what a run killed mid-way leaves behind (the next run for the same target removes it)."""

import contextlib
import os
import socket
import subprocess
import sys

import pytest

from nnunet_dicephi import _files
from nnunet_dicephi._files import replace_folder, staging_folder, write_text_atomically
from nnunet_dicephi.synthetic import write_dataset


@contextlib.contextmanager
def umask(mask: int):
    before = os.umask(mask)
    try:
        yield
    finally:
        os.umask(before)


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()  # reaped: the pid names no process now
    return process.pid


def test_staging_folder_removes_only_what_killed_runs_on_this_host_left(tmp_path):
    host = socket.gethostname()
    target = tmp_path / "Dataset001_Toy"
    left = {
        "killed": tmp_path / f".Dataset001_Toy.staging-{_dead_pid()}@{host}.abc123",
        "running": tmp_path / f".Dataset001_Toy.staging-{os.getpid()}@{host}.def456",
        "other host": tmp_path / f".Dataset001_Toy.staging-{_dead_pid()}@{host}-elsewhere.ghi789",
        "other dataset": tmp_path / f".Dataset002_Toy.staging-{_dead_pid()}@{host}.jkl012",
        "not ours": tmp_path / ".Dataset001_Toy.staging-notes",
    }
    for folder in left.values():
        folder.mkdir()
        (folder / "half.nii.gz").write_bytes(b"")

    staging = staging_folder(target)

    assert staging.parent == tmp_path and staging.is_dir() and not any(staging.iterdir())
    assert staging.name.startswith(f".Dataset001_Toy.staging-{os.getpid()}@{host}.")
    assert {what for what, folder in left.items() if folder.exists()} == set(left) - {"killed"}
    assert not target.exists()


def test_writing_a_dataset_clears_a_killed_run_s_staging_folder(tmp_path):
    killed = tmp_path / f".Dataset007_Blobs.staging-{_dead_pid()}@{socket.gethostname()}.x1y2z3"
    (killed / "imagesTr").mkdir(parents=True)
    folder = write_dataset(tmp_path, 7, "Blobs", cases=2, shape=(4, 12, 12), blob_radius=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder.name]


def test_output_folder_rules(tmp_path):
    from nnunet_dicephi._files import output_folder_problem

    def problem(path, **kwargs):
        return output_folder_problem(path, marker="report.md", command="the report", **kwargs)

    assert problem(tmp_path / "new", force=False) is None
    assert problem(tmp_path / "a" / "b", force=False) is None  # the caller may create parents
    assert "does not exist" in problem(tmp_path / "a" / "b", force=False, parent_must_exist=True)
    (tmp_path / "file").write_text("x")
    assert "is not a folder" in problem(tmp_path / "file", force=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert "pass --force" in problem(other, force=False)
    assert "holds no report.md, so it is not an earlier output of the report" in problem(other, force=True)
    (other / "report.md").write_text("# earlier")
    assert problem(other, force=True) is None


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o755), (0o027, 0o750)], ids=["umask022", "umask027"])
def test_a_published_folder_has_the_mode_mkdir_gives_not_a_private_one(tmp_path, mask, mode):
    target = tmp_path / "Dataset001_Toy"
    with umask(mask):
        staging = staging_folder(target)
        (staging / "imagesTr").mkdir()
        replace_folder(staging, target)
    assert target.stat().st_mode & 0o777 == mode
    assert (target / "imagesTr").stat().st_mode & 0o777 == mode


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600)], ids=["umask022", "umask077"])
def test_an_atomically_written_file_has_the_mode_open_gives(tmp_path, mask, mode):
    with umask(mask):
        write_text_atomically(tmp_path / "state.json", "{}")
    assert (tmp_path / "state.json").stat().st_mode & 0o777 == mode
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_writers_with_equal_pids_on_one_shared_file_system_do_not_collide(tmp_path, monkeypatch):
    """Two nodes whose processes have the same pid: one writes while the other is between write and rename."""
    path = tmp_path / "state.json"
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    rename = os.replace
    other_node_wrote = []

    def replace_after_the_other_node(source, destination):
        if not other_node_wrote:
            other_node_wrote.append(True)
            write_text_atomically(path, "the other node's state")
        rename(source, destination)

    monkeypatch.setattr(_files.os, "replace", replace_after_the_other_node)
    write_text_atomically(path, "this node's state")
    assert path.read_text() == "this node's state"  # renamed last
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    path.write_text("old")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_files.os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_text_atomically(path, "new")
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["state.json"]
