# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Rollback from whatever state a table is in (docs/runbooks/rollback.md).

* Before the switchover (prepared, copying, copied, verified): the original never stopped being
  the application's table, so rollback removes what phase 1 added: the forward sync triggers and
  function, the twin with its partitions, the pending keys and verification ranges, the state
  row; inbound foreign keys that phase 1 dropped are re-created (NOT VALID, then VALIDATE, so the
  referencing table is not locked for a full scan).
* After the switchover (switched): the same short-lock swap as the switchover, in reverse
  (statements.swap_statements, transaction.run_swap): ``<table>_old`` — kept equal by the reverse sync — becomes ``<table>``
  again with views, triggers, sequences, RLS and publications; the partitioned table becomes
  ``<table>_partitioned`` without any sync, then is dropped (``keep_twin: false``, default) or
  kept for inspection (``keep_twin: true``: it is *not* kept in step any more).
* Every step checks what is already done, so an interrupted rollback resumes; the state row
  ends in phase 'rolled_back' (kept as history; ``forget: true`` deletes it).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils import sync_ddl
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation, describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.compare import compare_for_swap
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import run_with_lock_retry
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import checks, matviews
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.pair import capture
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.statements import (
    SwapNames, swap_statements)
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.transaction import lock_held, run_swap

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

BEFORE_SWITCH = ("prepared", "copying", "copied", "verified")


def _fk_statements(fk):
    """Re-create a dropped inbound foreign key as recorded by phase 1 (dict or DDL text)."""
    if isinstance(fk, str):
        return [sql.SQL(fk)]
    table = fk.get("table")
    if isinstance(table, (list, tuple)):
        rel = sql.Identifier(*table)
    else:
        rel = sql.Identifier(*parse_table(table))
    definition = fk["definition"]
    stmts = [sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}{}").format(
        rel, sql.Identifier(fk["name"]), sql.SQL(definition),
        sql.SQL("" if "NOT VALID" in definition.upper() else " NOT VALID"))]
    stmts.append(sql.SQL("ALTER TABLE {} VALIDATE CONSTRAINT {}").format(rel, sql.Identifier(fk["name"])))
    return stmts


def _fk_exists(session, fk):
    if isinstance(fk, str):
        return False
    table = fk.get("table")
    info = describe_table(session, *(table if isinstance(table, (list, tuple)) else parse_table(table)))
    return info is not None and any(f.name == fk["name"] for f in info.foreign_keys)


def _finish_state(session, state_schema, table_name, forget):
    with session.transaction():
        if forget:
            state_store.delete_table(session, state_schema, table_name)
        else:
            state_store.update_table(session, state_schema, table_name, phase="rolled_back")
            for rel in ("pending_keys", "verify_ranges"):
                session.execute(sql.SQL("DELETE FROM {} WHERE table_name = %s").format(
                    sql.Identifier(state_schema, rel)), (table_name,))


def rollback_before_switch(session, row, schema, name, state_schema, table_name, lock_timeout_ms, retries, forget):
    done = []
    twin = row["twin_relname"]
    triggers = sync.sync_triggers(session, (schema, name), sync.OUR_TRIGGER_NAMES)   # also the backfill's key log
    drops = [sync.lock_in_writers_order((schema, name))] + sync.drop_statements(triggers) \
        if triggers else []
    if drops:
        # DROP TRIGGER takes ACCESS EXCLUSIVE on the application's table: short timeout, retries
        run_with_lock_retry(session, lambda s: [s.execute(x) for x in drops], lock_timeout_ms, retries,
                            relations=[(schema, name)], what="dropping the sync triggers on %s" % table_name)
        done.append("sync triggers and function on %s dropped" % table_name)
    if describe_relation(session, schema, twin) is not None:
        # materialized views pre-built on the twin for a postponed switchover go with it; anything
        # else depending on the twin makes the DROP fail (no CASCADE: we drop only what we made)
        stmts = matviews.drop_prebuilt(session, schema, twin)
        stmts.append(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, twin)))
        # the twin is not used by the application: its lock queue is ours alone (the sync trigger is gone)
        run_with_lock_retry(session, lambda s: [s.execute(x) for x in stmts],
                            lock_timeout_ms, retries, relations=[(schema, twin)], what="dropping %s" % twin)
        done.append("%s and its partitions dropped" % qualified(schema, twin))
    for fk in row.get("dropped_foreign_keys") or []:
        if _fk_exists(session, fk):
            continue
        for stmt in _fk_statements(fk):
            session.execute(stmt)
        done.append("foreign key %s re-created" % (fk if isinstance(fk, str) else fk["name"]))
    _finish_state(session, state_schema, table_name, forget)
    return done


