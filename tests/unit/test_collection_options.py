"""Trainer options for partially labelled collections: ``excl``, ``nomanifest`` and ``source<ID>``.

``excl`` adds Shi et al.'s exclusion term to a loss, ``nomanifest`` trains as stock nnU-Net does (every
label map taken as complete), ``source<ID>`` trains on the cases one source brought into a merge.
"""

import types

import pytest
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_dicephi import losses as L
from nnunet_dicephi.loss_config import LossConfig, TrainerNameError, parse_trainer_name, trainer_name
from nnunet_dicephi.merge import RECORD_KEY, source_cases
from nnunet_dicephi.trainers import trainer_class
from nnunet_dicephi.trainers.base import build_level_loss

MERGED = {
    "name": "Dataset934_Organs",
    "labels": {"background": 0, "a": 1, "b": 2},
    "dicephi_partial_labels": {"cases": {"d930_x": ["a"], "d931_y": ["b"]}},
    RECORD_KEY: {
        "sources": [{"dataset": "Dataset930_A", "prefix": "d930_"}, {"dataset": "Dataset931_B", "prefix": "d931_"}]
    },
}


@pytest.mark.parametrize(
    "name, fields",
    [
        ("TrainerMarginalDice_CE_excl", {"loss": "MarginalDice", "ce": True, "exclusion": True}),
        ("TrainerCE_excl", {"loss": "CE", "exclusion": True}),
        ("TrainerDiceI_eps1e-5_CE_nomanifest", {"eps_nr": 1e-5, "ce": True, "manifest": False}),
        ("TrainerDiceI_CE_source007_ep2", {"ce": True, "source": 7, "epochs": 2}),
        ("TrainerDiceI_eps1e-5_CE_nomanifest_source930_seed0", {"manifest": False, "source": 930, "seed": 0}),
    ],
)
def test_the_options_round_trip_through_the_name(name, fields):
    config = parse_trainer_name(name)
    assert {key: getattr(config, key) for key in fields} == fields
    assert trainer_name(config) == name


@pytest.mark.parametrize(
    "name, closest",
    [
        ("TrainerDiceI_CE_source7", "TrainerDiceI_CE_source007"),
        ("TrainerDiceI_nomanifest_CE", "TrainerDiceI_CE_nomanifest"),
        ("TrainerDiceI_excl_CE", "TrainerDiceI_CE_excl"),
    ],
)
def test_other_spellings_are_refused_with_the_canonical_name(name, closest):
    with pytest.raises(TrainerNameError, match=f"Closest valid name: {closest}\n"):
        parse_trainer_name(name)


@pytest.mark.parametrize("source", [0, 1000, -1, True, 1.5])
def test_a_source_is_a_dataset_id(source):
    with pytest.raises(ValueError, match="source must be an nnU-Net dataset id"):
        LossConfig(source=source)


def test_manifest_and_exclusion_are_part_of_the_loss_and_a_source_is_not():
    base = LossConfig(ce=True)
    assert not base.same_loss(LossConfig(ce=True, manifest=False))
    assert not base.same_loss(LossConfig(ce=True, exclusion=True))
    assert base.same_loss(LossConfig(ce=True, source=930))
    # a record written before these options existed reads as the defaults
    old = {key: value for key, value in base.to_dict().items() if key not in ("exclusion", "manifest", "source")}
    assert LossConfig.from_record(old) == base


def _batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 4, 6, 6, generator=g, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (2, 1, 6, 6), generator=g)
    annotated = torch.tensor([[1, 1, 0, 1], [1, 0, 1, 1]], dtype=torch.bool)
    return logits, target, annotated


@pytest.mark.parametrize("name", ["TrainerMarginalDice_CE_excl", "TrainerDiceI_excl", "TrainerCE_excl"])
def test_the_exclusion_term_is_added_with_weight_one(name):
    logits, target, annotated = _batch()
    config = parse_trainer_name(name)
    combined = build_level_loss(config, eps_nr=1e-7, eps_dr=1e-7, has_regions=False, ignore_label=None)
    without = build_level_loss(
        LossConfig(**{**config.__dict__, "exclusion": False}),
        eps_nr=1e-7,
        eps_dr=1e-7,
        has_regions=False,
        ignore_label=None,
    )
    exclusion = L.ExclusionLoss(nonlinearity="softmax")(logits, target, annotated)
    assert exclusion > 0  # the batch puts unannotated classes on labelled voxels: the term is not vacuous
    torch.testing.assert_close(combined(logits, target, annotated), without(logits, target, annotated) + exclusion)


def test_the_exclusion_term_is_refused_for_regions():
    with pytest.raises(ValueError, match="exclusion term needs mutually exclusive labels"):
        build_level_loss(
            parse_trainer_name("TrainerDiceI_excl"), eps_nr=1e-7, eps_dr=1e-7, has_regions=True, ignore_label=None
        )


