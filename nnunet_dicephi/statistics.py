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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass

import numpy as np

from nnunet_dicephi._files import write_text_atomically

VERSION = 1
"""Bump when the computation changes, so that cached statistics are not reused across versions."""


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


def _crop_geometry(shape: np.ndarray, model: SamplingModel):
    """nnU-Net's ``get_bbox`` bounds: lowest/highest initial-patch start, and the centre-crop offset."""
    patch, initial = np.array(model.patch_size), np.array(model.initial_patch_size)
    need = np.maximum(initial - patch, 0)
    need = np.where(need + shape < initial, initial - shape, need)
    lbs = -(need // 2)
    ubs = shape + need // 2 + need % 2 - initial
    offset = (initial - patch) // 2  # the network's patch is the centre crop of the initial one
    return patch, initial, lbs, ubs, offset


def _random_start_weights(length: int, size: int, lo: int, hi: int) -> np.ndarray:
    """Share of uniformly drawn window starts in [lo, hi] whose window [s, s + size) covers each voxel."""
    x = np.arange(length)
    covered = np.minimum(x, hi) - np.maximum(x - size + 1, lo) + 1
    return np.clip(covered, 0, None) / (hi - lo + 1)


def _forced_patch_volume(
    origin: np.ndarray, indicator: np.ndarray, starts: np.ndarray, weights: np.ndarray, size: np.ndarray
) -> float:
    """Σ_k w_k · (voxels of ``indicator`` in the box [start_k, start_k + size)), from a summed-area table.

    ``indicator`` is a boolean map whose first voxel sits at ``origin`` in the case; ``starts`` holds
    one row per axis. The table gets a leading zero along each axis where the box is wider than one
    voxel (the others need no sum).
    """
    shape = indicator.shape
    wide = [d for d in range(len(size)) if size[d] > 1]
    table = indicator.astype(np.int32)
    for d in wide:
        summed = np.zeros(tuple(n + (a == d) for a, n in enumerate(table.shape)), dtype=np.int32)
        np.cumsum(table, axis=d, out=summed[(slice(None),) * d + (slice(1, None),)])
        table = summed
    strides = np.array(table.strides) // table.itemsize
    low = starts - origin[:, None]
    # boxes that miss the map contribute nothing (their clipped corners would cancel only on wide axes)
    touches = np.all((low < np.array(shape)[:, None]) & (low > -size[:, None]), axis=0)
    corners, signs = np.zeros(starts.shape[1], np.int64)[None], np.ones(1)
    for d in range(len(size)):
        if d in wide:
            side = np.stack((low[d], low[d] + size[d])).clip(0, shape[d]) * strides[d]
            corners = (corners[:, None] + side[None]).reshape(-1, starts.shape[1])
            signs = np.outer(signs, (-1.0, 1.0)).ravel()
        else:
            corners = corners + low[d].clip(0, shape[d] - 1) * strides[d]
    counts = table.ravel()[corners]
    return float(signs @ (counts @ (weights * touches)))


LOCATION_CAP = 10000
"""nnU-Net stores every voxel of a class with fewer voxels than this, a subsample of the others."""


def _location_key(labels: np.ndarray):
    return tuple(int(v) for v in labels) if labels.size > 1 else int(labels[0])


def _spatial(seg) -> tuple[int, ...]:
    return tuple(seg.shape[1:]) if len(seg.shape) == 4 else tuple(seg.shape)


def _read(seg) -> np.ndarray:
    return np.asarray(seg[0] if len(seg.shape) == 4 else seg[...])


def _complete_locations(labels_of: list[np.ndarray], class_locations: dict | None) -> list | None:
    """nnU-Net's stored voxels of each channel, when they hold every voxel (fewer than the cap); else None."""
    if class_locations is None:
        return None
    stored = [class_locations.get(_location_key(labels)) for labels in labels_of]
    return stored if all(v is not None and len(v) < LOCATION_CAP for v in stored) else None


def _channel_maps(seg, labels_of: list[np.ndarray], class_locations: dict | None) -> list:
    """Each channel as ``(origin, boolean map on a box holding all its voxels)``, or None where empty.

    Built from nnU-Net's stored class locations when they are complete (fewer than
    :data:`LOCATION_CAP` voxels), which avoids decompressing the segmentation; read from it otherwise.
    """
    dims = len(_spatial(seg))
    stored = _complete_locations(labels_of, class_locations)
    if stored is not None:
        return [
            _indicator(np.asarray(v, dtype=np.int64).reshape(-1, np.shape(v)[-1] if len(v) else dims)[:, -dims:])
            for v in stored
        ]
    array = _read(seg)
    all_labels = np.concatenate(labels_of)
    contiguous = sorted(all_labels.tolist()) == list(range(1, int(all_labels.max()) + 1))
    foreground = array > 0 if contiguous else np.isin(array, all_labels)  # labels 1..K: everything above 0
    # the foreground's bounding box; only the voxels inside it are looked at again
    box = _bounding_box(foreground)
    if box is None:
        return [None] * len(labels_of)
    inner = array[box]
    origin = np.array([b.start for b in box])
    maps = []
    for labels in labels_of:
        indicator = inner == labels[0] if len(labels) == 1 else np.isin(inner, labels)
        own = _bounding_box(indicator)
        maps.append(None if own is None else (origin + [b.start for b in own], indicator[own]))
    return maps


def _indicator(points: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Voxel coordinates as a boolean map on their bounding box, with the box's origin."""
    if not len(points):
        return None
    origin = points.min(0)
    indicator = np.zeros(points.max(0) - origin + 1, dtype=bool)
    indicator[tuple((points - origin).T)] = True
    return origin, indicator


def _bounding_box(indicator: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of a map's voxels, found from cheap projections (None when empty)."""
    box = []
    for d in range(indicator.ndim):
        present = np.flatnonzero(indicator.any(axis=tuple(a for a in range(indicator.ndim) if a != d)))
        if not len(present):
            return None
        box.append(slice(int(present[0]), int(present[-1]) + 1))
    return tuple(box)


def _random_patch_volume(origin: np.ndarray, indicator: np.ndarray, shares: list[np.ndarray]) -> float:
    """Σ_x y(x) · P(x in a random patch); the probability factorises over the axes."""
    total = indicator.astype(np.float64)
    for d in reversed(range(indicator.ndim)):
        total = total @ shares[d][origin[d] : origin[d] + indicator.shape[d]]
    return float(total)


def case_expected_volume(
    seg,
    channels: Sequence[Sequence[int]],
    model: SamplingModel,
    class_locations: dict | None = None,
) -> np.ndarray:
    """Expected labelled voxels of each channel in one training patch drawn from this case.

    Args:
        seg: the case's preprocessed label map, ``shape`` or ``(1, *shape)``; may be nnU-Net's lazy
            blosc2 array, which is decompressed only when the stored locations do not suffice.
        channels: label values making up each channel (one label, or a region's labels).
        model: how nnU-Net samples patches.
        class_locations: nnU-Net's stored foreground locations (``properties['class_locations']``),
            which forced patches are centred on; derived from ``seg`` when not given.
    """
    if model.ignore_label is not None:
        return _case_expected_volume_dense(_read(seg), channels, model)
    shape = np.array(_spatial(seg))
    patch, initial, lbs, ubs, offset = _crop_geometry(shape, model)
    labels_of = [np.atleast_1d(np.asarray(c)) for c in channels]
    maps = _channel_maps(seg, labels_of, class_locations)
    if all(m is None for m in maps):
        return np.zeros(len(channels))

    # random patches: voxel x is in the patch with a probability that factorises over the axes
    shares = [
        _random_start_weights(int(shape[d]), int(patch[d]), int(lbs[d] + offset[d]), int(ubs[d] + offset[d]))
        for d in range(len(shape))
    ]
    random = np.array([_random_patch_volume(*m, shares) if m is not None else 0.0 for m in maps])

    # forced patches: centred on a stored location of a class drawn uniformly among those present
    if class_locations is None:
        class_locations = {
            _location_key(labels): np.argwhere(m[1]) + m[0] if m is not None else np.zeros((0, len(shape)), int)
            for labels, m in zip(labels_of, maps)
        }
    eligible = [np.asarray(v)[:, -len(shape) :] for v in class_locations.values() if len(v)]
    if not eligible:
        forced = random
    else:
        # every forced centre at once; each class's centres weigh 1 / (classes × its centres)
        starts = np.ascontiguousarray((np.maximum(np.concatenate(eligible) - initial // 2, lbs) + offset).T)
        weights = np.concatenate([np.full(len(c), 1.0 / (len(eligible) * len(c))) for c in eligible])
        forced = np.array([_forced_patch_volume(*m, starts, weights, patch) if m is not None else 0.0 for m in maps])
    share = model.forced_share
    return (1 - share) * random + share * forced


def _case_expected_volume_dense(seg: np.ndarray, channels: Sequence[Sequence[int]], model: SamplingModel):
    """With an ignore label nnU-Net centres random patches on any annotated voxel: window sums everywhere."""
    shape = np.array(seg.shape)
    patch, initial, lbs, ubs, offset = _crop_geometry(shape, model)
    hi = np.maximum(ubs, shape - 1 - initial // 2)
    starts = [(int(lo + o), int(h + o)) for lo, h, o in zip(lbs, hi, offset)]
    sums = [window_sums(np.isin(seg, labels), patch, starts) for labels in channels]

    def at_voxels(table: np.ndarray, voxels: np.ndarray) -> np.ndarray:
        start = np.maximum(voxels - initial // 2, lbs) + offset
        return table[tuple((start - np.array([s[0] for s in starts])).T)]

    centres = np.argwhere(seg != model.ignore_label)
    random_box = tuple(slice(0, int(u - lo + 1)) for u, lo in zip(ubs, lbs))
    random = np.array([at_voxels(t, centres).mean() if len(centres) else t[random_box].mean() for t in sums])
    eligible = [v for v in (np.argwhere(np.isin(seg, labels)) for labels in channels) if len(v)]
    forced = np.array([np.mean([at_voxels(t, v).mean() for v in eligible]) for t in sums]) if eligible else random
    share = model.forced_share
    return (1 - share) * random + share * forced


def expected_volumes(cases, channels: Sequence[Sequence[int]], model: SamplingModel) -> np.ndarray:
    """Mean over cases of :func:`case_expected_volume`; ``cases`` yields ``(seg, class_locations)``.

    Cases whose segmentation must be decompressed run in threads (decompression and large NumPy
    operations release the GIL); the others are small array work that threads only slow down.
    """
    cases = list(cases)
    if not cases:
        raise ValueError("no training cases to compute dataset statistics from")
    labels_of = [np.atleast_1d(np.asarray(c)) for c in channels]

    def one(case) -> np.ndarray:
        return case_expected_volume(case[0], channels, model, case[1])

    reads = [
        model.ignore_label is not None or _complete_locations(labels_of, locations) is None for _, locations in cases
    ]
    per_case = [one(case) for case, read in zip(cases, reads) if not read]
    heavy = [case for case, read in zip(cases, reads) if read]
    workers = min(len(heavy), os.cpu_count() or 1)
    if workers > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            per_case += pool.map(one, heavy)
    else:
        per_case += map(one, heavy)
    return np.mean(per_case, axis=0)


def output_channels(label_manager) -> tuple[tuple[str, ...], list[tuple[int, ...]], bool]:
    """Names and label sets of the network's output channels, and whether background is channel 0."""
    if label_manager.has_regions:
        regions = [tuple(np.atleast_1d(r).tolist()) for r in label_manager.foreground_regions]
        return tuple(str(r) for r in regions), regions, False
    labels = list(label_manager.all_labels)
    return tuple(str(v) for v in labels), [(v,) for v in labels], True


def compute_statistics(cases, label_manager, model: SamplingModel) -> DatasetStatistics:
    """Statistics over cases given as ``(seg, class_locations or None)``; seg ``(1, *shape)`` or ``shape``."""
    names, label_sets, has_background = output_channels(label_manager)
    patch_voxels = int(np.prod(model.patch_size))
    # lazy arrays stay lazy: a case is decompressed only if its stored locations do not suffice
    prepared = [(seg if hasattr(seg, "shape") else np.asarray(seg), locations) for seg, locations in cases]
    foreground = label_sets[1:] if has_background else label_sets
    volume = expected_volumes(prepared, foreground, model)
    if has_background:
        volume = np.concatenate(([patch_voxels - volume.sum()], volume))
    return DatasetStatistics(names, tuple(float(v) for v in volume), patch_voxels, len(prepared))


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
    write_text_atomically(path, json.dumps(store, indent=2, sort_keys=True))
    return stats, False
