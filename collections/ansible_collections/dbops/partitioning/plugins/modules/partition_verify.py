#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_verify
short_description: Prove that a partitioned twin equals its original, in one snapshot per range
description:
  - The end of phase 2. Compares the original table with its partitioned twin, one range per
    leaf partition of the twin (plus the total row count), each in one C(REPEATABLE READ)
    snapshot, by row count and checksum (sum of a 64-bit hash of every row's text form) on both
    sides. The sync triggers write both tables in the application's own transaction, so the
    comparison is exact also while the application keeps writing.
  - When a range differs, the differing keys are listed (C(EXCEPT ALL) both ways, at most 100).
    Keys pending reconciliation in the same snapshot are reconciled and the range compared again
    before a difference counts.
  - Resumable. Every range's result is recorded in the state schema (C(verify_ranges)); a run
    that was interrupted continues with the ranges not yet verified, unless I(full=true).
  - On success the table moves to phase C(verified), which phase 3 (C(table_swap)) requires.
    On a difference the module fails with the differing keys and the phase stays C(copied).
  - A table already C(verified) is reported unchanged unless I(full=true).
version_added: 0.1.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table]
options:
  full:
    description: Verify every range again, also those already verified, and also a table already C(verified).
    type: bool
    default: false
seealso:
  - module: dbops.partitioning.batch_copy
    description: The copy this verification ends.
  - module: dbops.partitioning.table_swap
    description: Phase 3, which requires phase C(verified).
'''

EXAMPLES = r'''
- name: Verify the copy of public.revenues
  dbops.partitioning.partition_verify:
    login_db: finance
    table: public.revenues

- name: Check again from scratch, e.g. before a postponed switchover
  dbops.partitioning.partition_verify:
    login_db: finance
    table: public.revenues
    full: true
'''

RETURN = r'''
status:
  description: C(ok) when every range matched, C(different) otherwise (the module then fails).
  returned: always
  type: str
phase: {description: The table's phase after the call., returned: always, type: str}
run_id: {description: The verification run (its row in the state schema's runs)., returned: when verified now, type: int}
ranges: {description: Number of ranges (leaf partitions plus the total count)., returned: when verified now, type: int}
checked:
  description: The ranges compared by this call, with rows on each side.
  returned: when verified now
  type: list
  elements: dict
skipped: {description: Ranges already verified by this run before an interruption., returned: when verified now, type: list}
rows: {description: Rows compared in partition ranges., returned: when verified now, type: int}
differences:
  description: Differing keys (at most 100), each with its range and the side it is on.
  returned: always
  type: list
  elements: dict
queries:
  description: Statements that changed something (only the state schema is written).
  returned: always
  type: list
  elements: str
'''

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import backfill, verify
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import run_table_module

OPTIONS = dict(full=dict(type="bool", default=False))


def verify_copy(module, session, target):
    p = module.params
    table_name, state_schema = target.table_name, target.state_schema
    templates = SqlTemplates.bundled()
    row = state_store.get_table(session, state_schema, table_name)
    if row is not None and not module.check_mode:
        # the lock first: the state that counts is the one read with it held (another run may
        # have been working on the table meanwhile)
        state_store.ensure_state_schema(session, templates, state_schema)
        state_store.lock_table_work(session, table_name)
        row = state_store.get_table(session, state_schema, table_name)
    if row is not None and row["phase"] in ("prepared", "copying"):
        raise PartitioningError("%s is in phase %r: its rows are not all copied yet; run batch_copy "
                                "(playbooks/phase2_migrate.yml) before verifying." % (table_name, row["phase"]),
                                phase=row["phase"])
    row = backfill.require_row(session, state_schema, table_name,
                               ("copied", "verified") + state_store.SWITCHED_PHASES)
    last = row.get("verification") or {}
    # After the switchover the verification that allowed it stands; comparing the new table
    # with <table>_old is the cleanup's check (partition_cleanup).
    if row["phase"] in state_store.SWITCHED_PHASES or (row["phase"] == "verified" and not p["full"]):
        return dict(changed=False, status="ok", phase=row["phase"], differences=[],
                    verified_at=str(row["verified_at"]), msg="%s was verified at %s" % (table_name, row["verified_at"]))
    ctx = backfill.load_context(session, state_schema, row)
    if module.check_mode:
        names = [name for name, _partition, _condition in verify.partition_ranges(session, ctx)] + [verify.TOTAL_RANGE]
        resumable = last.get("status") == "running" and not p["full"]
        return dict(changed=True, status="not checked (check mode)", phase=row["phase"], differences=[],
                    would_check=names, resumes_run=last.get("run_id") if resumable else None)
    result = verify.verify_table(session, ctx, row, full=p["full"])
    after = state_store.get_table(session, state_schema, table_name)
    out = dict(changed=True, status=result["status"], phase=after["phase"], run_id=result["run_id"],
               ranges=result["ranges"], checked=result["checked"], skipped=result["skipped"], rows=result["rows"],
               differences=result["differences"])
    if result["status"] != "ok":
        raise PartitioningError(
            "%s: the original and its partitioned twin differ in %d key(s): %s. The phase stays %r and "
            "phase 3 will refuse to switch over. See docs/runbooks/phase2.md (\"A verification failed\")."
            % (table_name, len(result["differences"]), verify.format_differences(result["differences"]),
               after["phase"]), **dict((k, v) for k, v in out.items() if k != "changed"))
    return out


def main():
    run_table_module("partition_verify", verify_copy, OPTIONS)


if __name__ == "__main__":
    main()
