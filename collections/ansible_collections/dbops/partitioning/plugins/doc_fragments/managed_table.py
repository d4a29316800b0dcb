# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The table a phase works on and where its migration state lives (state.TABLE_ARGUMENT_SPEC).
    DOCUMENTATION = r'''
options:
  table:
    description: The original table, C(schema.table) (unqualified means C(public)).
    type: str
    required: true
  state_schema:
    description: The schema holding the migration state.
    type: str
    default: partitioning
'''
