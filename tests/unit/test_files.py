"""Staging folders: a run killed mid-way leaves one behind; the next run for the same target removes it."""

import os
import socket
import subprocess
import sys

from nnunet_dicephi._files import staging_folder
from nnunet_dicephi.synthetic import write_dataset


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
