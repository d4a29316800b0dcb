# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""``partitioning_tables | dbops.partitioning.only(partitioning_only)``.

Restricts a run to the tables named in ``-e partitioning_only=...`` (comma separated,
schema-qualified or not). A name that matches no table is an error, so a typo never
turns into a run that silently does nothing.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
name: only
short_description: Keep the table specs named in partitioning_only
description:
  - Keeps the entries of I(partitioning_tables) whose C(table) matches one of the comma separated names.
  - An empty selector keeps every table. A name matching no table is an error.
options:
  _input:
    description: The list of table specs (I(partitioning_tables)).
    type: list
    required: true
  selector:
    description: Comma separated table names; C(revenues) matches C(public.revenues).
    type: str
    default: ''
'''

EXAMPLES = r'''
- ansible.builtin.debug:
    msg: "{{ partitioning_tables | dbops.partitioning.only(partitioning_only | default('')) }}"
'''

RETURN = r'''
_value:
  description: The selected table specs.
  type: list
'''

from ansible.errors import AnsibleFilterError


def _canonical(name):
    name = str(name).strip()
    return name if "." in name else "public." + name


def only(tables, selector=""):
    tables = list(tables or [])
    if not selector:
        return tables
    wanted = [_canonical(n) for n in str(selector).split(",") if n.strip()]
    known = dict((_canonical(t.get("table", "")), t) for t in tables if isinstance(t, dict))
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise AnsibleFilterError("partitioning_only names %s, which partitioning_tables does not list (known: %s)"
                                 % (", ".join(unknown), ", ".join(sorted(known)) or "none"))
    return [known[w] for w in wanted]


class FilterModule(object):
    def filters(self):
        return {"only": only}
