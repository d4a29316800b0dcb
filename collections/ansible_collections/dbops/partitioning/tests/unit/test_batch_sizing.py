"""Auto-sizing of backfill batches toward batch_target_ms (pure function, no server)."""
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.batch import MIN_BATCH, next_size as next_batch_size, timeout_ms


def test_a_slow_batch_shrinks_the_next_at_once():
    assert next_batch_size(10000, 2.0, 500, 10000) == 2500      # 4x too slow: a quarter
    assert next_batch_size(10000, 0.8, 500, 10000) == 6250      # proportional
    assert next_batch_size(10000, 60.0, 500, 10000) == 2500     # never below a quarter per step


def test_a_fast_batch_grows_gently_up_to_batch_size():
    assert next_batch_size(1000, 0.1, 500, 10000) == 1251
    assert next_batch_size(9000, 0.1, 500, 10000) == 10000
    assert next_batch_size(4000, 0.4, 500, 10000) == 4000       # near the target: unchanged


def test_clamped_and_disabled():
    assert next_batch_size(12, 5.0, 500, 10000) == MIN_BATCH
    assert next_batch_size(5, 5.0, 500, 3) == 3
    assert next_batch_size(700, 9.0, 0, 10000) == 10000         # no target: batch_size


def test_a_batch_may_run_twenty_times_its_target():
    assert timeout_ms(500) == 10000
    assert timeout_ms(0) == 0          # no target: no statement timeout either
