"""Rollback (partition_rollback, playbooks/rollback.yml) from every state, on real servers.

* after the switchover, under a live write load: the original is the application's table again
  holding every write made since (exact oracle), zero errors; its index names, views, the
  materialized view, grants, RLS, comment, trigger, sequence ownership and publication back;
* before the switchover: sync triggers, function, twin and state removed, original untouched;
* check mode changes nothing; a second run reports no change; keep_twin keeps the twin.
"""
import pytest

from ..helpers.phase3_setup import is_partitioned, make_verified, phase, rows_of, under_load, write_unsynced
from ..helpers.playbook_runner import run_playbook
from ..helpers.switchover import TABLES, assert_original_back, one, roll, switch

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates


def test_rollback_after_switchover_under_load_with_oracle(pg, db):
    make_verified(pg, db, rows=1500)
    conn, initial, writers = under_load(pg, db, seed=11)
    assert switch(pg, db, lock_timeout_ms=200, swap_retries=20)[0]["changed"]
    writers.wait_ops(30)          # writes to the partitioned table, mirrored into _old
    result, _unused = roll(pg, db, lock_timeout_ms=200, swap_retries=20)
    writers.wait_ops(30)          # and on the original again
    writers.stop()
    assert writers.errors == []
    assert result["changed"] and result["from_phase"] == "switched"
    assert rows_of(conn, "public.revenues") == writers.expected(initial)   # every write kept
    assert_original_back(conn, db)
    assert one(conn, "SELECT to_regclass('public.revenues_partitioned')") == [(None,)]   # keep_twin false
    assert phase(conn) == "rolled_back"
    # the sequence goes on right after the last id handed out (a writer may have deleted that row)
    top = max([one(conn, "SELECT max(id) FROM public.revenues")[0][0]] + [i for o in writers.oracle for i in o])
    assert one(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES "
                     "('2025-03-03 00:00+00', 'X', 1) RETURNING id, region") == [(top + 1, "x")]
    again, _unused = roll(pg, db)
    assert not again["changed"]
    conn.close()


