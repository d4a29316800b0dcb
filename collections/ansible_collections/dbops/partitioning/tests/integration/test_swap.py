"""Phase 3: the switchover (table_swap, playbooks/phase3_switchover.yml) on real servers.

* under a live write load: new vs _old row for row, and both equal to what the writers
  committed (exact oracle), zero application errors;
* carried over: index and constraint names, views (security_barrier, check option, grants,
  comment, a view of a view), the pre-built materialized view with its index, grants, comment,
  owner, RLS, the application's trigger (moved, disabled on _old), serial sequence ownership
  and nextval, identity ALWAYS restarted above the old maximum, publication membership;
* a long transaction holding the table: retries, then a clean failure naming the blocker
  with nothing changed; the same transaction older than max_xact_age_s: refused in preflight;
* postponed cut-over (approval), check mode, idempotency (playbook runs).
"""
import threading

import pytest

from ..helpers.phase3_setup import is_partitioned, make_verified, phase, rows_of, under_load, write_unsynced
from ..helpers.playbook_runner import run_playbook
from ..helpers.switchover import TABLES, assert_carried_over, lock_knobs, one, roll, swap_knobs, switch

from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import swap
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates


def test_switchover_under_load_with_oracle(pg, db):
    make_verified(pg, db, rows=1500)
    conn, initial, writers = under_load(pg, db, seed=7, warm_up_ops=30)
    result, _unused = switch(pg, db, lock_timeout_ms=200, swap_retries=20)
    writers.wait_ops(30)     # writers keep going on the new table by name
    writers.stop()
    assert writers.errors == []
    assert result["changed"] and phase(conn) == "switched"
    assert result["swap_lock_ms"] is not None
    new, old = rows_of(conn, "public.revenues"), rows_of(conn, "public.revenues_old")
    assert new == old                             # the reverse sync kept _old in step
    assert new == writers.expected(initial)       # nothing lost, duplicated or stale
    assert_carried_over(conn, db)
    # serial sequence: owned by the new table, nextval continues
    assert one(conn, "SELECT pg_get_serial_sequence('public.revenues', 'id')") == [("public.revenues_id_seq",)]
    top = one(conn, "SELECT max(id) FROM public.revenues")[0][0]
    assert one(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES "
                     "('2025-03-03 00:00+00', 'EU', 1) RETURNING id, region")[0] == (top + 1, "eu")
    assert rows_of(conn, "public.revenues") == rows_of(conn, "public.revenues_old")
    row = one(conn, "SELECT phase, switched_at IS NOT NULL, swap_lock_ms > 0 FROM partitioning.tables")
    assert row == [("switched", True, True)]
    conn.close()


def test_identity_always_restored_and_restarted(pg, db):
    make_verified(pg, db, rows=500, identity=True, extras=False)
    conn = pg.connect(db)
    one(conn, "INSERT INTO public.revenues (id, occurred_at, region, amount) OVERRIDING SYSTEM VALUE "
              "VALUES (10000, '2025-02-02 00:00+00', 'eu', 1)")   # above the sequence
    result, _unused = switch(pg, db)
    assert result["changed"]
    assert one(conn, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'public.revenues'::regclass "
                     "AND attname = 'id'") == [("a",)]
    new_id = one(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES "
                       "('2025-02-03 00:00+00', 'eu', 2) RETURNING id")[0][0]
    assert new_id > 10000
    assert rows_of(conn, "public.revenues") == rows_of(conn, "public.revenues_old")   # reverse sync: OVERRIDING
    conn.close()


