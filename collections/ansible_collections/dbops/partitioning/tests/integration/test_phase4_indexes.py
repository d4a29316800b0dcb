"""Phase 4's indexes (maintain/optimize.py, indexes.build_online) on real servers.

The claims: the build never blocks the application's writes (shown by what the build's session
holds in pg_locks while an insert succeeds, not by timing); an interrupted build resumes and
leaves no invalid index; partitions created later get the index; PostgreSQL checks the spec's
SQL before anything is built; a second run changes nothing.
"""
import threading
import time

import psycopg2
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.optimize import optimize
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec

INDEX = dict(name="events_org_report_idx", columns=["org_id", "at DESC"], include=["amount"])
EXPRESSION = dict(columns=["date_trunc('month', at)", "kind"], where="kind <> 'void'")
# Lock modes that conflict with a writer's ROW EXCLUSIVE.
BLOCKING_WRITERS = {"ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"}


def events(conn, rows=3000):
    """A range-partitioned table, as a native one (phase 4 works the same on one we migrated)."""
    conn.cursor().execute("""
        CREATE TABLE public.events (id bigint NOT NULL, at timestamp NOT NULL, org_id int NOT NULL,
                                    kind text NOT NULL, amount int NOT NULL, PRIMARY KEY (id, at))
            PARTITION BY RANGE (at);
        CREATE TABLE public.events_2025_01 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2025-02-01');
        CREATE TABLE public.events_2025_02 PARTITION OF public.events FOR VALUES FROM ('2025-02-01') TO ('2025-03-01');
        CREATE TABLE public.events_2025_03 PARTITION OF public.events FOR VALUES FROM ('2025-03-01') TO ('2025-04-01');
        CREATE TABLE public.events_default PARTITION OF public.events DEFAULT;
        INSERT INTO public.events SELECT g, timestamp '2025-01-01' + (g %% 89) * interval '1 day', g %% 50,
               (ARRAY['sale','refund','void'])[1 + g %% 3], g %% 1000 FROM generate_series(1, %d) g;
    """ % rows)


def table_spec(*indexes):
    return normalize_spec(dict(table="public.events", partition_key="at", interval="monthly",
                               indexes=list(indexes) or [INDEX]))


def run_optimize(pg, db, spec, check_mode=False, conn=None):
    session = Session(conn or pg.connect(db), check_mode=check_mode)
    try:
        return optimize(session, spec, "partitioning"), session.queries
    finally:
        session.close()


def rows(conn, q, args=None):
    cur = conn.cursor()
    cur.execute(q, args)
    out = cur.fetchall()
    cur.close()
    return out


def index_state(conn, name="events_org_report_idx"):
    """(parent valid, {partition: attached index valid}, invalid indexes anywhere in the tree)."""
    parent = rows(conn, "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)", ("public." + name,))
    attached = dict(rows(conn, """
        SELECT t.relname, x.indisvalid FROM pg_inherits h JOIN pg_index x ON x.indexrelid = h.inhrelid
          JOIN pg_class t ON t.oid = x.indrelid WHERE h.inhparent = to_regclass(%s)""", ("public." + name,)))
    invalid = [r[0] for r in rows(conn, """
        SELECT i.indexrelid::regclass::text FROM pg_index i
         WHERE NOT i.indisvalid AND i.indrelid IN (SELECT relid FROM pg_partition_tree('public.events'))""")]
    return (parent[0][0] if parent else None), attached, invalid


def partitions(conn):
    return sorted(r[0] for r in rows(conn, "SELECT c.relname FROM pg_partition_tree('public.events') t "
                                           "JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf"))


def start_build(pg, db, spec):
    """optimize() in a thread on its own connection; returns (thread, pid, outcome dict)."""
    build_conn = pg.connect(db)
    pid = build_conn.get_backend_pid()
    outcome = {}

    def work():
        try:
            outcome["result"] = run_optimize(pg, db, spec, conn=build_conn)[0]
        except (PartitioningError, psycopg2.Error) as e:
            outcome["error"] = e
    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread, pid, outcome


def wait_until_waiting(conn, pid, deadline_s=120):
    """Poll until the build's backend waits for a lock (a CONCURRENTLY build waiting for an older
    snapshot: a virtualxid lock). Returns that waiting lock's type. Not a timing assertion: the
    deadline only turns a hang into a failure."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        waiting = rows(conn, "SELECT locktype FROM pg_locks WHERE pid = %s AND NOT granted", (pid,))
        if waiting:
            return waiting[0][0]
        time.sleep(0.05)
    raise AssertionError("the build never waited")


def locks_on_table(conn, pid):
    """The build's granted locks on the table and its partitions: {(relation, mode)}."""
    return set(rows(conn, """
        SELECT l.relation::regclass::text, l.mode FROM pg_locks l
         WHERE l.pid = %s AND l.granted AND l.locktype = 'relation'
           AND l.relation IN (SELECT relid FROM pg_partition_tree('public.events'))""", (pid,)))


def hold_snapshot(pg, db):
    """A session in a REPEATABLE READ transaction with its snapshot taken: every CONCURRENTLY build
    waits for it to end before it can finish (PostgreSQL's rule, not ours)."""
    c = pg.connect(db)
    c.autocommit = False
    c.set_session(isolation_level="REPEATABLE READ")
    c.cursor().execute("SELECT count(*) FROM pg_class")
    return c


