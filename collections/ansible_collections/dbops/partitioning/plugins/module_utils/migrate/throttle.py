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
about one step) and reports why; it never waits past the call's time budget. A check that
cannot see what it measures (a role without pg_read_all_stats, HP21) stops the backfill with
the GRANT that fixes it, unless ``allow_blind_guards`` accepted the downgrade (health.py).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading
import time
from dataclasses import dataclass

from ansible_collections.dbops.partitioning.plugins.module_utils.health import (
    SEES_SESSION_SQL, blind_guard, replica_lag_s, replica_lag_warnings)
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import latency

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

STEP_S = 0.25

# Other roles' sessions show neither state nor backend type without pg_read_all_stats (HP21):
# counted apart (a session of a role in a database).
ACTIVE_BACKENDS_SQL = ("SELECT count(*) FILTER (WHERE state = 'active' AND backend_type = 'client backend') AS active, "
                       "count(*) FILTER (WHERE usesysid IS NOT NULL AND datid IS NOT NULL AND NOT {sees}) AS hidden "
                       "FROM pg_catalog.pg_stat_activity WHERE pid <> pg_catalog.pg_backend_pid()").replace(
    "{sees}", SEES_SESSION_SQL.format(usesysid="usesysid"))
# pg_locks shows every backend's lock requests to every role.
LOCK_WAITERS_SQL = ("SELECT count(DISTINCT pid) FROM pg_catalog.pg_locks WHERE NOT granted "
                    "AND pid <> pg_catalog.pg_backend_pid()")


@dataclass
class Limits:
    max_replica_lag_s: float           # the table's max_replica_lag_s (spec.TUNING's default)
    max_active_backends: int = 0
    max_lock_waiters: int = 0
    max_app_latency_ms: float = 0      # 0: the application's latency is not watched (latency.py)
    max_app_slowdown_pct: float = 0    # 0: no limit relative to the application's own pace (latency.py)
    allow_blind_guards: bool = False   # measure what the role can see when it may not see everything (HP21)


def pause_reason(session, state_schema, table_name):
    rows = session.query(sql.SQL("SELECT paused, pause_reason FROM {} WHERE table_name = %s").format(
        sql.Identifier(state_schema, "tables")), (table_name,))
    if rows and rows[0]["paused"]:
        return "paused: %s" % (rows[0]["pause_reason"] or "by operator")
    return None


def check(session, state_schema, table_name, limits):
    """The reason the next batch must wait, or None."""
    return pause_reason(session, state_schema, table_name) or load_reason(session, limits)


def load_reason(session, limits):
    """Why the server is too busy for the next batch (replica lag, load), or None."""
    if limits.max_replica_lag_s is not None and limits.max_replica_lag_s > 0:
        lag = replica_lag_s(session, limits.allow_blind_guards)
        if lag > limits.max_replica_lag_s:
            return "replica lag %.1f s > %s s" % (lag, limits.max_replica_lag_s)
    if limits.max_active_backends:
        row = session.query(ACTIVE_BACKENDS_SQL)[0]
        if row["hidden"] and not limits.allow_blind_guards:
            raise blind_guard(session, "active-sessions guard", "the state of %d session(s) of other roles"
                              % row["hidden"])
        if row["active"] > limits.max_active_backends:
            return "%d active backends > %d" % (row["active"], limits.max_active_backends)
    if limits.max_lock_waiters:
        n = session.scalar(LOCK_WAITERS_SQL)
        if n > limits.max_lock_waiters:
            return "%d backends waiting for locks > %d" % (n, limits.max_lock_waiters)
    return None


def wait_for_resume(session, state_schema, table_name, deadline, on_wait=None, step_s=STEP_S):
    """While the operator's pause flag is set: wait in short steps (a resume is honoured within
    one step) until it is cleared or ``deadline`` (time.time()) passes. Returns ``(reason,
    waited_s)``: reason is None when the copy may go on, else why it may not."""
    return wait_while(lambda: pause_reason(session, state_schema, table_name), deadline, on_wait, step_s)


