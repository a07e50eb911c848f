"""A run's statistics follow from its own data: the fingerprint, the cache keyed by it, and what --c checks."""

import json
import threading
import types

import numpy as np
import pytest
import torch

from nnunet_dicephi import statistics
from nnunet_dicephi.loss_config import parse_trainer_name
from nnunet_dicephi.statistics import DatasetStatistics, SamplingModel, data_fingerprint, fingerprint_changes
from nnunet_dicephi.trainers import trainer_class

LABELS = {"background": 0, "a": 1, "b": 2}
MANIFEST = {"cases": {"c0": ["a"], "c1": ["a", "b"], "c2": ["a", "b"]}}


def _write_case(folder, case, seg):
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2

    seg = np.asarray(seg, dtype=np.int8)[None]
    for stale in folder.glob(f"{case}[._]*"):  # blosc2 does not overwrite; nnU-Net writes a fresh folder
        stale.unlink()
    shape = seg.shape
    nnUNetDatasetBlosc2.save_case(np.zeros(shape, np.float32), seg, {}, str(folder / case), chunks=shape, blocks=shape)


def _segmentation(case_index, size=2):
    seg = np.zeros((1, 16, 16), np.int8)
    seg[0, 2 : 2 + size + case_index, 3:9] = 1
    seg[0, 10:14, 10 : 10 + size] = 2
    return seg


@pytest.fixture
def preprocessed(tmp_path):
    """nnUNet_preprocessed/Dataset001_X with a 2d configuration of three cases, blosc2 as nnU-Net writes it."""
    base = tmp_path / "Dataset001_X"
    folder = base / "nnUNetPlans_2d"
    folder.mkdir(parents=True)
    for index in range(3):
        _write_case(folder, f"c{index}", _segmentation(index))
    return base, folder


def _fingerprint(folder, manifest=MANIFEST, cases=("c0", "c1", "c2")):
    return data_fingerprint(folder, cases, manifest=manifest, labels=LABELS, plans={"patch_size": [16, 16]}, fold=0)


def test_fingerprint_follows_the_label_maps_the_manifest_and_the_cases(preprocessed):
    _, folder = preprocessed
    first = _fingerprint(folder)
    assert _fingerprint(folder) == first  # the same bytes, the same fingerprint
    _write_case(folder, "c1", _segmentation(1, size=3))  # labels fixed, preprocessed again
    relabelled = _fingerprint(folder)
    assert relabelled["fingerprint"] != first["fingerprint"]
    assert fingerprint_changes(first, relabelled) == ["the preprocessed label maps of the fold's training cases"]
    edited = _fingerprint(folder, manifest={"cases": {**MANIFEST["cases"], "c0": ["a", "b"]}})
    assert fingerprint_changes(relabelled, edited) == ["the partial-label manifest"]
    fewer = _fingerprint(folder, cases=("c0", "c1"))
    assert "the fold's training cases" in fingerprint_changes(relabelled, fewer)


def test_fingerprint_of_numpy_cases_ignores_the_unpacked_copy(tmp_path):
    seg = _segmentation(0)
    np.savez_compressed(tmp_path / "c0.npz", data=np.zeros_like(seg, np.float32), seg=seg)
    (tmp_path / "c0.pkl").write_bytes(b"properties")
    before = data_fingerprint(tmp_path, ["c0"], manifest=None, labels=LABELS, plans={}, fold=0)
    np.save(tmp_path / "c0_seg.npy", seg)  # what a training unpacks
    assert data_fingerprint(tmp_path, ["c0"], manifest=None, labels=LABELS, plans={}, fold=0) == before


def test_fingerprint_names_a_case_without_a_label_map(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"no preprocessed label map for case 'c9'.*nnUNetv2_plan_and_preprocess"
    ):
        data_fingerprint(tmp_path, ["c9"], manifest=None, labels=LABELS, plans={}, fold=0)


def _statistics(value):
    return DatasetStatistics(("0", "1"), (100.0 - value, value), 100, cases=2)


