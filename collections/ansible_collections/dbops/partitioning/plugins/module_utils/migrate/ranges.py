# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backfill's ranges: the key space ``(nothing, backfill_upper]`` cut into one or more
ranges (``<state>.backfill_ranges``, state/002) so that ``copy_workers`` connections walk
disjoint ranges at once, each with its own checkpoint (docs/design.md, "Ranges, workers and
progress")."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.keys import key_in_range, key_json, key_order

try:
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover
    sql = None
    Json = None


def ranges_table(ctx):
    return sql.Identifier(ctx.state_schema, "backfill_ranges")


def ranges_of(session, state_schema, table_name):
    return session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s ORDER BY range_no").format(
        sql.Identifier(state_schema, "backfill_ranges")), (table_name,))


def get_ranges(session, ctx):
    return ranges_of(session, ctx.state_schema, ctx.table_name)


def max_key(session, ctx):
    return session.scalar(sql.SQL("SELECT {} FROM {} AS o ORDER BY {} LIMIT 1").format(
        key_json(ctx.pk_cols, "o"), sql.Identifier(*ctx.src), key_order(ctx.pk_cols, "o", desc=True)))


def estimate_rows(session, ctx):
    """reltuples when the table was analyzed; otherwise an exact count (once, at the start)."""
    est = session.scalar("SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
                         (sql.Identifier(*ctx.src).as_string(session.conn),))
    if est is None or est < 0:
        est = session.scalar(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*ctx.src)))
    return int(est)


def split_points(session, ctx, upper, workers, estimated, lower=None):
    """``workers - 1`` keys that cut ``(lower, upper]`` into ranges of similar size.

    Sampled (TABLESAMPLE SYSTEM, about 10000 keys of the whole table) so that a big table is
    not scanned; a range too small for the sample to cut is read whole (it is small)."""
    if workers <= 1:
        return []
    params = dict(hi=Json(upper), lo=Json(lower) if lower is not None else None,
                  pct=min(100.0, 100.0 * 10000 / max(estimated, 1)))
    cond = key_in_range(ctx.pk_cols, ctx.src, "o", lower is not None)
    keys = [r["k"] for r in session.query(
        sql.SQL("SELECT {} AS k FROM {} AS o TABLESAMPLE SYSTEM (%(pct)s) WHERE {} ORDER BY {}").format(
            key_json(ctx.pk_cols, "o"), sql.Identifier(*ctx.src), cond, key_order(ctx.pk_cols, "o")), params)]
    if len(keys) < workers:
        keys = [r["k"] for r in session.query(
            sql.SQL("SELECT {} AS k FROM {} AS o WHERE {} ORDER BY {}").format(
                key_json(ctx.pk_cols, "o"), sql.Identifier(*ctx.src), cond, key_order(ctx.pk_cols, "o")), params)]
    points = []
    for i in range(1, workers):
        k = keys[(i * len(keys)) // workers] if keys else None
        if k is not None and k != upper and (not points or points[-1] != k):
            points.append(k)
    return points


def split_for_workers(session, ctx, workers):
    """More workers than unfinished ranges (``copy_workers`` raised on a resumed backfill):
    cut the unfinished ranges' rest ``(checkpoint, upper]`` into more ranges, each range in
    one transaction with its row locked, so a checkpoint never moves back and no key is in two
    ranges. Returns the number of ranges added."""
    todo = [r for r in get_ranges(session, ctx) if not r["done"]]
    if not todo or len(todo) >= workers:
        return 0
    estimated = estimate_rows(session, ctx)
    per_range = max(1, workers // len(todo))
    added = 0
    for r in todo:
        if per_range <= 1:
            break
        with session.transaction():
            rows = session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s AND range_no = %s FOR UPDATE")
                                 .format(ranges_table(ctx)), (ctx.table_name, r["range_no"]))
            if not rows or rows[0]["done"]:
                continue
            rng = rows[0]
            points = split_points(session, ctx, rng["upper_key"], per_range, estimated, lower=rng["checkpoint"])
            if not points:
                continue
            next_no = session.scalar(sql.SQL("SELECT max(range_no) + 1 FROM {} WHERE table_name = %s").format(
                ranges_table(ctx)), (ctx.table_name,))
            bounds = points + [rng["upper_key"]]
            session.execute(sql.SQL("UPDATE {} SET upper_key = %s, updated_at = now() "
                                    "WHERE table_name = %s AND range_no = %s").format(ranges_table(ctx)),
                            (Json(points[0]), ctx.table_name, rng["range_no"]), record=False)
            for i in range(len(points)):
                session.execute(sql.SQL("INSERT INTO {} (table_name, range_no, lower_key, upper_key, checkpoint) "
                                        "VALUES (%s, %s, %s, %s, %s)").format(ranges_table(ctx)),
                                (ctx.table_name, next_no + i, Json(bounds[i]), Json(bounds[i + 1]), Json(bounds[i])),
                                record=False)
            added += len(points)
    return added


def normalize_key(ctx, value):
    """A key as the backfill stores it: ``{pk column: value}`` (also accepts a list in key
    order, or a bare value for a one-column key)."""
    if value is None or isinstance(value, dict):
        return value
    if isinstance(value, (list, tuple)):
        if len(value) != len(ctx.pk_cols):
            raise PartitioningError("backfill_upper %r does not match the primary key (%s)."
                                    % (value, ", ".join(ctx.pk_cols)))
        return dict(zip(ctx.pk_cols, value))
    if len(ctx.pk_cols) == 1:
        return {ctx.pk_cols[0]: value}
    raise PartitioningError("backfill_upper %r does not match the primary key (%s)." % (value, ", ".join(ctx.pk_cols)))


def plan_ranges(session, ctx, row, workers):
    """What the backfill would walk: ``(upper, estimated, [(lower, upper)])`` (no change)."""
    upper = normalize_key(ctx, row.get("backfill_upper"))
    if upper is None:
        # Phase 1 records the largest key right after the triggers exist. When it did not,
        # the largest key now is as good: the triggers already exist (phase 'prepared'), so
        # every row above it was written by a transaction whose trigger copied it.
        upper = max_key(session, ctx)
    if upper is None:
        return None, 0, []
    estimated = estimate_rows(session, ctx)
    points = split_points(session, ctx, upper, workers, estimated)
    bounds = [None] + points + [upper]
    return upper, estimated, [(bounds[i], bounds[i + 1]) for i in range(len(bounds) - 1)]
