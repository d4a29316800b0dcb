# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification: the original and the twin are equal in one snapshot (docs/design.md).

Each comparison is ``compare.compare_tables`` (one snapshot; count and checksum over every
column in the original's order; the differing keys listed when they differ). Keys that are
pending reconciliation in that same snapshot are not differences yet: they are reconciled
and the range is compared again.

* during the copy (``verify_batches``): the copied key ranges, behind the copy, on their own
  connection (``Verifier``); with every range verified the table is verified when the copy ends;
* at the end (``partition_verify``): one range per leaf partition of the twin, resumable
  (``<state>.verify_ranges``), plus a total row count.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import threading

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import partitions_of
from ansible_collections.dbops.partitioning.plugins.module_utils.compare import MAX_DIFFERENCES, compare_tables
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.keys import key_in_range
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.ranges import get_ranges, ranges_table
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.reconcile import reconcile

try:
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover
    sql = None
    Json = None

RETRIES = 3


def compare(session, ctx, src_rel, src_where, dst_rel, dst_where, params=None):
    """The original's and the twin's selected rows in one snapshot (``compare.compare_tables``),
    as a dict: ok, rows_source, rows_target, differences (list of {key, side}, capped), pending
    (differing keys pending reconciliation in the same snapshot)."""
    res = compare_tables(session, src_rel, dst_rel, ctx.all_cols, ctx.pk_cols, src_where, dst_where, params,
                         pending=(ctx.state_schema, ctx.table_name), list_differences=MAX_DIFFERENCES)
    return dict(ok=res.equal, rows_source=res.rows_a, rows_target=res.rows_b, differences=res.differences,
                pending=res.pending_differences)


def compare_settled(session, ctx, src_rel, src_where, dst_rel, dst_where, params=None):
    """``compare``; while every difference is a pending key, reconcile and compare again."""
    res = None
    for _unused in range(RETRIES + 1):
        res = compare(session, ctx, src_rel, src_where, dst_rel, dst_where, params)
        if res["ok"] or res["pending"] < len(res["differences"]) or not res["differences"]:
            return res
        reconcile(session, ctx)
    return res


def verify_batch(session, ctx, lower, upper, no_upper=False):
    """Count and checksum of the key range ``(lower, upper]`` (``no_upper``: every key above
    ``lower``) in both tables. Raises when they differ in keys that are not pending."""
    if upper is None and not no_upper:
        return dict(ok=True, rows_source=0, rows_target=0, differences=[], pending=0)
    params = dict(lo=Json(lower) if lower is not None else None, hi=Json(upper) if upper is not None else None)
    where = key_in_range(ctx.pk_cols, ctx.src, "o", lower is not None, has_upper=not no_upper)
    res = compare_settled(session, ctx, ctx.src, where, ctx.dst, where, params)
    if not res["ok"] and res["pending"] < len(res["differences"]):
        raise PartitioningError(
            "%s: the key range (%s, %s] differs between the original and the twin: %s rows vs %s rows; "
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
    """One range per partition of the twin: (its name, the partition, the condition on the original).

    The condition is PostgreSQL's own partition constraint of the partition
    (``pg_get_partition_constraintdef``: its bounds and, for a default partition, the negation
    of every sibling's), applied to the original's rows."""
    return [(p.name, (p.schema, p.name), p.constraint) for p in partitions_of(session, *ctx.dst)]


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
    ranges = partition_ranges(session, ctx)
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
            res = compare_settled(session, ctx, ctx.src, where, leaf, sql.SQL("true"))
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


# --- during the copy ---------------------------------------------------------------------------

VERIFY_CHUNK_ROWS = 50000


class Verifier:
    """Compares the key ranges the copy has committed, on a connection of its own, behind the
    copy (``verify_batches``): each backfill range's ``(verified_key, checkpoint]`` once at least
    ``chunk_rows`` rows are waiting or the range is done (then up to its upper key). Progress
    is the range's ``verified_key`` (state/003), so a resumed copy verifies on from there.

    A key range is compared in one snapshot like any other (``verify_batch``); a difference
    that is not a pending key stops the copy. When every range is verified up to its upper
    key, ``finish_if_done`` compares the keys above ``backfill_upper`` and the table is
    verified without a second pass over it."""

    def __init__(self, open_session, ctx, interval_s=0.2, chunk_rows=VERIFY_CHUNK_ROWS):
        self.open_session, self.ctx, self.interval_s, self.chunk_rows = open_session, ctx, interval_s, chunk_rows
        self.session = None
        self.stop = threading.Event()
        self.thread = None
        self.error = None
        self.rows = 0

    def start(self):
        self.session = self.open_session()
        self.session.query("SET row_security = off")
        self.thread = threading.Thread(target=self._loop, name="batch_copy-verifier", daemon=True)
        self.thread.start()

    def _loop(self):
        try:
            while not self.stop.is_set():
                if not self.step(final=False):
                    self.stop.wait(self.interval_s)
            self.step(final=True)   # the copy's tail
        except Exception as e:  # noqa: BLE001 - re-raised by copy_for
            self.error = e

    def step(self, final):
        """Verify every range whose waiting rows reach a chunk (``final``: any); True when one was."""
        did = False
        for r in get_ranges(self.session, self.ctx):
            start = r["verified_key"] if r["verified_key"] is not None else r["lower_key"]
            end = r["upper_key"] if r["done"] else r["checkpoint"]
            waiting = r["rows_copied"] - (r["verified_rows"] or 0)
            if end is None or end == start or r["verified_key"] == r["upper_key"]:
                continue
            if not r["done"] and not final and waiting < self.chunk_rows:
                continue
            res = verify_batch(self.session, self.ctx, start, end)
            if not res["ok"]:
                continue   # keys still held by open transactions: compared again later
            self.session.execute(sql.SQL(
                "UPDATE {} SET verified_key = %s, verified_rows = %s WHERE table_name = %s AND range_no = %s "
                "AND verified_key IS NOT DISTINCT FROM %s").format(ranges_table(self.ctx)),
                (Json(end), r["rows_copied"], self.ctx.table_name, r["range_no"], Json(r["verified_key"])
                 if r["verified_key"] is not None else None), record=False)
            self.rows += res["rows_source"]
            did = True
        return did

    def close(self):
        """Stop after verifying what the copy committed (its tail)."""
        self.stop.set()
        if self.thread is not None:
            self.thread.join()
        if self.session is not None:
            self.session.close()


def verify_rest(session, ctx, ranges):
    """The last part of a verification done during the copy: the keys above ``backfill_upper``
    (written by the sync trigger alone). Returns the verification summary for the state row."""
    row = state_store.get_table(session, ctx.state_schema, ctx.table_name)
    upper = row.get("backfill_upper")
    res = verify_batch(session, ctx, upper, None, no_upper=True) if upper is not None else \
        dict(ok=True, rows_source=0, differences=[])
    rows = sum(int(r["verified_rows"] or 0) for r in ranges) + res["rows_source"]
    status = "ok" if res["ok"] else "different"
    summary = dict(status=status, method="key ranges, compared during the copy", ranges=len(ranges) + 1, rows=rows,
                   differences=res["differences"][:MAX_DIFFERENCES])
    summary["run_id"] = session.scalar(sql.SQL(
        "INSERT INTO {} (table_name, action, status, finished_at, details) VALUES (%s, 'verify', %s, now(), %s) "
        "RETURNING id").format(sql.Identifier(ctx.state_schema, "runs")),
        (ctx.table_name, "ok" if res["ok"] else "failed", Json(summary)))
    return summary
