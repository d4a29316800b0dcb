"""Phases 1 -> 2 -> 3 -> rollback through the real code of every phase, under a live write load.

The twin comes from phase 1's code (twin.ensure_twin / prepare.prepare_table), the copy and
the verification from playbooks/phase2_migrate.yml, then playbooks/phase3_switchover.yml and
playbooks/rollback.yml run while writer threads keep writing by the table's name. The oracle:
the final table equals exactly what the writers committed; zero application errors.
"""
from ..helpers.phase3_setup import SPEC, Writers, is_partitioned, make_prepared_real, phase, rows_of
from ..helpers.playbook_runner import run_playbook
from ..helpers.switchover import assert_carried_over, assert_original_back

TABLES = [dict(SPEC)]


def test_phases_1_2_3_and_rollback_under_load(pg, db):
    make_prepared_real(pg, db, rows=1500)
    conn = pg.connect(db)
    writers = Writers(pg, db, n=2, seed=3)
    initial = None
    try:
        run = run_playbook("phase2_migrate", pg, db, TABLES)
        assert not run.failed, run
        assert phase(conn) == "verified"
        initial = rows_of(conn, "public.revenues")
        writers.start()
        writers.wait_ops(20)
        run = run_playbook("phase3_switchover", pg, db, TABLES, extra_vars={"partitioning_lock_timeout_ms": 200})
        assert not run.failed, run
        assert phase(conn) == "switched" and is_partitioned(conn, "public.revenues")
        writers.wait_ops(30)
        run = run_playbook("rollback", pg, db, TABLES, extra_vars={"partitioning_lock_timeout_ms": 200})
        assert not run.failed, run
        writers.wait_ops(20)
    finally:
        writers.stop()
    assert writers.errors == []
    assert rows_of(conn, "public.revenues") == writers.expected(initial)
    assert phase(conn) == "rolled_back"
    assert_original_back(conn, db)
    conn.close()


def test_phases_1_2_3_switched_equal_and_cleanup(pg, db):
    make_prepared_real(pg, db, rows=1500)
    conn = pg.connect(db)
    assert not run_playbook("phase2_migrate", pg, db, TABLES).failed
    initial = rows_of(conn, "public.revenues")
    writers = Writers(pg, db, n=2, seed=5).start()
    try:
        writers.wait_ops(20)
        run = run_playbook("phase3_switchover", pg, db, TABLES, extra_vars={"partitioning_lock_timeout_ms": 200})
        assert not run.failed, run
        writers.wait_ops(30)
    finally:
        writers.stop()
    assert writers.errors == []
    assert rows_of(conn, "public.revenues") == rows_of(conn, "public.revenues_old") == writers.expected(initial)
    assert_carried_over(conn, db)
    run = run_playbook("cleanup", pg, db, TABLES, extra_vars={"cleanup_min_soak_s": 0})
    assert not run.failed, run
    assert phase(conn) == "cleaned"
    conn.close()
