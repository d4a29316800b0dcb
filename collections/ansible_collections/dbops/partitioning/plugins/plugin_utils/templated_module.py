# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Action plugin shared by every module: hands the SQL templates to the module.

Modules are shipped to the host that runs them as a zip of Python code only, so the
Jinja2 templates of ``templates/sql`` are read here, on the controller, and passed in
``_sql_templates``.  The directory is ``partitioning_sql_templates_dir`` when set, else
``templates/sql`` of the project around the collection (a checkout) or inside it.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible.errors import AnsibleError
from ansible.plugins.action import ActionBase

from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import (
    find_templates_dir, read_templates)


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super(ActionModule, self).run(tmp, task_vars)
        directory = task_vars.get("partitioning_sql_templates_dir")
        if directory:
            directory = self._templar.template(directory)
        else:
            directory = find_templates_dir(os.path.dirname(__file__))
        if not directory or not os.path.isdir(directory):
            raise AnsibleError("dbops.partitioning: SQL templates not found; set partitioning_sql_templates_dir "
                               "to the templates/sql directory of the project.")
        args = dict(self._task.args)
        args["_sql_templates"] = read_templates(directory)
        result.update(self._execute_module(module_name=self._task.resolved_action or self._task.action,
                                           module_args=args, task_vars=task_vars))
        invocation = result.get("invocation", {}).get("module_args")
        if isinstance(invocation, dict):
            invocation.pop("_sql_templates", None)
        return result
