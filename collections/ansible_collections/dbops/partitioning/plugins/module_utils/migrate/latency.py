# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The latency guard: the backfill slows down before the application feels it
(docs/design.md, "Load"; ``max_app_latency_ms``, ``max_app_slowdown_pct``).

Every ``STEP_S`` the throttle's connection reads ``pg_stat_activity`` once: the application's
statements in flight (client backends that are not ours, in every database of the server: they
share its CPUs, its WAL and its disks) and how long each has been running. Their mean age is
what the application feels: it grows when its statements wait for a CPU, for the WAL, for the
disk, or for a row of a batch in flight — whatever the copy takes from it. (Sampled in flight,
long statements weigh more than short ones: the reading leans towards the tail. Statements
running for more than ``LONG_S`` — reports, maintenance — are left out.)

Its baseline is the same reading while no batch is in flight. While the application works, a
worker pauses ``BASELINE_PAUSE_S`` whenever the baseline is older than ``BASELINE_EVERY_S``.

After each batch the worker compares the mean over the last ``WINDOW_S`` (batches and pauses
alike) with the baseline. More than the allowance above it — ``max_app_latency_ms``, or
``max_app_slowdown_pct`` of the baseline when that is less (an application of sub-millisecond
statements feels the copy long before it costs milliseconds) — is *strained*: the worker's
sleep after each batch, ``factor`` times the batch's duration, grows by half (and a quarter)
and the worker halves its next batch (backfill.py); calm, the factor shrinks to ``CALM`` of
itself less ``DECAY``. The copy settles at the duty cycle that keeps the application's
statements within the allowance of their pace without it, and runs at full speed when the
application is not working.

Without the privileges to see other roles' sessions (``pg_read_all_stats``, part of
``pg_monitor``) the application's statements are invisible. The guard then times its own
reading instead (a short statement like the application's, delayed by the same queues) and
assumes that the application is always working; the module says so in a warning. It is never
silently off.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import statistics
import threading
import time

STEP_S = 0.1
WINDOW_S = 1.0
DECAY = 0.05
CALM = 0.85
MAX_FACTOR = 20.0
BASELINE_EVERY_S = 5.0
BASELINE_PAUSE_S = 0.3
FLOOR_MS = 0.1

# Active client backends that are not ours, and the mean age of their statements in milliseconds.
# Statements running longer than LONG_S (a report, a maintenance job) are not the latency the
# guard protects, and their age would only grow: they are left out.
LONG_S = 30
SAMPLE_SQL = """
SELECT count(*) AS app_active,
       coalesce(avg(extract(epoch FROM pg_catalog.clock_timestamp() - a.query_start) * 1000), 0)::float8 AS age_ms
FROM pg_catalog.pg_stat_activity a
WHERE a.state = 'active' AND a.backend_type = 'client backend' AND NOT a.pid = ANY (%(ours)s)
  AND a.query_start > pg_catalog.clock_timestamp() - make_interval(secs => %(long_s)s)
"""

SEES_ALL_SQL = ("SELECT rolsuper OR pg_catalog.pg_has_role(current_user, 'pg_read_all_stats', 'USAGE') "
                "FROM pg_catalog.pg_roles WHERE rolname = current_user")


class LatencyGuard:
    """Readings taken by the throttle's monitor; decisions asked by the workers after each batch."""

    def __init__(self, max_app_latency_ms, max_app_slowdown_pct=0):
        self.limit_ms = float(max_app_latency_ms or 0)          # 0: no limit in milliseconds
        self.slowdown = float(max_app_slowdown_pct or 0) / 100  # 0: no limit relative to the pace
        self.lock = threading.Lock()
        self.ours = set()
        self.in_flight = 0
        self.idle = collections.deque(maxlen=30)        # readings while no batch ran
        self.recent = collections.deque()               # (time, reading), the last WINDOW_S
        self.idle_at = 0.0
        self.app_at = 0.0
        self.factor = 0.0
        self.strained = False                          # the last decision
        self.sees_all = True
        self.stats = dict(samples=0, strained=0, max_factor=0.0, baseline_pauses=0)

    def start(self, session):
        """Checks what this role can see; returns the warnings for the operator."""
        self.sees_all = bool(session.scalar(SEES_ALL_SQL))
        self.ours.add(session.scalar("SELECT pg_catalog.pg_backend_pid()"))
        return [] if self.sees_all else [
            "the latency guard cannot see other roles' sessions (grant pg_read_all_stats, or pg_monitor, to the "
            "role the collection connects as): it times its own probe instead and assumes the application is "
            "always working"]

    def register(self, pid):
        with self.lock:
            self.ours.add(pid)

    def batch_started(self):
        with self.lock:
            self.in_flight += 1

    def batch_ended(self):
        with self.lock:
            self.in_flight -= 1

    def sample(self, session):
        """One reading of the application's statements in flight."""
        with self.lock:
            ours, in_flight = sorted(self.ours), self.in_flight
        t0 = time.monotonic()
        row = session.query(SAMPLE_SQL, dict(ours=ours, long_s=LONG_S))[0]
        now = time.monotonic()
        if self.sees_all:
            working, reading = row["app_active"] > 0, float(row["age_ms"] or 0)
        else:
            working, reading = True, (now - t0) * 1000.0
        with self.lock:
            self.stats["samples"] += 1
            if working:
                self.app_at = now
            if in_flight == 0 and self.in_flight == 0:
                self.idle.append(reading)
                self.idle_at = now
            self.recent.append((now, reading))
            while self.recent and self.recent[0][0] < now - WINDOW_S:
                self.recent.popleft()

    def allowance_ms(self, baseline_ms):
        """How much slower than ``baseline_ms`` the application's statements may get: at most
        ``max_app_latency_ms``, and at most ``max_app_slowdown_pct`` of their own pace (never less
        than ``FLOOR_MS``, a reading's own noise)."""
        allowed = self.limit_ms or float("inf")
        if self.slowdown:
            allowed = min(allowed, max(baseline_ms * self.slowdown, FLOOR_MS))
        return allowed

    def _strained(self, now):
        if now - self.app_at > WINDOW_S or not self.idle or not self.recent:
            return False
        baseline = statistics.median(self.idle)
        return statistics.mean(r for _t, r in self.recent) > baseline + self.allowance_ms(baseline)

    def pause_after(self, batch_seconds):
        """Seconds the worker sleeps after a batch that took ``batch_seconds``."""
        with self.lock:
            now = time.monotonic()
            self.strained = self._strained(now)
            if self.strained:
                self.factor = min(MAX_FACTOR, self.factor * 1.5 + 0.25)
                self.stats["strained"] += 1
            else:
                self.factor = max(0.0, self.factor * CALM - DECAY)
            self.stats["max_factor"] = max(self.stats["max_factor"], self.factor)
            pause = self.factor * batch_seconds
            if now - self.app_at < BASELINE_EVERY_S and now - self.idle_at > BASELINE_EVERY_S and \
                    pause < BASELINE_PAUSE_S:
                self.idle_at = now   # one worker pauses for the baseline, not all of them
                self.stats["baseline_pauses"] += 1
                pause = BASELINE_PAUSE_S
            return pause

    def report(self):
        with self.lock:
            return dict(self.stats, factor=round(self.factor, 2), max_factor=round(self.stats["max_factor"], 2),
                        baseline_ms=round(statistics.median(self.idle), 2) if self.idle else None,
                        recent_ms=round(statistics.mean(r for _t, r in self.recent), 2) if self.recent else None)
