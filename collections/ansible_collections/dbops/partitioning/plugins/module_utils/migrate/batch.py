# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One backfill batch: one transaction that copies the next keys of a range and moves its
checkpoint (``templates/sql/backfill/batch.sql.j2``; docs/design.md, "The backfill").

The statement has three forms, tried from the cheapest:

* ``plain`` (``plain_batch.sql.j2``): the batch's upper key read first (the limit-th key after
  the checkpoint), then the rows up to it copied by a plain ``INSERT … SELECT`` into the twin,
  without locks and without returning anything, then the checkpoint moved to that key: three
  statements, each as cheap as its part of one ``INSERT … SELECT`` of the whole table. Deletes
  and key moves that race it are caught by the key log (``key_log.py``) and reconciled after the
  checkpoint has passed them. On a single integer key the upper key is mostly not read but
  reckoned (``span_upper``): the checkpoint plus as many keys as held the batch's rows in the
  previous batch of the range.
* ``conflict``: the same with ``ON CONFLICT DO NOTHING``, after the plain form met a twin row
  that the application's sync trigger wrote first (a unique violation): the trigger's newer
  version wins.
* ``locked``: ``FOR SHARE SKIP LOCKED`` (each row locked: one WAL record per row), after an
  unlocked form had to wait ``lock_timeout_ms`` for a transaction that is writing a row of the
  batch: rows a writer holds are skipped, their keys logged and reconciled later. The batch
  never waits on the application.

A failed form is rolled back to a savepoint and the next form runs in the same transaction.
After a fallback the next ``FALLBACK_BATCHES`` batches start at the form that worked, then the
plain form is tried again. A twin with a deferrable unique or exclusion index (whose violation
would only surface at COMMIT) never uses the plain form.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError

try:
    from psycopg2 import errors as psycopg2_errors
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover
    psycopg2_errors = None
    sql = None
    Json = None

FORMS = ("plain", "conflict", "locked")
FALLBACK_BATCHES = 8
SAVEPOINT = "dbops_batch"
# A batch's statement may run at most this many times its target duration (then it is
# cancelled, rolled back, and the batch runs again smaller): a batch that runs away holds the
# twin rows it inserted, which writers of those rows wait for.
TIMEOUT_TARGETS = 20
MIN_BATCH = 10
# A batch whose upper key was reckoned (span_upper) copies at most this many times its limit.
CAP_LIMITS = 2


PLAIN_PARTS = ("bound", "insert", "advance")
# "gate" replaces "bound" when the upper key was reckoned (span_upper)
PLAIN_STATEMENTS = PLAIN_PARTS + ("gate",)
# The key types whose keys span_upper may reckon with (int2, int4, int8).
INTEGER_TYPES = (20, 21, 23)


def render(templates, session, ctx, has_lower, form):
    """The batch statement of ``form``; for ``plain``, a dict of its statements by part."""
    context = dict(src=ctx.src, dst=ctx.dst, state_schema=ctx.state_schema, table_name=ctx.table_name,
                   pk_cols=ctx.pk_cols, cols=ctx.cols, overriding=ctx.overriding, has_lower=has_lower)
    if form == "plain":
        return dict((part, templates.render("backfill/plain_batch", session.conn, part=part, **context))
                    for part in PLAIN_STATEMENTS)
    return templates.render("backfill/batch", session.conn, lock_rows=form == "locked", **context)


def _statement(templates, session, ctx, has_lower, form):
    key = (has_lower, form)
    if key not in ctx.batch_sql:
        # rendering builds the statement once per table and form, not once per batch
        ctx.batch_sql[key] = render(templates, session, ctx, has_lower, form)
    return ctx.batch_sql[key]


def sample(templates, session, ctx):
    """The statements of a batch of the plain form, as a module reports them in ``queries``
    (the gate, too, where the upper key may be reckoned)."""
    stmts = _statement(templates, session, ctx, True, "plain")
    return [stmts[part] for part in PLAIN_PARTS + (("gate",) if ctx.integer_key else ())]


