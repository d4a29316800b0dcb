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
from ..helpers.phase2_setup import assert_equal_tables, context, make_prepared, next_batch, pending, scalar, session

ROWS = 200


def _wait_blocked(conn, pid, timeout=20, writer=None):
    """Until the writer waits for a lock (or, given ``writer``, has finished without waiting)."""
    end = time.time() + timeout
    while time.time() < end:
        if scalar(conn, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)) == "Lock":
            return True
        if writer is not None and writer.thread is not None and not writer.thread.is_alive():
            return False
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


# The unlocked batch's upper key read by the batch (the limit-th key) or reckoned by the caller
# (batch.span_upper on an integer key): the races are the same either way.
UPPER = pytest.mark.parametrize("reckon", [False, True], ids=["read-upper", "reckoned-upper"])


def _first_batch(pg, db, hook, limit=ROWS, locked=True, reckon=False):
    """The backfill's first batch, in the locking form or (``locked=False``) as a worker runs it."""
    drv.start(pg, db)
    s = session(pg, db)
    try:
        ctx, _unused = context(s)
        if locked:
            ctx.forms["only_locked"] = True
        return next_batch(s, ctx, limit, before_commit=hook, reckon=reckon)
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


def _end_and_settle(pg, db, conn, writer, outcome):
    """The writer commits or rolls back; the reconcile then settles every key: equal tables."""
    if outcome == "commit":
        writer.conn.commit()
    else:
        writer.conn.rollback()
    writer.close()
    _reconcile(pg, db)
    assert pending(conn) == []
    assert_equal_tables(conn)


def _assert_moved_once(conn, key, partition):
    """The row of ``key`` is in the twin once, in ``partition``, and the tables are equal."""
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = %s", (key,)) == 1
    assert scalar(conn, "SELECT tableoid::regclass::text FROM public.revenues_partitioned WHERE id = %s",
                  (key,)) == partition
    assert_equal_tables(conn)


@pytest.fixture
def prepared(pg, db, conn):
    """Phase 1 done and the backfill started: its key log is installed (CREATE TRIGGER waits for
    writers in flight, so the tests' writers come after it)."""
    make_prepared(pg, db, rows=ROWS)
    drv.start(pg, db)
    return conn


def test_delete_after_the_batch_read_the_row_is_not_resurrected(pg, db, prepared):
    conn = prepared
    _after_lock(pg, db, conn, "DELETE FROM public.revenues WHERE id = 50")
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 50") == 0
    assert_equal_tables(conn)


def test_partition_key_update_after_read_moves_the_row_without_ghost(pg, db, prepared):
    conn = prepared
    _after_lock(pg, db, conn, "UPDATE public.revenues SET occurred_at = '2025-02-02 12:00+00' WHERE id = 60")
    _assert_moved_once(conn, 60, "revenues_2025_02")


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
    _end_and_settle(pg, db, conn, w, outcome)


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


# --- the unlocked batch (the default) ---------------------------------------------------------

def _unlocked_race(pg, db, conn, stmt, reconcile_in_flight=True, reckon=False):
    """The batch reads its rows without locks; ``stmt`` runs and commits before the batch commits
    (a writer that waits for the batch's twin row finishes after it). While the batch is in
    flight a reconcile runs and must leave the keys of the batch's range alone; after the commit
    the reconcile settles them. Returns (batch result, ghosts of the keys seen before the reconcile)."""
    w = Writer(pg, db)
    seen = {}

    def hook(res):
        w.run_async(stmt)
        if not _wait_blocked(conn, w.pid, writer=w):
            w.join()
            seen["pending_in_flight"] = pending(conn)
            if reconcile_in_flight:
                seen["consumed_in_flight"] = _reconcile(pg, db)["consumed"]

    res = _first_batch(pg, db, hook, locked=False, reckon=reckon)
    w.join()
    w.close()
    seen["twin_rows"] = scalar(conn, "SELECT count(*) FROM public.revenues_partitioned")
    seen["pending"] = pending(conn)
    _reconcile(pg, db)
    return res, seen


@UPPER
def test_unlocked_batch_delete_during_the_batch_leaves_a_ghost_that_the_key_log_removes(pg, db, prepared, reckon):
    conn = prepared
    res, seen = _unlocked_race(pg, db, conn, "DELETE FROM public.revenues WHERE id = 50", reckon=reckon)
    assert res["form"] == "plain" and res["seen"] == ROWS
    # the window is real: the batch copied the row after the delete's trigger ran
    assert seen["twin_rows"] == ROWS and seen["pending"] == [{"id": 50}]
    # a reconcile while the batch was in flight left the key alone (its checkpoint had not passed it)
    assert seen["pending_in_flight"] == [{"id": 50}] and seen["consumed_in_flight"] == 0
    assert pending(conn) == []
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 50") == 0
    assert_equal_tables(conn)


@UPPER
def test_unlocked_batch_partition_key_move_leaves_no_ghost_after_the_reconcile(pg, db, prepared, reckon):
    conn = prepared
    _res, seen = _unlocked_race(pg, db, conn,
                                "UPDATE public.revenues SET occurred_at = '2025-02-02 12:00+00' WHERE id = 60",
                                reckon=reckon)
    assert seen["pending"] == [{"id": 60}]
    _assert_moved_once(conn, 60, "revenues_2025_02")


