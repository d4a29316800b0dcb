# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phase 2: copy the original's existing rows into the partitioned twin, exactly.

docs/design.md, "The backfill", explains why it is exact. In short: the key log
(``key_log.py``) is installed before the first batch; each batch (``batch.py``) is one READ
COMMITTED transaction that copies the next keys of its range without locking them and
moves the range's checkpoint; keys that a write deleted or moved while a batch could have
copied them are reconciled (``reconcile.py``) once the checkpoint has passed them; the key
log is dropped, and everything left reconciled, when every range is done. A kill anywhere
resumes at the last committed checkpoint; a repeated batch is harmless.

Nothing but the batch runs per batch: the progress in the state row is refreshed and the
pending keys reconciled at most every ``REFRESH_S``; the throttle's readings (replica lag,
load, the application's latency) come from the monitor's own connection (``throttle.py``);
with ``verify_batches`` the verifier (``verify.Verifier``) compares the copied key ranges on
its own connection, behind the copy.

The key space ``(nothing, backfill_upper]`` is split into ranges (``ranges.py``) so that
``copy_workers`` connections walk disjoint ranges at once, each with its own checkpoint.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time
from dataclasses import dataclass, field
from typing import List, Tuple

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, sleep_ms
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import batch, key_log, throttle
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.ranges import (
    get_ranges, plan_ranges, ranges_table, split_for_workers)
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.reconcile import reconcile
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.verify import Verifier, verify_rest

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
# Progress in the state row and the reconcile of pending keys: at most this often, not per batch.
REFRESH_S = 1.0
# The smallest batch the latency guard shrinks a batch to.
GUARD_MIN_BATCH = 1000


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
    integer_key: bool = False             # a single integer primary key (batch.span_upper)
    # The batch statements rendered once per table, by (has_lower, form) (batch.py).
    batch_sql: dict = field(default_factory=dict, repr=False, compare=False)
    # Which form the next batches start with, and how many fell back (batch.first_form).
    forms: dict = field(default_factory=dict, repr=False, compare=False)


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
        overriding=any(twin.column(c).identity == "a" for c in cols),
        integer_key=len(row["pk_columns"]) == 1 and original.column(row["pk_columns"][0]).type_oid in batch.INTEGER_TYPES)


def start_backfill(session, templates, ctx, row, workers, lock_timeout_ms=50, retries=30):
    """Install the key log, create the ranges and move the table to phase 'copying' (once).

    The key log's CREATE TRIGGER commits before the ranges exist: the first batch's snapshot
    is taken after every writer fires it."""
    upper, estimated, ranges = plan_ranges(session, ctx, row, workers)
    key_log.install(session, templates, ctx, upper, lock_timeout_ms, retries)
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
    """How one call copies; made from the table's resolved tuning (``from_tuning``: spec.TUNING
    holds every default, none is repeated here)."""
    batch_size: int
    batch_sleep_ms: int
    batch_target_ms: int
    copy_workers: int
    verify_batches: bool
    limits: object                        # throttle.Limits
    lock_timeout_ms: int                  # the longest a statement of ours waits for a lock
    lock_retries: int                     # DDL (the key log's triggers): attempts after the first
    lock_rows: bool = False               # every batch in the locking form (batch.py): slower, for comparison

    @classmethod
    def from_tuning(cls, tuning):
        """The options a table's resolved tuning (spec.TUNING knobs) gives."""
        t = tuning
        return cls(batch_size=t["batch_size"], batch_sleep_ms=t["batch_sleep_ms"], batch_target_ms=t["batch_target_ms"],
                   copy_workers=t["copy_workers"], verify_batches=t["verify_batches"],
                   lock_timeout_ms=t["lock_timeout_ms"], lock_retries=t["swap_retries"],
                   limits=throttle.Limits(t["max_replica_lag_s"], t["max_active_backends"] or 0,
                                          t["max_lock_waiters"] or 0, t["max_app_latency_ms"] or 0,
                                          t["max_app_slowdown_pct"] or 0, t["allow_blind_guards"]))


class _Run:
    """What the workers of one call share: totals, the stop flag, the throttle's monitor."""

    def __init__(self, opts, workers, start_size, monitor):
        self.opts, self.workers, self.start_size, self.monitor = opts, workers, start_size, monitor
        self.lock, self.stop = threading.Lock(), threading.Event()
        self.totals = dict(batches=0, rows=0, skipped=0, reconciled=0, waited_s=0.0, throttle=None, waits=[],
                           stopped_by=None, batch_size=None, errors=[], timeouts=0, fallbacks=0,
                           throttled_s=0.0, warnings=[], app_latency=None)

    def add(self, **values):
        with self.lock:
            for k, v in values.items():
                self.totals[k] += v

    def waiting(self, reason):
        with self.lock:
            self.totals["throttle"] = reason
            if reason:
                self.totals["waits"].append(reason)

    def stopped(self, reason):
        with self.lock:
            self.totals["stopped_by"] = reason


