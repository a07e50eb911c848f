"""Side-by-side timing for the benchmarks: two callables measured in turns, compared pair by pair.

Timing each side in its own process or its own block lets the machine's load drift between them
(a loaded 2-core machine once showed 1.44× for two identical kernels). Here the sides alternate,
A B B A A B …, so each pair ran under nearly the same conditions, and the result is the median of
the per-pair ratios with their quartiles.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class PairedTiming:
    """Seconds per call of both sides and the ratio a / b of each pair."""

    a: list[float]
    b: list[float]

    @property
    def ratios(self) -> list[float]:
        return [x / y for x, y in zip(self.a, self.b)]

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)

    def spread(self) -> tuple[float, float]:
        """First and third quartile of the pairwise ratios (both the median for a single pair)."""
        ratios = sorted(self.ratios)
        if len(ratios) < 2:
            return ratios[0], ratios[0]
        q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
        return q1, q3

    def describe(self) -> str:
        q1, q3 = self.spread()
        return f"{self.ratio:.2f}× ({q1:.2f}–{q3:.2f})"


def paired_timing(
    a: Callable[[], object], b: Callable[[], object], repeats: int, sync: Callable[[], None] = lambda: None
) -> PairedTiming:
    """Time ``a`` and ``b`` ``repeats`` times each, in turns; ``sync`` waits for queued device work."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1; got {repeats}")
    times: dict[str, list[float]] = {"a": [], "b": []}
    for index in range(repeats):
        order = (("a", a), ("b", b)) if index % 2 == 0 else (("b", b), ("a", a))
        for key, call in order:
            sync()
            start = time.perf_counter()
            call()
            sync()
            times[key].append(time.perf_counter() - start)
    return PairedTiming(times["a"], times["b"])


def cuda_peak_bytes(step: Callable[[], object]) -> int:
    """Growth of CUDA's allocated-memory peak during one call of ``step``."""
    import torch  # the timing helpers above need no torch

    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base
