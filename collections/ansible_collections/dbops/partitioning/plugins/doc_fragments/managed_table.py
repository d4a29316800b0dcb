# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The table a module works on, its spec and where its migration state lives
    # (module_utils/table_module.py, TABLE_ARGUMENT_SPEC).
    DOCUMENTATION = r'''
options:
  spec:
    description:
      - The table's entry of I(partitioning_tables), as the playbooks pass it (resolved by the filter
        C(dbops.partitioning.validated_specs)). Its C(table), C(state_schema) and tuning keys
        (C(lock_timeout_ms), C(batch_size), ...) are used.
      - An option given to the module wins over the spec's key; what neither sets takes the table spec's
        default (docs/table-spec.md), so no default is repeated here.
    type: dict
    default: {}
  table:
    description:
      - The original table, C(schema.table) (unqualified means C(public)).
      - Required unless I(spec) names it.
    type: str
  state_schema:
    description:
      - The schema holding the migration state.
      - Default the spec's C(state_schema), else C(partitioning).
    type: str
'''

    # The short-lock retries of a module that locks application tables.
    LOCK_RETRY = r'''
options:
  lock_timeout_ms:
    description:
      - How long one attempt waits for its locks (the application waits at most this long behind it).
      - Default the spec's C(lock_timeout_ms) (docs/table-spec.md).
    type: int
  swap_retries:
    description:
      - Attempts after the first one, with exponential backoff and jitter between them.
      - Default the spec's C(swap_retries) (docs/table-spec.md).
    type: int
'''
