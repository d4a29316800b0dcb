# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: the partitions past ``retention`` months leave the table (docs/runbooks/maintenance.md).

Exactly the expired partitions go: a range partition whose whole range lies before the cutoff
(its upper bound at or before midnight UTC of the day ``retention`` months ago), never one that
can hold a newer row (``retention_plan`` in the database; hash and list partitions hold no time
range and are refused). Per partition, each step in its own transaction under the lock budget:

1. detach. Where PostgreSQL allows it — the table has no default partition (HP15) — with
   ``DETACH PARTITION ... CONCURRENTLY``, outside any transaction block: SHARE UPDATE EXCLUSIVE
   only, the application never waits. With a default partition, a plain ``DETACH`` under the
   budget (``detach_range_partition``): ACCESS EXCLUSIVE on the table, its default partition and
   the partition, catalog work only (no scan). A partition left "detach pending" by an interrupted
   concurrent detach is finished first (``FINALIZE``).
2. optionally ``pg_dump -Fc`` of the detached table into ``retention_dump_dir``, read back with
   ``pg_restore --list``, its SHA-256 recorded in ``<state>.retention_log``;
3. retire (``retire_partition``): archive (moved intact to ``archive_schema``), drop, or keep.

``<state>.retention_log`` records each partition's progress, so a kill anywhere is finished by
the next run (a detached partition whose dump or retirement did not happen is picked up again).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime
import os

from ansible_collections.dbops.partitioning.plugins.module_utils import dumps
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import steps
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.target import start, while_held

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

RETIRED = dict(archived="archived", would_archive="archived", dropped="dropped", would_drop="dropped", kept="kept")