def span_upper(ctx, lo, hi, limit, last):
    """The upper key of a range's next batch reckoned from its previous one, or None: then the
    plain form reads it (the limit-th key after ``lo``, an index scan over the batch's keys).

    Only for a single integer key, and only after a batch of steady density: ``last`` is
    ``(keys, rows, limit)`` of the range's previous batch (how far its checkpoint moved, how many
    rows it copied, how many it aimed at) and its rows were within half and twice its aim. The
    next batch then spans as many keys as ``limit`` rows took there, so it grows at most twofold;
    a batch that meets a gap is off its aim and the next one reads its upper key again, one that
    meets a denser stretch reaches its cap and reads it at once (``_plain``). Which upper key a
    batch has never matters to exactness (docs/design.md, "The backfill"): only to its size."""
    if not ctx.integer_key or lo is None or not last:
        return None
    keys, rows, aimed = last
    if keys <= 0 or not aimed / 2.0 <= rows <= aimed * 2:
        return None
    col = ctx.pk_cols[0]
    upper = lo[col] + max(1, int(keys * float(limit) / rows))
    return dict(hi) if upper >= hi[col] else {col: upper}


def span_of(ctx, lo, res, limit):
    """``last`` for span_upper from a batch's result (None when it tells nothing: not a single
    integer key, the range's first batch, paused)."""
    if not ctx.integer_key or lo is None or res is None or res["paused"] or res["last_key"] is None:
        return None
    col = ctx.pk_cols[0]
    return (res["last_key"][col] - lo[col], res["seen"], limit)


def _plain(session, stmts, prefix, params, hi, upper=None):
    """The plain form's three statements (``plain_batch.sql.j2``), from the savepoint on, for a range
    whose upper key is ``hi``; the same row as the other forms' statement. With ``upper``
    (span_upper) the batch copies up to that key, capped at ``CAP_LIMITS`` times its limit: a
    stretch denser than reckoned rolls the insert back to the savepoint and the batch reads its
    upper key instead (so a reckoned batch never holds more than the cap)."""
    first = "SAVEPOINT %s;\n%s" % (SAVEPOINT, stmts["bound" if upper is None else "gate"])
    gate = session.query(prefix + ";\n" + first if prefix else first, params)[0]
    reckoned = gate["go"] and upper is not None
    if reckoned:
        cap = CAP_LIMITS * params["limit"]
        rows = session.query(stmts["insert"], dict(params, upper=Json(upper), cap=cap))
        if rows >= cap:
            session.query("ROLLBACK TO SAVEPOINT %s" % SAVEPOINT)
            reckoned = False
            # read again, pause flag included: paused since, the bound is null and must not
            # send the batch to the range's end
            gate = session.query(stmts["bound"], params)[0]
    if not gate["go"]:
        return dict(paused=True, seen=0, locked=0, inserted=0, skipped=0, last_key=None, advanced=0, done=False,
                    pending=False, reckoned=False)
    if not reckoned:
        upper = gate["bound"] if gate["bound"] is not None else hi
        rows = session.query(stmts["insert"], dict(params, upper=Json(upper), cap=None))
    marks = dict(params, upper=Json(upper))
    res = session.query(stmts["advance"], dict(marks, rows=rows, done=upper == hi))[0]
    return dict(res, paused=False, seen=rows, locked=rows, inserted=rows, skipped=0, last_key=upper,
                reckoned=reckoned)


def _deferrable_unique(session, ctx):
    """True when the twin has a deferrable unique or exclusion index: a plain INSERT would
    only fail at COMMIT there."""
    return bool(session.scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_index i "
        "WHERE i.indrelid IN (SELECT %s::regclass UNION ALL SELECT relid FROM pg_catalog.pg_partition_tree(%s::regclass)) "
        "AND (i.indisunique OR i.indisexclusion) AND NOT i.indimmediate)",
        (sql.Identifier(*ctx.dst).as_string(session.conn),) * 2))


def first_form(session, ctx):
    """The form a batch starts with: the cheapest one that recent batches did not fall back from."""
    forms = ctx.forms
    if forms.get("only_locked"):
        return "locked"
    if forms.get("plain_allowed") is None:
        forms["plain_allowed"] = not _deferrable_unique(session, ctx)
    for form in ("locked", "conflict"):
        if forms.get(form, 0) > 0:
            forms[form] -= 1
            return form
    return "plain" if forms["plain_allowed"] else "conflict"


