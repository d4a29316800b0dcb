# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""DDL on a hot table without stalling the application (HP8, docs/design.md).

A statement that needs a table lock (CREATE TRIGGER: SHARE ROW EXCLUSIVE; the swap: ACCESS
EXCLUSIVE) queues behind every transaction that holds a conflicting lock, and every later
query on the table queues behind *it*. So such DDL runs with a short ``SET LOCAL
lock_timeout``: when the lock is not granted quickly the transaction gives up (nobody
waited long behind it), sleeps with exponential backoff and jitter, and tries again. When
every attempt failed, the error names the sessions that held the lock, with their queries,
so the operator knows whom to talk to.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import random
import time

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.health import SEES_SESSION_SQL, STATS_ROLE

try:
    import psycopg2
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    psycopg2 = None
    sql = None

LOCK_NOT_AVAILABLE = "55P03"
MAX_SLEEP_MS = 10000
# the first wait after a lock timeout, doubled per attempt (backoff_ms)
BACKOFF_MS = 100

# Who holds a lock on the relations (oids): other backends' granted locks, and with %(waiting)s
# their queued requests too; with %(min_age_s)s only transactions older than that, and those
# whose age this role may not see (``hidden``: without pg_read_all_stats, HP21; pg_locks itself
# shows every lock to every role). Oldest first.
HOLDERS_SQL = """
SELECT l.pid, l.mode, c.oid::regclass::text AS relation, a.usename AS user, a.application_name,
       a.state, a.xact_start, round(extract(epoch FROM now() - a.xact_start)::numeric, 1)::float8 AS xact_seconds,
       left(a.query, 300) AS query, NOT coalesce({sees}, true) AS hidden
FROM pg_locks l
JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE (l.granted OR %(waiting)s) AND l.locktype = 'relation' AND l.pid <> pg_backend_pid()
  AND l.relation = ANY (%(oids)s::oid[])
  AND (%(min_age_s)s::float8 IS NULL OR a.xact_start < now() - make_interval(secs => %(min_age_s)s::float8)
       OR NOT coalesce({sees}, true))
ORDER BY a.xact_start NULLS LAST, l.pid
""".replace("{sees}", SEES_SESSION_SQL.format(usesysid="a.usesysid"))

# Without named relations: the sessions that have been in a transaction longest.
LONGEST_SQL = """
SELECT a.pid, NULL AS mode, NULL AS relation, a.usename AS user, a.application_name, a.state, a.xact_start,
       round(extract(epoch FROM now() - a.xact_start)::numeric, 1)::float8 AS xact_seconds, left(a.query, 300) AS query,
       false AS hidden
FROM pg_stat_activity a
WHERE a.pid <> pg_backend_pid() AND a.xact_start IS NOT NULL AND a.datname = current_database()
ORDER BY a.xact_start LIMIT 5
"""


def _is_lock_timeout(exc):
    return getattr(exc, "pgcode", None) == LOCK_NOT_AVAILABLE


def blocking_sessions(session, relations=None):
    """The other sessions holding locks on ``relations`` ((schema, name) tuples), as dicts."""
    if relations:
        names = [sql.Identifier(*r).as_string(session.conn) for r in relations]
        oids = [o for o in (session.scalar("SELECT to_regclass(%s)::oid", (n,)) for n in names) if o is not None]
        if not oids:
            return []
        rows = session.query(HOLDERS_SQL, dict(oids=oids, waiting=False, min_age_s=None))
    else:
        rows = session.query(LONGEST_SQL)
    return [dict((k, (str(v) if v is not None and k == "xact_start" else v)) for k, v in r.items())
            for r in rows]


def long_transactions(session, oids, max_age_s):
    """Sessions in a transaction older than ``max_age_s`` that hold or wait for a lock on one of
    ``oids``: what a table lock taken now would queue behind; and those whose age this role may
    not see (``hidden`` true: the caller decides, HP21). One entry per session, oldest first."""
    seen, out = set(), []
    for r in session.query(HOLDERS_SQL, dict(oids=list(oids), waiting=True, min_age_s=float(max_age_s))):
        if r["pid"] not in seen:
            seen.add(r["pid"])
            out.append(dict((k, r[k]) for k in ("pid", "user", "application_name", "state", "xact_seconds", "query",
                                                "hidden")))
    return out


