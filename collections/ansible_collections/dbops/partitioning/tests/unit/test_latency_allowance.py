"""The latency guard's allowance (migrate/latency.py): how much slower than their pace without the
copy the application's statements may run, in milliseconds and relative to that pace; and the
decision it makes from the readings (the readings themselves are tested on a server in
tests/integration/test_backfill_latency_guard.py)."""
import time

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import latency


@pytest.mark.parametrize("limit_ms, pct, baseline, allowed", [
    (10, 100, 0.2, 0.2),      # a fast application: doubling comes long before 10 ms
    (10, 100, 30.0, 10.0),    # a slow one: the milliseconds are the cap
    (10, 0, 0.2, 10.0),       # no relative limit
    (0, 50, 4.0, 2.0),        # no limit in milliseconds
    (10, 100, 0.01, latency.FLOOR_MS),   # never below the reading's own noise
])
def test_the_allowance_is_the_tighter_of_the_two_limits(limit_ms, pct, baseline, allowed):
    assert latency.LatencyGuard(limit_ms, pct).allowance_ms(baseline) == pytest.approx(allowed)


def _guard(limit_ms, pct, idle, recent):
    guard = latency.LatencyGuard(limit_ms, pct)
    now = time.monotonic()
    guard.idle.extend(idle)
    guard.recent.extend((now, r) for r in recent)
    guard.app_at = guard.idle_at = now    # the application works; the baseline is fresh
    return guard


def test_a_fast_application_made_three_times_slower_strains_the_relative_limit_only():
    readings = dict(idle=[0.2] * 10, recent=[0.6] * 10)
    relative = _guard(10, 100, **readings)
    assert relative.pause_after(0.1) > 0 and relative.strained
    assert relative.report()["strained"] == 1
    absolute = _guard(10, 0, **readings)
    assert absolute.pause_after(0.1) == 0 and not absolute.strained


def test_calm_readings_shrink_the_factor_by_a_share_of_itself():
    guard = _guard(10, 100, idle=[0.2] * 10, recent=[0.6] * 10)
    for _batch in range(5):
        guard.pause_after(0.1)
    strained = guard.factor
    guard.recent.clear()
    guard.recent.extend((time.monotonic(), 0.2) for _r in range(10))
    guard.pause_after(0.1)
    assert guard.factor == pytest.approx(strained * latency.CALM - latency.DECAY)
