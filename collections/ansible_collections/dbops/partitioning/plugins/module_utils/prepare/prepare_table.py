# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phase 1 for one table: preflight, state, partitioned twin, sync triggers, state row.

``prepare_table(session, templates, spec, state_schema, now=None)`` is idempotent and
resumable: every step creates only what is missing, so a second run changes nothing and a
run interrupted anywhere continues where it stopped. The steps, in order:

1. the per-table advisory lock (two runs never work on one table at once);
2. ``describe_table`` + ``preflight``: every problem is reported together **before anything
   changes** (no state schema, no twin is created for a bad spec);
3. the state schema (created or migrated);
4. the twin and its partitions (``twin.ensure_twin``) and, on the first run, the state row in
   phase ``prepared`` — one transaction, so a twin never exists without the state row that
   makes it ours (preflight refuses a twin nobody recorded);
5. inbound foreign keys dropped and recorded when ``inbound_foreign_keys: drop`` (HP11);
6. the sync triggers and, in the same transaction, ``backfill_upper`` (see ``_record_upper``).

Locks on the application's tables are taken with a short ``lock_timeout`` and retried with
backoff (``locking.py``, HP8).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import json

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import (
    RANGE_KEY_KINDS, key_kind, plan_partitions, range_layout, show_key, sparse_start)
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation, describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import display, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import (
    run_statements_with_lock_retry, run_with_lock_retry)
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.premake import add_partitions
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.target import Target
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.preflight import preflight
from ansible_collections.dbops.partitioning.plugins.module_utils import sync_ddl
from ansible_collections.dbops.partitioning.plugins.module_utils.sync import ROW_TRIGGER, install_sync
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.twin import ensure_twin

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None


def key_extent(session, spec, kind):
    """``(min, max)`` of the finite values of the partition key (``-infinity`` and ``infinity``
    are outside every range partition: they go to the default partition). With a btree index
    leading with the key the planner reads both ends of the index (index probes); without one it
    is a scan of the table, which the original's size makes the price of phase 1 (preflight
    already scans for NULLs only when the column is nullable)."""
    if spec.strategy != "range":
        return None, None
    k, t = sql.Identifier(spec.partition_key), sql.Identifier(spec.schema, spec.name)
    if kind not in RANGE_KEY_KINDS:
        row = session.query(sql.SQL("SELECT min({k}) AS lo, max({k}) AS hi FROM {t}").format(k=k, t=t))[0]
        return row["lo"], row["hi"]
    row = session.query(sql.SQL("SELECT min({k}) AS lo, max({k}) AS hi, NOT isfinite(min({k})) AS lo_inf, "
                                "NOT isfinite(max({k})) AS hi_inf FROM {t}").format(k=k, t=t))[0]
    lo, hi = row["lo"], row["hi"]
    if row["lo_inf"]:
        lo = session.scalar(sql.SQL("SELECT min({k}) FROM {t} WHERE {k} > '-infinity'").format(k=k, t=t))
    if row["hi_inf"]:
        hi = session.scalar(sql.SQL("SELECT max({k}) FROM {t} WHERE {k} < 'infinity'").format(k=k, t=t))
    return lo, hi


def outside_layout(session, spec, kind, layout):
    """The original's rows whose keys lie outside ``layout`` (bounds.Layout): what goes to the
    default partition. ``dict(before, after, earliest, latest)`` (keys as text, instants in UTC,
    so that ``infinity`` reads as such), or None when every row is inside. Two range counts:
    index scans when an index leads with the key, each as long as what it counts."""
    lower, upper = layout.bounds(kind)
    k, t = sql.Identifier(spec.partition_key), sql.Identifier(spec.schema, spec.name)
    out = dict(before=0, after=0, earliest=None, latest=None)
    for side, bound, extreme, where, name in (("before", lower, "min", "<", "earliest"),
                                              ("after", upper, "max", ">=", "latest")):
        if bound is None:
            continue
        key = sql.SQL("{}({})").format(sql.SQL(extreme), k)
        if kind == "timestamptz":     # the session's time zone must not show in the report
            key = sql.SQL("({} AT TIME ZONE 'UTC')").format(key)
        row = session.query(sql.SQL("SELECT count(*) AS n, {key}::text AS key FROM {t} WHERE {k} {op} %s").format(
            key=key, t=t, k=k, op=sql.SQL(where)), (bound,))[0]
        text = row["key"]
        if kind == "timestamptz" and text is not None and text.lstrip("-") != "infinity":
            text += "+00"
        out.update({side: int(row["n"]), name: text})
    return out if out["before"] or out["after"] else None


