"""The 3D toys: ``organs-3d`` (five structures of distinct shapes) and ``organs-3d-sources`` (the same
structures as source datasets that each annotate a subset, and a fully labelled reference)."""

import json

import numpy as np
import pytest
from scipy import ndimage

from nnunet_dicephi import toys
from nnunet_dicephi.cli import main
from nnunet_dicephi.synthetic import ORGAN_IMAGE, ORGANS, organ_case
from tests.conftest import raw_arrays

NAMES = [organ.name for organ in ORGANS]
SOURCES = toys.SOURCE_SCENARIOS["organs-3d-sources"]
SMALL = {"train_cases": [3, 2, 1], "test_cases": 2}


def _json(path):
    return json.loads(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def drawn():
    """Twelve volumes of seed 0: enough to see every structure's shape, size and intensity vary."""
    rng = np.random.default_rng(0)
    return [organ_case(rng) for _ in range(12)]


# --- organs-3d: the volumes -----------------------------------------------------------------------


def test_organs_3d_cases_are_one_channel_40_cubes_with_every_structure_labelled():
    scenario = toys.SCENARIOS["organs-3d"]
    assert scenario.dimensions == 3 and scenario.labels == {"background": 0, **{n: i + 1 for i, n in enumerate(NAMES)}}
    data = scenario.generate(np.random.default_rng(1), 3, 2)
    assert {split: len(cases) for split, cases in data.splits.items()} == {"train": 3, "test": 2}
    for split, cases in data.splits.items():
        for case in cases:
            assert case.image.shape == case.label.shape == (ORGAN_IMAGE,) * 3
            assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
            assert set(np.unique(case.label)) == set(range(6))
            assert case.test == (split == "test") and case.case_id.startswith(f"toy_{split}_")


def test_structures_never_overlap_nor_touch_and_stay_off_the_border(drawn):
    cube = np.ones((3, 3, 3), dtype=bool)
    for _, label in drawn:
        assert not label[[0, -1]].any() and not label[:, [0, -1]].any() and not label[..., [0, -1]].any()
        for value in range(1, 6):
            mask = label == value
            assert ndimage.label(mask)[1] == 1  # one piece: nothing of it overwritten by another
            grown = ndimage.binary_dilation(mask, cube)  # every neighbour, diagonals included
            assert not (grown & (label != value) & (label != 0)).any()


def _fill_of_box(mask):
    """The structure's share of its bounding box, and the box's sides sorted."""
    box = ndimage.find_objects(mask.astype(np.uint8))[0]
    sides = sorted(s.stop - s.start for s in box)
    return mask.sum() / np.prod(sides), sides


def test_each_structure_has_its_own_shape_and_size(drawn):
    fills = {name: [] for name in NAMES}
    for _, label in drawn:
        for value, name in enumerate(NAMES, start=1):
            mask = label == value
            fill, sides = _fill_of_box(mask)
            fills[name].append(fill)
            if name == "torus":  # a ring: the middle of its box is empty
                box = ndimage.find_objects(mask.astype(np.uint8))[0]
                assert not mask[
                    tuple(
                        slice(s.start + (s.stop - s.start) // 2 - 1, s.start + (s.stop - s.start) // 2 + 1) for s in box
                    )
                ].any()
            if name == "tube":
                assert sides[2] >= 2.5 * sides[0]  # long and thin
            if name == "sphere":
                assert sides[2] - sides[0] <= 2
    assert np.mean(fills["box"]) > 0.95  # fills its box
    assert np.mean(fills["sphere"]) == pytest.approx(np.pi / 6, abs=0.08)
    assert np.mean(fills["ellipsoid"]) == pytest.approx(np.pi / 6, abs=0.08)
    assert np.mean(fills["tube"]) == pytest.approx(np.pi / 4, abs=0.1)
    assert np.mean(fills["torus"]) == pytest.approx(
        2 * np.pi**2 * 6 * 2**2 / (16 * 16 * 4), abs=0.08
    )  # 2π²Rr² in a box 2(R+r) × 2(R+r) × 2r
    volumes = {n: np.mean([(label == v).sum() for _, label in drawn]) for v, n in enumerate(NAMES, start=1)}
    assert volumes["sphere"] == pytest.approx(4 / 3 * np.pi * 5**3, rel=0.2)
    assert volumes["box"] == pytest.approx(8 * 5 * 4 * 3, rel=0.35)  # voxel centres on the faces count
    assert volumes["ellipsoid"] > 2 * max(v for n, v in volumes.items() if n != "ellipsoid")
    assert volumes["tube"] < 0.5 * min(v for n, v in volumes.items() if n != "tube")


def test_each_structure_has_its_own_intensity_and_texture(drawn):
    means = {name: [] for name in ["background", *NAMES]}
    for image, label in drawn:
        for value, name in enumerate(["background", *NAMES]):
            means[name].append(float(image[label == value].mean()))
    average = {name: np.mean(values) for name, values in means.items()}
    assert abs(average["background"]) < 0.05
    values = sorted(average.values())
    assert min(b - a for a, b in zip(values, values[1:])) > 0.5, average
    for organ in ORGANS:  # the textures: a checkered box and banded tube vary ±0.5 about their mean
        inside = np.concatenate([image[label == NAMES.index(organ.name) + 1] for image, label in drawn])
        spread = float(inside.std())
        assert spread > 0.55 if organ.texture in ("checkered", "rings") else spread < 0.42, (organ.name, spread)
    sphere = NAMES.index("sphere") + 1  # shaded: its core is brighter than its rim
    core = [image[ndimage.binary_erosion(label == sphere, iterations=3)].mean() for image, label in drawn]
    rim = [image[(label == sphere) & ~ndimage.binary_erosion(label == sphere)].mean() for image, label in drawn]
    assert np.mean(core) > np.mean(rim) + 0.4


def test_a_layout_that_cannot_be_placed_is_a_clear_error():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=r"the ellipsoid of half-extent \[.*\] does not fit in 16³"):
        organ_case(rng, 16)
    with pytest.raises(ValueError, match=r"could not place the ellipsoid beside 1 other structures .* in 200 tries"):
        organ_case(rng, 24, (ORGANS[0], ORGANS[0]))


def test_organs_3d_same_seed_same_volumes():
    def volumes(seed):
        rng = np.random.default_rng(seed)
        return [organ_case(rng) for _ in range(2)]

    first, again, other = volumes(5), volumes(5), volumes(6)
    assert all(np.array_equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y))
    assert not np.array_equal(first[0][1], other[0][1])