def test_blocked_by_long_transaction_retries_then_fails_cleanly(pg, db):
    make_verified(pg, db, rows=200)
    blocker = pg.connect(db)
    blocker.autocommit = False
    blocker_pid = one(blocker, "SELECT pg_backend_pid()")[0][0]
    one(blocker, "SELECT count(*) FROM public.revenues")     # holds ACCESS SHARE until it ends
    conn = pg.connect(db)
    try:
        with pytest.raises(PartitioningError) as err:
            switch(pg, db, lock_timeout_ms=20, swap_retries=2, max_xact_age_s=3600)
        msg = err.value.msg
        assert "nothing was changed" in msg and ("pid %d" % blocker_pid) in msg
        assert len(err.value.details["retries"]) == 3          # every attempt reported
        assert phase(conn) == "verified"
        assert not is_partitioned(conn, "public.revenues")
        assert one(conn, "SELECT to_regclass('public.revenues_old')") == [(None,)]
        assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                         "AND tgname = 'partitioning_sync'") == [(1,)]
        # the same transaction, older than max_xact_age_s: refused before any lock is taken
        with pytest.raises(PartitioningError) as err:
            switch(pg, db, max_xact_age_s=0)
        assert "refused, nothing changed" in err.value.msg and ("pid %d" % blocker_pid) in err.value.msg
    finally:
        blocker.rollback()
        blocker.close()
    # once it ends, the switchover goes through
    result, _unused = switch(pg, db)
    assert result["changed"] and phase(conn) == "switched"
    conn.close()


def test_writer_blocked_by_the_swap_lands_on_the_new_table(pg, db):
    """A writer queued behind the swap's lock resolves the name again and writes the new table."""
    make_verified(pg, db, rows=100, extras=False)
    holder = pg.connect(db)
    holder.autocommit = False
    one(holder, "LOCK TABLE public.revenues IN ACCESS EXCLUSIVE MODE")   # the swap's first attempts wait
    out = {}

    def swapper():
        out["result"] = switch(pg, db, lock_timeout_ms=100, swap_retries=50, max_xact_age_s=3600)[0]

    t = threading.Thread(target=swapper)
    t.start()
    writer = pg.connect(db)
    writer_thread = threading.Thread(target=lambda: out.setdefault("row", one(
        writer, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES "
                "('2025-05-05 00:00+00', 'eu', 7) RETURNING id")))
    writer_thread.start()
    holder.rollback()   # the writer or the swap gets the lock; either way the writer must succeed
    t.join(120)
    writer_thread.join(120)
    assert out["result"]["changed"]
    new_id = out["row"][0][0]
    conn = pg.connect(db)
    assert one(conn, "SELECT count(*) FROM public.revenues WHERE id = %s", (new_id,)) == [(1,)]
    assert rows_of(conn, "public.revenues") == rows_of(conn, "public.revenues_old")
    for c in (holder, writer, conn):
        c.close()


def test_check_mode_changes_nothing_and_shows_the_swap(pg, db):
    make_verified(pg, db, rows=200)
    result, queries = switch(pg, db, check_mode=True)
    text = "\n".join(queries)
    assert "LOCK TABLE" in text and 'RENAME TO "revenues_old"' in text and 'RENAME TO "revenues"' in text
    assert "partitioning_sync" in text and "ALTER PUBLICATION" in text
    conn = pg.connect(db)
    assert phase(conn) == "verified" and not is_partitioned(conn, "public.revenues")
    assert one(conn, "SELECT count(*) FROM pg_class WHERE relname LIKE '%%\\_swap'") == [(0,)]
    conn.close()


