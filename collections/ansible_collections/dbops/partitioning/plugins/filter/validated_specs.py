# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``partitioning_tables | dbops.partitioning.validated_specs``: every spec checked at once.

A playbook can validate the whole ``partitioning_tables`` list before any host is touched:
every problem of every entry is reported in one message (module_utils/spec.py), and the
result is the normalized specs (defaults filled in, names canonical).
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: validated_specs
short_description: Validate and normalize partitioning_tables
description:
  - Checks every entry of I(partitioning_tables) (keys, types, strategy/interval/partitions/values combinations,
    identifiers, tuning values) without touching a database, and fails with one message listing every problem.
  - Returns the specs normalized (defaults filled in, C(table) canonical as C(schema.table)).
options:
  _input:
    description: The list of table specs (I(partitioning_tables)).
    type: list
    required: true
  defaults:
    description: Playbook-level defaults (tuning names with or without the C(partitioning_) prefix,
      C(premake), C(retention_action), C(inbound_foreign_keys)); other keys are ignored.
    type: dict
    default: {}
'''

EXAMPLES = r'''
- name: Refuse bad specs before touching any database
  ansible.builtin.set_fact:
    partitioning_specs: "{{ partitioning_tables | dbops.partitioning.validated_specs }}"
  run_once: true
'''

RETURN = r'''
_value:
  description: The normalized table specs, in the order given.
  type: list
  elements: dict
'''

from ansible.errors import AnsibleFilterError

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import validate_specs


def validated_specs(tables, defaults=None):
    try:
        return [spec.to_json() for spec in validate_specs(tables, defaults or {})]
    except PartitioningError as e:
        raise AnsibleFilterError(e.msg)


class FilterModule(object):
    def filters(self):
        return {"validated_specs": validated_specs}
