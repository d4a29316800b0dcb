#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_cleanup
short_description: After a verified, soaked switchover, drop <table>_old and the reverse sync
description:
  - "Refused unless the table is in phase C(switched), the soak time I(min_soak_s) since the switch
    has elapsed, and a verification after the switch passes now: the new table and C(<table>_old)
    compared by count and checksum in one C(REPEATABLE READ) snapshot (the reverse sync writes both
    in the application's transactions, so they are equal also under load)."
  - Optionally writes a C(pg_dump -Fc) of C(<table>_old) into I(dump_dir) first (pg_dump from the
    server's BINDIR when readable, else PATH, or I(pg_dump)); fails clearly when none is found.
  - Then drops the reverse-sync triggers and function and C(<table>_old), and sets phase C(cleaned).
    After this, rollback is no longer possible.
version_added: 0.1.0
extends_documentation_fragment: [dbops.partitioning.connection, dbops.partitioning.managed_table, dbops.partitioning.managed_table.lock_retry]
options:
  min_soak_s:
    description: Seconds that must have passed since the switchover.
    type: float
    default: 86400
  dump_dir:
    description: Directory (on the host running the module) for a pg_dump of C(<table>_old) before it is dropped.
    type: path
  pg_dump:
    description: The pg_dump executable to use (by default the server's BINDIR, then PATH).
    type: path
seealso:
  - module: dbops.partitioning.table_swap
    description: The switchover whose C(<table>_old) this drops.
  - module: dbops.partitioning.partition_rollback
    description: The undo, possible until the cleanup.
  - name: pg_dump
    description: The dump written before C(<table>_old) is dropped, when I(dump_dir) is set.
    link: https://www.postgresql.org/docs/current/app-pgdump.html
'''

EXAMPLES = r'''
- name: Drop revenues_old a day after the switchover, keeping a dump
  dbops.partitioning.partition_cleanup:
    login_db: finance
    table: public.revenues
    min_soak_s: 86400
    dump_dir: /var/backups/partitioning
'''

RETURN = r'''
phase:
  description: C(cleaned).
  returned: always
  type: str
verification:
  description: Counts and checksums of the new table and C(<table>_old) compared after the switch.
  returned: when checked
  type: dict
done:
  description: What was done, one line per step (including the dump file's path).
  returned: when changed
  type: list
  elements: str
queries:
  description: The changing statements in order - the reverse sync's and C(<table>_old)'s drops, the state row's update - or
    in check mode those that would run. The dump is reported in C(done).
  returned: always
  type: list
  elements: str
'''

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import cleanup
from ansible_collections.dbops.partitioning.plugins.module_utils.table_module import (
    LOCK_RETRY_OPTIONS, managed_table, run_table_module)

OPTIONS = dict(min_soak_s=dict(type="float", default=86400),
               dump_dir=dict(type="path"),
               pg_dump=dict(type="path"),
               **LOCK_RETRY_OPTIONS)


def _target(params):
    if params["min_soak_s"] < 0:
        raise PartitioningError("min_soak_s must not be negative.")
    return managed_table(params)


def clean_up(module, session, target):
    p, t = module.params, target.tuning
    return cleanup.cleanup(session, target.table_name, params=p, state_schema=target.state_schema,
                           min_soak_s=p["min_soak_s"], dump_dir=p["dump_dir"], pg_dump=p["pg_dump"],
                           lock_timeout_ms=t["lock_timeout_ms"], swap_retries=t["swap_retries"])


def main():
    run_table_module("partition_cleanup", clean_up, OPTIONS, resolve=_target)


if __name__ == "__main__":
    main()
