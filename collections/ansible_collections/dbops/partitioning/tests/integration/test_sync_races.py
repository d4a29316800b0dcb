"""The sync triggers under interleaved transactions (docs/design.md, "The sync triggers").

Two connections are stepped by hand: the application's writer (``app``) and an observer
(``obs``) that plays another session. Every write is checked three ways: the observer sees
neither table change while the writer's transaction is open, sees both change at its commit,
and at the end the original equals the twin row for row. A thread is used only where a
statement must block (two writers on one row).
"""
import contextlib
import threading
import time

import psycopg2
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store, stats
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, connect_kwargs
from ansible_collections.dbops.partitioning.plugins.module_utils.sync import (
    drop_sync, function_name, install_sync)

from ..helpers.sync_helpers import (STATE, TEMPLATES, assert_equal, backfill, install_sync_on, reconcile_by_hand, rows,
                                    session_for, setup_revenues, spec)

ORIG = ("public", "revenues")
TWIN = ("public", "revenues_partitioned")


def _connect(params, autocommit):
    """A connection with the project's session settings."""
    c = psycopg2.connect(**connect_kwargs(params))
    c.autocommit = autocommit
    return c


@pytest.fixture
def app(params):
    """The application's writer: explicit transactions."""
    with contextlib.closing(_connect(params, autocommit=False)) as c:
        yield c


@pytest.fixture
def obs(params):
    """Another session, reading (autocommit)."""
    with contextlib.closing(_connect(params, autocommit=True)) as c:
        yield c


def q(conn, text, args=None):
    with conn.cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall() if cur.description else cur.rowcount


def twin_row(conn, rid):
    return q(conn, "SELECT tableoid::regclass::text, amount_cents, occurred_at FROM public.revenues_partitioned "
                   "WHERE id = %s", (rid,))


def step_write_then_commit(app, obs, write, observe=True):
    """Run ``write`` in app's open transaction, check the observer sees nothing yet, commit.
    (A TRUNCATE holds ACCESS EXCLUSIVE until commit: the observer could not read, only wait.)"""
    before = (rows(obs, ORIG), rows(obs, TWIN))
    write(app)
    if observe:
        assert (rows(obs, ORIG), rows(obs, TWIN)) == before, "uncommitted write leaked"
    app.commit()
    return assert_equal(obs)


def test_install_creates_function_and_always_enabled_triggers(params, obs):
    created = setup_revenues(params)
    assert "function partitioning.public__revenues__fwd" in created
    assert q(obs, "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                  "AND NOT tgisinternal ORDER BY 1") == [("partitioning_sync", "A"),
                                                         ("partitioning_sync_truncate", "A")]
    s = session_for(params)
    try:  # idempotent: a second install changes nothing and runs no statement
        assert install_sync(s, TEMPLATES, STATE, spec(), ORIG, TWIN) == []
        assert s.queries == []
        # a trigger disabled by someone is re-enabled ALWAYS
        q(obs, "ALTER TABLE public.revenues DISABLE TRIGGER partitioning_sync")
        assert install_sync(s, TEMPLATES, STATE, spec(), ORIG, TWIN) == [
            "trigger partitioning_sync on public.revenues enabled always"]
        assert q(obs, "SELECT tgenabled FROM pg_trigger WHERE tgname = 'partitioning_sync'") == [("A",)]
    finally:
        s.close()


def test_insert(params, app, obs):
    setup_revenues(params, seed_rows=5)
    got = step_write_then_commit(app, obs, lambda c: q(
        c, "INSERT INTO public.revenues (org_id, occurred_at, amount_cents) VALUES (1, '2025-05-05', 42)"))
    assert len(got) == 6
    assert twin_row(obs, 6)[0][0] == "revenues_2025_q2"


def test_update_of_a_non_key_column(params, app, obs):
    setup_revenues(params, seed_rows=5)
    step_write_then_commit(app, obs, lambda c: q(c, "UPDATE public.revenues SET amount_cents = -1, note = NULL "
                                                    "WHERE id IN (2, 3)"))
    assert [r[1] for r in twin_row(obs, 2) + twin_row(obs, 3)] == [-1, -1]


def test_update_of_the_partition_key_moves_the_row_without_ghost(params, app, obs):
    setup_revenues(params, seed_rows=5)
    assert twin_row(obs, 1)[0][0] == "revenues_2025_q1"
    step_write_then_commit(app, obs, lambda c: q(
        c, "UPDATE public.revenues SET occurred_at = '2025-08-15' WHERE id = 1"))
    assert [r[0] for r in twin_row(obs, 1)] == ["revenues_2025_q3"], "exactly one copy, in its new partition"