def _fallback(ctx, form, exc):
    """The form to run after ``form`` failed with ``exc``, or None when it is not a fallback case."""
    if isinstance(exc, (psycopg2_errors.UniqueViolation, psycopg2_errors.ExclusionViolation)) and form == "plain":
        nxt = "conflict"
    elif isinstance(exc, psycopg2_errors.LockNotAvailable) and form != "locked":
        nxt = "locked"
    else:
        return None
    ctx.forms[nxt] = FALLBACK_BATCHES
    ctx.forms["fallbacks"] = ctx.forms.get("fallbacks", 0) + 1
    return nxt


def _limits(lock_timeout_ms, timeout_ms):
    return sql.SQL("SET LOCAL lock_timeout = {}; SET LOCAL statement_timeout = {}").format(
        sql.Literal("%dms" % max(0, int(lock_timeout_ms or 0))), sql.Literal("%dms" % max(0, int(timeout_ms or 0))))


def copy_batch(session, templates, ctx, range_no, lo, hi, limit, lock_timeout_ms=50, timeout_ms=0,
               before_commit=None, upper=None):
    """Copy up to ``limit`` keys of range ``range_no`` after ``lo`` (its checkpoint) and at most
    ``hi``, and move the checkpoint, in one transaction. ``upper`` (span_upper): the plain form
    copies the keys up to it instead (unless they are ``CAP_LIMITS`` times ``limit`` or more).

    Returns a dict: paused (nothing done: the operator's pause flag), seen, locked, inserted,
    skipped, last_key, done, pending (the table has pending keys), lower, form, reckoned (the
    upper key was reckoned: ``upper``, within the cap), seconds.
    ``before_commit(result)`` is a test hook that runs inside the transaction, after the
    statement and before the commit. A statement timeout (``timeout_ms``) propagates as
    ``psycopg2.errors.QueryCanceled`` with everything rolled back.
    """
    started = time.monotonic()
    params = dict(lo=Json(lo) if lo is not None else None, hi=Json(hi), limit=int(limit), range_no=range_no)
    has_lower = lo is not None
    with session.transaction():
        form = first_form(session, ctx)
        prefix = _limits(lock_timeout_ms if form != "locked" else 0, timeout_ms).as_string(session.conn)
        while True:
            stmt = _statement(templates, session, ctx, has_lower, form)
            try:
                if form == "plain":
                    res = _plain(session, stmt, prefix, params, hi, upper)
                    break
                if form == "conflict":
                    stmt = "SAVEPOINT %s;\n%s" % (SAVEPOINT, stmt)
                res = session.query(prefix + ";\n" + stmt if prefix else stmt, params)[0]
                break
            except (psycopg2_errors.UniqueViolation, psycopg2_errors.ExclusionViolation,
                    psycopg2_errors.LockNotAvailable) as e:
                nxt = _fallback(ctx, form, e)
                if nxt is None:
                    raise
                session.query("ROLLBACK TO SAVEPOINT %s" % SAVEPOINT)
                # the locked form never waits on the application's rows: no lock timeout needed
                prefix = "SET LOCAL lock_timeout = 0" if nxt == "locked" else ""
                form = nxt
        result = dict(res, lower=lo, range_no=range_no, form=form)
        result.setdefault("reckoned", False)
        if not res["paused"] and not res["advanced"]:
            raise PartitioningError(
                "%s: the checkpoint of backfill range %s is no longer %s: another run copies this table; "
                "nothing was changed by this batch." % (ctx.table_name, range_no, lo))
        if before_commit is not None:
            before_commit(result)
    result["seconds"] = time.monotonic() - started
    return result


def next_size(size, seconds, target_ms, max_size):
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


def timeout_ms(target_ms):
    """The statement timeout of a batch: ``TIMEOUT_TARGETS`` times its target (0 = none)."""
    return int(target_ms * TIMEOUT_TARGETS) if target_ms and target_ms > 0 else 0
