# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phase 2: copy the original's existing rows into the partitioned twin, exactly.

docs/design.md, "The backfill", explains why it is exact: every batch is one READ
COMMITTED transaction that reads its key range twice in one statement (the snapshot's
keys, and the rows it can lock ``FOR SHARE SKIP LOCKED``), inserts the locked rows with
``ON CONFLICT DO NOTHING``, logs the keys it saw but could not lock to ``pending_keys`` and
moves its range's checkpoint, all committed together. A kill anywhere resumes at the last
committed checkpoint; a repeated batch is harmless.

The key space ``(nothing, backfill_upper]`` is split into one or more ranges
(``<state>.backfill_ranges``, state/002) so that ``copy_workers`` connections can walk
disjoint ranges at once, each with its own checkpoint.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from dataclasses import dataclass, field
from typing import List, Tuple

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, sleep_ms
from ansible_collections.dbops.partitioning.plugins.module_utils.keys import key_in_range, key_json, key_order
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import throttle
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.reconcile import reconcile
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.verify import verify_batch

try:
    from psycopg2 import errors as psycopg2_errors
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover
    psycopg2_errors = None
    sql = None
    Json = None

COPY_PHASES = ("prepared", "copying")
DONE_PHASES = ("copied", "verified") + state_store.SWITCHED_PHASES
MIN_BATCH = 10


@dataclass
class CopyContext:
    """Everything a batch needs to know about one table (read from the state row and the catalog)."""
    state_schema: str
    table_name: str                       # canonical 'schema.table'
    src: Tuple[str, str]                  # the original
    dst: Tuple[str, str]                  # the partitioned twin
    pk_cols: List[str]
    partition_key: str
    cols: List[str] = field(default_factory=list)      # insertable (not generated)
    all_cols: List[str] = field(default_factory=list)  # every column, for checksums
    overriding: bool = False
    # Rendered batch statements by (has_lower, on_conflict): rendering builds a Jinja environment
    # and compiles the template (~90 ms per call on a loaded 2-core box): once per table, not per batch.
    batch_sql: dict = field(default_factory=dict, repr=False, compare=False)
    # Plain INSERT first (run_batch_statement): None = not checked yet; backoff after a conflict.
    fast_insert: object = field(default=None, repr=False, compare=False)
    fast_backoff: int = field(default=0, repr=False, compare=False)
    fast_fallbacks: int = field(default=0, repr=False, compare=False)


def require_row(session, state_schema, table_name, allowed):
    """The state row, or an operator error telling what to run first."""
    row = state_store.get_table(session, state_schema, table_name)
    if row is None:
        raise PartitioningError("%s is not prepared for partitioning (no state in schema %s): "
                                "run phase1_prepare first." % (table_name, state_schema))
    if row["phase"] not in allowed:
        hint = "run phase1_prepare first" if row["phase"] in ("rolled_back", "cleaned") else \
            "phase 2 is over for it"
        raise PartitioningError("%s is in phase %r; phase 2 needs one of %s (%s)."
                                % (table_name, row["phase"], ", ".join(allowed), hint), phase=row["phase"])
    return row


def guard_session(session):
    """Row-level security must never hide rows from the copy or the verification: with
    ``row_security = off`` a query that a policy would filter fails instead (roles that
    bypass RLS, the table owner without FORCE, superusers, are unaffected)."""
    session.query("SET row_security = off")


def load_context(session, state_schema, row):
    guard_session(session)
    src = (row["table_schema"], row["table_relname"])
    dst = (row["table_schema"], row["twin_relname"])
    tables = []
    for rel, what in ((src, "original table"), (dst, "partitioned twin")):
        tables.append(describe_table(session, *rel))
        if tables[-1] is None:
            raise PartitioningError("The %s %s.%s does not exist: run phase1_prepare first."
                                    % (what, rel[0], rel[1]))
    sync.refuse_if_drifted(session, state_schema, row, "Phase 2")
    original, twin = tables
    missing = [c.name for c in original.columns if twin.column(c.name) is None]
    if missing:
        raise PartitioningError("The twin %s.%s lacks columns %s of the original: run phase1_prepare again."
                                % (dst[0], dst[1], ", ".join(missing)))
    cols = [c for c in original.stored_columns if not twin.column(c).generated]
    return CopyContext(
        state_schema=state_schema, table_name=row["table_name"], src=src, dst=dst,
        pk_cols=list(row["pk_columns"]), partition_key=row["partition_key"], cols=cols,
        all_cols=[c.name for c in original.columns],
        overriding=any(twin.column(c).identity == "a" for c in cols))


# --- ranges ----------------------------------------------------------------------------------

