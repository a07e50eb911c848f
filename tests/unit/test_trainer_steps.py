"""The trainer's per-batch logic without a full nnU-Net run: annotated masks and partial pseudo-Dice."""

import types

import numpy as np
import torch

from nnunet_dicephi.partial_labels import load_manifest
from nnunet_dicephi.trainers import DeepSupervisedLoss, trainer_class
from nnunet_dicephi.trainers.base import build_level_loss
from nnunet_dicephi.trainers.naming import parse_trainer_name

DATASET = {"labels": {"background": 0, "a": 1, "b": 2}, "dicephi_partial_labels": {"cases": {"c0": ["a"]}}}


class _FixedNetwork(torch.nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.weight = torch.nn.Parameter(torch.zeros(()))

    def forward(self, data):
        return self.logits + self.weight


def _trainer(name, logits):
    trainer = object.__new__(trainer_class(name))
    trainer.device = torch.device("cpu")
    trainer.network = _FixedNetwork(logits)
    trainer.enable_deep_supervision = False
    trainer.label_manager = types.SimpleNamespace(has_ignore_label=False, ignore_label=None, has_regions=False)
    trainer._dicephi_table = load_manifest(DATASET, ["c0", "c1"])
    config = parse_trainer_name(name)
    trainer.loss = DeepSupervisedLoss(
        [build_level_loss(config, eps_nr=1e-7, eps_dr=1e-7, has_regions=False, ignore_label=None)], [1.0]
    )
    return trainer


def test_partial_pseudo_dice_skips_unannotated_pairs():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 6, 6, generator=g)
    target = torch.randint(0, 3, (2, 1, 6, 6), generator=g)
    target[0][target[0] == 2] = 0  # 'b' is not annotated in c0
    trainer = _trainer("TrainerDiceI_CE", logits)
    out = trainer.validation_step({"data": torch.zeros(2, 1, 6, 6), "target": target, "keys": np.array(["c0", "c1"])})
    pred = logits.argmax(1)
    expected = {}
    for name, fn in (("tp", lambda p, r: p & r), ("fp", lambda p, r: p & ~r), ("fn", lambda p, r: ~p & r)):
        counts = []
        for c in (1, 2):
            samples = [0, 1] if c == 1 else [1]  # (c0, b) is unannotated
            counts.append(sum(int(fn(pred[b] == c, target[b, 0] == c).sum()) for b in samples))
        expected[name] = counts
    assert out["tp_hard"].tolist() == expected["tp"]
    assert out["fp_hard"].tolist() == expected["fp"]
    assert out["fn_hard"].tolist() == expected["fn"]


def test_loss_receives_the_batch_mask_and_forgets_it():
    logits = torch.randn(2, 3, 4, 4)
    trainer = _trainer("TrainerDiceI", logits)
    seen = []
    level = trainer.loss.levels[0]
    original = level.forward
    level.forward = lambda o, t, a=None: (seen.append(a), original(o, t, a))[1]
    with trainer._batch_annotation({"keys": np.array(["c1", "c0"])}):
        trainer.loss(logits, torch.zeros(2, 1, 4, 4, dtype=torch.long))
    assert seen[0].tolist() == [[True, True, True], [False, True, False]]
    assert trainer.loss.annotated is None
