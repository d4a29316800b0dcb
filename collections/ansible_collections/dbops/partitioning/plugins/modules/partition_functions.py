#!/usr/bin/python
# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
module: partition_functions
short_description: Install the runbook's maintenance functions in the database (and where the application finds them)
description:
  - Installs, or upgrades when their text changed, the maintenance functions in the state schema (migrating the state
    schema first) - C(maintain_partition_system()), C(create_next_year_partitions()), C(archive_old_partitions(months)),
    C(create_quarterly_partition(table, from, to)), the procedure C(maintenance_job()) for pg_cron, and the plans and
    steps that the maintenance modules run too (one implementation).
  - With I(runbook_schema) (e.g. C(public)), also installs thin wrappers there, so that the first user's runbook calls
    them unqualified, e.g. C(SELECT maintain_partition_system();). A function of that name that is not such a wrapper
    is refused, never replaced.
  - The columns every function returns are documented in docs/runbooks/maintenance.md.
version_added: 0.2.0
extends_documentation_fragment: [dbops.partitioning.connection]
options:
  state_schema:
    description:
      - The state schema, home of the functions.
      - Default the spec's C(state_schema), else partitioning.
    type: str
  runbook_schema:
    description: A schema on the application's search_path that gets wrappers of the runbook's functions; empty for none.
    type: str
seealso:
  - module: dbops.partitioning.partition_premake
    description: Premake, with the same plans and steps.
  - module: dbops.partitioning.partition_retention
    description: Retention, with the same plans and steps.
  - name: pg_cron
    description: Runs CALL partitioning.maintenance_job() on a schedule where there is no AWX.
    link: https://github.com/citusdata/pg_cron
'''

EXAMPLES = r'''
- name: The runbook's functions, callable unqualified from psql
  dbops.partitioning.partition_functions:
    login_db: finance
    runbook_schema: public
'''

RETURN = r'''
changed:
  description: Whether the functions or the wrappers were (or, in check mode, would be) installed or upgraded.
  returned: always
  type: bool
installed:
  description: Whether the functions in the state schema were installed or upgraded by this run.
  returned: always
  type: bool
wrappers:
  description: The wrappers (re)created in I(runbook_schema).
  returned: always
  type: list
  elements: str
queries:
  description: The statements that installed or upgraded the functions and wrappers (in check mode, would); empty when every one was current.
  returned: always
  type: list
  elements: str
'''

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.dbops.partitioning.plugins.module_utils.db import (
    connection_argument_spec, open_session, run_module)
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import parse_column
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import functions
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import TUNING
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates


def work(module, state):
    p = module.params
    state_schema = parse_column(p["state_schema"] or TUNING["state_schema"][0])
    runbook_schema = parse_column(p["runbook_schema"]) if p["runbook_schema"] else None
    templates = SqlTemplates.bundled()
    session = open_session(module, state, "partition_functions")
    installed = functions.ensure_functions(session, templates, state_schema)
    wrappers = functions.install_wrappers(session, templates, state_schema, runbook_schema) if runbook_schema else []
    return dict(changed=bool(installed or wrappers), installed=installed, wrappers=wrappers, queries=session.queries,
                msg="maintenance functions in %s %s%s" % (
                    state_schema, ("would be installed" if module.check_mode else "installed") if installed
                    else "up to date", "; wrappers in %s: %s" % (runbook_schema, ", ".join(wrappers)) if wrappers else ""))


def main():
    argument_spec = connection_argument_spec()
    argument_spec.update(state_schema=dict(type="str"), runbook_schema=dict(type="str"))
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    run_module(module, work)


if __name__ == "__main__":
    main()
