# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Facts about managed tables: phase, progress, partitions, sizes, alerts and one health verdict.

No table is ever touched: ``partition_stats`` and ``status.yml`` are safe on a production
primary at any time (catalog reads, statistics views and the state schema; the one write, when
asked, is a snapshot of the sizes appended to the state schema's history). The partitions and
index use are read through the runbook's monitoring functions, in the state schema when they are
installed and current, else created for the session alone in ``pg_temp``
(maintain/functions.reading_schema).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re
from dataclasses import dataclass
from typing import Optional

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.functions import reading_schema
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.target import TWIN_PHASES
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

# The partitions and the index use come from the runbook's monitoring functions (templates/sql/
# maintenance/50_monitoring.sql.j2): what an operator sees with SELECT * FROM get_partition_stats()
# is what status reports. Columns kept in the facts, by their names there.
PARTITION_COLUMNS = ("partition_name", "is_default", "bound", "lower_bound", "upper_bound", "rows_estimate",
                     "live_rows", "dead_rows", "total_bytes", "table_bytes", "index_bytes", "seq_scans",
                     "seq_rows_read", "index_scans", "last_vacuum", "last_analyze")


_DATE = re.compile(r"^\d{4}-\d\d-\d\d")
# Snapshots of the sizes a status run returns (the report's growth chart).
HISTORY_POINTS = 200


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


@dataclass
class Expected:
    """What a table's spec expects of it (status checks the facts against it)."""
    premake: Optional[int] = None       # future partitions kept ready (range tables)
    retention: Optional[int] = None     # months kept attached


# The verdict is the worst level of the table's alerts: ok < warning < critical. Critical: the data
# or the application is at risk now (verification differences, an invalid index the planner cannot
# use, no partition for the current instant so new rows land in the default partition).
LEVELS = ("ok", "warning", "critical")


def _alert(facts, level, message):
    facts["alerts"].append(dict(level=level, message=message))
    facts["health"].append(message)
    if LEVELS.index(level) > LEVELS.index(facts["verdict"]):
        facts["verdict"] = level


def table_facts(session, state_schema, table_name, expected=None, now=None, record_history=False):
    """Facts about one table, managed or not; ``expected`` (Expected) adds the premake and retention
    checks, ``now`` (aware datetime; default the server's now) is the instant they are checked at,
    ``record_history`` appends a snapshot of the sizes to the state schema's history first (where
    the monitoring functions are installed and current)."""
    expected = expected or Expected()
    schema, name = parse_table(table_name)
    canonical = qualified(schema, name)
    row = state_store.get_table(session, state_schema, canonical)
    # Every key is always present, so playbooks and AWX surveys can read them without guards.
    facts = dict(table=canonical, managed=row is not None, phase=row["phase"] if row else None, health=[],
                 alerts=[], verdict="ok", partitioned_table=None, progress=None, verification=None, verified_at=None,
                 switched_at=None, swap_lock_ms=None, partitions=[], indexes=[], total_bytes=0, rows_estimate=0,
                 default_partition_rows=None, future_partitions=None, premake=expected.premake,
                 retention=expected.retention, expired_partitions=None, oldest_partition=None, report_queries=[],
                 history=[], history_recorded=0)
    if row and row["phase"] in TWIN_PHASES:       # before the switchover the twin is the partitioned one
        partitioned = row["twin_relname"]
    else:
        partitioned = name
    rel = describe_relation(session, schema, partitioned)
    facts["partitioned_table"] = qualified(schema, partitioned) if rel else None
    if row:
        _migration_facts(session, state_schema, canonical, row, facts)
    if rel is None or rel.kind != "p":
        return facts
    parent = sql.Identifier(schema, partitioned).as_string(session.conn)
    fn_schema = reading_schema(session, SqlTemplates.bundled(), state_schema)
    if record_history and fn_schema == state_schema and not session.check_mode:
        facts["history_recorded"] = session.scalar(sql.SQL("SELECT {}(%s, 'status')").format(
            sql.Identifier(fn_schema, "record_partition_sizes")), (parent,))
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
            _alert(facts, "critical", "index %s has an invalid partition index (an interrupted concurrent build: "
                                      "run phase 4 again)" % ix["index_name"])
    for q in facts["report_queries"]:
        if not q["finding"].startswith("prunes"):
            _alert(facts, "warning", "report query %s %s" % (q["name"], q["finding"]))
    default = [p for p in parts if p["is_default"]]
    if default:
        rows = _default_rows(session, schema, default[0]["name"])
        facts["default_partition_rows"] = rows
        if rows:
            _alert(facts, "warning", "%d rows in the default partition %s (keys outside every range)"
                   % (rows, default[0]["name"]))
    _time_facts(session, fn_schema, parent, parts, expected, now, facts)
    facts["history"] = _history(session, state_schema, parent)
    return facts


def _migration_facts(session, state_schema, canonical, row, facts):
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
            _alert(facts, "warning", "backfill paused: %s" % (p["waiting_for"] or "by operator"))
        if p["pending_keys"]:
            _alert(facts, "warning", "%d keys wait for reconciliation" % p["pending_keys"])
    verification = row.get("verification") or {}
    facts["verification"] = verification.get("status")
    facts["verified_at"] = str(row["verified_at"]) if row.get("verified_at") else None
    facts["switched_at"] = str(row["switched_at"]) if row.get("switched_at") else None
    facts["swap_lock_ms"] = row.get("swap_lock_ms")
    if verification.get("status") == "different":
        _alert(facts, "critical", "last verification found differences: see partition_verify")


def _time_facts(session, fn_schema, parent, parts, expected, now, facts):
    """Future partitions against premake, the oldest partition against retention, and whether a
    partition holds the current instant. get_partition_stats prints bounds in ISO form in UTC,
    which sorts chronologically as text for date, timestamp and timestamptz keys alike. Integer
    ranges (a numeric width: bounds '0', '1000000') have no time: None, and no check."""
    now_text = session.scalar("SELECT to_char(coalesce(%s, now()) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')",
                              (now,))
    timed = [p for p in parts if p["lower_bound"] and _DATE.match(p["lower_bound"])]
    if not timed:
        return
    facts["future_partitions"] = sum(1 for p in timed if p["lower_bound"][:19] > now_text)
    oldest = timed[0]
    facts["oldest_partition"] = dict(name=oldest["name"], lower_bound=oldest["lower_bound"],
                                     upper_bound=oldest["upper_bound"])
    current = [p for p in timed if p["lower_bound"][:19] <= now_text and (p["upper_bound"] is None
                                                                          or p["upper_bound"][:19] > now_text)]
    if not current and any(p["is_default"] for p in parts):
        _alert(facts, "critical", "no partition holds %s: new rows land in the default partition (run maintenance)"
               % now_text)
    elif not current:
        _alert(facts, "critical", "no partition holds %s: inserts of now fail (run maintenance)" % now_text)
    if expected.premake and facts["future_partitions"] < expected.premake:
        _alert(facts, "warning", "only %s future partitions ready (premake %s): run maintenance"
               % (facts["future_partitions"], expected.premake))
    if expected.retention:
        expired = [r["partition_name"] for r in session.query(sql.SQL(
            "SELECT partition_name FROM {}(%s, %s, coalesce(%s, now())) WHERE expired").format(
                sql.Identifier(fn_schema, "retention_plan")), (parent, expected.retention, now))]
        facts["expired_partitions"] = len(expired)
        if expired:
            _alert(facts, "warning", "%d partitions past retention (%d months), oldest %s: run maintenance"
                   % (len(expired), expected.retention, expired[0]))


def _history(session, state_schema, parent):
    """The table's recorded sizes over time, oldest first: every snapshot while there are at most
    HISTORY_POINTS of them, else the last of each day (the most recent HISTORY_POINTS days)."""
    if state_store.installed_version(session, state_schema) < 4:
        return []
    rows = session.query(sql.SQL("""
        WITH snapshots AS (
            SELECT h.at, sum(h.total_bytes)::bigint AS total_bytes, sum(h.rows_estimate)::bigint AS rows_estimate,
                   count(*)::integer AS partitions
              FROM {history} h
             WHERE h.table_name = (SELECT format('%%I.%%I', n.nspname, c.relname) FROM pg_catalog.pg_class c
                                     JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                                    WHERE c.oid = %(parent)s::regclass)
             GROUP BY h.at)
        SELECT to_char(s.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS at, s.total_bytes, s.rows_estimate,
               s.partitions
          FROM snapshots s
         WHERE (SELECT count(*) FROM snapshots) <= {points}
            OR s.at IN (SELECT max(d.at) FROM snapshots d GROUP BY date_trunc('day', d.at AT TIME ZONE 'UTC'))
         ORDER BY s.at DESC LIMIT {points}""").format(
        history=sql.Identifier(state_schema, "partition_size_history"), points=sql.Literal(HISTORY_POINTS)),
        dict(parent=parent))
    return list(reversed(rows))


def all_facts(session, state_schema, table_names=None, expected_by_table=None, now=None, record_history=False):
    expected_by_table = expected_by_table or {}
    if not table_names:
        table_names = [r["table_name"] for r in state_store.all_tables(session, state_schema)]
    return [table_facts(session, state_schema, t, expected_by_table.get(t), now, record_history)
            for t in table_names]
