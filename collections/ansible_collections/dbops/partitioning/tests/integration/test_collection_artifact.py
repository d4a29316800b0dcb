"""The collection as an artifact: built by ansible-galaxy, installed offline into an empty
collections path outside the checkout, it runs the phases from there.

Everything a module needs must travel in the tarball (the SQL templates as Python data, the
playbooks, the filters): the run below sees neither the checkout's ansible.cfg nor its
./collections, and -vvv shows that every module came from the installed copy.
"""
import os
import re
import subprocess
import sys

import pytest
import yaml

from ..helpers.paths import COLLECTION
from ..helpers.phase2_setup import create_original, state_row

BIN = os.path.dirname(sys.executable)
SPEC = dict(table="public.revenues", partition_key="occurred_at", interval="monthly", premake=1)


def _run(cmd, cwd, env, timeout=900):
    p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    return p.returncode, p.stdout + p.stderr


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(collections path, environment)`` of the tarball installed into an empty directory."""
    base = tmp_path_factory.mktemp("artifact")
    env = dict((k, v) for k, v in os.environ.items()
               if not k.startswith("ANSIBLE_") and k not in ("PYTHONPATH",))
    env.update(ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=str(base / "tmp"), HOME=str(base / "home"),
               ANSIBLE_CONFIG=str(base / "ansible.cfg"))
    (base / "ansible.cfg").write_text("[defaults]\nhost_key_checking = False\n")
    rc, out = _run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(base / "dist")],
                   COLLECTION, env)
    assert rc == 0, out
    tarball, = (base / "dist").glob("dbops-partitioning-*.tar.gz")
    path = base / "collections"
    path.mkdir()
    rc, out = _run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "--offline", str(tarball),
                    "-p", str(path)], str(base), env)
    assert rc == 0, out
    installed_dir = path / "ansible_collections" / "dbops" / "partitioning"
    for part in ("plugins/module_utils/sql_texts.py", "playbooks/phase1_prepare.yml", "templates/sql"):
        assert (installed_dir / part).exists(), part
    env["ANSIBLE_COLLECTIONS_PATH"] = str(path)
    return base, installed_dir, env


def test_the_installed_collection_runs_phases_1_and_2_from_outside_the_checkout(installed, pg, db, conn):
    base, installed_dir, env = installed
    create_original(conn, rows=300)
    work = base / ("run-" + db)
    work.mkdir()
    inventory = work / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"db1": dict(
        ansible_connection="local", ansible_python_interpreter=sys.executable, pg_host=pg.host, pg_port=pg.port,
        pg_user="postgres", pg_database=db, pg_sslmode="disable", partitioning_tables=[SPEC])}}}))
    for playbook in ("phase1_prepare", "phase2_migrate", "status"):
        rc, out = _run([os.path.join(BIN, "ansible-playbook"), "-vvv", "dbops.partitioning." + playbook,
                        "-i", str(inventory)], str(work), env)
        assert rc == 0, out[-6000:]
        used = set(re.findall(r"Using module file (\S+)", out))
        assert used and all(u.startswith(str(installed_dir) + os.sep) for u in used), used
    assert state_row(conn)["phase"] == "verified"
    assert "public.revenues: verified" in out, out[-3000:]   # the status line
