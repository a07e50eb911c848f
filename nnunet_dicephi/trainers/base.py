"""The one base trainer: nnU-Net's ``nnUNetTrainer`` with the loss taken from a :class:`LossConfig`.

Everything else — planning, patch sampling, augmentation, deep supervision targets, checkpoints,
``--c``, ``--val``, inference — is nnU-Net's own. The class attribute ``loss_config`` is the only
difference between trainers; nnU-Net's constructor signature is kept exactly, because nnU-Net
rebuilds trainers from their name and its five standard arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from typing import ClassVar

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from torch import Tensor, nn

import nnunet_dicephi
from nnunet_dicephi import losses as L
from nnunet_dicephi import statistics
from nnunet_dicephi._files import write_text_atomically
from nnunet_dicephi.evaluation import ALL_PAIRS_FILE, VALIDATION_FILE, append_validation_record
from nnunet_dicephi.loss_config import HEURISTIC, REGISTRY, SEMANTICS, LossConfig, loss_options, trainer_name
from nnunet_dicephi.losses._validation import labels_outside
from nnunet_dicephi.partial_labels import MANIFEST_KEY, AnnotationTable, load_manifest

from . import seeding
from .housekeeping import checkpoint_with, remove_partial_checkpoints, throttle_progress_plot

CONFIG_FILE = "dicephi_loss.json"
CHECKPOINT_KEY = "dicephi"


class DeepSupervisedLoss(nn.Module):
    """Weighted sum of one loss module per deep-supervision output, each with its own ε.

    nnU-Net's ``DeepSupervisionWrapper`` applies one module to every output; a count-valued ε must
    instead shrink with each output's voxel count, so every level here has its own module.
    """

    def __init__(self, levels: list[nn.Module], weights: list[float]) -> None:
        super().__init__()
        if len(levels) != len(weights) or not any(w != 0 for w in weights):
            raise ValueError("one loss per level and at least one non-zero weight are needed")
        self.levels = nn.ModuleList(levels)
        self.weights = tuple(float(w) for w in weights)
        self.annotated: Tensor | None = None
        """The batch's ``(B, C)`` annotated mask; nnU-Net calls ``loss(output, target)`` only, so the
        trainer sets it around each step (see ``DicePhiTrainer.train_step``)."""

    def forward(self, outputs, targets, annotated: Tensor | None = None) -> Tensor:
        annotated = self.annotated if annotated is None else annotated
        if not isinstance(outputs, (list, tuple)):
            return self.levels[0](outputs, targets, annotated)
        total = None
        for weight, loss, output, target in zip(self.weights, self.levels, outputs, targets):
            if weight == 0.0:
                continue
            value = weight * loss(output, target, annotated)
            total = value if total is None else total + value
        return total


def build_level_loss(
    config: LossConfig,
    *,
    eps_nr,
    eps_dr,
    has_regions: bool,
    ignore_label: int | None,
    mime: tuple | None = None,
    class_weights: Tensor | None = None,
    distributed: bool = False,
    semantics: int = SEMANTICS,
) -> nn.Module:
    """The loss module for one output, from the configuration and that output's ε.

    ε values are numbers (added once per subset of Φ), or per-class lists over the output channels:
    the heuristic, an expected labelled volume per map, added once per kept map of a subset
    (``eps_per="map"``: a subset's ε is the expected labelled volume of the maps it holds).
    ``class_weights`` are the weighted cross-entropy's, one per output channel; being ratios of
    class volumes they are the same at every output. ``semantics`` is the version the run recorded
    (:data:`~nnunet_dicephi.loss_config.SEMANTICS`). The module and which options it takes come from
    :data:`~nnunet_dicephi.loss_config.REGISTRY`.
    """
    spec = REGISTRY[config.loss]
    options = {
        "nonlinearity": "sigmoid" if has_regions else "softmax",
        "include_background": True if has_regions else config.include_background,
        "ignore_label": ignore_label,
        **loss_options(config, semantics),
    }
    if spec.default_phi is not None:
        options["phi"] = config.phi
    if spec.takes_eps:
        per_map = any(isinstance(e, (list, tuple)) for e in (eps_nr, eps_dr))
        options["eps_nr"], options["eps_dr"] = (
            torch.tensor(e, dtype=torch.float32) if isinstance(e, (list, tuple)) else e for e in (eps_nr, eps_dr)
        )
        options["eps_per"] = "map" if per_map else "subset"
    if spec.takes_alpha_beta:
        options["alpha"], options["beta"] = config.alpha, config.beta
    if spec.dataset_constants:
        if mime is None:
            raise ValueError(f"the {config.loss} loss needs its constants a, b from the dataset statistics")
        options["a"], options["b"] = mime
    if spec.class_frequencies:
        if class_weights is None:
            raise ValueError(f"the {config.loss} loss needs class weights from the dataset statistics")
        options["class_weights"] = class_weights
    if spec.gathers_sums:
        # under DDP the overlap losses gather every process's map sums, so Φ is global (Lovász stays
        # per process: its sorting does not decompose into sums)
        options["distributed"] = distributed
    region = getattr(L, spec.module)(**options)
    if config.exclusion and has_regions:
        raise ValueError(
            f"{config.loss} with excl: the exclusion term needs mutually exclusive labels, and this dataset "
            "has regions (sigmoid outputs); train without excl"
        )
    if config.ce or config.exclusion:
        return L.DiceCELoss(region, weight_ce=float(config.ce), weight_exclusion=float(config.exclusion))
    return region


class DicePhiTrainer(nnUNetTrainer):
    """Base of every trainer of this project; subclasses only set ``loss_config``.

    It overrides nnU-Net only where the loss needs it, each override saying why in its first line:
    ``__init__`` (the run length the name sets), ``_build_loss`` (the loss), ``do_split`` (one source
    of a merge), ``load_checkpoint`` and ``save_checkpoint`` (the record in every checkpoint),
    ``train_step`` and ``validation_step`` (the batch's annotated mask, counts per case),
    ``on_validation_epoch_end`` (the per-case record), ``on_train_start`` (changed data refused,
    seeding, the record beside the checkpoints) and ``perform_actual_validation`` (means over
    annotated pairs). What is not about the loss lives in :mod:`.housekeeping` and :mod:`.seeding`.
    """

    loss_config: ClassVar[LossConfig] = LossConfig()
    #: nnU-Net redraws ``progress.png`` (a 30 x 54 inch figure, about 1 s on a CPU) after every epoch;
    #: here at most once per this many seconds, and always after the last epoch
    progress_plot_interval_s: ClassVar[float] = 30.0

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = torch.device("cuda"),  # noqa: B008 - nnU-Net's own signature
    ) -> None:
        """nnU-Net's, then the run length and learning rate the name sets (nnU-Net records these five arguments)."""
        super().__init__(plans, configuration, fold, dataset_json, device)
        # under DDP nnU-Net splits batch size and oversampling share per rank; the statistics model
        # the global batch, so every rank derives the same ε
        self._global_oversample_foreground_percent = self.oversample_foreground_percent
        config = self.loss_config
        if config.epochs is not None:
            self.num_epochs = config.epochs
            # short runs (sweeps, tests) checkpoint often enough to be resumed with --c
            self.save_every = max(1, min(self.save_every, config.epochs // 4))
        if config.iterations is not None:
            self.num_iterations_per_epoch = config.iterations
            self.num_val_iterations_per_epoch = max(1, config.iterations // 5)
        self.initial_lr = config.initial_lr  # read by configure_optimizers in initialize()
        self._labels_checked = False
        throttle_progress_plot(self)

    # --- loss --------------------------------------------------------------------------------

    def _level_scales(self) -> list[float]:
        """Voxel-count ratio of each deep-supervision output to the full-resolution patch."""
        if not self.enable_deep_supervision:
            return [1.0]
        return [float(np.prod(scale)) for scale in self._get_deep_supervision_scales()]

    # --- data: manifest and statistics ---------------------------------------------------------

    def _annotation_table(self) -> AnnotationTable | None:
        """The validated partial-label manifest of the dataset (None when there is none, or with ``nomanifest``)."""
        if not self.loss_config.manifest:
            return None
        if not hasattr(self, "_dicephi_table"):
            if self.dataset_class is None:
                self.do_split()
            cases = self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)
            source = os.path.join(self.preprocessed_dataset_folder_base, "dataset.json")
            self._dicephi_table = load_manifest(self.dataset_json, cases, source=source)
        return self._dicephi_table

    def _annotated_mask(self, keys) -> Tensor | None:
        table = self._annotation_table()
        if table is None:
            return None
        return torch.from_numpy(table.mask(keys)).to(self.device)

    def _sampling_model(self) -> statistics.SamplingModel:
        patch = tuple(int(p) for p in self.configuration_manager.patch_size)
        initial = tuple(int(p) for p in self.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[2])
        need_to_pad = None
        if len(patch) == 2:  # nnU-Net samples 2D patches as (1, x, y) windows of the 3D case
            patch, initial = (1, *patch), (1, *initial)
            if _pads_2d_patches_none():
                need_to_pad = (0, 0, 0)
        return statistics.SamplingModel(
            patch_size=patch,
            initial_patch_size=initial,
            batch_size=int(self.configuration_manager.batch_size),
            oversample_foreground_percent=float(self._global_oversample_foreground_percent),
            ignore_label=self.label_manager.ignore_label,
            need_to_pad=need_to_pad,
        )

    def do_split(self):
        """nnU-Net's split; with ``source<ID>``, nnU-Net's split of one merged source's cases alone."""
        if self.loss_config.source is None:
            return super().do_split()
        from nnunet_dicephi.merge import source_cases

        if self.dataset_class is None:
            super().do_split()  # which dataset class reads the preprocessed data (nnU-Net infers it here)
        identifiers = self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)
        train_keys, validation_keys = source_cases(self.dataset_json, self.loss_config.source, identifiers, self.fold)
        if "_dicephi_source_logged" not in self.__dict__:  # nnU-Net calls do_split several times
            self._dicephi_source_logged = True
            self.print_to_log_file(
                f"source{self.loss_config.source:03d}: trains on nnU-Net's split of that source's cases alone, "
                f"{len(train_keys)} training and {len(validation_keys)} validation cases"
            )
        return train_keys, validation_keys

    def data_fingerprint(self) -> dict[str, str]:
        """What this run's statistics follow from, as digests (:func:`~nnunet_dicephi.statistics.data_fingerprint`).

        The fold's training cases' preprocessed label maps and properties, the manifest, the labels,
        the plans' configuration and the fold; computed once per process.
        """
        if "_dicephi_fingerprint" not in self.__dict__:
            train_keys, _ = self.do_split()
            self._dicephi_fingerprint = statistics.data_fingerprint(
                self.preprocessed_dataset_folder,
                train_keys,
                manifest=self.dataset_json.get(MANIFEST_KEY) if self.loss_config.manifest else None,
                labels={key: self.dataset_json.get(key) for key in ("labels", "regions_class_order")},
                plans={
                    "plans": self.plans_manager.plans_name,
                    "configuration": self.configuration_manager.configuration,
                },
                fold=self.fold,
            )
        return self._dicephi_fingerprint

    def dataset_statistics(self) -> statistics.DatasetStatistics:
        """Expected labelled volume per output channel of one training patch.

        Over this fold's training cases only; cached beside the preprocessed data under the data's
        fingerprint and the sampling model, so that changed data (re-preprocessed, a manifest edited)
        is computed again.
        """
        if "_dicephi_statistics" in self.__dict__:
            return self._dicephi_statistics
        train_keys, _ = self.do_split()
        model = self._sampling_model()
        key = {"version": statistics.VERSION, "data": self.data_fingerprint()["fingerprint"], "model": model.__dict__}

        def compute() -> statistics.DatasetStatistics:
            dataset = self.dataset_class(self.preprocessed_dataset_folder, train_keys)

            def cases():
                for key in dataset.identifiers:
                    _, seg, _, properties = dataset.load_case(key)
                    yield seg, properties.get("class_locations")  # read lazily, only if needed

            table = self._annotation_table()
            annotated = None if table is None else table.mask(list(dataset.identifiers))
            return statistics.compute_statistics(cases(), self.label_manager, model, annotated)

        folder = os.path.join(self.preprocessed_dataset_folder_base, statistics.CACHE_FOLDER)
        name = f"{self.plans_manager.plans_name}_{self.configuration_name}_fold{self.fold}"
        path = statistics.cache_path(folder, name, key)
        self._dicephi_statistics, _ = statistics.cached(path, key, compute, log=self.print_to_log_file)
        return self._dicephi_statistics

    def _recorded(self) -> dict | None:
        """The record of the checkpoint this run continues (``--c``) or validates (``--val``); None on a fresh start.

        A fresh start computes its own statistics: a ``dicephi_loss.json`` left in the folder by an
        earlier run describes that run, not this one.
        """
        return self.__dict__.get("_checkpoint_record")

    def effective_loss(self) -> tuple[LossConfig, int]:
        """The loss configuration and semantics version (:data:`SEMANTICS`) this run trains with.

        A fresh start: the class's ``loss_config`` under this version's semantics. A run continued
        with ``--c`` or validated with ``--val``: what its checkpoint recorded (nnU-Net loads the
        checkpoint through :meth:`load_checkpoint`), so a package update never changes the loss
        under a model that is half trained; checkpoints from before the version was recorded are 1.
        """
        record = self.__dict__.get("_checkpoint_record")
        if record is None:
            return self.loss_config, SEMANTICS
        return LossConfig.from_record(record), int(record.get("semantics", 1))

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        """nnU-Net's, once the checkpoint's record says which loss ``--c`` and ``--val`` go on with, or why they cannot.

        The loss becomes the recorded one (:meth:`effective_loss`). Refuses, before loading anything,
        a checkpoint without a record, one whose record this installation cannot reproduce (written
        by a newer version, or not a configuration of this package), and one that recorded another
        loss than this trainer's name says: continuing it would train one loss into another's results
        folder. The one accepted difference is the semantics version of the same name (a run started
        under an earlier version keeps its loss).
        """
        checkpoint = filename_or_checkpoint
        if isinstance(checkpoint, str):
            try:
                checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=False, mmap=True)
            except RuntimeError:  # not a zip archive: no memory map, read it whole
                checkpoint = torch.load(filename_or_checkpoint, map_location="cpu", weights_only=False)
        record = checkpoint.get(CHECKPOINT_KEY) if isinstance(checkpoint, dict) else None
        name = type(self).__name__
        if record is None:
            written_by = checkpoint.get("trainer_name") if isinstance(checkpoint, dict) else None
            raise RuntimeError(
                f"cannot continue or validate {self.output_folder} with {name}: its checkpoint holds no nnunet-dicephi "
                f"record of the loss it trained with (written by {written_by or 'an unknown trainer'}); "
                "continue it with the trainer that wrote it, or train afresh without --c"
            )
        try:
            recorded, semantics = LossConfig.from_record(record), int(record.get("semantics", 1))
            loss_options(recorded, semantics)
        except (TypeError, ValueError) as error:
            raise RuntimeError(
                f"cannot continue {self.output_folder}: its checkpoint recorded a loss this installation cannot "
                f"reproduce ({error}); install the nnunet-dicephi version that started the run, or train afresh "
                "without --c"
            ) from None
        same_name = record.get("trainer_name") == name
        if recorded != self.loss_config and not (semantics < SEMANTICS and same_name):
            theirs, ours = _differences(recorded, self.loss_config)
            raise RuntimeError(
                f"cannot continue or validate {self.output_folder} with {name}: its checkpoint recorded "
                f"{record.get('trainer_name') or trainer_name(recorded)} ({theirs}), not {name} ({ours}); "
                f"continue it with -tr {trainer_name(recorded)}, or train {name} afresh without --c"
            )
        built = self.effective_loss() if self.was_initialized else None
        self._checkpoint_record = record
        if semantics != SEMANTICS or recorded != self.loss_config:
            self.print_to_log_file(
                f"nnunet-dicephi: this run recorded loss semantics {semantics} "
                f"({json.dumps({key: record.get(key) for key in ('loss', 'phi', 'include_background')})}); "
                f"it continues with them (a fresh start trains semantics {SEMANTICS}, CHANGELOG.md)"
            )
        super().load_checkpoint(filename_or_checkpoint)
        if built is not None and built != self.effective_loss():
            self.loss = self._build_loss()  # initialised before the record was known

    def resolved_eps(self) -> tuple:
        """Full-resolution ε_nr, ε_dr: numbers, or per-class lists for the heuristic.

        A run continued with ``--c`` or validated with ``--val`` reuses the values its checkpoint
        recorded, so they never change under a trained model; a fresh start computes them.
        """
        config, _ = self.effective_loss()
        if not config.uses_heuristic_eps:
            return config.eps_nr, config.eps_dr
        record = self._recorded()
        if record is not None and record.get("eps_per_class") is not None:
            heuristic = record["eps_per_class"]
        else:
            heuristic = list(self.dataset_statistics().heuristic_eps)
        return tuple(heuristic if value == HEURISTIC else value for value in (config.eps_nr, config.eps_dr))

    def _mime_constants(self) -> tuple | None:
        if not REGISTRY[self.effective_loss()[0].loss].dataset_constants:
            return None
        record = self._recorded()
        if record is not None and record.get("mime") is not None:
            a, b = record["mime"]["a"], record["mime"]["b"]
        else:
            a, b = (values.tolist() for values in self.dataset_statistics().mime_constants())
        return torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32)

    def _class_weights(self) -> Tensor | None:
        """The weighted cross-entropy's class weights: inverse class frequencies of the training patches.

        f_c = E|y_c| / |patch|, the expected share of class c in one training patch as nnU-Net samples
        patches, over this fold's training cases (the statistics behind the heuristic ε, background
        included), and w_c = 1 / (K f_c) (:func:`~nnunet_dicephi.losses.inverse_frequency_weights`).
        Why this formula: Eelbode, Bertels et al. (TMI 2020) compare the metric-sensitive losses with
        "per-pixel losses, such as (weighted) cross-entropy" and question "the existence of an optimal
        weighting scheme for weighted cross-entropy"; the summary page of the paper at hand names no
        weights, so the common scheme is taken, counted on the patches the loss actually sees. A run
        that recorded its weights (``--c``, ``--val``) reuses them.
        """
        if not REGISTRY[self.effective_loss()[0].loss].class_frequencies:
            return None
        record = self._recorded()
        if record is not None and record.get("class_weights") is not None:
            return torch.tensor(record["class_weights"], dtype=torch.float32)
        if self.label_manager.has_regions:
            raise ValueError(
                f"{self.effective_loss()[0].loss} weighs a voxel by its label's class; region-based (sigmoid) "
                "training has no such class: train TrainerCE, whose BCE runs over every region"
            )
        return L.inverse_frequency_weights(torch.tensor(self.dataset_statistics().expected_volume))

    # --- loss --------------------------------------------------------------------------------

    def _build_loss(self) -> nn.Module:
        """The loss the configuration names: one module per deep-supervision output, each with that output's ε."""
        config, semantics = self.effective_loss()
        lm = self.label_manager
        self._annotation_table()  # validate the manifest before anything trains
        eps_nr, eps_dr = self.resolved_eps()
        mime = self._mime_constants()
        class_weights = self._class_weights()
        levels = [
            build_level_loss(
                config,
                eps_nr=_scaled(eps_nr, scale),
                eps_dr=_scaled(eps_dr, scale),
                has_regions=lm.has_regions,
                ignore_label=lm.ignore_label,
                mime=mime,
                class_weights=class_weights,
                distributed=self.is_ddp,
                semantics=semantics,
            )
            for scale in self._level_scales()
        ]
        weights = np.array([1 / (2**i) for i in range(len(levels))])
        if len(levels) > 1:
            # nnU-Net's choice: the lowest output gets no weight (a tiny one under DDP without
            # compile, so every parameter still receives a gradient)
            weights[-1] = 1e-6 if self.is_ddp and not self._do_i_compile() else 0.0
        weights = weights / weights.sum()
        if self._do_i_compile():
            # as nnU-Net compiles its Dice loss (loss.dc): here each level's whole module, one graph each
            levels = [torch.compile(level) for level in levels]
        return DeepSupervisedLoss(levels, weights.tolist())

    @contextlib.contextmanager
    def _batch_annotation(self, batch: dict):
        """Hand the batch's annotated mask to the loss for the duration of one step."""
        self.loss.annotated = self._annotated_mask(batch["keys"])
        try:
            yield self.loss.annotated
        finally:
            self.loss.annotated = None

    def train_step(self, batch: dict) -> dict:
        """nnU-Net's step, the loss told which classes each case annotates; the first batch's labels checked."""
        if not self._labels_checked:
            check_batch_labels(batch["target"], self.label_manager)
            self._labels_checked = True
        with self._batch_annotation(batch):
            return super().train_step(batch)

    def validation_step(self, batch: dict) -> dict:
        """nnU-Net's step, with exact counts per case recorded and unannotated (case, class) pairs left out of its sums.

        The counts come from the output and target as nnU-Net hands them to the loss (a forward hook,
        before nnU-Net edits the target in place); nnU-Net's own sums (in float16 since 2.8) are
        replaced by their exact totals, which without a manifest equal them. The per-case counts go to
        :data:`VALIDATION_FILE` at the end of the epoch
        (:func:`nnunet_dicephi.evaluation.append_validation_record`).
        """
        with self._batch_annotation(batch) as annotated:
            if self.label_manager.has_regions:  # manifests are refused for regions: nnU-Net's own step
                return super().validation_step(batch)
            counted = []
            ignore_label = self.label_manager.ignore_label if self.label_manager.has_ignore_label else None
            hook = self.loss.register_forward_hook(
                lambda _, inputs, __: counted.append(map_counts(inputs[0], inputs[1], ignore_label))
            )
            try:
                result = super().validation_step(batch)
            finally:
                hook.remove()
        per_sample = counted[0][:, :, 1:].cpu().numpy().astype(np.float64)  # (3, B, C-1), background dropped
        self._record_validation_cases(batch["keys"], per_sample)
        if annotated is not None:
            per_sample = per_sample * annotated[:, 1:].cpu().numpy()
        summed = per_sample.sum(1)
        return {**result, "tp_hard": summed[0], "fp_hard": summed[1], "fn_hard": summed[2]}

    # --- per-case validation record ----------------------------------------------------------

    def _record_validation_cases(self, keys, per_sample: np.ndarray) -> None:
        cases = self.__dict__.setdefault("_dicephi_validation_cases", {})
        for index, key in enumerate(keys):
            key = str(key)
            cases[key] = cases[key] + per_sample[:, index] if key in cases else per_sample[:, index].copy()

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        """nnU-Net's pseudo-Dice, then the epoch's counts per case appended to the validation record."""
        super().on_validation_epoch_end(val_outputs)
        cases = self.__dict__.pop("_dicephi_validation_cases", {})
        if self.is_ddp:
            import torch.distributed as dist

            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, cases)
            cases = {}
            for part in gathered:
                for key, value in part.items():
                    cases[key] = cases[key] + value if key in cases else value
        if self.local_rank == 0 and cases:  # region datasets run nnU-Net's own step and record nothing
            append_validation_record(os.path.join(self.output_folder, VALIDATION_FILE), self.current_epoch, cases)

    # --- recording the configuration ----------------------------------------------------------

    def loss_record(self) -> dict:
        """The resolved loss configuration: what trained this model, with every ε per level.

        ``data_fingerprint`` is the fingerprint of the data the run started on (the checkpoint's, once
        continued); ``package_version`` the version that wrote this record.
        """
        eps_nr, eps_dr = self.resolved_eps()
        config, semantics = self.effective_loss()
        record = config.to_dict()
        record["semantics"] = semantics
        record["package_version"] = nnunet_dicephi.__version__
        recorded = self._recorded()
        record["data_fingerprint"] = (
            recorded.get("data_fingerprint") if recorded is not None else self.data_fingerprint()
        )
        # which rule computed the recorded statistics (statistics.VERSION): kept from the checkpoint
        record["statistics_version"] = (
            recorded.get("statistics_version", 1) if recorded is not None else statistics.VERSION
        )
        record["eps_per"] = "map" if isinstance(eps_nr, list) or isinstance(eps_dr, list) else "subset"
        record["eps_per_class"] = eps_nr if isinstance(eps_nr, list) else (eps_dr if isinstance(eps_dr, list) else None)
        record["eps_per_level"] = [
            {"scale": scale, "eps_nr": _scaled(eps_nr, scale), "eps_dr": _scaled(eps_dr, scale)}
            for scale in self._level_scales()
        ]
        mime = self._mime_constants()
        record["mime"] = None if mime is None else {"a": mime[0].tolist(), "b": mime[1].tolist()}
        class_weights = self._class_weights()
        record["class_weights"] = None if class_weights is None else class_weights.tolist()
        table = self._annotation_table()
        record["partial_labels"] = (
            None
            if table is None
            else {
                "cases_listed": len(table.rows),
                "cases_partial": sum(not row.all() for row in table.rows.values()),
            }
        )
        return record

    # --- seeded training ------------------------------------------------------------------------

    def _run_seed(self) -> int | None:
        """The seed of this training start: from the name's seed and the epoch training starts at."""
        seed = self.loss_config.seed
        if seed is None:
            return None
        # under DDP every rank draws its own patches (nnU-Net broadcasts rank 0's initial weights)
        rank = (self.local_rank,) if self.is_ddp and self.local_rank > 0 else ()
        return seeding.derived_seed(seed, self.current_epoch, *rank)

    def _check_data_unchanged(self) -> None:
        """Refuse to continue (``--c``) a run on data other than it started on (its recorded fingerprint).

        The recorded ε, Mime constants and class weights came from the data the run started on;
        training on changed data under them would make the record describe neither.
        """
        recorded = (self._recorded() or {}).get("data_fingerprint")
        if recorded is None:  # not a continued run, or a checkpoint written before fingerprints were recorded
            return
        current = self.data_fingerprint()
        if recorded.get("fingerprint") != current["fingerprint"]:
            changes = statistics.fingerprint_changes(recorded, current) or ["the data"]
            raise RuntimeError(
                f"cannot continue {self.output_folder}: {', '.join(changes)} changed since this run started "
                f"(data fingerprint {recorded.get('fingerprint', '?')[:12]}, now {current['fingerprint'][:12]}); "
                "restore the data it started on to continue, or train afresh without --c"
            )

    def on_train_start(self) -> None:
        """Before nnU-Net's start: refuse changed data (``--c``), seed; after: sweep half-saved checkpoints, record."""
        self._check_data_unchanged()
        if self.current_epoch == 0 and self.local_rank == 0:
            # a fresh start replaces an earlier run's record; --c appends to it
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.output_folder, VALIDATION_FILE))
        seed = self._run_seed()
        seeded = contextlib.nullcontext()
        if seed is not None:
            # before nnU-Net builds the network (fresh runs); its get_dataloaders (the module whose
            # globals it reads) then builds seeded, ordered augmenters
            seeding.seed_process(seed)
            seeded = seeding.ordered_augmenters(sys.modules[nnUNetTrainer.__module__], seed)
            self.print_to_log_file(f"nnunet-dicephi: seed {self.loss_config.seed}, from epoch {self.current_epoch}")
        with seeded:
            super().on_train_start()
        if self.local_rank == 0:
            remove_partial_checkpoints(self.output_folder)
        record = self.loss_record()
        self.print_to_log_file("nnunet-dicephi loss configuration: " + json.dumps(record, sort_keys=True))
        if self.local_rank == 0:
            write_text_atomically(
                os.path.join(self.output_folder, CONFIG_FILE), json.dumps(record, indent=2, sort_keys=True)
            )

    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint with the loss record added, written once and renamed into place when complete.

        See :func:`~nnunet_dicephi.trainers.housekeeping.checkpoint_with`; other ranks and disabled
        checkpointing write nothing, as in nnU-Net.
        """
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)
            return
        with checkpoint_with({CHECKPOINT_KEY: self.loss_record()}) as written:  # nnU-Net's dict has no free slot
            super().save_checkpoint(filename)
        if not written:
            raise RuntimeError(
                f"nnU-Net's save_checkpoint wrote {filename} without torch.save, so nnunet-dicephi could not add "
                "the loss record that --c and --val read; this nnunet-dicephi does not support the installed nnU-Net"
            )

    # --- final validation ----------------------------------------------------------------------

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        """nnU-Net's final validation, then its summary restricted to the annotated (case, class) pairs."""
        super().perform_actual_validation(save_probabilities)
        table = self._annotation_table()
        summary = os.path.join(self.output_folder, "validation", "summary.json")
        if self.local_rank != 0 or not os.path.isfile(summary):
            return
        if table is not None and table.is_partial:
            from nnunet_dicephi.evaluation import restrict_summary_to_annotated

            restrict_summary_to_annotated(summary, table, self.dataset_json["file_ending"])
        else:  # every pair is annotated now: an earlier validation's all-pairs copy would be stale
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(self.output_folder, "validation", ALL_PAIRS_FILE))