@UPPER
def test_unlocked_batch_primary_key_move_leaves_no_ghost_after_the_reconcile(pg, db, prepared, reckon):
    conn = prepared
    _res, seen = _unlocked_race(pg, db, conn, "UPDATE public.revenues SET id = 100000 WHERE id = 70",
                                reckon=reckon)
    assert seen["pending"] == [{"id": 70}]
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 70") == 0
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 100000") == 1
    assert_equal_tables(conn)


@UPPER
def test_unlocked_batch_update_of_a_copied_row_waits_for_the_batch_and_wins(pg, db, prepared, reckon):
    """The writer's trigger meets the batch's uncommitted twin row: its insert waits for the
    batch to commit, then updates it (ON CONFLICT DO UPDATE): the newer version, no key logged."""
    conn = prepared
    w = Writer(pg, db)
    blocked = []

    def hook(res):
        w.run_async("UPDATE public.revenues SET amount = 4242, note = 'newer' WHERE id = 80")
        blocked.append(_wait_blocked(conn, w.pid, writer=w))

    _first_batch(pg, db, hook, locked=False, reckon=reckon)
    w.join()
    w.close()
    assert blocked == [True]
    assert pending(conn) == []
    assert scalar(conn, "SELECT note FROM public.revenues_partitioned WHERE id = 80") == "newer"
    assert_equal_tables(conn)


@UPPER
def test_unlocked_batch_repeatable_read_writer_is_reconciled_after_the_checkpoint(pg, db, prepared, reckon):
    """A REPEATABLE READ writer updates a row of the batch in flight: its trigger cannot see the
    batch's row and logs the key; a reconcile in flight must not consume it (it would copy the
    newer version before the batch's older one lands and be lost to ON CONFLICT)."""
    conn = prepared
    w = Writer(pg, db, isolation="REPEATABLE READ")
    w.run("SELECT count(*) FROM public.revenues", commit=False)  # takes the snapshot
    consumed = []

    def hook(res):
        w.run("UPDATE public.revenues SET note = 'rr' WHERE id = 30")
        consumed.append(_reconcile(pg, db)["consumed"])

    _first_batch(pg, db, hook, locked=False, reckon=reckon)
    w.close()
    assert consumed == [0]
    assert {"id": 30} in pending(conn)
    _reconcile(pg, db)
    assert scalar(conn, "SELECT note FROM public.revenues_partitioned WHERE id = 30") == "rr"
    assert_equal_tables(conn)


@pytest.mark.parametrize("stmt,outcome,form", [
    pytest.param("UPDATE public.revenues SET note = 'held' WHERE id = 90", "commit", "locked", id="update"),
    pytest.param("UPDATE public.revenues SET occurred_at = '2025-12-24 00:00+00' WHERE id = 90", "commit", "plain",
                 id="move"),
    pytest.param("DELETE FROM public.revenues WHERE id = 90", "commit", "plain", id="delete"),
    pytest.param("SELECT 1 FROM public.revenues WHERE id = 90 FOR UPDATE", "commit", "plain", id="select-for-update"),
    pytest.param("UPDATE public.revenues SET note = 'undone' WHERE id = 90", "rollback", "locked",
                 id="rolled-back-update"),
    pytest.param("DELETE FROM public.revenues WHERE id = 90", "rollback", "plain", id="rolled-back-delete"),
])
@UPPER
def test_unlocked_batch_with_a_row_held_by_a_writer(pg, db, prepared, stmt, outcome, form, reckon):
    """A writer that wrote the twin row of a key before the batch (an update of a row not copied
    yet) makes the batch wait for it: after lock_timeout_ms the batch runs in the locking form,
    skips the row and logs it. A writer whose trigger did not write that key (a move writes the
    new key, a delete writes nothing) does not: the batch copies the old row, and a move or
    delete that commits is reconciled from the key log."""
    conn = prepared
    w = Writer(pg, db)
    w.run(stmt, commit=False)  # the writer holds the row while the batch runs
    res = _first_batch(pg, db, None, locked=False, reckon=reckon)
    assert res["form"] == form
    assert res["skipped"] == (1 if form == "locked" else 0)
    _end_and_settle(pg, db, conn, w, outcome)


def test_the_key_log_is_dropped_only_after_the_writers_it_logged_have_ended(pg, db, prepared):
    """The last batch commits a row whose delete is still uncommitted (the key log's entry too).
    finish_if_done drops the key log first: DROP TRIGGER waits for that writer, so the entry is
    committed when the last reconcile runs, and the ghost goes."""
    conn = prepared
    w = Writer(pg, db)

    def hook(res):
        w.run("DELETE FROM public.revenues WHERE id = 150", commit=False)

    res = _first_batch(pg, db, hook, limit=ROWS + 1, locked=False)
    assert res["done"]
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned WHERE id = 150") == 1
    finished = []
    t = threading.Thread(target=lambda: finished.append(_finish(pg, db)))
    t.start()
    end = time.time() + 20
    while time.time() < end and not scalar(
            conn, "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'"):
        time.sleep(0.02)
    assert not finished, "the key log was dropped while a writer it logged was still open"
    w.conn.commit()
    w.close()
    t.join(60)
    assert finished == [True]
    assert scalar(conn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'partitioning_sync_keylog%%'") == 0
    assert_equal_tables(conn)


def _finish(pg, db):
    s = session(pg, db)
    try:
        ctx, _unused = context(s)
        return backfill.finish_if_done(s, ctx, lock_timeout_ms=50, retries=60)
    finally:
        s.close()