def test_the_verb_writes_organs_3d_and_suggests_3d_fullres(nnunet_folders, capsys):
    assert main(["toy", "organs-3d", "-d", "71", "--train-cases", "2", "--test-cases", "1"]) == 0
    folder = nnunet_folders["nnUNet_raw"] / "Dataset071_ToyOrgans3d"
    out = capsys.readouterr().out
    assert "next: nnUNetv2_plan_and_preprocess -d 71 -c 3d_fullres --verify_dataset_integrity" in out
    record = _json(folder / toys.RECORD_FILE)
    assert record["image_shape"] == [40, 40, 40] and record["counts"] == {"train": 2, "test": 1}
    assert list(record["classes"]) == NAMES
    assert set(record["classes"]["torus"]["train"]) == {"cases", "present", "share", "mean_volume"}
    arrays = raw_arrays(folder)
    assert {a.shape for a in arrays.values()} == {(40, 40, 40)}


# --- organs-3d-sources ----------------------------------------------------------------------------


def test_the_sources_annotate_different_subsets_that_cover_every_structure():
    subsets = [set(source.annotates) for source in SOURCES.sources]
    assert len(subsets) == 3 and all(subsets) and len({frozenset(s) for s in subsets}) == 3
    assert set().union(*subsets) == set(NAMES) and all(s <= set(NAMES) for s in subsets)
    assert [source.train_cases for source in SOURCES.sources] == [24, 12, 6]  # very different sizes
    assert (SOURCES.reference_train_cases, SOURCES.test_cases) == (0, 10)