def map_counts(output, target, ignore_label: int | None) -> Tensor:
    """True positives, false positives, false negatives of every (case, class) map, shape ``(3, B, C)``.

    ``output`` and ``target`` as nnU-Net hands them to the loss: logits ``(B, C, *spatial)`` and a label
    map ``(B, 1, *spatial)``, or lists of them per deep-supervision output (the first is counted).
    The prediction is the argmax, as nnU-Net's online pseudo-Dice; voxels of the ignore label count
    for nothing.
    """
    if isinstance(output, (list, tuple)):
        output, target = output[0], target[0]
    labels = target.long()
    if ignore_label is not None:
        valid = labels != ignore_label
        labels = torch.where(valid, labels, 0)
    else:
        valid = torch.ones_like(labels, dtype=torch.bool)
    predicted = output.argmax(1, keepdim=True)
    axes = tuple(range(2, output.ndim))
    pred_onehot = torch.zeros_like(output, dtype=torch.bool).scatter_(1, predicted, True) & valid
    ref_onehot = torch.zeros_like(output, dtype=torch.bool).scatter_(1, labels, True) & valid
    return torch.stack(
        [
            (pred_onehot & ref_onehot).sum(axes),
            (pred_onehot & ~ref_onehot).sum(axes),
            (~pred_onehot & ref_onehot).sum(axes),
        ]
    )


