"""Dataset statistics for the heuristic ε and the Mime constants.

The heuristic ε of class c (Sect. 2.3 of the MICCAI 2022 paper) is E[Σ_φ y], the expected labelled
volume of one map, i.e. of class c in one training patch *as nnU-Net samples patches*. It is computed
exactly, without Monte Carlo, from one read of each training case's preprocessed segmentation:

* a patch is a window of the network's patch size whose start follows nnU-Net's
  ``nnUNetDataLoader.get_bbox``: uniform over the allowed range for a random patch; for a
  foreground-forced patch, centred on a voxel of a class drawn uniformly among the classes present
  (the initial, larger patch is centred there and the network's patch is its centre crop);
* the labelled count of every window start is a separable box sum (cumulative sums per axis);
* the share of forced patches is nnU-Net's: the last ``B − round(B·(1 − p))`` of each batch;
* cases are drawn uniformly (nnU-Net draws keys with replacement).

Augmentations other than the crop (rotation, scaling) are not modelled. Padding counts as
background, as in nnU-Net's targets. Deep-supervision outputs get ε scaled by their voxel count.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingModel:
    """What determines where nnU-Net crops training patches."""

    patch_size: tuple[int, ...]
    """The network's patch size (3 numbers; 2D configurations use (1, x, y))."""
    initial_patch_size: tuple[int, ...]
    """The larger patch the loader crops before augmentation."""
    batch_size: int
    oversample_foreground_percent: float
    ignore_label: int | None = None

    @property
    def forced_share(self) -> float:
        """Share of the patches of a batch that nnU-Net forces onto foreground."""
        b = self.batch_size
        return (b - round(b * (1 - self.oversample_foreground_percent))) / b


@dataclass(frozen=True)
class DatasetStatistics:
    """Per output channel: expected labelled voxels in one training patch; and the Mime constants."""

    channels: tuple[str, ...]
    expected_volume: tuple[float, ...]
    patch_voxels: int
    cases: int

    @property
    def heuristic_eps(self) -> np.ndarray:
        return np.asarray(self.expected_volume, dtype=np.float64)

    def mime_constants(self) -> tuple[np.ndarray, np.ndarray]:
        """``a_c = 1/E|y_c|`` and ``b_c = 1/(|patch| − E|y_c|)`` (0 where undefined)."""
        volume = self.heuristic_eps
        rest = self.patch_voxels - volume
        a = np.where(volume > 0, 1.0 / np.maximum(volume, 1e-12), 0.0)
        b = np.where(rest > 0, 1.0 / np.maximum(rest, 1e-12), 0.0)
        return a, b

    def to_dict(self) -> dict:
        return asdict(self)


def window_sums(indicator: np.ndarray, window: Sequence[int], starts: Sequence[tuple[int, int]]) -> np.ndarray:
    """Labelled count of every window of size ``window`` whose start lies in ``[lo, hi]`` per axis.

    Starts may lie outside the volume (the window then covers zero padding).
    """
    out = indicator.astype(np.int64, copy=False)
    for axis, (size, (lo, hi)) in enumerate(zip(window, starts)):
        length = out.shape[axis]
        pad_before, pad_after = max(0, -lo), max(0, hi + size - length)
        pad = [(0, 0)] * out.ndim
        pad[axis] = (pad_before + 1, pad_after)  # one extra leading zero for the cumulative sum
        cumulative = np.cumsum(np.pad(out, pad), axis=axis)
        first = lo + pad_before
        index = np.arange(first, first + hi - lo + 1)
        out = np.take(cumulative, index + size, axis=axis) - np.take(cumulative, index, axis=axis)
    return out


