"""Updates of the partition key after the switchover (issue 9, item 12).

PostgreSQL's rule for every partitioned table: an UPDATE that moves a row to another partition
deletes it there and inserts it here, and a concurrent UPDATE, DELETE or SELECT ... FOR UPDATE
that waited for that row fails with SQLSTATE 40001 even in READ COMMITTED. The tool cannot
change that; applications that update the partition key must retry. Phase 1 says so, once,
when the table has been updated at all (the statistics cannot tell which columns changed), and
the phase 3 runbook always does.
"""
import threading
import time

import psycopg2

from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ..helpers.phase3_setup import switch_over_by_phases

RANGE = dict(table="public.revenues", partition_key="occurred_at", interval="monthly", premake=0)
TABLE = """
CREATE TABLE public.revenues (id bigint PRIMARY KEY, occurred_at timestamptz NOT NULL, amount bigint NOT NULL);
INSERT INTO public.revenues SELECT g, timestamptz '2025-01-01 00:00+00' + g * interval '1 day', g
  FROM generate_series(1, 100) g;
"""


def sql(conn, text, args=None):
    cur = conn.cursor()
    cur.execute(text, args)
    return cur.fetchall() if cur.description else None


def phase1_warnings(conn):
    return prepare_table(Session(conn), SqlTemplates.bundled(), normalize_spec(dict(RANGE)), "partitioning")["warnings"]


def updates_counted(conn):
    """Wait until the statistics count the updates just made (they are sent when a session is idle)."""
    for _attempt in range(100):
        if sql(conn, "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'public.revenues'::regclass")[0][0]:
            return
        time.sleep(0.1)


def test_phase1_says_it_once_when_the_table_is_updated(conn):
    sql(conn, TABLE)
    assert not [w for w in phase1_warnings(conn) if "40001" in w]

    sql(conn, "UPDATE public.revenues SET amount = amount + 1 WHERE id <= 3")
    if conn.server_version >= 150000:
        sql(conn, "SELECT pg_stat_force_next_flush()")
    updates_counted(conn)
    said = [w for w in phase1_warnings(conn) if "40001" in w]
    assert said == [
        "public.revenues: the table has had 3 row updates (the statistics cannot tell which columns they changed). If "
        "the application updates occurred_at: on the partitioned table such an UPDATE moves the row to another "
        "partition, and a concurrent UPDATE, DELETE or SELECT ... FOR UPDATE of the same row then fails with SQLSTATE "
        "40001 (tuple to be locked was already moved to another partition due to concurrent update), also in READ "
        "COMMITTED: from the switchover on, such writes must be retried on 40001 (docs/runbooks/phase3.md)."]


def test_after_the_switchover_a_concurrent_update_of_a_moved_row_fails_with_40001(pg, db, conn):
    """The rule the warning is about, shown on a switched table: two sessions stepped by hand, a thread
    only for the statement that must wait."""
    sql(conn, TABLE)
    session = Session(pg.connect(db))
    try:
        assert switch_over_by_phases(session, RANGE)["phase"] == "switched"
    finally:
        session.close()
    mover, other = pg.connect(db, autocommit=False), pg.connect(db)
    try:
        sql(mover, "UPDATE public.revenues SET occurred_at = occurred_at + interval '60 days' WHERE id = 5")
        outcome = {}

        def update():
            try:
                sql(other, "UPDATE public.revenues SET amount = 0 WHERE id = 5")
                outcome["ok"] = True
            except psycopg2.Error as e:
                outcome["error"] = e

        t = threading.Thread(target=update)
        t.start()
        waiting = pg.connect(db)
        for _attempt in range(600):
            if sql(waiting, "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted",
                   (other.get_backend_pid(),))[0][0]:
                break
            time.sleep(0.05)
        waiting.close()
        mover.commit()
        t.join(60)
        assert "error" in outcome, outcome
        assert outcome["error"].pgcode == "40001"
        assert "already moved to another partition" in str(outcome["error"])
        assert sql(conn, "SELECT amount FROM public.revenues WHERE id = 5") == [(5,)]   # the retry would apply it
    finally:
        mover.close()
        other.close()
