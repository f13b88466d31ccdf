"""`hongyan serve` / `hongyan worker` freeze what startup made and collect the young generation less often."""

from __future__ import annotations

import gc

from hongyan.ops.gc_tuning import GEN0_THRESHOLD, freeze_startup_objects


def test_startup_objects_are_frozen_and_young_collections_rarer() -> None:
    before = gc.get_threshold()
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() > 1000  # the imported modules' objects at least
        assert gc.get_threshold() == (GEN0_THRESHOLD, before[1], before[2])
        made_after = [[i] for i in range(10)]  # later objects are collected as usual
        assert all(gc.is_tracked(x) for x in made_after)
    finally:  # the test process builds many apps: leave its collector as it was
        gc.unfreeze()
        gc.set_threshold(*before)
    assert gc.get_freeze_count() == 0