def case_expected_volume(seg: np.ndarray, channels: Sequence[Sequence[int]], model: SamplingModel) -> np.ndarray:
    """Expected labelled voxels of each channel in one training patch drawn from this case."""
    shape = np.array(seg.shape)
    patch, initial = np.array(model.patch_size), np.array(model.initial_patch_size)
    need = np.maximum(initial - patch, 0)
    need = np.where(need + shape < initial, initial - shape, need)
    lbs = -(need // 2)
    ubs = shape + need // 2 + need % 2 - initial
    offset = (initial - patch) // 2  # the network's patch is the centre crop of the initial one
    # forced starts are never clamped from above by nnU-Net, so cover every voxel's start as well
    hi = np.maximum(ubs, shape - 1 - initial // 2)
    starts = [(int(lo + o), int(h + o)) for lo, h, o in zip(lbs, hi, offset)]

    present = [np.isin(seg, labels) for labels in channels]
    sums = [window_sums(mask, patch, starts) for mask in present]
    random_box = tuple(slice(0, int(u - lo + 1)) for u, lo in zip(ubs, lbs))

    def at_voxels(table: np.ndarray, voxels: np.ndarray) -> np.ndarray:
        start = np.maximum(voxels - initial // 2, lbs) + offset
        index = tuple((start - np.array([s[0] for s in starts])).T)
        return table[index]

    if model.ignore_label is not None:
        centres = np.argwhere(seg != model.ignore_label)
        random = np.array([at_voxels(t, centres).mean() if len(centres) else t[random_box].mean() for t in sums])
    else:
        random = np.array([t[random_box].mean() for t in sums])

    eligible = [np.argwhere(mask) for mask in present]
    eligible = [voxels for voxels in eligible if len(voxels)]
    if eligible:
        forced = np.array([np.mean([at_voxels(t, voxels).mean() for voxels in eligible]) for t in sums])
    else:
        forced = random
    share = model.forced_share
    return (1 - share) * random + share * forced


def expected_volumes(segmentations, channels: Sequence[Sequence[int]], model: SamplingModel) -> np.ndarray:
    """Mean over cases of :func:`case_expected_volume`; ``segmentations`` yields label arrays."""
    per_case = [case_expected_volume(np.asarray(seg), channels, model) for seg in segmentations]
    if not per_case:
        raise ValueError("no training cases to compute dataset statistics from")
    return np.mean(per_case, axis=0)


def output_channels(label_manager) -> tuple[tuple[str, ...], list[tuple[int, ...]], bool]:
    """Names and label sets of the network's output channels, and whether background is channel 0."""
    if label_manager.has_regions:
        regions = [tuple(np.atleast_1d(r).tolist()) for r in label_manager.foreground_regions]
        return tuple(str(r) for r in regions), regions, False
    labels = list(label_manager.all_labels)
    return tuple(str(v) for v in labels), [(v,) for v in labels], True


def compute_statistics(case_segmentations, label_manager, model: SamplingModel) -> DatasetStatistics:
    """Statistics over the given cases' segmentations (iterable of ``(1, *shape)`` or ``shape`` arrays)."""
    names, label_sets, has_background = output_channels(label_manager)
    patch_voxels = int(np.prod(model.patch_size))
    segs = (np.asarray(s)[0] if np.ndim(s) == len(model.patch_size) + 1 else np.asarray(s) for s in case_segmentations)
    segs = list(segs)
    foreground = label_sets[1:] if has_background else label_sets
    volume = expected_volumes(segs, foreground, model)
    if has_background:
        volume = np.concatenate(([patch_voxels - volume.sum()], volume))
    return DatasetStatistics(names, tuple(float(v) for v in volume), patch_voxels, len(segs))


def cached(path: str, key: str, compute) -> tuple[DatasetStatistics, bool]:
    """Statistics from the JSON cache at ``path`` under ``key``, computing and storing them if absent.

    Returns the statistics and whether they came from the cache. Writes atomically.
    """
    store = {}
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as handle:
            store = json.load(handle)
        if key in store:
            return DatasetStatistics(**{k: tuple(v) if isinstance(v, list) else v for k, v in store[key].items()}), True
    stats = compute()
    store[key] = stats.to_dict()
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(store, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return stats, False
