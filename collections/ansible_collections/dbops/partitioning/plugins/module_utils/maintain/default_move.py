# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rows in the default partition, moved out online (docs/design.md, "Rows in the default
partition, moved out online"; runbook docs/runbooks/maintenance.md).

PostgreSQL refuses a range partition while rows of its range sit in the default partition D
(HP14), and a DELETE of them under lock is as long as their number. Instead D is rebuilt with
the machinery of phases 1-3 applied to it, each step resumable (``<state>.default_moves``,
state/006) and each lock within the table's lock budget:

``planned -> staged``  a staging table S, partitioned like the table P, beside D: the wanted range
    partitions, each with a CHECK matching its bound, and a new default partition D' with a CHECK
    equal to the partition constraint it will have in P; empty, made in one short transaction.
``staged -> copying``  the generated sync (sync.py, guarded body) on D into S: every write that
    reaches D is mirrored into S in the writer's transaction. D's largest key is read in the same
    transaction as CREATE TRIGGER (which waits for every writer of D): a later key is the trigger's.
``copying -> copied``  D's rows up to that key copied into S by phase 2's locking batch form (FOR
    SHARE SKIP LOCKED, ON CONFLICT DO NOTHING, keys it could not lock to pending_keys), each batch
    committed with its checkpoint.
``copied -> verified``  pending keys reconciled, D and S compared in one snapshot.
``verified -> swapped``  one short transaction under the lock budget, retried with backoff: P, D and
    S locked (table first), no pending key left, the trigger dropped, D detached, each staged
    partition detached from S and attached to P (its CHECK spares the validation scan; P has no
    default partition at that moment, so none is scanned), D' attached as the default (its CHECK
    spares that scan too) under D's name, the CHECKs dropped. Catalog work only, whatever the size.
``swapped -> (done)``  D (renamed ``<D>_moved``), S and the sync function dropped.

Longer than our other modules because it is one state machine: each step reads the names, the
bounds and the lock budget that the steps before it settled, and a reader checks the resumability
of a step against its neighbours; the machinery it borrows stays in its phase's home.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import derived_name, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.keys import (
    key_bound, key_columns, key_in_range, key_json, key_match, key_order, key_row)
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import run_with_lock_retry
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import steps
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.functions import functions_schema
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import backfill, verify
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.reconcile import reconcile

try:
    import psycopg2
    from psycopg2 import errors as psycopg2_errors
    from psycopg2 import sql
    from psycopg2.extras import Json
except ImportError:  # pragma: no cover
    psycopg2 = None
    psycopg2_errors = None
    sql = None
    Json = None

MOVE_TRIGGER = "partitioning_move"
MOVE_TRUNCATE_TRIGGER = "partitioning_move_truncate"
BATCH_ROWS = 5000
# A batch or a reconcile that met a row a concurrent UPDATE moved to another partition (SQLSTATE
# 40001, PostgreSQL's rule for every partitioned table) is run again: its next snapshot sees the move.
SERIALIZATION_RETRIES = 20
# The SQLSTATE the swap raises when a key is still pending (rolled back, reconciled, tried again).
PENDING = "DBP02"

DEFAULT_SQL = """
SELECT n.nspname AS schema, c.relname AS name FROM pg_catalog.pg_partitioned_table pt
  JOIN pg_catalog.pg_class c ON c.oid = pt.partdefid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE pt.partrelid = %s::regclass"""
RANGE_BOUNDS_SQL = """
SELECT pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_catalog.pg_inherits i
  JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
 WHERE i.inhparent = %s::regclass AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'"""
