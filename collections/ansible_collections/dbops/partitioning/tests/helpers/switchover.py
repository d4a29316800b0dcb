"""Phase 3 driven in-process (``switch``, ``roll``) and what a test checks after each: the
switched table carries over everything the phase-3 fixture table has, the rolled-back one is
the original again."""
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import resolve_tuning
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import rollback, swap

from .phase3_setup import is_partitioned, role_name

TABLES = [{"table": "public.revenues", "partition_key": "occurred_at", "strategy": "range", "interval": "monthly"}]


def one(conn, q, args=None):
    cur = conn.cursor()
    cur.execute(q, args)
    r = cur.fetchall() if cur.description else None
    cur.close()
    return r


def lock_knobs(**kw):
    """The keyword arguments rollback and cleanup take from the table's tuning: the defaults, then ``kw``."""
    t = resolve_tuning()
    return dict(dict(state_schema=t["state_schema"], lock_timeout_ms=t["lock_timeout_ms"],
                     swap_retries=t["swap_retries"]), **kw)


def swap_knobs(**kw):
    """The keyword arguments of the switchover, as table_swap passes them: the defaults, then ``kw``."""
    t = resolve_tuning()
    return lock_knobs(**dict(dict(max_xact_age_s=t["max_xact_age_s"], max_replica_lag_s=t["max_replica_lag_s"],
                                  require_approval=t["switchover_requires_approval"], final_check=t["final_check"]),
                             **kw))


def _run_on_revenues(step, knobs, pg, db, kw):
    """``step`` (the switchover or the rollback) on public.revenues in a session of its own, with
    ``knobs(**kw)``; returns its result and the statements it ran (or would run in check mode)."""
    s = Session(pg.connect(db), check_mode=kw.pop("check_mode", False))
    try:
        return step(s, SqlTemplates.bundled(), "public.revenues", **knobs(**kw)), s.queries
    finally:
        s.close()


def switch(pg, db, **kw):
    return _run_on_revenues(swap.switchover, swap_knobs, pg, db, kw)


def roll(pg, db, **kw):
    return _run_on_revenues(rollback.rollback, lock_knobs, pg, db, kw)


def assert_carried_over(conn, db, old="revenues_old"):
    """What the application and operators see after the switchover."""
    assert is_partitioned(conn, "public.revenues")
    idx = dict(one(conn, "SELECT c.relname, i.indrelid::regclass::text FROM pg_index i JOIN pg_class c "
                         "ON c.oid = i.indexrelid WHERE c.relname IN ('revenues_pkey', 'revenues_region_idx', "
                         "'revenues_pkey_old', 'revenues_region_idx_old')"))
    assert idx == {"revenues_pkey": "revenues", "revenues_region_idx": "revenues",
                   "revenues_pkey_old": old, "revenues_region_idx_old": old}
    # views: recreated on the new table with their options, owner, grants, comment
    assert one(conn, "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
                     "WHERE d.refobjid = 'public.revenues'::regclass AND r.ev_class = 'public.revenue_eu'::regclass")[0][0] > 0
    opts = one(conn, "SELECT reloptions FROM pg_class WHERE oid = 'public.revenue_eu'::regclass")[0][0]
    assert set(opts) == {"security_barrier=true", "check_option=local"}
    assert one(conn, "SELECT obj_description('public.revenue_eu'::regclass, 'pg_class')")[0][0] == "eu only"
    role = role_name(db)
    assert one(conn, "SELECT has_table_privilege(%s, 'public.revenue_eu', 'SELECT')", (role,))[0][0]
    assert one(conn, "SELECT count(*) FROM public.revenue_eu_big")[0][0] >= 0
    # the materialized view reads the new table, keeps its index and grant
    assert one(conn, "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
                     "WHERE d.refobjid = 'public.revenues'::regclass "
                     "AND r.ev_class = 'public.revenue_by_region'::regclass")[0][0] > 0
    assert one(conn, "SELECT indexrelid::regclass::text FROM pg_index "
                     "WHERE indrelid = 'public.revenue_by_region'::regclass") == [("revenue_by_region_region",)]
    assert one(conn, "SELECT has_table_privilege(%s, 'public.revenue_by_region', 'SELECT')", (role,))[0][0]
    conn.cursor().execute("REFRESH MATERIALIZED VIEW public.revenue_by_region")
    # table: grants, comment, RLS as the original had; RLS off on _old (the reverse sync sees every row)
    assert one(conn, "SELECT has_table_privilege(%s, 'public.revenues', 'INSERT')", (role,))[0][0]
    assert one(conn, "SELECT obj_description('public.revenues'::regclass, 'pg_class')")[0][0] == "money in"
    assert one(conn, "SELECT relrowsecurity FROM pg_class WHERE oid = 'public.revenues'::regclass")[0][0]
    assert not one(conn, "SELECT relrowsecurity FROM pg_class WHERE oid = %s::regclass", (old,))[0][0]
    # the application's trigger: on the new table, disabled on _old; the reverse sync on the new table
    trig = dict(((t, r), e) for t, r, e in one(conn, "SELECT tgname, tgrelid::regclass::text, tgenabled FROM pg_trigger "
                                                     "WHERE NOT tgisinternal AND tgparentid = 0"))
    assert trig[("revenues_lower_region", "revenues")] == "O"
    assert trig[("revenues_lower_region", old)] == "D"
    assert trig[("partitioning_sync", "revenues")] == "A"
    assert ("partitioning_sync", old) not in trig
    # publication membership moved
    assert one(conn, "SELECT prrelid::regclass::text FROM pg_publication_rel") == [("revenues",)]


def assert_original_back(conn, db):
    assert one(conn, "SELECT relkind FROM pg_class WHERE oid = 'public.revenues'::regclass") == [("r",)]
    idx = sorted(one(conn, "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                           "WHERE i.indrelid = 'public.revenues'::regclass"))
    assert idx == [("revenues_pkey",), ("revenues_region_idx",)]
    for view in ("public.revenue_eu", "public.revenue_by_region"):
        assert one(conn, "SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid "
                         "WHERE d.refobjid = 'public.revenues'::regclass AND r.ev_class = %s::regclass", (view,))[0][0] > 0
    assert set(one(conn, "SELECT reloptions FROM pg_class WHERE oid = 'public.revenue_eu'::regclass")[0][0]) == \
        {"security_barrier=true", "check_option=local"}
    role = role_name(db)
    assert one(conn, "SELECT has_table_privilege(%s, 'public.revenue_eu', 'SELECT'), "
                     "has_table_privilege(%s, 'public.revenues', 'UPDATE')", (role, role)) == [(True, True)]
    assert one(conn, "SELECT relrowsecurity, obj_description(oid, 'pg_class') FROM pg_class "
                     "WHERE oid = 'public.revenues'::regclass") == [(True, "money in")]
    assert one(conn, "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                     "AND NOT tgisinternal") == [("revenues_lower_region", "O")]
    assert one(conn, "SELECT pg_get_serial_sequence('public.revenues', 'id')") == [("public.revenues_id_seq",)]
    assert one(conn, "SELECT prrelid::regclass::text FROM pg_publication_rel") == [("revenues",)]
    assert one(conn, "SELECT to_regclass('public.revenues_old')") == [(None,)]
