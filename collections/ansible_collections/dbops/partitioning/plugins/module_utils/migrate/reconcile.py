# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Reconcile pending keys: make the twin's rows of a key equal to the original's.

docs/design.md, "Reconciling pending keys". Keys land in ``<state>.pending_keys`` when the
backfill's key log saw a write delete or move a row (``key_log.py``), when a batch in its
locking form saw a row it could not lock (a writer held it), and when a REPEATABLE READ
writer's trigger could not see the twin row.

An entry is consumed only when no batch that could still copy its key is in flight: its key
must not lie in the rest ``(checkpoint, upper]`` of an unfinished backfill range. A batch
moves its range's checkpoint in its own transaction, so a reconcile that sees the checkpoint
past a key also sees every row the batches before it copied: a row a batch copied after the
application deleted or moved it is there to be removed. For each such committed entry, in
one READ COMMITTED transaction per chunk:

* consume it (``DELETE ... RETURNING``; an uncommitted entry is invisible and waits);
* lock the original's row ``FOR UPDATE SKIP LOCKED``; a row still held by a writer is
  logged again for a later round (never waited for);
* a locked row: delete every twin row with that primary key, copy the current version
  (nothing can change it while we hold the lock);
* a key absent from the original: delete its twin rows *in the same statement* that checks
  the absence, so an insert committed meanwhile is either seen (kept) or its twin row is
  invisible to the delete (kept too).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils.keys import (
    canonical_key, key_bound, key_json, key_match, key_recordset)

try:
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover
    sql = None
    Json = None

CHUNK = 1000

# Committed entries whose key no unfinished range may still copy, oldest first.
_CONSUME = sql.SQL("""
DELETE FROM {p} WHERE id IN (
    SELECT p.id FROM {p} AS p
    WHERE p.table_name = %(t)s
      AND NOT EXISTS (SELECT 1 FROM {r} AS r
                      WHERE r.table_name = p.table_name AND NOT r.done
                        AND (r.checkpoint IS NULL OR {key} > {checkpoint}) AND {key} <= {upper})
    ORDER BY p.id LIMIT %(n)s FOR UPDATE OF p SKIP LOCKED)
RETURNING pk""") if sql else None


def pending_count(session, ctx):
    return session.scalar(sql.SQL("SELECT count(*) FROM {} WHERE table_name = %s").format(
        sql.Identifier(ctx.state_schema, "pending_keys")), (ctx.table_name,))


def _round(session, ctx, chunk):
    pending = sql.Identifier(ctx.state_schema, "pending_keys")
    src, dst = sql.Identifier(*ctx.src), sql.Identifier(*ctx.dst)
    keyset, key_o = key_recordset(ctx.src, "keys"), key_json(ctx.pk_cols, "o")
    o_is_k, d_is_k = key_match(ctx.pk_cols, "o", "k"), key_match(ctx.pk_cols, "d", "k")
    out = dict(consumed=0, copied=0, deleted=0, busy=0)
    with session.transaction():
        consumed = session.query(_CONSUME.format(
            p=pending, r=sql.Identifier(ctx.state_schema, "backfill_ranges"),
            key=key_bound(ctx.pk_cols, ctx.src, sql.SQL("p.pk")),
            checkpoint=key_bound(ctx.pk_cols, ctx.src, sql.SQL("r.checkpoint")),
            upper=key_bound(ctx.pk_cols, ctx.src, sql.SQL("r.upper_key"))), dict(t=ctx.table_name, n=chunk))
        out["consumed"] = len(consumed)
        if not consumed:
            return out
        keys = dict((canonical_key(r["pk"]), r["pk"]) for r in consumed)
        key_list = list(keys.values())
        locked = [r["k"] for r in session.query(sql.SQL(
            "SELECT {} AS k FROM {} AS o JOIN {} AS k ON {} FOR UPDATE OF o SKIP LOCKED").format(
                key_o, src, keyset, o_is_k),
            dict(keys=Json(key_list)))]
        locked_set = set(canonical_key(k) for k in locked)
        present = [r["k"] for r in session.query(sql.SQL(
            "SELECT {} AS k FROM {} AS o JOIN {} AS k ON {}").format(
                key_o, src, keyset, o_is_k),
            dict(keys=Json(key_list)))]
        busy = [k for k in present if canonical_key(k) not in locked_set]
        for k in busy:
            session.execute(sql.SQL("INSERT INTO {} (table_name, pk, reason) VALUES (%s, %s, 'reconcile-busy')")
                            .format(pending), (ctx.table_name, Json(k)), record=False)
        out["busy"] = len(busy)
        gone = [k for c, k in keys.items() if c not in locked_set and c not in set(canonical_key(b) for b in busy)]
        if gone:
            out["deleted"] += session.execute(sql.SQL(
                "DELETE FROM {} AS d USING {} AS k WHERE {} AND NOT EXISTS "
                "(SELECT 1 FROM {} AS o WHERE {})").format(
                    dst, keyset, d_is_k, src, o_is_k),
                dict(keys=Json(gone)), record=False) or 0
        if locked:
            out["deleted"] += session.execute(sql.SQL("DELETE FROM {} AS d USING {} AS k WHERE {}").format(
                dst, keyset, d_is_k), dict(keys=Json(locked)), record=False) or 0
            out["copied"] = session.execute(sql.SQL(
                "INSERT INTO {} ({}){} SELECT {} FROM {} AS o JOIN {} AS k ON {} ON CONFLICT DO NOTHING").format(
                    dst, sql.SQL(", ").join(sql.Identifier(c) for c in ctx.cols),
                    sql.SQL(" OVERRIDING SYSTEM VALUE" if ctx.overriding else ""),
                    sql.SQL(", ").join(sql.SQL("o.{}").format(sql.Identifier(c)) for c in ctx.cols),
                    src, keyset, o_is_k),
                dict(keys=Json(locked)), record=False) or 0
    return out


def reconcile(session, ctx, max_rounds=20, chunk=CHUNK):
    """Consume the table's committed pending keys (up to ``max_rounds`` chunks).

    Returns totals: consumed, copied, deleted, busy (logged again: still held by a writer).
    Nothing happens in check mode (the session skips changes; reads only)."""
    total = dict(consumed=0, copied=0, deleted=0, busy=0)
    if session.check_mode:
        return total
    for _unused in range(max_rounds):
        out = _round(session, ctx, chunk)
        for k in total:
            total[k] += out[k]
        # Keys logged again as busy are at the end of the queue: stop when a round only
        # found those, instead of spinning on a row a writer holds.
        if out["consumed"] < chunk or out["consumed"] == out["busy"]:
            break
    return total