def describe_blockers(blockers):
    """The sessions as one line for the operator: pid, role/application, state, transaction age,
    query; what this role may not see is said to be hidden, never printed as None."""
    if not blockers:
        return "no session holds a conflicting lock any more"
    parts = []
    seen = set()
    for b in blockers:
        if b["pid"] in seen:
            continue
        seen.add(b["pid"])
        who = "%s%s" % (b.get("user") or "?", ("/" + b["application_name"]) if b.get("application_name") else "")
        if b.get("hidden"):
            parts.append("pid %s (%s; its state, transaction age and query are hidden from this role, which lacks "
                         "the privileges of %s)" % (b["pid"], who, STATS_ROLE))
            continue
        age = ("in transaction for %ss" % b["xact_seconds"] if b.get("xact_seconds") is not None
               else "no transaction open")
        parts.append("pid %s (%s, %s, %s): %s" % (b["pid"], who, b.get("state") or "state unknown", age,
                                                  (b.get("query") or "").strip()))
    return "; ".join(parts)


def backoff_ms(attempt, base_ms):
    """Exponential backoff with full jitter: ``base * 2^attempt * [0.5, 1.5)``, capped."""
    delay = min(MAX_SLEEP_MS, base_ms * (2 ** attempt))
    return delay * (0.5 + random.random())


def run_with_lock_retry(session, fn, lock_timeout_ms, retries, backoff=BACKOFF_MS, relations=None, what=None,
                        report=None):
    """Run ``fn(session)`` in one transaction whose lock waits last at most ``lock_timeout_ms``.

    On a lock timeout the transaction is rolled back (nothing it did stays) and retried after
    ``backoff`` ms doubled per attempt, with jitter, up to ``retries`` more times. The final error
    names the sessions holding locks on ``relations`` (or the longest transactions).
    Returns what ``fn`` returned. Any other error propagates at once. ``report`` (a dict), when
    given, receives ``attempts`` and ``commit_ms`` (the COMMIT's round trip: locks end with it).
    """
    def once(attempt):
        with session.transaction():
            # SET LOCAL: the timeout ends with this transaction and never leaks into the
            # rest of the session (reads after it may legitimately wait).
            # (query, not execute: a setting changes nothing, also in check mode, and must not
            # count as a change.)
            session.query(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal("%dms" % int(lock_timeout_ms))))
            result = fn(session)
            committing = time.monotonic()
        if report is not None:
            report.update(attempts=attempt + 1, commit_ms=(time.monotonic() - committing) * 1000.0)
        return result

    return _retrying(session, once, lock_timeout_ms, retries, backoff, relations, what,
                     "a longer partitioning_lock_timeout_ms makes the application wait longer behind us.")


def _retrying(session, once, lock_timeout_ms, retries, backoff, relations, what, advice):
    """``once(attempt)`` until it does not end in a lock timeout, at most ``retries`` more times,
    with jittered exponential backoff; then the operator's error naming who holds the locks."""
    attempts = max(0, int(retries)) + 1
    for attempt in range(attempts):
        try:
            return once(attempt)
        except psycopg2.Error as e:
            if not _is_lock_timeout(e):
                raise
            if attempt + 1 == attempts:
                raise _not_granted(session, relations, what, lock_timeout_ms, attempts, advice)
            time.sleep(backoff_ms(attempt, backoff) / 1000.0)
    return None  # pragma: no cover


def _not_granted(session, relations, what, lock_timeout_ms, attempts, advice):
    """The operator's error after the last attempt, naming who holds the locks now."""
    blockers = blocking_sessions(session, relations)
    return PartitioningError(
        "Could not get the lock for %s within %d ms after %d attempts: other sessions hold locks on the "
        "table. Blocking: %s. Let those transactions finish (or end them), then run again; %s"
        % (what or "the DDL", int(lock_timeout_ms), attempts, describe_blockers(blockers), advice),
        blockers=blockers)


def run_statements_with_lock_retry(session, fn, lock_timeout_ms, retries, backoff=BACKOFF_MS, relations=None,
                                   what=None):
    """Like ``run_with_lock_retry`` for work that must run outside a transaction block (CREATE INDEX
    CONCURRENTLY): each statement commits on its own, under a session-level ``lock_timeout``.

    ``fn`` must be idempotent (it is run again from the start after a lock timeout, and finds
    done what the earlier attempt committed). The previous ``lock_timeout`` is restored.
    """
    previous = session.scalar("SELECT current_setting('lock_timeout')")

    def once(_attempt):
        session.query(sql.SQL("SET lock_timeout = {}").format(sql.Literal("%dms" % int(lock_timeout_ms))))
        try:
            return fn(session)
        except psycopg2.Error:
            # nothing to roll back on a session the server ended: it rolled back itself
            if not session.conn.closed and not session.conn.autocommit:
                session.conn.rollback()
            raise

    try:
        return _retrying(session, once, lock_timeout_ms, retries, backoff, relations, what, "what was done is kept.")
    finally:
        if not session.conn.closed:
            session.query(sql.SQL("SET lock_timeout = {}").format(sql.Literal(previous)))
