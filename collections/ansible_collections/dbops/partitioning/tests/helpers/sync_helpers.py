"""Shared setup of the sync tests: an original table and its partitioned twin built by hand
(plain SQL, independent of the twin builder), the sync installed with sync.py, and a
row-for-row comparison of the two tables."""
import types

from psycopg2 import sql

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session, connect
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.sync import install_sync

STATE = "partitioning"
TEMPLATES = SqlTemplates.bundled()

ORIGINAL_DDL = """
CREATE TABLE public.revenues (
    id           bigserial PRIMARY KEY,
    org_id       integer NOT NULL,
    occurred_at  timestamptz NOT NULL,
    amount_cents bigint NOT NULL,
    note         text
);
"""

TWIN_DDL = """
CREATE TABLE public.revenues_partitioned (LIKE public.revenues INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (occurred_at);
ALTER TABLE public.revenues_partitioned ADD PRIMARY KEY (id, occurred_at);
CREATE TABLE public.revenues_2025_q1 PARTITION OF public.revenues_partitioned
    FOR VALUES FROM ('2025-01-01 00:00+00') TO ('2025-04-01 00:00+00');
CREATE TABLE public.revenues_2025_q2 PARTITION OF public.revenues_partitioned
    FOR VALUES FROM ('2025-04-01 00:00+00') TO ('2025-07-01 00:00+00');
CREATE TABLE public.revenues_2025_q3 PARTITION OF public.revenues_partitioned
    FOR VALUES FROM ('2025-07-01 00:00+00') TO ('2025-10-01 00:00+00');
CREATE TABLE public.revenues_2025_q4 PARTITION OF public.revenues_partitioned
    FOR VALUES FROM ('2025-10-01 00:00+00') TO ('2026-01-01 00:00+00');
CREATE TABLE public.revenues_default PARTITION OF public.revenues_partitioned DEFAULT;
"""


def spec(schema="public", name="revenues", partition_key="occurred_at", **tuning):
    """The few TableSpec attributes sync.py reads."""
    return types.SimpleNamespace(schema=schema, name=name, table_name="%s.%s" % (schema, name),
                                 partition_key=partition_key, tuning=dict(tuning))


def session_for(params):
    """A project session (TimeZone=UTC and the other settings every module uses)."""
    return Session(connect(params))


def setup_revenues(params, seed_rows=0, copy_seed=True):
    """Original + twin + state schema + forward sync; ``seed_rows`` written before the triggers
    (copied by hand into the twin when ``copy_seed``, as a finished backfill would)."""
    s = session_for(params)
    try:
        s.execute(ORIGINAL_DDL + TWIN_DDL)
        if seed_rows:
            s.execute("INSERT INTO public.revenues (org_id, occurred_at, amount_cents, note) "
                      "SELECT g %% 7, timestamptz '2025-01-01' + (g %% 360) * interval '1 day', g * 100, 'seed ' || g "
                      "FROM generate_series(1, %s) g", (seed_rows,))
        state_store.ensure_state_schema(s, TEMPLATES, STATE)
        created = install_sync(s, TEMPLATES, STATE, spec(), ("public", "revenues"),
                               ("public", "revenues_partitioned"))
        if seed_rows and copy_seed:
            backfill(s.conn)
        return created
    finally:
        s.close()


def install_sync_on(params, schema, name, partition_key):
    """The state schema and the forward sync from ``schema.name`` to its twin ``name_partitioned``
    (both created by the test); returns the original's and the twin's (schema, name)."""
    original, twin = (schema, name), (schema, name + "_partitioned")
    s = session_for(params)
    try:
        state_store.ensure_state_schema(s, TEMPLATES, STATE)
        install_sync(s, TEMPLATES, STATE, spec(schema=schema, name=name, partition_key=partition_key), original, twin)
    finally:
        s.close()
    return original, twin


def backfill(conn, original=("public", "revenues"), twin=("public", "revenues_partitioned")):
    """Copy every row not yet in the twin (what a finished backfill leaves)."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(*twin), sql.Identifier(*original)))


def rows(conn, table, order_by="id"):
    with conn.cursor() as cur:
        cur.execute(sql.SQL("SELECT * FROM {} ORDER BY {}").format(
            sql.Identifier(*table), sql.SQL(", ").join(sql.Identifier(c) for c in order_by.split(","))))
        return cur.fetchall()


def assert_equal(conn, original=("public", "revenues"), twin=("public", "revenues_partitioned"), order_by="id"):
    """Row for row: same rows, same values, same column order."""
    a, b = rows(conn, original, order_by), rows(conn, twin, order_by)
    assert a == b, "original and twin differ:\n only in original: %s\n only in twin: %s" % (
        sorted(set(a) - set(b))[:10], sorted(set(b) - set(a))[:10])
    return a


def reconcile_by_hand(conn, table_name="public.revenues", original=("public", "revenues"),
                      twin=("public", "revenues_partitioned"), pk="id"):
    """What phase 2's reconcile does for logged keys (simplified, no concurrency): delete every
    twin row with the key, copy the current version."""
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DELETE FROM {st} WHERE table_name = %s RETURNING pk").format(
            st=sql.Identifier(STATE, "pending_keys")), (table_name,))
        keys = sorted(set(r[0][pk] for r in cur.fetchall()))
        for k in keys:
            cur.execute(sql.SQL("DELETE FROM {} WHERE {} = %s").format(sql.Identifier(*twin), sql.Identifier(pk)), (k,))
            cur.execute(sql.SQL("INSERT INTO {} SELECT * FROM {} WHERE {} = %s").format(
                sql.Identifier(*twin), sql.Identifier(*original), sql.Identifier(pk)), (k,))
        return keys
