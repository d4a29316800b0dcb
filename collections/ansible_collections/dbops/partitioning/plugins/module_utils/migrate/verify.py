# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification: the original and the twin are equal in one snapshot (docs/design.md).

The sync triggers write both tables in the application's own transaction, so a single
``REPEATABLE READ`` snapshot shows them equal even while writes continue. Each comparison
reads count and checksum (``sum`` of a 64-bit hash of the row's text form, over every
column in the original's order) of the same rows on both sides in one snapshot; when they
differ, the differing keys are listed with ``EXCEPT ALL`` both ways (capped). Keys that are
pending reconciliation in that same snapshot are not differences yet: they are reconciled
and the range is compared again.

* per batch (``verify_batches``): the batch's key range;
* at the end (``partition_verify``): one range per leaf partition of the twin, resumable
  (``<state>.verify_ranges``), plus a total row count.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.backfill import pk_json, range_condition
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.reconcile import reconcile

try:
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover
    sql = None
    Json = None

MAX_DIFFERENCES = 100
RETRIES = 3


def _row_text(ctx, alias):
    return sql.SQL("ROW({})::text").format(sql.SQL(", ").join(
        sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(c)) for c in ctx.all_cols))


def _stats(session, ctx, rel, where, params):
    return session.query(sql.SQL(
        "SELECT count(*) AS n, coalesce(sum(pg_catalog.hashtextextended({}, 0)), 0) AS checksum "
        "FROM {} AS o WHERE {}").format(_row_text(ctx, "o"), rel, where), params)[0]


def _differences(session, ctx, src_rel, src_where, dst_rel, dst_where, params, limit):
    """Keys whose rows differ, with the side(s) they are on: in the current snapshot."""
    def side(a_rel, a_where, b_rel, b_where):
        return sql.SQL("SELECT k FROM (SELECT {pk_a} AS k, {row_a} AS r FROM {a} AS o WHERE {wa} "
                       "EXCEPT ALL SELECT {pk_b}, {row_b} FROM {b} AS o WHERE {wb}) AS x LIMIT %(cap)s").format(
            pk_a=pk_json(ctx, "o"), row_a=_row_text(ctx, "o"), a=a_rel, wa=a_where,
            pk_b=pk_json(ctx, "o"), row_b=_row_text(ctx, "o"), b=b_rel, wb=b_where)
    p = dict(params, cap=limit)
    only_src = [r["k"] for r in session.query(side(src_rel, src_where, dst_rel, dst_where), p)]
    only_dst = [r["k"] for r in session.query(side(dst_rel, dst_where, src_rel, src_where), p)]
    out = {}
    for k in only_src:
        out.setdefault(json.dumps(k, sort_keys=True), dict(key=k, side="original"))
    for k in only_dst:
        c = json.dumps(k, sort_keys=True)
        if c in out:
            out[c]["side"] = "both (rows differ)"
        else:
            out[c] = dict(key=k, side="twin")
    return list(out.values())[:limit]


def _pending_keys(session, ctx):
    return set(json.dumps(r["pk"], sort_keys=True) for r in session.query(sql.SQL(
        "SELECT pk FROM {} WHERE table_name = %s").format(sql.Identifier(ctx.state_schema, "pending_keys")),
        (ctx.table_name,)))


def compare(session, ctx, src_rel, src_where, dst_rel, dst_where, params=None, limit=MAX_DIFFERENCES):
    """Compare once in one REPEATABLE READ snapshot. Returns a dict: ok, rows_source,
    rows_target, differences (list of {key, side}), pending (differing keys pending
    reconciliation in the same snapshot)."""
    params = params or {}
    with session.transaction():
        session.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        a = _stats(session, ctx, src_rel, src_where, params)
        b = _stats(session, ctx, dst_rel, dst_where, params)
        res = dict(ok=a["n"] == b["n"] and a["checksum"] == b["checksum"], rows_source=a["n"],
                   rows_target=b["n"], differences=[], pending=0)
        if not res["ok"]:
            res["differences"] = _differences(session, ctx, src_rel, src_where, dst_rel, dst_where, params, limit)
            pending = _pending_keys(session, ctx)
            res["pending"] = sum(1 for d in res["differences"]
                                 if json.dumps(d["key"], sort_keys=True) in pending)
    return res


