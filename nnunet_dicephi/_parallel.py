"""One function over many cases, in worker processes when asked, with a progress bar."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def map_cases(
    function: Callable[[Any], Any],
    items: Sequence[Any],
    *,
    workers: int,
    desc: str,
    disable_progress: bool | None = None,
) -> tuple[list[Any], bool]:
    """``[function(item) for item in items]``, in that order, on ``workers`` processes when above 1.

    Processes, not threads: reading and writing images (SimpleITK, gzip) holds the GIL. They are
    spawned, as nnU-Net's own evaluator does: forking a process that may hold threads (BLAS, torch)
    can deadlock. Spawned workers re-import the caller's main module, which fails for code read from
    stdin or for scripts without an ``if __name__ == "__main__":`` guard; then the items not done yet
    run in this process. Returns the results and whether that fallback happened.
    """
    from tqdm.auto import tqdm

    results: list[Any] = [None] * len(items)
    done = 0
    fell_back = False
    with tqdm(total=len(items), desc=desc, unit="case", disable=disable_progress) as bar:
        if workers > 1 and len(items) > 1:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor
            from concurrent.futures.process import BrokenProcessPool

            context = multiprocessing.get_context("spawn")
            try:
                with ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=context) as pool:
                    for index, result in enumerate(pool.map(function, items)):  # in order
                        results[index] = result
                        done += 1
                        bar.update()
            except BrokenProcessPool:
                fell_back = True
        for index in range(done, len(items)):
            results[index] = function(items[index])
            bar.update()
    return results, fell_back