# What a partition must carry that CREATE TABLE ... PARTITION OF does not give it: the owner and
# the grants of the partition it replaces, and that partition's per-partition TRUNCATE triggers
# (the reverse sync after the switchover, HP20), as statements for ``%(rel)s``.
DRESS_SQL = """
SELECT pg_catalog.format('ALTER TABLE %%s OWNER TO %%I', %(rel)s, pg_catalog.pg_get_userbyid(c.relowner))
  FROM pg_catalog.pg_class c WHERE c.oid = %(like)s::regclass AND c.relowner <> (SELECT oid FROM pg_catalog.pg_roles
                                                                                  WHERE rolname = current_user)
UNION ALL
SELECT pg_catalog.format('GRANT %%s ON TABLE %%s TO %%s', a.privilege_type, %(rel)s,
                         CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(a.grantee)) END)
  FROM pg_catalog.pg_class c, aclexplode(c.relacl) a WHERE c.oid = %(like)s::regclass AND a.grantee <> c.relowner
UNION ALL
SELECT pg_catalog.format('CREATE TRIGGER %%I AFTER TRUNCATE ON %%s FOR EACH STATEMENT EXECUTE FUNCTION %%I.%%I(); '
                         'ALTER TABLE %%s ENABLE ALWAYS TRIGGER %%I', t.tgname, %(rel)s, n.nspname, p.proname,
                         %(rel)s, t.tgname)
  FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE t.tgrelid = %(like)s::regclass AND t.tgname = %(truncate)s AND t.tgparentid = 0"""


def move_out_of_default(session, templates, target, ranges, budget_ms, state_schema=None, hooks=None):
    """Create the range partitions ``ranges`` (premake's blocked ranges: dicts with partition_name,
    lower_bound, upper_bound) of ``target`` (maintain/target.Target) whose rows sit in its default
    partition, moving those rows out online; a move under way (a killed run) is finished first, and
    with no ranges that is all it does (premake asks so before it plans).
    Returns dict(created=[partition names], warnings=[...], steps=[outcomes]). ``hooks`` (tests):
    name -> callable(session, move) run after each step ('staged', 'copying', 'copied', 'verified',
    'swapped'), inside each copy batch and inside the swap before their commit ('batch', 'swap')."""
    state_schema = state_schema or target.spec.state_schema
    result = dict(created=[], warnings=[], steps=[])
    if not ranges and (state_store.installed_version(session, state_schema) < 6
                       or _load(session, state_schema, target.table_name) is None):
        return result
    refusal = _refusal(session, target)
    if refusal:
        result["warnings"].append(refusal)
        return result
    if session.check_mode:
        return _plan_only(session, target, ranges, result)
    state_store.ensure_state_schema(session, templates, state_schema)
    fn_schema = functions_schema(session, templates, state_schema)
    move = _load(session, state_schema, target.table_name)
    if move is not None and (move["parent_schema"], move["parent_name"]) != tuple(target.parent):
        _abandon(session, state_schema, target, move)      # the table changed since (rolled back, swapped)
        move = None
    if move is None:
        if not ranges:
            return result
        move = _begin(session, state_schema, target, ranges)
    elif ranges and [r["partition_name"] for r in move["ranges"]] != [r["partition_name"] for r in ranges]:
        result["warnings"].append("%s: finishing the move out of the default partition begun for %s; the other "
                                  "ranges follow on the next run" % (
                                      target.table_name, ", ".join(r["partition_name"] for r in move["ranges"])))
    mover = _Mover(session, templates, target, state_schema, fn_schema, move, budget_ms, hooks or {})
    outcome = mover.run()
    result["steps"].extend(mover.outcomes)
    result["warnings"].extend(mover.warnings)
    if outcome:
        result["created"].extend(r["partition_name"] for r in move["ranges"])
    return result


