"""The runbook's monitoring in the database (templates/sql/maintenance/50_monitoring.sql.j2).

* callable by hand exactly as the first user's runbook calls them, unqualified (wrappers in the
  runbook schema): SELECT * FROM get_partition_stats(), analyze_partition_performance(),
  partition_sizes, with the documented columns;
* partition_stats reads its facts through them, so both agree; where they are not installed it
  creates them for its session alone (pg_temp) and the database is unchanged;
* report queries: EXPLAINed, never run, their pruning reported; a second statement refused.
"""
import psycopg2
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import stats
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import functions
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ..helpers.maintenance import STATE, install, rows

STATS_COLUMNS = ["table_name", "partition_name", "is_default", "bound", "lower_bound", "upper_bound", "rows_estimate",
                 "live_rows", "dead_rows", "total_bytes", "table_bytes", "index_bytes", "total_size", "seq_scans",
                 "seq_rows_read", "index_scans", "last_vacuum", "last_analyze"]
PERFORMANCE_COLUMNS = ["table_name", "kind", "object", "partition_name", "scans", "rows_read", "bytes",
                       "partitions_read", "partitions_total", "finding"]
SIZES_COLUMNS = ["table_name", "partition_schema", "partition_name", "level", "is_default", "bound", "rows_estimate",
                 "table_bytes", "index_bytes", "total_bytes", "total_size"]


def events(conn):
    """A range-partitioned table (timestamptz, monthly) with rows in two months and in the default."""
    conn.cursor().execute("""
        CREATE TABLE public.events (id bigint NOT NULL, at timestamptz NOT NULL, org_id int NOT NULL,
                                    PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
        CREATE TABLE public.events_2025_01 PARTITION OF public.events FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-02-01 00:00+00');
        CREATE TABLE public.events_2025_02 PARTITION OF public.events FOR VALUES FROM ('2025-02-01 00:00+00') TO ('2025-03-01 00:00+00');
        CREATE TABLE public.events_2025_03 PARTITION OF public.events FOR VALUES FROM ('2025-03-01 00:00+00') TO ('2025-04-01 00:00+00');
        CREATE TABLE public.events_default PARTITION OF public.events DEFAULT;
        CREATE INDEX events_org_idx ON public.events (org_id);
        INSERT INTO public.events SELECT g, timestamptz '2025-01-01 00:00+00' + (g % 50) * interval '1 day', g % 7
          FROM generate_series(1, 500) g;
        INSERT INTO public.events VALUES (9999, '2030-01-01 00:00+00', 1);
        ANALYZE public.events;
    """)


def described(conn, query, args=None):
    cur = conn.cursor()
    cur.execute(query, args)
    out = [d[0] for d in cur.description], cur.fetchall()
    cur.close()
    return out


def facts(conn, state=STATE):
    s = Session(conn)
    return stats.table_facts(s, state, "public.events")


def test_callable_by_hand_as_the_runbook_calls_them(conn):
    events(conn)
    s = Session(conn)
    functions.ensure_functions(s, SqlTemplates.bundled(), STATE)
    assert functions.install_wrappers(s, SqlTemplates.bundled(), STATE, "public")
    conn.cursor().execute("SET TimeZone = 'Asia/Tokyo'")     # the bounds read in UTC whoever calls

    columns, found = described(conn, "SELECT * FROM get_partition_stats()")
    assert columns == STATS_COLUMNS
    by_name = dict((r[1], dict(zip(columns, r))) for r in found)
    assert list(by_name) == ["events_2025_01", "events_2025_02", "events_2025_03", "events_default"]
    assert by_name["events_2025_02"]["lower_bound"] == "2025-02-01 00:00:00+00"
    assert by_name["events_2025_02"]["upper_bound"] == "2025-03-01 00:00:00+00"
    assert by_name["events_default"]["is_default"] and by_name["events_default"]["lower_bound"] is None
    assert sum(r["rows_estimate"] for r in by_name.values()) == 501
    assert all(r["last_analyze"] is not None for r in by_name.values())

    columns, found = described(conn, "SELECT * FROM partition_sizes WHERE table_name = 'public.events'")
    assert columns == SIZES_COLUMNS and len(found) == 4

    columns, found = described(conn, "SELECT * FROM analyze_partition_performance()")
    assert columns == PERFORMANCE_COLUMNS
    kinds = sorted(set(r[1] for r in found))
    assert kinds == ["index", "partition"]
    index_rows = [dict(zip(columns, r)) for r in found if r[1] == "index"]
    assert set(r["object"] for r in index_rows) == {"public.events_pkey", "public.events_org_idx"}
    assert len(index_rows) == 8 and all(r["finding"] in ("used", "unused") for r in index_rows)


