#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_create
short_description: Phase 1 - create the partitioned twin of a table, its partitions and sync triggers
description:
  - Runs the preflight checks (table, primary key, partition key and its type, NULLs, server version,
    inbound foreign keys, names, the state of an earlier run) and stops with one message listing every
    problem before anything changes.
  - Creates (or migrates) the state schema, the partitioned twin C(<table>_partitioned) with its
    partitions (range C(<table>_<suffix>) from the oldest key to now plus I(premake), hash, list, and the
    default partition), indexes, constraints, foreign keys, grants, owner, comments and storage
    parameters, and the sync triggers that mirror every write of the original into the twin in the
    writer's own transaction (TRUNCATE included).
  - Records the table in the state schema in phase C(prepared), with the largest primary key present
    when the triggers appeared (C(backfill_upper), read in the transaction that created them).
  - Idempotent and resumable; a later run only adds what is missing, such as partitions that
    I(premake) asks for as time passes. Locks on the application's tables are taken with a short
    lock timeout and retried with backoff.
version_added: 0.1.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table]
options:
  defaults:
    description:
      - Playbook-level defaults for every table (tuning names with or without the C(partitioning_) prefix,
        C(premake), C(retention_action), C(inbound_foreign_keys)). Keys that are not spec keys are ignored.
    type: dict
    default: {}
  partition_key:
    description: The column to partition by. It must be C(NOT NULL); it joins the primary key on the twin.
    type: str
  strategy:
    description: C(range), C(list) or C(hash).
    type: str
  interval:
    description:
      - Range only. C(daily), C(weekly), C(monthly), C(quarterly), C(yearly), or a positive integer width for
        an integer key.
    type: raw
  premake:
    description: Range only. Future partitions kept ready beyond the current one.
    type: int
  start:
    description:
      - Range only. The first partition's period (date, or integer for widths), earlier or later than the rows;
        keys before it go to the default partition and are reported. Default the period of the earliest finite
        key (of now, when every key is later).
    type: raw
  max_partitions:
    description:
      - Range only. More range partitions in the layout (from O(start) through O(premake) periods after now) is
        refused, naming what set the span; 1 to 10000. Default 1000.
    type: int
  partitions:
    description: Hash only. Number of partitions (2..1024).
    type: int
  values:
    description: List only. Partition name suffix -> list of values.
    type: dict
  default_partition:
    description:
      - Create a default partition (range and list). It catches keys outside every partition so that the
        sync trigger never fails an application write; the rows in it are reported.
    type: bool
  inbound_foreign_keys:
    description:
      - What to do with other tables' foreign keys that reference this table (they cannot reference a
        partitioned table by its old key). C(refuse) stops in preflight and names them; C(drop) drops them,
        reports them and records them so that rollback re-creates them.
    type: str
    choices: [refuse, drop]
  retention:
    description: Range only. Months of data kept attached (used by maintenance); null keeps everything.
    type: int
  retention_action:
    description: C(detach), C(archive) or C(drop) (used by maintenance).
    type: str
  lock_timeout_ms:
    description: Longest wait for a lock on an application table before the attempt is retried.
    type: int
  swap_retries:
    description: Attempts after a lock timeout (exponential backoff with jitter between them).
    type: int
  now:
    description:
      - The current time for planning partitions (ISO 8601), for tests and reproducible plans. Default now.
    type: str
  runbook_schema:
    description:
      - The schema where maintenance will install the runbook's functions (C(partitioning_runbook_schema)).
        Only checked here, with every other privilege the later phases need; nothing is installed.
    type: str
notes:
  - The whole I(spec) is validated (unknown keys are refused, so a typo never goes unnoticed); the
    options above override its keys.
  - A primary key or unique constraint of the twin must contain the partition key (PostgreSQL); the
    twin's are extended with it and each extension is reported in C(warnings).
seealso:
  - module: dbops.partitioning.batch_copy
    description: Phase 2, which copies the existing rows into the twin.
  - module: dbops.partitioning.partition_rollback
    description: Drops what phase 1 created, before the switchover.
  - name: Table partitioning in PostgreSQL
    description: Declarative partitioning, which the twin uses.
    link: https://www.postgresql.org/docs/current/ddl-partitioning.html
