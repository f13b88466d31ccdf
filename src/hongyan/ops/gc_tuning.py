"""Garbage-collector settings for the long-running processes (`hongyan serve`, `hongyan worker`).

CPython's cyclic collector pauses the process while it walks the tracked objects of the generation it
collects, and an oldest-generation pass walks all of them: the imported modules, SQLAlchemy's mappers and
cached statements, FastAPI's routes, a few hundred thousand objects. No request, PDU or receipt is served
meanwhile. Once a process has started, what it made so far is frozen (`gc.freeze`: never walked again, it
lives as long as the process anyway), and the youngest generation is collected less often (fewer, larger
passes: the cost per object is the same, the pauses are fewer).
"""

from __future__ import annotations

import gc

GEN0_THRESHOLD = 10_000  # allocations between young collections (CPython's default: 700)


def freeze_startup_objects() -> None:
    """Call once startup is complete, before serving."""
    gc.collect()
    gc.freeze()
    _gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