def test_rollback_after_switchover_keep_twin_and_check_mode(pg, db):
    make_verified(pg, db, rows=300, identity=True)
    switch(pg, db)
    conn = pg.connect(db)
    one(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-04-04 00:00+00', 'eu', 3)")
    before = rows_of(conn, "public.revenues")
    result, queries = roll(pg, db, check_mode=True)
    assert result["changed"] and any('RENAME TO "revenues"' in q for q in queries)
    assert phase(conn) == "switched" and is_partitioned(conn, "public.revenues")
    result, _unused = roll(pg, db, keep_twin=True)
    assert result["changed"]
    assert rows_of(conn, "public.revenues") == before
    assert is_partitioned(conn, "public.revenues_partitioned")
    assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'partitioning_sync%%'") == [(0,)]
    # identity: ALWAYS, continues above every id the partitioned table handed out
    assert one(conn, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'public.revenues'::regclass "
                     "AND attname = 'id'") == [("a",)]
    top = max(r[0] for r in before)
    assert one(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES "
                     "('2025-04-05 00:00+00', 'eu', 4) RETURNING id")[0][0] > top
    assert_original_back(conn, db)
    conn.close()


def test_rollback_before_switchover_playbook(pg, db):
    make_verified(pg, db, rows=300)
    conn = pg.connect(db)
    before = rows_of(conn, "public.revenues")
    run = run_playbook("rollback", pg, db, TABLES, check=True)
    assert not run.failed, run
    assert phase(conn) == "verified" and is_partitioned(conn, "public.revenues_partitioned")
    run = run_playbook("rollback", pg, db, TABLES)
    assert not run.failed and run.changed >= 1, run
    assert one(conn, "SELECT to_regclass('public.revenues_partitioned')") == [(None,)]
    assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                     "AND tgname LIKE 'partitioning%%'") == [(0,)]
    assert one(conn, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'public__revenues__%%'") == [(0,)]
    assert rows_of(conn, "public.revenues") == before
    assert phase(conn) == "rolled_back"
    run = run_playbook("rollback", pg, db, TABLES)
    assert not run.failed and run.changed == 0, run
    conn.close()


def test_rollback_after_switchover_playbook_idempotent(pg, db):
    make_verified(pg, db, rows=300)
    conn = pg.connect(db)
    # -e partitioning_only: the other table (not being migrated: the switchover would refuse it) is left alone
    two = TABLES + [{"table": "public.other", "partition_key": "occurred_at", "strategy": "range", "interval": "monthly"}]
    run = run_playbook("phase3_switchover", pg, db, two, extra_vars={"partitioning_only": "public.revenues"})
    assert not run.failed, run
    run = run_playbook("rollback", pg, db, TABLES, check=True)
    assert not run.failed, run
    assert phase(conn) == "switched"
    run = run_playbook("rollback", pg, db, TABLES, extra_vars={"partitioning_forget": True})
    assert not run.failed and run.changed >= 1, run
    assert_original_back(conn, db)
    assert phase(conn) is None
    run = run_playbook("rollback", pg, db, TABLES)
    assert not run.failed and run.changed == 0, run
    conn.close()


def test_pending_keys_reconciled_under_the_lock_both_ways(pg, db):
    """A key logged for reconciliation (a REPEATABLE READ writer's path) is made equal inside the swap."""
    make_verified(pg, db, rows=100, extras=False)
    conn = pg.connect(db)
    # forward: the twin misses a change of row 5; the key is pending
    write_unsynced(conn, "UPDATE public.revenues SET amount = 777 WHERE id = 5", pending_key=5)
    result, _unused = switch(pg, db)
    assert result["reconciled"] == 1
    assert rows_of(conn, "public.revenues") == rows_of(conn, "public.revenues_old")
    assert one(conn, "SELECT amount FROM public.revenues WHERE id = 5")[0][0] == 777
    # reverse: _old misses a change of row 7; the key is pending
    write_unsynced(conn, "UPDATE public.revenues SET amount = 888 WHERE id = 7", pending_key=7)
    result, _unused = roll(pg, db)
    assert result["changed"]
    assert one(conn, "SELECT amount FROM public.revenues WHERE id = 7")[0][0] == 888
    assert one(conn, "SELECT count(*) FROM partitioning.pending_keys") == [(0,)]
    conn.close()


def test_rollback_while_waiting_for_approval_drops_prebuilt_views(pg, db):
    make_verified(pg, db, rows=100)
    conn = pg.connect(db)
    result, _unused = switch(pg, db, require_approval=True)
    assert result["waiting_for_approval"] and result["changed"]
    assert one(conn, "SELECT to_regclass('public.revenue_by_region_swap') IS NOT NULL") == [(True,)]
    result, _unused = roll(pg, db)
    assert result["changed"]
    assert one(conn, "SELECT to_regclass('public.revenue_by_region_swap'), "
                     "to_regclass('public.revenues_partitioned')") == [(None, None)]
    assert one(conn, "SELECT count(*) FROM public.revenue_by_region") == [(3,)]
    conn.close()


def test_rollback_before_switchover_recreates_dropped_inbound_foreign_keys(pg, db):
    """Phase 1 with inbound_foreign_keys: drop records the FK; rollback re-creates and validates it."""
    import datetime
    from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
    from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
    from ..helpers.phase3_setup import SPEC, create_original
    conn = pg.connect(db)
    create_original(conn, db, rows=200, extras=False)
    one(conn, "CREATE TABLE public.refunds (id serial PRIMARY KEY, revenue_id bigint "
              "CONSTRAINT refunds_revenue_fk REFERENCES public.revenues (id))")
    one(conn, "INSERT INTO public.refunds (revenue_id) VALUES (1), (2)")
    s = Session(pg.connect(db))
    try:
        prepare_table(s, SqlTemplates.bundled(), normalize_spec(dict(SPEC, inbound_foreign_keys="drop")),
                      "partitioning", now=datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc))
    finally:
        s.close()
    assert one(conn, "SELECT count(*) FROM pg_constraint WHERE conname = 'refunds_revenue_fk'") == [(0,)]
    result, _unused = roll(pg, db)
    assert result["changed"] and any("refunds_revenue_fk" in d for d in result["done"])
    assert one(conn, "SELECT convalidated, confrelid::regclass::text FROM pg_constraint "
                     "WHERE conname = 'refunds_revenue_fk'") == [(True, "revenues")]
    assert one(conn, "SELECT to_regclass('public.revenues_partitioned')") == [(None,)]
    assert roll(pg, db)[0]["changed"] is False
    conn.close()


def test_switchover_and_rollback_under_a_steady_load_with_identity_key(pg, db):
    """Three writers with short transactions on an identity key, the default lock timeout (50 ms):
    the swap and the rollback lock in the writers' order (views, <table> and its partitions, then
    the other table) and succeed; every write is kept exactly."""
    make_verified(pg, db, rows=600, identity=True, extras=False)
    conn, initial, writers = under_load(pg, db, seed=23)
    assert switch(pg, db, lock_timeout_ms=50, swap_retries=30)[0]["changed"]
    writers.wait_ops(20)
    result = roll(pg, db, lock_timeout_ms=50, swap_retries=30)[0]
    writers.wait_ops(20)
    writers.stop()
    assert writers.errors == []
    assert result["changed"] and phase(conn) == "rolled_back"
    assert rows_of(conn, "public.revenues") == writers.expected(initial)
    conn.close()