def test_cache_keeps_concurrent_folds_apart(tmp_path):
    """Two folds that miss the cache at once both keep their entry (one file per key)."""
    both_computing = threading.Barrier(2)
    paths = {fold: statistics.cache_path(tmp_path, f"fold{fold}", {"fold": fold}) for fold in (0, 1)}

    def compute(fold):
        both_computing.wait(timeout=60)  # both have read the cache and found nothing
        return _statistics(float(fold + 1))

    threads = [
        threading.Thread(target=statistics.cached, args=(paths[f], {"fold": f}, lambda f=f: compute(f))) for f in (0, 1)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for fold in (0, 1):
        stats, hit = statistics.cached(paths[fold], {"fold": fold}, lambda: pytest.fail("recomputed"))
        assert hit and stats.expected_volume == (99.0 - fold, fold + 1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.rsplit("/", 1)[1] for p in paths.values())


@pytest.mark.parametrize("content", ['{"key": {"fold": 0}, "statis', "[]", '{"key": {"fold": 1}, "statistics": {}}'])
def test_a_corrupt_or_foreign_cache_file_is_a_named_miss(tmp_path, content):
    path = statistics.cache_path(tmp_path, "fold0", {"fold": 0})
    with open(path, "w") as handle:
        handle.write(content)
    logged = []
    stats, hit = statistics.cached(path, {"fold": 0}, lambda: _statistics(5.0), log=logged.append)
    assert not hit and stats.expected_volume == (95.0, 5.0)
    assert len(logged) == 1 and path in logged[0] and "computing the statistics again" in logged[0]
    assert statistics.cached(path, {"fold": 0}, lambda: pytest.fail("recomputed"))[1]  # rewritten whole


# --- the trainer over a real preprocessed folder -------------------------------------------------


def _trainer(name, base, folder, tmp_path, manifest=MANIFEST):
    from nnunetv2.training.dataloading.nnunet_dataset import nnUNetDatasetBlosc2
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    trainer = object.__new__(trainer_class(name))
    trainer.fold, trainer.configuration_name = 0, "2d"
    trainer.dataset_json = {"labels": LABELS, "dicephi_partial_labels": manifest}
    trainer.preprocessed_dataset_folder, trainer.preprocessed_dataset_folder_base = str(folder), str(base)
    trainer.plans_manager = types.SimpleNamespace(plans_name="nnUNetPlans")
    trainer.configuration_manager = types.SimpleNamespace(configuration={"patch_size": [16, 16]})
    trainer.label_manager = LabelManager(LABELS, regions_class_order=None)
    trainer.dataset_class = nnUNetDatasetBlosc2
    trainer.do_split = lambda: (["c0", "c1", "c2"], [])
    trainer._sampling_model = lambda: SamplingModel((1, 16, 16), (1, 16, 16), 2, 0.33)
    trainer._level_scales = lambda: [1.0]
    trainer.output_folder, trainer.was_initialized, trainer.is_ddp = str(tmp_path / "fold_0"), False, False
    trainer.logged = []
    trainer.print_to_log_file = lambda *args, **kwargs: trainer.logged.append(" ".join(map(str, args)))
    return trainer


@pytest.fixture
def counted(monkeypatch):
    calls = []
    original = statistics.compute_statistics
    monkeypatch.setattr(statistics, "compute_statistics", lambda *a, **k: (calls.append(1), original(*a, **k))[1])
    return calls


def test_relabelled_data_is_computed_again_and_the_cache_serves_the_same_data(preprocessed, tmp_path, counted):
    base, folder = preprocessed
    first = _trainer("TrainerDiceIEps", base, folder, tmp_path).resolved_eps()[0]
    assert _trainer("TrainerDiceIEps", base, folder, tmp_path).resolved_eps()[0] == first and len(counted) == 1
    _write_case(folder, "c1", _segmentation(1, size=5))  # labels fixed, nnUNetv2_plan_and_preprocess again
    relabelled = _trainer("TrainerDiceIEps", base, folder, tmp_path).resolved_eps()[0]
    # the patch is the whole image, so each case contributes its count; b is annotated in c1 and c2 only
    assert first[2] == pytest.approx((8 + 8) / 2)
    assert len(counted) == 2 and relabelled[2] == pytest.approx((20 + 8) / 2)  # b grew by 12 voxels in c1
    edited = _trainer("TrainerDiceIEps", base, folder, tmp_path, manifest={"cases": {}}).resolved_eps()[0]
    assert len(counted) == 3 and edited[2] == pytest.approx((8 + 20 + 8) / 3)  # the manifest is part of the key
    assert len(list((base / "dicephi_statistics").iterdir())) == 3


def test_a_fresh_start_ignores_an_earlier_runs_record(preprocessed, tmp_path, counted):
    """A dicephi_loss.json left by an earlier run in the folder is not this run's record."""
    base, folder = preprocessed
    trainer = _trainer("TrainerDiceIEps", base, folder, tmp_path)
    (tmp_path / "fold_0").mkdir()
    stale = {**trainer.loss_record(), "eps_per_class": [900.0, 90.0, 10.0], "mime": {"a": [1.0], "b": [1.0]}}
    (tmp_path / "fold_0" / "dicephi_loss.json").write_text(json.dumps(stale))
    fresh = _trainer("TrainerDiceIEps", base, folder, tmp_path)
    assert fresh.resolved_eps()[0] == trainer.resolved_eps()[0] != [900.0, 90.0, 10.0]
    assert fresh.loss_record()["data_fingerprint"] == trainer.data_fingerprint()


def _save(tmp_path, record):
    path = tmp_path / "checkpoint_latest.pth"
    torch.save(
        {"dicephi": record, "trainer_name": "x"} if record is not None else {"trainer_name": "nnUNetTrainer"}, path
    )
    return str(path)


@pytest.fixture
def no_nnunet_load(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    monkeypatch.setattr(nnUNetTrainer, "load_checkpoint", lambda self, f: None)


def test_continuing_another_losss_checkpoint_is_refused(preprocessed, tmp_path, no_nnunet_load):
    base, folder = preprocessed
    other = _trainer("TrainerDiceBI_eps1", base, folder, tmp_path).loss_record()
    trainer = _trainer("TrainerDiceI", base, folder, tmp_path)
    with pytest.raises(RuntimeError) as error:
        trainer.load_checkpoint(_save(tmp_path, other))
    message = str(error.value)
    for part in ("recorded TrainerDiceBI_eps1 (phi=BI, eps_nr=1", "not TrainerDiceI (phi=I", "-tr TrainerDiceBI_eps1"):
        assert part in message
    assert trainer._recorded() is None and trainer.effective_loss()[0] == parse_trainer_name("TrainerDiceI")


def test_a_checkpoint_without_a_record_is_refused(preprocessed, tmp_path, no_nnunet_load):
    base, folder = preprocessed
    trainer = _trainer("TrainerDiceI", base, folder, tmp_path)
    with pytest.raises(RuntimeError, match=r"no nnunet-dicephi record .* \(written by nnUNetTrainer\).*without --c"):
        trainer.load_checkpoint(_save(tmp_path, None))


def test_a_continued_run_keeps_its_statistics_and_refuses_changed_data(preprocessed, tmp_path, no_nnunet_load):
    base, folder = preprocessed
    record = json.loads(json.dumps(_trainer("TrainerDiceIEps", base, folder, tmp_path).loss_record()))
    path = _save(tmp_path, record)
    resumed = _trainer("TrainerDiceIEps", base, folder, tmp_path)
    resumed.load_checkpoint(path)
    resumed._check_data_unchanged()  # the same data: continues
    assert resumed.loss_record()["eps_per_class"] == record["eps_per_class"]

    (base / "dicephi_statistics").rename(base / "moved")  # --c and --val read the record, not the cache
    _write_case(folder, "c2", _segmentation(2, size=6))
    changed = _trainer("TrainerDiceIEps", base, folder, tmp_path)
    changed.load_checkpoint(path)  # --val validates with the recorded ε
    assert changed.resolved_eps() == (record["eps_per_class"],) * 2 and not (base / "dicephi_statistics").exists()
    with pytest.raises(
        RuntimeError, match=r"the preprocessed label maps .* changed since this run started.*without --c"
    ):
        changed._check_data_unchanged()  # --c refuses


def test_a_run_started_under_statistics_version_1_keeps_its_eps(preprocessed, tmp_path, no_nnunet_load):
    """Version 1 averaged b over every case, counting c0's unannotated map as empty; a run it started keeps that ε."""
    base, folder = preprocessed
    fresh = _trainer("TrainerDiceIEps", base, folder, tmp_path).loss_record()
    assert fresh["statistics_version"] == statistics.VERSION == 2
    assert fresh["eps_per_class"][2] == pytest.approx((8 + 8) / 2)  # b over c1 and c2, the cases annotating it
    old = {key: value for key, value in fresh.items() if key != "statistics_version"}
    old["eps_per_class"] = [240.0, 9.0, 8 * 2 / 3]  # what version 1 computed: b's mean over all three cases
    resumed = _trainer("TrainerDiceIEps", base, folder, tmp_path)
    resumed.load_checkpoint(_save(tmp_path, old))
    record = resumed.loss_record()
    assert record["eps_per_class"] == old["eps_per_class"] and record["statistics_version"] == 1
    assert resumed.resolved_eps() == (old["eps_per_class"],) * 2
