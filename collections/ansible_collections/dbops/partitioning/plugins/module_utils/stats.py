# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts about managed tables: phase, progress, partitions, sizes, health.

Nothing here writes: ``partition_stats`` and ``status.yml`` are safe on a production
primary at any time (catalog reads, statistics views and the state schema only).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation, partitions_of
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table, qualified

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

# Which relation is the partitioned one in each phase (before switchover the twin,
# afterwards the table under its own name).
_TWIN_PHASES = ("prepared", "copying", "copied", "verified")

# Sizes and use of the partitions (catalog.partitions_of lists them).
PARTITION_STATS_SQL = """
SELECT c.oid,
       greatest(c.reltuples, 0)::bigint AS rows_estimate,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       coalesce(s.seq_scan, 0) AS seq_scans,
       coalesce(s.idx_scan, 0) AS index_scans,
       coalesce(s.n_live_tup, 0) AS live_rows,
       coalesce(s.n_dead_tup, 0) AS dead_rows,
       greatest(s.last_analyze, s.last_autoanalyze) AS last_analyzed
FROM pg_class c
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
WHERE c.oid = ANY (%(oids)s)
"""
# The lower bound of a range partition whose key is a date or a timestamp, as it prints.
_DATED_LOWER_BOUND = re.compile(r"FROM \('(\d{4}-\d\d-\d\d[^']*)'\)")

INDEX_USE_SQL = """
SELECT pi.relname AS index_name,
       sum(coalesce(s.idx_scan, 0))::bigint AS scans,
       sum(pg_relation_size(ci.inhrelid))::bigint AS bytes,
       bool_and(coalesce(x.indisvalid, true)) AS valid
FROM pg_index px
JOIN pg_class pi ON pi.oid = px.indexrelid
LEFT JOIN pg_inherits ci ON ci.inhparent = px.indexrelid
LEFT JOIN pg_stat_user_indexes s ON s.indexrelid = ci.inhrelid
LEFT JOIN pg_index x ON x.indexrelid = ci.inhrelid
WHERE px.indrelid = %(parent)s
GROUP BY pi.relname
ORDER BY pi.relname
"""


def _default_rows(session, schema, name):
    """Exact row count of the default partition (it should stay small: rows there block
    new partitions for their range, HP14, docs/design.md)."""
    return session.scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name)))


def table_facts(session, state_schema, table_name, premake=None):
    """Facts about one table, managed or not."""
    schema, name = parse_table(table_name)
    canonical = qualified(schema, name)
    row = state_store.get_table(session, state_schema, canonical)
    # Every key is always present, so playbooks and AWX surveys can read them without guards.
    facts = dict(table=canonical, managed=row is not None, phase=row["phase"] if row else None, health=[],
                 partitioned_table=None, progress=None, verification=None, verified_at=None, switched_at=None,
                 swap_lock_ms=None, partitions=[], indexes=[], total_bytes=0, rows_estimate=0,
                 default_partition_rows=None, future_partitions=None)
    if row and row["phase"] in _TWIN_PHASES:
        partitioned = row["twin_relname"]
    else:
        partitioned = name
    rel = describe_relation(session, schema, partitioned)
    facts["partitioned_table"] = qualified(schema, partitioned) if rel else None
    if row:
        progress = session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s").format(
            sql.Identifier(state_schema, "progress")), (canonical,))
        if progress:
            p = progress[0]
            facts["progress"] = dict(
                rows_copied=p["rows_copied"], rows_estimated=p["rows_estimated"],
                percent=float(p["percent"]) if p["percent"] is not None else None,
                rows_per_second=int(p["rows_per_second"]) if p["rows_per_second"] is not None else None,
                eta=str(p["eta"]) if p["eta"] is not None else None, batches=p["batches"],
                batch_size=p["batch_size"], paused=p["paused"], waiting_for=p["waiting_for"],
                pending_keys=p["pending_keys"])
            if p["paused"]:
                facts["health"].append("backfill paused: %s" % (p["waiting_for"] or "by operator"))
            if p["pending_keys"]:
                facts["health"].append("%d keys wait for reconciliation" % p["pending_keys"])
        verification = row.get("verification") or {}
        facts["verification"] = verification.get("status")
        facts["verified_at"] = str(row["verified_at"]) if row.get("verified_at") else None
        facts["switched_at"] = str(row["switched_at"]) if row.get("switched_at") else None
        facts["swap_lock_ms"] = row.get("swap_lock_ms")
        if verification.get("status") == "different":
            facts["health"].append("last verification found differences: see partition_verify")
    if rel is None or rel.kind != "p":
        return facts
    partitions = partitions_of(session, schema, partitioned)
    use = dict((r["oid"], r) for r in session.query(PARTITION_STATS_SQL, dict(oids=[p.oid for p in partitions])))
    parts = []
    for p in sorted(partitions, key=lambda p: (p.bound == "DEFAULT", p.name)):
        part = dict(name=p.name, bound=p.bound, is_default=p.bound == "DEFAULT")
        part.update((k, (str(v) if k == "last_analyzed" and v is not None else v))
                    for k, v in use[p.oid].items() if k != "oid")
        parts.append(part)
    facts["partitions"] = parts
    facts["total_bytes"] = sum(p["total_bytes"] for p in parts)
    facts["rows_estimate"] = sum(p["rows_estimate"] for p in parts)
    facts["indexes"] = session.query(INDEX_USE_SQL, dict(parent=rel.oid))
    for ix in facts["indexes"]:
        if not ix["valid"]:
            facts["health"].append("index %s has an invalid partition index (a failed concurrent build)"
                                   % ix["index_name"])
    default = [p for p in parts if p["is_default"]]
    if default:
        rows = _default_rows(session, schema, default[0]["name"])
        facts["default_partition_rows"] = rows
        if rows:
            facts["health"].append("%d rows in the default partition %s (keys outside every range)"
                                   % (rows, default[0]["name"]))
    # Range partitions whose lower bound lies in the future. Bounds print in ISO form in our
    # sessions (TimeZone=UTC, DateStyle=ISO), which sorts chronologically as text for date,
    # timestamp and timestamptz keys alike, so one comparison serves every key type. Integer
    # ranges (a numeric width: bounds print as '0', '1000000') have no future: None, and no
    # premake check; only bounds that start with a date count.
    lower_bounds = [m.group(1) for m in (_DATED_LOWER_BOUND.search(p.bound) for p in partitions) if m]
    now = session.scalar("SELECT now()::text")
    facts["future_partitions"] = sum(1 for b in lower_bounds if b > now) if lower_bounds else None
    if premake and facts["future_partitions"] is not None and facts["future_partitions"] < premake:
        facts["health"].append("only %s future partitions ready (premake %s): run maintenance"
                               % (facts["future_partitions"], premake))
    return facts


def all_facts(session, state_schema, table_names=None, premake_by_table=None):
    premake_by_table = premake_by_table or {}
    if not table_names:
        table_names = [r["table_name"] for r in state_store.all_tables(session, state_schema)]
    return [table_facts(session, state_schema, t, premake_by_table.get(t)) for t in table_names]