def losses(session, state_schema, table_name, pair, limit=10):
    """What swapping back would lose, all read in ONE repeatable-read snapshot (pending keys left
    out: the swap reconciles them under its lock): columns of the partitioned table that
    ``<table>_old`` lacks, with how many rows hold a value; rows whose version only the partitioned
    table holds (a write that did not reach ``<table>_old``); rows only ``<table>_old`` holds (deleted
    or truncated since the switchover: they would come back). Returns dict(lost=[sentences],
    check=compare_for_swap's result, columns, rows_only_new, rows_only_old)."""
    schema, new, old = pair.schema, pair.active.name, pair.standby.name
    missing = [c for c in pair.active.stored_columns if pair.standby.column(c) is None]
    common = [c for c in pair.active.stored_columns if c in pair.standby.stored_columns]
    pk = [c for c in pair.standby.pk_columns if c in common] or common
    check = compare_for_swap(session, state_schema, table_name, (schema, new), (schema, old), common, pk)
    out = dict(lost=[], check=check, columns={}, rows_only_new=[], rows_only_old=[])
    for col in missing:
        n = session.scalar(sql.SQL("SELECT count(*) FROM {} WHERE {} IS NOT NULL").format(
            sql.Identifier(schema, new), sql.Identifier(col)))
        out["columns"][col] = int(n)
        out["lost"].append("column %s of %s, which %s lacks (%d row(s) hold a value)"
                           % (col, qualified(schema, new), qualified(schema, old), n))
    if check["equal"]:
        return out
    keys = sql.SQL(", ").join(sql.Identifier(c) for c in pk)
    row = sql.SQL("ROW({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in common))

    key = sql.SQL("jsonb_build_object({})").format(
        sql.SQL(", ").join(sql.SQL("{}, d.{}").format(sql.Literal(c), sql.Identifier(c)) for c in pk))

    def only_in(a, b):
        return session.query(sql.SQL(
            "SELECT {} AS key FROM (SELECT {}, {} AS r FROM {} EXCEPT SELECT {}, {} FROM {}) d "
            "WHERE NOT EXISTS (SELECT 1 FROM {} p WHERE p.table_name = {} AND p.pk = {}) ORDER BY 1 LIMIT {}").format(
            key, keys, row, sql.Identifier(schema, a), keys, row, sql.Identifier(schema, b),
            sql.Identifier(state_schema, "pending_keys"), sql.Literal(table_name), key, sql.Literal(limit + 1)))
    conn = session.conn
    conn.autocommit = False
    try:
        session.query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        out["rows_only_new"] = [r["key"] for r in only_in(new, old)]
        out["rows_only_old"] = [r["key"] for r in only_in(old, new)]
    finally:
        conn.rollback()
        conn.autocommit = True

    def some(keys_):
        shown = ", ".join(_key_text(k) for k in keys_[:limit])
        return shown + (", …" if len(keys_) > limit else "")
    if out["rows_only_new"]:
        out["lost"].append("the newest version of row(s) %s, which only %s holds (%d rows there, %d in %s)"
                           % (some(out["rows_only_new"]), qualified(schema, new), check["rows_a"], check["rows_b"],
                              qualified(schema, old)))
    if out["rows_only_old"]:
        out["lost"].append("the deletion of row(s) %s, which %s still holds (deleted or truncated since the "
                           "switchover: they would come back)" % (some(out["rows_only_old"]), qualified(schema, old)))
    if not out["rows_only_new"] and not out["rows_only_old"]:
        out["lost"].append("a difference between %s and %s (%d vs %d rows)"
                           % (qualified(schema, new), qualified(schema, old), check["rows_a"], check["rows_b"]))
    return out


def _key_text(key):
    return "(%s)" % ", ".join("%s=%s" % (k, v) for k, v in sorted(key.items()))


def rollback_after_switch(session, templates, row, schema, name, state_schema, table_name, lock_timeout_ms,
                          retries, keep_twin, forget, analyze=True, accept_loss=False):
    """The swap in reverse: ``<table>_old`` is the application's table again."""
    old, twin = row["old_relname"], row["twin_relname"]
    done = []
    if describe_relation(session, schema, old) is None:
        raise PartitioningError("%s is switched but %s is missing (dropped by hand?): the original cannot come back; "
                                "the partitioned table stays." % (table_name, qualified(schema, old)))
    if describe_relation(session, schema, twin) is not None:
        raise PartitioningError("%s exists: the partitioned table cannot take that name back; rename or drop it."
                                % qualified(schema, twin))
    # DDL the application ran on the partitioned table since the switchover: <table>_old follows it
    # (docs/design.md, "DDL during a migration"), the reverse sync is regenerated to carry the new
    # shape, and the rows whose values it could not carry before are queued (reconciled under the lock)
    followed, carry = run_with_lock_retry(
        session, lambda s: sync_ddl.align(s, (schema, name), (schema, old), add_missing=True), lock_timeout_ms,
        retries, relations=[(schema, old)], what="bringing %s in step" % qualified(schema, old))
    if followed or carry:
        done.extend(followed)
        spec = sync.sync_spec(schema, name, table_name, row["partition_key"])
        sync.install_sync(session, templates, state_schema, spec, (schema, name), (schema, old), direction="reverse",
                          lock_timeout_ms=lock_timeout_ms, retries=retries)
        old_pk = sync_ddl.primary_key(session, (schema, old))
        with session.transaction():
            done.extend(sync_ddl.queue_rows(session, (schema, name), (schema, old), carry, old_pk, old_pk,
                                            state_schema, table_name))
    pair = capture(session, schema, name, old)
    # columns <table>_old lacks are a loss (below); the other refusals of the forward swap do not apply
    problems = checks.key_problems(pair)
    if problems:
        raise PartitioningError("Rollback of %s refused, nothing changed: %s." % (table_name, "; ".join(problems)))
    loss = losses(session, state_schema, table_name, pair)
    if loss["lost"] and not accept_loss:
        raise PartitioningError(
            "Rollback of %s refused, the switchover stands: it would lose %s. Find out how %s and %s came apart "
            "(a TRUNCATE of a partition created after the switchover, a partition dropped or detached, a write "
            "that bypassed the reverse sync, a column added after the switchover), repair %s, or accept the loss: "
            "-e partitioning_accept_loss=%s (module option accept_loss)."
            % (table_name, "; ".join(loss["lost"]), table_name, qualified(schema, old), qualified(schema, old),
               table_name), losses=loss)
    prebuilt = matviews.prebuild(session, pair)

    # the original's indexes come back from <name>_old; the partitioned table's get their twin names
    statements = swap_statements(pair, SwapNames(twin, "_p", "_old"), prebuilt, state_schema, table_name,
                                 lock_timeout_ms)
    statements.append(sql.SQL("UPDATE {} SET phase = 'rolled_back', updated_at = now() WHERE table_name = {}").format(
        sql.Identifier(state_schema, "tables"), sql.Literal(table_name)))
    result = run_swap(session, statements, pair, table_name, state_schema, lock_timeout_ms=lock_timeout_ms,
                      retries=retries)
    if loss["lost"]:
        done.append("loss accepted: %s" % "; ".join(loss["lost"]))
    if session.check_mode:
        done.append("%s would be the original table again (the swap's statements are in queries)" % table_name)
    else:
        done.append("%s is the original table again (%s, %d attempt(s))"
                    % (table_name, lock_held(result), result["attempts"]))
    if analyze:
        session.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
    if not keep_twin:
        session.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, twin)))
        done.append("%s dropped" % qualified(schema, twin))
    _finish_state(session, state_schema, table_name, forget)
    return done, result, loss


