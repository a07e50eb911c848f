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
* cases are drawn uniformly (nnU-Net draws keys with replacement);
* under a partial-label manifest, the expectation of class c runs over the cases that annotate c
  only: the loss sees c's map of those cases alone (marginal, leaf and masked losses drop the
  others), so an unannotated map is not counted as an empty one (statistics version 2; version 1
  averaged over every case).

Augmentations other than the crop (rotation, scaling) are not modelled. Padding counts as
background, as in nnU-Net's targets. Deep-supervision outputs get ε scaled by their voxel count.

The statistics follow from the data only through :func:`data_fingerprint` (the preprocessed
segmentations' bytes, the manifest, the labels, the plans' configuration and the fold's cases), so
they are cached under that fingerprint, one file per key (:func:`cached`): re-preprocessing or
editing the manifest is a cache miss, and concurrent folds never write the same file.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from nnunet_dicephi._files import write_text_atomically

VERSION = 2
"""Bump when the computation changes, so that cached statistics are not reused across versions.

Recorded with the loss (``statistics_version``): 1 averaged every class over all training cases,
2 over the cases that annotate it (the same where there is no manifest)."""
CACHE_FOLDER = "dicephi_statistics"
"""Beside the preprocessed data (``nnUNet_preprocessed/DatasetX/``): one JSON file per cache key."""


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
    need_to_pad: tuple[int, ...] | None = None
    """The loader's margin around the image per axis (``nnUNetDataLoader.need_to_pad``); None: the
    initial patch's excess over the patch, as nnU-Net 2.7 and later pad (2.6's 2d loader pads none)."""

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
    """Per channel: the mean over the cases that annotate it (every case without a manifest)."""
    patch_voxels: int
    cases: int
    annotated_cases: tuple[int, ...] | None = None
    """Per channel: the cases whose map of it the loss sees (None: every case, as before version 2)."""

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
    need = np.maximum(initial - patch, 0) if model.need_to_pad is None else np.array(model.need_to_pad)
    need = np.where(need + shape < initial, initial - shape, need)
    lbs = -(need // 2)
    ubs = shape + need // 2 + need % 2 - initial
    offset = (initial - patch) // 2  # the network's patch is the centre crop of the initial one
    return patch, initial, lbs, ubs, offset


LOCATION_CAP = 10000
"""nnU-Net stores every voxel of a class with fewer voxels than this, a subsample of the others."""


def _location_key(labels: np.ndarray):
    return tuple(int(v) for v in labels) if labels.size > 1 else int(labels[0])


def _spatial(seg) -> tuple[int, ...]:
    return tuple(seg.shape[1:]) if len(seg.shape) == 4 else tuple(seg.shape)


def _read(seg) -> np.ndarray:
    return np.asarray(seg[0] if len(seg.shape) == 4 else seg[...])


def _coordinates(stored, dims: int) -> np.ndarray:
    """nnU-Net's stored locations (``(n, 1 + dims)``, channel first, or ``(n, dims)``) as ``(dims, n)``.

    One row per axis keeps every reduction and comparison below on contiguous memory.
    """
    array = np.asarray(stored, dtype=np.int64)
    return np.ascontiguousarray(array.reshape(-1, array.shape[-1] if array.size else dims)[:, -dims:].T)


def _complete_locations(labels_of: list[np.ndarray], class_locations: dict | None) -> list | None:
    """nnU-Net's stored voxels of each channel, when they hold every voxel (fewer than the cap); else None."""
    if class_locations is None:
        return None
    stored = [class_locations.get(_location_key(labels)) for labels in labels_of]
    return stored if all(v is not None and len(v) < LOCATION_CAP for v in stored) else None


@dataclass(frozen=True)
class _Labelled:
    """One channel's labelled voxels in a case, inside the box ``[origin, end)``.

    Held as coordinates ``(dims, n)`` when they come from nnU-Net's stored locations (small
    structures: no decompression), or as a boolean map on the box when the segmentation was read
    (large structures, where array operations on the box beat per-voxel ones).
    """

    origin: np.ndarray
    end: np.ndarray
    points: np.ndarray | None = None
    dense: np.ndarray | None = None
    _projections: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_points(cls, points: np.ndarray) -> _Labelled | None:
        return cls(points.min(1), points.max(1) + 1, points=points) if points.shape[1] else None

    def coordinates(self) -> np.ndarray:
        if self.points is not None:
            return self.points
        return np.array(np.nonzero(self.dense)) + self.origin[:, None]

    def count(self) -> int:
        return self.points.shape[1] if self.points is not None else int(np.count_nonzero(self.dense))

    def projection(self, axes: np.ndarray) -> np.ndarray:
        """Labelled voxels per position of the box along ``axes``, summed over the other axes (kept)."""
        key = tuple(int(a) for a in axes)
        if key not in self._projections:
            if self.dense is not None:
                other = tuple(a for a in range(self.dense.ndim) if a not in key)
                table = self.dense.sum(axis=other, dtype=np.int64) if other else self.dense.astype(np.int64)
            else:
                span = (self.end - self.origin)[list(key)]
                flat = np.ravel_multi_index(tuple(self.points[list(key)] - self.origin[list(key), None]), span)
                table = np.bincount(flat, minlength=int(np.prod(span))).reshape(span)
            self._projections[key] = table
        return self._projections[key]

    def random_volume(self, shares: list[np.ndarray]) -> float:
        """Σ_x y(x) · P(x in a random patch); the probability is a product of one share per axis."""
        if self.points is not None:
            probability = shares[0][self.points[0]]
            for share, axis in zip(shares[1:], self.points[1:]):
                probability = probability * share[axis]
            return float(probability.sum())
        # axes along which the share is the same over the whole box (a patch spanning the image) factor out
        own = [share[lo:hi] for share, lo, hi in zip(shares, self.origin, self.end)]
        varying = [d for d, share in enumerate(own) if share.min() != share.max()]
        constant = float(np.prod([own[d][0] for d in range(len(own)) if d not in varying]))
        total = self.projection(np.array(varying, dtype=np.int64)).astype(np.float64)
        for d in reversed(varying):
            total = total @ own[d]
        return float(total) * constant


@dataclass(frozen=True)
class _CasePoints:
    """What the exact expectation needs from one case: its labelled voxels and the forced-patch centres."""

    shape: np.ndarray
    channels: list[_Labelled | None]
    centres: list[np.ndarray]
    """Per class present, the stored locations nnU-Net centres forced patches on, ``(dims, n)``."""


def _case_points(seg, labels_of: list[np.ndarray], class_locations: dict | None) -> _CasePoints:
    """The case's labelled voxels: from nnU-Net's stored locations when complete, else from one read."""
    shape = np.array(_spatial(seg))
    dims = len(shape)
    stored = _complete_locations(labels_of, class_locations)
    if stored is not None:  # no decompression at all
        channels = [_Labelled.from_points(_coordinates(v, dims)) for v in stored]
    else:
        channels = _read_channels(_read(seg), labels_of)
    if class_locations is None:
        centres = [c.coordinates() for c in channels if c is not None]
    else:
        centres = [_coordinates(v, dims) for v in class_locations.values() if len(v)]
    return _CasePoints(shape, channels, centres)


def _read_channels(array: np.ndarray, labels_of: list[np.ndarray]) -> list[_Labelled | None]:
    all_labels = np.concatenate(labels_of)
    contiguous = sorted(all_labels.tolist()) == list(range(1, int(all_labels.max()) + 1))
    # the foreground's bounding box (labels 1..K: everything above 0); only its voxels are looked at again
    box = _bounding_box(array if contiguous else np.isin(array, all_labels))
    if box is None:
        return [None] * len(labels_of)
    inner = np.ascontiguousarray(array[box])  # one copy: comparisons on a strided view are slower
    origin = np.array([b.start for b in box])
    channels = []
    for labels in labels_of:
        indicator = inner == labels[0] if len(labels) == 1 else np.isin(inner, labels)
        own = _bounding_box(indicator)
        if own is None:
            channels.append(None)
            continue
        low = origin + [b.start for b in own]
        channels.append(_Labelled(low, low + indicator[own].shape, dense=indicator[own]))
    return channels


def _bounding_box(values: np.ndarray) -> tuple[slice, ...] | None:
    """The bounding box of a map's positive voxels (boolean, or labels with foreground > 0); None if none.

    One reduction along contiguous rows per axis, then a maximum over the slab found, so every pass
    but the first runs on ever smaller blocks (reductions over non-adjacent axes are several times slower).
    """
    if values.dtype == bool:
        values = values.view(np.uint8)
    if not values.size:
        return None
    rows = np.flatnonzero(values.reshape(len(values), -1).max(1) > 0)
    if not len(rows):
        return None
    first = slice(int(rows[0]), int(rows[-1]) + 1)
    return (first,) if values.ndim == 1 else (first, *_bounding_box(values[first].max(axis=0)))


def _random_start_weights(length: int, size: int, lo: int, hi: int) -> np.ndarray:
    """Share of uniformly drawn window starts in [lo, hi] whose window [s, s + size) covers each voxel."""
    x = np.arange(length)
    covered = np.minimum(x, hi) - np.maximum(x - size + 1, lo) + 1
    return np.maximum(covered, 0) / (hi - lo + 1)


def _case_volumes(case: _CasePoints, model: SamplingModel) -> np.ndarray:
    """Expected labelled voxels of each channel in one patch drawn from this case.

    Random patch: voxel x lies in it with a probability that factorises over the axes (the share of
    uniformly drawn starts whose window covers x). Forced patch: the labelled count of the box at
    each forced start, weighted by how often that start is drawn.
    """
    if all(c is None for c in case.channels):
        return np.zeros(len(case.channels))
    patch, initial, lbs, ubs, offset = _crop_geometry(case.shape, model)
    shares = [
        _random_start_weights(int(case.shape[d]), int(patch[d]), int(lbs[d] + offset[d]), int(ubs[d] + offset[d]))
        for d in range(len(patch))
    ]
    random = np.array([c.random_volume(shares) if c is not None else 0.0 for c in case.channels])
    if not case.centres:
        return random

    # forced patches: a class drawn uniformly among those present, then one of its stored locations
    centres = np.concatenate(case.centres, axis=1)
    starts = np.maximum(centres - (initial // 2)[:, None], lbs[:, None]) + offset[:, None]
    counts = np.array([c.shape[1] for c in case.centres])
    weights = np.repeat(1.0 / (counts * len(counts)), counts)
    starts, weights = _merge_repeated(starts, weights)
    forced = np.array([_box_counts(c, starts, weights, patch) if c is not None else 0.0 for c in case.channels])
    share = model.forced_share
    return (1 - share) * random + share * forced


def _merge_repeated(starts: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Equal starts (``(dims, k)``) merged into one, their weights summed, when that is cheap.

    Starts repeat wherever the patch spans the whole image along an axis (the start is then fixed
    there: 2d configurations in-plane, often), so thousands of stored centres can reduce to a few
    dozen boxes. Merged by counting over the starts' bounding range, if it is no larger than k.
    """
    first = starts.min(1)
    extent = starts.max(1) - first + 1
    if np.prod(extent, dtype=np.float64) > starts.shape[1]:
        return starts, weights
    summed = np.bincount(np.ravel_multi_index(tuple(starts - first[:, None]), tuple(extent)), weights)
    distinct = np.flatnonzero(summed)
    return np.array(np.unravel_index(distinct, tuple(extent))) + first[:, None], summed[distinct]


def _box_counts(labelled: _Labelled, starts: np.ndarray, weights: np.ndarray, patch: np.ndarray) -> float:
    """Σ_k ``weights[k]`` · (labelled voxels in the box ``[starts[:, k], starts[:, k] + patch)``).

    Axes along which every box holds the voxels' whole range drop out (patches are usually larger
    than a lesion), so the count is read from the projection onto the other axes: a summed-area
    table there, at the corners of every box (inclusion–exclusion). Along those axes a start only
    matters through its offset clipped to ``[-size, span]``; equal offsets are merged first
    (many forced centres, small structure), so the table is read once per distinct box.
    """
    origin, span = labelled.origin, labelled.end - labelled.origin
    holds_all = (starts.max(1) <= origin) & (starts.min(1) + patch >= labelled.end)
    rest = np.flatnonzero(~holds_all)
    if not len(rest):
        return float(labelled.count() * weights.sum())
    size, span = patch[rest], span[rest]
    low = starts[rest] - origin[rest, None]  # box [low, low + patch) relative to the voxels' box
    inside = (low > -size[:, None]) & (low < span[:, None])
    hits = inside.all(0) if len(rest) > 1 else inside[0]
    if not hits.any():
        return 0.0
    if not hits.all():  # a box that misses along some axis counts nothing: weight 0, offset kept in range
        weights = weights * hits
        low = np.minimum(np.maximum(low, (1 - size)[:, None]), (span - 1)[:, None])
    low, weights = _merge_repeated(low, weights)  # offsets in (-size, span) repeat more than starts do
    table = labelled.projection(rest)
    wide = size > 1
    for d in np.flatnonzero(wide):  # summed along the axes where a box spans more than one voxel
        summed_table = np.zeros(table.shape + np.eye(len(rest), dtype=int)[d], np.int64)  # with a leading zero
        np.cumsum(table, axis=d, out=summed_table[(slice(None),) * d + (slice(1, None),)])
        table = summed_table
    strides = np.array(table.strides) // table.itemsize
    corners, signs = np.zeros((1, low.shape[1]), np.int64), np.ones(1)
    for d in range(len(rest)):
        if wide[d]:  # the table has a leading zero here: box [a, b) reads entries b and a
            sides = np.stack((np.maximum(low[d], 0), np.minimum(low[d] + size[d], span[d]))) * strides[d]
            corners = (corners[:, None] + sides[None]).reshape(-1, low.shape[1])
            signs = np.outer(signs, (-1, 1)).ravel()
        else:
            corners = corners + low[d] * strides[d]
    return float(signs @ table.ravel()[corners] @ weights)


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
    return expected_volumes([(seg, class_locations)], channels, model)


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


def expected_volumes(
    cases, channels: Sequence[Sequence[int]], model: SamplingModel, annotated: np.ndarray | None = None
) -> np.ndarray:
    """Mean over cases of the expected labelled voxels per channel; ``cases`` yields ``(seg, class_locations)``.

    ``annotated`` (``(cases, channels)`` bool) restricts each channel's mean to the cases that
    annotate it; a channel no case annotates gets 0. Each case contributes its labelled voxels (from
    nnU-Net's stored locations where they are complete, otherwise from one read); its expectation is
    then a fixed number of array operations per channel (one weighted box count over all forced
    starts), whatever the number of voxels and stored locations. One case is held at a time; reading
    cases in threads measured slower on two cores (33–47 ms against 22–24 ms for 8 cases of 2.4 M voxels).
    """
    per_case = case_volumes(cases, channels, model)
    weights = np.ones_like(per_case) if annotated is None else np.asarray(annotated, dtype=np.float64)
    if weights.shape != per_case.shape:
        raise ValueError(f"annotated has shape {weights.shape}; expected (cases, channels) = {per_case.shape}")
    counts = weights.sum(axis=0)
    return np.where(counts > 0, (weights * per_case).sum(axis=0) / np.maximum(counts, 1), 0.0)


def case_volumes(cases, channels: Sequence[Sequence[int]], model: SamplingModel) -> np.ndarray:
    """``(cases, channels)``: each case's expected labelled voxels per channel in one patch drawn from it."""
    cases = list(cases)
    if not cases:
        raise ValueError("no training cases to compute dataset statistics from")
    if model.ignore_label is not None:
        return np.array([_case_expected_volume_dense(_read(seg), channels, model) for seg, _ in cases])
    labels_of = [np.atleast_1d(np.asarray(c)) for c in channels]
    return np.array([_case_volumes(_case_points(seg, labels_of, locations), model) for seg, locations in cases])


def output_channels(label_manager) -> tuple[tuple[str, ...], list[tuple[int, ...]], bool]:
    """Names and label sets of the network's output channels, and whether background is channel 0."""
    if label_manager.has_regions:
        regions = [tuple(np.atleast_1d(r).tolist()) for r in label_manager.foreground_regions]
        return tuple(str(r) for r in regions), regions, False
    labels = list(label_manager.all_labels)
    return tuple(str(v) for v in labels), [(v,) for v in labels], True


def compute_statistics(cases, label_manager, model: SamplingModel, annotated=None) -> DatasetStatistics:
    """Statistics over cases given as ``(seg, class_locations or None)``; seg ``(1, *shape)`` or ``shape``.

    ``annotated``: ``(cases, output channels)`` bool, which maps the loss sees
    (:meth:`~nnunet_dicephi.partial_labels.AnnotationTable.mask`); None when every map is annotated.
    Each foreground channel's expectation runs over the cases that annotate it; background's, which
    is annotated only where every label is, over those cases (over all when there are none).
    """
    names, label_sets, has_background = output_channels(label_manager)
    patch_voxels = int(np.prod(model.patch_size))
    # lazy arrays stay lazy: a case is decompressed only if its stored locations do not suffice
    prepared = [(seg if hasattr(seg, "shape") else np.asarray(seg), locations) for seg, locations in cases]
    foreground = label_sets[1:] if has_background else label_sets
    per_case = case_volumes(prepared, foreground, model)
    shape = (len(prepared), len(names))
    mask = np.ones(shape, bool) if annotated is None else np.asarray(annotated, bool)
    if mask.shape != shape:
        raise ValueError(f"annotated has shape {mask.shape}; expected (cases, channels) = {shape}")
    if has_background:
        per_case = np.concatenate((patch_voxels - per_case.sum(axis=1, keepdims=True), per_case), axis=1)
    counts = mask.sum(axis=0)
    volume = np.where(counts > 0, (mask * per_case).sum(axis=0) / np.maximum(counts, 1), 0.0)
    if has_background and counts[0] == 0:  # every case partial: the background of the per-class means
        # (never below 0: means over different cases can add up to more than a patch)
        volume[0] = max(patch_voxels - volume[1:].sum(), 0.0)
    return DatasetStatistics(
        names, tuple(float(v) for v in volume), patch_voxels, len(prepared), tuple(int(c) for c in counts)
    )


def _digest(value) -> str:
    """SHA-256 of a JSON-serialisable value, written canonically."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def segmentation_files(folder: str | os.PathLike, case: str) -> list[str]:
    """The files of one preprocessed case that the statistics read: its label map and its properties.

    nnU-Net ≥ 2.6 writes ``<case>_seg.b2nd`` and ``<case>.pkl`` (the stored class locations). The
    older numpy format keeps the label map in ``<case>.npz`` with the image; the ``<case>_seg.npy``
    that training unpacks from it is a copy, so the ``.npz`` is read wherever it exists (a fingerprint
    must not change because a training unpacked the data).
    """
    for names in ((f"{case}_seg.b2nd",), (f"{case}.npz",), (f"{case}_seg.npy",)):
        paths = [os.path.join(folder, name) for name in (*names, f"{case}.pkl")]
        if os.path.isfile(paths[0]):
            return [path for path in paths if os.path.isfile(path)]
    raise FileNotFoundError(
        f"no preprocessed label map for case {case!r} in {folder}; run nnUNetv2_plan_and_preprocess again"
    )


def data_fingerprint(
    folder: str | os.PathLike,
    cases: Iterable[str],
    *,
    manifest,
    labels: Mapping,
    plans: Mapping,
    fold,
) -> dict[str, str]:
    """What a run's statistics follow from, each part as a digest, and ``"fingerprint"`` over all parts.

    Args:
        folder: the configuration's preprocessed data folder.
        cases: the fold's training cases; their label maps and properties are read byte for byte.
        manifest: the dataset's partial-label manifest as ``dataset.json`` holds it (None without one).
        labels: ``dataset.json``'s ``labels`` and ``regions_class_order``.
        plans: the plans' name and the configuration's entry (patch size, batch size, spacing, ...).
        fold: the fold.

    The parts name what changed when two fingerprints differ (:func:`fingerprint_changes`).
    """
    cases = sorted(cases)
    segmentations = {
        case: [(os.path.basename(path), file_digest(path)) for path in segmentation_files(folder, case)]
        for case in cases
    }
    parts = {
        "segmentations": _digest(segmentations),
        "cases": _digest(cases),
        "manifest": _digest(manifest),
        "labels": _digest(labels),
        "plans": _digest(plans),
        "fold": str(fold),
    }
    return {**parts, "fingerprint": _digest(parts)}


def fingerprint_changes(recorded: Mapping[str, str], current: Mapping[str, str]) -> list[str]:
    """The parts of two :func:`data_fingerprint` results that differ, in words."""
    words = {
        "segmentations": "the preprocessed label maps of the fold's training cases",
        "cases": "the fold's training cases",
        "manifest": "the partial-label manifest",
        "labels": "the labels of dataset.json",
        "plans": "the plans' configuration",
        "fold": "the fold",
    }
    return [text for part, text in words.items() if recorded.get(part) != current.get(part)]


def cache_path(folder: str | os.PathLike, name: str, key: Mapping) -> str:
    """The cache file of ``key`` in ``folder``: a readable ``name`` and the key's digest."""
    return os.path.join(folder, f"{name}_{_digest(key)[:20]}.json")


def cached(
    path: str | os.PathLike,
    key: Mapping,
    compute: Callable[[], DatasetStatistics],
    log: Callable[[str], None] = print,
) -> tuple[DatasetStatistics, bool]:
    """Statistics from the cache file ``path`` written for ``key``, computing and storing them if absent.

    One file per key (:func:`cache_path`), so that folds computed at once never overwrite each
    other's entry; written under a unique temporary name and renamed into place. A file that cannot be
    read, or holds another key, is a cache miss: ``log`` names it, and it is computed and written again.
    Returns the statistics and whether they came from the cache.
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as handle:
                stored = json.load(handle)
            if stored["key"] != json.loads(json.dumps(key, default=str)):
                raise ValueError("it was written for other data")
            values = stored["statistics"]
            return DatasetStatistics(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}), True
        except (OSError, ValueError, KeyError, TypeError) as error:
            log(f"nnunet-dicephi: the statistics cache {path} is unreadable ({error}); computing the statistics again")
    stats = compute()
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    text = json.dumps({"key": key, "statistics": stats.to_dict()}, indent=2, sort_keys=True, default=str)
    write_text_atomically(path, text)
    return stats, False
