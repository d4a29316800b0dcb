#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_optimize
short_description: Phase 4 - build the spec's partition-specific indexes without blocking writes, then ANALYZE
description:
  - Works on the partitioned table after the switchover, or on a table partitioned by other means; before the
    switchover (or after a rollback) it refuses and changes nothing.
  - Each entry of the spec's C(indexes) (docs/table-spec.md) is first checked by PostgreSQL itself, on an empty
    temporary copy of the table's columns in a transaction that is rolled back; what is built is the index as the
    server deparsed it. An index of that name with another definition is refused, never replaced.
  - The build never blocks the application's writes (HP16) - the index C(ON ONLY) the parent, each partition's index
    C(CREATE INDEX CONCURRENTLY), then C(ALTER INDEX ... ATTACH PARTITION); the two short steps run under
    I(lock_timeout_ms), retried with backoff. An interrupted build is resumed - an invalid leftover of ours is dropped
    C(CONCURRENTLY) and built again. Partitions created later get the index from PostgreSQL.
  - Then ANALYZE where statistics are missing - the whole table after an index was built, else each partition that
    holds rows and was never analyzed.
  - Holds the table's work lock - a phase or maintenance running on the same table makes it fail with the holder named.
version_added: 0.2.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table, dbops.partitioning.managed_table.lock_retry]
seealso:
  - module: dbops.partitioning.table_swap
    description: The switchover that phase 4 follows.
  - name: Building indexes concurrently
    description: What C(CREATE INDEX CONCURRENTLY) waits for and why it leaves an invalid index when interrupted.
    link: https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY
'''

EXAMPLES = r'''
- name: The reports' indexes on every partition of revenues
  dbops.partitioning.partition_optimize:
    login_db: finance
    spec:
      table: public.revenues
      partition_key: occurred_at
      interval: monthly
      indexes:
        - columns: [org_id, occurred_at]
          include: [amount_cents, status]
        - name: revenues_month_mode_settled_idx
          columns: ["date_trunc('month', occurred_at AT TIME ZONE 'UTC')", payment_mode]
          where: "status = 'settled'"
'''

RETURN = r'''
table:
  description: The table.
  returned: always
  type: str
partitioned_table:
  description: The partitioned relation the indexes are on.
  returned: always
  type: str
indexes:
  description: One entry per index of the spec - C(name), C(definition) (as PostgreSQL deparsed it) and C(status)
    (C(built), C(would be built) or C(exists)).
  returned: always
  type: list
  elements: dict
done:
  description: Each step, e.g. C(index public.revenues_2025_01_org_idx), C(attached ... to ...), C(analyzed public.revenues).
  returned: always
  type: list
  elements: str
queries:
  description: The index builds, attaches and ANALYZE statements in the order they ran (in check mode, would run).
  returned: always
  type: list
  elements: str
'''

from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.optimize import optimize
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import (
    LOCK_RETRY_OPTIONS, managed_table, run_table_module)

OPTIONS = LOCK_RETRY_OPTIONS


def _target(params):
    """The table's spec (its indexes), with the module's tuning options applied; before connecting."""
    raw = dict(params["spec"] or {})
    if params.get("table"):
        raw["table"] = params["table"]
    spec = normalize_spec(raw)
    target = managed_table(params)
    spec.tuning.update(target.tuning)
    return spec, target.state_schema


def phase4(module, session, target):
    spec, state_schema = target
    return optimize(session, spec, state_schema)


def main():
    run_table_module("partition_optimize", phase4, OPTIONS, resolve=_target)


if __name__ == "__main__":
    main()
