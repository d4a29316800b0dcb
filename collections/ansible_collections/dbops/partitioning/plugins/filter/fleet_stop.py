# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``hostvars | dbops.partitioning.fleet_stop(...)``: why this host must not start its next table
(the canary has not completed, another host failed ...), or ``''`` (plugin_utils/fleet.py)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: fleet_stop
short_description: Whether a host of a fleet roll-out must stop before its next table
description:
  - Reads every play host's record (the fact I(partitioning_fleet)) and the run's settings, and returns why this
    host must not start (or not start its next table), or an empty string.
  - It must stop when the canary has not completed the phase, when another host failed and
    I(partitioning_any_errors_fatal) is set, or when more than I(partitioning_max_fail_percentage) of the play's
    hosts failed.
  - Fails when a canary is set but the play did not run it first in a batch of its own (set in the inventory
    rather than as an extra variable, left out by --limit, or not a host of the play).
options:
  _input:
    description: C(hostvars).
    type: raw
    required: true
  host:
    description: This host (C(inventory_hostname)).
    type: str
    required: true
  play_hosts:
    description: The play's hosts in order (C(ansible_play_hosts_all)).
    type: list
    elements: str
    required: true
  batch:
    description: The current batch (C(ansible_play_batch)).
    type: list
    elements: str
  pattern_hosts:
    description: The hosts the play's pattern selects, before --limit.
    type: list
    elements: str
  canary:
    description: I(partitioning_canary).
    type: raw
  any_errors_fatal:
    description: I(partitioning_any_errors_fatal).
    type: raw
  max_fail_percentage:
    description: I(partitioning_max_fail_percentage).
    type: raw
'''

EXAMPLES = r'''
- name: Stop here when the run must stop
  ansible.builtin.meta: end_host
  when: >-
    hostvars | dbops.partitioning.fleet_stop(inventory_hostname, ansible_play_hosts_all, ansible_play_batch,
    canary=partitioning_canary | default(false)) | length > 0
'''

RETURN = r'''
_value:
  description: Why the host must stop, in one line; empty when it may go on.
  type: str
'''

from ansible_collections.dbops.partitioning.plugins.plugin_utils.fleet import stop_reason


def fleet_stop(hostvars, host, play_hosts, batch=None, pattern_hosts=None, canary=None, any_errors_fatal=False,
               max_fail_percentage=None):
    records = dict((h, hostvars[h].get("partitioning_fleet")) for h in play_hosts)
    return stop_reason(records, host, play_hosts, batch, pattern_hosts, canary, any_errors_fatal,
                       max_fail_percentage)


class FilterModule(object):
    def filters(self):
        return {"fleet_stop": fleet_stop}
