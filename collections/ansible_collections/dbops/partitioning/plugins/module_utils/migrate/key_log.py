# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key log: the keys that writes delete or move while the backfill copies without row locks.

docs/design.md, "The backfill", has the argument. In short: a batch reads its rows without
locking them, so a delete (or a primary key or partition key change) that commits after the
batch's snapshot was taken but runs its sync trigger before the batch commits leaves a row in
the twin that the original no longer has. Two row triggers on the original
(``templates/sql/backfill/key_log.sql.j2``) log the old key of every such write into
``<state>.pending_keys``; ``reconcile`` settles each logged key once its range's checkpoint
has passed it, i.e. once every batch that could have copied the old row has committed.

Lifecycle, both under a short lock timeout with retries (HP8):

* ``install`` when the backfill starts, before its first batch. ``CREATE TRIGGER`` takes SHARE
  ROW EXCLUSIVE on the original: it waits for every writer in flight, and every write after
  its commit fires the triggers; the first batch's snapshot is taken after that commit.
* ``drop`` when every range is copied, before the last reconcile. ``DROP TRIGGER`` takes
  ACCESS EXCLUSIVE: once granted, every writer whose trigger fired has ended, so its logged
  key is visible to that last reconcile; every later writer's sync trigger sees every copied
  row (the last batch committed before), so there is nothing left to log.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import run_with_lock_retry
from ansible_collections.dbops.partitioning.plugins.module_utils.sync import KEY_LOG_TRIGGERS

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

DELETE_TRIGGER, MOVE_TRIGGER = TRIGGERS = KEY_LOG_TRIGGERS    # named where every trigger of ours is

TRIGGERS_SQL = """
SELECT t.tgname AS name, t.tgenabled AS enabled
FROM pg_catalog.pg_trigger t
WHERE t.tgrelid = %s::regclass AND t.tgname = ANY (%s)
"""

TYPES_SQL = """
SELECT a.attname AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = %s::regclass AND a.attname = ANY (%s) AND NOT a.attisdropped
"""


def function_name(ctx):
    """``(state_schema, '<schema>__<table>__keylog')``, beside the sync function."""
    return (ctx.state_schema, derived_name("%s__%s" % ctx.src, "__keylog"))


def _regclass(session, rel):
    return sql.Identifier(*rel).as_string(session.conn)


def _upper_row(session, ctx, upper):
    """``ROW('v1'::type1, ...)``: ``backfill_upper`` as constants of the key's own types, so the
    triggers' WHEN compares without a function call per row."""
    rows = session.query(TYPES_SQL, (_regclass(session, ctx.src), list(ctx.pk_cols)))
    types = dict((r["name"], r["type"]) for r in rows)
    # format_type is PostgreSQL's own deparse of the column's type (as pg_get_expr elsewhere)
    return sql.SQL("ROW({})").format(sql.SQL(", ").join(
        sql.SQL("{}::{}").format(sql.Literal(None if upper.get(c) is None else str(upper[c])), sql.SQL(types[c]))
        for c in ctx.pk_cols))


def install(session, templates, ctx, upper, lock_timeout_ms, retries):
    """Create (again) the function and both triggers; returns what was installed, [] when present."""
    if upper is None:
        return []
    present = dict((r["name"], r["enabled"]) for r in session.query(
        TRIGGERS_SQL, (_regclass(session, ctx.src), list(TRIGGERS))))
    if len(present) == len(TRIGGERS) and set(present.values()) == {"A"}:
        return []
    moved = list(ctx.pk_cols) + ([ctx.partition_key] if ctx.partition_key not in ctx.pk_cols else [])
    text = templates.render("backfill/key_log", session.conn, fn=function_name(ctx), src=ctx.src,
                            state_schema=ctx.state_schema, table_name=ctx.table_name, pk_cols=ctx.pk_cols,
                            moved_cols=moved, upper=_upper_row(session, ctx, upper), old=sql.SQL("OLD"),
                            new=sql.SQL("NEW"), delete_trigger=DELETE_TRIGGER, move_trigger=MOVE_TRIGGER)

    def work(s):
        for name in present:   # a half-installed log (one trigger disabled or missing) is redone whole
            s.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name),
                                                                        sql.Identifier(*ctx.src)))
        s.execute(text)

    run_with_lock_retry(session, work, lock_timeout_ms, retries, relations=[ctx.src],
                        what="creating the backfill's key log triggers on %s" % qualified(*ctx.src))
    return ["key log triggers %s on %s" % (", ".join(TRIGGERS), qualified(*ctx.src))]


def drop(session, ctx, lock_timeout_ms, retries):
    """Drop both triggers and the function; returns what was dropped."""
    present = [r["name"] for r in session.query(TRIGGERS_SQL, (_regclass(session, ctx.src), list(TRIGGERS)))]
    fn = function_name(ctx)
    has_fn = session.scalar("SELECT to_regprocedure(%s) IS NOT NULL",
                            (sql.Identifier(*fn).as_string(session.conn) + "()",))
    if not present and not has_fn:
        return []

    def work(s):
        for name in present:
            s.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(name),
                                                                        sql.Identifier(*ctx.src)))
        s.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*fn)))

    run_with_lock_retry(session, work, lock_timeout_ms, retries, relations=[ctx.src],
                        what="dropping the backfill's key log triggers on %s" % qualified(*ctx.src))
    return ["key log triggers on %s" % qualified(*ctx.src)]