class _Worker:
    """Walks ranges on one connection: batches back to back, everything else by time."""

    def __init__(self, session, templates, ctx, run, deadline, hooks):
        self.session, self.templates, self.ctx, self.run = session, templates, ctx, run
        self.deadline, self.hooks = deadline, hooks
        self.size = run.start_size
        run.monitor.register(session)
        self.unreported_s = 0.0
        self.refreshed = time.monotonic()
        self.pending = False

    def on_wait(self, reason):
        self.run.waiting(reason)
        refresh_progress(self.session, self.ctx, throttle_reason=reason)

    def refresh(self, force=False):
        """Progress into the state row and the reconcile of pending keys: at most every REFRESH_S."""
        if not force and time.monotonic() - self.refreshed < REFRESH_S:
            return
        if self.pending:
            rec = reconcile(self.session, self.ctx)
            self.run.add(reconciled=rec["copied"] + rec["deleted"])
            self.pending = False
        refresh_progress(self.session, self.ctx, seconds=self.unreported_s / max(1, self.run.workers),
                         batch_size=self.size)
        self.unreported_s = 0.0
        self.refreshed = time.monotonic()

    def walk(self, range_no):
        """One range until it is done, the deadline passes, the throttle stops it or another worker failed."""
        self._walk(range_no)
        self.refresh(force=True)

    def _walk(self, range_no):
        rows = [r for r in get_ranges(self.session, self.ctx) if r["range_no"] == range_no and not r["done"]]
        if not rows:
            return
        lo, hi = rows[0]["checkpoint"], rows[0]["upper_key"]
        opts = self.run.opts
        last = None  # the previous batch's span (batch.span_upper)
        while not self.run.stop.is_set() and time.time() < self.deadline:
            reason, waited = self.run.monitor.wait_while_braked(self.deadline, self.on_wait)
            self.run.add(waited_s=waited)
            if reason:
                self.run.stopped(reason)
                return
            limit = self.size
            res = self._batch(range_no, lo, hi, batch.span_upper(self.ctx, lo, hi, limit, last))
            last = batch.span_of(self.ctx, lo, res, limit)
            if res is None:
                continue
            if res["paused"]:
                reason, waited = throttle.wait_for_resume(self.session, self.ctx.state_schema,
                                                          self.ctx.table_name, self.deadline, self.on_wait)
                self.run.add(waited_s=waited)
                if reason:
                    self.run.stopped(reason)
                    return
                continue
            lo = res["last_key"] if res["last_key"] is not None else lo
            self.run.add(batches=1, rows=res["seen"], skipped=res["skipped"])
            self.unreported_s += res["seconds"]
            self.pending = self.pending or res["pending"]
            self.refresh()
            if self.hooks.get("after_batch"):
                self.hooks["after_batch"](res)
            if res["done"]:
                return
            self.size = batch.next_size(self.size, res["seconds"], opts.batch_target_ms, opts.batch_size)
            pause_s = opts.batch_sleep_ms / 1000.0 + self.run.monitor.pause_after(res["seconds"])
            if self.run.monitor.strained():
                # a shorter batch holds the rows that the application's writes wait for a shorter
                # time (but not so short that the copy is all per-batch overhead)
                self.size = max(min(GUARD_MIN_BATCH, opts.batch_size), self.size // 2)
            if pause_s > 0:
                self.run.add(throttled_s=pause_s)
                sleep_ms(min(pause_s, max(0.0, self.deadline - time.time())) * 1000.0)

    def _batch(self, range_no, lo, hi, upper):
        """One batch (up to ``upper`` when reckoned); None when it timed out (rolled back: the next
        attempt is smaller, and reads its upper key)."""
        opts = self.run.opts
        try:
            with self.run.monitor.batch():
                return batch.copy_batch(self.session, self.templates, self.ctx, range_no, lo, hi, self.size,
                                        opts.lock_timeout_ms, batch.timeout_ms(opts.batch_target_ms),
                                        before_commit=self.hooks.get("before_commit"), upper=upper)
        except psycopg2_errors.QueryCanceled:
            if self.size <= batch.MIN_BATCH:
                raise PartitioningError(
                    "%s: a batch of %d rows ran longer than %d ms (%d x batch_target_ms) and was cancelled; "
                    "raise partitioning_batch_target_ms." % (self.ctx.table_name, self.size,
                                                             batch.timeout_ms(opts.batch_target_ms),
                                                             batch.TIMEOUT_TARGETS))
            self.run.add(timeouts=1)
            self.size = max(batch.MIN_BATCH, self.size // 4)
            return None


def copy_for(session, open_session, templates, ctx, opts, deadline, hooks=None):
    """Run the unfinished ranges with up to ``copy_workers`` connections until the ranges
    are done or ``deadline`` (time.time()) passes. ``open_session()`` opens a connection
    (extra workers, the throttle's monitor, the verifier). Returns the call's totals."""
    hooks = hooks or {}
    if opts.lock_rows:
        ctx.forms["only_locked"] = True
    if opts.copy_workers > 1 and not session.check_mode:
        split_for_workers(session, ctx, opts.copy_workers)
    row = state_store.get_table(session, ctx.state_schema, ctx.table_name)
    reinstalled = key_log.install(session, templates, ctx, row.get("backfill_upper"), opts.lock_timeout_ms,
                                  opts.lock_retries)
    todo = [r["range_no"] for r in get_ranges(session, ctx) if not r["done"]]
    workers = min(len(todo), max(1, opts.copy_workers))
    monitor = throttle.Monitor(open_session, ctx, opts.limits)
    run = _Run(opts, workers, min(int(row.get("batch_size") or opts.batch_size), opts.batch_size), monitor)
    verifier = Verifier(open_session, ctx) if opts.verify_batches else None
    if reinstalled and any(r["batches"] for r in get_ranges(session, ctx)):
        run.totals["warnings"].append(
            "the backfill's key log was missing (dropped by hand?) and is installed again: rows deleted or moved "
            "meanwhile may remain in the twin; the verification will find them")
    try:
        monitor.start()
        if verifier is not None:
            verifier.start()
            monitor.register(verifier.session)
        if todo:
            _run_workers(session, open_session, templates, ctx, run, todo, deadline, hooks)
    finally:
        monitor.close()
        if verifier is not None:
            verifier.close()
    if verifier is not None and verifier.error is not None and not run.totals["errors"]:
        raise verifier.error
    if run.totals["errors"]:
        raise run.totals["errors"][0]
    run.totals["batch_size"] = run.start_size
    run.totals["fallbacks"] = ctx.forms.get("fallbacks", 0)
    run.totals["warnings"] += monitor.warnings
    run.totals["app_latency"] = monitor.report()
    return run.totals


def _run_workers(session, open_session, templates, ctx, run, todo, deadline, hooks):
    if run.workers <= 1:
        worker = _Worker(session, templates, ctx, run, deadline, hooks)
        for range_no in todo:
            worker.walk(range_no)
            if run.totals["stopped_by"] or time.time() >= deadline:
                break
        run.start_size = worker.size
        return
    queue = list(todo)

    def work():
        s = None
        try:
            s = open_session()
            guard_session(s)
            worker = _Worker(s, templates, ctx, run, deadline, hooks)
            while not run.stop.is_set():
                with run.lock:
                    if not queue or run.totals["stopped_by"]:
                        return
                    range_no = queue.pop(0)
                worker.walk(range_no)
        except Exception as e:  # noqa: BLE001 - re-raised by the caller
            with run.lock:
                run.totals["errors"].append(e)
            run.stop.set()
        finally:
            if s is not None:
                s.close()

    threads = [threading.Thread(target=work, name="batch_copy-%d" % i) for i in range(run.workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def finish_if_done(session, ctx, lock_timeout_ms=50, retries=30):
    """All ranges done: drop the key log, reconcile what it logged and move the table to 'copied'
    (or 'verified' when the verifier compared every range during the copy: the keys above
    ``backfill_upper`` are compared now). Returns True when done."""
    ranges = get_ranges(session, ctx)
    if any(not r["done"] for r in ranges):
        return False
    # DROP TRIGGER waits for every writer whose key log fired: their keys are committed now
    key_log.drop(session, ctx, lock_timeout_ms, retries)
    reconcile(session, ctx)
    verified = ranges and all(r.get("verified_key") is not None and r["verified_key"] == r["upper_key"]
                              for r in ranges)
    summary = verify_rest(session, ctx, ranges) if verified else None
    with session.transaction():
        refresh_progress(session, ctx, throttle_reason=None)
        fields = dict(phase="copied", backfill_finished_at=_now(session))
        if summary is not None and summary["status"] == "ok":
            fields.update(phase="verified", verified_at=_now(session), verification=summary)
        state_store.update_table(session, ctx.state_schema, ctx.table_name, **fields)
    return True
