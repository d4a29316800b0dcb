# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The sync triggers: every write to ``src`` is mirrored into ``dst`` in the same transaction.

Forward (phases 1-2): original -> partitioned twin. Reverse (after switchover, used by the
switchover and rollback): new partitioned table -> ``<table>_old``. The function body is
``templates/sql/sync/trigger_function.sql.j2`` (docs/design.md, "The sync triggers", explains
every branch); this module computes its context from the catalog and installs it idempotently:
the function is replaced only when its generated body differs, a trigger is created only when
it is absent, and both happen under a short lock timeout with retries (locking.py, HP8):
CREATE TRIGGER takes SHARE ROW EXCLUSIVE on the source table, which would otherwise queue
behind a long transaction and stall every writer behind it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import hashlib
import re

from ansible_collections.dbops.partitioning.plugins.module_utils import sync_ddl, sync_ladder
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import run_with_lock_retry
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import TUNING

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

# The names of the sync triggers: every module that must recognise or drop them asks here.
# A guarded sync function (docs/design.md, "DDL during a migration") runs at most this many rows
# of one transaction in a subtransaction each: the subtransaction cache of a backend holds 64, and
# beyond it every other session's snapshot consults pg_subtrans.
GUARD_ROWS = 32
ROW_TRIGGER = "partitioning_sync"
TRUNCATE_TRIGGER = "partitioning_sync_truncate"
TRIGGER_NAMES = (ROW_TRIGGER, TRUNCATE_TRIGGER)
# The backfill's key log (migrate/key_log.py): on the original while phase 2 copies. Ours too: not
# the application's, dropped with the sync triggers by a rollback during the copy.
KEY_LOG_TRIGGERS = ("partitioning_sync_keylog_delete", "partitioning_sync_keylog_move")
OUR_TRIGGER_NAMES = TRIGGER_NAMES + KEY_LOG_TRIGGERS
DIRECTIONS = {"forward": "__fwd", "reverse": "__rev"}
# The guarded twin of a function: its name with the suffix swapped (same length, so the DDL guard
# finds one from the other in SQL): docs/design.md, "DDL during a migration".
GUARDED = {"__fwd": "__fwg", "__rev": "__rvg"}
_BODY = re.compile(r"\$dbops_sync\$(.*)\$dbops_sync\$", re.S)

FUNCTION_SQL = """
SELECT p.prosrc, obj_description(p.oid, 'pg_proc') AS comment FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %s AND p.proname = %s AND p.pronargs = 0
"""

# Our triggers on a table and on its partitions (TRUNCATE of one partition fires only the
# partition's own statement triggers), and wherever else a trigger of ours calls the same function
# (a partition detached since keeps its trigger); not the clones PostgreSQL keeps of the row
# trigger on each partition (tgparentid <> 0: they go with the parent's).
TRIGGERS_SQL = """
WITH tree AS (SELECT %(rel)s::regclass AS relid UNION SELECT relid FROM pg_partition_tree(%(rel)s::regclass)),
     ours AS (SELECT t.tgfoid FROM pg_trigger t WHERE t.tgrelid IN (SELECT relid FROM tree) AND t.tgname = ANY (%(names)s))
SELECT rn.nspname AS rel_schema, r.relname AS rel_name, t.tgname AS name, t.tgenabled AS enabled,
       n.nspname AS fn_schema, p.proname AS fn_name
FROM pg_trigger t
JOIN pg_class r ON r.oid = t.tgrelid
JOIN pg_namespace rn ON rn.oid = r.relnamespace
JOIN pg_proc p ON p.oid = t.tgfoid
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE (t.tgrelid IN (SELECT relid FROM tree) OR t.tgfoid IN (SELECT tgfoid FROM ours))
  AND NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgname = ANY (%(names)s)
ORDER BY t.tgrelid <> %(rel)s::regclass, r.relname, t.tgname
"""

PARTITIONS_SQL = """
SELECT n.nspname AS schema, c.relname AS name
FROM pg_partition_tree(%s::regclass) t JOIN pg_class c ON c.oid = t.relid JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE t.level > 0 ORDER BY t.level, c.relname
"""


