# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Phase 3: the switchover of a table to its partitioned twin, in a short lock (HP8, HP9).

The command reads like the runbook because the pieces do the work:

* ``pair.capture``: both tables as the catalog describes them, read before any lock;
* ``checks``: what makes the swap impossible (objects bound to the table's OID, a twin that
  lacks columns or policies, publications the partitioned table cannot keep), plus, here, the
  checks that need the server: the privileges the swap uses (``privileges``), transactions old
  enough to stall the lock queue, replica lag (a guard that cannot see is refused unless
  ``allow_blind_guards``, HP21), and a last comparison of both tables;
* ``matviews.prebuild``: materialized views built beside the old ones before the lock;
* ``statements.swap_statements``: every statement of the swap, decided from the pair;
* ``transaction.run_swap``: those statements in one round trip under ``lock_timeout``, retried
  with backoff, the blockers named when it gives up.

The transaction also installs the reverse sync (``<table>`` -> ``<table>_old``, so that a
rollback loses nothing) and records phase 'switched' with the lock time; ANALYZE follows
outside the lock. Rollback (rollback.py) runs the same pieces in the other direction.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.module_utils import privileges
from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation
from ansible_collections.dbops.partitioning.plugins.module_utils.compare import compare_for_swap
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.health import (
    BlindGuard, blind_guard, blind_guards, replica_lag_s)
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import describe_blockers, long_transactions
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import checks, matviews
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.pair import capture
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.statements import (
    SwapNames, swap_statements)
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.transaction import lock_held, run_swap

try:
    from psycopg2 import sql
except ImportError:  # pragma: no cover
    sql = None


def switchover(session, templates, table, *, state_schema, lock_timeout_ms, swap_retries, max_xact_age_s,
               max_replica_lag_s, require_approval, final_check, analyze=True, allow_blind_guards=False):
    """Switch ``table`` to its partitioned twin. Returns the module result (changed, msg, ...).
    The knobs are the table's resolved tuning (spec.TUNING holds their defaults);
    ``allow_blind_guards``: the long-transaction check and the replica-lag guard measure what the
    role can see when it may not see everything (HP21), with a warning; else they refuse."""
    schema, name = parse_table(table)
    table_name = qualified(schema, name)
    row = state_store.get_table(session, state_schema, table_name)
    done = _already_switched(row, state_schema, table_name)
    if done:
        return done
    twin, old = row["twin_relname"], row["old_relname"]
    state_store.lock_table_work(session, table_name)
    sync.refuse_if_drifted(session, state_schema, row, "Switchover")
    if describe_relation(session, schema, old) is not None:
        raise PartitioningError("%s already exists: it would be overwritten by the original; rename or drop it."
                                % qualified(schema, old))
    pair = capture(session, schema, name, twin)
    check = _refuse_unless_ready(session, pair, state_schema, table_name, max_xact_age_s, max_replica_lag_s,
                                 final_check, allow_blind_guards)
    warnings = checks.publication_warnings(pair)
    blind = blind_guards(session) if allow_blind_guards else None
    if blind:
        warnings.append(blind.downgrade())

    waiting = require_approval and not row["switchover_approved"]
    before = len(session.queries)
    # while waiting, a pre-built view is built once (a second run changes nothing); the run that
    # swaps builds them fresh
    prebuilt = matviews.prebuild(session, pair, reuse=waiting)
    built = len(session.queries) > before
    late = [v.name for v in pair.active.views if v.kind == "m" and v.name not in prebuilt]
    if late:
        warnings.append("materialized views built under the lock (could not be pre-built): %s" % ", ".join(late))
    if waiting:
        return dict(changed=built, table=table_name, phase=row["phase"],
                    waiting_for_approval=True, warnings=warnings, final_check=check,
                    msg="%s is ready to switch over, waiting for approval: SELECT %s.approve_switchover(%s); "
                        "then run again." % (table_name, state_schema, "'%s'" % table_name))

    statements = swap_statements(pair, SwapNames(old, "_old", "_p"), prebuilt, state_schema, table_name,
                                 lock_timeout_ms)
    statements += _after_the_swap(session, templates, pair, row, state_schema, table_name, old)
    result = run_swap(session, statements, pair, table_name, state_schema, lock_timeout_ms=lock_timeout_ms,
                      retries=swap_retries)
    if not session.check_mode and result["lock_ms"] is not None:
        # the lock time including COMMIT, measured from the granted LOCK to the returned COMMIT
        session.execute(sql.SQL("UPDATE {} SET swap_lock_ms = %s WHERE table_name = %s").format(
            sql.Identifier(state_schema, "tables")), (result["lock_ms"], table_name), record=False)
    if analyze:
        session.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(schema, name)))
    state_store.record_run(session, state_schema, table_name, "switchover",
                           details=dict(lock_ms=result["lock_ms"], attempts=result["attempts"],
                                        retries=result["retries"]))
    if session.check_mode:
        return dict(changed=True, table=table_name, phase=row["phase"], final_check=check, warnings=warnings,
                    msg="%s would be switched over to the partitioned table: the swap's statements are in queries "
                        "(nothing changed)" % table_name)
    return dict(changed=True, table=table_name, phase="switched", swap_lock_ms=result["lock_ms"],
                attempts=result["attempts"], retries=result["retries"], reconciled=result["reconciled"],
                final_check=check, warnings=warnings,
                msg="%s switched to the partitioned table in %s attempt(s); %s"
                    % (table_name, result["attempts"], lock_held(result)))