def test_the_module_reads_the_same_facts(conn):
    events(conn)
    install(conn)
    got = facts(conn)
    columns, found = described(conn, "SELECT * FROM %s.get_partition_stats('public.events')" % STATE)
    by_sql = [dict(zip(columns, r)) for r in found]
    assert [p["name"] for p in got["partitions"]] == [r["partition_name"] for r in by_sql]
    for mine, theirs in zip(got["partitions"], by_sql):
        for key in ("bound", "lower_bound", "upper_bound", "rows_estimate", "total_bytes", "index_bytes"):
            assert mine[key] == theirs[key], key
    assert got["total_bytes"] == sum(r["total_bytes"] for r in by_sql)
    assert got["default_partition_rows"] == 1
    assert sorted(ix["index_name"] for ix in got["indexes"]) == ["public.events_org_idx", "public.events_pkey"]
    assert all(ix["valid"] for ix in got["indexes"])


def test_without_the_functions_the_module_changes_nothing(conn):
    """No state schema at all: status still reports, through the functions made in its own pg_temp."""
    events(conn)
    before = rows(conn, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname !~ '^pg_temp|^pg_toast_temp'")
    got = facts(conn)
    assert [p["name"] for p in got["partitions"]] == ["events_2025_01", "events_2025_02", "events_2025_03",
                                                      "events_default"]
    assert got["default_partition_rows"] == 1 and len(got["indexes"]) == 2
    after = rows(conn, "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                       "WHERE n.nspname !~ '^pg_temp|^pg_toast_temp'")
    assert before == after
    assert rows(conn, "SELECT to_regnamespace(%s)", (STATE,)) == [(None,)]


def test_report_queries_are_explained_never_run(conn):
    events(conn)
    install(conn)
    cur = conn.cursor()
    cur.execute("SELECT %s.register_report_query('daily', 'public.events', "
                "'SELECT sum(id) FROM public.events WHERE at >= ''2025-02-03'' AND at < ''2025-02-04''')" % STATE)
    cur.execute("SELECT %s.register_report_query('by org', 'public.events', "
                "'SELECT count(*) FROM public.events WHERE org_id = 3')" % STATE)
    cur.execute("SELECT %s.register_report_query('purge', 'public.events', 'DELETE FROM public.events')" % STATE)
    with pytest.raises(psycopg2.errors.InvalidParameterValue):
        cur.execute("SELECT %s.register_report_query('two', 'public.events', 'SELECT 1; DROP TABLE public.events')"
                    % STATE)
    with pytest.raises(psycopg2.errors.UndefinedColumn):
        cur.execute("SELECT %s.register_report_query('bad', 'public.events', 'SELECT nope FROM public.events')"
                    % STATE)
    columns, found = described(conn, "SELECT * FROM %s.analyze_partition_performance('public.events') "
                                     "WHERE kind = 'report_query'" % STATE)
    got = dict((r[2], dict(zip(columns, r))) for r in found)
    assert got["daily"]["partitions_read"] == 1 and got["daily"]["finding"] == "prunes to 1 of 4 partitions"
    assert got["by org"]["finding"] == "reads every partition: no pruning"
    assert got["purge"]["partitions_total"] == 4
    assert rows(conn, "SELECT count(*) FROM public.events") == [(501,)]         # EXPLAINed, not run
    assert [q["name"] for q in facts(conn)["report_queries"]] == ["by org", "daily", "purge"]