def test_playbook_postponed_check_idempotent(pg, db):
    make_verified(pg, db, rows=300)
    conn = pg.connect(db)
    run = run_playbook("phase3_switchover", pg, db, TABLES, check=True)
    assert not run.failed, run
    assert phase(conn) == "verified" and not is_partitioned(conn, "public.revenues")
    # postponed: prepared (materialized view pre-built), waiting for the operator's go
    run = run_playbook("phase3_switchover", pg, db, TABLES, extra_vars={"partitioning_switchover_requires_approval": True})
    assert not run.failed, run
    assert "waiting for approval" in run.output
    assert phase(conn) == "verified" and not is_partitioned(conn, "public.revenues")
    assert one(conn, "SELECT to_regclass('public.revenue_by_region_swap') IS NOT NULL") == [(True,)]
    run = run_playbook("phase3_switchover", pg, db, TABLES, extra_vars={"partitioning_switchover_requires_approval": True})
    assert not run.failed and run.changed == 0 and "waiting for approval" in run.output, run
    one(conn, "SELECT partitioning.approve_switchover('public.revenues')")
    run = run_playbook("phase3_switchover", pg, db, TABLES, extra_vars={"partitioning_switchover_requires_approval": True})
    assert not run.failed, run
    assert phase(conn) == "switched"
    assert_carried_over(conn, db)
    assert one(conn, "SELECT to_regclass('public.revenue_by_region_swap')") == [(None,)]
    run = run_playbook("phase3_switchover", pg, db, TABLES)
    assert not run.failed and run.changed == 0, run
    run = run_playbook("phase3_switchover", pg, db, TABLES, check=True)
    assert not run.failed and run.changed == 0, run
    conn.close()


def test_refused_before_verification(pg, db):
    make_verified(pg, db, rows=50, extras=False)
    conn = pg.connect(db)
    one(conn, "UPDATE partitioning.tables SET phase = 'copied'")
    with pytest.raises(PartitioningError) as err:
        switch(pg, db)
    assert "phase 'verified'" in err.value.msg
    # a twin that differs from the original is refused by the last check
    one(conn, "UPDATE partitioning.tables SET phase = 'verified'")
    write_unsynced(conn, "DELETE FROM public.revenues WHERE id = 1")
    with pytest.raises(PartitioningError) as err:
        switch(pg, db)
    assert "different" in err.value.msg
    assert phase(conn) == "verified" and not is_partitioned(conn, "public.revenues")
    conn.close()


def test_view_trigger_column_comment_publication_filter_and_quoted_matview(pg, db):
    """INSTEAD OF triggers and column comments of views, a publication's row filter and column
    list, materialized views with an alias and a quoted name: all survive switchover and rollback."""
    make_verified(pg, db, rows=100, extras=False)
    conn = pg.connect(db)
    for q in ("CREATE VIEW public.rv AS SELECT id, occurred_at, region, amount FROM public.revenues",
              "COMMENT ON COLUMN public.rv.amount IS 'the amount'",
              "CREATE FUNCTION public.rv_ins() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO public.revenues "
              "(occurred_at, region, amount) VALUES (NEW.occurred_at, NEW.region, NEW.amount); RETURN NEW; END$$",
              "CREATE TRIGGER rv_ins INSTEAD OF INSERT ON public.rv FOR EACH ROW EXECUTE FUNCTION public.rv_ins()",
              "CREATE PUBLICATION p2 WITH (publish_via_partition_root = true)",
              "ALTER PUBLICATION p2 ADD TABLE public.revenues (id, occurred_at, region) WHERE (region <> 'x')",
              "CREATE MATERIALIZED VIEW public.mv2 AS SELECT r.region, count(*) FROM public.revenues r GROUP BY r.region",
              'CREATE MATERIALIZED VIEW public."Mv 3" AS SELECT region FROM public.revenues WHERE amount > 5'):
        one(conn, q)
    for step in ("switch", "rollback"):
        result = switch(pg, db)[0] if step == "switch" else roll(pg, db)[0]
        assert result["changed"]
        assert not [w for w in result.get("warnings") or [] if "under the lock" in w]   # all pre-built
        kind = "p" if step == "switch" else "r"
        assert one(conn, "SELECT relkind FROM pg_class WHERE oid = 'public.revenues'::regclass") == [(kind,)]
        n = one(conn, "SELECT count(*) FROM public.revenues")[0][0]
        one(conn, "INSERT INTO public.rv (occurred_at, region, amount) VALUES ('2025-02-02 00:00+00', 'eu', 3)")
        assert one(conn, "SELECT count(*) FROM public.revenues")[0][0] == n + 1
        assert one(conn, "SELECT col_description('public.rv'::regclass, 4)") == [("the amount",)]
        assert one(conn, "SELECT prrelid::regclass::text, pg_get_expr(prqual, prrelid), prattrs::text "
                         "FROM pg_publication_rel") == [("revenues", "(region <> 'x'::text)", "1 2 3")]
        deps = one(conn, "SELECT c.relname FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c "
                         "ON c.oid = r.ev_class WHERE d.refobjid = 'public.revenues'::regclass AND c.oid <> d.refobjid "
                         "GROUP BY 1 ORDER BY 1")
        assert deps == [("Mv 3",), ("mv2",), ("rv",)]
    conn.close()


