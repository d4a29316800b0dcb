"""The locks maintenance takes, read from pg_locks on PostgreSQL 18 and 15 (never from timing).

* a new partition (CREATE TABLE ... LIKE + CHECK, ATTACH): SHARE UPDATE EXCLUSIVE on the table, so
  the application reads and writes on; ACCESS EXCLUSIVE on the default partition only, which it
  scans; CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE on the table;
* a plain DETACH: ACCESS EXCLUSIVE on the table, its default partition and the partition;
  DETACH ... CONCURRENTLY, while it waits for older transactions: no table lock at all;
  FINALIZE: SHARE UPDATE EXCLUSIVE on the table;
* the table is always locked before a partition: a step waiting for the table holds nothing on
  its partitions (no deadlock with the application, which locks in that order too), and gives up
  after the lock budget holding nothing;
* the lock times the modules record stay within the budget.
"""
import contextlib
import threading
import time

import psycopg2
import pytest

from ..helpers.maintenance import LOCKS_SQL, install, interrupt_concurrent_detach, make_table, rows, run_premake, run_retention, spec_of, utc
from ..helpers.phase3_setup import run

CREATE_Q4 = ("SELECT status, lock_ms, lock_mode FROM partitioning.create_range_partition("
             "'public.ev', 'ev_2025_10', '2025-10-01 00:00:00+00', '2025-11-01 00:00:00+00', %s)")


def locks_of(conn, pid):
    held = {}
    for relname, mode, granted in rows(conn, LOCKS_SQL, (pid,)):
        held.setdefault(relname, set()).add(mode if granted else "waiting " + mode)
    return held


