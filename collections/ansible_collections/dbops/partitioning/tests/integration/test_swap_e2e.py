"""Phases 1 -> 2 -> 3 -> rollback through the real code of every phase, under a live write load.

The twin comes from phase 1's code (twin.ensure_twin / prepare.prepare_table), the copy and
the verification from playbooks/phase2_migrate.yml, then playbooks/phase3_switchover.yml and
playbooks/rollback.yml run while writer threads keep writing by the table's name. The oracle:
the final table equals exactly what the writers committed; zero application errors.
"""
from ..helpers.phase3_setup import SPEC, is_partitioned, make_prepared_real, phase, rows_of, under_load
from ..helpers.playbook_runner import run_playbook
from ..helpers.switchover import assert_carried_over, assert_original_back

TABLES = [dict(SPEC)]


def play(playbook, pg, db, **extra_vars):
    """``playbook`` on the test's table, which must succeed."""
    run = run_playbook(playbook, pg, db, TABLES, extra_vars=extra_vars)
    assert not run.failed, run


def migrated_under_load(pg, db, seed):
    """The table through phase 1 and the phase-2 playbook, then two writers on it (see under_load)."""
    make_prepared_real(pg, db, rows=1500)
    play("phase2_migrate", pg, db)
    return under_load(pg, db, n=2, seed=seed)


def test_phases_1_2_3_and_rollback_under_load(pg, db):
    conn, initial, writers = migrated_under_load(pg, db, seed=3)
    try:
        assert phase(conn) == "verified"
        play("phase3_switchover", pg, db, partitioning_lock_timeout_ms=200)
        assert phase(conn) == "switched" and is_partitioned(conn, "public.revenues")
        writers.wait_ops(30)
        play("rollback", pg, db, partitioning_lock_timeout_ms=200)
        writers.wait_ops(20)
    finally:
        writers.stop()
    assert writers.errors == []
    assert rows_of(conn, "public.revenues") == writers.expected(initial)
    assert phase(conn) == "rolled_back"
    assert_original_back(conn, db)
    conn.close()


def test_phases_1_2_3_switched_equal_and_cleanup(pg, db):
    conn, initial, writers = migrated_under_load(pg, db, seed=5)
    try:
        play("phase3_switchover", pg, db, partitioning_lock_timeout_ms=200)
        writers.wait_ops(30)
    finally:
        writers.stop()
    assert writers.errors == []
    assert rows_of(conn, "public.revenues") == rows_of(conn, "public.revenues_old") == writers.expected(initial)
    assert_carried_over(conn, db)
    play("cleanup", pg, db, cleanup_min_soak_s=0)
    assert phase(conn) == "cleaned"
    conn.close()
