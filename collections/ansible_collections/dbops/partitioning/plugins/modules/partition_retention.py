#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_retention
short_description: Maintenance - detach, archive or drop the partitions past retention, under the lock budget
description:
  - Exactly the expired partitions go - range partitions whose whole range lies before the cutoff (their upper bound
    at or before midnight UTC of the day I(retention) months before now), never one that can hold a newer row. Hash
    and list tables are refused (their partitions hold no time range), as are integer keys.
  - Detaches each with C(DETACH PARTITION ... CONCURRENTLY) where PostgreSQL allows it (the table has no default
    partition) - the application never waits; with a default partition, with a plain C(DETACH) in a short
    transaction under the lock budget (C(ACCESS EXCLUSIVE) on the table, its default partition and the partition;
    catalog work only). A partition left "detach pending" by an interrupted concurrent detach is finished first.
  - Then, with I(retention_dump_dir) (or the spec's C(retention_dump_dir)), writes a C(pg_dump -Fc) of the detached
    partition, checks it with C(pg_restore --list) and records its SHA-256 in the state schema's C(retention_log)
    before anything is dropped. Then C(retention_action) - C(detach) keeps the table where it is, C(archive) moves it
    intact to C(archive_schema), C(drop) drops it.
  - Resumable - the state schema's C(retention_log) records every partition's progress, and the next run finishes what
    a killed one left. While the table is being migrated, retention is skipped until C(cleanup.yml) ran (the twin
    before the switchover, C(<table>_old) during the soak, must stay equal to the table).
version_added: 0.2.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table, dbops.partitioning.maintained_table]
options:
  retention_dump_dir:
    description: Directory (on the host running the module) for a pg_dump of each partition before it goes; overrides the spec's.
    type: path
  pg_dump:
    description: The pg_dump executable (by default the server's BINDIR, then PATH; it must be of the server's major version or newer).
    type: path
  pg_restore:
    description: The pg_restore executable that checks each dump (by default the server's BINDIR, then PATH).
    type: path
seealso:
  - module: dbops.partitioning.partition_premake
    description: The other half of scheduled maintenance.
  - module: dbops.partitioning.partition_functions
    description: The database functions, among them archive_old_partitions(months).
  - name: ALTER TABLE ... DETACH PARTITION
    description: CONCURRENTLY, FINALIZE, and why neither works with a default partition or in a transaction block.
    link: https://www.postgresql.org/docs/current/sql-altertable.html
'''

EXAMPLES = r'''
- name: Keep 12 months of public.revenues attached, archive the rest with a checked dump
  dbops.partitioning.partition_retention:
    login_db: finance
    spec:
      table: public.revenues
      partition_key: occurred_at
      strategy: range
      interval: monthly
      retention: 12
      retention_action: archive
      archive_schema: partitioning_archive
    retention_dump_dir: /var/backups/partitions
'''

RETURN = r'''
changed:
  description: Whether a partition left the table or moved on (or the table's settings in the state schema changed).
  returned: always
  type: bool
msg:
  description: One line for the operator - what was detached, archived, dropped, kept, dumped; the longest lock.
  returned: always
  type: str
table:
  description: The table, canonical name.
  returned: always
  type: str
partitioned_table:
  description: The partitioned table worked on.
  returned: unless skipped
  type: str
skipped:
  description: True when there was nothing to maintain, retention waits for the cleanup, or another run holds the table.
  returned: always
  type: bool
holder:
  description: The session holding the table's work lock, when skipped for it.
  returned: when another run holds the table
  type: dict
detached:
  description: Partitions detached by this run.
  returned: always
  type: list
  elements: str
archived:
  description: Partitions moved to the archive schema.
  returned: always
  type: list
  elements: str
dropped:
  description: Partitions dropped.
  returned: always
  type: list
  elements: str
kept:
  description: Partitions detached and kept where they are (C(retention_action) detach).
  returned: always
  type: list
  elements: str
dumps:
  description: The dumps written - partition, path, bytes, sha256 (also in the state schema's C(retention_log)).
  returned: always
  type: list
  elements: dict
steps:
  description: One entry per DDL step - step, partition, status, detail, lock_mode, lock_ms (from the lock granted to the commit), attempts.
  returned: always
  type: list
  elements: dict
longest_lock_ms:
  description: The longest lock of the run's steps (ms), and C(longest_lock_mode) its mode.
  returned: always
  type: float
lock_budget_ms:
  description: The table's lock budget (spec C(lock_budget_ms)) - how long a plain detach or a drop waits for its lock per attempt.
  returned: always
  type: int
queries:
  description: The detach, dump-record, archive and drop steps in the order they ran (in check mode, would run).
  returned: always
  type: list
  elements: str
'''

from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import target
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.retention import retention
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import run_table_module, tuning_options


def work(module, session, resolved):
    spec, state_schema, now = resolved
    p = module.params
    return retention(session, SqlTemplates.bundled(), spec, state_schema, now=now, params=p,
                     dump_dir=p["retention_dump_dir"], pg_dump=p["pg_dump"], pg_restore=p["pg_restore"])


def main():
    run_table_module("partition_retention", work, dict(
        target.ARGUMENT_SPEC, pg_dump=dict(type="path"), pg_restore=dict(type="path"),
        **tuning_options("retention_dump_dir")), resolve=target.from_params)


if __name__ == "__main__":
    main()