def is_sync_trigger(name):
    """True for the name of one of our triggers (the sync's, whatever their direction, and the key log's)."""
    return name in OUR_TRIGGER_NAMES


def application_triggers(triggers):
    """``triggers`` (catalog.Trigger or dicts with ``name``) without our sync triggers."""
    return [t for t in triggers if not is_sync_trigger(t["name"] if isinstance(t, dict) else t.name)]


# The few spec fields this module reads, for callers that hold a state row rather than a TableSpec.
SyncSpec = collections.namedtuple("SyncSpec", "schema name table_name partition_key tuning")


def sync_spec(schema, name, table_name, partition_key):
    return SyncSpec(schema, name, table_name, partition_key, {})


def function_name(state_schema, spec, direction="forward"):
    """``(state_schema, '<schema>__<table>__fwd')`` (``__rev`` for the reverse direction)."""
    if direction not in DIRECTIONS:
        raise PartitioningError("Unknown sync direction %r (forward or reverse)." % direction)
    return (state_schema, derived_name("%s__%s" % (spec.schema, spec.name), DIRECTIONS[direction]))


def guarded_name(fn):
    """The guarded twin of the sync function ``fn`` ((schema, name))."""
    schema, name = fn
    return (schema, name[:-5] + GUARDED[name[-5:]])


def _regclass(session, rel):
    text = sql.Identifier(*rel).as_string(session.conn)
    return text if session.scalar("SELECT to_regclass(%s) IS NOT NULL", (text,)) else None


def _lock_knobs(spec, lock_timeout_ms, retries):
    """The lock timeout and retries for DDL on a table: the caller's, else the spec's tuning, else
    spec.TUNING's defaults."""
    tuning = getattr(spec, "tuning", None) or {}

    def knob(given, key):
        if given is not None:
            return given
        return TUNING[key][0] if tuning.get(key) is None else tuning[key]
    return knob(lock_timeout_ms, "lock_timeout_ms"), knob(retries, "swap_retries")


def sync_context(session, state_schema, spec, src, dst, info=None, direction="forward", guarded=False):
    """The template context of the sync function (see the top of trigger_function.sql.j2).

    ``cols``: the source's columns that are stored (generated columns are computed by the
    destination itself); ``key_cols``: the destination's primary key, how a row is found there
    (forward: the original's primary key plus the partition key); ``pk_cols``: the original's
    primary key, how a key is logged for reconciliation.
    """
    if info is None or (info.schema, info.name) != tuple(src):
        info = describe_table(session, *src)
        if info is None:
            raise PartitioningError("Table %s does not exist: cannot install the sync trigger." % qualified(*src))
    cols = info.stored_columns
    src_pk = info.pk_columns
    dst_info = describe_table(session, *dst)
    if dst_info is not None:
        dst_cols = dst_info.columns
        key_cols = dst_info.pk_columns
    elif session.check_mode:
        # Check mode: the twin was not created, so describe it as phase 1 would create it.
        dst_cols = info.columns
        key_cols = src_pk + ([spec.partition_key] if getattr(spec, "partition_key", None) not in src_pk else [])
    else:
        raise PartitioningError("Table %s does not exist: cannot install the sync trigger." % qualified(*dst))
    if not key_cols:
        raise PartitioningError("%s has no primary key: the sync trigger cannot find its rows." % qualified(*dst))
    missing = [c for c in key_cols if c not in cols]
    if missing:
        raise PartitioningError("The primary key of %s uses %s, which %s does not store; cannot sync."
                                % (qualified(*dst), ", ".join(missing), qualified(*src)))
    dst_generated = set(c.name for c in dst_cols if c.generated)
    cols = [c for c in cols if c not in dst_generated]
    always = set(c.name for c in dst_cols if c.identity == "a")
    set_cols = [c for c in cols if c not in key_cols and c not in always]
    # The original's primary key: the shorter key of the pair (the twin's adds the partition key).
    pk_cols = src_pk if direction == "forward" else key_cols
    fn = function_name(state_schema, spec, direction)
    return dict(
        fn=fn, dst=tuple(dst), state_schema=state_schema,
        table_name=spec.table_name, cols=cols, set_cols=set_cols, key_cols=key_cols, pk_cols=pk_cols,
        overriding=bool(always & set(cols)), guarded=guarded, ladder=None,
        guard_setting=guard_setting(fn), guard_rows=GUARD_ROWS,
        new=sql.SQL("NEW"), old=sql.SQL("OLD"), excluded=sql.SQL("EXCLUDED"))