def bulk_from(session, spec, key_type):
    """The key below which about 1% of the original's rows lie, from the planner's statistics
    (``pg_stats``, no scan); None when the table has not been analyzed."""
    return session.scalar(sql.SQL("SELECT (histogram_bounds::text::{}[])[2] FROM pg_stats WHERE schemaname = %s "
                                  "AND tablename = %s AND attname = %s").format(sql.SQL(key_type)),
                          (spec.schema, spec.name, spec.partition_key))


def _layout_report(spec, layout, outside):
    """The warning for rows outside the layout (they wait in the default partition)."""
    parts = []
    if outside["before"]:
        parts.append("%d before %s (the earliest %s)" % (outside["before"], show_key(layout.first),
                                                         outside["earliest"]))
    if outside["after"]:
        parts.append("%d from %s on (the latest %s)" % (outside["after"], show_key(layout.end), outside["latest"]))
    return ("%s: %d rows have keys outside the range partitions and go to the default partition: %s. Keys before "
            "start stay there; later keys move into their own partitions when premake reaches their period "
            "(maintenance.yml). To give them partitions now, set start: earlier (or raise premake)."
            % (spec.table_name, outside["before"] + outside["after"], "; ".join(parts)))


def max_key(session, spec, pk_columns):
    """The largest primary key of the original as ``{column: value}`` (None for an empty table)."""
    if not pk_columns:
        return None
    stmt = sql.SQL("SELECT pg_catalog.jsonb_build_object({pairs}) AS k FROM {t} ORDER BY {order} LIMIT 1").format(
        pairs=sql.SQL(", ").join(sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier(c)) for c in pk_columns),
        t=sql.Identifier(spec.schema, spec.name),
        order=sql.SQL(", ").join(sql.SQL("{} DESC").format(sql.Identifier(c)) for c in pk_columns))
    rows = session.query(stmt)
    return rows[0]["k"] if rows else None


def spec_json(spec):
    return json.loads(json.dumps(spec.to_json(), default=str))


def _state_fields(spec, info):
    return dict(table_schema=spec.schema, table_relname=spec.name, twin_relname=spec.twin[1],
                old_relname=spec.old[1], phase="prepared", spec=spec_json(spec), pk_columns=info.pk_columns,
                partition_key=spec.partition_key, rows_estimated=max(0, int(info.estimated_rows or 0)))


def _record_state_row(session, state_schema, spec, info, row):
    """Insert the state row (first run) or reset a rolled-back one for a new migration."""
    fields = _state_fields(spec, info)
    if row is None:
        state_store.insert_table(session, state_schema, spec.table_name, **fields)
    else:
        state_store.update_table(
            session, state_schema, spec.table_name, backfill_upper=None, checkpoint=None, rows_copied=0, batches=0,
            backfill_started_at=None, backfill_finished_at=None, backfill_seconds=0, paused=False, pause_reason=None,
            throttle_reason=None, verified_at=None, verification=None, switchover_approved=False, switched_at=None,
            swap_lock_ms=None, dropped_foreign_keys=[], captured={}, **fields)


def _fk_record(fk):
    return dict(name=fk.name, table=list(fk.table), definition=fk.definition, columns=list(fk.columns),
                ref_table=list(fk.ref_table), ref_columns=list(fk.ref_columns))


def prepare_table(session, templates, spec, state_schema=None, now=None, runbook_schema=None):
    """Phase 1 of ``spec`` (a spec.TableSpec). Returns ``dict(changed, created, warnings, ...)``.
    ``runbook_schema``: where maintenance will install the runbook's functions (checked only)."""
    state_schema = state_schema or spec.state_schema
    if now is None:
        now = datetime.datetime.now(datetime.timezone.utc)
    lock_timeout_ms, retries = spec.tuning["lock_timeout_ms"], spec.tuning["swap_retries"]
    state_store.lock_table_work(session, spec.table_name)
    try:
        return _prepare(session, templates, spec, state_schema, now, lock_timeout_ms, retries, runbook_schema)
    finally:
        state_store.unlock_table_work(session, spec.table_name)


