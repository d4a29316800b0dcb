"""Test setup for phase 2: a table that phase 1 has brought to 'prepared'.

Phase 1 is the real one (prepare.prepare_table): twin, monthly partitions plus
``_default``, forward sync trigger, state row in phase 'prepared' with ``backfill_upper``.

Two shapes: ``revenues`` (``id bigint`` key) and ``composite=True`` (key ``(org_id, id)``,
to exercise keyset order by row comparison).
"""
import datetime

from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import backfill
from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

STATE = "partitioning"
TABLE = "public.revenues"
COLS = "id, occurred_at, region, amount, note"


def run(conn, *stmts):
    cur = conn.cursor()
    for s in stmts:
        cur.execute(s)
    cur.close()


def templates():
    return SqlTemplates.bundled()


def create_original(conn, rows=2000, composite=False):
    if composite:
        run(conn, "CREATE TABLE public.revenues (org_id int NOT NULL, id bigint NOT NULL, "
                  "occurred_at timestamptz NOT NULL, region text NOT NULL, amount numeric(12,2) NOT NULL, note text, "
                  "PRIMARY KEY (org_id, id))",
            "INSERT INTO public.revenues SELECT g %% 7, g, timestamptz '2025-01-01 00:00+00' + "
            "((g * 251) %% (360 * 1440)) * interval '1 minute', (ARRAY['eu','us','apac'])[1 + g %% 3], g %% 1000, "
            "NULL FROM generate_series(1, %d) g" % rows)
    else:
        run(conn, "CREATE TABLE public.revenues (id bigserial PRIMARY KEY, occurred_at timestamptz NOT NULL, "
                  "region text NOT NULL, amount numeric(12,2) NOT NULL, note text)",
            "INSERT INTO public.revenues (occurred_at, region, amount) SELECT timestamptz '2025-01-01 00:00+00' + "
            "((g * 251) %% (360 * 1440)) * interval '1 minute', (ARRAY['eu','us','apac'])[1 + g %% 3], g %% 1000 "
            "FROM generate_series(1, %d) g" % rows)


def _spec_dict():
    return dict(table=TABLE, partition_key="occurred_at", strategy="range", interval="monthly", premake=0,
                default_partition=True)


def _prepare_with_phase1(pg, db):
    session = Session(pg.connect(db))
    try:
        prepare_table(session, templates(), normalize_spec(_spec_dict()), STATE,
                      now=datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc))
    finally:
        session.close()


def make_prepared(pg, db, rows=2000, composite=False):
    """public.revenues with ``rows`` rows, then phase 1 (prepare.prepare_table): its twin,
    monthly partitions plus a default one, sync triggers and a 'prepared' state row with
    ``backfill_upper``."""
    conn = pg.connect(db)
    try:
        create_original(conn, rows=rows, composite=composite)
    finally:
        conn.close()
    _prepare_with_phase1(pg, db)


def session(pg, db):
    return Session(pg.connect(db))


def context(sess):
    row = state_store.get_table(sess, STATE, TABLE)
    return backfill.load_context(sess, STATE, row), row


def next_batch(sess, ctx, limit, range_no=0, before_commit=None, reckon=False):
    """The next batch of backfill range ``range_no`` from its committed checkpoint (as a worker
    runs it); None when the range is done. ``reckon``: the batch's upper key is given (the range's
    own, as batch.span_upper reckons it) instead of read."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import batch, ranges
    rng = [r for r in ranges.get_ranges(sess, ctx) if r["range_no"] == range_no][0]
    if rng["done"]:
        return None
    return batch.copy_batch(sess, templates(), ctx, range_no, rng["checkpoint"], rng["upper_key"], limit,
                            before_commit=before_commit, upper=rng["upper_key"] if reckon else None)


def rows_of(conn, table, cols=COLS):
    cur = conn.cursor()
    cur.execute("SELECT %s FROM %s ORDER BY %s" % (cols, table, cols))
    out = cur.fetchall()
    cur.close()
    return out


def assert_equal_tables(conn, cols=COLS):
    """Row for row: original == twin, and no primary key twice in the twin."""
    a = rows_of(conn, "public.revenues", cols)
    b = rows_of(conn, "public.revenues_partitioned", cols)
    missing = sorted(set(a) - set(b))[:10]
    extra = sorted(set(b) - set(a))[:10]
    assert a == b, "original %d rows, twin %d rows; missing in twin %s; extra in twin %s" % (
        len(a), len(b), missing, extra)
    pk = "org_id, id" if "org_id" in cols else "id"
    cur = conn.cursor()
    cur.execute("SELECT %s, count(*) FROM public.revenues_partitioned GROUP BY %s HAVING count(*) > 1" % (pk, pk))
    dup = cur.fetchall()
    assert not dup, "duplicate keys in the twin: %s" % dup


def state_row(conn):
    cur = conn.cursor()
    cur.execute("SELECT row_to_json(t) FROM partitioning.tables t WHERE table_name = %s", (TABLE,))
    r = cur.fetchone()
    return r[0] if r else None


def pending(conn):
    cur = conn.cursor()
    cur.execute("SELECT pk FROM partitioning.pending_keys WHERE table_name = %s ORDER BY id", (TABLE,))
    return [r[0] for r in cur.fetchall()]


def scalar(conn, stmt, args=None):
    cur = conn.cursor()
    cur.execute(stmt, args)
    r = cur.fetchone()
    cur.close()
    return r[0] if r else None