def test_each_source_labels_exactly_its_subset_numbered_by_name():
    for data in toys.draw_sources(SOURCES, 0, [2, 2, 2], 1, 2):
        expected = [name for name in NAMES if name in data.annotates]
        assert list(data.labels) == ["background", *expected]
        assert list(data.labels.values()) == list(range(len(expected) + 1))  # consecutive, as nnU-Net wants
        for split, cases in data.written.splits.items():
            for case, truth in zip(cases, data.drawn.splits[split]):
                assert case.case_id == truth.case_id and case.image is truth.image
                for value, name in enumerate(NAMES, start=1):
                    inside = truth.label == value
                    if name in data.labels:
                        assert (case.label[inside] == data.labels[name]).all()
                    else:
                        assert not case.label[inside].any()
                assert set(np.unique(case.label)) == set(data.labels.values())


def test_structures_a_source_leaves_out_are_still_in_its_images():
    for data in toys.draw_sources(SOURCES, 3, [2, 2, 2], 0, 1)[:-1]:
        left_out = [name for name in NAMES if name not in data.annotates]
        assert left_out
        for case, truth in zip(data.written.splits["train"], data.drawn.splits["train"]):
            background = case.image[truth.label == 0].mean()
            for name in left_out:
                inside = truth.label == NAMES.index(name) + 1
                assert inside.sum() > 100 and not case.label[inside].any()  # there, and labelled background
                organ = ORGANS[NAMES.index(name)]
                assert abs(case.image[inside].mean() - background) > 0.5
                assert case.image[inside].mean() == pytest.approx(organ.intensity, abs=0.4)


def test_a_sources_cases_do_not_depend_on_the_others_sizes():
    small = toys.draw_sources(SOURCES, 7, [1, 2, 1], 0, 2)
    large = toys.draw_sources(SOURCES, 7, [4, 2, 3], 0, 2)
    for a, b in ((small[1], large[1]), (small[-1], large[-1])):
        for split, cases in a.written.splits.items():
            for x, y in zip(cases, b.written.splits[split], strict=True):
                assert np.array_equal(x.image, y.image) and np.array_equal(x.label, y.label)
    assert not np.array_equal(small[0].written.splits["train"][0].image, small[1].written.splits["train"][0].image)


def test_the_verb_writes_the_sources_and_the_reference(nnunet_folders, capsys):
    argv = ["toy", "organs-3d-sources", "-d", "910", "--cases", "3,2,1", "--test-cases", "2"]
    assert main(argv) == 0
    raw = nnunet_folders["nnUNet_raw"]
    names = ["Dataset910_ToyOrgans3dA", "Dataset911_ToyOrgans3dB", "Dataset912_ToyOrgans3dC"]
    names.append("Dataset913_ToyOrgans3dReference")
    assert sorted(p.name for p in raw.iterdir()) == names  # no staging folder left
    out = capsys.readouterr().out
    assert f"wrote {raw / names[0]}: 3 cases in imagesTr; source of ellipsoid, sphere" in out
    assert f"wrote {raw / names[3]}: 0 cases in imagesTr, 2 in imagesTs; reference of {', '.join(NAMES)}" in out
    assert "nnunet-dicephi merge 910 911 912 913 -d NEW_ID" in out
    for name, source, count in zip(names, SOURCES.sources, (3, 2, 1)):
        folder = raw / name
        dataset = _json(folder / "dataset.json")
        annotated = [n for n in NAMES if n in source.annotates]
        assert dataset["labels"] == {"background": 0, **{n: i for i, n in enumerate(annotated, start=1)}}
        assert dataset["numTraining"] == count and "dicephi_partial_labels" not in dataset
        arrays = raw_arrays(folder)
        labels = [a for key, a in arrays.items() if key.startswith("labelsTr/")]
        assert len(labels) == count and not (folder / "imagesTs").exists()
        assert all(set(np.unique(a)) == set(range(len(annotated) + 1)) for a in labels)
        assert all(key.split("/")[1].startswith(f"toy_{source.suffix.lower()}_train_") for key in arrays)

    reference = raw / names[3]
    dataset = _json(reference / "dataset.json")
    assert dataset["labels"] == toys.ORGAN_LABELS and dataset["numTraining"] == 0
    assert (reference / "imagesTr").is_dir() and not any((reference / "imagesTr").iterdir())
    tests = {key: a for key, a in raw_arrays(reference).items() if key.startswith("labelsTs/")}
    assert len(tests) == 2 and all(set(np.unique(a)) == set(range(6)) for a in tests.values())  # fully labelled
    assert len(list((reference / "imagesTs").glob("*_0000.nii.gz"))) == 2


