import contextlib
import os
import shutil

import pytest
import torch
from hypothesis import settings

settings.register_profile("default", deadline=None, max_examples=60)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def random_case(batch=3, classes=4, spatial=(5, 6), dtype=torch.float64, seed=0, empty=()):
    """Softmax probabilities, a label map and its one-hot; classes in ``empty`` never labelled."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, classes, *spatial, generator=g, dtype=dtype)
    labels = torch.randint(0, classes, (batch, 1, *spatial), generator=g)
    for c in empty:
        labels[labels == c] = 0
    onehot = torch.zeros_like(logits).scatter_(1, labels, 1.0)
    return logits.softmax(1), labels, onehot


CUDA_SKIP_REASON = "no CUDA device here; scripts/gpu_check.sh runs these tests on one"
NO_CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason=CUDA_SKIP_REASON)
DEVICES = ["cpu", pytest.param("cuda", marks=NO_CUDA)]


@contextlib.contextmanager
def module_folder(tmp_path_factory, request, name: str):
    """A module-scoped fixture's folder: removed when the module ends with no new failure, kept for a
    look otherwise (what ``tmp_path_retention_policy = "failed"`` does for a test's own folder)."""
    failed_before = request.session.testsfailed
    folder = tmp_path_factory.mktemp(name)
    yield folder
    if request.session.testsfailed == failed_before:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=DEVICES)
def device(request):
    """Every device-parametrised test runs on the CPU, and on CUDA where there is a GPU."""
    return torch.device(request.param)


# --- layers: the unit layer runs first (testpaths), and a failure there stops the run before the
# end-to-end layer, which takes most of CI's time and would only fail again for the same reason

_unit_failures: list[str] = []


def pytest_runtest_logreport(report):
    if report.failed and "e2e" not in report.keywords:
        _unit_failures.append(report.nodeid)


def pytest_runtest_teardown(item, nextitem):
    if (
        _unit_failures
        and nextitem is not None
        and nextitem.get_closest_marker("e2e")
        and not item.get_closest_marker("e2e")
    ):
        item.session.shouldstop = (
            f"{len(_unit_failures)} unit test(s) failed (first: {_unit_failures[0]}); the end-to-end layer was not run"
        )


@pytest.fixture
def nnunet_folders(tmp_path, monkeypatch):
    """Empty nnUNet_raw, nnUNet_preprocessed and nnUNet_results under tmp_path, exported for the test."""
    folders = {key: tmp_path / key for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    for key, folder in folders.items():
        folder.mkdir()
        monkeypatch.setenv(key, str(folder))
    return folders


def raw_arrays(folder):
    """Every image and label of a raw dataset folder, by ``<subfolder>/<file>``."""
    import SimpleITK as sitk

    return {
        f"{path.parent.name}/{path.name}": sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
        for path in sorted((folder / sub).glob("*.nii.gz"))
    }