def test_truncate_of_one_partition_after_switchover_is_mirrored(pg, db):
    """HP20: TRUNCATE of one partition fires no trigger on the parent; each partition carries the
    reverse sync's TRUNCATE trigger, so <table>_old loses the same rows and the rollback is exact."""
    make_verified(pg, db, rows=600, extras=False)
    switch(pg, db)
    conn = pg.connect(db)
    march = one(conn, "SELECT count(*) FROM public.revenues_2025_03")[0][0]
    assert march > 0
    one(conn, "TRUNCATE public.revenues_2025_03")
    assert one(conn, "SELECT count(*) FROM public.revenues_old WHERE occurred_at >= '2025-03-01 00:00+00' "
                     "AND occurred_at < '2025-04-01 00:00+00'") == [(0,)]
    assert rows_of(conn, "public.revenues") == rows_of(conn, "public.revenues_old")
    one(conn, "TRUNCATE public.revenues_default")       # the default partition: its constraint is read at the time
    expected = rows_of(conn, "public.revenues")
    assert expected == rows_of(conn, "public.revenues_old") and len(expected) == 600 - march
    result = roll(pg, db)[0]
    assert result["changed"] and result["losses"] is None
    assert rows_of(conn, "public.revenues") == expected
    conn.close()


def test_rollback_refuses_what_it_would_lose_unless_accepted(pg, db):
    """Rows truncated in a partition made after the switchover (no trigger there) would come back,
    and a column added after the switchover would go: the rollback refuses, names them, changes
    nothing; accept_loss rolls back and reports the loss."""
    make_verified(pg, db, rows=300, extras=False)
    switch(pg, db)
    conn = pg.connect(db)
    one(conn, "CREATE TABLE public.revenues_2026_01 PARTITION OF public.revenues "
              "FOR VALUES FROM ('2026-01-01 00:00+00') TO ('2026-02-01 00:00+00')")
    ids = [r[0] for r in one(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES "
                                   "('2026-01-05 00:00+00', 'eu', 1), ('2026-01-06 00:00+00', 'us', 2) RETURNING id")]
    one(conn, "TRUNCATE public.revenues_2026_01")          # not mirrored: the partition came after the switch
    one(conn, "ALTER TABLE public.revenues ADD COLUMN channel text")
    one(conn, "ALTER TABLE public.revenues_old ADD COLUMN channel text")   # by hand: values not carried
    one(conn, "UPDATE public.revenues SET channel = 'web' WHERE id IN (5, 6)")
    before = rows_of(conn, "public.revenues")
    with pytest.raises(PartitioningError) as err:
        roll(pg, db)
    msg = err.value.msg
    assert "refused, the switchover stands" in msg and "partitioning_accept_loss=public.revenues" in msg
    assert "(id=5)" in msg and "(id=6)" in msg                             # values only the new table holds
    assert "(id=%d)" % ids[0] in msg and "would come back" in msg          # truncated rows
    assert phase(conn) == "switched" and is_partitioned(conn, "public.revenues")
    assert rows_of(conn, "public.revenues") == before
    # Without the column on _old, the rollback carries it (DDL after the switchover follows to _old):
    # the column and its values are kept; only the truncated rows are left to refuse.
    one(conn, "ALTER TABLE public.revenues_old DROP COLUMN channel")
    with pytest.raises(PartitioningError) as err:
        roll(pg, db)
    assert "column channel" not in err.value.msg and "(id=%d)" % ids[1] in err.value.msg
    result = roll(pg, db, accept_loss=True)[0]
    assert result["changed"] and phase(conn) == "rolled_back"
    assert sorted(k["id"] for k in result["losses"]["rows_only_old"]) == sorted(ids)
    assert any(d.startswith("loss accepted") for d in result["done"])
    assert one(conn, "SELECT id, channel FROM public.revenues WHERE channel IS NOT NULL ORDER BY id") == \
        [(5, "web"), (6, "web")]
    assert sorted(r[0] for r in one(conn, "SELECT id FROM public.revenues WHERE id IN %s", (tuple(ids),))) == sorted(ids)
    conn.close()


def test_rollback_playbook_passes_accept_loss(pg, db):
    make_verified(pg, db, rows=200, extras=False)
    switch(pg, db)
    conn = pg.connect(db)
    one(conn, "ALTER TABLE public.revenues DETACH PARTITION public.revenues_2025_01")   # rows vanish, no trigger
    run = run_playbook("rollback", pg, db, TABLES)
    assert run.failed and "would come back" in run.output and phase(conn) == "switched", run
    run = run_playbook("rollback", pg, db, TABLES, extra_vars={"partitioning_accept_loss": "public.revenues"})
    assert not run.failed and phase(conn) == "rolled_back", run


def test_rollback_during_the_copy_drops_the_key_log(pg, db):
    """A rollback while the backfill copies removes the key log's triggers and function with the
    sync triggers: nothing of ours stays on the application's table."""
    from ..helpers import backfill_driver as drv
    from ..helpers.phase2_setup import make_prepared
    make_prepared(pg, db, rows=500)
    conn = pg.connect(db)
    one(conn, "SELECT partitioning.pause('public.revenues')")
    drv.copy(pg, db, batch_size=100, seconds=0.3, finish=False)
    assert phase(conn) == "copying"
    assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                     "AND tgname LIKE 'partitioning_sync_keylog%%'") == [(2,)]
    result, _queries = roll(pg, db)
    assert result["changed"], result
    assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                     "AND tgname LIKE 'partitioning%%'") == [(0,)]
    assert one(conn, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'public__revenues__%%'") == [(0,)]
    assert phase(conn) == "rolled_back"
    conn.close()
