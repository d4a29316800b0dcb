#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: batch_copy
short_description: Copy a table's existing rows into its partitioned twin, in resumable, throttled batches
description:
  - Phase 2 of an online partitioning. The twin and its sync triggers must exist (phase 1,
    C(playbooks/phase1_prepare.yml)); the triggers keep every new write in sync while this
    module copies the rows that existed before them.
  - When the backfill starts, two row triggers (the key log) start logging the keys of rows that
    writes delete or move; they are dropped when the copy ends. Each batch is one transaction that
    walks the primary key in keyset order, copies its rows without locking them (a plain C(INSERT),
    C(ON CONFLICT DO NOTHING) after a conflict with a row the application wrote first, C(FOR SHARE
    SKIP LOCKED) when a writer holds a row of the batch) and moves the checkpoint, all committed
    together; logged keys are reconciled once the checkpoint has passed them (docs/design.md,
    "The backfill"). A kill at any point resumes at the last checkpoint.
  - One call runs batches for at most I(max_call_s) seconds (and never past I(deadline)) and
    returns the progress, so that a playbook can print one line per call. Call it again until
    C(done) is true; the table's phase moves from C(prepared) to C(copying) to C(copied).
  - It waits while the table is paused (C(partitioning.pause('schema.table'))), and, read on a
    connection of its own, while replica replay lag exceeds I(max_replica_lag_s) or active
    backends or lock waiters exceed their thresholds; batch sizes adapt to I(batch_target_ms), and
    a batch that runs longer than 20 times that target is cancelled and runs again smaller.
  - In check mode nothing changes; the module reports what would be copied (estimate, ranges).
