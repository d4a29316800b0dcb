# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backfill's brakes (docs/design.md, "Load"; HP17, docs/design.md).

Checked before every batch, in this order:

* the operator's pause flag (``partitioning.pause('public.revenues')`` / ``resume``);
* replica replay lag: the maximum of ``pg_stat_replication.replay_lag`` over the
  replicas of the primary, against ``max_replica_lag_s`` (the triggers double the write
  volume and the backfill adds its own WAL: a replica is what falls behind first);
* active client backends against ``max_active_backends`` (0 = not checked);
* backends waiting for a lock against ``max_lock_waiters`` (0 = not checked).

While any check fails the backfill waits in short steps (so a resume is honoured within
about one step) and reports why; it never waits past the call's time budget.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time
from dataclasses import dataclass

from ansible_collections.dbops.partitioning.plugins.module_utils.health import replica_lag_s

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

STEP_S = 0.25

ACTIVE_BACKENDS_SQL = ("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE state = 'active' "
                       "AND backend_type = 'client backend' AND pid <> pg_catalog.pg_backend_pid()")
LOCK_WAITERS_SQL = ("SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND pid <> pg_catalog.pg_backend_pid()")


@dataclass
class Limits:
    max_replica_lag_s: float = 30
    max_active_backends: int = 0
    max_lock_waiters: int = 0


def pause_reason(session, state_schema, table_name):
    rows = session.query(sql.SQL("SELECT paused, pause_reason FROM {} WHERE table_name = %s").format(
        sql.Identifier(state_schema, "tables")), (table_name,))
    if rows and rows[0]["paused"]:
        return "paused: %s" % (rows[0]["pause_reason"] or "by operator")
    return None


def check(session, state_schema, table_name, limits):
    """The reason the next batch must wait, or None."""
    reason = pause_reason(session, state_schema, table_name)
    if reason:
        return reason
    if limits.max_replica_lag_s is not None and limits.max_replica_lag_s > 0:
        lag = replica_lag_s(session)
        if lag > limits.max_replica_lag_s:
            return "replica lag %.1f s > %s s" % (lag, limits.max_replica_lag_s)
    if limits.max_active_backends:
        n = session.scalar(ACTIVE_BACKENDS_SQL)
        if n > limits.max_active_backends:
            return "%d active backends > %d" % (n, limits.max_active_backends)
    if limits.max_lock_waiters:
        n = session.scalar(LOCK_WAITERS_SQL)
        if n > limits.max_lock_waiters:
            return "%d backends waiting for locks > %d" % (n, limits.max_lock_waiters)
    return None


def wait(session, state_schema, table_name, limits, deadline, on_wait=None, step_s=STEP_S):
    """Wait until no check fails or ``deadline`` (time.time()) passes.

    Returns ``(reason, waited_s)``: reason is None when the batch may run, else why it may
    not (the deadline came first). ``on_wait(reason)`` is called when a wait starts or its
    reason changes (the module records it in the state row for the progress view)."""
    started = time.time()
    last = None
    while True:
        reason = check(session, state_schema, table_name, limits)
        if reason != last and on_wait is not None:
            on_wait(reason)
        last = reason
        if reason is None:
            return None, time.time() - started
        if time.time() + step_s > deadline:
            return reason, time.time() - started
        time.sleep(step_s)