def batch_statement(ctx, has_lower):
    """One copy batch from D (``ctx.src``) into the staging table (``ctx.dst``): the next ``%(limit)s``
    keys after ``%(lo)s`` up to ``%(hi)s`` seen in the statement's snapshot; the rows among them it
    can lock ``FOR SHARE SKIP LOCKED`` (a row deleted or moved before the lock is not returned, a
    newer version is) inserted ``ON CONFLICT DO NOTHING`` (the trigger's newer version wins); the
    keys a writer held logged to pending_keys for the reconcile. Phase 2's locking batch form,
    without its range bookkeeping (the move keeps its checkpoint in its own row)."""
    pk, src = ctx.pk_cols, ctx.src
    last = sql.SQL("ROW({})").format(sql.SQL(", ").join(
        sql.SQL("(SELECT l.{} FROM last_key AS l)").format(sql.Identifier(c)) for c in pk))
    lower = sql.SQL("{} > {} AND ").format(key_row(pk, "o"), key_bound(pk, src, "lo")) if has_lower else sql.SQL("")
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in ctx.cols)
    return sql.SQL("""
WITH seen AS MATERIALIZED (
    SELECT {keys} FROM {src} AS o WHERE {in_range} ORDER BY {order} LIMIT %(limit)s
), last_key AS (
    SELECT {pk} FROM seen ORDER BY {order_desc} LIMIT 1
), locked AS MATERIALIZED (
    SELECT o.* FROM {src} AS o WHERE {lower}{row} <= {last} FOR SHARE OF o SKIP LOCKED
), ins AS (
    INSERT INTO {dst} ({cols}) SELECT {cols} FROM locked ON CONFLICT DO NOTHING RETURNING 1
), logged AS (
    INSERT INTO {pending} (table_name, pk, reason)
    SELECT {table_name}, {key_s}, 'batch-skipped' FROM seen AS s
     WHERE NOT EXISTS (SELECT 1 FROM locked AS l WHERE {match})
    RETURNING 1
)
SELECT (SELECT count(*) FROM seen) AS seen, (SELECT count(*) FROM locked) AS locked,
       (SELECT count(*) FROM ins) AS inserted, (SELECT count(*) FROM logged) AS skipped,
       (SELECT {key_l} FROM last_key AS l) AS last_key""").format(
        keys=key_columns(pk, "o"), src=sql.Identifier(*src), in_range=key_in_range(pk, src, "o", has_lower),
        order=key_order(pk, "o"), pk=sql.SQL(", ").join(sql.Identifier(c) for c in pk),
        order_desc=key_order(pk, "seen", desc=True), lower=lower, row=key_row(pk, "o"), last=last,
        dst=sql.Identifier(*ctx.dst), cols=cols, pending=sql.Identifier(ctx.state_schema, "pending_keys"),
        table_name=sql.Literal(ctx.table_name), key_s=key_json(pk, "s"), match=key_match(pk, "l", "s"),
        key_l=key_json(pk, "l"))


def _refusal(session, target):
    """Why the table's default partition cannot be rebuilt online (None: it can)."""
    if target.strategy != "range":
        return "%s: only a range-partitioned table's default partition is moved out" % target.table_name
    default = session.query(DEFAULT_SQL, (target.regclass(session),))
    if not default:
        return "%s has no default partition: nothing to move" % target.label
    if default[0]["schema"] != target.parent[0]:
        return ("%s: its default partition %s is in another schema; the rows in it stay there"
                % (target.table_name, qualified(default[0]["schema"], default[0]["name"])))
    referenced = session.scalar("SELECT count(*) FROM pg_catalog.pg_constraint WHERE contype = 'f' AND confrelid = "
                                "%s::regclass", (target.regclass(session),))
    if referenced:
        return ("%s: other tables' foreign keys reference it: detaching its default partition would check them "
                "under lock; the rows in the default partition stay there" % target.table_name)
    return None


def _plan_only(session, target, ranges, result):
    for r in ranges:
        result["created"].append(r["partition_name"])
        result["steps"].append(dict(step="move", partition=r["partition_name"], status="would_move", detail=(
            "%d rows of [%s, %s) out of the default partition, online" % (r.get("rows") or 0, r["lower_bound"],
                                                                          r["upper_bound"])),
                                    lock_mode="ACCESS EXCLUSIVE", lock_ms=None, attempts=0))
    session.queries.append("-- move out of the default partition of %s: %s (staging table, sync trigger, "
                           "batched copy, verification, swap under the lock budget)"
                           % (target.label, ", ".join(r["partition_name"] for r in ranges)))
    session.changed = True
    return result


# --- the state row ----------------------------------------------------------------------------

def _moves(state_schema):
    return sql.Identifier(state_schema, "default_moves")


def _load(session, state_schema, table_name):
    rows = session.query(sql.SQL("SELECT * FROM {} WHERE table_name = %s").format(_moves(state_schema)),
                         (table_name,))
    return dict(rows[0]) if rows else None


def _begin(session, state_schema, target, ranges):
    old = session.query(DEFAULT_SQL, (target.regclass(session),))[0]["name"]
    base = target.parent[1]
    move = dict(table_name=target.table_name, parent_schema=target.parent[0], parent_name=base, old_default=old,
                staging=derived_name(base, "_move"), new_default=derived_name(old, "_new"),
                moved_default=derived_name(old, "_moved"), status="planned",
                ranges=[dict(partition_name=r["partition_name"], lower_bound=r["lower_bound"],
                             upper_bound=r["upper_bound"]) for r in ranges])
    with session.transaction():
        session.execute(sql.SQL(
            "INSERT INTO {} (table_name, parent_schema, parent_name, old_default, staging, new_default, moved_default, "
            "ranges, status) VALUES (%(table_name)s, %(parent_schema)s, %(parent_name)s, %(old_default)s, "
            "%(staging)s, %(new_default)s, %(moved_default)s, %(ranges)s, 'planned')").format(_moves(state_schema)),
            dict(move, ranges=Json(move["ranges"])), record=False)
    return _load(session, state_schema, target.table_name)


