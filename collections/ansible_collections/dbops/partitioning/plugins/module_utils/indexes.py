# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Indexes of a partitioned table: the statement from an index's parts, and the online build.

One implementation serves phase 1 (an index the original gains while the twin already holds
rows: prepare/twin.py) and phase 4 (the spec's ``indexes:``: maintain/optimize.py).

``index_statement`` writes ``CREATE INDEX`` from a catalog ``Index`` model (key elements with
collation, operator class and ordering, INCLUDE, predicate, method, storage parameters,
tablespace), never by editing a definition's text.

``build_online`` builds an index on a partitioned table without ever blocking the application's
writes (HP16: ``CREATE INDEX CONCURRENTLY`` does not work on a partitioned parent):

1. the parent's index ``ON ONLY`` (invalid until every partition has its index attached): a
   catalog entry, but it takes SHARE on the parent, so it runs in a short transaction under
   ``lock_timeout``, retried with jittered backoff (HP8);
2. per partition, its index ``CREATE INDEX CONCURRENTLY`` (SHARE UPDATE EXCLUSIVE on the
   partition: writes go on). It waits for older transactions like any concurrent build, so it
   runs with no ``lock_timeout`` and no ``statement_timeout`` (a role's timeout would abort a long
   build every time, HP22): a waiting SHARE UPDATE EXCLUSIVE holds up no reader and no writer;
3. ``ALTER INDEX ... ATTACH PARTITION`` (ACCESS EXCLUSIVE on the partition's new index, which
   writers of the partition need): a short transaction under ``lock_timeout`` again. When the last
   partition is attached, PostgreSQL marks the parent's index valid.

Resumable: an attached partition is skipped; a partition's index left invalid by an interrupted
``CREATE INDEX CONCURRENTLY`` (same name, ``indisvalid = false``) is dropped
``CONCURRENTLY`` and built again; a valid one is attached. A sub-partitioned partition gets the
same treatment recursively. Partitions created later get the index from PostgreSQL itself
(``CREATE TABLE ... PARTITION OF`` and ``ATTACH PARTITION`` create or attach a matching index for
every index of the parent). Statements go through ``session.execute``: in check mode they are
recorded in ``queries`` and nothing runs.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import (
    attached_indexes, index_is_valid, partitions_of, reloption_sql)
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import run_with_lock_retry

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover - reported by run_module
    sql = None


def with_options(reloptions):
    """``WITH (name = 'value', ...)`` of storage parameters (``['fillfactor=70']``), or None."""
    if not reloptions:
        return None
    return sql.SQL("WITH ({})").format(sql.SQL(", ").join(reloption_sql(o) for o in reloptions))


def index_parameters(include, reloptions, tablespace, nulls_not_distinct=False, constraint=False):
    """The clauses after an index's columns, in the order the grammar wants them: INCLUDE, NULLS
    NOT DISTINCT, WITH, TABLESPACE (``constraint``: a key constraint's ``USING INDEX TABLESPACE``)."""
    parts = []
    if include:
        parts.append(sql.SQL("INCLUDE ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in include)))
    if nulls_not_distinct:
        parts.append(sql.SQL("NULLS NOT DISTINCT"))
    opts = with_options(reloptions)
    if opts is not None:
        parts.append(opts)
    if tablespace:
        parts.append(sql.SQL("USING INDEX TABLESPACE {}" if constraint else "TABLESPACE {}").format(
            sql.Identifier(tablespace)))
    return parts


def index_statement(table, name, ix, key=None, only=False, concurrently=False):
    """CREATE INDEX ``name`` on ``table`` from the model ``ix`` (``only``: ``ON ONLY`` a partitioned
    table; ``concurrently``: on a plain table or partition). A unique index gets the partition key
    ``key`` appended when it lacks it (HP6)."""
    elements = [sql.SQL(s) for s in ix.key_specs]                 # catalog-built, trusted text
    include = list(ix.include_columns)
    if ix.is_unique and key and key not in ix.key_columns:
        elements.append(sql.Identifier(key))
        include = [c for c in include if c != key]
    head = "CREATE UNIQUE INDEX" if ix.is_unique else "CREATE INDEX"
    if concurrently:
        head += " CONCURRENTLY"
    parts = [sql.SQL(head), sql.Identifier(name),
             sql.SQL("ON ONLY {} USING {} ({})" if only else "ON {} USING {} ({})").format(
                 sql.Identifier(*table), sql.Identifier(ix.method), sql.SQL(", ").join(elements))]
    parts += index_parameters(include, ix.reloptions, ix.tablespace, nulls_not_distinct=ix.nulls_not_distinct)
    if ix.predicate:
        parts.append(sql.SQL("WHERE {}").format(sql.SQL(ix.predicate)))
    return sql.SQL(" ").join(parts)


def partition_index_name(partition_name, base):
    """The name of a partition's index: ``<partition>_<base>`` within 63 bytes."""
    return derived_name("%s_%s" % (partition_name, base), "")


def _relkind(session, schema, name):
    return session.scalar("SELECT c.relkind FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                          "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s", (schema, name))


def run_without_timeouts(session, stmt):
    """A statement that may wait long without holding up the application (CREATE/DROP INDEX
    CONCURRENTLY, ANALYZE: SHARE UPDATE EXCLUSIVE), outside a transaction block: no lock_timeout,
    no statement_timeout (HP22), both restored after."""
    if not session.conn.autocommit:
        raise PartitioningError("Internal: %s must run outside a transaction block." % session.as_text(stmt))
    if session.check_mode:
        session.execute(stmt)
        return
    saved = session.query("SELECT current_setting('lock_timeout') AS lock, current_setting('statement_timeout') AS stmt")[0]
    session.query("SET lock_timeout = 0; SET statement_timeout = 0")
    try:
        session.execute(stmt)
    finally:
        session.query(sql.SQL("SET lock_timeout = {}; SET statement_timeout = {}").format(
            sql.Literal(saved["lock"]), sql.Literal(saved["stmt"])))


def build_online(session, table, name, ix, key=None, base=None, lock_timeout_ms=50, retries=30):
    """Build ``name`` (model ``ix``) on the partitioned ``table`` online (see the module docstring);
    the partitions' indexes are named ``partition_index_name(partition, base or name)``. Returns
    what was (or, in check mode, would be) done, one line each."""
    schema = table[0]
    done = []

    def short(stmt, what):
        run_with_lock_retry(session, lambda s: s.execute(stmt), lock_timeout_ms, retries, relations=[table], what=what)
        done.append(what)

    def concurrently(stmt, what):
        run_without_timeouts(session, stmt)
        done.append(what)

    if index_is_valid(session, schema, name) is None:
        short(index_statement(table, name, ix, key, only=True), "index " + qualified(schema, name))
    attached = attached_indexes(session, schema, name)
    for partition in partitions_of(session, *table):
        part = (partition.schema, partition.name)
        if attached.get(part):
            continue
        child = partition_index_name(partition.name, base or name)
        if _relkind(session, *part) == "p":
            done.extend(build_online(session, part, child, ix, key, base, lock_timeout_ms, retries))
        else:
            valid = index_is_valid(session, partition.schema, child)
            if valid is False:
                concurrently(sql.SQL("DROP INDEX CONCURRENTLY {}").format(sql.Identifier(partition.schema, child)),
                             "dropped invalid index " + qualified(partition.schema, child))
            if valid is not True:
                concurrently(index_statement(part, child, ix, key, concurrently=True),
                             "index " + qualified(partition.schema, child))
        short(sql.SQL("ALTER INDEX {} ATTACH PARTITION {}").format(
            sql.Identifier(schema, name), sql.Identifier(partition.schema, child)),
            "attached %s to %s" % (qualified(partition.schema, child), qualified(schema, name)))
    return done
