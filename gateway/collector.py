"""The garbage collector, tuned for a server whose requests make many short-lived objects.

CPython frees most objects by reference counting; its cyclic collector runs whenever
allocations of container objects outnumber deallocations by the gen-0 threshold (700). At 64
requests in flight the requests' own live objects (coroutines, dicts, lists) keep crossing that
threshold: the collector ran about 30 times per 1,000 accepted jobs, traversing those objects,
and every full collection traversed all that start-up built as well (measured in process on
the bench machine: about 35 us per request, 5-10% of an accept). With a threshold of 10,000
almost every object is freed by its reference count before a collection starts, and
``gc.freeze()`` moves what start-up built (modules, the app, the catalog) out of the
collections' way. Cycles are still collected, only later: memory held by them is bounded by the
threshold.
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000


def tune() -> tuple[int, int, int]:
    """Freeze the start-up heap and raise the gen-0 threshold; returns what to restore."""
    saved = gc.get_threshold()
    gc.freeze()  # garbage frozen with it is collected after restore()
    gc.set_threshold(GEN0_THRESHOLD, saved[1], saved[2])
    return saved


def restore(saved: tuple[int, int, int]) -> None:
    """At shutdown (tests start many apps in one process): back to the defaults."""
    gc.unfreeze()
    gc.set_threshold(*saved)