def test_the_build_never_blocks_inserts(pg, db, conn):
    events(conn)
    reader = hold_snapshot(pg, db)
    thread, pid, outcome = start_build(pg, db, table_spec())
    try:
        assert wait_until_waiting(conn, pid) == "virtualxid"
        held = locks_on_table(conn, pid)
        assert held, "the build holds its partition's SHARE UPDATE EXCLUSIVE while it waits"
        assert not [h for h in held if h[1] in BLOCKING_WRITERS], held
        # the application writes every partition meanwhile, the one being indexed too
        writer = pg.connect(db)
        writer.autocommit = True
        writer.cursor().execute("SET statement_timeout = '60s'")   # a blocked insert fails, never hangs
        for n, day in enumerate(("2025-01-15", "2025-02-15", "2025-03-15", "2030-01-01")):
            writer.cursor().execute("INSERT INTO public.events VALUES (%s, %s, 7, 'sale', 1)", (100000 + n, day))
        writer.close()
        assert not [h for h in locks_on_table(conn, pid) if h[1] in BLOCKING_WRITERS]
    finally:
        reader.rollback()
        reader.close()
        thread.join(300)
    assert "error" not in outcome, outcome
    assert outcome["result"]["changed"]
    parent_valid, attached, invalid = index_state(conn)
    assert parent_valid is True and not invalid
    assert sorted(attached) == partitions(conn) and all(attached.values())
    assert rows(conn, "SELECT count(*) FROM public.events WHERE org_id = 7")[0][0] > 0


def test_an_interrupted_build_resumes_and_leaves_no_invalid_index(pg, db, conn):
    events(conn)
    reader = hold_snapshot(pg, db)
    thread, pid, outcome = start_build(pg, db, table_spec())
    wait_until_waiting(conn, pid)
    conn.cursor().execute("SELECT pg_cancel_backend(%s)", (pid,))   # an operator's Ctrl-C, a killed AWX job
    thread.join(300)
    reader.rollback()
    reader.close()
    assert "error" in outcome
    parent_valid, attached, invalid = index_state(conn)
    assert parent_valid is False and invalid, "an interrupted CONCURRENTLY build leaves an invalid index"
    # a partition created while the build is half done gets the index from PostgreSQL
    conn.cursor().execute("CREATE TABLE public.events_2025_04 PARTITION OF public.events "
                          "FOR VALUES FROM ('2025-04-01') TO ('2025-05-01')")
    result, _queries = run_optimize(pg, db, table_spec())
    assert any(step.startswith("dropped invalid index") for step in result["done"]), result["done"]
    parent_valid, attached, invalid = index_state(conn)
    assert parent_valid is True and invalid == []
    assert sorted(attached) == partitions(conn) and all(attached.values())
    again, queries = run_optimize(pg, db, table_spec())
    assert not again["changed"] and queries == [], again


def test_partitions_made_later_get_the_index(pg, db, conn):
    """After phase 4, premake's partitions (CREATE ... PARTITION OF, or LIKE + ATTACH PARTITION as
    maintenance makes them) carry the index: a partitioned index does that."""
    events(conn, rows=300)
    run_optimize(pg, db, table_spec(INDEX, EXPRESSION))
    conn.cursor().execute("""
        CREATE TABLE public.events_2025_05 PARTITION OF public.events FOR VALUES FROM ('2025-05-01') TO ('2025-06-01');
        CREATE TABLE public.events_2025_06 (LIKE public.events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
        ALTER TABLE public.events ATTACH PARTITION public.events_2025_06 FOR VALUES FROM ('2025-06-01') TO ('2025-07-01');
    """)
    for name in ("events_org_report_idx", "events_expr_kind_idx"):
        parent_valid, attached, invalid = index_state(conn, name)
        assert parent_valid and not invalid
        assert sorted(attached) == partitions(conn), name
    again, _queries = run_optimize(pg, db, table_spec(INDEX, EXPRESSION))
    assert not again["changed"], again


def test_postgresql_checks_the_spec_before_anything_is_built(pg, db, conn):
    events(conn, rows=50)
    before = rows(conn, "SELECT count(*) FROM pg_class")
    with pytest.raises(PartitioningError) as e:
        run_optimize(pg, db, table_spec(dict(columns=["lower(no_such_column)"])))
    assert "PostgreSQL refuses it" in e.value.msg and "no_such_column" in e.value.msg
    with pytest.raises(PartitioningError) as e:
        run_optimize(pg, db, table_spec(dict(columns=["kind"], using="gin")))
    assert "operator class" in e.value.msg
    with pytest.raises(PartitioningError) as e:
        run_optimize(pg, db, table_spec(dict(columns=["at"], using="brin", **{"with": {"fillfactor": 50}})))
    assert "fillfactor" in e.value.msg
    assert rows(conn, "SELECT count(*) FROM pg_class") == before


def test_an_index_of_that_name_with_another_definition_is_refused(pg, db, conn):
    events(conn, rows=50)
    conn.cursor().execute("CREATE INDEX events_org_report_idx ON public.events (org_id)")
    with pytest.raises(PartitioningError) as e:
        run_optimize(pg, db, table_spec())
    assert "exists with another definition" in e.value.msg and "DROP INDEX" in e.value.msg


def test_check_mode_shows_the_statements_and_changes_nothing(pg, db, conn):
    events(conn, rows=50)
    result, queries = run_optimize(pg, db, table_spec(INDEX, EXPRESSION), check_mode=True)
    assert result["changed"] and [i["status"] for i in result["indexes"]] == ["would be built"] * 2
    text = "\n".join(queries)
    assert "ON ONLY" in text and "CREATE INDEX CONCURRENTLY" in text and "ATTACH PARTITION" in text
    assert "date_trunc('month'" in text and "ANALYZE" in text
    assert index_state(conn)[0] is None