def wait_until(predicate, what, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("timed out waiting until " + what)


@contextlib.contextmanager
def transaction(pg, db, commit):
    """A connection of its own in one transaction, committed (or rolled back) and closed after the block."""
    conn = pg.connect(db, autocommit=False)
    try:
        yield conn
    finally:
        if commit:
            conn.commit()
        else:
            conn.rollback()
        conn.close()


def installed(conn, **layout):
    """make_table(conn, **layout) with the maintenance functions installed; returns ``conn``."""
    make_table(conn, **layout)
    install(conn)
    return conn


@pytest.fixture
def table(conn):
    return installed(conn, periods=6)           # ev_2025_01 .. ev_2025_06 and ev_default


def test_a_new_partition_locks_the_table_share_update_exclusive(pg, db, table):
    with transaction(pg, db, commit=True) as step:
        status, _ms, mode = rows(step, CREATE_Q4, (200,))[0]
        assert status == "created" and mode == "ACCESS EXCLUSIVE (default partition)"
        held = locks_of(table, step.get_backend_pid())
        assert held["ev"] == {"AccessShareLock", "ShareUpdateExclusiveLock"}, held
        assert "AccessExclusiveLock" in held["ev_default"], held         # and the read that checked it
        assert set(held) == {"ev", "ev_default"}, "no other partition is locked: %s" % held
        # the application writes on meanwhile (a partition other than the default one)
        app = pg.connect(db)
        run(app, "SET statement_timeout = '20s'",
            "INSERT INTO public.ev (k, note) VALUES ('2025-03-05 10:00+00', 'written while the step holds its locks')")
        app.close()
    # CREATE TABLE ... PARTITION OF, for comparison: ACCESS EXCLUSIVE on the table itself
    with transaction(pg, db, commit=False) as other:
        run(other, "CREATE TABLE public.ev_2025_11 PARTITION OF public.ev FOR VALUES FROM ('2025-11-01 00:00+00') "
                   "TO ('2025-12-01 00:00+00')")
        assert "AccessExclusiveLock" in locks_of(table, other.get_backend_pid())["ev"]


def test_without_a_default_partition_nothing_blocks(pg, db, conn):
    installed(conn, periods=6, default=False)
    with transaction(pg, db, commit=True) as step:
        status, _ms, mode = rows(step, CREATE_Q4, (200,))[0]
        assert status == "created" and mode == "SHARE UPDATE EXCLUSIVE"
        held = locks_of(conn, step.get_backend_pid())
        assert all("AccessExclusiveLock" not in modes for modes in held.values()), held


def test_plain_detach_locks_table_default_and_partition(pg, db, table):
    with transaction(pg, db, commit=False) as step:
        status = rows(step, "SELECT status FROM partitioning.detach_range_partition('public.ev', 'public.ev_2025_01', "
                            "'public.ev', 'detach', 200)")[0][0]
        assert status == "detached"
        held = locks_of(table, step.get_backend_pid())
        assert held == {"ev": {"AccessExclusiveLock"}, "ev_default": {"AccessExclusiveLock"},
                        "ev_2025_01": {"AccessExclusiveLock"}}, held


def test_detach_concurrently_waits_holding_no_table_lock_then_finalize(pg, db, conn):
    installed(conn, periods=4, default=False)
    reader = pg.connect(db, autocommit=False)
    rows(reader, "SELECT count(*) FROM public.ev")            # an older transaction that used the table
    detacher = pg.connect(db)
    pid = detacher.get_backend_pid()
    errors = []

    def detach():
        try:
            run(detacher, "SET lock_timeout = '30s'", "ALTER TABLE public.ev DETACH PARTITION public.ev_2025_01 CONCURRENTLY")
        except psycopg2.Error as e:       # pragma: no cover - reported below
            errors.append(e)
    t = threading.Thread(target=detach)
    t.start()
    try:
        wait_until(lambda: rows(conn, "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted "
                                      "AND locktype = 'virtualxid'", (pid,))[0][0] == 1,
                   "DETACH CONCURRENTLY waits for the older transaction")
        assert locks_of(conn, pid) == {}, "no lock on any table while it waits"
        app = pg.connect(db)
        run(app, "SET statement_timeout = '20s'", "INSERT INTO public.ev (k) VALUES ('2025-02-02 00:00+00')",
            "SELECT count(*) FROM public.ev")
        app.close()
    finally:
        reader.rollback()
        t.join(60)
        reader.close()
        detacher.close()
    assert not errors, errors
    assert rows(conn, "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'public.ev_2025_01'::regclass")[0][0] == 0

    # interrupted: the wait times out, the partition is left "detach pending"; FINALIZE finishes it
    interrupt_concurrent_detach(pg, db, "ev_2025_02")
    assert rows(conn, "SELECT inhdetachpending FROM pg_inherits WHERE inhrelid = 'public.ev_2025_02'::regclass") == [(True,)]
    with transaction(pg, db, commit=True) as step:
        status, _ms, mode = rows(step, "SELECT status, lock_ms, lock_mode FROM partitioning.detach_range_partition("
                                       "'public.ev', 'public.ev_2025_02', 'public.ev', 'detach', 200)")[0]
        assert (status, mode) == ("finalized", "SHARE UPDATE EXCLUSIVE")
        held = locks_of(conn, step.get_backend_pid())
        assert "ShareUpdateExclusiveLock" in held["ev"] and "AccessExclusiveLock" not in held["ev"], held
    assert rows(conn, "SELECT count(*) FROM pg_inherits WHERE inhrelid = 'public.ev_2025_02'::regclass")[0][0] == 0


@pytest.mark.parametrize("step_sql, blocker", [
    (CREATE_Q4 % 5000, "LOCK TABLE public.ev IN SHARE MODE"),
    ("SELECT status FROM partitioning.detach_range_partition('public.ev', 'public.ev_2025_01', 'public.ev', 'detach', "
     "5000)", "SELECT count(*) FROM public.ev"),
], ids=["create", "detach"])
def test_the_table_is_locked_before_any_partition(pg, db, table, step_sql, blocker):
    holder = pg.connect(db, autocommit=False)
    run(holder, blocker)
    step = pg.connect(db, autocommit=False)
    pid = step.get_backend_pid()
    done = []
    t = threading.Thread(target=lambda: done.append(rows(step, step_sql)))
    t.start()
    try:
        wait_until(lambda: any(m.startswith("waiting") for m in locks_of(table, pid).get("ev", ())),
                   "the step waits for the table")
        held = locks_of(table, pid)
        assert set(held) == {"ev"}, "nothing held on a partition while waiting for the table: %s" % held
    finally:
        holder.rollback()
        t.join(60)
        holder.close()
    assert done, "the step went on once the table was free"
    step.rollback()
    step.close()


def test_a_step_gives_up_after_the_budget_holding_nothing(pg, db, table):
    holder = pg.connect(db, autocommit=False)
    run(holder, "LOCK TABLE public.ev IN SHARE MODE")
    step = pg.connect(db, autocommit=False)
    try:
        with pytest.raises(psycopg2.errors.LockNotAvailable):
            rows(step, CREATE_Q4, (100,))
        step.rollback()
        assert locks_of(table, step.get_backend_pid()) == {}
    finally:
        holder.rollback()
        holder.close()
        step.close()


def test_recorded_lock_times_stay_within_the_budget(pg, db, table):
    spec = spec_of(premake=2, retention=3, retention_action="drop")
    made = run_premake(pg, db, spec, utc(2025, 6, 20, 8))
    assert made["created"] == ["ev_2025_07", "ev_2025_08"], made
    gone = run_retention(pg, db, spec, utc(2025, 6, 20, 8))
    assert gone["dropped"] == ["ev_2025_01", "ev_2025_02"], gone
    recorded = rows(table, "SELECT step, partition_name, lock_mode, lock_ms, source FROM partitioning.maintenance_steps "
                           "ORDER BY id")
    assert [r[:2] for r in recorded] == [
        ("create", "ev_2025_07"), ("create", "ev_2025_08"), ("detach", "ev_2025_01"), ("retire", "ev_2025_01"),
        ("detach", "ev_2025_02"), ("retire", "ev_2025_02")]
    for step, partition, mode, ms, source in recorded:
        assert source == "module" and mode and ms is not None and 0 < ms <= spec.tuning["lock_budget_ms"], recorded
    for result in (made, gone):
        assert result["over_budget"] == [] and result["longest_lock_ms"] <= spec.tuning["lock_budget_ms"]
        assert [(o["step"], o["partition"]) for o in result["steps"]] == [
            r[:2] for r in recorded if r[0] in {o["step"] for o in result["steps"]}]