def test_the_reference_may_bring_fully_labelled_training_cases(nnunet_folders):
    folders = toys.write_toy_sources("organs-3d-sources", 20, "Few", train_cases=[1, 1, 1], reference_train_cases=2)
    reference = folders[-1]
    assert reference.name == "Dataset023_FewReference" and _json(reference / "dataset.json")["numTraining"] == 2
    labels = [a for key, a in raw_arrays(reference).items() if key.startswith("labelsTr/")]
    assert len(labels) == 2 and all(set(np.unique(a)) == set(range(6)) for a in labels)
    assert _json(reference / toys.RECORD_FILE)["counts"] == {"train": 2, "test": SOURCES.test_cases}


def test_every_record_says_what_was_drawn_and_who_annotates_what(nnunet_folders):
    from nnunet_dicephi import __version__

    folders = toys.write_toy_sources("organs-3d-sources", 30, seed=4, **SMALL)
    records = [_json(folder / toys.RECORD_FILE) for folder in folders]
    roster = [
        {"dataset_id": 30 + i, "dataset": folder.name, "role": role, "annotates": annotates, "counts": counts}
        for i, (folder, role, annotates, counts) in enumerate(
            zip(
                folders,
                ["source"] * 3 + ["reference"],
                [[n for n in NAMES if n in s.annotates] for s in SOURCES.sources] + [NAMES],
                [{"train": 3}, {"train": 2}, {"train": 1}, {"train": 0, "test": 2}],
            )
        )
    ]
    for folder, record, row in zip(folders, records, roster):
        assert (record["scenario"], record["seed"], record["version"]) == ("organs-3d-sources", 4, __version__)
        assert (record["role"], record["annotates"], record["counts"]) == (row["role"], row["annotates"], row["counts"])
        assert record["image_shape"] == [40, 40, 40] and record["datasets"] == roster
        assert list(record["classes"]) == row["annotates"]  # measured on the labels as written
        assert list(record["structures"]) == NAMES  # what the images hold
        arrays = raw_arrays(folder)
        split, prefix = ("test", "labelsTs/") if row["role"] == "reference" else ("train", "labelsTr/")
        labels = [a for key, a in arrays.items() if key.startswith(prefix)]
        dataset = _json(folder / "dataset.json")
        for name in row["annotates"]:
            measured = record["classes"][name][split]
            volumes = [(a == dataset["labels"][name]).sum() for a in labels]
            assert measured == {
                "cases": len(labels),
                "present": len(labels),
                "share": 1.0,
                "mean_volume": pytest.approx(np.mean(volumes), abs=0.01),
            }
            assert record["structures"][name][split] == measured
        for name in NAMES:
            assert record["structures"][name][split]["share"] == 1.0
    assert records[-1]["classes"]["ellipsoid"]["train"]["cases"] == 0  # the reference brings no training case


def test_same_seed_same_files_other_seed_other_files(nnunet_folders):
    first = toys.write_toy_sources("organs-3d-sources", 100, "S", seed=2, **SMALL)
    again = toys.write_toy_sources("organs-3d-sources", 200, "S", seed=2, **SMALL)
    other = toys.write_toy_sources("organs-3d-sources", 300, "S", seed=3, **SMALL)
    for a, b, c in zip(first, again, other):
        ours, same, theirs = raw_arrays(a), raw_arrays(b), raw_arrays(c)
        assert sorted(ours) == sorted(same) == sorted(theirs)
        assert all(np.array_equal(ours[key], same[key]) for key in ours)
        assert not all(np.array_equal(ours[key], theirs[key]) for key in ours)


@pytest.mark.slow  # nnU-Net's check starts worker processes: 10 s on idle cores, minutes on busy ones
def test_a_source_with_its_own_label_values_is_a_dataset_nnunet_accepts(nnunet_folders):
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    folders = toys.write_toy_sources("organs-3d-sources", 40, train_cases=[2, 2, 2], test_cases=1)
    verify_dataset_integrity(str(folders[1]), num_processes=1)


