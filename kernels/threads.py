"""How many threads a parallel numba kernel call gets.

Two measured problems with leaving numba's pool at its default (one thread per core):

* A kernel call over a few thousand entries takes microseconds of work, but with two threads it
  waits for the second one to be scheduled: on a machine whose other core is busy that is a
  scheduler tick, ~7 ms per call (a CVRP100 POMO rollout went from 0.07 s to 2.8 s).
* numba's OpenMP layer shares libgomp with torch: launching its pool reset torch's intra-op
  thread count to the core count, so ``torch.set_num_threads(1)`` (benchmark workers, a shared
  machine) was silently undone by the first decode, and every small torch op then waited for a
  second thread too.

So the kernels use numba's own ``workqueue`` threading layer (no shared OpenMP state; set when
this module is imported, unless ``NUMBA_THREADING_LAYER`` says otherwise), and every parallel
kernel is called through :func:`kernel_threads`: one thread below :data:`PARALLEL_MIN_WORK`
entries, torch's thread count above it.
"""

from __future__ import annotations

import os

import numba
import torch

if "NUMBA_THREADING_LAYER" not in os.environ:
    # numba.config fills its options in at import time, so its types do not declare them
    numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]

__all__ = ["PARALLEL_MIN_WORK", "kernel_threads"]

#: Entries (rows x nodes) below which a kernel runs on one thread: about a millisecond of work,
#: more than a thread wake-up costs even on a loaded machine.
PARALLEL_MIN_WORK = 1 << 20


def kernel_threads(work: int) -> None:
    """Set numba's thread count for a kernel call over ``work`` entries."""
    want = 1
    if work >= PARALLEL_MIN_WORK:
        want = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    if numba.get_num_threads() != want:
        numba.set_num_threads(want)
