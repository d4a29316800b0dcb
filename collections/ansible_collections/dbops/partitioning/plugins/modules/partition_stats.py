#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_stats
short_description: Read-only facts about partitioned and migrating tables
description:
  - Reports, per table, the migration phase recorded in the state schema, backfill progress
    (rows copied of the estimate, percent, rate, ETA, pauses and throttles, keys waiting for
    reconciliation), the last verification, and the partitions of the partitioned table
    (bounds, estimated rows, sizes, scans), index use summed over partitions, rows in the
    default partition and health warnings.
  - The partitions and the index use are read through the runbook's monitoring functions (C(get_partition_stats()),
    C(analyze_partition_performance()), docs/runbooks/phase4.md) - in the state schema when they are installed and
    current, else created for this session alone in its C(pg_temp).
  - Never changes anything; safe to run at any time, also while a phase runs.
version_added: 0.1.0
extends_documentation_fragment: [dbops.partitioning.connection]
options:
  tables:
    description:
      - Tables to report on (C(schema.table); unqualified means C(public)), or table specs as in
        I(partitioning_tables) (their C(table), C(premake), C(retention) and C(state_schema) are used).
      - Empty means every table recorded in the state schema.
    type: list
    elements: raw
    default: []
  state_schema:
    description:
      - The schema holding the migration state, for every table.
      - Default each spec's C(state_schema), else C(partitioning).
    type: str
  now:
    description:
      - The instant the premake and retention checks are made at (ISO 8601; without an offset, UTC) - drills and tests.
      - Default the server's now.
    type: str
  record_history:
    description:
      - Append a snapshot of each table's partition sizes to C(<state>.partition_size_history) first (the report's
        growth chart), where the monitoring functions are installed. The tables themselves are never touched, so the
        module still reports no change.
    type: bool
    default: false
seealso:
  - module: dbops.partitioning.batch_copy
    description: Its progress is what C(progress) reports while phase 2 runs.
  - name: Monitoring database activity
    description: The statistics views the partition and index facts come from.
    link: https://www.postgresql.org/docs/current/monitoring-stats.html
'''

EXAMPLES = r'''
- name: Facts about every managed table
  dbops.partitioning.partition_stats:
    login_host: db1.example.com
    login_db: finance
  register: stats

- name: One table, with its premake target checked
  dbops.partitioning.partition_stats:
    login_db: finance
    tables:
      - table: public.revenues
        premake: 4
'''

RETURN = r'''
tables:
  description: One entry per table.
  returned: always
  type: list
  elements: dict
  contains:
    table: {description: Canonical name., type: str, sample: public.revenues}
    managed: {description: Whether the state schema records the table., type: bool}
    phase: {description: "prepared, copying, copied, verified, switched, cleaned or rolled_back.", type: str}
    partitioned_table: {description: The partitioned relation (the twin before switchover)., type: str}
    progress: {description: Backfill progress as in the state schema's progress view., type: dict}
    verification: {description: Status of the last verification (ok or different)., type: str}
    partitions:
      description:
        - "Per partition, the columns of get_partition_stats() (partition_name as name): name, is_default, bound,
          lower_bound, upper_bound, rows_estimate, live_rows, dead_rows, total_bytes, table_bytes, index_bytes,
          seq_scans, seq_rows_read, index_scans, last_vacuum, last_analyze."
      type: list
    indexes: {description: "Per index of the table, its use summed over partitions - index_name, scans, bytes, valid, unused_on.", type: list}
    report_queries:
      description: "The registered report queries and their pruning - name, partitions_read, partitions_total, finding."
      type: list
    default_partition_rows: {description: Rows currently in the default partition., type: int}
    health: {description: Warnings an operator should act on (the alerts' messages)., type: list, elements: str}
    alerts: {description: "Each warning with its level (warning or critical) - level, message.", type: list, elements: dict}
    verdict: {description: "One health verdict - ok, warning or critical (the worst alert).", type: str}
    future_partitions: {description: Range partitions starting after now (null for integer ranges)., type: int}
    premake: {description: The future partitions the spec wants ready (null when not given)., type: int}
    oldest_partition: {description: "The oldest range partition - name, lower_bound, upper_bound.", type: dict}
    retention: {description: The spec's retention in months (null - keep all)., type: int}
    expired_partitions: {description: Partitions past retention still attached (null without retention)., type: int}
    history:
      description: "Recorded sizes over time, oldest first (at most 200) - at, total_bytes, rows_estimate, partitions."
      type: list
    history_recorded: {description: Partitions recorded into the history by this run., type: int}
queries:
  description: Statements that changed something (always empty for this read-only module).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import parse_now
from ansible_collections.dbops.partitioning.plugins.module_utils.db import (
    connection_argument_spec, open_session, run_module)
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import TUNING
from ansible_collections.dbops.partitioning.plugins.module_utils.stats import Expected, all_facts


def _by_schema(entries, state_schema):
    """``{state schema: (table names, {table: Expected})}`` of the requested tables, in their order."""
    default = state_schema or TUNING["state_schema"][0]
    groups = {}
    for entry in entries:
        spec = entry if isinstance(entry, dict) else dict(table=str(entry))
        name = qualified(*parse_table(spec.get("table", "")))
        names, expected = groups.setdefault(state_schema or spec.get("state_schema") or default, ([], {}))
        names.append(name)
        ranged = spec.get("strategy", "range") == "range"
        expected[name] = Expected(premake=_int(spec.get("premake")) if ranged else None,
                                  retention=_int(spec.get("retention")) if ranged else None)
    return groups or {default: ([], {})}


def _int(value):
    return None if value is None else int(value)


def work(module, state):
    groups = _by_schema(module.params["tables"], module.params["state_schema"])  # validated before connecting
    now = parse_now(module.params["now"])
    session = open_session(module, state, "partition_stats")
    facts = []
    for schema, (names, expected) in groups.items():
        facts.extend(all_facts(session, schema, names, expected, now, module.params["record_history"]))
    return dict(changed=False, tables=facts, queries=session.queries)


def main():
    spec = connection_argument_spec()
    spec.update(tables=dict(type="list", elements="raw", default=[]),
                state_schema=dict(type="str"), now=dict(type="str"), record_history=dict(type="bool", default=False))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    run_module(module, work)


if __name__ == "__main__":
    main()
