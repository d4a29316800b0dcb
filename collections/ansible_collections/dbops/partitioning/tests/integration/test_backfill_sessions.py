"""Our sessions against settings and neighbours they do not control (issue: the application never
fails because of us; HP22).

* a statement_timeout, lock_timeout and idle_in_transaction_session_timeout set on the database
  do not cancel the backfill, the verification or the switchover's whole-table check;
* a batch that runs longer than its statement timeout is cancelled, rolled back, and runs again
  smaller;
* a second batch_copy run that waited for the table's lock continues from the state the first
  run left, instead of the state it read before waiting (it used to restart the backfill from 0).
"""
import json
import time

import psycopg2
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import state as st

from ..helpers import backfill_driver as drv
from ..helpers.phase2_setup import TABLE, assert_equal_tables, make_prepared, run, scalar, state_row

ROWS = 1500


def test_timeouts_set_on_the_database_do_not_cancel_our_sessions(pg, db, conn):
    make_prepared(pg, db, rows=ROWS)
    run(conn, "ALTER DATABASE %s SET statement_timeout = '1ms'" % db,
        "ALTER DATABASE %s SET lock_timeout = '1ms'" % db,
        "ALTER DATABASE %s SET idle_in_transaction_session_timeout = '1ms'" % db)
    other = pg.connect(db)
    try:   # the settings are in force for every new session that does not set its own
        with pytest.raises(psycopg2.errors.QueryCanceled):
            other.cursor().execute("SELECT pg_sleep(0.05)")
    finally:
        other.close()
    res = drv.run_module("batch_copy", pg, db, table=TABLE, batch_size=500, verify_batches=True)
    assert not res.get("failed") and res["done"], res
    res = drv.run_module("partition_verify", pg, db, table=TABLE, full=True)
    assert not res.get("failed") and res["status"] == "ok", res
    res = drv.run_module("table_swap", pg, db, table=TABLE, final_check="full")
    assert not res.get("failed") and res["phase"] == "switched", res
    assert res["final_check"]["equal"] and res["final_check"]["rows_a"] == ROWS


def test_a_batch_that_times_out_runs_again_smaller(pg, db, conn):
    make_prepared(pg, db, rows=600)
    # every row written into the twin costs 2 ms: a batch of 300 takes 0.6 s, longer than the
    # 0.2 s a batch may run with batch_target_ms 10 (20 times the target)
    run(conn, "CREATE FUNCTION public.slow_row() RETURNS trigger LANGUAGE plpgsql AS "
              "$$BEGIN PERFORM pg_sleep(0.002); RETURN NEW; END$$",
        "CREATE TRIGGER slow_row BEFORE INSERT ON public.revenues_partitioned FOR EACH ROW "
        "EXECUTE FUNCTION public.slow_row()")
    totals = drv.copy(pg, db, batch_size=300, target_ms=10)
    assert totals["done"] and totals["timeouts"] >= 1, totals
    assert_equal_tables(conn)
    assert state_row(conn)["rows_copied"] == 600   # nothing counted twice


def test_a_run_that_waited_for_the_lock_continues_where_the_other_left_off(pg, db, conn):
    make_prepared(pg, db, rows=ROWS)
    holder = pg.connect(db)
    scalar(holder, "SELECT pg_advisory_lock(hashtextextended(%s, 0))", (st.advisory_key(TABLE),))
    late = drv.module_process("batch_copy", pg, db, table=TABLE, batch_size=300)
    try:
        # the late run has read the state ('prepared') and waits for the table's lock: its last
        # statement is the try (pg_try_advisory_lock) or the look-up of the holder that follows each
        # failed try; both compute the lock's key (hashtextextended)
        end = time.time() + 60
        while time.time() < end and not scalar(
                conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbops.partitioning/batch_copy' "
                      "AND query LIKE '%%hashtextextended%%'"):
            time.sleep(0.05)
        assert time.time() < end, "the late run never tried the table's lock"
        # meanwhile the run holding the lock copies two batches and stops (paused)
        n = []

        def pause_after_two(res):
            n.append(res)
            if len(n) == 2:
                scalar(conn, "SELECT partitioning.pause(%s)", (TABLE,))

        drv.copy(pg, db, batch_size=300, seconds=2, hooks=dict(after_batch=pause_after_two), finish=False)
        scalar(conn, "SELECT partitioning.resume(%s)", (TABLE,))
        assert state_row(conn)["rows_copied"] == 600
    finally:
        holder.close()   # the lock is free: the late run goes on
    out, err = late.communicate(timeout=300)
    res = json.loads(out)
    assert not res.get("failed") and res["done"], res
    # it continued from the checkpoint: only the rest was copied by it, nothing twice
    assert res["call"]["rows"] == ROWS - 600, res["call"]
    assert scalar(conn, "SELECT sum(rows_copied) FROM partitioning.backfill_ranges") == ROWS
    assert_equal_tables(conn)
