#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_rollback
short_description: Undo a migration from whatever state the table is in, losing no committed write
description:
  - "Before the switchover (phase C(prepared), C(copying), C(copied) or C(verified)): drops the sync
    triggers and function, the partitioned twin with its partitions, re-creates inbound foreign
    keys that phase 1 dropped, and ends the state row (phase C(rolled_back), or deleted with I(forget))."
  - "After the switchover (phase C(switched)): the switchover's short-lock swap in reverse.
    C(<table>_old), kept equal by the reverse sync, becomes C(<table>) again with its indexes'
    names, views, triggers, sequences, RLS and publication membership; the partitioned table
    becomes C(<table>_partitioned) with no sync and is dropped unless I(keep_twin)."
  - Idempotent and resumable; a table not being migrated, or already rolled back, is unchanged.
    A C(cleaned) table cannot be rolled back (its original was dropped).
  - In check mode the statements are returned and nothing changes.
version_added: 0.1.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table, dbops.partitioning.managed_table.lock_retry]
options:
  keep_twin:
    description: After a switchover, keep the partitioned table (renamed C(<table>_partitioned), no longer synced) instead of dropping it.
    type: bool
    default: false
  forget:
    description: Delete the state row instead of keeping it in phase C(rolled_back) as history.
    type: bool
    default: false
  accept_loss:
    description:
      - "After a switchover the rollback first compares the partitioned table with C(<table>_old) in one
        snapshot and refuses, naming them, when swapping back would lose something: columns C(<table>_old)
        lacks, rows whose newest version only the partitioned table holds, rows deleted or truncated since
        the switchover that would come back. I(accept_loss=true) rolls back anyway and reports the loss."
    type: bool
    default: false
seealso:
  - module: dbops.partitioning.partition_create
    description: Phase 1, whose objects a rollback before the switchover drops.
  - module: dbops.partitioning.table_swap
    description: The switchover a rollback after it reverses, under the same short lock.
'''

EXAMPLES = r'''
- name: Roll public.revenues back
  dbops.partitioning.partition_rollback:
    login_db: finance
    table: public.revenues
'''

RETURN = r'''
phase:
  description: C(rolled_back), or null when the table was not being migrated.
  returned: always
  type: str
from_phase:
  description: The phase the rollback started from.
  returned: when changed
  type: str
done:
  description: What was done, one line per step.
  returned: always
  type: list
  elements: str
losses:
  description: "When refused, or accepted with I(accept_loss): what the rollback would lose (C(lost), one sentence
    each; C(columns), C(rows_only_new), C(rows_only_old) with up to ten keys each)."
  returned: after a switchover, when something would be lost
  type: dict
swap_lock_ms:
  description: Lock time of the reverse swap (after a switchover).
  returned: after a switchover
  type: float
queries:
  description: The changing statements in order - before the switchover the drops, after it the reverse swap - or in check mode those that would run.
  returned: always
  type: list
  elements: str
'''

from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import rollback
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import (
    LOCK_RETRY_OPTIONS, run_table_module)

OPTIONS = dict(LOCK_RETRY_OPTIONS,
               keep_twin=dict(type="bool", default=False),
               forget=dict(type="bool", default=False),
               accept_loss=dict(type="bool", default=False))


def roll_back(module, session, target):
    t = target.tuning
    result = rollback.rollback(session, SqlTemplates.bundled(), target.table_name, state_schema=target.state_schema,
                               lock_timeout_ms=t["lock_timeout_ms"], swap_retries=t["swap_retries"],
                               keep_twin=module.params["keep_twin"], forget=module.params["forget"],
                               accept_loss=module.params["accept_loss"])
    result.setdefault("done", [])
    return result


def main():
    run_table_module("partition_rollback", roll_back, OPTIONS)


if __name__ == "__main__":
    main()
