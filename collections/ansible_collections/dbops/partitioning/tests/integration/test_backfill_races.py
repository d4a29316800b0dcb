"""Deterministic interleavings of a backfill batch with application writers (HP1-HP3, docs/design.md).

Each test steps two connections by hand: the batch runs its statement and, before it
commits (the ``before_commit`` hook of copy_batch), a writer acts on a row of the batch.
A writer that comes after the batch's FOR SHARE lock blocks (we wait until PostgreSQL shows
it waiting on the lock), the batch commits, the writer proceeds. A writer that holds the
row before the batch makes the batch skip it (pending_keys) and the reconcile settle it.
At the end, the twin equals the original row for row.
"""
import threading
import time

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import backfill
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.reconcile import reconcile

from ..helpers import backfill_driver as drv
from ..helpers.phase2_setup import assert_equal_tables, context, make_prepared, pending, scalar, session, templates

ROWS = 200


def _wait_blocked(conn, pid, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if scalar(conn, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)) == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError("the writer never blocked on the batch's lock")


class Writer:
    """A writer connection whose statement runs in a thread (it is expected to block)."""

    def __init__(self, pg, db, isolation=None):
        self.conn = pg.connect(db, autocommit=False)
        if isolation:
            self.conn.set_session(isolation_level=isolation)
        self.pid = self.conn.get_backend_pid()
        self.error = None
        self.thread = None

    def run(self, stmt, commit=True):
        cur = self.conn.cursor()
        cur.execute(stmt)
        if commit:
            self.conn.commit()

    def run_async(self, stmt, commit=True):
        def go():
            try:
                self.run(stmt, commit)
            except Exception as e:  # noqa: BLE001
                self.error = e
        self.thread = threading.Thread(target=go)
        self.thread.start()

    def join(self):
        self.thread.join(30)
        assert not self.thread.is_alive()
        if self.error:
            raise self.error

    def close(self):
        self.conn.close()


def _first_batch(pg, db, hook, limit=ROWS):
    drv.start(pg, db)
    s = session(pg, db)
    try:
        ctx, _unused = context(s)
        res = backfill.copy_batch(s, templates(), ctx, 0, limit, before_commit=hook)
        return res
    finally:
        s.close()


def _reconcile(pg, db):
    s = session(pg, db)
    try:
        ctx, _unused = context(s)
        return reconcile(s, ctx)
    finally:
        s.close()


def _after_lock(pg, db, conn, stmt):
    """The batch locks the row; ``stmt`` comes after the lock, blocks, runs after the commit."""
    w = Writer(pg, db)

    def hook(res):
        w.run_async(stmt)
        _wait_blocked(conn, w.pid)

    res = _first_batch(pg, db, hook)
    w.join()
    w.close()
    return res


@pytest.fixture
def prepared(pg, db, conn):
    make_prepared(pg, db, rows=ROWS)
    return conn


def test_delete_after_the_batch_read_the_row_is_not_resurrected(pg, db, prepared):
    conn = prepared
    _after_lock(pg, db, conn, "DELETE FROM public.revenues WHERE id = 50")
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 50") == 0
    assert_equal_tables(conn)


def test_partition_key_update_after_read_moves_the_row_without_ghost(pg, db, prepared):
    conn = prepared
    _after_lock(pg, db, conn, "UPDATE public.revenues SET occurred_at = '2025-02-02 12:00+00' WHERE id = 60")
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 60") == 1
    assert scalar(conn, "SELECT tableoid::regclass::text FROM public.revenues_partitioned WHERE id = 60") \
        == "revenues_2025_02"
    assert_equal_tables(conn)


def test_primary_key_update_after_read_moves_the_row_without_ghost(pg, db, prepared):
    conn = prepared
    _after_lock(pg, db, conn, "UPDATE public.revenues SET id = 100000 WHERE id = 70")
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 70") == 0
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 100000") == 1
    assert_equal_tables(conn)


def test_update_committed_after_the_read_wins(pg, db, prepared):
    conn = prepared
    _after_lock(pg, db, conn, "UPDATE public.revenues SET amount = 4242, note = 'newer' WHERE id = 80")
    assert scalar(conn, "SELECT note FROM public.revenues_partitioned WHERE id = 80") == "newer"
    assert_equal_tables(conn)


@pytest.mark.parametrize("stmt,outcome", [
    ("UPDATE public.revenues SET note = 'held' WHERE id = 90", "commit"),
    ("UPDATE public.revenues SET occurred_at = '2025-12-24 00:00+00' WHERE id = 90", "commit"),
    ("DELETE FROM public.revenues WHERE id = 90", "commit"),
    ("SELECT 1 FROM public.revenues WHERE id = 90 FOR UPDATE", "commit"),
    ("UPDATE public.revenues SET note = 'undone' WHERE id = 90", "rollback"),
    ("DELETE FROM public.revenues WHERE id = 90", "rollback"),
], ids=["update", "move", "delete", "select-for-update", "rolled-back-update", "rolled-back-delete"])
def test_row_held_by_a_writer_is_skipped_then_reconciled(pg, db, prepared, stmt, outcome):
    conn = prepared
    w = Writer(pg, db)
    w.run(stmt, commit=False)  # the writer holds the row lock while the batch runs
    res = _first_batch(pg, db, None)
    assert res["skipped"] == 1 and res["locked"] == ROWS - 1
    assert pending(conn) == [{"id": 90}]
    # While the writer still holds the row the reconcile leaves it pending (never waits).
    assert _reconcile(pg, db)["busy"] == 1
    assert pending(conn) == [{"id": 90}]
    if outcome == "commit":
        w.conn.commit()
    else:
        w.conn.rollback()
    w.close()
    _reconcile(pg, db)
    assert pending(conn) == []
    assert_equal_tables(conn)


def test_repeatable_read_writer_older_than_the_batch_is_reconciled(pg, db, prepared):
    """The writer's snapshot predates the batch's commit: its trigger cannot see the copied
    twin row, logs the key instead of failing, and the reconcile copies the newest version."""
    conn = prepared
    w = Writer(pg, db, isolation="REPEATABLE READ")
    w.run("SELECT count(*) FROM public.revenues", commit=False)  # takes the snapshot
    _first_batch(pg, db, None)
    w.run("UPDATE public.revenues SET note = 'rr' WHERE id = 30")
    w.close()
    assert {"id": 30} in pending(conn)
    _reconcile(pg, db)
    assert scalar(conn, "SELECT note FROM public.revenues_partitioned WHERE id = 30") == "rr"
    assert_equal_tables(conn)


def test_insert_during_the_batch_is_copied_once(pg, db, prepared):
    conn = prepared
    w = Writer(pg, db)

    def hook(res):
        w.run("INSERT INTO public.revenues (id, occurred_at, region, amount) VALUES (150, '2025-03-01', 'eu', 1) "
              "ON CONFLICT (id) DO NOTHING")
        w.run("INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-03-02', 'us', 2)")

    _first_batch(pg, db, hook)
    w.close()
    drv.copy(pg, db, batch_size=ROWS)
    assert_equal_tables(conn)
