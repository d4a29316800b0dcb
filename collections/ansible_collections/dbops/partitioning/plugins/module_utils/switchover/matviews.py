# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Materialized views pre-built beside the old ones before the swap's lock (HP9).

A materialized view that reads the active table is bound to its OID: the swap must build it
again on the standby. Its query can take seconds, which must not happen under ACCESS EXCLUSIVE:
``prebuild`` builds each one beforehand as ``<name>_swap`` on the standby, with its indexes,
and the swap renames it into place (``statements.swap_statements``). One that cannot be
pre-built (it reads the table through other views, an index definition that cannot be
renamed) is built under the lock instead: slower, still correct, and reported.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import (
    describe_relation, describe_table, row_type)
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.statements import (
    PREBUILT_SUFFIX, create_view_sql)

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    psycopg2 = None
    sql = None

_NOT_ALIAS = set("""WHERE GROUP ORDER JOIN LEFT RIGHT INNER FULL CROSS ON UNION LIMIT HAVING WINDOW EXCEPT
INTERSECT OFFSET FETCH FOR USING NATURAL LATERAL TABLESAMPLE AS""".split())


def retarget_definition(definition, old_qname, new_qname, alias):
    """Point a deparsed query at another table of the same shape.

    ``FROM public.revenues`` -> ``FROM public.revenues_partitioned revenues`` (the alias keeps the
    column references ``revenues.amount`` valid); an existing alias (``public.revenues r``) is kept.
    """
    pat = re.compile(re.escape(old_qname) + r'(?![\w$"])')
    out, pos = [], 0
    for m in pat.finditer(definition):
        out.append(definition[pos:m.start()])
        rest = definition[m.end():]
        nxt = re.match(r'\s+("(?:[^"]|"")+"|[A-Za-z_][\w$]*)', rest)
        has_alias = bool(nxt) and (nxt.group(1).startswith('"') or nxt.group(1).upper() not in _NOT_ALIAS)
        out.append(new_qname if has_alias else "%s %s" % (new_qname, alias))
        pos = m.end()
    out.append(definition[pos:])
    return "".join(out)


def _index_sql(session, definition, schema, old_index, old_rel, new_index, new_rel):
    """A matview index definition (pg_get_indexdef) renamed onto another relation."""
    def q(name):
        return session.scalar("SELECT quote_ident(%s)", (name,))

    head = re.match(r"^(CREATE (?:UNIQUE )?INDEX )(\S+|\"(?:[^\"]|\"\")+\") ON (?:ONLY )?(\S+) ", definition)
    if not head or head.group(2) != q(old_index) or head.group(3) != "%s.%s" % (q(schema), q(old_rel)):
        return None
    return sql.SQL(head.group(1)) + sql.Identifier(new_index) + sql.SQL(" ON ") + \
        sql.Identifier(schema, new_rel) + sql.SQL(" " + definition[head.end():])


def prebuild(session, pair, reuse=False):
    """Build every materialized view that reads the active table directly beside the old one,
    on the standby, with its indexes. Returns {matview name: prebuilt name} of those ready;
    the others are built inside the swap (their query runs under the lock: reported).

    Runs before the lock; an earlier interrupted run's pre-built view is replaced. ``reuse``
    (waiting for approval): one built by an earlier run is kept as it is.
    """
    ready = {}
    for v in pair.active.views:
        if v.kind != "m" or not v.reads_table or v.depth != 1:
            continue
        name = derived_name(v.name, PREBUILT_SUFFIX)
        definition = retarget_definition(v.definition, pair.active.deparsed_name, pair.standby.deparsed_name,
                                         pair.active.quoted[1])
        index_sqls = [_index_sql(session, ix.definition, v.schema, ix.name, v.name,
                                 derived_name(ix.name, PREBUILT_SUFFIX), name) for ix in v.indexes]
        if None in index_sqls:
            continue
        if reuse and describe_relation(session, v.schema, name) is not None:
            ready[v.name] = name
            continue
        try:
            with session.transaction():
                session.execute(sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}").format(sql.Identifier(v.schema, name)))
                session.execute(create_view_sql(v, definition, name))
                for stmt in index_sqls:
                    session.execute(stmt)
                # the pre-built view must have the old one's columns exactly (names and types, in order)
                if not session.check_mode and row_type(session, v.schema, name) != row_type(session, v.schema, v.name):
                    raise PartitioningError("columns differ")
        except (PartitioningError, psycopg2.Error):
            continue   # built under the lock instead (slower, still correct)
        ready[v.name] = name
    return ready


def drop_prebuilt(session, schema, table):
    """DROP statements for the materialized views pre-built on ``table`` for a swap that will not
    happen (rollback before the switchover); anything else depending on it is left alone."""
    info = describe_table(session, schema, table)
    return [sql.SQL("DROP MATERIALIZED VIEW IF EXISTS {}").format(sql.Identifier(v.schema, v.name))
            for v in (info.views if info else []) if v.kind == "m" and v.name.endswith(PREBUILT_SUFFIX)]