'''

EXAMPLES = r'''
- name: Prepare public.revenues (quarterly range partitions)
  dbops.partitioning.partition_create:
    login_host: db1.example.com
    login_db: finance
    table: public.revenues
    partition_key: occurred_at
    strategy: range
    interval: quarterly
    premake: 4

- name: Prepare a table from its entry in partitioning_tables
  dbops.partitioning.partition_create:
    login_db: finance
    spec:
      table: public.daily_cash_balances
      partition_key: org_id
      strategy: hash
      partitions: 16
    defaults:
      lock_timeout_ms: 50
'''

RETURN = r'''
changed:
  description: Whether anything was created (a second run reports false).
  returned: always
  type: bool
table:
  description: The table, canonical name.
  returned: success
  type: str
  sample: public.revenues
twin:
  description: The partitioned twin.
  returned: success
  type: str
  sample: public.revenues_partitioned
layout:
  description:
    - Range only. The span of the range partitions, C(first) (inclusive) to C(end) (exclusive; C(MAXVALUE) when
      open), how many (C(partitions)) and what chose C(first) (C(starts_at)); start, min(key) or now.
  returned: success, range
  type: dict
  sample: {first: '2025-01-01', end: '2026-06-01', partitions: 17, starts_at: min(key)}
outside_layout:
  description:
    - Range only. The rows whose keys lie outside the layout (C(infinity), far past or future) and go to the
      default partition, counted when the twin is made; C(before) and C(after) counts, C(earliest) and C(latest)
      keys as text.
  returned: when there are some
  type: dict
  sample: {before: 0, after: 3, earliest: null, latest: infinity}
partitions:
  description: Names of the twin's partitions as planned (existing and created).
  returned: success
  type: list
  elements: str
  sample: [revenues_2025_q1, revenues_2025_q2, revenues_default]
created:
  description: What this run created, one entry per object (table, partition, index, trigger, ...).
  returned: success
  type: list
  elements: str
warnings:
  description:
    - What the operator should know (unique keys extended with the partition key, foreign keys to be dropped...),
      through Ansible's warnings (shown as C([WARNING]) lines).
  returned: when there are some
  type: list
  elements: str
phase:
  description: The table's phase in the state schema after the run.
  returned: success
  type: str
  sample: prepared
dropped_foreign_keys:
  description: Inbound foreign keys dropped by this run (name, table, definition), when inbound_foreign_keys is drop.
  returned: when some were dropped
  type: list
  elements: dict
queries:
  description: The statements that ran (or, in check mode, would run).
  returned: always
  type: list
  elements: str
'''

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import parse_now
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_column
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import (
    LOCK_RETRY_OPTIONS, run_table_module)

SPEC_OPTIONS = ("table", "partition_key", "strategy", "interval", "premake", "start", "max_partitions", "partitions",
                "values", "default_partition", "inbound_foreign_keys", "retention", "retention_action",
                "lock_timeout_ms", "swap_retries")
OPTIONS = dict(defaults=dict(type="dict", default={}),
               partition_key=dict(type="str", no_log=False),  # a column name, not a secret
               strategy=dict(type="str"),
               interval=dict(type="raw"),
               premake=dict(type="int"),
               start=dict(type="raw"),
               max_partitions=dict(type="int"),
               partitions=dict(type="int"),
               values=dict(type="dict"),
               default_partition=dict(type="bool"),
               inbound_foreign_keys=dict(type="str", choices=["refuse", "drop"]),
               retention=dict(type="int"),
               retention_action=dict(type="str"),
               now=dict(type="str"),
               runbook_schema=dict(type="str"),
               **LOCK_RETRY_OPTIONS)


def _target(params):
    """The whole table spec, validated before any connection: a bad spec changes nothing."""
    raw = dict(params["spec"] or {})
    for name in SPEC_OPTIONS:
        if params.get(name) is not None:
            raw[name] = params[name]
    spec = normalize_spec(raw, params["defaults"] or {})
    return (spec, params["state_schema"] or spec.state_schema, parse_now(params["now"]),
            parse_column(params["runbook_schema"]) if params["runbook_schema"] else None)


def prepare(module, session, target):
    spec, state_schema, now, runbook_schema = target
    return prepare_table(session, SqlTemplates.bundled(), spec, state_schema, now=now, runbook_schema=runbook_schema)


def main():
    run_table_module("partition_create", prepare, OPTIONS, resolve=_target)


if __name__ == "__main__":
    main()