def test_update_of_the_primary_key(params, app, obs):
    setup_revenues(params, seed_rows=5)
    step_write_then_commit(app, obs, lambda c: q(c, "UPDATE public.revenues SET id = id + 100 WHERE id <= 2"))
    assert twin_row(obs, 1) == [] and len(twin_row(obs, 101)) == 1


def test_update_of_both_keys_at_once(params, app, obs):
    setup_revenues(params, seed_rows=5)
    step_write_then_commit(app, obs, lambda c: q(
        c, "UPDATE public.revenues SET id = 500, occurred_at = '2030-01-01' WHERE id = 4"))
    assert [r[0] for r in twin_row(obs, 500)] == ["revenues_default"]


def test_delete(params, app, obs):
    setup_revenues(params, seed_rows=5)
    got = step_write_then_commit(app, obs, lambda c: q(c, "DELETE FROM public.revenues WHERE id IN (1, 5)"))
    assert [r[0] for r in got] == [2, 3, 4]


def test_truncate_is_propagated(params, app, obs):
    setup_revenues(params, seed_rows=5)
    got = step_write_then_commit(app, obs, lambda c: q(c, "TRUNCATE public.revenues"), observe=False)
    assert got == []


def test_insert_on_conflict_do_update_by_the_application(params, app, obs):
    setup_revenues(params, seed_rows=3)

    def upsert(c):
        q(c, "INSERT INTO public.revenues (id, org_id, occurred_at, amount_cents) VALUES "
             "(2, 1, '2025-11-11', 7), (9, 1, '2025-02-02', 9) "
             "ON CONFLICT (id) DO UPDATE SET amount_cents = EXCLUDED.amount_cents, occurred_at = EXCLUDED.occurred_at")
    got = step_write_then_commit(app, obs, upsert)
    assert len(got) == 4
    assert [r[0] for r in twin_row(obs, 2)] == ["revenues_2025_q4"]


def test_a_rolled_back_write_leaves_no_trace(params, app, obs):
    setup_revenues(params, seed_rows=5)
    before = assert_equal(obs)
    q(app, "INSERT INTO public.revenues (org_id, occurred_at, amount_cents) VALUES (1, '2025-05-05', 1)")
    q(app, "UPDATE public.revenues SET occurred_at = '2025-12-01' WHERE id = 1")
    q(app, "DELETE FROM public.revenues WHERE id = 2")
    q(app, "TRUNCATE public.revenues")
    app.rollback()
    assert assert_equal(obs) == before


def test_rows_not_copied_yet_are_written_by_the_trigger(params, app, obs):
    """Before the backfill reaches a row, an UPDATE inserts its newest version into the twin and a
    DELETE finds nothing to delete; the backfill's DO NOTHING then leaves the newer version."""
    setup_revenues(params, seed_rows=5, copy_seed=False)
    q(app, "UPDATE public.revenues SET amount_cents = 1 WHERE id = 1")
    q(app, "UPDATE public.revenues SET occurred_at = '2025-12-24' WHERE id = 2")
    q(app, "DELETE FROM public.revenues WHERE id = 3")
    app.commit()
    assert rows(obs, TWIN) == [r for r in rows(obs, ORIG) if r[0] in (1, 2)]
    backfill(obs)
    assert_equal(obs)


def test_repeatable_read_writer_logs_keys_it_cannot_see(params, app, obs):
    """A REPEATABLE READ writer whose snapshot predates a batch's commit cannot see the twin rows
    the batch copied: its trigger logs the keys in pending_keys (never fails), reconcile repairs."""
    setup_revenues(params, seed_rows=6, copy_seed=False)
    app.set_session(isolation_level="REPEATABLE READ")
    q(app, "SELECT count(*) FROM public.revenues")           # the writer's snapshot is taken here
    backfill(obs)                                            # a batch copies every row, commits
    q(app, "UPDATE public.revenues SET amount_cents = 11 WHERE id = 1")           # row invisible
    q(app, "UPDATE public.revenues SET occurred_at = '2025-09-09' WHERE id = 2")  # key moves
    q(app, "DELETE FROM public.revenues WHERE id = 3")
    q(app, "INSERT INTO public.revenues (id, org_id, occurred_at, amount_cents) VALUES (50, 1, '2025-01-05', 5)")
    app.commit()
    logged = q(obs, "SELECT (pk->>'id')::int, reason FROM partitioning.pending_keys ORDER BY id")
    assert sorted(set(k for k, _unused in logged)) == [1, 2, 3]
    assert all(reason.startswith("rr-") for _unused, reason in logged)
    assert reconcile_by_hand(obs) == [1, 2, 3]
    assert_equal(obs)


