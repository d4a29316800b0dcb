"""The backfill's brakes: operator pause/resume, replica lag, active backends, lock waiters."""
import os
import threading
import time
import uuid

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import health
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import throttle
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.throttle import Limits

from ..helpers import backfill_driver as drv
from ..helpers.phase2_setup import TABLE, assert_equal_tables, make_prepared, run, scalar, session, state_row


@pytest.fixture
def prepared(pg, db, conn):
    make_prepared(pg, db, rows=1000)
    return conn


def test_pause_is_honoured_and_reported_then_resume_continues(pg, db, prepared):
    conn = prepared
    assert scalar(conn, "SELECT partitioning.pause(%s, 'month-end close')", (TABLE,)) == TABLE + ": paused"
    totals = drv.copy(pg, db, batch_size=200, seconds=1.0)
    assert totals["batches"] == 0 and not totals["done"]
    assert totals["stopped_by"] == "paused: month-end close"
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned") == 0
    assert scalar(conn, "SELECT waiting_for FROM partitioning.progress WHERE paused") == "month-end close"

    # A pause set while a run copies stops it before its next batch.
    batches = []

    def pause_after_two(res):
        batches.append(res)
        if len(batches) == 2:
            scalar(conn, "SELECT partitioning.pause(%s)", (TABLE,))

    scalar(conn, "SELECT partitioning.resume(%s)", (TABLE,))
    totals = drv.copy(pg, db, batch_size=200, seconds=1.0, hooks=dict(after_batch=pause_after_two))
    assert totals["batches"] == 2 and totals["stopped_by"].startswith("paused")

    # Resumed from another terminal while the run waits: it goes on within the same call.
    since = scalar(conn, "SELECT updated_at FROM partitioning.tables")
    resumer = threading.Thread(target=_resume_once_waiting, args=(pg, db, since))
    resumer.start()
    totals = drv.copy(pg, db, batch_size=200, seconds=30)
    resumer.join()
    assert totals["done"] and totals["waited_s"] > 0
    assert totals["waits"][0].startswith("paused")
    assert_equal_tables(conn)
    assert scalar(conn, "SELECT waiting_for FROM partitioning.progress") is None


def _resume_once_waiting(pg, db, since, timeout=60):
    """The operator's resume, once the run reports (after ``since``) that it waits for the pause."""
    c = pg.connect(db)
    try:
        end = time.time() + timeout
        while time.time() < end and not scalar(
                c, "SELECT throttle_reason LIKE 'paused%%' AND updated_at > %s FROM partitioning.tables", (since,)):
            time.sleep(0.05)
        scalar(c, "SELECT partitioning.resume(%s)", (TABLE,))
    finally:
        c.close()


def test_replica_lag_over_the_limit_waits(pg, db, prepared, monkeypatch):
    # SQL-level override of the lag reading (a real replica's lag is not controllable here);
    # the real query runs against a real replica in the test below.
    monkeypatch.setattr(health, "REPLICA_LAG_SQL", "SELECT 45.5::float8 AS lag, 1 AS replicas, 0 AS hidden")
    totals = drv.copy(pg, db, batch_size=200, seconds=0.8, limits=Limits(max_replica_lag_s=30))
    assert totals["batches"] == 0 and totals["stopped_by"] == "replica lag 45.5 s > 30 s"
    totals = drv.copy(pg, db, batch_size=200, seconds=30, limits=Limits(max_replica_lag_s=60))
    assert totals["done"]


def test_replica_lag_is_read_from_a_real_streaming_replica(pg, db, prepared, pg_base_dir):
    s = session(pg, db)
    rep = None
    try:
        assert health.replica_lag_s(s) == 0.0  # no replica: no lag
        run(prepared, "CHECKPOINT")  # pg_basebackup's own checkpoint is then quick
        rep = pg.replica(os.path.join(pg_base_dir, "replica-" + uuid.uuid4().hex[:8]))
        end = time.time() + 30
        while time.time() < end and s.query(health.REPLICA_LAG_SQL)[0]["replicas"] < 1:
            time.sleep(0.1)
        reading = s.query(health.REPLICA_LAG_SQL)[0]
        assert reading["replicas"] == 1
        assert 0 <= reading["lag"] < 30
        assert throttle.check(s, "partitioning", TABLE, Limits(max_replica_lag_s=30)) is None
        assert health.replica_lag_warnings(s) == []
        # a role without pg_monitor reads NULL lags: warned, never taken for "no lag"
        role = "lag_" + db.lower()
        s.query("CREATE ROLE %s" % role)
        try:
            s.query("SET ROLE %s" % role)
            assert any("pg_monitor" in w for w in health.replica_lag_warnings(s))
            s.query("RESET ROLE")
        finally:
            s.query("RESET ROLE")
            s.query("DROP ROLE %s" % role)
    finally:
        s.close()
        if rep is not None:
            rep.destroy()


def test_active_backends_and_lock_waiters_over_their_thresholds_wait(pg, db, prepared):
    conn = prepared
    sleepers = [pg.connect(db) for _unused in range(2)]
    threads = [threading.Thread(target=lambda c=c: c.cursor().execute("SELECT pg_sleep(2)")) for c in sleepers]
    for t in threads:
        t.start()
    time.sleep(0.3)
    s = session(pg, db)
    try:
        reason = throttle.check(s, "partitioning", TABLE, Limits(max_replica_lag_s=0, max_active_backends=1))
        assert reason is not None and "active backends > 1" in reason
    finally:
        for t in threads:
            t.join()
        for c in sleepers:
            c.close()

    holder = pg.connect(db, autocommit=False)
    holder.cursor().execute("LOCK TABLE public.revenues IN ACCESS EXCLUSIVE MODE")
    waiters = [pg.connect(db) for _unused in range(2)]
    threads = [threading.Thread(target=lambda c=c: c.cursor().execute("SELECT count(*) FROM public.revenues"))
               for c in waiters]
    for t in threads:
        t.start()
    try:
        end = time.time() + 20
        while time.time() < end and scalar(conn, "SELECT count(*) FROM pg_stat_activity "
                                                 "WHERE wait_event_type = 'Lock'") < 2:
            time.sleep(0.05)
        reason = throttle.check(s, "partitioning", TABLE, Limits(max_replica_lag_s=0, max_lock_waiters=1))
        assert reason == "2 backends waiting for locks > 1"
    finally:
        holder.rollback()
        holder.close()
        for t in threads:
            t.join()
        for c in waiters:
            c.close()
        s.close()
    totals = drv.copy(pg, db, batch_size=500, seconds=30, limits=Limits(0, 50, 50))
    assert totals["done"]
    assert state_row(conn)["throttle_reason"] is None
    run(conn, "SELECT 1")
