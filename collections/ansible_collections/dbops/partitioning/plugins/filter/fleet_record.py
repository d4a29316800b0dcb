# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``partitioning_fleet | dbops.partitioning.fleet_record(event, ...)``: a host's record of its run,
after an event (plugin_utils/fleet.py ``record``)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: fleet_record
short_description: A host's record of a fleet roll-out, after an event
description:
  - The record (the fact I(partitioning_fleet)) says what a host did in this run - its state (running, completed,
    failed, stopped), the table in progress and one result per table (phase, rows, duration, result) - for the
    other hosts' stop decisions (P(dbops.partitioning.fleet_stop#filter)) and the recap (P(dbops.partitioning.fleet_recap#filter)).
options:
  _input:
    description: The host's record so far (none before C(start)).
    type: raw
    required: true
  event:
    description: C(start), C(tables), C(table), C(done), C(failed) or C(completed).
    type: str
    required: true
  title:
    description: C(start) - the play's name.
    type: str
  canary:
    description: C(start) - whether this host is the run's canary.
    type: bool
  check_mode:
    description: C(start) - whether the run is a check (C(ansible_check_mode)).
    type: bool
  stop:
    description: C(start), C(table) - why the host must stop instead (P(dbops.partitioning.fleet_stop#filter)); empty to go on.
    type: str
  names:
    description: C(tables) - the tables the host selected.
    type: list
    elements: str
  table:
    description: C(table) - the table the host begins.
    type: str
  outcome:
    description: C(done) - what the table's tasks report (I(partitioning_outcome) - phase, rows, changed, complete,
      result, detail).
    type: dict
  task:
    description: C(failed) - the failed task's name (C(ansible_failed_task.name)).
    type: str
  result:
    description: C(failed) - the failed task's result (C(ansible_failed_result)).
    type: dict
'''

EXAMPLES = r'''
- name: Record the table's outcome
  ansible.builtin.set_fact:
    partitioning_fleet: "{{ partitioning_fleet | dbops.partitioning.fleet_record('done', outcome=partitioning_outcome) }}"
'''

RETURN = r'''
_value:
  description: The record after the event.
  type: dict
'''

from ansible_collections.dbops.partitioning.plugins.plugin_utils.fleet import record


def fleet_record(current, event, **kw):
    return record(current, event, **kw)


class FilterModule(object):
    def filters(self):
        return {"fleet_record": fleet_record}