def _abandon(session, state_schema, target, move):
    """Drop what a move left (its trigger, the staging table, the sync function) and forget it."""
    schema = move["parent_schema"]
    fn = sync.function_name(state_schema, _sync_spec(move))

    def work(s):
        if s.scalar("SELECT to_regclass(%s) IS NOT NULL", (qualified(schema, move["old_default"]),)):
            for name in (MOVE_TRIGGER, MOVE_TRUNCATE_TRIGGER):
                s.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON {}").format(
                    sql.Identifier(name), sql.Identifier(schema, move["old_default"])))
        s.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, move["staging"])))
        s.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*fn)))
        s.execute(sql.SQL("DELETE FROM {} WHERE table_name = %s").format(_moves(state_schema)),
                  (move["table_name"],), record=False)
    run_with_lock_retry(session, work, target.lock_budget_ms, target.retries,
                        relations=[(schema, move["old_default"])], what="abandoning the move of %s" % target.label)


def _sync_spec(move):
    return sync.sync_spec(move["parent_schema"], move["old_default"], "%s (default move)" % move["table_name"], None)


class _Mover:
    """One move, step by step from its recorded status."""

    def __init__(self, session, templates, target, state_schema, fn_schema, move, budget_ms, hooks):
        self.s, self.templates, self.target, self.state = session, templates, target, state_schema
        self.fn_schema, self.move, self.budget_ms, self.hooks = fn_schema, move, int(budget_ms), hooks
        schema = move["parent_schema"]
        self.parent = (schema, move["parent_name"])
        self.old = (schema, move["old_default"])
        self.staging = (schema, move["staging"])
        self.new = (schema, move["new_default"])
        self.moved = (schema, move["moved_default"])
        self.outcomes, self.warnings = [], []

    def run(self):
        for status, step in (("planned", self.stage), ("staged", self.start_sync), ("copying", self.copy),
                             ("copied", self.check), ("verified", self.swap), ("swapped", self.finish)):
            if self.move["status"] != status:
                continue
            if not step():
                return False
            if self.move["status"] in self.hooks:
                self.hooks[self.move["status"]](self.s, self.move)
        return True

    # -- helpers --
    def _ident(self, rel):
        return sql.Identifier(*rel)

    def _set(self, s, status, **fields):
        fields["status"] = status
        cols = sorted(fields)
        s.execute(sql.SQL("UPDATE {} SET {}, updated_at = now() WHERE table_name = %(table_name)s").format(
            _moves(self.state), sql.SQL(", ").join(sql.SQL("{} = {}").format(sql.Identifier(c), sql.Placeholder(c))
                                                   for c in cols)),
                  dict(dict((c, Json(v) if c in ("upper_key", "checkpoint") and v is not None else v)
                            for c, v in fields.items()), table_name=self.move["table_name"]), record=False)
        self.move.update(fields)

    def _ddl(self, work, what):
        report = {}
        out = run_with_lock_retry(self.s, work, self.budget_ms, self.target.retries, relations=[self.parent],
                                  what="%s of %s" % (what, self.target.label), report=report)
        return out, report

    def _fn(self, name, *args):
        return self.s.scalar(sql.SQL("SELECT {}({})").format(sql.Identifier(self.fn_schema, name),
                                                             sql.SQL(", ").join(sql.Placeholder() * len(args))), args)

    def _bound(self, r):
        key_type = self.target.key_type
        return sql.SQL("FROM ({}) TO ({})").format(sql.SQL(self._fn("bound_sql", r["lower_bound"], key_type, "MINVALUE")),
                                                   sql.SQL(self._fn("bound_sql", r["upper_bound"], key_type, "MAXVALUE")))

    def _dress(self, s, rel):
        """Owner, grants and per-partition TRUNCATE triggers of the old default partition on ``rel``."""
        for row in s.query(DRESS_SQL, dict(rel=sql.Identifier(*rel).as_string(s.conn),
                                           like=sql.Identifier(*self.old).as_string(s.conn),
                                           truncate=sync.TRUNCATE_TRIGGER)):
            s.execute(sql.SQL(list(row.values())[0]))

    def _new_default_check(self, s):
        """The partition constraint D' will have in P, as PostgreSQL writes it: read from a scratch
        copy of P's range bounds plus the new ones in pg_temp (a CHECK that equals it lets ATTACH
        skip the scan of D')."""
        key, key_type = self.target.spec.partition_key, sql.SQL(self.target.key_type)
        scratch = ("pg_temp", "dbops_move_scratch")
        s.query("SET LOCAL TimeZone = 'UTC'")       # the same text from every session (compared by _drift)
        s.query(sql.SQL("CREATE TEMP TABLE {} ({} {}) PARTITION BY RANGE ({})").format(
            sql.Identifier(*scratch), sql.Identifier(key), key_type, sql.Identifier(key)))
        bounds = [sql.SQL(r["bound"]) for r in s.query(RANGE_BOUNDS_SQL, (sql.Identifier(*self.parent).as_string(
            s.conn),))]
        bounds += [sql.SQL("FOR VALUES {}").format(self._bound(r)) for r in self.move["ranges"]]
        for i, bound in enumerate(bounds + [sql.SQL("DEFAULT")]):
            s.query(sql.SQL("CREATE TEMP TABLE {} PARTITION OF {} {}").format(
                sql.Identifier("pg_temp", "dbops_move_scratch_%d" % i), sql.Identifier(*scratch), bound))
        check = s.scalar("SELECT pg_catalog.pg_get_partition_constraintdef(%s::regclass)",
                         ("pg_temp.dbops_move_scratch_%d" % len(bounds),))
        s.query(sql.SQL("DROP TABLE {}").format(sql.Identifier(*scratch)))
        return check

    # -- steps --
    def stage(self):
        """The staging table beside the default partition: empty, one short transaction."""
        p, st = self._ident(self.parent), self._ident(self.staging)
        key = sql.Identifier(self.target.spec.partition_key)

        def work(s):
            s.execute(sql.SQL("CREATE TABLE {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED "
                              "INCLUDING INDEXES INCLUDING STORAGE INCLUDING COMPRESSION) PARTITION BY RANGE ({})")
                      .format(st, p, key))
            for fk in s.query("SELECT conname, pg_catalog.pg_get_constraintdef(oid) AS def FROM pg_catalog.pg_constraint "
                              "WHERE conrelid = %s::regclass AND contype = 'f' AND conparentid = 0",
                              (sql.Identifier(*self.parent).as_string(s.conn),)):
                s.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(st, sql.Identifier(fk["conname"]),
                                                                                sql.SQL(fk["def"])))
            for r in self.move["ranges"]:
                part = (self.parent[0], r["partition_name"])
                s.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES {}").format(
                    self._ident(part), st, self._bound(r)))
                s.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK ({})").format(
                    self._ident(part), sql.Identifier(derived_name(part[1], "_bound")), sql.SQL(self._fn(
                        "range_condition", self.target.spec.partition_key, self.target.key_type, r["lower_bound"],
                        r["upper_bound"]))))
                self._dress(s, part)
            check = self._new_default_check(s)
            s.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} DEFAULT").format(self._ident(self.new), st))
            s.execute(sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} CHECK {}").format(
                self._ident(self.new), sql.Identifier(derived_name(self.new[1], "_bound")), sql.SQL(check)))
            self._dress(s, self.new)
            self._set(s, "staged", default_check=check)
        self._ddl(work, "staging the move out of the default partition")
        return True

    def start_sync(self):
        """The sync trigger on the old default partition, and its largest key read under its lock."""
        ctx = self.context()

        def work(s):
            for stmt in sync.mirror_statements(s, self.templates, self.state, _sync_spec(self.move), self.old,
                                               self.staging, MOVE_TRIGGER, MOVE_TRUNCATE_TRIGGER):
                s.execute(stmt)
            self._set(s, "copying", upper_key=s.scalar(sql.SQL("SELECT {} FROM {} AS o ORDER BY {} LIMIT 1").format(
                key_json(ctx.pk_cols, "o"), self._ident(self.old), key_order(ctx.pk_cols, "o", desc=True))),
                checkpoint=None)
        self._ddl(work, "the sync trigger on %s" % qualified(*self.old))
        return True

    def context(self):
        old, staging = describe_table(self.s, *self.old), describe_table(self.s, *self.staging)
        generated = set(c.name for c in staging.columns if c.generated)
        cols = [c for c in old.stored_columns if c not in generated]
        return backfill.CopyContext(state_schema=self.state, table_name=_sync_spec(self.move).table_name,
                                    src=self.old, dst=self.staging, pk_cols=old.pk_columns,
                                    partition_key=self.target.spec.partition_key, cols=cols,
                                    all_cols=[c.name for c in old.columns], overriding=False)

    def _retrying(self, fn):
        for attempt in range(SERIALIZATION_RETRIES + 1):
            try:
                return fn()
            except psycopg2_errors.SerializationFailure:
                if attempt == SERIALIZATION_RETRIES:
                    raise
                time.sleep(0.01 * (attempt + 1))
        return None

    def copy(self):
        """D's rows up to the recorded key, batch by batch, each committed with its checkpoint."""
        ctx = self.context()
        backfill.guard_session(self.s)
        while self.move["upper_key"] is not None:
            def batch():
                with self.s.transaction():
                    lo = self.move["checkpoint"]
                    res = self.s.query(batch_statement(ctx, lo is not None), dict(
                        lo=Json(lo) if lo is not None else None, hi=Json(self.move["upper_key"]), limit=BATCH_ROWS))[0]
                    last = res["last_key"] if res["last_key"] is not None else lo
                    self._set(self.s, "copying" if res["seen"] >= BATCH_ROWS else "copied", checkpoint=last,
                              rows_copied=int(self.move["rows_copied"]) + int(res["locked"]))
                    if "batch" in self.hooks:
                        self.hooks["batch"](self.s, self.move)
                    return res
            self._retrying(batch)
            if self.move["status"] == "copied":
                return True
        with self.s.transaction():
            self._set(self.s, "copied")
        return True

    def _drift(self):
        """Why the staged tables no longer fit the table (None: they do): its columns changed (the
        application's DDL reaches D, not S), or its partitions did (D''s CHECK was made for them)."""
        shape = ("SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', ' ORDER BY attname) "
                 "FROM pg_catalog.pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped")
        if self.s.scalar(shape, (qualified(*self.parent),)) != self.s.scalar(shape, (qualified(*self.staging),)):
            return "the columns of %s changed since the move began" % self.target.label
        with self.s.transaction():
            check = self._new_default_check(self.s)
        if check != self.move["default_check"]:
            return "the partitions of %s changed since the move began" % self.target.label
        return None

    def _abandon_if_drifted(self):
        reason = self._drift()
        if reason is None:
            return False
        self.warnings.append("%s: %s; the move out of the default partition starts again on the next run"
                             % (self.target.table_name, reason))
        _abandon(self.s, self.state, self.target, self.move)
        return True

    def check(self):
        """Pending keys reconciled, then D and S compared in one snapshot."""
        if self._abandon_if_drifted():
            return False
        ctx = self.context()
        self._retrying(lambda: reconcile(self.s, ctx))
        res = self._retrying(lambda: verify.compare_settled(self.s, ctx, self.old, sql.SQL("true"), self.staging,
                                                            sql.SQL("true")))
        if not res["ok"]:
            self.warnings.append("%s: the copy of the default partition %s differs from it (%s vs %s rows; %s); the "
                                 "move is abandoned and starts again on the next run" % (
                                     self.target.table_name, qualified(*self.old), res["rows_source"],
                                     res["rows_target"], verify.format_differences(res["differences"])))
            _abandon(self.s, self.state, self.target, self.move)
            return False
        with self.s.transaction():
            self._set(self.s, "verified")
        return True

    def swap_statements(self, ctx):
        """The swap as one round trip of statements: the locks (table first), a refusal while a key is
        pending, then catalog work only; its last statement returns the milliseconds since the
        table's lock was granted."""
        p, st, old, new = (self._ident(r) for r in (self.parent, self.staging, self.old, self.new))
        pending = sql.SQL("SELECT 1 FROM {} WHERE table_name = {}").format(
            sql.Identifier(ctx.state_schema, "pending_keys"), sql.Literal(ctx.table_name)).as_string(self.s.conn)
        stmts = [sql.SQL("LOCK TABLE ONLY {} IN ACCESS EXCLUSIVE MODE").format(p),
                 sql.SQL("SELECT pg_catalog.set_config('dbops.move_locked_at', clock_timestamp()::text, true)"),
                 sql.SQL("LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE").format(old, st),
                 sql.SQL("DO {}").format(sql.Literal(
                     "BEGIN IF EXISTS (%s) THEN RAISE EXCEPTION USING ERRCODE = '%s', MESSAGE = 'keys pending'; "
                     "END IF; END" % (pending, PENDING)))]
        stmts += [sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(t), old)
                  for t in (MOVE_TRIGGER, MOVE_TRUNCATE_TRIGGER)]
        stmts += [sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(p, old),
                  sql.SQL("ALTER TABLE {} RENAME TO {}").format(old, sql.Identifier(self.moved[1]))]
        for r in self.move["ranges"]:
            part = self._ident((self.parent[0], r["partition_name"]))
            stmts += [sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(st, part),
                      sql.SQL("ALTER TABLE {} ATTACH PARTITION {} FOR VALUES {}").format(p, part, self._bound(r)),
                      sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                          part, sql.Identifier(derived_name(r["partition_name"], "_bound")))]
        stmts += [sql.SQL("ALTER TABLE {} DETACH PARTITION {}").format(st, new),
                  sql.SQL("ALTER TABLE {} RENAME TO {}").format(new, sql.Identifier(self.old[1])),
                  sql.SQL("ALTER TABLE {} ATTACH PARTITION {} DEFAULT").format(p, old),
                  sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                      old, sql.Identifier(derived_name(self.new[1], "_bound"))),
                  sql.SQL("UPDATE {} SET status = 'swapped', updated_at = now() WHERE table_name = {}").format(
                      _moves(self.state), sql.Literal(self.move["table_name"])),
                  sql.SQL("SELECT extract(epoch FROM clock_timestamp() - pg_catalog.current_setting("
                          "'dbops.move_locked_at')::timestamptz) * 1000 AS held_ms")]
        return sql.SQL(";\n").join(stmts)

    def swap(self):
        """The one short transaction: catalog work only, under the lock budget."""
        if self._abandon_if_drifted():
            return False
        ctx = self.context()
        statement = self.swap_statements(ctx)

        def work(s):
            try:
                held = s.execute_returning(statement)[0]["held_ms"]
            except psycopg2.Error as e:
                if e.pgcode != PENDING:
                    raise
                return None
            if "swap" in self.hooks:
                self.hooks["swap"](s, self.move)
            return held

        for _round in range(3):
            held, report = self._ddl(work, "the swap of the default partition")
            if held is not None:
                break
            self._retrying(lambda: reconcile(self.s, ctx))    # keys a writer held: reconciled, then again
        else:
            self.warnings.append("%s: keys of the default partition stayed pending (held by writers); the move "
                                 "continues on the next run" % self.target.table_name)
            return False
        self.move["status"] = "swapped"
        lock_ms = round(float(held) + report["commit_ms"], 3)
        names = ", ".join(r["partition_name"] for r in self.move["ranges"])
        out = dict(step="move", partition=names, status="moved", lock_mode="ACCESS EXCLUSIVE", lock_ms=lock_ms,
                   attempts=report["attempts"], detail="%d rows of %s copied out of %s online; swapped in %.1f ms" % (
                       self.move["rows_copied"], names, qualified(*self.old), lock_ms))
        steps.record(self.s, self.state, self.target, "move", self.old[1], out)
        self.outcomes.append(out)
        return True

    def finish(self):
        """The old default partition (detached), the staging table and the sync function dropped."""
        fn = sync.function_name(self.state, _sync_spec(self.move))

        def work(s):
            s.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident(self.moved)))
            s.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._ident(self.staging)))
            s.execute(sql.SQL("DROP FUNCTION IF EXISTS {}()").format(sql.Identifier(*fn)))
            s.execute(sql.SQL("DELETE FROM {} WHERE table_name = %s").format(_moves(self.state)),
                      (self.move["table_name"],), record=False)
        self._ddl(work, "dropping the old default partition")
        self.move["status"] = "done"
        return True