def _prepare(session, templates, spec, state_schema, now, lock_timeout_ms, retries, runbook_schema):
    table = (spec.schema, spec.name)
    info = describe_table(session, spec.schema, spec.name)
    row = state_store.get_table(session, state_schema, spec.table_name)
    # Everything that could stop phase 1 is found here, before the first change.
    warnings = list(preflight(session, spec, info, row, state_schema, runbook_schema))
    result = dict(changed=False, created=[], warnings=warnings, table=spec.table_name,
                  twin=qualified(*spec.twin), partitions=[], phase=row["phase"] if row else None)
    if row is not None and row["phase"] in state_store.SWITCHED_PHASES:
        return result
    created = result["created"]
    fresh = row is None or row["phase"] == "rolled_back"

    # The partitions, and the rows they leave to the default partition (docs/table-spec.md): planned
    # before the first change, so that a refused layout changes nothing.
    key_col = info.column(spec.partition_key)
    kind = key_kind(key_col.type)
    lo, hi = key_extent(session, spec, kind)
    partitions = plan_partitions(spec, key_col.type, lo, hi, now)
    result["partitions"] = [p.name for p in partitions]
    if spec.strategy == "range":
        layout = range_layout(spec, lo, hi, now)
        result["layout"] = layout.describe()
        outside = (outside_layout(session, spec, kind, layout)
                   if fresh or describe_relation(session, *spec.twin) is None else None)
        if outside and not spec.default_partition:
            raise PartitioningError(
                "%s: %d rows have keys no partition can hold (%s .. %s: infinity, or beyond what a partition bound "
                "can be written as) and the table has no default partition: keep default_partition: true."
                % (spec.table_name, outside["before"] + outside["after"], outside["earliest"] or "",
                   outside["latest"] or ""))
        if outside:
            result["outside_layout"] = outside
            warnings.append(_layout_report(spec, layout, outside))
        sparse = sparse_start(spec, layout, bulk_from(session, spec, key_col.type)) if fresh else None
        if sparse:
            warnings.append("%s: the partitions start at the earliest key (%s), but the statistics put 99%% of the "
                            "rows from %s on: %d of the %d partitions would hold about 1%% of the rows. Set start: %s "
                            "to send the earlier rows to the default partition instead."
                            % (spec.table_name, show_key(layout.first), show_key(sparse[0]), sparse[1], layout.count,
                               show_key(sparse[0])))

    if state_store.ensure_state_schema(session, templates, state_schema):
        created.append("state schema %s" % display(state_schema))

    twin_warnings = []
    carry = []
    if describe_relation(session, *spec.twin) is None:
        # A new, empty twin: one transaction, with the state row (see the module docstring).
        # Its foreign keys lock the referenced tables (SHARE ROW EXCLUSIVE): short lock timeout.
        def build(s):
            made = ensure_twin(s, info, spec, partitions, twin_warnings)
            if fresh:
                _record_state_row(s, state_schema, spec, info, row)
                made.append("state row %s (phase prepared)" % spec.table_name)
            return made
        created.extend(run_with_lock_retry(session, build, lock_timeout_ms, retries, relations=[table],
                                           what="creating the twin %s" % qualified(*spec.twin)))
    else:
        if fresh:  # preflight refuses a twin without state row; defensive
            with session.transaction():
                _record_state_row(session, state_schema, spec, info, row)
            created.append("state row %s (phase prepared)" % spec.table_name)
        # The twin exists (a resumed or repeated run).
        # DDL the application ran on the original meanwhile (docs/design.md, "DDL during a
        # migration"): the twin's columns follow it, and the rows whose values the sync could not
        # carry are queued for the reconcile (phase 2).
        followed, carry = run_with_lock_retry(
            session, lambda s: sync_ddl.align(s, table, spec.twin), lock_timeout_ms, retries,
            relations=[spec.twin], what="bringing %s in step" % qualified(*spec.twin))
        created.extend(followed)
        # Its missing range partitions (premake as time passes) are made by maintenance's step:
        # SHARE UPDATE EXCLUSIVE on the twin, which the sync trigger writes in every application
        # write, where CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE; a range with rows in
        # the default partition is reported, not made (HP14).
        target = Target(spec=spec, parent=spec.twin, phase=row["phase"] if row else "prepared",
                        strategy=spec.strategy, key_type=key_col.type)
        premade = add_partitions(session, templates, state_schema, target, partitions)
        if premade["installed"]:
            created.append("maintenance functions in %s" % display(state_schema))
        created.extend("partition %s" % qualified(spec.schema, n) for n in premade["created"])
        twin_warnings.extend(premade["warnings"])
        blocked = set(b["partition_name"] for b in premade["blocked"])
        partitions = [p for p in partitions if p.name not in blocked]
        # Then whatever else is missing, and indexes the original gained meanwhile. Statement by
        # statement outside a transaction, so that an index on a twin that holds rows is built
        # CONCURRENTLY (HP16); each lock wait is short and the whole step is retried (ensure_twin
        # is idempotent).
        created.extend(run_statements_with_lock_retry(
            session, lambda s: ensure_twin(s, info, spec, partitions, twin_warnings), lock_timeout_ms, retries,
            relations=[spec.twin], what="completing the twin %s" % qualified(*spec.twin)))
    warnings.extend(w for w in twin_warnings if w not in warnings)

    # Inbound foreign keys cannot follow the table to a partitioned one (HP11): dropped and
    # recorded (rollback re-creates them) only when the operator asked for it; preflight
    # refused otherwise.
    inbound = list(info.referenced_by) if spec.inbound_foreign_keys == "drop" else []
    if inbound:
        def drop_fks(s):
            for fk in inbound:
                s.execute(sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.Identifier(*fk.table), sql.Identifier(fk.name)))
            current = state_store.get_table(s, state_schema, spec.table_name) if not s.check_mode else None
            recorded = list((current or {}).get("dropped_foreign_keys") or [])
            names = set((tuple(r["table"]), r["name"]) for r in recorded if isinstance(r, dict))
            recorded += [_fk_record(fk) for fk in inbound if (tuple(fk.table), fk.name) not in names]
            state_store.update_table(s, state_schema, spec.table_name, dropped_foreign_keys=recorded)
        run_with_lock_retry(session, drop_fks, lock_timeout_ms, retries,
                            relations=[tuple(fk.table) for fk in inbound] + [table],
                            what="dropping the foreign keys that reference %s" % spec.table_name)
        for fk in inbound:
            created.append("dropped foreign key %s on %s" % (fk.name, qualified(*fk.table)))
        result["dropped_foreign_keys"] = [_fk_record(fk) for fk in inbound]

    # The sync triggers, and backfill_upper in the SAME transaction, read right after CREATE
    # TRIGGER. Why this order is exact: CREATE TRIGGER holds SHARE ROW EXCLUSIVE on the original
    # until we commit, which conflicts with every writer's ROW EXCLUSIVE. So when our SELECT runs
    # (READ COMMITTED: a snapshot taken after the lock was granted) every earlier write has
    # committed and is visible, and no write can happen until the trigger is committed with it.
    # Every row whose key is above the recorded maximum is therefore written by a transaction
    # that runs the trigger, which copies it; the backfill only has to walk keys up to it.
    # Read before the trigger (or in another transaction) a row committed in between would be
    # copied by nobody.
    def record_upper(s, sync_created):
        if not any(c.startswith("trigger %s " % ROW_TRIGGER) for c in sync_created):
            return
        current_phase = row["phase"] if row and not fresh else "prepared"
        if current_phase != "prepared":
            return
        state_store.update_table(s, state_schema, spec.table_name,
                                 backfill_upper=max_key(s, spec, info.pk_columns),
                                 rows_estimated=max(0, int(info.estimated_rows or 0)))

    created.extend(install_sync(session, templates, state_schema, spec, table, spec.twin, info=info,
                                direction="forward", lock_timeout_ms=lock_timeout_ms, retries=retries,
                                then=record_upper))
    if carry:
        # after the sync carries them again: the rows it could not carry before
        with session.transaction():
            created.extend(sync_ddl.queue_rows(session, table, spec.twin, carry, sync_ddl.primary_key(
                session, spec.twin), info.pk_columns, state_schema, spec.table_name))

    result["changed"] = bool(created)
    if created and not session.check_mode:
        with session.transaction():
            state_store.record_run(session, state_schema, spec.table_name, "prepare",
                                   details=dict(created=created, warnings=warnings))
    result["phase"] = "prepared" if fresh else row["phase"]
    return result
