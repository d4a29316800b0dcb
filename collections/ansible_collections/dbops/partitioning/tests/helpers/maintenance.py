"""Test setup for maintenance: partitioned tables made by hand (as "other means" would), and the
maintenance code run as the modules run it."""
import datetime

import psycopg2
from psycopg2 import sql

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import literal, plan_range
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import functions
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.premake import premake
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.retention import retention
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.target import register, resolve
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from .phase3_setup import run
from .switchover import one as rows

UTC = datetime.timezone.utc
STATE = "partitioning"
KEY_TYPES = {"date": "date", "timestamp": "timestamp without time zone", "timestamptz": "timestamp with time zone"}
# Which partitions a session holds which locks on (relation names resolved by the caller's catalog).
LOCKS_SQL = """
SELECT c.relname, l.mode, l.granted FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
 WHERE l.pid = %s AND l.locktype = 'relation' AND c.relkind IN ('r', 'p') AND c.relnamespace = 'public'::regnamespace
 ORDER BY 1, 2"""


def utc(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def make_table(conn, name="ev", kind="timestamptz", interval="monthly", first=datetime.date(2025, 1, 1), periods=6,
               default=True, per_period=3, grant_to=None):
    """public.<name> (id bigserial, k <kind>, note text; primary key (id, k); index on note)
    partitioned by range of k by hand, ``periods`` partitions from ``first`` (named as we name
    them), a default partition when asked, ``per_period`` rows in each."""
    key_type = KEY_TYPES[kind]
    cur = conn.cursor()
    cur.execute(sql.SQL("CREATE TABLE {} (id bigserial, k {} NOT NULL, note text, PRIMARY KEY (id, k)) "
                        "PARTITION BY RANGE (k)").format(sql.Identifier("public", name), sql.SQL(key_type)))
    cur.execute(sql.SQL("CREATE INDEX {} ON {} (note)").format(sql.Identifier(name + "_note"),
                                                               sql.Identifier("public", name)))
    spec = normalize_spec(dict(table="public." + name, partition_key="k", interval=interval))
    last = first
    made = []
    for p in plan_range(spec, key_type, first, _after(first, interval, periods)):
        cur.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier("public", p.name), sql.Identifier("public", name), literal(p.lower, key_type),
            literal(p.upper, key_type)))
        for i in range(per_period):
            cur.execute(sql.SQL("INSERT INTO {} (k, note) VALUES ({}, %s)").format(
                sql.Identifier("public", name), literal(p.lower, key_type)), ("row %d of %s" % (i, p.name),))
        made.append(p)
        last = p.upper
    if default:
        cur.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(
            sql.Identifier("public", name + "_default"), sql.Identifier("public", name)))
    if grant_to:
        cur.execute(sql.SQL("GRANT SELECT, INSERT ON {} TO {}").format(
            sql.Identifier("public", name), sql.Identifier(grant_to)))
    cur.close()
    return made, last


def _after(first, interval, periods):
    from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import next_boundary
    end = first
    for _period in range(periods):
        end = next_boundary(end, interval)
    return end


def spec_of(name="ev", interval="monthly", **kw):
    return normalize_spec(dict(dict(table="public." + name, partition_key="k", strategy="range", interval=interval),
                               **kw))


def registered(conn, spec):
    """Record a table's maintenance settings, as a maintenance run does (the functions follow them)."""
    s = Session(conn)
    register(s, STATE, resolve(s, spec, STATE))


def install(conn):
    functions.ensure_functions(Session(conn), SqlTemplates.bundled(), STATE)


def run_premake(pg, db, spec, now, check=False):
    s = Session(pg.connect(db), check_mode=check)
    try:
        result = premake(s, SqlTemplates.bundled(), spec, STATE, now=now)
        result["queries"] = s.queries
        return result
    finally:
        s.close()


def run_retention(pg, db, spec, now, check=False, **kw):
    s = Session(pg.connect(db), check_mode=check)
    try:
        result = retention(s, SqlTemplates.bundled(), spec, STATE, now=now, params=pg.module_params(db), **kw)
        result["queries"] = s.queries
        return result
    finally:
        s.close()


def partitions(conn, name="ev"):
    """{partition: bound} of public.<name>."""
    return dict(rows(conn, "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                           "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
                     ("public." + name,)))


def interrupt_concurrent_detach(pg, db, partition):
    """Leave ``public.<partition>`` "detach pending", as an interrupted DETACH … CONCURRENTLY does:
    an older transaction that used the table makes its wait time out."""
    reader = pg.connect(db, autocommit=False)
    rows(reader, "SELECT count(*) FROM public.ev")
    try:
        run(pg.connect(db), "SET lock_timeout = '100ms'",
            sql.SQL("ALTER TABLE public.ev DETACH PARTITION {} CONCURRENTLY").format(sql.Identifier("public", partition)))
    except psycopg2.errors.LockNotAvailable:
        pass
    else:
        raise AssertionError("DETACH CONCURRENTLY of %s was not interrupted" % partition)
    finally:
        reader.rollback()
        reader.close()