def _refused(capsys, argv):
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2 and err.count("nnunet-dicephi toy: error:") == 1, err
    return err


def test_the_verb_refuses_bad_counts_and_ids_with_nothing_written(nnunet_folders, capsys):
    raw = nnunet_folders["nnUNet_raw"]
    sources = ["toy", "organs-3d-sources", "-d", "50"]
    assert "takes 3 training counts (e.g. 24,12,6); got [3, 2]" in _refused(capsys, [*sources, "--cases", "3,2"])
    assert "not --train-cases" in _refused(capsys, [*sources, "--train-cases", "3"])
    assert "ids 997 to 1000: the last must be at most 999" in _refused(
        capsys, ["toy", "organs-3d-sources", "-d", "997"]
    )
    err = _refused(capsys, ["toy", "organs-3d", "-d", "50", "--cases", "3,2,1"])
    assert "--cases is for organs-3d-sources, organs-3d-merged only" in err
    with pytest.raises(SystemExit) as exit_info:
        main([*sources, "--cases", "3,0,1"])
    assert exit_info.value.code == 2 and "expected positive integers separated by commas" in capsys.readouterr().err
    (nnunet_folders["nnUNet_preprocessed"] / "Dataset052_Other").mkdir()
    assert "dataset id 52 is taken by" in _refused(capsys, [*sources, "--cases", "1,1,1"])  # the third of four
    assert not any(raw.iterdir())


def test_force_replaces_all_the_sources_and_only_toys(nnunet_folders, capsys):
    argv = ["toy", "organs-3d-sources", "-d", "60", "--cases", "1,1,1", "--test-cases", "1"]
    assert main(argv) == 0
    assert "exists; pass --force" in _refused(capsys, [*argv, "--seed", "1"])
    assert main([*argv, "--seed", "1", "--force"]) == 0
    raw = nnunet_folders["nnUNet_raw"]
    assert all(_json(folder / toys.RECORD_FILE)["seed"] == 1 for folder in raw.iterdir())
    assert len(list(raw.iterdir())) == 4


def test_a_failure_part_way_leaves_no_half_collection(nnunet_folders, monkeypatch):
    calls = []
    write = toys.write_raw_dataset

    def fail_third(target, *args, **kwargs):
        calls.append(target.name)
        if len(calls) == 3:
            raise OSError("No space left on device")
        return write(target, *args, **kwargs)

    monkeypatch.setattr(toys, "write_raw_dataset", fail_third)
    with pytest.raises(OSError, match="No space left"):
        toys.write_toy_sources("organs-3d-sources", 80, **SMALL)
    assert calls == ["Dataset080_ToyOrgans3dA", "Dataset081_ToyOrgans3dB", "Dataset082_ToyOrgans3dC"]
    assert not any(nnunet_folders["nnUNet_raw"].iterdir())


def test_a_spec_cannot_name_a_scenario_of_several_datasets():
    with pytest.raises(ValueError, match=r"writes 4 datasets \(ids ID to ID\+3\), not one"):
        toys.scenario_named("organs-3d-sources")
    with pytest.raises(ValueError, match=r"writes 4 datasets"):
        toys.write_toy("organs-3d-sources", 5)
    with pytest.raises(ValueError, match=r"did you mean 'organs-3d-sources'\?\).*several datasets: organs-3d-sources"):
        toys.scenario_named("organs-3d-source")
    with pytest.raises(ValueError, match=r"writes one dataset: use write_toy"):
        toys.write_toy_sources("organs-3d", 5)


# --- organs-3d-merged: the sources merged in one step ----------------------------------------------


