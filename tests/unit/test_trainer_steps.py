"""The trainer's per-batch logic without a full nnU-Net run: annotated masks and partial pseudo-Dice."""

import sys
import types

import numpy as np
import pytest
import torch

from nnunet_dicephi import losses as L
from nnunet_dicephi.loss_config import LossConfig, parse_trainer_name
from nnunet_dicephi.partial_labels import load_manifest
from nnunet_dicephi.trainers import DeepSupervisedLoss, DicePhiTrainer, trainer_class
from nnunet_dicephi.trainers.base import build_level_loss

DATASET = {"labels": {"background": 0, "a": 1, "b": 2}, "dicephi_partial_labels": {"cases": {"c0": ["a"]}}}
FINGERPRINT = {"fingerprint": "0" * 64}
"""What the stub trainers say their data's fingerprint is (tests/unit/test_provenance.py computes real ones)."""


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


def _checkpointing_trainer(tmp_path):
    trainer = object.__new__(trainer_class("TrainerDiceI"))
    trainer.local_rank, trainer.is_ddp, trainer.disable_checkpointing = 0, False, False
    trainer.network = torch.nn.Linear(2, 2)
    trainer.optimizer = torch.optim.SGD(trainer.network.parameters(), lr=0.1)
    trainer.grad_scaler = None
    trainer.logger = types.SimpleNamespace(get_checkpoint=lambda: {"epoch": []})
    trainer._best_ema, trainer.current_epoch, trainer.my_init_kwargs = None, 0, {}
    trainer.inference_allowed_mirroring_axes = None
    trainer.loss_record = lambda: {"phi": "I", "epoch": trainer.current_epoch}
    trainer.output_folder = str(tmp_path)
    return trainer


def test_checkpoint_carries_the_loss_record_and_no_side_file(tmp_path, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = _checkpointing_trainer(tmp_path)
    saves, save = [], torch.save
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: (saves.append(sorted(obj)), save(obj, f, *a, **k)))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("a checkpoint is never read back to be saved"))
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    monkeypatch.undo()
    # written once: nnU-Net's own keys and the record, in one torch.save
    assert saves == [sorted(["dicephi", *_nnunets_checkpoint_keys(nnUNetTrainer, trainer)])]
    checkpoint = torch.load(tmp_path / "checkpoint_latest.pth", weights_only=False)
    assert checkpoint["dicephi"] == {"phi": "I", "epoch": 0} and checkpoint["current_epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_latest.pth"]
    assert sys.modules[nnUNetTrainer.__module__].torch is torch  # nnU-Net's module sees torch again


def _nnunets_checkpoint_keys(nnunet_trainer, trainer):
    """The keys nnU-Net's own save_checkpoint writes, for this trainer's state."""
    keys = []
    module = sys.modules[nnunet_trainer.__module__]
    original = module.torch
    module.torch = types.SimpleNamespace(save=lambda obj, f: keys.extend(obj))
    try:
        nnunet_trainer.save_checkpoint(trainer, "unused.pth")
    finally:
        module.torch = original
    return keys