def wait_while(read_reason, deadline, on_wait=None, step_s=STEP_S):
    """Wait in ``step_s`` steps while ``read_reason()`` gives a reason, at most until ``deadline``.
    ``on_wait(reason)`` is called when the reason changes. Returns ``(reason, waited_s)``."""
    started = time.time()
    last = None
    while True:
        reason = read_reason()
        if reason != last and on_wait is not None:
            on_wait(reason)
        last = reason
        if reason is None:
            return None, time.time() - started
        if time.time() + step_s > deadline:
            return reason, time.time() - started
        time.sleep(step_s)


class Monitor:
    """The throttle's readings, taken on a connection of their own while the workers copy, so
    that no batch waits for them: replica lag and load every ``STEP_S``, the latency guard's
    probe (``latency.py``) every ``latency.STEP_S``. Workers ask ``wait_while_braked`` before a
    batch and ``pause_after`` after it (no query), and report their batches to the guard."""

    def __init__(self, open_session, ctx, limits, interval_s=STEP_S):
        self.open_session, self.ctx, self.limits, self.interval_s = open_session, ctx, limits, interval_s
        self.reason = None
        self.session = None
        self.stop = threading.Event()
        self.thread = None
        self.error = None
        self.warnings = []
        lat, pct = limits.max_app_latency_ms or 0, limits.max_app_slowdown_pct or 0
        self.guard = latency.LatencyGuard(lat, pct) if lat > 0 or pct > 0 else None

    def _needed(self):
        lim = self.limits
        return bool((lim.max_replica_lag_s or 0) > 0 or lim.max_active_backends or lim.max_lock_waiters or self.guard)

    def start(self):
        """The first readings are taken before any batch runs."""
        if not self._needed():
            return
        self.session = self.open_session()
        if self.guard is not None:
            self.warnings += self.guard.start(self.session)
        if (self.limits.max_replica_lag_s or 0) > 0:
            self.warnings += replica_lag_warnings(self.session)
        self.reason = load_reason(self.session, self.limits)
        if self.guard is not None:
            for _sample in range(5):   # the probe's first baseline, before any batch
                self.guard.sample(self.session)
        self.thread = threading.Thread(target=self._loop, name="batch_copy-monitor", daemon=True)
        self.thread.start()

    def _loop(self):
        step = latency.STEP_S if self.guard is not None else self.interval_s
        load_every = max(1, int(round(self.interval_s / step)))
        n = 0
        try:
            while not self.stop.wait(step):
                n += 1
                if self.guard is not None:
                    self.guard.sample(self.session)
                if n % load_every == 0:
                    self.reason = load_reason(self.session, self.limits)
        except Exception as e:  # noqa: BLE001 - a monitor that cannot read brakes the copy
            self.error = e
            self.reason = "the throttle's readings failed: %s" % str(e).strip().splitlines()[0]

    def register(self, session):
        """A connection of ours (worker, verifier): its locks and its queries are not the application's."""
        if self.guard is not None:
            self.guard.register(session.scalar("SELECT pg_catalog.pg_backend_pid()"))

    def batch(self):
        """``with monitor.batch():`` around a batch: the guard tells busy from idle probes."""
        return _InFlight(self.guard)

    def wait_while_braked(self, deadline, on_wait=None, step_s=STEP_S):
        """Wait while a reading says so; returns ``(reason, waited_s)`` as ``wait_for_resume``."""
        return wait_while(lambda: self.reason, deadline, on_wait, step_s)

    def pause_after(self, batch_seconds):
        """Seconds to sleep after a batch that took ``batch_seconds`` (the latency guard's duty cycle)."""
        return self.guard.pause_after(batch_seconds) if self.guard is not None else 0.0

    def strained(self):
        """Whether the latency guard's last decision found the application strained."""
        return self.guard is not None and self.guard.strained

    def report(self):
        return self.guard.report() if self.guard is not None else None

    def close(self):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
        if self.session is not None:
            self.session.close()


class _InFlight:
    def __init__(self, guard):
        self.guard = guard

    def __enter__(self):
        if self.guard is not None:
            self.guard.batch_started()

    def __exit__(self, *exc):
        if self.guard is not None:
            self.guard.batch_ended()
        return False