def _already_switched(row, state_schema, table_name):
    """The result when there is nothing to do; refuses a table that is not ready."""
    if row is None:
        raise PartitioningError("%s is not being migrated (no state row in %s.tables): run phase 1 and 2 first."
                                % (table_name, state_schema))
    if row["phase"] in ("switched", "cleaned"):
        return dict(changed=False, table=table_name, phase=row["phase"],
                    msg="%s is already switched over (phase %s)." % (table_name, row["phase"]),
                    swap_lock_ms=row.get("swap_lock_ms"))
    if row["phase"] != "verified":
        raise PartitioningError("%s is in phase %r: the switchover needs phase 'verified' (backfill complete and a "
                                "full verification passed; run phase2_migrate.yml)." % (table_name, row["phase"]))
    return None


def _refuse_unless_ready(session, pair, state_schema, table_name, max_xact_age_s, max_replica_lag_s, final_check,
                         allow_blind_guards):
    """Every reason not to swap now, together; the last comparison's result when it ran.

    What phase 1 checked and may have changed since is asked again: the publications'
    memberships and every privilege the swap uses (``privileges.switchover_problems``)."""
    problems = (checks.bound_problems(pair) + checks.shape_problems(pair)
                + checks.publication_problems(pair, table_name)
                + privileges.switchover_problems(session, table_name, pair.active))
    holders = long_transactions(session, pair.oids, max_xact_age_s)
    old = [h for h in holders if not h["hidden"]]
    if old:
        problems.append("transactions older than %ss hold a lock on the table or its views (the swap would "
                        "wait for them): %s" % (max_xact_age_s, describe_blockers(old)))
    hidden = [h for h in holders if h["hidden"]]
    if hidden and not allow_blind_guards:
        problems.append(blind_guard(session, "long-transaction check", "the transaction age of %d session(s) "
                                    "holding a lock on the table or its views (pid %s)"
                                    % (len(hidden), ", ".join(str(h["pid"]) for h in hidden))).msg)
    try:
        lag = replica_lag_s(session, allow_blind_guards)
    except BlindGuard as e:
        problems.append(e.msg)
        lag = 0.0
    if lag > float(max_replica_lag_s):
        problems.append("replica replay lag is %.1fs (limit %ss)" % (lag, max_replica_lag_s))
    check = None
    if final_check == "full" and not problems:
        a, s = pair.relations
        check = compare_for_swap(session, state_schema, table_name, a, s, pair.active.stored_columns,
                                 pair.active.pk_columns)
        if not check["equal"]:
            problems.append("the last check found %s and %s different (rows %d vs %d, checksums %s vs %s); "
                            "run phase2_migrate.yml to reconcile and verify again"
                            % (table_name, qualified(*s), check["rows_a"], check["rows_b"],
                               check["checksum_a"], check["checksum_b"]))
    if problems:
        raise PartitioningError("Switchover of %s refused, nothing changed: %s." % (table_name, "; ".join(problems)),
                                problems=problems, blockers=holders)
    missing = checks.missing_policies(pair)
    if missing:
        raise PartitioningError("Switchover of %s refused: the twin lacks the RLS policies %s (phase 1 creates them)."
                                % (table_name, ", ".join(missing)))
    return check


def _after_the_swap(session, templates, pair, row, state_schema, table_name, old):
    """The last statements of the swap transaction: the reverse sync, rendered now from the
    catalog as it will be after the renames (the new table is today's twin, ``<table>_old`` is
    today's original), and the state row: phase 'switched', what the original had, the lock time."""
    schema, name, twin = pair.schema, pair.active.name, pair.standby.name
    spec = sync.sync_spec(schema, name, table_name, row["partition_key"])
    captured = dict(row.get("captured") or {})
    captured["switchover"] = pair.record()
    return sync.install_statements(session, templates, state_schema, spec, (schema, twin), (schema, name),
                                   (schema, name), (schema, old)) + [
        sql.SQL("UPDATE {} SET phase = 'switched', captured = {}::jsonb, switched_at = now(), "
                "swap_lock_ms = extract(epoch FROM clock_timestamp() - "
                "current_setting('dbops.lock_at')::timestamptz) * 1000, updated_at = now() "
                "WHERE table_name = {}").format(sql.Identifier(state_schema, "tables"),
                                                sql.Literal(state_store.dumps(captured)), sql.Literal(table_name))]