def test_the_exclusion_loss_compiles_as_one_graph_with_the_marginal_loss():
    logits, target, annotated = _batch()
    loss = build_level_loss(
        parse_trainer_name("TrainerMarginalDice_CE_excl"),
        eps_nr=1e-7,
        eps_dr=1e-7,
        has_regions=False,
        ignore_label=None,
    )
    compiled = torch.compile(loss, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(logits, target, annotated), loss(logits, target, annotated))


IDENTIFIERS = [f"d930_case{i:02d}" for i in range(9)] + [f"d931_other{i}" for i in range(12)]


@pytest.mark.parametrize("fold", [0, 1, 2, 3, 4])
def test_a_source_is_split_as_nnunet_splits_that_source_alone(fold):
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    alone = generate_crossval_split(sorted(f"case{i:02d}" for i in range(9)), seed=12345, n_splits=5)[fold]
    train, validation = source_cases(MERGED, 930, IDENTIFIERS[::-1], fold)
    assert train == ["d930_" + key for key in alone["train"]]
    assert validation == ["d930_" + key for key in alone["val"]] and validation
    assert set(train).isdisjoint(validation)


def test_fold_all_trains_and_validates_on_every_case_of_the_source():
    cases = sorted(IDENTIFIERS[:9])
    assert source_cases(MERGED, 930, IDENTIFIERS, "all") == (cases, cases)


@pytest.mark.parametrize(
    "dataset, source, message",
    [
        ({"name": "Dataset7_X"}, 930, "was not written by nnunet-dicephi merge"),
        (
            MERGED,
            932,
            r"has no source dataset 932; its sources: source930 \(Dataset930_A\), source931 \(Dataset931_B\)",
        ),
        (MERGED, 931, "Dataset931_B brought 2 training cases into Dataset934_Organs, fewer than nnU-Net's 5 folds"),
    ],
)
def test_source_cases_name_what_is_wrong(dataset, source, message):
    with pytest.raises(ValueError, match=message):
        source_cases(dataset, source, ["d930_a", "d931_b", "d931_c"], 0)


def _split_trainer(name, monkeypatch):
    trainer = object.__new__(trainer_class(name))
    trainer.dataset_json, trainer.fold, trainer.preprocessed_dataset_folder = MERGED, 1, "unused"
    trainer.dataset_class = types.SimpleNamespace(get_identifiers=lambda folder: IDENTIFIERS)
    monkeypatch.setattr(nnUNetTrainer, "do_split", lambda self: (["merged", "split"], ["of the fold"]))
    return trainer


def test_a_source_trainer_trains_and_validates_on_its_source_alone(monkeypatch):
    trainer, said = _split_trainer("TrainerDiceI_CE_source930", monkeypatch), []
    trainer.print_to_log_file = said.append
    assert trainer.do_split() == trainer.do_split() == source_cases(MERGED, 930, IDENTIFIERS, 1)
    assert len(said) == 1 and "source930: trains on nnU-Net's split of that source's cases alone, 7 training" in said[0]
    assert _split_trainer("TrainerDiceI_CE", monkeypatch).do_split() == (["merged", "split"], ["of the fold"])


def test_nomanifest_trains_without_the_manifest():
    trainer = object.__new__(trainer_class("TrainerDiceI_CE_nomanifest"))
    trainer.dataset_json = MERGED
    trainer.label_manager = types.SimpleNamespace(has_ignore_label=False, ignore_label=None, has_regions=False)
    assert trainer._annotation_table() is None
    assert trainer._annotated_mask(["d930_x"]) is None


@pytest.mark.parametrize("phi", ["I", "CI", "BI", "BCI"])
def test_without_the_background_the_marginal_dice_is_the_dice_over_annotated_maps(phi):
    """Merging unannotated classes into the background changes only the background's map, so with the
    background left out the marginal Dice is the Dice over annotated maps (a study must count it)."""
    logits, target, annotated = _batch(3)
    labelled = annotated.gather(1, target.flatten(1)).view_as(target)  # unannotated classes are background
    target = torch.where(labelled, target, 0)
    options = {"phi": phi, "eps_nr": 1e-7, "eps_dr": 1e-7}
    marginal = L.MarginalDiceLoss(include_background=False, **options)(logits, target, annotated)
    dice = L.DiceLoss(include_background=False, **options)(logits, target, annotated)
    torch.testing.assert_close(marginal, dice)
    counted = L.MarginalDiceLoss(include_background=True, **options)(logits, target, annotated)
    assert not torch.allclose(counted, L.DiceLoss(include_background=True, **options)(logits, target, annotated))
