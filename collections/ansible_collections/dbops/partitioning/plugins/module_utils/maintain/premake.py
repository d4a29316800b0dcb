# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Premake: the partitions a range-partitioned table needs from "now" on, made without blocking
the application (docs/runbooks/maintenance.md, docs/design.md "Partitions — HP13 to HP16").

The plan is the database's (``plan_table``, scope premake): from the period containing now up to
``premake`` periods after it, gaps since the newest partition filled, nothing past retention.
Each missing partition is one step, ``create_range_partition``: ``CREATE TABLE ... (LIKE ...)``
with a CHECK matching its bound, then ``ATTACH PARTITION`` (SHARE UPDATE EXCLUSIVE on the table,
where ``CREATE TABLE ... PARTITION OF`` takes ACCESS EXCLUSIVE), in its own transaction under
the lock budget.

Rows already in the default partition for a wanted range make PostgreSQL refuse that partition
(HP14). Premake does not fail on them: it reports the range and the rows and hands the ranges to
the default move (``maintain/default_move.py``: ``move_out_of_default(session, templates, target,
ranges, budget_ms, state_schema)``, which returns ``dict(created=[names], warnings=[...], steps=[outcomes])``);
without it, those ranges are skipped with a warning that names them. A move a killed run left
is finished first (the same function, with no ranges).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import datetime

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import (
    bound_text, missing_partitions, read_partitions)
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import steps
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.functions import functions_schema, is_current
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.target import start, while_held

try:
    from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.default_move import (
        move_out_of_default)
except ImportError:    # the default move is not part of this version: blocked ranges are reported
    move_out_of_default = None

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None

NOT_CREATED = ("overlap", "name_taken")
# Ranges the default move makes (when it exists): rows of the range in the default partition, or a
# default partition too large for ATTACH to scan within the budget (the move's swap scans nothing).
FOR_THE_MOVE = ("blocked_by_default", "default_too_large")