def test_quoted_schema_and_table_names_switch_and_roll_back(pg, db):
    """Mixed case and spaces in schema, table, column and index names; the twin from phase 1's code."""
    from ..helpers.phase3_setup import make_verified_generic
    from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import rollback
    table = make_verified_generic(pg, db, "Fin Ops", "Rev", [
        'CREATE SCHEMA "Fin Ops"',
        'CREATE TABLE "Fin Ops"."Rev" ("Id" bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, '
        '"When" date NOT NULL, "Amount" int NOT NULL)',
        'CREATE INDEX "Rev By When" ON "Fin Ops"."Rev" ("When")',
        'INSERT INTO "Fin Ops"."Rev" ("When", "Amount") SELECT date \'2025-01-01\' + g % 300, g FROM generate_series(1, 500) g',
        'CREATE VIEW "Fin Ops"."Rev View" AS SELECT "Id", "Amount" FROM "Fin Ops"."Rev"'], "When", pk=("Id",))
    assert table == '"Fin Ops"."Rev"'
    conn = pg.connect(db)
    s = Session(pg.connect(db))
    try:
        assert swap.switchover(s, SqlTemplates.bundled(), table, **swap_knobs())["changed"]
    finally:
        s.close()
    assert is_partitioned(conn, '"Fin Ops"."Rev"')
    assert sorted(one(conn, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                            "WHERE i.indrelid = '\"Fin Ops\".\"Rev\"'::regclass")) == [("Rev By When",), ("Rev_pkey",)]
    one(conn, 'INSERT INTO "Fin Ops"."Rev" ("When", "Amount") VALUES (\'2025-03-01\', 1)')
    assert one(conn, 'SELECT count(*) FROM "Fin Ops"."Rev View"') == [(501,)]
    assert one(conn, 'SELECT count(*) FROM "Fin Ops"."Rev_old"') == [(501,)]
    s = Session(pg.connect(db))
    try:
        assert rollback.rollback(s, SqlTemplates.bundled(), table, **lock_knobs())["changed"]
    finally:
        s.close()
    assert not is_partitioned(conn, '"Fin Ops"."Rev"')
    one(conn, 'INSERT INTO "Fin Ops"."Rev" ("When", "Amount") VALUES (\'2025-03-02\', 2)')
    assert one(conn, 'SELECT count(*), count(DISTINCT "Id") FROM "Fin Ops"."Rev View"') == [(502, 502)]
    conn.close()


def test_refused_for_begin_atomic_functions_and_inbound_foreign_keys(pg, db):
    """Objects bound to the table's OID cannot follow a rename (HP9, HP11): refused, named, nothing changed."""
    make_verified(pg, db, rows=50, extras=False)
    conn = pg.connect(db)
    one(conn, "CREATE FUNCTION public.revenue_total() RETURNS numeric LANGUAGE sql "
              "BEGIN ATOMIC SELECT sum(amount) FROM public.revenues; END")
    one(conn, "CREATE TABLE public.refunds (id int PRIMARY KEY, revenue_id bigint REFERENCES public.revenues (id))")
    with pytest.raises(PartitioningError) as err:
        switch(pg, db)
    msg = err.value.msg
    assert "revenue_total()" in msg and "BEGIN ATOMIC" in msg
    assert "refunds_revenue_id_fkey on public.refunds" in msg
    assert phase(conn) == "verified" and not is_partitioned(conn, "public.revenues")
    conn.close()
