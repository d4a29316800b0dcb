"""The SQL templates travel with the modules as Python data compiled from templates/sql."""
import os
import subprocess
import sys

from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ..helpers.paths import COLLECTION, ROOT


def test_the_data_module_is_compiled_from_the_current_templates():
    p = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "sql_texts.py"), "--check"],
                       capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr


def test_the_top_level_templates_are_the_collections():
    top = os.path.join(ROOT, "templates", "sql")
    inside = os.path.join(COLLECTION, "templates", "sql")
    assert os.path.realpath(top) == os.path.realpath(inside)


def test_one_environment_per_process():
    templates = SqlTemplates.bundled()
    assert SqlTemplates.bundled() is templates
    assert {"state/001_state_schema", "sync/trigger_function", "backfill/batch"} <= set(templates.texts)
