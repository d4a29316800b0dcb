# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``partitioning_hosts | dbops.partitioning.fleet_play(partitioning_canary, partitioning_serial)``:
the phase play's ``hosts`` and ``serial`` (plugin_utils/fleet.py; playbooks/vars/fleet.yml)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: fleet_play
short_description: The hosts and serial batches of a fleet roll-out
description:
  - Returns C(hosts) and C(serial) for a phase play from the run's fleet settings.
  - With a canary the canary comes first, alone in its batch, so that it completes the phase before any other
    host starts; the other hosts follow in batches of I(serial).
options:
  _input:
    description: The play's host pattern (I(partitioning_hosts), default C(all)).
    type: str
    required: true
  canary:
    description: I(partitioning_canary) - a host name, C(true) for the first host of the play, or false/empty.
    type: raw
  serial:
    description:
      - I(partitioning_serial) - hosts per batch, a number (C(2)), a percentage (C(25%)) or a list (C(1,25%)).
      - Empty runs every host in one batch.
    type: raw
'''

EXAMPLES = r'''
- name: Phase N
  hosts: "{{ partitioning_fleet_play.hosts }}"
  serial: "{{ partitioning_fleet_play.serial }}"
  vars:
    partitioning_fleet_play: >-
      {{ partitioning_hosts | default('all')
         | dbops.partitioning.fleet_play(partitioning_canary | default(false), partitioning_serial | default('')) }}
'''

RETURN = r'''
_value:
  description: C(hosts) (a list of host patterns, the canary first), C(serial) (a list of batch sizes) and
    C(canary) (whether the run has one; it is then the play's first host).
  type: dict
'''

from ansible_collections.dbops.partitioning.plugins.plugin_utils.fleet import play


def fleet_play(pattern, canary=None, serial=None):
    return play(pattern, canary, serial)


class FilterModule(object):
    def filters(self):
        return {"fleet_play": fleet_play}
