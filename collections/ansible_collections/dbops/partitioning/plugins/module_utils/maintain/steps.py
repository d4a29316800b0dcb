# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One maintenance step under the lock budget, as the modules run it.

A step is one of the SQL step functions (templates/sql/maintenance/30_steps.sql.j2) in its own
transaction: ``lock_timeout`` = the table's ``lock_budget_ms``, retried with jittered backoff
after a lock timeout (locking.run_with_lock_retry: every attempt rolls back completely). The
step function says how long it held its strongest lock, from granted to its end; the COMMIT's
round trip (measured here) is added, since the locks end with it. In check mode the function
runs with ``p_dry_run`` and only reports. Every step that did something is recorded in
``<state>.maintenance_steps``; the module returns the same figures.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbops.partitioning.plugins.module_utils.locking import (
    run_statements_with_lock_retry, run_with_lock_retry)

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

# Modes that stop the application's reads and writes: what the lock budget is about.
BLOCKING = "ACCESS EXCLUSIVE"


def call(fn_schema, function, args):
    """``SELECT * FROM <fn_schema>.<function>(%(a)s, ...)`` with named arguments."""
    return sql.SQL("SELECT * FROM {}({})").format(
        sql.Identifier(fn_schema, function),
        sql.SQL(", ").join(sql.SQL("{} => {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in args))


def query_plan(session, fn_schema, target, scope, now, months=None, dump_required=False):
    """The rows of ``plan_table`` for a target (read-only; the same plan the database functions use)."""
    spec = target.spec
    args = dict(p_table_name=target.table_name, p_parent=target.regclass(session), p_base=target.base,
                p_interval=None if spec.interval is None else str(spec.interval), p_premake=spec.premake,
                p_retention=spec.retention, p_action=spec.retention_action, p_dump_required=dump_required,
                p_retention_allowed=target.retention_allowed, p_scope=scope, p_months=months, p_now=now)
    return session.query(call(fn_schema, "plan_table", args), args)


def record(session, state_schema, target, step, partition, outcome, source="module"):
    """Append a step to ``<state>.maintenance_steps`` (after its transaction committed)."""
    if session.check_mode:
        return
    session.query(sql.SQL("SELECT {}(%s, %s, %s, %s, %s, %s, %s, %s, %s)").format(
        sql.Identifier(state_schema, "record_step")),
        (target.table_name, step, partition, outcome["status"], outcome.get("lock_mode"), outcome.get("lock_ms"),
         outcome.get("attempts") or 1, source, outcome.get("detail")))


def _outcome(session, row, step, partition, attempts=0, extra_ms=0.0):
    out = dict(step=step, partition=partition, status=row["status"], detail=row["detail"],
               lock_mode=row["lock_mode"], attempts=attempts,
               lock_ms=None if row["lock_ms"] is None else round(float(row["lock_ms"]) + extra_ms, 3))
    statements = list(row["statements"] or [])
    if statements:
        session.queries.extend(statements)
        session.changed = True
    return out


def run_step(session, fn_schema, state_schema, target, step, partition, function, args):
    """Run one step function for ``partition`` (``args`` without p_budget_ms/p_dry_run); returns
    dict(step, partition, status, detail, lock_mode, lock_ms, attempts)."""
    args = dict(args, p_budget_ms=target.lock_budget_ms, p_dry_run=session.check_mode)
    stmt = call(fn_schema, function, args)
    if session.check_mode:
        return _outcome(session, session.query(stmt, args)[0], step, partition)
    report = {}
    row = run_with_lock_retry(session, lambda s: s.query(stmt, args)[0], lock_timeout_ms=target.lock_budget_ms,
                              retries=target.retries, relations=[target.parent],
                              what="%s of %s on %s" % (step, partition, target.label), report=report)
    out = _outcome(session, row, step, partition, report["attempts"], report["commit_ms"])
    if row["statements"]:
        record(session, state_schema, target, step, partition, out)
    return out


def run_concurrently(session, state_schema, target, step, partition, statement_for, done="detached"):
    """A statement that cannot run in a transaction block (DETACH ... CONCURRENTLY, FINALIZE), retried
    after lock timeouts; ``statement_for(session)`` decides it afresh on every attempt (None: done).
    Its locks block no application statement; lock_ms is the statement's whole duration."""
    if session.check_mode:
        stmt = statement_for(session)
        if stmt is not None:
            session.execute(stmt)
        return dict(step=step, partition=partition, status="would_" + step, detail=None,
                    lock_mode="SHARE UPDATE EXCLUSIVE (concurrent)", lock_ms=None, attempts=0)
    tries = []

    def work(s):
        tries.append(1)
        stmt = statement_for(s)
        if stmt is not None:
            s.execute(stmt)
    started = time.monotonic()
    run_statements_with_lock_retry(session, work, lock_timeout_ms=target.lock_budget_ms, retries=target.retries,
                                   relations=[target.parent], what="%s of %s on %s" % (step, partition, target.label))
    out = dict(step=step, partition=partition, status=done, detail=None,
               lock_mode="SHARE UPDATE EXCLUSIVE (concurrent)", attempts=len(tries),
               lock_ms=round((time.monotonic() - started) * 1000.0, 3))
    record(session, state_schema, target, step, partition, out)
    return out


def summary(outcomes, budget_ms):
    """``dict(longest_lock_ms, longest_lock_mode, over_budget)`` over the steps' outcomes: the budget
    binds the locks that block the application (ACCESS EXCLUSIVE)."""
    timed = [o for o in outcomes if o.get("lock_ms") is not None]
    longest = max(timed, key=lambda o: o["lock_ms"]) if timed else None
    over = ["%s %s: %.1f ms" % (o["step"], o["partition"], o["lock_ms"]) for o in timed
            if (o.get("lock_mode") or "").startswith(BLOCKING) and o["lock_ms"] > budget_ms]
    return dict(longest_lock_ms=longest["lock_ms"] if longest else None,
                longest_lock_mode=longest["lock_mode"] if longest else None, over_budget=over)