def rollback(session, templates, table, *, state_schema, lock_timeout_ms, swap_retries, keep_twin=False, forget=False,
             accept_loss=False):
    schema, name = parse_table(table)
    table_name = qualified(schema, name)
    row = state_store.get_table(session, state_schema, table_name)
    if row is None:
        return dict(changed=False, table=table_name, phase=None,
                    msg="%s is not being migrated: nothing to roll back." % table_name)
    phase = row["phase"]
    if phase == "cleaned":
        raise PartitioningError("%s was cleaned up: %s no longer exists, the switchover cannot be undone by rollback."
                                % (table_name, qualified(schema, row["old_relname"])))
    state_store.lock_table_work(session, table_name)
    twin = row["twin_relname"]
    if phase == "rolled_back":
        # resume: a rollback interrupted after the swap still has a twin to drop
        done = []
        if not keep_twin and describe_relation(session, schema, twin) is not None and \
                not sync.sync_triggers(session, (schema, name)):
            session.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(schema, twin)))
            done.append("%s dropped" % qualified(schema, twin))
        if forget:
            with session.transaction():
                state_store.delete_table(session, state_schema, table_name)
            done.append("state row deleted")
        return dict(changed=bool(done), table=table_name, phase="rolled_back", done=done,
                    msg="%s: %s" % (table_name, "; ".join(done) if done else "already rolled back"))
    if phase in BEFORE_SWITCH:
        done = rollback_before_switch(session, row, schema, name, state_schema, table_name, lock_timeout_ms,
                                      swap_retries, forget)
        state_store.record_run(session, state_schema, table_name, "rollback", details=dict(done=done, from_phase=phase))
        return dict(changed=True, table=table_name, phase="rolled_back", from_phase=phase, done=done,
                    msg="%s rolled back from phase %s: %s" % (table_name, phase, "; ".join(done) or "state removed"))
    if phase == "switched":
        done, result, loss = rollback_after_switch(session, templates, row, schema, name, state_schema, table_name,
                                                   lock_timeout_ms, swap_retries, keep_twin, forget,
                                                   accept_loss=accept_loss)
        state_store.record_run(session, state_schema, table_name, "rollback",
                               details=dict(done=done, from_phase=phase, lock_ms=result["lock_ms"]))
        return dict(changed=True, table=table_name, phase="rolled_back", from_phase=phase, done=done,
                    swap_lock_ms=result["lock_ms"], attempts=result["attempts"], retries=result["retries"],
                    check_before=loss["check"], losses=loss if loss["lost"] else None,
                    msg="%s rolled back after switchover: %s" % (table_name, "; ".join(done)))
    raise PartitioningError("%s is in an unknown phase %r." % (table_name, phase))
