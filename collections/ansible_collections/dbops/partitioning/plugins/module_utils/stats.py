# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Read-only facts about managed tables: phase, progress, partitions, sizes, health.

Nothing here writes: ``partition_stats`` and ``status.yml`` are safe on a production
primary at any time (catalog reads, statistics views and the state schema only). The partitions
and index use are read through the runbook's monitoring functions, in the state schema when they
are installed and current, else created for the session alone in ``pg_temp``
(maintain/functions.reading_schema).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.functions import reading_schema
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

# Which relation is the partitioned one in each phase (before switchover the twin,
# afterwards the table under its own name).
_TWIN_PHASES = ("prepared", "copying", "copied", "verified")

# The partitions and the index use come from the runbook's monitoring functions (templates/sql/
# maintenance/50_monitoring.sql.j2): what an operator sees with SELECT * FROM get_partition_stats()
# is what status reports. Columns kept in the facts, by their names there.
PARTITION_COLUMNS = ("partition_name", "is_default", "bound", "lower_bound", "upper_bound", "rows_estimate",
                     "live_rows", "dead_rows", "total_bytes", "table_bytes", "index_bytes", "seq_scans",
                     "seq_rows_read", "index_scans", "last_vacuum", "last_analyze")


_DATE = re.compile(r"^\d{4}-\d\d-\d\d")


def _partition(row):
    """One partition's facts: the columns of get_partition_stats (partition_name as name), times as text."""
    out = dict((k, row[k]) for k in PARTITION_COLUMNS)
    out["name"] = out.pop("partition_name")
    for k in ("last_vacuum", "last_analyze"):
        out[k] = str(out[k]) if out[k] is not None else None
    return out


def _index_use(rows):
    """Index use summed over the partitions (analyze_partition_performance's index rows): per index
    of the table, its scans, bytes and whether every partition's index is valid."""
    out = {}
    for r in rows:
        ix = out.setdefault(r["object"], dict(index_name=r["object"], scans=0, bytes=0, valid=True, unused_on=[]))
        ix["scans"] += r["scans"]
        ix["bytes"] += r["bytes"]
        ix["valid"] = ix["valid"] and r["finding"] != "invalid"
        if r["finding"] == "unused":
            ix["unused_on"].append(r["partition_name"])
    return [out[k] for k in sorted(out)]


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
                 default_partition_rows=None, future_partitions=None, report_queries=[])
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
    parent = sql.Identifier(schema, partitioned).as_string(session.conn)
    fn_schema = reading_schema(session, SqlTemplates.bundled(), state_schema)
    parts = [_partition(p) for p in session.query(sql.SQL("SELECT * FROM {}(%s)").format(
        sql.Identifier(fn_schema, "get_partition_stats")), (parent,))]
    facts["partitions"] = parts
    facts["total_bytes"] = sum(p["total_bytes"] for p in parts)
    facts["rows_estimate"] = sum(p["rows_estimate"] for p in parts)
    performance = session.query(sql.SQL("SELECT * FROM {}(%s)").format(
        sql.Identifier(fn_schema, "analyze_partition_performance")), (parent,))
    facts["indexes"] = _index_use([r for r in performance if r["kind"] == "index"])
    facts["report_queries"] = [dict(name=r["object"], partitions_read=r["partitions_read"],
                                    partitions_total=r["partitions_total"], finding=r["finding"])
                               for r in performance if r["kind"] == "report_query"]
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
    # Range partitions whose lower bound lies in the future. get_partition_stats prints bounds
    # in ISO form in UTC, which sorts chronologically as text for date, timestamp and timestamptz
    # keys alike, so one comparison serves every key type. Integer ranges (a numeric width: bounds
    # '0', '1000000') have no future: None, and no premake check; only bounds that start with a
    # date count.
    now = session.scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')")
    timed = [p["lower_bound"] for p in parts if p["lower_bound"] and _DATE.match(p["lower_bound"])]
    timed = dict(future=sum(1 for b in timed if b > now), timed=len(timed))
    facts["future_partitions"] = timed["future"] if timed["timed"] else None
    if premake and facts["future_partitions"] is not None and facts["future_partitions"] < premake:
        facts["health"].append("only %s future partitions ready (premake %s): run maintenance"
                               % (facts["future_partitions"], premake))
    return facts


def all_facts(session, state_schema, table_names=None, premake_by_table=None):
    premake_by_table = premake_by_table or {}
    if not table_names:
        table_names = [r["table_name"] for r in state_store.all_tables(session, state_schema)]
    return [table_facts(session, state_schema, t, premake_by_table.get(t)) for t in table_names]