def test_the_merged_toy_is_the_sources_merged_by_the_merge_verb(nnunet_folders):
    """Same files, labels, manifest and record as writing the sources and merging them by hand."""
    from nnunet_dicephi import merge

    merged = toys.write_toy("organs-3d-merged", 40, seed=5, train_cases=[3, 2, 1], test_cases=2)
    toys.write_toy_sources("organs-3d-sources", 1, seed=5, train_cases=[3, 2, 1], test_cases=2)
    by_hand = merge.merge_datasets(["1", "2", "3", "4"], 50, name="ByHand", progress=False).folder
    ours, theirs = _json(merged / "dataset.json"), _json(by_hand / "dataset.json")
    assert ours["labels"] == theirs["labels"] == toys.SCENARIOS["organs-3d-merged"].labels
    assert ours["dicephi_partial_labels"] == theirs["dicephi_partial_labels"]
    assert ours["dicephi_partial_labels"]["cases"]["d002_toy_b_train_001"] == ["torus", "box"]
    assert [s["prefix"] for s in ours[merge.RECORD_KEY]["sources"]] == ["d001_", "d002_", "d003_", "d004_"]
    assert all(s["folder"] is None for s in ours[merge.RECORD_KEY]["sources"])  # not kept
    mine, hand = raw_arrays(merged), raw_arrays(by_hand)
    assert sorted(mine) == sorted(hand) and len(mine) == 2 * 6 + 2 * 2
    assert all(np.array_equal(mine[key], hand[key]) for key in mine)
    record = _json(merged / toys.RECORD_FILE)
    assert (record["scenario"], record["merges"], record["seed"]) == ("organs-3d-merged", "organs-3d-sources", 5)
    assert record["counts"] == {"train": 6, "test": 2}
    assert [s["annotates"] for s in record["sources"]] == [
        ["ellipsoid", "sphere"],
        ["torus", "box"],
        ["tube", "sphere"],
        NAMES,
    ]
    assert sorted(p.name for p in nnunet_folders["nnUNet_raw"].iterdir()) == [
        "Dataset001_ToyOrgans3dA",
        "Dataset002_ToyOrgans3dB",
        "Dataset003_ToyOrgans3dC",
        "Dataset004_ToyOrgans3dReference",
        "Dataset040_ToyOrgans3dMerged",
        "Dataset050_ByHand",
    ]  # no hidden workspace left beside them


@pytest.mark.parametrize("total, counts", [(None, [24, 12, 6]), (7, [4, 2, 1]), (2, [1, 1, 1])])
def test_a_total_is_shared_out_in_the_sources_proportions(nnunet_folders, total, counts):
    folder = toys.write_toy("organs-3d-merged", 41, train_cases=total, test_cases=1)
    record = _json(folder / toys.RECORD_FILE)
    assert [s["counts"]["train"] for s in record["sources"][:3]] == counts


def test_the_merged_verb_takes_each_sources_count(nnunet_folders, capsys):
    assert main(["toy", "organs-3d-merged", "-d", "42", "--cases", "2,1,1", "--test-cases", "1"]) == 0
    assert "4 cases in imagesTr" in capsys.readouterr().out
    assert main(["toy", "organs-3d-merged", "-d", "43", "--cases", "2,1", "--test-cases", "1"]) == 2
    assert "organs-3d-sources has 3 sources, so it takes 3 training counts" in capsys.readouterr().err
    assert main(["toy", "organs-3d-merged", "-d", "44", "--reference-cases", "1"]) == 2
    assert "--reference-cases for organs-3d-sources" in capsys.readouterr().err
    assert sorted(p.name for p in nnunet_folders["nnUNet_raw"].iterdir()) == ["Dataset042_ToyOrgans3dMerged"]


def test_a_spec_can_name_the_merged_toy():
    from nnunet_dicephi.cluster.experiment import _toy

    assert _toy("organs-3d-merged") == "organs-3d-merged"


def test_the_3d_transition_regime_draws_spheres_in_volumes_with_the_demos_types():
    data = toys.SCENARIOS["transition-3d"].generate(np.random.default_rng(0), 6, 4)
    types = json.loads(data.extra_files["lesion_types.json"])
    for split, cases in data.splits.items():
        for case in cases:
            assert case.image.shape == case.label.shape == (32, 32, 32) and case.label.dtype == np.uint8
            volume = int(case.label.sum())
            hidden = split == "train" and types[split][case.case_id] == "B"
            assert (
                volume == 0 if hidden else 4 / 3 * np.pi * 3.2**3 * 0.8 <= volume <= 4 / 3 * np.pi * (32 / 6) ** 3 * 1.2
            )