version_added: 0.1.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table]
options:
  batch_size:
    description:
      - Rows per batch at the start, and the most a batch may take when auto-sized.
      - Default the spec's C(batch_size), else 10000.
    type: int
  batch_sleep_ms:
    description:
      - Pause between two batches of one worker, in milliseconds.
      - Default the spec's C(batch_sleep_ms), else 0.
    type: int
  batch_target_ms:
    description:
      - Target duration of one batch. A batch that took longer shrinks the next one at once; a much
        faster one grows the next gently (x1.25), up to I(batch_size). 0 keeps I(batch_size).
      - Default the spec's C(batch_target_ms), else 500.
    type: int
  max_replica_lag_s:
    description:
      - Wait while the largest C(pg_stat_replication.replay_lag) exceeds this many seconds (0 = not checked).
      - Default the spec's C(max_replica_lag_s), else 30.
    type: float
  max_active_backends:
    description:
      - Wait while more client backends than this are active (0 = not checked).
      - Default the spec's C(max_active_backends), else not checked.
    type: int
  max_lock_waiters:
    description:
      - Wait while more backends than this wait for a lock (0 = not checked).
      - Default the spec's C(max_lock_waiters), else not checked.
    type: int
  max_app_latency_ms:
    description:
      - The latency guard. While the application is working on the server, every 100 ms a connection
        of the module's own reads how long the application's statements in flight have been running;
        when they run more than this many milliseconds longer than while no batch runs (or more than
        C(max_app_slowdown_pct) longer), each worker sleeps after its batch for a growing multiple of
        the batch's duration and halves its next batch, until the application is unhindered again
        (docs/design.md, "Load"). 0 = no limit in milliseconds.
      - Without C(pg_read_all_stats) (or C(pg_monitor)) the application's sessions are invisible. The
        guard then times its own reading instead, assumes that the application always works, and warns.
      - Default the spec's C(max_app_latency_ms), else 10.
    type: float
  max_app_slowdown_pct:
    description:
      - The latency guard's limit relative to the application's own pace - its statements may run at
        most this many percent longer than while no batch runs (100 - twice as long). What a fast
        application (statements well under a millisecond) feels first. 0 = no relative limit; with
        C(max_app_latency_ms) 0 too the guard is off.
      - Default the spec's C(max_app_slowdown_pct), else 100.
    type: int
  copy_workers:
    description:
      - Connections copying disjoint key ranges at once. The ranges are fixed when the backfill
        starts (the key space is split by sampling the primary key); each has its own checkpoint.
      - Default the spec's C(copy_workers), else 1.
    type: int
  verify_batches:
    description:
      - Compare the copied key ranges (count and checksum in one snapshot) behind the copy, on a
        connection of its own. When every range was compared during the copy, the keys written
        above the backfill's upper key are compared when it ends and the table goes straight to
        C(verified).
      - Default the spec's C(verify_batches), else true.
    type: bool
  lock_timeout_ms:
    description:
      - The longest a batch waits for a row that an open transaction is writing before it runs
        in its locking form instead, and the lock timeout of the key log's CREATE and DROP TRIGGER.
      - Default the spec's C(lock_timeout_ms), else 50.
    type: int
  swap_retries:
    description:
      - Attempts after the first to take the table lock that the key log's triggers need.
      - Default the spec's C(swap_retries), else 30.
    type: int
  max_call_s:
    description: Seconds of work per call; the module returns its progress after that.
    type: float
    default: 60
  deadline:
    description:
      - Unix time after which no batch starts (the playbook's maximum run time, I(max_runtime_s)).
        Omit for no deadline.
    type: float
seealso:
  - module: dbops.partitioning.partition_create
    description: Phase 1, which creates the twin and the sync triggers this copy relies on.
  - module: dbops.partitioning.partition_verify
    description: The full verification that ends phase 2 (when the copy did not compare every key range itself).
  - module: dbops.partitioning.partition_stats
    description: Progress of a running copy, also from another terminal.
  - name: SELECT ... FOR SHARE SKIP LOCKED
    description: The locking form a batch falls back to when a writer holds one of its rows.
    link: https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE
'''

EXAMPLES = r'''
- name: Copy for about a minute and report the progress
  dbops.partitioning.batch_copy:
    login_db: finance
    table: public.revenues
    batch_size: 5000
    batch_target_ms: 500
    max_replica_lag_s: 10
  register: copy

- name: Show it
  ansible.builtin.debug:
    msg: "{{ copy.progress_line }}"
'''

RETURN = r'''
done:
  description: Every range is copied and the table is in phase C(copied) (or later).
  returned: always
  type: bool
phase:
  description: The table's phase after the call.
  returned: always
  type: str
rows_copied: {description: Rows walked by the backfill so far (all calls)., returned: always, type: int}
rows_estimated: {description: Rows to copy as estimated when the backfill started., returned: always, type: int}
percent: {description: rows_copied of rows_estimated (100 when done)., returned: always, type: float}
rows_per_s: {description: Copy rate of this call (or overall when this call copied nothing)., returned: always, type: float}
eta_s: {description: Estimated seconds left at that rate (null when unknown)., returned: always, type: float}
batches: {description: Batches committed so far (all calls)., returned: always, type: int}
batch_size: {description: The batch size the auto-sizing arrived at., returned: always, type: int}
paused: {description: The operator's pause flag is set., returned: always, type: bool}
throttle_reason: {description: "Why the call stopped waiting (pause, replica lag, load), or null.", returned: always, type: str}
pending_keys: {description: Keys waiting for reconciliation., returned: always, type: int}
ranges:
  description: Per range (one per worker slot) its number, bounds, checkpoint, rows and whether it is done.
  returned: always
  type: list
  elements: dict
call:
  description:
    - "This call: batches, rows, seconds, waited_s (waited for pause, lag, load), throttled_s (slept by the
      latency guard and batch_sleep_ms), stopped_by, skipped_keys, reconciled, timeouts (batches cancelled and
      run again smaller), fallbacks (batches that left the plain form), app_latency (the latency guard: probes,
      strained readings, its factor, the probe's median while idle and while a batch ran)."
  returned: always
  type: dict
verification:
  description:
    - The table's last verification (status, rows, ranges, method), e.g. the one the copy made of every key
      range when I(verify_batches) is on and it ended the copy in phase C(verified).
  returned: always
  type: dict
progress_line:
  description: One line for the operator, e.g. C(public.revenues 412000/1000000 rows (41.2%), 8200 rows/s, ETA 72 s, batch 5000).
  returned: always
  type: str
queries:
  description: Statements that changed something (a batch's statements once, as a sample), or would in check mode.
  returned: always
  type: list
  elements: str
'''

import time

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.health import blind_guards
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import backfill, batch, ranges
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.reconcile import pending_count
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import (
    managed_table, run_table_module, tuning_options)

ALLOWED = backfill.COPY_PHASES + backfill.DONE_PHASES
OPTIONS = dict(tuning_options("batch_size", "batch_sleep_ms", "batch_target_ms", "max_replica_lag_s",
                              "max_active_backends", "max_lock_waiters", "max_app_latency_ms", "max_app_slowdown_pct",
                              "copy_workers", "verify_batches", "lock_timeout_ms", "swap_retries"),
               max_call_s=dict(type="float", default=60),
               deadline=dict(type="float"))


def _target(params):
    target = managed_table(params)
    for name in ("batch_size", "copy_workers"):
        if target.tuning[name] < 1:
            raise PartitioningError("%s must be at least 1 (got %s)." % (name, target.tuning[name]))
    if params["max_call_s"] <= 0:
        raise PartitioningError("max_call_s must be positive (got %s)." % params["max_call_s"])
    return target


def progress(session, ctx_name, state_schema, call, range_rows, pending):
    row = state_store.get_table(session, state_schema, ctx_name)
    done = row["phase"] in backfill.DONE_PHASES
    copied, est = int(row["rows_copied"] or 0), int(row["rows_estimated"] or 0)
    percent = 100.0 if done else (round(min(100.0, 100.0 * copied / est), 1) if est > 0 else 0.0)
    rate = None
    if call.get("seconds") and call.get("rows"):
        rate = call["rows"] / call["seconds"]
    elif row["backfill_seconds"] and copied:
        rate = copied / row["backfill_seconds"]
    eta = 0.0 if done else (round(max(0, est - copied) / rate, 0) if rate else None)
    out = dict(table=ctx_name, phase=row["phase"], done=done, rows_copied=copied, rows_estimated=est,
               percent=percent, rows_per_s=round(rate, 1) if rate else 0.0, eta_s=eta,
               batches=int(row["batches"] or 0), batch_size=row["batch_size"], paused=bool(row["paused"]),
               throttle_reason=call.get("stopped_by"),
               pending_keys=pending, call=call, verification=row.get("verification") or {},
               ranges=[dict(range_no=r["range_no"], lower=r["lower_key"], upper=r["upper_key"],
                            checkpoint=r["checkpoint"], rows_copied=r["rows_copied"], done=r["done"])
                       for r in range_rows])
    line = "%s: %d/%d rows (%.1f%%)" % (ctx_name, copied, est, percent)
    if done:
        line += ", copied"
    else:
        line += ", %s rows/s, ETA %s, batch %s" % (
            int(rate) if rate else "?", ("%d s" % eta) if eta is not None else "?", row["batch_size"] or "?")
    if call.get("stopped_by"):
        line += " (waiting: %s)" % call["stopped_by"]
    out["progress_line"] = line
    return out


def _lock(session, table_name, wait_s):
    """The per-table advisory lock, waiting up to ``wait_s`` for it: the call of a run whose
    ansible-playbook was killed may still be finishing (it ends within its max_call_s)."""
    end = time.time() + wait_s
    while True:
        try:
            return state_store.lock_table_work(session, table_name)
        except PartitioningError:
            if time.time() >= end:
                raise
            time.sleep(0.5)


def copy_rows(module, session, target):
    p, t = module.params, target.tuning
    table_name, state_schema = target.table_name, target.state_schema
    templates = SqlTemplates.bundled()
    row = backfill.require_row(session, state_schema, table_name, ALLOWED)
    if not module.check_mode and row["phase"] not in backfill.DONE_PHASES:
        state_store.ensure_state_schema(session, templates, state_schema)
        _lock(session, table_name, min(p["max_call_s"], 120))
        # Another run may have worked on the table while this one waited for the lock: only the
        # state read with the lock held counts (else a waiting run would start the backfill again).
        row = backfill.require_row(session, state_schema, table_name, ALLOWED)
    if row["phase"] in backfill.DONE_PHASES:
        done = []
        if state_store.installed_version(session, state_schema) >= 2:
            done = ranges.ranges_of(session, state_schema, table_name)
        return dict(progress(session, table_name, state_schema, dict(batches=0, rows=0), done, 0),
                    changed=False)
    ctx = backfill.load_context(session, state_schema, row)
    sample = batch.sample(templates, session, ctx)

    if module.check_mode:
        has_ranges = state_store.installed_version(session, state_schema) >= 2
        planned_ranges = ranges.get_ranges(session, ctx) if has_ranges else []
        if row["phase"] == "prepared" or not planned_ranges:
            upper, est, planned = ranges.plan_ranges(session, ctx, row, t["copy_workers"])
            planned_ranges = [dict(range_no=i, lower_key=lo, upper_key=hi, checkpoint=lo, rows_copied=0, done=False)
                              for i, (lo, hi) in enumerate(planned)]
            row_est = est
        else:
            row_est = row["rows_estimated"]
        session.queries.extend(sample)
        out = dict(table=table_name, phase=row["phase"], done=False, rows_copied=int(row["rows_copied"] or 0),
                   rows_estimated=int(row_est or 0), percent=0.0, rows_per_s=0.0, eta_s=None,
                   batches=int(row["batches"] or 0), batch_size=t["batch_size"], paused=bool(row["paused"]),
                   throttle_reason=None, pending_keys=pending_count(session, ctx), call=dict(batches=0, rows=0),
                   ranges=[dict(range_no=r["range_no"], lower=r["lower_key"], upper=r["upper_key"],
                                checkpoint=r["checkpoint"], rows_copied=r["rows_copied"], done=r["done"])
                           for r in planned_ranges],
                   progress_line="%s: would copy about %d rows in %d range(s) (check mode)"
                                 % (table_name, int(row_est or 0), len([r for r in planned_ranges if not r["done"]])))
        return dict(out, changed=True)

    started = time.time()
    deadline = started + p["max_call_s"]
    if p["deadline"] is not None:
        deadline = min(deadline, p["deadline"])
    changed = False
    warnings = []
    call = dict(batches=0, rows=0, seconds=0.0, waited_s=0.0, stopped_by=None, skipped_keys=0, reconciled=0,
                timeouts=0, fallbacks=0)
    if row["phase"] == "prepared" or not ranges.get_ranges(session, ctx):
        backfill.start_backfill(session, templates, ctx, row, t["copy_workers"], t["lock_timeout_ms"],
                                t["swap_retries"])
        changed = True
    if time.time() >= deadline:
        call["stopped_by"] = "maximum run time reached"
    else:
        session.queries.extend(sample)
        opts = backfill.CopyOptions.from_tuning(t)
        totals = backfill.copy_for(session, lambda: Session.open(p, False, "batch_copy/worker"), templates, ctx,
                                   opts, deadline)
        call.update(batches=totals["batches"], rows=totals["rows"], waited_s=round(totals["waited_s"], 2),
                    stopped_by=totals["stopped_by"], skipped_keys=totals["skipped"],
                    reconciled=totals["reconciled"], timeouts=totals["timeouts"], fallbacks=totals["fallbacks"],
                    throttled_s=round(totals["throttled_s"], 2), app_latency=totals["app_latency"])
        warnings = totals["warnings"]
        changed = changed or totals["batches"] > 0
    if backfill.finish_if_done(session, ctx, t["lock_timeout_ms"], t["swap_retries"]):
        changed = True
        call["stopped_by"] = None
    call["seconds"] = round(time.time() - started - call["waited_s"], 3)
    if changed:
        state_store.record_run(session, state_schema, table_name, "batch_copy", details=call)
    out = progress(session, table_name, state_schema, call, ranges.get_ranges(session, ctx),
                   pending_count(session, ctx))
    blind = blind_guards(session) if t["allow_blind_guards"] else None
    return dict(out, changed=changed, warnings=warnings + ([blind.downgrade()] if blind else []))


def main():
    run_table_module("batch_copy", copy_rows, OPTIONS, resolve=_target)


if __name__ == "__main__":
    main()
