#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_premake
short_description: Maintenance - premake the future partitions of a partitioned table without blocking it
description:
  - Makes the range partitions a table needs from now on - up to I(premake) periods after the current one (integer
    keys by a numeric width - I(premake) widths after the one holding the largest key), gaps since the newest
    partition filled, none past I(retention) - on a table partitioned by us (after the switchover; before it, its
    twin) or by other means.
  - Each partition is made by C(CREATE TABLE ... (LIKE ...)) with a C(CHECK) constraint matching its bound, then
    C(ALTER TABLE ... ATTACH PARTITION), which takes C(SHARE UPDATE EXCLUSIVE) on the table (the application reads
    and writes on) where C(CREATE TABLE ... PARTITION OF) would take C(ACCESS EXCLUSIVE). With a default partition,
    C(ATTACH) also locks it C(ACCESS EXCLUSIVE) and scans it; a default partition that takes more than half the
    lock budget to scan is not locked at all.
  - Rows already in the default partition for a wanted range make PostgreSQL refuse that partition. They never make
    the run fail - those ranges (and those of a default partition too large to scan) are made by moving the default
    partition's rows out online - a staging table, a sync trigger, a batched copy and one swap under the lock
    budget that scans nothing (step C(move); docs/runbooks/maintenance.md). A move a killed run left is finished
    first. Where the move cannot run (a table other tables' foreign keys reference) the ranges stay in C(blocked).
  - The logic is the database's own (the maintenance functions in the state schema, installed or upgraded by this
    module; the runbook's C(create_next_year_partitions()) and C(maintain_partition_system()) run the same steps).
    Hash and list tables have nothing to premake; their default partition's rows are still reported.
  - A second run in the same period changes nothing.
version_added: 0.2.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table, dbops.partitioning.maintained_table]
options:
  analyze:
    description: ANALYZE each partition made (empty, so instant), so the planner knows it holds no rows.
    type: bool
    default: true
seealso:
  - module: dbops.partitioning.partition_retention
    description: The other half of scheduled maintenance.
  - module: dbops.partitioning.partition_functions
    description: The database functions it plans and steps with, also callable by hand.
  - module: dbops.partitioning.partition_create
    description: Phase 1, whose later runs make a twin's new partitions with the same step.
  - name: ALTER TABLE ... ATTACH PARTITION
    description: The lock levels of attaching a partition.
    link: https://www.postgresql.org/docs/current/sql-altertable.html
'''

EXAMPLES = r'''
- name: Keep four quarters ready for public.revenues
  dbops.partitioning.partition_premake:
    login_db: finance
    spec:
      table: public.revenues
      partition_key: occurred_at
      strategy: range
      interval: quarterly
      premake: 4
      lock_budget_ms: 200

- name: A drill - what would the run of 2026-12-31 23:00 UTC do?
  dbops.partitioning.partition_premake:
    login_db: finance
    spec: "{{ partitioning_tables[0] }}"
    now: "2026-12-31T23:00:00+00:00"
  check_mode: true
'''

RETURN = r'''
changed:
  description: Whether a partition was made (or the functions or the table's settings in the state schema changed).
  returned: always
  type: bool
msg:
  description: One line for the operator - what was made, what is blocked, the rows in the default partition, the longest lock.
  returned: always
  type: str
  sample: "public.revenues (public.revenues): premake 1 created (revenues_2026_q3); longest lock 3.1 ms ACCESS EXCLUSIVE (default partition) (budget 200 ms)"
table:
  description: The table, canonical name.
  returned: always
  type: str
partitioned_table:
  description: The partitioned relation worked on (the table, or its twin before the switchover).
  returned: unless skipped
  type: str
skipped:
  description: True when there was nothing to maintain (not partitioned yet, rolled back) or another run holds the table.
  returned: always
  type: bool
holder:
  description: The session holding the table's work lock (pid, application_name, backend_start...), when skipped for it.
  returned: when another run holds the table
  type: dict
created:
  description: The partitions made (in check mode - that would be made).
  returned: always
  type: list
  elements: str
blocked:
  description:
    - Partitions not made because rows of their range are in the default partition and could not be moved out
      (partition_name, lower_bound, upper_bound, rows, detail).
  returned: always
  type: list
  elements: dict
default_rows:
  description: Rows in the default partition (keys outside every partition).
  returned: always
  type: int
steps:
  description:
    - One entry per DDL step - step, partition, status, detail, lock_mode (the strongest lock it took on the application's relations),
      lock_ms (how long it held that lock, from granted to the commit), attempts.
  returned: always
  type: list
  elements: dict
longest_lock_ms:
  description: The longest lock of the run's steps (ms), and C(longest_lock_mode) its mode; null when no step ran.
  returned: always
  type: float
lock_budget_ms:
  description: The table's lock budget.
  returned: always
  type: int
over_budget:
  description: Steps whose ACCESS EXCLUSIVE lock lasted longer than the budget (none expected).
  returned: unless skipped
  type: list
  elements: str
queries:
  description: The steps that made partitions or moved the default partition's rows, and the ANALYZE of new partitions, in the
    order they ran (in check mode, would run).
  returned: always
  type: list
  elements: str
'''

from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import target
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.premake import premake
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import run_table_module


def work(module, session, resolved):
    spec, state_schema, now = resolved
    return premake(session, SqlTemplates.bundled(), spec, state_schema, now=now, analyze=module.params["analyze"])


def main():
    run_table_module("partition_premake", work, dict(target.ARGUMENT_SPEC, analyze=dict(type="bool", default=True)),
                     resolve=target.from_params)


if __name__ == "__main__":
    main()