def guard_setting(fn):
    """The transaction-local setting in which a guarded sync function counts the rows it mirrored
    (then 'fast' or 'drift'): one per function, whatever characters the table's name holds."""
    return "dbops_sync.g" + hashlib.md5(("%s.%s" % tuple(fn)).encode("utf-8")).hexdigest()[:16]


def _function_up_to_date(session, fn, text, comment=None):
    rows = session.query(FUNCTION_SQL, fn)
    if not rows:
        return False
    m = _BODY.search(text)
    if comment is not None and rows[0]["comment"] != comment:
        return False
    return bool(m) and rows[0]["prosrc"] == m.group(1)


def sync_triggers(session, rel, names=TRIGGER_NAMES):
    """Our sync triggers (or those of ``names``, e.g. OUR_TRIGGER_NAMES) on ``rel`` ((schema, name);
    none when it does not exist) and on its partitions, parent's first, as dicts: rel (schema,
    name), name, enabled, fn_schema, fn_name (the function the trigger calls)."""
    text = _regclass(session, rel)
    if not text:
        return []
    return [dict(r, rel=(r["rel_schema"], r["rel_name"]))
            for r in session.query(TRIGGERS_SQL, dict(rel=text, names=list(names)))]


def partitions(session, rel):
    """The partitions of ``rel`` at every level ((schema, name), outermost first); none for a plain table."""
    text = _regclass(session, rel)
    return [(r["schema"], r["name"]) for r in session.query(PARTITIONS_SQL, (text,))] if text else []


def _trigger_plan(session, src, fn):
    """Which of the two triggers must be created, replaced (calls another function) or enabled."""
    plan = dict(create_row=True, create_truncate=True, replace_row=False, replace_truncate=False,
                enable_row=True, enable_truncate=True)
    for t in sync_triggers(session, src):
        if t["rel"] != tuple(src):
            continue
        which = "row" if t["name"] == ROW_TRIGGER else "truncate"
        plan["create_" + which] = False
        plan["replace_" + which] = (t["fn_schema"], t["fn_name"]) != tuple(fn)
        plan["enable_" + which] = plan["replace_" + which] or t["enabled"] != "A"
    return plan


def _triggers_sql(templates, conn, src, fn, plan, partitions_=()):
    return templates.render("sync/triggers", conn, src=tuple(src), fn=fn, row_trigger=ROW_TRIGGER,
                            truncate_trigger=TRUNCATE_TRIGGER, partitions=list(partitions_), **plan)


def _function_statements(session, templates, state_schema, spec, src, dst, info, direction, guard, dst_end=None,
                         ladder=False):
    """[(fn, CREATE FUNCTION text, comment or None)]: the function the triggers call — fast where
    the DDL guard (event trigger) watches the source, guarded otherwise — and, with the guard, its
    guarded twin that the guard swaps in when the source's shape changes. The comment records the
    shape the body was generated for (sync_ddl). ``ladder``: the layout guard watches too, so the
    fast body may write the twin's partitions directly (sync_ladder); its comment then records the
    twin's layout."""
    out = []
    shape_md5 = sync_ddl.shape(session, state_schema, src)
    for guarded in ((False, True) if guard else (True,)):
        ctx = sync_context(session, state_schema, spec, src, dst, info, direction, guarded=guarded)
        if dst_end is not None:
            ctx["dst"] = tuple(dst_end)
        if not out:
            ctx["ladder"] = sync_ladder.rungs(session, dst) if ladder and not guarded else None
            layout = sync_ladder.layout(session, state_schema, dst, ctx["ladder"]) if ctx["ladder"] else None
            if layout is None and not session.check_mode:
                ctx["ladder"] = None      # a ladder whose layout the guard cannot read is never installed
            fn, comment = ctx["fn"], sync_ddl.comment_text(shape_md5, guard, layout)
        else:
            fn, comment = guarded_name(ctx["fn"]), None
        ctx["fn"] = fn
        out.append((fn, templates.render("sync/trigger_function", session.conn, **ctx), comment))
    return out


