"""Every module keeps the house contract (INTERFACE.md "Modules").

Docs render with ansible-doc, check mode is supported, the standard connection options
are in the argument spec and errors reach the operator as messages.
"""
import ast
import os
import subprocess
import sys

import pytest
import yaml

from ..helpers.paths import COLLECTION, ROOT

MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(COLLECTION, "plugins", "modules"))
                 if f.endswith(".py") and not f.startswith("_"))


def _source(name):
    with open(os.path.join(COLLECTION, "plugins", "modules", name + ".py")) as f:
        return f.read()


def _doc_block(source, block):
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == block for t in node.targets):
            return node.value.value
    return None


@pytest.mark.parametrize("name", MODULES)
def test_docs_are_valid_yaml_and_complete(name):
    source = _source(name)
    doc = yaml.safe_load(_doc_block(source, "DOCUMENTATION"))
    assert doc["module"] == name
    assert "dbops.partitioning.connection" in doc.get("extends_documentation_fragment", [])
    assert yaml.safe_load(_doc_block(source, "EXAMPLES"))
    ret = yaml.safe_load(_doc_block(source, "RETURN"))
    assert "queries" in ret, "every module returns the SQL it ran as queries"


@pytest.mark.parametrize("name", MODULES)
def test_contract_in_source(name):
    source = _source(name)
    assert "supports_check_mode=True" in source
    assert "connection_argument_spec()" in source
    assert "run_module(" in source, "errors must reach the operator as messages, not tracebacks"


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders(name):
    ansible_doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    p = subprocess.run([ansible_doc, "dbops.partitioning." + name], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, ANSIBLE_NOCOLOR="1"))
    assert p.returncode == 0, p.stderr
    assert "login_password" in p.stdout and "queries" in p.stdout
    assert "WARNING" not in p.stderr, p.stderr


def test_runtime_action_group_lists_every_module():
    with open(os.path.join(COLLECTION, "meta", "runtime.yml")) as f:
        runtime = yaml.safe_load(f)
    assert set(MODULES) <= set(runtime["action_groups"]["postgresql"])