def ranges_table(ctx):
    return sql.Identifier(ctx.state_schema, "backfill_ranges")


def ranges_of(session, state_schema, table_name):
    return session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s ORDER BY range_no").format(
        sql.Identifier(state_schema, "backfill_ranges")), (table_name,))


def get_ranges(session, ctx):
    return ranges_of(session, ctx.state_schema, ctx.table_name)


def max_key(session, ctx):
    return session.scalar(sql.SQL("SELECT {} FROM {} AS o ORDER BY {} LIMIT 1").format(
        key_json(ctx.pk_cols, "o"), sql.Identifier(*ctx.src), key_order(ctx.pk_cols, "o", desc=True)))


def estimate_rows(session, ctx):
    """reltuples when the table was analyzed; otherwise an exact count (once, at the start)."""
    est = session.scalar("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                         (sql.Identifier(*ctx.src).as_string(session.conn),))
    if est is None or est < 0:
        est = session.scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*ctx.src)))
    return int(est)


def split_points(session, ctx, upper, workers, estimated, lower=None):
    """``workers - 1`` keys that cut ``(lower, upper]`` into ranges of similar size.

    Sampled (TABLESAMPLE SYSTEM, about 10000 keys of the whole table) so that a big table is
    not scanned; a range too small for the sample to cut is read whole (it is small)."""
    if workers <= 1:
        return []
    params = dict(hi=Json(upper), lo=Json(lower) if lower is not None else None,
                  pct=min(100.0, 100.0 * 10000 / max(estimated, 1)))
    cond = key_in_range(ctx.pk_cols, ctx.src, "o", lower is not None)
    keys = [r["k"] for r in session.query(
        sql.SQL("SELECT {} AS k FROM {} AS o TABLESAMPLE SYSTEM (%(pct)s) WHERE {} ORDER BY {}").format(
            key_json(ctx.pk_cols, "o"), sql.Identifier(*ctx.src), cond, key_order(ctx.pk_cols, "o")), params)]
    if len(keys) < workers:
        keys = [r["k"] for r in session.query(
            sql.SQL("SELECT {} AS k FROM {} AS o WHERE {} ORDER BY {}").format(
                key_json(ctx.pk_cols, "o"), sql.Identifier(*ctx.src), cond, key_order(ctx.pk_cols, "o")), params)]
    points = []
    for i in range(1, workers):
        k = keys[(i * len(keys)) // workers] if keys else None
        if k is not None and k != upper and (not points or points[-1] != k):
            points.append(k)
    return points


def split_for_workers(session, ctx, workers):
    """More workers than unfinished ranges (``copy_workers`` raised on a resumed backfill):
    cut the unfinished ranges' rest ``(checkpoint, upper]`` into more ranges, each range in
    one transaction with its row locked, so a checkpoint never moves back and no key is in two
    ranges. Returns the number of ranges added."""
    todo = [r for r in get_ranges(session, ctx) if not r["done"]]
    if not todo or len(todo) >= workers:
        return 0
    estimated = estimate_rows(session, ctx)
    per_range = max(1, workers // len(todo))
    added = 0
    for r in todo:
        if per_range <= 1:
            break
        with session.transaction():
            rows = session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s AND range_no = %s FOR UPDATE")
                                 .format(ranges_table(ctx)), (ctx.table_name, r["range_no"]))
            if not rows or rows[0]["done"]:
                continue
            rng = rows[0]
            points = split_points(session, ctx, rng["upper_key"], per_range, estimated, lower=rng["checkpoint"])
            if not points:
                continue
            next_no = session.scalar(sql.SQL("SELECT max(range_no) + 1 FROM {} WHERE table_name = %s").format(
                ranges_table(ctx)), (ctx.table_name,))
            bounds = points + [rng["upper_key"]]
            session.execute(sql.SQL("UPDATE {} SET upper_key = %s, updated_at = now() "
                                    "WHERE table_name = %s AND range_no = %s").format(ranges_table(ctx)),
                            (Json(points[0]), ctx.table_name, rng["range_no"]), record=False)
            for i in range(len(points)):
                session.execute(sql.SQL("INSERT INTO {} (table_name, range_no, lower_key, upper_key, checkpoint) "
                                        "VALUES (%s, %s, %s, %s, %s)").format(ranges_table(ctx)),
                                (ctx.table_name, next_no + i, Json(bounds[i]), Json(bounds[i + 1]), Json(bounds[i])),
                                record=False)
            added += len(points)
    return added


def normalize_key(ctx, value):
    """A key as the backfill stores it: ``{pk column: value}`` (also accepts a list in key
    order, or a bare value for a one-column key)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, (list, tuple)):
        if len(value) != len(ctx.pk_cols):
            raise PartitioningError("backfill_upper %r does not match the primary key (%s)."
                                    % (value, ", ".join(ctx.pk_cols)))
        return dict(zip(ctx.pk_cols, value))
    if len(ctx.pk_cols) == 1:
        return {ctx.pk_cols[0]: value}
    raise PartitioningError("backfill_upper %r does not match the primary key (%s)." % (value, ", ".join(ctx.pk_cols)))


def plan_ranges(session, ctx, row, workers):
    """What the backfill would walk: ``(upper, estimated, [(lower, upper)])`` (no change)."""
    upper = normalize_key(ctx, row.get("backfill_upper"))
    if upper is None:
        # Phase 1 records the largest key right after the triggers exist. When it did not,
        # the largest key now is as good: the triggers already exist (phase 'prepared'), so
        # every row above it was written by a transaction whose trigger copied it.
        upper = max_key(session, ctx)
    if upper is None:
        return None, 0, []
    estimated = estimate_rows(session, ctx)
    points = split_points(session, ctx, upper, workers, estimated)
    bounds = [None] + points + [upper]
    return upper, estimated, [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]


def start_backfill(session, ctx, row, workers):
    """Create the ranges and move the table to phase 'copying' (one transaction, once)."""
    upper, estimated, ranges = plan_ranges(session, ctx, row, workers)
    with session.transaction():
        # Ranges left behind by an earlier, rolled back migration of the same table name.
        session.execute(sql.SQL("DELETE FROM {} WHERE table_name = %s").format(ranges_table(ctx)),
                        (ctx.table_name,))
        for i, (lo, hi) in enumerate(ranges):
            session.execute(sql.SQL("INSERT INTO {} (table_name, range_no, lower_key, upper_key, checkpoint) "
                                    "VALUES (%s, %s, %s, %s, %s)").format(ranges_table(ctx)),
                            (ctx.table_name, i, Json(lo) if lo is not None else None, Json(hi),
                             Json(lo) if lo is not None else None))
        state_store.update_table(session, ctx.state_schema, ctx.table_name, phase="copying",
                                 backfill_upper=upper, rows_estimated=estimated, rows_copied=0, batches=0,
                                 backfill_started_at=_now(session), backfill_seconds=0, checkpoint=None)
    return ranges


def _now(session):
    return session.scalar("SELECT now()")


# --- one batch -------------------------------------------------------------------------------

def render_batch(templates, session, ctx, has_lower, on_conflict=True):
    return templates.render("backfill/batch", session.conn, src=ctx.src, dst=ctx.dst,
                            state_schema=ctx.state_schema, table_name=ctx.table_name, pk_cols=ctx.pk_cols,
                            cols=ctx.cols, overriding=ctx.overriding, has_lower=has_lower,
                            on_conflict=on_conflict)


# After a batch whose plain INSERT met a conflict, the next batches of the table go straight
# to the ON CONFLICT form (the application is writing rows not copied yet); then try again.
FAST_RETRY_AFTER = 8
FAST_SAVEPOINT = "dbops_batch_plain"


def _deferrable_unique(session, ctx):
    """True when the twin has a deferrable unique or exclusion index: a plain INSERT would
    only fail at COMMIT there, so the batch always uses ON CONFLICT DO NOTHING."""
    return bool(session.scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
        "WHERE i.indrelid IN (SELECT %s::regclass UNION ALL SELECT relid FROM pg_catalog.pg_partition_tree(%s::regclass)) "
        "AND (i.indisunique OR i.indisexclusion) AND NOT i.indimmediate)",
        (sql.Identifier(*ctx.dst).as_string(session.conn),) * 2))


def _batch_statement(templates, session, ctx, has_lower, on_conflict):
    key = (has_lower, on_conflict)
    stmt = ctx.batch_sql.get(key)
    if stmt is None:
        stmt = render_batch(templates, session, ctx, has_lower, on_conflict)
        if not on_conflict:
            # one round trip: the savepoint the conflict fallback rolls back to, then the batch
            stmt = "SAVEPOINT %s;\n%s" % (FAST_SAVEPOINT, stmt)
        ctx.batch_sql[key] = stmt
    return stmt


def run_batch_statement(session, templates, ctx, has_lower, params):
    """The batch statement, plain INSERT first when that is safe, else ON CONFLICT DO NOTHING.

    Why this stays exact: the twin's unique indexes are the arbiters of ON CONFLICT DO NOTHING
    *and* the indexes a plain INSERT checks, with the same rule (a committed or in-progress row
    of the same key is a conflict; an in-progress one is waited for). So a plain INSERT that
    succeeds met no conflict and did exactly what DO NOTHING would have done; one that meets a
    conflict raises, everything after the savepoint (its inserts, row locks and logged keys) is
    rolled back, and the batch runs in the ON CONFLICT form as before, in the same transaction
    with the range row still locked."""
    if ctx.fast_insert is None:
        ctx.fast_insert = not _deferrable_unique(session, ctx)
    if ctx.fast_insert and ctx.fast_backoff <= 0:
        try:
            return session.query(_batch_statement(templates, session, ctx, has_lower, False), params)[0]
        except (psycopg2_errors.UniqueViolation, psycopg2_errors.ExclusionViolation):
            session.query("ROLLBACK TO SAVEPOINT %s" % FAST_SAVEPOINT)   # also in check mode
            ctx.fast_backoff = FAST_RETRY_AFTER
            ctx.fast_fallbacks += 1
    elif ctx.fast_backoff > 0:
        ctx.fast_backoff -= 1
    return session.query(_batch_statement(templates, session, ctx, has_lower, True), params)[0]


def copy_batch(session, templates, ctx, range_no, limit, before_commit=None):
    """Run one batch of a range and commit it with the range's checkpoint.

    Returns a dict (seen, locked, inserted, skipped, lower, last_key, done, seconds), or
    None when the range is already done. ``before_commit(result)`` is a test hook that runs
    inside the batch's transaction, after its statement and before its commit.
    """
    started = time.monotonic()
    with session.transaction():
        # The range row is locked for the batch: one worker per range, and the checkpoint
        # is read here, so it can only move forward.
        rows = session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s AND range_no = %s FOR UPDATE").format(
            ranges_table(ctx)), (ctx.table_name, range_no))
        if not rows or rows[0]["done"]:
            return None
        rng = rows[0]
        lo = rng["checkpoint"]
        params = dict(lo=Json(lo) if lo is not None else None, hi=Json(rng["upper_key"]), limit=int(limit))
        res = run_batch_statement(session, templates, ctx, lo is not None, params)
        done = res["seen"] < limit
        checkpoint = res["last_key"] if res["last_key"] is not None else lo
        session.execute(sql.SQL(
            "UPDATE {} SET checkpoint = %s, done = %s, rows_copied = rows_copied + %s, batches = batches + 1, "
            "skipped_keys = skipped_keys + %s, updated_at = now() WHERE table_name = %s AND range_no = %s").format(
                ranges_table(ctx)),
            (Json(checkpoint) if checkpoint is not None else None, done, res["locked"], res["skipped"],
             ctx.table_name, range_no), record=False)
        result = dict(res, lower=lo, done=done, range_no=range_no)
        if before_commit is not None:
            before_commit(result)
    result["seconds"] = time.monotonic() - started
    return result


def next_batch_size(size, seconds, target_ms, max_size):
    """Auto-size toward the target batch duration: shrink at once when a batch took too
    long, grow gently (x1.25) when it was much faster; clamp to [MIN_BATCH, max_size]."""
    if not target_ms or target_ms <= 0:
        return max_size
    elapsed_ms = seconds * 1000.0
    if elapsed_ms > target_ms:
        size = int(size * max(0.25, target_ms / elapsed_ms))
    elif elapsed_ms < 0.7 * target_ms:
        size = int(size * 1.25) + 1
    return max(min(size, max_size), min(MIN_BATCH, max_size))


# --- progress --------------------------------------------------------------------------------

def refresh_progress(session, ctx, seconds=0.0, batch_size=None, throttle_reason=None):
    """Copy the ranges' totals into the state row (outside any batch transaction, so that
    parallel workers never queue on it); adds ``seconds`` of copy time."""
    session.execute(sql.SQL(
        "UPDATE {t} SET rows_copied = r.rows, batches = r.batches, checkpoint = r.checkpoint, "
        "backfill_seconds = backfill_seconds + %(s)s, batch_size = coalesce(%(bs)s, batch_size), "
        "throttle_reason = %(tr)s, updated_at = now() "
        "FROM (SELECT coalesce(sum(rows_copied), 0)::bigint AS rows, coalesce(sum(batches), 0)::bigint AS batches, "
        "      CASE WHEN count(*) = 1 THEN min(checkpoint::text)::jsonb "
        "           ELSE jsonb_agg(checkpoint ORDER BY range_no) END AS checkpoint "
        "      FROM {r} WHERE table_name = %(n)s) AS r "
        "WHERE {t}.table_name = %(n)s").format(t=sql.Identifier(ctx.state_schema, "tables"), r=ranges_table(ctx)),
        dict(s=seconds, bs=batch_size, tr=throttle_reason, n=ctx.table_name), record=False)


# --- the driver: one module call ---------------------------------------------------------------

@dataclass
class CopyOptions:
    batch_size: int = 10000
    batch_sleep_ms: int = 0
    batch_target_ms: int = 500
    copy_workers: int = 1
    verify_batches: bool = False
    limits: object = None                 # throttle.Limits


def _worker(session, templates, ctx, range_no, opts, deadline, shared, lock, stop, hooks):
    """Walk one range until it is done, the deadline passes or another worker failed."""
    size = shared["start_size"]
    workers = max(1, shared["workers"])

    def on_wait(reason):
        with lock:
            shared["throttle"] = reason
            if reason:
                shared["waits"].append(reason)
        refresh_progress(session, ctx, throttle_reason=reason)

    while not stop.is_set():
        if time.time() >= deadline:
            return
        reason, waited = throttle.wait(session, ctx.state_schema, ctx.table_name, opts.limits, deadline,
                                       on_wait=on_wait)
        with lock:
            shared["waited_s"] += waited
        if reason:
            with lock:
                shared["stopped_by"] = reason
            return
        res = copy_batch(session, templates, ctx, range_no, size, before_commit=hooks.get("before_commit"))
        if res is None:
            return
        rec = reconcile(session, ctx)
        if opts.verify_batches:
            verify_batch(session, ctx, res["lower"], res["last_key"])
        with lock:
            shared["batches"] += 1
            shared["rows"] += res["locked"]
            shared["skipped"] += res["skipped"]
            shared["reconciled"] += rec["copied"] + rec["deleted"]
            shared["batch_size"] = size
        refresh_progress(session, ctx, seconds=res["seconds"] / workers, batch_size=size)
        if hooks.get("after_batch"):
            hooks["after_batch"](res)
        if res["done"]:
            return
        size = next_batch_size(size, res["seconds"], opts.batch_target_ms, opts.batch_size)
        if opts.batch_sleep_ms:
            sleep_ms(min(opts.batch_sleep_ms, max(0, (deadline - time.time()) * 1000)))


def copy_for(session, open_session, templates, ctx, opts, deadline, hooks=None):
    """Run the unfinished ranges with up to ``copy_workers`` connections until the ranges
    are done or ``deadline`` (time.time()) passes. ``open_session()`` opens a connection
    for an extra worker. Returns the call's totals."""
    import threading

    hooks = hooks or {}
    if opts.copy_workers > 1 and not session.check_mode:
        split_for_workers(session, ctx, opts.copy_workers)
    todo = [r["range_no"] for r in get_ranges(session, ctx) if not r["done"]]
    row = state_store.get_table(session, ctx.state_schema, ctx.table_name)
    shared = dict(start_size=min(int(row.get("batch_size") or opts.batch_size), opts.batch_size),
                  workers=min(len(todo), max(1, opts.copy_workers)), batches=0, rows=0, skipped=0, reconciled=0,
                  waited_s=0.0, throttle=None, waits=[], stopped_by=None, batch_size=None, errors=[])
    lock, stop = threading.Lock(), threading.Event()
    if not todo:
        return shared
    if shared["workers"] <= 1:
        for range_no in todo:
            _worker(session, templates, ctx, range_no, opts, deadline, shared, lock, stop, hooks)
            if shared["stopped_by"] or time.time() >= deadline:
                break
        return shared

    queue = list(todo)

    def run():
        s = None
        try:
            s = open_session()
            guard_session(s)
            while not stop.is_set():
                with lock:
                    if not queue or shared["stopped_by"]:
                        return
                    range_no = queue.pop(0)
                _worker(s, templates, ctx, range_no, opts, deadline, shared, lock, stop, hooks)
        except Exception as e:  # noqa: BLE001 - re-raised by the caller
            with lock:
                shared["errors"].append(e)
            stop.set()
        finally:
            if s is not None:
                s.close()

    threads = [threading.Thread(target=run, name="batch_copy-%d" % i) for i in range(shared["workers"])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if shared["errors"]:
        raise shared["errors"][0]
    return shared


def finish_if_done(session, ctx):
    """All ranges done: reconcile once more and move the table to 'copied'. Returns True when done."""
    if any(not r["done"] for r in get_ranges(session, ctx)):
        return False
    reconcile(session, ctx)
    with session.transaction():
        refresh_progress(session, ctx, throttle_reason=None)
        state_store.update_table(session, ctx.state_schema, ctx.table_name, phase="copied",
                                 backfill_finished_at=_now(session))
    return True
