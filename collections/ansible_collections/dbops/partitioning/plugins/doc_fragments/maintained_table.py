# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # What maintenance modules add to managed_table (maintain/target.py ARGUMENT_SPEC).
    DOCUMENTATION = r'''
options:
  now:
    description:
      - The time that stands in for now (ISO 8601; without an offset it is UTC), for drills and tests. Default now.
    type: str
notes:
  - I(spec) must be the table's whole entry of I(partitioning_tables) (C(partition_key), C(strategy), C(interval),
    C(premake), C(retention), C(retention_action), and tuning such as C(lock_budget_ms), C(archive_schema),
    C(retention_dump_dir)); the playbooks pass it resolved by C(dbops.partitioning.validated_specs).
  - The table is the one partitioned table of the spec; before its switchover, the twin C(<table>_partitioned).
    A table not partitioned yet is skipped (C(skipped) true, C(msg) says why), as is a table whose migration or
    maintenance is running elsewhere (the per-table work lock; C(holder) names the session).
  - Every DDL step waits at most C(lock_budget_ms) for a lock and is retried with jittered backoff (C(swap_retries));
    its lock time, from the lock granted to the commit, is returned in C(steps) and recorded in the state schema's
    C(maintenance_steps).
'''