def premake(session, templates, spec, state_schema, now=None, analyze=True):
    """Premake for ``spec`` (a spec.TableSpec). Returns the module's result."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    result = dict(changed=False, table=spec.table_name, partitioned_table=None, skipped=False, created=[],
                  blocked=[], default_rows=0, warnings=[], steps=[], lock_budget_ms=spec.tuning["lock_budget_ms"])
    return while_held(session, spec.table_name, result,
                      lambda: _premake(session, templates, spec, state_schema, now, analyze, result))


def _premake(session, templates, spec, state_schema, now, analyze, result):
    started = start(session, templates, spec, state_schema, result)
    if started is None:
        return result
    target, fn_schema, registered = started
    _finish_move(session, templates, state_schema, target, result)
    blocked = []
    for row in steps.query_plan(session, fn_schema, target, "premake", now):
        if row["step"] == "default":
            result["default_rows"] = row["rows"]
            continue
        if row["step"] != "create":
            continue
        status, detail = row["status"], row["detail"]
        if status == "todo":
            out = steps.run_step(session, fn_schema, state_schema, target, "create", row["partition_name"],
                                 "create_range_partition",
                                 dict(p_parent=target.regclass(session), p_name=row["partition_name"],
                                      p_lower=row["lower_bound"], p_upper=row["upper_bound"]))
            result["steps"].append(out)
            status, detail = out["status"], out["detail"]
            if status in ("created", "would_create"):
                result["created"].append(row["partition_name"])
                continue
        if status in FOR_THE_MOVE:
            blocked.append(dict(partition_name=row["partition_name"], lower_bound=row["lower_bound"],
                                upper_bound=row["upper_bound"], rows=row["rows"] or 0, detail=detail))
        elif status in NOT_CREATED:
            result["warnings"].append("%s: %s not created: %s" % (spec.table_name, row["partition_name"], detail))
    if blocked:
        _hand_over(session, templates, state_schema, target, blocked, result)
    if analyze and not session.check_mode:
        # the planner's statistics of the new (empty) partitions: rows 0, not "never analyzed"
        for name in result["created"]:
            session.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(target.parent[0], name)))
    result["changed"] = bool(result["created"]) or registered or session.changed
    result.update(steps.summary(result["steps"], target.lock_budget_ms))
    result["msg"] = _line(target, result, session.check_mode)
    return result


def add_partitions(session, templates, state_schema, target, partitions):
    """Make those of ``partitions`` (bounds.Partition: a plan such as phase 1's) that are range
    partitions ``target`` lacks, with the step premake uses; rows in the default partition are
    handed over as premake does. Returns dict(created, blocked, warnings, steps, installed: whether the
    maintenance functions were installed for it)."""
    result = dict(created=[], blocked=[], warnings=[], steps=[], installed=False)
    _finish_move(session, templates, state_schema, target, result)
    existing = read_partitions(session, target.parent[0], target.parent[1], target.key_type)
    missing, _overlaps = missing_partitions([p for p in partitions if p.kind == "range"], existing)
    if not missing:
        return result
    result["installed"] = not is_current(session, templates, state_schema)
    fn_schema = functions_schema(session, templates, state_schema)
    blocked = []
    for p in missing:
        args = dict(p_parent=target.regclass(session), p_name=p.name, p_lower=bound_text(p.lower, target.key_type),
                    p_upper=bound_text(p.upper, target.key_type))
        status = session.query(steps.call(fn_schema, "range_status", dict(
            (k, args[k]) for k in ("p_parent", "p_name", "p_lower", "p_upper"))), args)[0]
        if status["status"] == "missing":
            out = steps.run_step(session, fn_schema, state_schema, target, "create", p.name,
                                 "create_range_partition", args)
            result["steps"].append(out)
            status = dict(status, status=out["status"], detail=out["detail"])
        if status["status"] in ("created", "would_create"):
            result["created"].append(p.name)
        elif status["status"] in FOR_THE_MOVE:
            blocked.append(dict(partition_name=p.name, lower_bound=args["p_lower"], upper_bound=args["p_upper"],
                                rows=status["default_rows"] or 0, detail=status["detail"]))
        elif status["status"] in NOT_CREATED:
            result["warnings"].append("%s: %s not created: %s" % (target.table_name, p.name, status["detail"]))
    if blocked:
        _hand_over(session, templates, state_schema, target, blocked, result)
    return result


def _finish_move(session, templates, state_schema, target, result):
    """A move out of the default partition that a killed run left is finished before planning."""
    if move_out_of_default is not None:
        _merge(result, move_out_of_default(session, templates, target, [], target.lock_budget_ms,
                                           state_schema=state_schema))


def _merge(result, moved):
    result["created"].extend(moved.get("created", []))
    result["warnings"].extend(moved.get("warnings", []))
    result["steps"].extend(moved.get("steps", []))


def _hand_over(session, templates, state_schema, target, blocked, result):
    result["blocked"] = blocked
    if move_out_of_default is not None:
        moved = move_out_of_default(session, templates, target, blocked, target.lock_budget_ms,
                                    state_schema=state_schema) or {}
        _merge(result, moved)
        done = set(moved.get("created", []))
        result["blocked"] = [b for b in blocked if b["partition_name"] not in done]
        if not result["blocked"]:
            return
    result["warnings"].append(
        "%s: rows in the default partition block %s: %s; these partitions are not created until the rows move out "
        "of the default partition (HP14)" % (
            target.table_name, "this partition" if len(result["blocked"]) == 1 else "these partitions",
            ", ".join("%s [%s, %s) %d rows" % (b["partition_name"], b["lower_bound"], b["upper_bound"], b["rows"])
                      for b in result["blocked"])))


def _line(target, result, check_mode):
    """The one-line summary of the table for the operator (and AWX's job output)."""
    made = result["created"]
    parts = ["%s %s (%s)" % (len(made), "would be created" if check_mode else "created", ", ".join(made))
             if made else "nothing to premake"]
    if result["blocked"]:
        parts.append("%d blocked by rows in the default partition" % len(result["blocked"]))
    if result["default_rows"]:
        parts.append("%d rows in the default partition" % result["default_rows"])
    if result.get("longest_lock_ms") is not None:
        parts.append("longest lock %.1f ms %s (budget %d ms)"
                     % (result["longest_lock_ms"], result["longest_lock_mode"], target.lock_budget_ms))
    return "%s: premake %s" % (target.display, "; ".join(parts))