def install_sync(session, templates, state_schema, spec, src, dst, info=None, direction="forward",
                 lock_timeout_ms=None, retries=None, then=None):
    """Create (or bring up to date) the sync function and the triggers on ``src``.

    Returns the names of what was created or changed (empty: everything was in place).
    ``then(session, created)``, when given, runs in the same transaction right after the triggers
    exist (prepare.py records the backfill's upper key there); it runs also when nothing changed.
    """
    with session.transaction():
        sync_ddl.ensure_shape_function(session, templates, state_schema)
        guard = sync_ddl.ensure_guard(session, templates, state_schema, ROW_TRIGGER, GUARDED.items())
        # the ladder only where the layout guard watches (in check mode: where it would be created)
        ladder = guard and direction == "forward" and sync_ddl.ensure_guard(
            session, templates, state_schema, ROW_TRIGGER, GUARDED.items(), sync_ladder.LAYOUT_EVENT_TRIGGER)
    functions = _function_statements(session, templates, state_schema, spec, src, dst, info, direction, guard,
                                     ladder=ladder)
    fn = functions[0][0]
    stale = [(f, text, comment) for f, text, comment in functions if not _function_up_to_date(session, f, text, comment)]
    plan = _trigger_plan(session, src, fn)
    created = ["function %s" % qualified(*f) for f, _t, _c in stale]
    for which, name in (("row", ROW_TRIGGER), ("truncate", TRUNCATE_TRIGGER)):
        if plan["create_" + which] or plan["replace_" + which]:
            created.append("trigger %s on %s" % (name, qualified(*src)))
        elif plan["enable_" + which]:
            created.append("trigger %s on %s enabled always" % (name, qualified(*src)))
    triggers_needed = any(plan.values())

    def work(s):
        for f, text, comment in stale:
            s.execute(text)
            if comment is not None:
                s.execute(sql.SQL("COMMENT ON FUNCTION {}() IS {}").format(sql.Identifier(*f), sql.Literal(comment)))
        if triggers_needed:
            s.execute(_triggers_sql(templates, s.conn, src, fn, plan))
        if then is not None:
            return then(s, created)
        return None

    if created:
        run_with_lock_retry(session, work, *_lock_knobs(spec, lock_timeout_ms, retries),
                            relations=[tuple(src)], what="the sync triggers on %s" % qualified(*src))
    elif then is not None:
        with session.transaction():
            then(session, created)
    return created


def install_statements(session, templates, state_schema, spec, src_now, dst_now, src_end, dst_end,
                       direction="reverse"):
    """The sync function and both triggers for ``src_end`` -> ``dst_end`` as statements, to run
    inside another transaction (the swap's); rendered beforehand from the relations that will carry
    those names after it (``src_now``, ``dst_now``)."""
    sync_ddl.ensure_shape_function(session, templates, state_schema)
    guard = sync_ddl.guard_installed(session, state_schema)
    functions = _function_statements(session, templates, state_schema, spec, src_now, dst_now, None, direction,
                                     guard, dst_end=dst_end)
    stmts = []
    for f, text, comment in functions:
        stmts.append(sql.SQL(text))
        if comment is not None:
            stmts.append(sql.SQL("COMMENT ON FUNCTION {}() IS {}").format(sql.Identifier(*f), sql.Literal(comment)))
    plan = dict(create_row=True, create_truncate=True, replace_row=False, replace_truncate=False,
                enable_row=True, enable_truncate=True)
    # a TRUNCATE of one partition fires no trigger on the parent (HP20): each partition gets the
    # statement trigger too (partitions keep their names through the swap's renames)
    stmts.append(sql.SQL(_triggers_sql(templates, session.conn, src_end, functions[0][0], plan,
                                       partitions(session, src_now))))
    return stmts