def check_batch_labels(target, label_manager) -> None:
    """Refuse a training batch whose labels the network has no channel for, with what to do.

    The losses check values only outside ``torch.compile`` and only on their first batch (a check
    costs a host synchronisation); the trainer checks its first batch on the host, before the
    compiled loss sees it.
    """
    if label_manager.has_regions:  # region targets are one-hot channels, built by nnU-Net itself
        return
    labels = target[0] if isinstance(target, (list, tuple)) else target
    if label_manager.ignore_label is not None:
        labels = torch.where(labels == label_manager.ignore_label, 0, labels)
    classes = label_manager.num_segmentation_heads
    outside = labels_outside(labels.cpu(), classes)
    if outside is not None:
        low, high = outside
        ignore = ", plus the ignore label" if label_manager.ignore_label is not None else ""
        raise ValueError(
            f"a training batch holds label values in [{low}, {high}], but dataset.json declares {classes} labels "
            f"(values 0 to {classes - 1}{ignore}); "
            "fix the label maps or dataset.json's 'labels', then run nnUNetv2_plan_and_preprocess again "
            "(--verify_dataset_integrity names the cases)"
        )


def _differences(config: LossConfig, other: LossConfig) -> tuple[str, str]:
    """The fields in which two configurations differ, as ``phi=BI, eps_nr=1`` for each of them."""
    fields = [
        key
        for key in config.to_dict()
        if key != "trainer_name" and getattr(config, key, None) != getattr(other, key, None)
    ]
    return tuple(", ".join(f"{key}={getattr(c, key)}" for key in fields) for c in (config, other))  # type: ignore[return-value]


def _scaled(eps, scale: float):
    if isinstance(eps, (list, tuple)):
        return [float(e) * scale for e in eps]
    return float(eps) * scale


def _pads_2d_patches_none() -> bool:
    """Whether the installed nnU-Net's loader crops 2d patches without a margin (``need_to_pad`` 0).

    nnU-Net 2.6.0–2.6.4's ``nnUNetDataLoader`` sets the final patch of a 2d configuration to the
    initial one (``final_patch_size = (1, *patch_size)``), so it pads no margin around the image; 2.7
    and later pad the initial patch's excess, as 2.5's 2d loader did.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        release = version("nnunetv2").split(".")
    except PackageNotFoundError:
        return False
    return release[:2] == ["2", "6"]
