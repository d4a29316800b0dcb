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
    C(BEGIN ATOMIC) function or inbound foreign key bound to the table."
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
extends_documentation_fragment:
  - dbops.partitioning.connection
  - dbops.partitioning.managed_table
options:
  lock_timeout_ms:
    description: How long one attempt waits for its locks (the application waits at most this long behind it).
    type: int
    default: 50
  swap_retries:
    description: Attempts after the first one, with exponential backoff and jitter between them.
    type: int
    default: 30
  max_xact_age_s:
    description: Refuse while a transaction older than this holds a lock on the table or its views.
    type: float
    default: 60
  max_replica_lag_s:
    description: Refuse while a replica's replay lag exceeds this.
    type: float
    default: 30
  require_approval:
    description: Postponed cut-over; swap only once the state row's C(switchover_approved) is set.
    type: bool
    default: false
  final_check:
    description: C(full) compares count and checksum of both tables in one snapshot before the swap; C(none) skips it.
    type: str
    choices: [full, none]
    default: full
  analyze:
    description: ANALYZE the new table after the swap.
    type: bool
    default: true
author:
  - dbops.partitioning contributors
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import swap
from ansible_collections.dbops.partitioning.plugins.module_utils.db import (
    connection_argument_spec, open_session, run_module)
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates


def work(module, state):
    p = module.params
    parse_table(p["table"])   # validated before connecting
    for key in ("lock_timeout_ms", "swap_retries"):
        if p[key] < 0:
            module.fail_json(msg="%s must not be negative." % key)
    templates = SqlTemplates.bundled()
    session = open_session(module, state, "table_swap")
    result = swap.switchover(session, templates, p["table"], state_schema=p["state_schema"],
                             lock_timeout_ms=p["lock_timeout_ms"], swap_retries=p["swap_retries"],
                             max_xact_age_s=p["max_xact_age_s"], max_replica_lag_s=p["max_replica_lag_s"],
                             require_approval=p["require_approval"], final_check=p["final_check"],
                             analyze=p["analyze"])
    if module.check_mode and result.get("changed"):
        result["msg"] = "check mode: " + result["msg"]
    result["queries"] = session.queries
    return result


def main():
    spec = connection_argument_spec()
    spec.update(state_store.TABLE_ARGUMENT_SPEC)
    spec.update(lock_timeout_ms=dict(type="int", default=50),
                swap_retries=dict(type="int", default=30),
                max_xact_age_s=dict(type="float", default=60),
                max_replica_lag_s=dict(type="float", default=30),
                require_approval=dict(type="bool", default=False),
                final_check=dict(type="str", default="full", choices=["full", "none"]),
                analyze=dict(type="bool", default=True))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    run_module(module, work)


if __name__ == "__main__":
    main()
