"""HP13 end to end: phase 1 on a database whose TimeZone is not UTC, run from a session that is
not UTC either, builds timestamptz partitions at exact UTC edges, and the sync trigger routes
rows written around those edges — in the application's own time zone — to the right partition."""
import datetime

import pytest
from psycopg2 import sql

from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

UTC = datetime.timezone.utc


def rows(conn, text, args=None):
    with conn.cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall()


@pytest.mark.parametrize("zone", ["America/St_Johns", "Australia/Lord_Howe"])   # odd offsets, DST both ways
def test_phase1_bounds_are_utc_instants_whatever_the_time_zones(pg, db, zone):
    admin = pg.connect(db)
    admin.cursor().execute(sql.SQL("ALTER DATABASE {} SET TimeZone = {}").format(sql.Identifier(db), sql.Literal(zone)))
    admin.close()
    app = pg.connect(db)                                          # the database's zone, not UTC
    assert rows(app, "SHOW TimeZone") == [(zone,)]
    app.cursor().execute("CREATE TABLE ev (id bigint PRIMARY KEY, at timestamptz NOT NULL)")
    app.cursor().execute("INSERT INTO ev VALUES (1, '2025-01-15 00:00:00+00')")

    spec = normalize_spec(dict(table="ev", partition_key="at", interval="monthly", premake=1))
    tool = pg.connect(db)                                         # also not UTC: bounds carry their offset
    prepare_table(Session(tool), SqlTemplates.bundled(), spec, "partitioning",
                  now=datetime.datetime(2025, 2, 10, tzinfo=UTC))
    tool.close()

    app.cursor().execute("SET TimeZone = 'UTC'")
    bounds = dict(rows(app, "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'ev_partitioned'::regclass"))
    assert bounds["ev_2025_02"] == "FOR VALUES FROM ('2025-02-01 00:00:00+00') TO ('2025-03-01 00:00:00+00')"
    app.cursor().execute("SET TimeZone = %s", (zone,))

    # Written by the application in its own zone, one microsecond either side of a UTC month edge.
    app.cursor().execute("INSERT INTO ev VALUES (2, '2025-01-31 23:59:59.999999+00'), (3, '2025-02-01 00:00:00+00'),"
                         " (4, '2025-02-28 23:59:59.999999+00'), (5, '2025-03-01 00:00:00+00'),"
                         " (6, '2025-04-01 00:00:00+00')")
    assert rows(app, "SELECT id, tableoid::regclass::text FROM ev_partitioned ORDER BY id") == [
        (2, "ev_2025_01"), (3, "ev_2025_02"), (4, "ev_2025_02"), (5, "ev_2025_03"), (6, "ev_default")]
    app.close()