def mirror_statements(session, templates, state_schema, spec, src, dst, row_trigger, truncate_trigger):
    """The forward sync ``src`` -> ``dst`` with triggers of their own names (a partition may carry the
    clone of its table's ``ROW_TRIGGER``), as statements for the caller's transaction. No DDL guard
    watches these triggers, so the function is the guarded body: a change of the table's shape
    never fails the application's write, it logs the keys (used by maintain/default_move.py)."""
    sync_ddl.ensure_shape_function(session, templates, state_schema)
    stmts = []
    for fn, text, comment in _function_statements(session, templates, state_schema, spec, src, dst, None, "forward",
                                                  False):
        stmts.append(sql.SQL(text))
        if comment is not None:
            stmts.append(sql.SQL("COMMENT ON FUNCTION {}() IS {}").format(sql.Identifier(*fn), sql.Literal(comment)))
    plan = dict(create_row=True, create_truncate=True, replace_row=False, replace_truncate=False,
                enable_row=True, enable_truncate=True)
    stmts.append(sql.SQL(templates.render("sync/triggers", session.conn, src=tuple(src), fn=function_name(
        state_schema, spec), row_trigger=row_trigger, truncate_trigger=truncate_trigger, partitions=[], **plan)))
    return stmts


def lock_in_writers_order(src, dst=None):
    """``LOCK TABLE src, dst IN ACCESS EXCLUSIVE MODE``: the order the application's writers take
    them (their statement locks ``src``, a partitioned ``src``'s partition, then the sync trigger
    locks ``dst``). LOCK TABLE on a partitioned table locks it and then its partitions. DDL that
    touches both must take this first: DROP TRIGGER on a partitioned table drops the partitions'
    clones before the parent's, i.e. locks a partition before its parent, and waits on a writer
    that holds the parent and waits on it in turn, until lock_timeout (docs/design.md, "Lock order")."""
    rels = [tuple(src)] + ([tuple(dst)] if dst else [])
    return sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
        sql.SQL(", ").join(sql.Identifier(*r) for r in rels))


def drop_statements(triggers):
    """DROP the sync ``triggers`` (as ``sync_triggers`` returns them), then the functions
    they call. No CASCADE: a function still used by a trigger elsewhere makes the DROP fail, which
    is the honest outcome. DROP TRIGGER takes ACCESS EXCLUSIVE on ``rel``: the caller runs these
    under a short lock timeout with retries (HP8)."""
    stmts = [sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(sql.Identifier(t["name"]), sql.Identifier(*t["rel"]))
             for t in triggers]
    for fn in sorted(set((t["fn_schema"], t["fn_name"]) for t in triggers)):
        stmts.append(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*fn)))
        if fn[1][-5:] in GUARDED:
            stmts.append(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*guarded_name(fn))))
    return stmts


def drop_sync(session, state_schema, spec, src, direction="forward", lock_timeout_ms=None, retries=None):
    """Drop the triggers on ``src`` that call the function of ``direction``, and that function;
    returns what was dropped."""
    fn = function_name(state_schema, spec, direction)
    mine = [t for t in sync_triggers(session, src) if (t["fn_schema"], t["fn_name"]) == tuple(fn)]
    stmts = ([lock_in_writers_order(src)] if mine else []) + drop_statements(mine)
    if not mine and session.query(FUNCTION_SQL, fn):
        stmts.append(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*fn)))
        stmts.append(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*guarded_name(fn))))
    if not stmts:
        return []
    dropped = ["trigger %s on %s" % (t["name"], qualified(*src)) for t in mine] + ["function %s" % qualified(*fn)]
    run_with_lock_retry(session, lambda s: [s.execute(x) for x in stmts], *_lock_knobs(spec, lock_timeout_ms, retries),
                        relations=[tuple(src)], what="dropping the sync triggers on %s" % qualified(*src))
    return dropped


def refuse_if_drifted(session, state_schema, row, what, playbook="phase1_prepare.yml"):
    """Refuse ``what`` (a phase after phase 1) when the application altered the original since its
    forward sync was generated (sync_ddl.drift): the writes go on, the re-run of ``playbook`` puts
    the twin back in step."""
    spec = sync_spec(row["table_schema"], row["table_relname"], row["table_name"], row["partition_key"])
    sync_ddl.refuse_if_drifted(session, state_schema, (row["table_schema"], row["table_relname"]),
                               (row["table_schema"], row["twin_relname"]),
                               function_name(state_schema, spec, "forward"), row["table_name"], what, playbook)
