"""The experiment spec of the end-to-end grids: nnU-Net's folders beside the spec, CPU, one process each."""

import os
import signal
from pathlib import Path

GRID_SPEC = """\
[experiment]
name = "{name}"
output = {output}

[environment]
nnUNet_raw = "raw"
nnUNet_preprocessed = "preprocessed"
nnUNet_results = "results"
device = "cpu"

[environment.variables]
# one process everywhere: two cores, shared by the jobs
nnUNet_n_proc_DA = "1"
nnUNet_def_n_proc = "1"
OMP_NUM_THREADS = "1"
{resources}
[report]
n_resamples = 200

[[dataset]]
{dataset}
"""


def grid_spec(*, name: str, output: str, dataset: str, resources: str = "") -> str:
    """The spec's text; ``output`` is a TOML string (quoted), ``resources`` TOML tables or nothing."""
    return GRID_SPEC.format(name=name, output=output, dataset=dataset, resources=resources)


def write_grid_datasets(root):
    """``root/raw``: Dataset901_Blobs (5 cases) and Dataset902_Broken, whose missing label nnU-Net refuses."""
    from nnunet_dicephi.synthetic import write_dataset

    write_dataset(root / "raw", 901, "Blobs", cases=5)
    broken = write_dataset(root / "raw", 902, "Broken", cases=5, seed=1)
    (broken / "labelsTr" / "case_001.nii.gz").unlink()
    return root


def small_grid(root) -> str:
    """The ``[[dataset]]`` of the small grid: Dataset901_Blobs × 2 trainers × fold 0, its images as test set."""
    raw = root / "raw" / "Dataset901_Blobs"
    return f"""id = 901
configurations = ["2d"]
trainers = ["TrainerDiceI_ep2_it2", "TrainerDiceIEps_ep2_it2"]
folds = [0]
test_images = "{raw / "imagesTr"}"
test_labels = "{raw / "labelsTr"}"
"""


def sigterm_pending(pid: int) -> bool:
    """Whether SIGTERM waits to be delivered to the (stopped) process ``pid``, or it is gone (Linux's /proc)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    pending = int(fields["ShdPnd"], 16) | int(fields["SigPnd"], 16)
    return bool(pending & (1 << (signal.SIGTERM - 1)))


def training_group(trainer: str) -> int:
    """The process group of the ``nnUNetv2_train … -tr trainer`` that leads its own group (Linux's /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
            pid = int(entry.name)
            leads = os.getpgid(pid) == pid
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if leads and trainer.encode() in argv and any(a.endswith(b"nnUNetv2_train") for a in argv):
            return pid
    raise LookupError(f"no running nnUNetv2_train of {trainer} leads a process group")
