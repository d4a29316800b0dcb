# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The partition ladder of the forward sync function (docs/design.md, "The sync triggers").

A write routed through the twin's parent costs PostgreSQL more than the same write on the
partition itself: a routed ``INSERT … ON CONFLICT`` maps the parent's arbiter index to the
partition's for every row (a catalog scan per index), and an ``UPDATE`` or ``DELETE`` of the
parent is planned again for every row to prune its partitions. The fast forward function
therefore picks the partition itself: a binary search over the partitions' bounds, compiled
into the function as comparisons with constants, then the statement on that partition, whose
plan PostgreSQL caches like any plain table's. A row outside every listed partition (the
default partition, a gap, a partition created since) takes the routed statement.

The ladder names partitions, so the function must never outlive a change of them: its comment
records their layout (``<state>.sync_layout``), and the layout guard, an event trigger beside the
DDL guard (templates/sql/sync/layout_guard.sql.j2), refuses DDL that would drop, detach, rename or
move one of them or give it row security, and swaps in the routed body (the guarded one) in the
transaction of a change of grants. Without that guard (a role that may not create event
triggers) there is no ladder.

Only for what a comparison with constants decides exactly: a twin range-partitioned on one
column of a date, timestamp or integer type with its default operator class, every partition a
plain table, at most ``MAX_RUNGS`` of them; and only partitions without row-level security and
with the parent's grants (the application's roles write them directly).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils import bounds

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

# Each partition costs the function three statements, parsed when a connection first writes the
# table (30 partitions: 2 ms more than a hand-written trigger's first write, docs/benchmarks.md) and
# planned on first use: beyond this many partitions the function routes every write through the parent.
MAX_RUNGS = 128
LAYOUT_EVENT_TRIGGER = "partitioning_layout_guard"

# The twin's partition key when it is one plain column with its type's default btree operator
# class, and its partitions with what decides whether a write may go to one directly.
KEY_SQL = """
SELECT a.attname AS key, pg_catalog.format_type(a.atttypid, a.atttypmod) AS key_type
FROM pg_catalog.pg_partitioned_table pt
JOIN pg_catalog.pg_attribute a ON a.attrelid = pt.partrelid AND a.attnum = pt.partattrs[0]
JOIN pg_catalog.pg_opclass oc ON oc.oid = pt.partclass[0]
WHERE pt.partrelid = %(rel)s::regclass AND pt.partstrat = 'r' AND pt.partnatts = 1 AND pt.partattrs[0] <> 0
  AND oc.opcdefault AND oc.opcmethod = (SELECT oid FROM pg_catalog.pg_am WHERE amname = 'btree')
"""

# Grants are compared as text: the table's (relacl) and its columns' (attacl), a partition's with its
# parent's.
PARTS_SQL = """
SELECT c.oid, n.nspname AS schema, c.relname AS name, c.relkind AS kind, i.inhdetachpending AS detaching,
       c.relrowsecurity AS rls, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound,
       c.relacl IS NOT DISTINCT FROM p.relacl
       AND (SELECT pg_catalog.array_agg(a.attname || '=' || a.attacl::text ORDER BY a.attname)
              FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attacl IS NOT NULL)
           IS NOT DISTINCT FROM
           (SELECT pg_catalog.array_agg(a.attname || '=' || a.attacl::text ORDER BY a.attname)
              FROM pg_catalog.pg_attribute a WHERE a.attrelid = p.oid AND a.attacl IS NOT NULL) AS parents_grants
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
JOIN pg_catalog.pg_class p ON p.oid = i.inhparent
WHERE i.inhparent = %(rel)s::regclass
"""


def rungs(session, dst):
    """The ladder of ``dst`` ((schema, name)) for trigger_function.sql.j2, or None when its writes are
    all routed: dict(key=column, tree=nested nodes, partitions=their number, oids=their oids). A
    node is either dict(split=literal, below=node, above=node) — a key below ``split`` goes to
    ``below`` — or a leaf dict(lower=literal or None, upper=literal or None, part=(schema, name))."""
    rel = sql.Identifier(*dst).as_string(session.conn)
    if not session.scalar("SELECT to_regclass(%s) IS NOT NULL", (rel,)):
        return None
    key = session.query(KEY_SQL, dict(rel=rel))
    if not key or bounds.key_kind(key[0]["key_type"]) not in bounds.RANGE_KEY_KINDS + bounds.INTEGER_KINDS:
        return None
    key_type = key[0]["key_type"]
    parts = session.query(PARTS_SQL, dict(rel=rel))
    if any(p["kind"] != "r" or p["detaching"] for p in parts):
        return None
    leaves = []
    for p in parts:
        parsed = bounds.parse_bound(dst[1], p["name"], p["bound"], key_type)
        if parsed.kind != "range" or p["rls"] or not p["parents_grants"]:
            continue      # the default partition, or one the application's roles may not write directly
        leaves.append((parsed.lower, parsed.upper, (p["schema"], p["name"]), p["oid"]))
    if not leaves or len(leaves) > MAX_RUNGS:
        return None
    # MINVALUE (None) sorts first; the ranges of a table's partitions never overlap
    leaves.sort(key=lambda leaf: (leaf[0] is not None, leaf[0]))
    return dict(key=key[0]["key"], tree=_tree(leaves, key_type), partitions=len(leaves),
                oids=[leaf[3] for leaf in leaves])


def _tree(leaves, key_type):
    def lit(value):
        return None if value is None else bounds.literal(value, key_type)
    if len(leaves) == 1:
        lower, upper, part, _oid = leaves[0]
        return dict(lower=lit(lower), upper=lit(upper), part=part)
    mid = len(leaves) // 2
    return dict(split=lit(leaves[mid][0]), below=_tree(leaves[:mid], key_type), above=_tree(leaves[mid:], key_type))


def layout(session, state_schema, dst, ladder):
    """What the comment of a function with ``ladder`` records of ``dst``'s partitions that it names:
    '<twin oid>:<structure md5>:<grants md5>:<partition oids>' (``<state>.sync_layout``; the layout
    guard compares after DDL). None before the layout guard is installed (check mode: the function
    is then reported as changing, as it will)."""
    fn = sql.Identifier(state_schema, "sync_layout")
    if not session.scalar("SELECT to_regprocedure(%s) IS NOT NULL", (fn.as_string(session.conn) + "(oid, oid[])",)):
        return None
    oids = ",".join(str(o) for o in ladder["oids"])
    row = session.query(sql.SQL("SELECT r.oid::oid::bigint AS oid, {}(r.oid, %s::oid[]) AS layout "
                                "FROM (SELECT %s::regclass AS oid) AS r").format(fn),
                        ("{%s}" % oids, sql.Identifier(*dst).as_string(session.conn)))[0]
    return "%s:%s:%s" % (row["oid"], row["layout"], oids)
