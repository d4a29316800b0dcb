# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``partitioning_tables | dbops.partitioning.validated_specs(vars)``: the specs, resolved once.

Every playbook resolves its hosts' table specs with this filter before any module runs
(playbooks/tasks/resolve_specs.yml): every problem of every entry is reported in one message
(module_utils/spec.py), and the result is the normalized specs with the play's
``partitioning_*`` knobs and the spec's own defaults filled in, which the modules take whole.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: validated_specs
short_description: Validate and normalize partitioning_tables
description:
  - Checks every entry of I(partitioning_tables) (keys, types, strategy/interval/partitions/values combinations,
    identifiers, tuning values) without touching a database, and fails with one message listing every problem.
  - Returns the specs resolved, C(table) canonical as C(schema.table); every key a module reads is there,
    so no playbook and no module repeats a default (module_utils/spec.py is their one source).
options:
  _input:
    description: The list of table specs (I(partitioning_tables)).
    type: list
    required: true
  variables:
    description:
      - The play's variables (C(vars)). A table's own key wins over the play's C(partitioning_<key>)
        (C(partitioning_batch_size), C(partitioning_premake), ...), which wins over the spec's default.
      - Only those names are read; nothing else in the mapping is looked at.
    type: dict
    default: {}
'''

EXAMPLES = r'''
- name: Resolve the table specs once, refusing bad ones before touching any database
  ansible.builtin.set_fact:
    partitioning_specs: "{{ partitioning_tables | dbops.partitioning.validated_specs(vars) }}"
'''

RETURN = r'''
_value:
  description: The resolved table specs, in the order given.
  type: list
  elements: dict
'''

from ansible.errors import AnsibleFilterError

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import playbook_defaults, validate_specs


def validated_specs(tables, variables=None):
    try:
        return [spec.to_json() for spec in validate_specs(tables, playbook_defaults(variables or {}))]
    except PartitioningError as e:
        raise AnsibleFilterError(e.msg)


class FilterModule(object):
    def filters(self):
        return {"validated_specs": validated_specs}
