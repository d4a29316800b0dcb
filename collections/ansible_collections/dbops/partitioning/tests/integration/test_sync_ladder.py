"""The partition ladder of the fast forward sync function (module_utils/sync_ladder.py).

Where the DDL guard and the layout guard watch (the test's superuser), the sync function writes a
row straight to the twin's partition whose bounds hold its key, and routes through the parent
whatever no listed partition holds. Every write keeps the twin equal to the original, the
application's own role included (it writes the partitions directly). DDL that would take away a
partition the ladder names (drop, detach, rename, move, row security) is refused; a change of
grants swaps in the routed body in its own transaction (the next phase 1 installs the ladder
again); a partition added since takes the routed statement and the ladder stays.
"""
import psycopg2.errors
import pytest

from ..helpers.phase3_setup import COLS, NOW, SPEC, STATE, make_verified, role_name, run
from ..helpers.switchover import one as _q

from ansible_collections.dbops.partitioning.plugins.module_utils import sync_ladder
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

FAST, ROUTED = "public__revenues__fwd", "public__revenues__fwg"
TWIN = ("public", "revenues_partitioned")

# The application's writes at the edges of the ladder: a partition's first instant, the last
# instant before the next one, a key in no monthly partition (the default), key moves across
# partitions and into and out of the default, deletes.
EDGE_WRITES = [
    "INSERT INTO public.revenues (occurred_at, region, amount) VALUES "
    "('2025-03-01 00:00+00', 'eu', 1), ('2025-03-31 23:59:59.999999+00', 'eu', 2), "
    "('2019-07-01 00:00+00', 'us', 3), ('2031-01-01 00:00+00', 'us', 4)",
    "UPDATE public.revenues SET amount = amount + 1 WHERE id % 7 = 0",
    "UPDATE public.revenues SET occurred_at = occurred_at + interval '31 days' WHERE id % 11 = 0",
    "UPDATE public.revenues SET occurred_at = '2018-01-01 00:00+00' WHERE id % 13 = 0",
    "UPDATE public.revenues SET occurred_at = '2025-02-14 00:00+00' WHERE occurred_at < '2019-08-01 00:00+00'",
    "DELETE FROM public.revenues WHERE id % 5 = 0",
]


def _admin(pg, db, rows):
    """public.revenues at 'verified' (helpers/phase3_setup.py), and the superuser's connection."""
    make_verified(pg, db, rows=rows)
    admin = pg.connect(db)
    admin.autocommit = True
    return admin


def _body(conn, name):
    return _q(conn, "SELECT p.prosrc FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
                    "WHERE n.nspname = %s AND p.proname = %s", (STATE, name))[0][0]


def _has_ladder(conn):
    return "revenues_2025_03" in _body(conn, FAST)


def _in_step(conn):
    rows = "SELECT %s FROM %%s ORDER BY id" % COLS
    assert _q(conn, rows % "public.revenues") == _q(conn, rows % "public.revenues_partitioned")


def _phase1_again(pg, db):
    session = Session(pg.connect(db))
    try:
        prepare_table(session, SqlTemplates.bundled(), normalize_spec(dict(SPEC)), STATE, now=NOW)
    finally:
        session.close()


def _app(pg, db):
    """The application's connection, as its own role: phase 1 gave it the original's grants on the twin
    and on every partition, which it now writes directly."""
    app = pg.connect(db)
    app.autocommit = True
    run(app, "GRANT USAGE ON SEQUENCE public.revenues_id_seq TO %s" % role_name(db), "SET ROLE %s" % role_name(db))
    return app


def _march_writes_keep_the_twin_equal(pg, db):
    """The application inserts and updates rows of March 2025 (the partition the DDL of the tests
    below aims at); none fails, and the twin stays equal to the original."""
    app = _app(pg, db)
    run(app, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-03-10 12:00+00', 'eu', 9)",
        "UPDATE public.revenues SET amount = amount + 1 WHERE occurred_at >= '2025-03-01 00:00+00' "
        "AND occurred_at < '2025-04-01 00:00+00'")
    _in_step(app)
    app.close()


def test_the_fast_sync_writes_each_row_to_its_partition_and_keeps_the_twin_equal(pg, db):
    make_verified(pg, db, rows=600)
    app = _app(pg, db)
    assert _has_ladder(app)
    comment = _q(app, "SELECT obj_description(%s::regprocedure)", ("%s.%s()" % (STATE, FAST),))[0][0]
    session = Session(pg.connect(db))
    assert "layout=%s" % sync_ladder.layout(session, STATE, TWIN, sync_ladder.rungs(session, TWIN)) in comment
    session.close()
    for w in EDGE_WRITES:
        run(app, w)
    _in_step(app)
    # every row where its key belongs, the default partition holding exactly those no monthly one takes
    assert _q(app, "SELECT count(*) FROM public.revenues_default WHERE occurred_at >= '2025-01-01 00:00+00' "
                   "AND occurred_at < '2025-07-01 00:00+00'") == [(0,)]
    assert _q(app, "SELECT count(*) FROM public.revenues_partitioned WHERE occurred_at < '2020-01-01 00:00+00'") \
        == _q(app, "SELECT count(*) FROM public.revenues_default WHERE occurred_at < '2020-01-01 00:00+00'")
    app.close()