def compare_settled(session, ctx, src_rel, src_where, dst_rel, dst_where, params=None):
    """``compare``; while every difference is a pending key, reconcile and compare again."""
    res = None
    for _ in range(RETRIES + 1):
        res = compare(session, ctx, src_rel, src_where, dst_rel, dst_where, params)
        if res["ok"] or res["pending"] < len(res["differences"]) or not res["differences"]:
            return res
        reconcile(session, ctx)
    return res


def verify_batch(session, ctx, lower, upper):
    """Count and checksum of one batch's key range ``(lower, upper]`` in both tables."""
    if upper is None:
        return dict(ok=True, rows_source=0, rows_target=0, differences=[], pending=0)
    params = dict(lo=Json(lower) if lower is not None else None, hi=Json(upper))
    where = range_condition(ctx, "o", lower is not None)
    res = compare_settled(session, ctx, sql.Identifier(*ctx.src), where, sql.Identifier(*ctx.dst), where, params)
    if not res["ok"] and res["pending"] < len(res["differences"]):
        raise PartitioningError(
            "%s: the batch (%s, %s] differs between the original and the twin: %s rows vs %s rows; "
            "differing keys: %s. The backfill stopped; see docs/runbooks/phase2.md." % (
                ctx.table_name, json.dumps(lower), json.dumps(upper), res["rows_source"], res["rows_target"],
                format_differences(res["differences"])), differences=res["differences"])
    return res


def format_differences(diffs, limit=20):
    text = "; ".join("%s (%s)" % (json.dumps(d["key"], sort_keys=True), d["side"]) for d in diffs[:limit])
    if len(diffs) > limit:
        text += "; ... %d more" % (len(diffs) - limit)
    return text


# --- full verification ------------------------------------------------------------------------

def partition_ranges(session, ctx):
    """One range per leaf partition of the twin: (name, oid, condition on the original).

    The condition is PostgreSQL's own partition constraint of the leaf
    (``pg_get_partition_constraintdef``: bounds and, for a default partition, the negation
    of every sibling's), applied to the original's rows."""
    return session.query(
        "SELECT c.relname AS name, c.oid, c.relnamespace::regnamespace::text AS schema_text, "
        "       pg_get_partition_constraintdef(c.oid) AS cond "
        "FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid "
        "WHERE t.isleaf ORDER BY c.relname", (sql.Identifier(*ctx.dst).as_string(session.conn),))


def _leaf_ident(ctx, session, oid):
    row = session.query("SELECT n.nspname AS s, c.relname AS r FROM pg_class c JOIN pg_namespace n "
                        "ON n.oid = c.relnamespace WHERE c.oid = %s", (oid,))[0]
    return sql.Identifier(row["s"], row["r"])


def start_run(session, ctx, row, full):
    """The verification run to continue (its id), or a new one."""
    current = row.get("verification") or {}
    if not full and current.get("status") == "running" and current.get("run_id"):
        return current["run_id"], True
    run_id = session.scalar(sql.SQL("INSERT INTO {} (table_name, action, status) VALUES (%s, 'verify', 'running') "
                                    "RETURNING id").format(sql.Identifier(ctx.state_schema, "runs")),
                            (ctx.table_name,))
    state_store.update_table(session, ctx.state_schema, ctx.table_name,
                             verification=dict(status="running", run_id=run_id))
    return run_id, False


def done_ranges(session, ctx, run_id):
    return set(r["range_name"] for r in session.query(sql.SQL(
        "SELECT range_name FROM {} WHERE table_name = %s AND run_id = %s AND status = 'ok'").format(
            sql.Identifier(ctx.state_schema, "verify_ranges")), (ctx.table_name, run_id)))


