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
extends_documentation_fragment:
  - dbops.partitioning.connection
  - dbops.partitioning.managed_table
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
  lock_timeout_ms:
    description: How long one attempt waits for its locks.
    type: int
    default: 50
  swap_retries:
    description: Attempts after the first one, with exponential backoff and jitter.
    type: int
    default: 30
author:
  - dbops.partitioning contributors
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
  description: The statements run (or, in check mode, that would run).
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import cleanup
from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.db import (
    connection_argument_spec, open_session, run_module)
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_table


def work(module, state):
    p = module.params
    parse_table(p["table"])
    if p["min_soak_s"] < 0:
        module.fail_json(msg="min_soak_s must not be negative.")
    session = open_session(module, state, "partition_cleanup")
    result = cleanup.cleanup(session, p["table"], params=p, state_schema=p["state_schema"],
                             min_soak_s=p["min_soak_s"], dump_dir=p["dump_dir"], pg_dump=p["pg_dump"],
                             lock_timeout_ms=p["lock_timeout_ms"], swap_retries=p["swap_retries"])
    if module.check_mode and result.get("changed"):
        result["msg"] = "check mode: " + result["msg"]
    result["queries"] = session.queries
    return result


def main():
    spec = connection_argument_spec()
    spec.update(state_store.TABLE_ARGUMENT_SPEC)
    spec.update(min_soak_s=dict(type="float", default=86400),
                dump_dir=dict(type="path"),
                pg_dump=dict(type="path"),
                lock_timeout_ms=dict(type="int", default=50),
                swap_retries=dict(type="int", default=30))
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    run_module(module, work)


if __name__ == "__main__":
    main()