# DDL that would make a write in flight, its sync function already running, meet a partition gone,
# renamed, detached or closed by row security: refused
REFUSED_DDL = {
    "detach": "ALTER TABLE public.revenues_partitioned DETACH PARTITION public.revenues_2025_03",
    "drop": "DROP TABLE public.revenues_2025_03",
    "drop_twin": "DROP TABLE public.revenues_partitioned",
    "rename": "ALTER TABLE public.revenues_2025_03 RENAME TO revenues_march",
    "set_schema": "CREATE SCHEMA elsewhere; ALTER TABLE public.revenues_2025_03 SET SCHEMA elsewhere",
    "row_security": "ALTER TABLE public.revenues_2025_03 ENABLE ROW LEVEL SECURITY",
}


@pytest.mark.parametrize("case", sorted(REFUSED_DDL))
def test_ddl_that_removes_a_partition_the_ladder_names_is_refused_and_changes_nothing(pg, db, case):
    admin = _admin(pg, db, 300)
    before = _body(admin, FAST)
    with pytest.raises(psycopg2.errors.ObjectInUse) as err:
        run(admin, REFUSED_DDL[case])
    assert "public.revenues" in str(err.value) and "after the switchover" in str(err.value)
    assert _body(admin, FAST) == before
    _march_writes_keep_the_twin_equal(pg, db)
    admin.close()


def test_a_partition_changed_while_the_guard_was_off_is_routed_at_the_next_ddl_not_refused_forever(pg, db):
    """A superuser who disabled the layout guard and renamed a partition: DDL that does not touch the
    twin's partitions is not refused for it; an ALTER of another table is not even compared, the next
    GRANT (or REVOKE, or DROP) swaps in the routed body."""
    admin = _admin(pg, db, 100)
    run(admin, "ALTER EVENT TRIGGER %s DISABLE" % sync_ladder.LAYOUT_EVENT_TRIGGER,
        "ALTER TABLE public.revenues_2025_03 RENAME TO revenues_march",
        "ALTER EVENT TRIGGER %s ENABLE ALWAYS" % sync_ladder.LAYOUT_EVENT_TRIGGER,
        "CREATE TABLE public.other (id int)", "ALTER TABLE public.other ADD COLUMN note text")
    assert _body(admin, FAST) != _body(admin, ROUTED)
    run(admin, "GRANT SELECT ON public.other TO PUBLIC")
    assert _body(admin, FAST) == _body(admin, ROUTED)
    _march_writes_keep_the_twin_equal(pg, db)
    admin.close()


# Grants of the twin or of a partition the ladder names, changed: the routed body at once, in the
# DDL's transaction; undone, phase 1 again installs the ladder
SWAPPING_DDL = {
    "revoke": ("REVOKE INSERT, UPDATE, DELETE ON public.revenues_2025_03 FROM {role}",
               "GRANT INSERT, UPDATE, DELETE ON public.revenues_2025_03 TO {role}"),
    "grant_on_twin": ("CREATE ROLE {role}_new; GRANT INSERT ON public.revenues_partitioned TO {role}_new",
                      "REVOKE INSERT ON public.revenues_partitioned FROM {role}_new; DROP ROLE {role}_new"),
}


@pytest.mark.parametrize("case", sorted(SWAPPING_DDL))
def test_a_change_of_grants_swaps_in_the_routed_body_at_once(pg, db, case):
    admin = _admin(pg, db, 300)
    assert _has_ladder(admin)
    ddl, undo = SWAPPING_DDL[case]
    run(admin, ddl.format(role=role_name(db)))
    assert _body(admin, FAST) == _body(admin, ROUTED)       # in the DDL's own transaction
    _march_writes_keep_the_twin_equal(pg, db)
    run(admin, undo.format(role=role_name(db)))
    _phase1_again(pg, db)
    assert _has_ladder(admin) and _body(admin, FAST) != _body(admin, ROUTED)
    admin.close()


# DDL that adds partitions: the ladder stays, the new partition's rows take the routed statement
ADDING_DDL = {
    "attach": "CREATE TABLE public.revenues_old_times (LIKE public.revenues_partitioned INCLUDING ALL); "
              "ALTER TABLE public.revenues_partitioned ATTACH PARTITION public.revenues_old_times "
              "FOR VALUES FROM ('2010-01-01 00:00+00') TO ('2011-01-01 00:00+00')",
    "create": "CREATE TABLE public.revenues_old_times PARTITION OF public.revenues_partitioned "
              "FOR VALUES FROM ('2010-01-01 00:00+00') TO ('2011-01-01 00:00+00')",
}


