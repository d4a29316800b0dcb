#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: table_swap
short_description: Switch the application over to the partitioned table under a sub-second lock
description:
  - Phase 3. The original table becomes C(<table>_old), the partitioned twin becomes C(<table>), in
    one transaction under C(SET LOCAL lock_timeout), retried with exponential backoff and jitter
    (docs/runbooks/phase3.md, docs/design.md "Switchover").
  - "Preflight, refused with nothing changed: phase C(verified); a last check (count and checksum of
    both tables in one snapshot, keys pending reconciliation left out, I(final_check=full)); no
    transaction older than I(max_xact_age_s) holding a lock on the table or its views (named with
    pid, user, application, age, query); replica replay lag within I(max_replica_lag_s); no
    C(BEGIN ATOMIC) function or inbound foreign key bound to the table; every privilege the swap
    uses, and publications the partitioned table can keep, as phase 1 checked them. A role without
    C(pg_read_all_stats) cannot see other roles' transactions nor the replicas' lag: refused with the
    GRANT, unless the spec's C(allow_blind_guards) accepts guards that measure only what the role can
    see (then a warning says so)."
  - Materialized views are pre-built beside the old ones before the lock and swapped by rename.
  - Inside the lock, pending keys are reconciled, the forward sync dropped, indexes and
    constraints renamed to the names the application knows, sequences and identity columns moved
    (identity restarts above the old maximum), views re-created with owner, grants, comments and
    options, the application's triggers moved (disabled on C(<table>_old)), RLS and publication
    membership carried over, the reverse sync (new -> C(<table>_old)) installed and the state
    set to C(switched) with the measured lock time. ANALYZE follows.
  - With I(require_approval), everything up to the swap is prepared and the module returns
    C(waiting_for_approval) until C(SELECT partitioning.approve_switchover('schema.table')).
  - A switched table is reported unchanged. In check mode the statements of the swap are
    returned and nothing changes.
version_added: 0.1.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table, dbops.partitioning.managed_table.lock_retry]
options:
  max_xact_age_s:
    description:
      - Refuse while a transaction older than this holds a lock on the table or its views.
      - Default the spec's C(max_xact_age_s), else 60.
    type: float
  max_replica_lag_s:
    description:
      - Refuse while a replica's replay lag exceeds this.
      - Default the spec's C(max_replica_lag_s), else 30.
    type: float
  require_approval:
    description:
      - Postponed cut-over; swap only once the state row's C(switchover_approved) is set.
      - Default the spec's C(switchover_requires_approval) (or its synonym C(postpone)), else false.
    type: bool
  final_check:
    description:
      - C(full) compares count and checksum of both tables in one snapshot before the swap; C(none) skips it.
      - Default the spec's C(final_check), else C(full).
    type: str
    choices: [full, none]
  analyze:
    description: ANALYZE the new table after the swap.
    type: bool
    default: true
seealso:
  - module: dbops.partitioning.partition_verify
    description: Phase 2's verification, which the switchover requires (phase C(verified)).
  - module: dbops.partitioning.partition_rollback
    description: Swaps back, losing no write made since the switchover.
  - module: dbops.partitioning.partition_cleanup
    description: Drops C(<table>_old) after a soak time.
  - name: ALTER TABLE reference
    description: The renames the swap runs under one short lock.
    link: https://www.postgresql.org/docs/current/sql-altertable.html
'''

EXAMPLES = r'''
- name: Switch public.revenues over
  dbops.partitioning.table_swap:
    login_db: finance
    table: public.revenues
    lock_timeout_ms: 50
    swap_retries: 30

- name: Prepare everything, swap only after an operator's approve_switchover()
  dbops.partitioning.table_swap:
    login_db: finance
    table: public.revenues
    require_approval: true
'''

RETURN = r'''
phase:
  description: The table's phase afterwards (C(switched), or C(verified) while waiting for approval).
  returned: always
  type: str
waiting_for_approval:
  description: True when the swap waits for approve_switchover().
  returned: when waiting
  type: bool
swap_lock_ms:
  description: Milliseconds from the granted ACCESS EXCLUSIVE lock to the returned COMMIT.
  returned: when swapped
  type: float
attempts:
  description: Attempts the swap needed.
  returned: when swapped
  type: int
retries:
  description: One line per failed attempt (lock timeout) with the sessions that blocked it.
  returned: when swapped or failed
  type: list
  elements: str
final_check:
  description: Counts and checksums of both tables in one snapshot before the swap.
  returned: when checked
  type: dict
warnings:
  description: Things the operator should know (publications without publish_via_partition_root, ...).
  returned: when swapped
  type: list
  elements: str
queries:
  description: The statements run (or, in check mode, that would run), of the last swap attempt.
  returned: always
  type: list
  elements: str
'''

from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import swap
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import (
    run_table_module, tuning_options)

OPTIONS = dict(tuning_options("lock_timeout_ms", "swap_retries", "max_xact_age_s", "max_replica_lag_s",
                              "final_check"),
               require_approval=dict(type="bool"),
               analyze=dict(type="bool", default=True))


def switch_over(module, session, target):
    t = target.tuning
    return swap.switchover(session, SqlTemplates.bundled(), target.table_name, state_schema=target.state_schema,
                           lock_timeout_ms=t["lock_timeout_ms"], swap_retries=t["swap_retries"],
                           max_xact_age_s=t["max_xact_age_s"], max_replica_lag_s=t["max_replica_lag_s"],
                           require_approval=t["switchover_requires_approval"], final_check=t["final_check"],
                           analyze=module.params["analyze"], allow_blind_guards=t["allow_blind_guards"])


def main():
    run_table_module("table_swap", switch_over, OPTIONS, knobs=dict(require_approval="switchover_requires_approval"))


if __name__ == "__main__":
    main()