def record_range(session, ctx, run_id, name, res):
    session.execute(sql.SQL(
        "INSERT INTO {} (table_name, range_name, run_id, status, rows_source, rows_target, differences) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (table_name, run_id, range_name) DO UPDATE SET "
        "status = EXCLUDED.status, rows_source = EXCLUDED.rows_source, rows_target = EXCLUDED.rows_target, "
        "differences = EXCLUDED.differences, checked_at = now()").format(
            sql.Identifier(ctx.state_schema, "verify_ranges")),
        (ctx.table_name, name, run_id, "ok" if res["ok"] else "different", res["rows_source"], res["rows_target"],
         Json(res["differences"])), record=False)


TOTAL_RANGE = "(all rows)"


def verify_table(session, ctx, row, full=False, before_range=None):
    """Full verification, range by range; records every range and the outcome.

    Returns dict(status 'ok'|'different', run_id, ranges (checked now), skipped (already
    verified in this run), rows, differences). ``before_range(name)`` is a test hook."""
    reconcile(session, ctx)
    run_id, resumed = start_run(session, ctx, row, full)
    already = done_ranges(session, ctx, run_id) if resumed else set()
    checked, skipped, differences, rows = [], [], [], 0
    ranges = [(r["name"], _leaf_ident(ctx, session, r["oid"]), r["cond"]) for r in partition_ranges(session, ctx)]
    ranges.append((TOTAL_RANGE, None, None))
    for name, leaf, cond in ranges:
        if name in already:
            skipped.append(name)
            continue
        if before_range is not None:
            before_range(name)
        if leaf is None:
            with session.transaction():
                session.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                a = session.scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*ctx.src)))
                b = session.scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*ctx.dst)))
            res = dict(ok=a == b, rows_source=a, rows_target=b, differences=[], pending=0)
        else:
            where = sql.SQL(cond) if cond else sql.SQL("true")
            res = compare_settled(session, ctx, sql.Identifier(*ctx.src), where, leaf, sql.SQL("true"))
            if not res["ok"] and res["differences"] and res["pending"] == len(res["differences"]):
                # Every difference is a key an open transaction still holds: not settled, not a
                # difference. The run stays open; the next call resumes at this range.
                raise PartitioningError(
                    "%s: %d key(s) of range %s are held by open transactions and could not be reconciled "
                    "yet: %s. Run the verification again when those transactions have ended."
                    % (ctx.table_name, len(res["differences"]), name, format_differences(res["differences"])),
                    differences=res["differences"])
            rows += res["rows_source"]
        record_range(session, ctx, run_id, name, res)
        checked.append(dict(range=name, ok=res["ok"], rows_source=res["rows_source"],
                            rows_target=res["rows_target"]))
        if not res["ok"]:
            differences.extend(dict(d, range=name) for d in res["differences"])
            if not res["differences"]:
                differences.append(dict(key=None, side="row counts differ: %s vs %s"
                                        % (res["rows_source"], res["rows_target"]), range=name))
    status = "ok" if not differences else "different"
    summary = dict(status=status, run_id=run_id, ranges=len(ranges), rows=rows,
                   differences=differences[:MAX_DIFFERENCES])
    with session.transaction():
        fields = dict(verification=summary)
        if status == "ok":
            fields.update(phase="verified", verified_at=session.scalar("SELECT now()"))
        elif row["phase"] == "verified":
            fields.update(phase="copied")  # a later full check failed: phase 3 must refuse again
        state_store.update_table(session, ctx.state_schema, ctx.table_name, **fields)
        session.execute(sql.SQL("UPDATE {} SET status = %s, finished_at = now(), details = %s WHERE id = %s").format(
            sql.Identifier(ctx.state_schema, "runs")), ("ok" if status == "ok" else "failed", Json(summary), run_id),
            record=False)
    return dict(summary, checked=checked, skipped=skipped)