def retention(session, templates, spec, state_schema, now=None, params=None, dump_dir=None, pg_dump=None,
              pg_restore=None):
    """Retention for ``spec`` (a spec.TableSpec). Returns the module's result."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    dump_dir = dump_dir or spec.tuning.get("retention_dump_dir")
    result = dict(changed=False, table=spec.table_name, partitioned_table=None, skipped=False, detached=[],
                  archived=[], dropped=[], kept=[], dumps=[], warnings=[], steps=[],
                  lock_budget_ms=spec.tuning["lock_budget_ms"])
    if spec.retention is None:
        result["msg"] = "%s: no retention set (all partitions are kept)" % spec.table_name
        return result
    if dump_dir and not os.path.isdir(dump_dir):
        raise PartitioningError("%s: retention_dump_dir %s is not a directory on the host that runs the modules."
                                % (spec.table_name, dump_dir))
    return while_held(session, spec.table_name, result, lambda: _retention(
        session, templates, spec, state_schema, now, params or {}, dump_dir, pg_dump, pg_restore, result))


def _retention(session, templates, spec, state_schema, now, params, dump_dir, pg_dump, pg_restore, result):
    started = start(session, templates, spec, state_schema, result)
    if started is None:
        return result
    target, fn_schema, registered = started
    plan = steps.query_plan(session, fn_schema, target, "retention", now)
    for row in plan:
        if row["step"] == "retention" and row["status"] == "refused":
            raise PartitioningError("Retention of %s refused: %s." % (spec.table_name, row["detail"]))
        if row["step"] == "retention":
            result.update(skipped=True, msg="%s: retention skipped, %s" % (spec.table_name, row["detail"]))
            return result
    has_default = session.scalar(sql.SQL("SELECT default_partition IS NOT NULL FROM {}(%s)").format(
        sql.Identifier(fn_schema, "partition_key")), (target.regclass(session),))
    for row in plan:
        name = row["partition_name"]
        if row["step"] in ("detach", "finalize"):
            out = _detach(session, fn_schema, state_schema, target, row, has_default)
            result["steps"].append(out)
            result["detached"].append(name)
        elif row["step"] == "retire":
            if dump_dir:
                _dump(session, state_schema, target, row, params, dump_dir, pg_dump, pg_restore, result)
            if session.check_mode and name in result["detached"]:
                # still attached: what it would become once the detach above has happened
                result[dict(archive="archived", drop="dropped", detach="kept")[row["action"]]].append(name)
                continue
            out = steps.run_step(session, fn_schema, state_schema, target, "retire", name, "retire_partition",
                                 dict(p_table_name=target.table_name, p_schema=row["partition_schema"], p_name=name,
                                      p_action=row["action"], p_archive_schema=spec.tuning["archive_schema"]))
            result["steps"].append(out)
            if out["status"] in RETIRED:
                result[RETIRED[out["status"]]].append(name)
            elif out["status"] not in ("done",):
                result["warnings"].append("%s: %s: %s" % (spec.table_name, name, out["detail"]))
    if result["detached"] and session.server_version >= 180000 and not session.check_mode:
        # the table's own (inherited) statistics still count the rows that left; ONLY (PostgreSQL 18)
        # spares re-analyzing every partition, which a plain ANALYZE of the table would do
        session.execute(sql.SQL("ANALYZE ONLY {}").format(sql.Identifier(*target.parent)))
    result["changed"] = bool(result["detached"] or result["archived"] or result["dropped"] or result["kept"]
                             or result["dumps"]) or registered or session.changed
    result.update(steps.summary(result["steps"], target.lock_budget_ms))
    result["msg"] = _line(target, result, session.check_mode)
    return result


def _detach(session, fn_schema, state_schema, target, row, has_default):
    name = row["partition_name"]
    if has_default or row["step"] == "finalize":
        return steps.run_step(session, fn_schema, state_schema, target, row["step"], name, "detach_range_partition",
                              dict(p_parent=target.regclass(session), p_partition=sql.Identifier(
                                   row["partition_schema"], name).as_string(session.conn),
                                   p_table_name=target.table_name, p_action=row["action"]))
    part = (row["partition_schema"], name)
    mark = sql.SQL("SELECT {}(%s, %s, %s, %s, %s, %s, %s)").format(sql.Identifier(fn_schema, "retention_mark"))
    mark_args = [target.table_name, part[0], name, row["lower_bound"], row["upper_bound"], row["action"]]
    if not session.check_mode:
        session.query(mark, mark_args + ["detaching"])       # a kill from here on is finished by the next run

    def statement_for(s):
        pending = s.scalar("SELECT inhdetachpending FROM pg_catalog.pg_inherits WHERE inhrelid = to_regclass(%s) "
                           "AND inhparent = to_regclass(%s)",
                           (sql.Identifier(*part).as_string(s.conn), target.regclass(s)))
        if pending is None and not s.check_mode:
            return None                                       # detached by an earlier attempt
        return sql.SQL("ALTER TABLE {} DETACH PARTITION {} {}").format(
            sql.Identifier(*target.parent), sql.Identifier(*part), sql.SQL("FINALIZE" if pending else "CONCURRENTLY"))
    out = steps.run_concurrently(session, state_schema, target, "detach", name, statement_for)
    if not session.check_mode:
        session.query(mark, mark_args + ["detached"])
    return out


def _dump(session, state_schema, target, row, params, dump_dir, pg_dump, pg_restore, result):
    """pg_dump of a detached partition, checked and recorded before it is retired."""
    schema, name = row["partition_schema"], row["partition_name"]
    if session.check_mode:
        result["dumps"].append(dict(partition=qualified(schema, name), path=None, would_dump_to=dump_dir))
        return
    log = sql.Identifier(state_schema, "retention_log")
    this = sql.SQL(" WHERE table_name = %s AND partition_schema = %s AND partition_name = %s")
    key = (target.table_name, schema, name)
    done = session.query(sql.SQL("SELECT status, dump_path FROM {}").format(log) + this, key)
    if done and done[0]["status"] == "dumped" and done[0]["dump_path"] and os.path.exists(done[0]["dump_path"]):
        return                                                 # dumped and checked by an earlier run
    path = dumps.dump_table(session, params, schema, name, dump_dir, pg_dump)
    checked = dumps.verify_dump(session, path, schema, name, pg_restore)
    session.execute(sql.SQL("UPDATE {} SET status = 'dumped', dump_path = %s, dump_sha256 = %s, dump_bytes = %s, "
                            "dump_verified_at = now(), updated_at = now()").format(log) + this,
                    (checked["path"], checked["sha256"], checked["bytes"]) + key)
    result["dumps"].append(dict(partition=qualified(schema, name), **checked))
    steps.record(session, state_schema, target, "dump", name,
                 dict(status="dumped", detail="%s sha256 %s (%d bytes), read back by pg_restore --list"
                      % (checked["path"], checked["sha256"], checked["bytes"])))


def _line(target, result, check_mode):
    verb = "would be " if check_mode else ""
    parts = ["%d %s%s (%s)" % (len(result[k]), verb, k, ", ".join(result[k]))
             for k in ("detached", "archived", "dropped", "kept") if result[k]]
    if result["dumps"]:
        parts.append("%d dumped" % len(result["dumps"]))
    if result.get("longest_lock_ms") is not None:
        parts.append("longest lock %.1f ms %s (budget %d ms)"
                     % (result["longest_lock_ms"], result["longest_lock_mode"], target.lock_budget_ms))
    return "%s: retention %s" % (target.display, "; ".join(parts) or "nothing expired")