def test_a_save_killed_half_way_leaves_the_previous_checkpoint_readable(tmp_path, monkeypatch):
    from nnunet_dicephi.trainers.base import remove_partial_checkpoints

    trainer = _checkpointing_trainer(tmp_path)
    target = tmp_path / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(target))
    before = target.read_bytes()

    def dies_mid_write(obj, file, *args, **kwargs):  # what SIGKILL during the checkpoint's torch.save leaves
        file.write(before[: len(before) // 3])
        raise SystemExit("killed")

    trainer.current_epoch = 1
    monkeypatch.setattr(torch, "save", dies_mid_write)
    with pytest.raises(SystemExit):
        trainer.save_checkpoint(str(target))
    monkeypatch.undo()
    assert target.read_bytes() == before
    assert torch.load(target, weights_only=False)["dicephi"]["epoch"] == 0
    (tmp_path / "checkpoint_best.pth").write_bytes(before)
    assert remove_partial_checkpoints(str(tmp_path)) == ["checkpoint_latest.pth.partial"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_best.pth", "checkpoint_latest.pth"]


def test_no_checkpoint_when_checkpointing_is_disabled(tmp_path):
    trainer = _checkpointing_trainer(tmp_path)
    trainer.disable_checkpointing = True
    logged = []
    trainer.print_to_log_file = lambda *args, **kwargs: logged.append(args)
    trainer.save_checkpoint(str(tmp_path / "checkpoint_latest.pth"))
    assert list(tmp_path.iterdir()) == [] and logged


def test_validation_counts_equal_nnunets_and_are_recorded_per_case(tmp_path):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_dicephi.evaluation import VALIDATION_FILE, append_validation_record, read_validation_record

    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 3, 6, 6, generator=g)
    target = torch.randint(0, 3, (3, 1, 6, 6), generator=g)
    trainer = _trainer("TrainerDiceI", logits)
    trainer._dicephi_table = None  # fully annotated: the sums must be nnU-Net's own
    batch = {"data": torch.zeros(3, 1, 6, 6), "target": target, "keys": np.array(["c1", "c0", "c1"])}
    ours = trainer.validation_step(batch)
    theirs = nnUNetTrainer.validation_step(trainer, {**batch, "target": target.clone()})
    for key in ("tp_hard", "fp_hard", "fn_hard"):
        np.testing.assert_array_equal(ours[key], theirs[key])
    np.testing.assert_allclose(ours["loss"], theirs["loss"])
    cases = trainer._dicephi_validation_cases
    pred = logits.argmax(1)
    for case, samples in (("c0", [1]), ("c1", [0, 2])):
        for c in (1, 2):
            tp = sum(int(((pred[b] == c) & (target[b, 0] == c)).sum()) for b in samples)
            fp = sum(int(((pred[b] == c) & (target[b, 0] != c)).sum()) for b in samples)
            fn = sum(int(((pred[b] != c) & (target[b, 0] == c)).sum()) for b in samples)
            assert cases[case][:, c - 1].tolist() == [tp, fp, fn]
    path = tmp_path / VALIDATION_FILE
    append_validation_record(str(path), 0, cases)
    append_validation_record(str(path), 1, {"c0": cases["c0"] * 0})
    append_validation_record(str(path), 1, {"c0": cases["c0"]})  # a resumed run repeats epoch 1: last wins
    with open(path, "a") as handle:
        handle.write('{"epoch": 2, "cases": {"c0": [[1, ')  # cut short by a kill
    with pytest.warns(UserWarning, match="line 4: not a validation record"):
        record = read_validation_record(path)
    assert sorted(record) == [0, 1]
    np.testing.assert_array_equal(record[0]["c1"], cases["c1"].T)
    np.testing.assert_array_equal(record[1]["c0"], cases["c0"].T)


def test_validation_counts_the_first_output_and_leave_the_ignore_label_out_as_nnunets(monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    g = torch.Generator().manual_seed(2)
    logits = [torch.randn(2, 3, 8, 8, generator=g), torch.randn(2, 3, 4, 4, generator=g)]
    target = torch.randint(0, 4, (2, 1, 8, 8), generator=g)  # 3 is the ignore label
    targets = [target, target[:, :, ::2, ::2].clone()]
    trainer = _trainer("TrainerDiceI", torch.zeros(()))
    trainer.network = lambda data: logits
    trainer.enable_deep_supervision, trainer._dicephi_table = True, None
    trainer.label_manager = types.SimpleNamespace(has_ignore_label=True, ignore_label=3, has_regions=False)
    level = build_level_loss(parse_trainer_name("TrainerDiceI"), eps_nr=1, eps_dr=1, has_regions=False, ignore_label=3)
    trainer.loss = DeepSupervisedLoss([level, level], [0.5, 0.5])
    batch = {"data": torch.zeros(2, 1, 8, 8), "target": [t.clone() for t in targets], "keys": np.array(["c0", "c1"])}
    ours = trainer.validation_step(batch)
    theirs = nnUNetTrainer.validation_step(trainer, {**batch, "target": [t.clone() for t in targets]})
    for key in ("loss", "tp_hard", "fp_hard", "fn_hard"):
        np.testing.assert_allclose(ours[key], theirs[key])
    pred, valid = logits[0].argmax(1), target[:, 0] != 3
    for b, case in enumerate(("c0", "c1")):
        for c in (1, 2):
            p, r = (pred[b] == c) & valid[b], (target[b, 0] == c) & valid[b]
            expected = [int((p & r).sum()), int((p & ~r).sum()), int((~p & r).sum())]
            assert trainer._dicephi_validation_cases[case][:, c - 1].tolist() == expected
    assert not trainer.loss._forward_hooks  # the counting hook lives for one step


def test_run_seed_depends_on_seed_epoch_and_ddp_rank():
    def seed_of(name, epoch=0, ddp=False, rank=0):
        trainer = object.__new__(trainer_class(name))
        trainer.current_epoch, trainer.is_ddp, trainer.local_rank = epoch, ddp, rank
        return trainer._run_seed()

    assert seed_of("TrainerDiceI") is None  # unseeded, as nnU-Net
    first = seed_of("TrainerDiceI_seed3")
    assert first == seed_of("TrainerDiceI_seed3", ddp=True, rank=0)
    others = {
        seed_of("TrainerDiceI_seed4"),
        seed_of("TrainerDiceI_seed3", epoch=5),
        seed_of("TrainerDiceI_seed3", ddp=True, rank=1),
    }
    assert first not in others and len(others) == 3


def test_progress_plot_is_drawn_at_most_every_interval_and_after_the_last_epoch(tmp_path, monkeypatch):
    from nnunetv2.training.logging.nnunet_logger import MetaLogger

    from nnunet_dicephi.trainers import housekeeping

    trainer = object.__new__(trainer_class("TrainerDiceI_ep7"))
    plotted = []
    monkeypatch.setattr(MetaLogger, "plot_progress_png", lambda self, folder: plotted.append(trainer.current_epoch))
    trainer.logger = MetaLogger(str(tmp_path), False)
    trainer.output_folder, trainer.local_rank, trainer.save_every = str(tmp_path), 0, 100
    trainer.num_epochs, trainer.current_epoch, trainer._best_ema = 7, 0, 1.0
    housekeeping.throttle_progress_plot(trainer)  # as DicePhiTrainer.__init__ does
    trainer.print_to_log_file = lambda *args, **kwargs: None
    trainer.save_checkpoint = lambda filename: None
    clock = iter(12.0 * epoch for epoch in range(7))  # 12 s per epoch
    monkeypatch.setattr(housekeeping.time, "monotonic", lambda: next(clock))
    for epoch in range(7):
        for key, value in (("train_losses", 0.5), ("val_losses", 0.5), ("dice_per_class_or_region", [0.5])):
            trainer.logger.log(key, value, epoch)
        trainer.logger.log("mean_fg_dice", 0.5, epoch)
        trainer.on_epoch_start()
        trainer.on_epoch_end()
    # 30 s apart: epochs 0 (at 0 s), 3 (36 s), and the last one
    assert plotted == [0, 3, 6] and trainer.current_epoch == 7
    assert "on_epoch_end" not in vars(DicePhiTrainer)  # nnU-Net's own epoch end draws through the logger


@pytest.mark.parametrize("compile_on", [False, True])
def test_every_level_loss_is_compiled_when_nnunet_compiles(compile_on, monkeypatch):
    trainer = object.__new__(trainer_class("TrainerDiceBI_CE"))
    trainer.label_manager = types.SimpleNamespace(has_regions=False, ignore_label=None)
    trainer.is_ddp, trainer.enable_deep_supervision = False, True
    monkeypatch.setattr(trainer, "_do_i_compile", lambda: compile_on)
    monkeypatch.setattr(trainer, "_annotation_table", lambda: None)
    monkeypatch.setattr(trainer, "_level_scales", lambda: [1.0, 0.25, 0.0625])
    loss = trainer._build_loss()
    compiled = [isinstance(level, torch._dynamo.eval_frame.OptimizedModule) for level in loss.levels]
    assert compiled == [compile_on] * 3
    originals = [getattr(level, "_orig_mod", level) for level in loss.levels]
    assert [type(m).__name__ for m in originals] == ["DiceCELoss"] * 3


def test_first_training_batch_with_undeclared_labels_is_refused():
    from nnunet_dicephi.trainers.base import check_batch_labels

    manager = types.SimpleNamespace(has_regions=False, ignore_label=3, num_segmentation_heads=3)
    good = [torch.tensor([[[[0, 1], [2, 3]]]], dtype=torch.int16), torch.zeros(1, 1, 1, 1, dtype=torch.int16)]
    check_batch_labels(good, manager)  # 3 is the ignore label
    bad = [good[0].clone()]
    bad[0][0, 0, 0, 0] = 5
    with pytest.raises(ValueError, match=r"label values in \[0, 5\].*declares 3 labels.*ignore label"):
        check_batch_labels(bad, manager)
    check_batch_labels(bad, types.SimpleNamespace(has_regions=True))  # regions: one-hot channels


# --- what a checkpoint recorded is what --c and --val train with -----------------------------


def _resuming_trainer(name, tmp_path, monkeypatch, record):
    """A trainer whose nnU-Net load_checkpoint only builds the loss, as its initialize() does."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = _trainer(name, torch.zeros(2, 3, 4, 4))
    trainer.output_folder, trainer.was_initialized, trainer.is_ddp = str(tmp_path), False, False
    trainer.logged = []
    trainer.print_to_log_file = lambda *args, **kwargs: trainer.logged.append(" ".join(map(str, args)))
    trainer._dicephi_fingerprint = FINGERPRINT
    monkeypatch.setattr(nnUNetTrainer, "load_checkpoint", lambda self, f: setattr(self, "loss", self._build_loss()))
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"dicephi": record} if record is not None else {}, path)
    return trainer, str(path)


def _record_before_0_2_0(name):
    # what 0.1.x wrote: the configuration's fields, its name, no "semantics" key
    config = parse_trainer_name(name)
    record = {**config.to_dict(), "eps_per_class": None, "mime": None, "partial_labels": None}
    record.pop("semantics", None)
    return record


def test_a_run_from_before_0_2_0_continues_with_its_leaf_dice_mean(tmp_path, monkeypatch):
    trainer, path = _resuming_trainer("TrainerLeafDice", tmp_path, monkeypatch, _record_before_0_2_0("TrainerLeafDice"))
    assert trainer._build_loss().levels[0].leaf_mean == "all"  # a fresh start: Fidon's mean
    trainer.load_checkpoint(path)
    level = trainer.loss.levels[0]
    assert level.leaf_mean == "labelled"
    assert trainer.loss_record()["semantics"] == 1  # and later checkpoints say so again
    assert any("semantics 1" in line for line in trainer.logged)
    # the value is the old one: the mean over labelled maps only
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(2, 3, 4, 4, generator=g), torch.randint(0, 2, (2, 1, 4, 4), generator=g)
    old = L.leaf_dice_loss(logits.softmax(1), target, include_background=False, mean_over="labelled")
    new = L.leaf_dice_loss(logits.softmax(1), target, include_background=False)
    assert level(logits, target).item() == pytest.approx(old.item(), abs=1e-6)
    assert abs(old.item() - new.item()) > 1e-3


def test_a_lovasz_run_from_before_0_2_0_keeps_the_background_out(tmp_path, monkeypatch):
    record = {**_record_before_0_2_0("TrainerLovasz"), "include_background": False, "trainer_name": "TrainerLovasz"}
    trainer, path = _resuming_trainer("TrainerLovasz", tmp_path, monkeypatch, record)
    fresh = trainer._build_loss().levels[0]
    assert fresh.include_background and not fresh.per_image  # Berman's defaults
    trainer.load_checkpoint(path)
    assert not trainer.loss.levels[0].include_background and trainer.loss.levels[0].per_image
    assert trainer.loss_record()["include_background"] is False


def test_a_fresh_start_and_a_current_checkpoint_train_this_versions_loss(tmp_path, monkeypatch):
    trainer, _ = _resuming_trainer("TrainerLeafDice", tmp_path, monkeypatch, None)
    trainer.loss = trainer._build_loss()  # a fresh start: no checkpoint
    assert trainer.loss.levels[0].leaf_mean == "all" and trainer.loss_record()["semantics"] == 2
    current = {**parse_trainer_name("TrainerLeafDice").to_dict(), "semantics": 2}
    trainer, path = _resuming_trainer("TrainerLeafDice", tmp_path, monkeypatch, current)
    trainer.load_checkpoint(path)
    assert trainer.loss.levels[0].leaf_mean == "all" and trainer.logged == []


def test_a_checkpoint_from_a_newer_version_is_refused_before_loading(tmp_path, monkeypatch):
    record = {**parse_trainer_name("TrainerLeafDice").to_dict(), "semantics": 3}
    trainer, path = _resuming_trainer("TrainerLeafDice", tmp_path, monkeypatch, record)
    with pytest.raises(RuntimeError, match=r"semantics 3 is newer than this installation knows.*without --c"):
        trainer.load_checkpoint(path)
    assert not hasattr(trainer, "_checkpoint_record")


def test_an_initialised_trainer_rebuilds_its_loss_from_the_checkpoint(tmp_path, monkeypatch):
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer, path = _resuming_trainer("TrainerLeafDice", tmp_path, monkeypatch, _record_before_0_2_0("TrainerLeafDice"))
    trainer.loss, trainer.was_initialized = trainer._build_loss(), True
    monkeypatch.setattr(nnUNetTrainer, "load_checkpoint", lambda self, f: None)  # initialised: no rebuild there
    trainer.load_checkpoint(path)
    assert trainer.loss.levels[0].leaf_mean == "labelled"


# --- the cross-entropy baselines: TrainerWCE's weights come from the statistics, once -----------


def _cross_entropy_trainer(name, tmp_path, monkeypatch, volumes=(900.0, 90.0, 10.0)):
    """A trainer with three deep-supervision outputs whose dataset statistics are ``volumes``."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    from nnunet_dicephi.statistics import DatasetStatistics

    trainer = object.__new__(trainer_class(name))
    trainer.label_manager = types.SimpleNamespace(has_regions=False, ignore_label=None, has_ignore_label=False)
    trainer._dicephi_table = load_manifest(DATASET, ["c0", "c1"])
    trainer.output_folder, trainer.was_initialized, trainer.is_ddp = str(tmp_path), False, False
    trainer.print_to_log_file = lambda *args, **kwargs: None
    trainer._dicephi_fingerprint = FINGERPRINT
    trainer.statistics_read = 0

    def statistics():
        trainer.statistics_read += 1
        return DatasetStatistics(("0", "1", "2"), tuple(volumes), int(sum(volumes)), cases=2)

    monkeypatch.setattr(trainer, "dataset_statistics", statistics)
    monkeypatch.setattr(trainer, "_do_i_compile", lambda: False)
    monkeypatch.setattr(trainer, "_level_scales", lambda: [1.0, 0.25, 0.0625])
    monkeypatch.setattr(nnUNetTrainer, "load_checkpoint", lambda self, f: setattr(self, "loss", self._build_loss()))
    return trainer


def test_wce_weights_are_the_inverse_class_frequencies_of_the_statistics_at_every_output(tmp_path, monkeypatch):
    trainer = _cross_entropy_trainer("TrainerWCE", tmp_path, monkeypatch)
    loss = trainer._build_loss()
    expected = L.inverse_frequency_weights(torch.tensor([900.0, 90.0, 10.0]))
    assert [type(level).__name__ for level in loss.levels] == ["WeightedCrossEntropyLoss"] * 3
    for level in loss.levels:  # ratios of volumes: the same at every resolution
        torch.testing.assert_close(level.class_weights, expected)
    # the deep-supervision sum of weighted marginal CEs, with the batch's annotated mask
    g = torch.Generator().manual_seed(5)
    outputs = [torch.randn(2, 3, n, n, generator=g) for n in (8, 4, 2)]
    targets = [torch.randint(0, 3, (2, 1, n, n), generator=g) for n in (8, 4, 2)]
    targets = [torch.where((t == 2) & (torch.arange(2).view(2, 1, 1, 1) == 0), 0, t) for t in targets]
    annotated = torch.tensor([[True, True, False], [True, True, True]])
    value = loss(outputs, targets, annotated)
    parts = [L.marginal_cross_entropy(o, t, annotated, class_weights=expected) for o, t in zip(outputs, targets)]
    assert value.item() == pytest.approx(sum(w * p.item() for w, p in zip(loss.weights, parts)), rel=1e-6)
    assert loss.weights[-1] == 0.0


def test_wce_records_its_weights_and_a_resumed_run_reuses_them(tmp_path, monkeypatch):
    import json

    trainer = _cross_entropy_trainer("TrainerWCE", tmp_path, monkeypatch)
    record = json.loads(json.dumps(trainer.loss_record()))  # as dicephi_loss.json and checkpoints hold it
    expected = L.inverse_frequency_weights(torch.tensor([900.0, 90.0, 10.0])).tolist()
    assert record["class_weights"] == pytest.approx(expected)
    assert record["trainer_name"] == "TrainerWCE" and record["semantics"] == 2 and record["initial_lr"] == 1e-2
    assert LossConfig.from_record(record) == parse_trainer_name("TrainerWCE")
    assert record["mime"] is None and record["eps_per_class"] is None

    # --c / --val: the checkpoint's weights, although the statistics now say otherwise
    path = tmp_path / "checkpoint_latest.pth"
    torch.save({"dicephi": record}, path)
    resumed = _cross_entropy_trainer("TrainerWCE", tmp_path, monkeypatch, volumes=(500.0, 250.0, 250.0))
    resumed.load_checkpoint(str(path))
    assert resumed.statistics_read == 0
    assert resumed.effective_loss() == (parse_trainer_name("TrainerWCE"), 2)
    for level in resumed.loss.levels:
        assert level.class_weights.tolist() == pytest.approx(expected)
    assert resumed.loss_record()["class_weights"] == record["class_weights"]

    # a fresh start (no checkpoint: also --c on a run killed in its first epoch) computes its own
    # weights; an earlier run's dicephi_loss.json in the folder is not its record
    (tmp_path / "dicephi_loss.json").write_text(json.dumps(record))
    fresh = _cross_entropy_trainer("TrainerWCE", tmp_path, monkeypatch, volumes=(500.0, 250.0, 250.0))
    own = L.inverse_frequency_weights(torch.tensor([500.0, 250.0, 250.0])).tolist()
    assert fresh._class_weights().tolist() == pytest.approx(own) and fresh.statistics_read == 1


def test_ce_trainer_builds_the_marginal_ce_and_records_no_weights(tmp_path, monkeypatch):
    trainer = _cross_entropy_trainer("TrainerCE", tmp_path, monkeypatch)
    loss = trainer._build_loss()
    assert [type(level).__name__ for level in loss.levels] == ["CrossEntropyLoss"] * 3
    record = trainer.loss_record()
    assert record["class_weights"] is None and trainer.statistics_read == 0  # no statistics needed
    assert LossConfig.from_record(record) == parse_trainer_name("TrainerCE")


def test_wce_refuses_region_training(tmp_path, monkeypatch):
    trainer = _cross_entropy_trainer("TrainerWCE", tmp_path, monkeypatch)
    trainer.label_manager = types.SimpleNamespace(has_regions=True, ignore_label=None)
    with pytest.raises(ValueError, match="region-based .* train TrainerCE"):
        trainer._build_loss()


def test_ce_trainer_loss_equals_nnunets_ce_trainer_loss(tmp_path, monkeypatch):
    """nnUNetTrainerCELoss: RobustCrossEntropyLoss in DeepSupervisionWrapper, weights 1/2^i, the last 0."""
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
    from nnunetv2.training.loss.robust_ce_loss import RobustCrossEntropyLoss

    ours = _cross_entropy_trainer("TrainerCE", tmp_path, monkeypatch)._build_loss()
    theirs = DeepSupervisionWrapper(RobustCrossEntropyLoss(), [4 / 6, 2 / 6, 0.0])
    g = torch.Generator().manual_seed(6)
    outputs = [torch.randn(2, 3, n, n, generator=g, dtype=torch.float64) for n in (8, 4, 2)]
    targets = [torch.randint(0, 3, (2, 1, n, n), generator=g) for n in (8, 4, 2)]
    values = []
    for loss, as_target in ((ours, lambda t: t), (theirs, lambda t: t.double())):
        leaves = [o.clone().requires_grad_() for o in outputs]
        value = loss(leaves, [as_target(t) for t in targets])
        value.backward()
        values.append((value.detach(), [leaf.grad for leaf in leaves[:2]]))
    torch.testing.assert_close(values[0][0], values[1][0], rtol=0, atol=1e-9)
    for a, b in zip(values[0][1], values[1][1]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
