# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``hostvars | dbops.partitioning.fleet_recap(play_hosts, partitioning_only)``: the run's recap,
one line per host and table, and its verdict (plugin_utils/fleet.py ``recap``)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: fleet_recap
short_description: The recap of a fleet roll-out
description:
  - Gathers every play host's record (the fact I(partitioning_fleet)) into a headline and one line per host and
    table - phase, rows, duration, result - including hosts that failed, were stopped or never reported.
options:
  _input:
    description: C(hostvars).
    type: raw
    required: true
  play_hosts:
    description: The phase play's hosts, in order.
    type: list
    elements: str
    required: true
  only:
    description: I(partitioning_only), to name the tables of hosts that never listed theirs.
    type: str
    default: ''
'''

EXAMPLES = r'''
- name: Recap
  ansible.builtin.debug:
    msg: "{{ (hostvars | dbops.partitioning.fleet_recap(ansible_play_hosts_all)).lines }}"
'''

RETURN = r'''
_value:
  description: C(lines), C(failed), C(stopped), C(interrupted), C(completed) (host lists) and C(ok).
  type: dict
'''

from ansible_collections.dbops.partitioning.plugins.filter.tables import only as only_tables
from ansible_collections.dbops.partitioning.plugins.plugin_utils.fleet import recap

from ansible.errors import AnsibleError


def _selected(hostvars, host, selector):
    """The names of the tables ``host`` would have run, or None when they cannot be told."""
    try:
        return [str(t.get("table")) for t in only_tables(hostvars[host].get("partitioning_tables") or [], selector)]
    except (AnsibleError, AttributeError, TypeError):
        return None


def fleet_recap(hostvars, play_hosts, only=""):
    records = dict((h, hostvars[h].get("partitioning_fleet")) for h in play_hosts)
    selected = dict((h, _selected(hostvars, h, only)) for h in play_hosts)
    return recap(records, play_hosts, selected)


class FilterModule(object):
    def filters(self):
        return {"fleet_recap": fleet_recap}