def test_serializable_writer_on_a_copied_row_in_sync(params, app, obs):
    """A SERIALIZABLE writer whose snapshot sees the twin rows takes the ordinary path."""
    setup_revenues(params, seed_rows=4)
    app.set_session(isolation_level="SERIALIZABLE")
    step_write_then_commit(app, obs, lambda c: q(c, "UPDATE public.revenues SET occurred_at = '2025-06-01', "
                                                    "amount_cents = 3 WHERE id = 4"))
    assert q(obs, "SELECT count(*) FROM partitioning.pending_keys") == [(0,)]


def test_key_outside_every_range_lands_in_default_and_is_reported(params, app, obs):
    setup_revenues(params, seed_rows=2)
    step_write_then_commit(app, obs, lambda c: q(
        c, "INSERT INTO public.revenues (org_id, occurred_at, amount_cents) VALUES (1, '1999-12-31', 1), "
           "(1, '2099-01-01', 2)"))
    assert q(obs, "SELECT count(*) FROM public.revenues_default") == [(2,)]
    s = session_for(params)
    try:
        with s.transaction():
            state_store.insert_table(s, STATE, "public.revenues", table_schema="public", table_relname="revenues",
                                     twin_relname="revenues_partitioned", old_relname="revenues_old", phase="prepared",
                                     spec={}, pk_columns=["id"], partition_key="occurred_at")
        facts = stats.table_facts(s, STATE, "public.revenues")
    finally:
        s.close()
    assert facts["default_partition_rows"] == 2
    assert any("2 rows in the default partition revenues_default" in h for h in facts["health"])


def _pid(conn):
    return q(conn, "SELECT pg_backend_pid()")[0][0]


def _wait_until_blocked(obs, pid):
    for _unused in range(600):
        if q(obs, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)) == [(True,)]:
            return
        time.sleep(0.05)
    raise AssertionError("pid %s never waited for a lock" % pid)


def test_triggers_fire_under_session_replication_role_replica(params, app, obs):
    """ENABLE ALWAYS: logical replication apply and pg_restore (session_replication_role = replica)
    would otherwise write the original without the twin."""
    setup_revenues(params, seed_rows=3)
    q(app, "SET session_replication_role = replica")
    step_write_then_commit(app, obs, lambda c: q(
        c, "INSERT INTO public.revenues (org_id, occurred_at, amount_cents) VALUES (1, '2025-03-03', 1);"
           "UPDATE public.revenues SET occurred_at = '2025-10-10' WHERE id = 1; DELETE FROM public.revenues WHERE id = 2"))


def test_concurrent_writers_on_the_same_row(params, pg, db, app, obs):
    """The second writer blocks on the original's row until the first commits; its trigger then
    runs with a fresh snapshot and writes the newest version into the twin."""
    setup_revenues(params, seed_rows=3)
    second = _connect(params, autocommit=False)
    second_pid = _pid(second)   # before the thread uses the connection (one statement at a time)
    try:
        q(app, "UPDATE public.revenues SET amount_cents = 1, occurred_at = '2025-07-07' WHERE id = 2")
        done = []

        def write():
            q(second, "UPDATE public.revenues SET amount_cents = amount_cents + 1000 WHERE id = 2")
            second.commit()
            done.append(True)

        t = threading.Thread(target=write)
        t.start()
        _wait_until_blocked(obs, second_pid)
        assert not done
        app.commit()
        t.join(60)
        assert done
    finally:
        second.close()
    assert_equal(obs)
    assert twin_row(obs, 2)[0][:2] == ("revenues_2025_q3", 1001)


def test_identity_always_and_generated_columns(params, app, obs):
    """Identity ALWAYS: the trigger inserts with OVERRIDING SYSTEM VALUE and never assigns it;
    generated columns are computed by the twin itself."""
    q(obs, """
        CREATE TABLE public.ledger (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            booked_on date NOT NULL,
            cents bigint NOT NULL,
            euros numeric GENERATED ALWAYS AS (cents / 100.0) STORED);
        CREATE TABLE public.ledger_partitioned (
            id bigint GENERATED ALWAYS AS IDENTITY,
            booked_on date NOT NULL,
            cents bigint NOT NULL,
            euros numeric GENERATED ALWAYS AS (cents / 100.0) STORED,
            PRIMARY KEY (id, booked_on)) PARTITION BY RANGE (booked_on);
        CREATE TABLE public.ledger_2025 PARTITION OF public.ledger_partitioned
            FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE TABLE public.ledger_default PARTITION OF public.ledger_partitioned DEFAULT;
    """)
    lt, lp = install_sync_on(params, "public", "ledger", partition_key="booked_on")

    q(app, "INSERT INTO public.ledger (booked_on, cents) VALUES ('2025-03-01', 250), ('2024-01-01', 99)")
    q(app, "UPDATE public.ledger SET cents = 300 WHERE id = 1")
    q(app, "UPDATE public.ledger SET booked_on = '2025-05-05' WHERE id = 2")
    app.commit()
    assert_equal(obs, lt, lp)
    assert q(obs, "SELECT euros FROM public.ledger_partitioned WHERE id = 1")[0][0] == 3


