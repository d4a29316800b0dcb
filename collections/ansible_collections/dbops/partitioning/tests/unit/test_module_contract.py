"""Every module keeps the house contract (INTERFACE.md "Modules").

Docs render with ansible-doc and are complete; run by ansible-playbook in check mode, each
module takes the standard connection options, keeps the password out of its output, and
reports a server it cannot reach as a message (with its queries), never a traceback.
"""
import ast
import json
import os
import subprocess
import sys

import pytest
import yaml

from lab.servers import free_port

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


# What each module needs to get as far as connecting; everything else is the module's default.
ARGS = {"partition_create": dict(table="public.t", partition_key="d", interval="monthly"),
        "partition_stats": dict(tables=["public.t"]),
        "partition_premake": dict(spec=dict(table="public.t", partition_key="d", interval="monthly")),
        "partition_retention": dict(spec=dict(table="public.t", partition_key="d", interval="monthly", retention=12)),
        "partition_functions": dict(),
        "partition_optimize": dict(spec=dict(table="public.t", partition_key="d", interval="monthly"))}
SECRET = "contract-probe-secret"


@pytest.fixture(scope="module")
def unreachable_results(tmp_path_factory):
    """Every module run by ansible-playbook in check mode against a port where no server listens,
    as an operator would run it; the registered result of each, by module name."""
    d = tmp_path_factory.mktemp("contract")
    out = d / "results.json"
    connection = dict(login_host="127.0.0.1", login_port=free_port(), login_password=SECRET, connect_timeout=5)
    tasks = [{"name": name, "dbops.partitioning." + name: dict(connection, **ARGS.get(name, dict(table="public.t"))),
              "register": "r_" + name, "ignore_errors": True} for name in MODULES]
    results = "{%s}" % ", ".join("%s: r_%s" % (json.dumps(name), name) for name in MODULES)
    tasks.append({"name": "save", "ansible.builtin.copy": {"dest": str(out), "content": "{{ %s | to_json }}" % results},
                  "check_mode": False})
    play = d / "play.yml"
    play.write_text(yaml.safe_dump([{"hosts": "localhost", "gather_facts": False, "check_mode": True,
                                     "tasks": tasks}]))
    ansible_playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    # -vvv: ansible shows each module's invocation, where a password not marked no_log would appear
    p = subprocess.run([ansible_playbook, "-vvv", str(play), "-i", "localhost,", "-c", "local",
                        "-e", "ansible_python_interpreter=" + sys.executable], cwd=ROOT, capture_output=True,
                       text=True, env=dict(os.environ, ANSIBLE_NOCOLOR="1"), timeout=600, check=False)
    assert out.exists(), p.stdout[-4000:] + p.stderr[-4000:]
    return dict(json.loads(out.read_text()), _port=connection["login_port"], _output=p.stdout + p.stderr)


@pytest.mark.parametrize("name", MODULES)
def test_an_unreachable_server_is_a_message_in_check_mode(unreachable_results, name):
    """Check mode is supported (not skipped), the connection options are the ones given, the
    failure is a message with the queries run (none), not a traceback, and the password is no_log."""
    r = unreachable_results[name]
    assert not r.get("skipped"), r
    assert r["failed"] and r["msg"].startswith("Cannot connect to PostgreSQL: "), r
    assert '"127.0.0.1", port %d failed' % unreachable_results["_port"] in r["msg"]
    assert r["queries"] == []
    assert "module_stderr" not in r, "errors must reach the operator as messages, not a crash"


def test_passwords_stay_out_of_the_output(unreachable_results):
    output = unreachable_results["_output"]
    assert SECRET not in output
    assert output.count("login_password: VALUE_SPECIFIED_IN_NO_LOG_PARAMETER") == len(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders(name):
    ansible_doc = os.path.join(os.path.dirname(sys.executable), "ansible-doc")
    p = subprocess.run([ansible_doc, "dbops.partitioning." + name], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, ANSIBLE_NOCOLOR="1"), check=False)
    assert p.returncode == 0, p.stderr
    assert "login_password" in p.stdout and "queries" in p.stdout
    assert "WARNING" not in p.stderr, p.stderr


def test_runtime_action_group_lists_every_module():
    with open(os.path.join(COLLECTION, "meta", "runtime.yml")) as f:
        runtime = yaml.safe_load(f)
    assert set(MODULES) <= set(runtime["action_groups"]["postgresql"])
