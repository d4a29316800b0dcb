# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
# The module needs the SQL templates from the controller: see plugin_utils/templated_module.py.
from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.dbops.partitioning.plugins.plugin_utils.templated_module import ActionModule  # noqa: F401