def test_composite_primary_key_and_quoted_names(params, app, obs):
    q(obs, """
        CREATE SCHEMA "Sales";
        CREATE TABLE "Sales"."Orders" ("OrgId" int, "LineNo" int, "Day" date NOT NULL, qty int,
                                       PRIMARY KEY ("OrgId", "LineNo"));
        CREATE TABLE "Sales"."Orders_partitioned" (LIKE "Sales"."Orders") PARTITION BY RANGE ("Day");
        ALTER TABLE "Sales"."Orders_partitioned" ADD PRIMARY KEY ("OrgId", "LineNo", "Day");
        CREATE TABLE "Sales"."Orders_default" PARTITION OF "Sales"."Orders_partitioned" DEFAULT;
    """)
    o, t = install_sync_on(params, "Sales", "Orders", partition_key="Day")
    q(app, 'INSERT INTO "Sales"."Orders" VALUES (1, 1, \'2025-01-01\', 1), (1, 2, \'2025-01-02\', 2)')
    q(app, 'UPDATE "Sales"."Orders" SET "LineNo" = 3, "Day" = \'2025-02-02\' WHERE "LineNo" = 1')
    q(app, 'UPDATE "Sales"."Orders" SET qty = 20 WHERE "LineNo" = 2')
    app.commit()
    assert_equal(obs, o, t, order_by="OrgId,LineNo")


def test_ddl_waits_only_briefly_and_names_the_blocker(params, app, obs):
    """CREATE TRIGGER needs SHARE ROW EXCLUSIVE: behind an open writer it gives up after the lock
    timeout (the application is never queued behind it for longer) and names the blocker."""
    q(obs, "CREATE TABLE public.revenues (id bigint PRIMARY KEY, occurred_at date NOT NULL);"
           "CREATE TABLE public.revenues_partitioned (id bigint, occurred_at date NOT NULL, "
           "PRIMARY KEY (id, occurred_at)) PARTITION BY RANGE (occurred_at);"
           "CREATE TABLE public.revenues_default PARTITION OF public.revenues_partitioned DEFAULT;")
    blocker = _pid(app)
    q(app, "INSERT INTO public.revenues VALUES (1, '2025-01-01')")   # open transaction holds ROW EXCLUSIVE
    s = session_for(params)
    try:
        state_store.ensure_state_schema(s, TEMPLATES, STATE)
        with pytest.raises(PartitioningError) as e:
            install_sync(s, TEMPLATES, STATE, spec(), ORIG, TWIN, lock_timeout_ms=20, retries=2)
        assert "pid %d" % blocker in e.value.msg and "INSERT INTO public.revenues" in e.value.msg
        assert q(obs, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass") == [(0,)]
        # nothing was left behind by the failed attempts; once the writer is gone it works
        app.commit()
        assert install_sync(s, TEMPLATES, STATE, spec(), ORIG, TWIN, lock_timeout_ms=20, retries=2)
    finally:
        s.close()
    backfill(obs)
    assert_equal(obs)


def test_drop_sync_removes_triggers_and_function(params, obs):
    setup_revenues(params)
    s = session_for(params)
    try:
        dropped = drop_sync(s, STATE, spec(), ORIG)
        assert len(dropped) == 3
        assert drop_sync(s, STATE, spec(), ORIG) == []
    finally:
        s.close()
    assert q(obs, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass") == [(0,)]
    assert q(obs, "SELECT to_regprocedure('partitioning.public__revenues__fwd()')") == [(None,)]


def test_reverse_direction_mirrors_new_into_old(params, app, obs):
    """After switchover the partitioned table is the source and <table>_old the destination:
    its primary key (without the partition key) is how rows are found there."""
    setup_revenues(params, seed_rows=4)
    s = session_for(params)
    try:
        drop_sync(s, STATE, spec(), ORIG)
        created = install_sync(s, TEMPLATES, STATE, spec(), TWIN, ORIG, direction="reverse")
        assert "function %s.%s" % function_name(STATE, spec(), "reverse") in created
    finally:
        s.close()
    q(app, "INSERT INTO public.revenues_partitioned (id, org_id, occurred_at, amount_cents) "
           "VALUES (77, 1, '2025-02-02', 1)")
    q(app, "UPDATE public.revenues_partitioned SET occurred_at = '2025-11-11', amount_cents = 2 WHERE id = 1")
    q(app, "UPDATE public.revenues_partitioned SET id = 99 WHERE id = 2")
    q(app, "DELETE FROM public.revenues_partitioned WHERE id = 3")
    app.commit()
    assert_equal(obs)
    q(app, "TRUNCATE public.revenues_partitioned")
    app.commit()
    assert rows(obs, ORIG) == []