@pytest.mark.parametrize("case", sorted(ADDING_DDL))
def test_a_partition_added_since_takes_the_routed_statement_and_the_ladder_stays(pg, db, case):
    admin = _admin(pg, db, 100)
    before = _body(admin, FAST)
    run(admin, ADDING_DDL[case], "GRANT SELECT, INSERT, UPDATE, DELETE ON public.revenues_old_times TO %s"
        % role_name(db))
    assert _body(admin, FAST) == before and _has_ladder(admin)
    app = _app(pg, db)
    run(app, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2010-05-05 00:00+00', 'eu', 1)",
        "UPDATE public.revenues SET amount = 2 WHERE occurred_at < '2011-01-01 00:00+00'")
    assert _q(admin, "SELECT amount FROM public.revenues_old_times") == [(2,)]
    _in_step(app)
    app.close()
    admin.close()


def _leaves(node):
    return [node["part"][1]] if "part" in node else _leaves(node["below"]) + _leaves(node["above"])


def test_a_partition_the_application_may_not_write_directly_is_left_to_routing(pg, db):
    admin = _admin(pg, db, 100)
    session = Session(admin)
    assert "revenues_2025_03" in _leaves(sync_ladder.rungs(session, TWIN)["tree"])
    for closed in ("REVOKE UPDATE ON public.revenues_2025_03 FROM %s" % role_name(db),
                   "GRANT UPDATE (note) ON public.revenues_2025_04 TO PUBLIC",
                   "ALTER TABLE public.revenues_2025_05 ENABLE ROW LEVEL SECURITY"):
        run(admin, closed)
    leaves = _leaves(sync_ladder.rungs(session, TWIN)["tree"])
    assert not set(leaves) & {"revenues_2025_03", "revenues_2025_04", "revenues_2025_05"}
    assert "revenues_2025_02" in leaves and "revenues_default" not in leaves
    admin.close()


def test_no_ladder_for_a_hash_partitioned_twin_or_one_with_a_sub_partitioned_partition(conn):
    run(conn, "CREATE TABLE public.h (id bigint PRIMARY KEY) PARTITION BY HASH (id)",
        "CREATE TABLE public.h0 PARTITION OF public.h FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        "CREATE TABLE public.h1 PARTITION OF public.h FOR VALUES WITH (MODULUS 2, REMAINDER 1)",
        "CREATE TABLE public.r (id bigint, d date, PRIMARY KEY (id, d)) PARTITION BY RANGE (d)",
        "CREATE TABLE public.r1 PARTITION OF public.r FOR VALUES FROM ('2025-01-01') TO ('2025-02-01')",
        "CREATE TABLE public.r2 PARTITION OF public.r FOR VALUES FROM ('2025-02-01') TO ('2025-03-01') "
        "PARTITION BY HASH (id)",
        "CREATE TABLE public.r2a PARTITION OF public.r2 FOR VALUES WITH (MODULUS 1, REMAINDER 0)",
        "CREATE TABLE public.e (id bigint, d date) PARTITION BY RANGE ((d + 1))")
    session = Session(conn)
    assert sync_ladder.rungs(session, ("public", "h")) is None
    assert sync_ladder.rungs(session, ("public", "r")) is None
    assert sync_ladder.rungs(session, ("public", "e")) is None
    run(conn, "ALTER TABLE public.r DETACH PARTITION public.r2")
    ladder = sync_ladder.rungs(session, ("public", "r"))
    assert ladder["key"] == "d" and ladder["partitions"] == 1 and ladder["tree"]["part"] == ("public", "r1")


def test_integer_keys_and_open_bounds_make_a_ladder(conn):
    run(conn, "CREATE TABLE public.n (id bigint PRIMARY KEY) PARTITION BY RANGE (id)",
        "CREATE TABLE public.n_low PARTITION OF public.n FOR VALUES FROM (MINVALUE) TO (0)",
        "CREATE TABLE public.n_mid PARTITION OF public.n FOR VALUES FROM (0) TO (1000)",
        "CREATE TABLE public.n_high PARTITION OF public.n FOR VALUES FROM (5000) TO (MAXVALUE)")
    ladder = sync_ladder.rungs(Session(conn), ("public", "n"))
    tree = ladder["tree"]
    assert ladder["partitions"] == 3
    assert tree["below"]["part"] == ("public", "n_low") and tree["below"]["lower"] is None
    assert tree["above"]["above"]["part"] == ("public", "n_high") and tree["above"]["above"]["upper"] is None
