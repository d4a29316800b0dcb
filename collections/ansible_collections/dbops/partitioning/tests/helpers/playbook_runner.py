"""Run a project playbook against a test server, as an operator would.

``run_playbook('phase1_prepare', pg, db, tables=[...], extra_vars={...}, check=False)``
writes a one-host inventory for the test database, runs ``ansible-playbook`` from the
project root (so ansible.cfg and ./collections are used exactly as in a checkout) and
returns a ``PlaybookRun`` with the return code, the output and the recap counts.
``run_fleet_playbook(name, hosts)`` does the same on several hosts (databases).
"""
import json
import os
import re
import subprocess
import sys
import tempfile

from .paths import ROOT

ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")


class PlaybookRun:
    def __init__(self, rc, output):
        self.rc = rc
        self.output = output
        self.recap = {}
        for m in re.finditer(r"^(\S+)\s+:\s+ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)"
                             r"\s+skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", output, re.M):
            self.recap[m.group(1)] = dict(ok=int(m.group(2)), changed=int(m.group(3)), failed=int(m.group(5)))

    def recap_lines(self):
        """The lines of the last play's recap (playbooks/recap.yml), as printed in JSON format."""
        found = re.findall(r'"msg": (\[\s*"[^\n]*: \d+ hosts?, .*?\])', self.output, re.S)
        return json.loads(found[-1]) if found else []

    def recap_results(self):
        """``{(host, table): result}`` from the recap's lines."""
        lines = self.recap_lines()[2:]
        return dict(((f[0], f[1]), f[5]) for f in (line.split(None, 5) for line in lines))

    @property
    def changed(self):
        return sum(h["changed"] for h in self.recap.values())

    @property
    def failed(self):
        return self.rc != 0 or sum(h["failed"] for h in self.recap.values()) > 0

    def __repr__(self):
        return "PlaybookRun(rc=%s, recap=%s)\n%s" % (self.rc, self.recap, self.output[-6000:])


def inventory_host(pg, db, tables, host_vars=None):
    """One inventory host: database ``db`` on server ``pg``, with its ``partitioning_tables``."""
    host = dict(ansible_connection="local", ansible_python_interpreter=sys.executable,
                pg_host=pg.host, pg_port=pg.port, pg_user="postgres", pg_database=db, pg_sslmode="disable",
                partitioning_tables=tables)
    host.update(host_vars or {})
    return host


def write_inventory(directory, pg, db, tables, host_vars=None, hosts=None):
    """An inventory of one host, ``testdb`` (or of ``hosts``: name -> inventory_host(...), in order)."""
    inventory = {"all": {"hosts": hosts or {"testdb": inventory_host(pg, db, tables, host_vars)}}}
    path = os.path.join(directory, "inventory.json")
    with open(path, "w") as f:
        json.dump(inventory, f, default=str)
    return path


def run_playbook(name, pg, db, tables, extra_vars=None, check=False, host_vars=None, timeout=900, env=None,
                 hosts=None):
    """``ansible-playbook playbooks/<name>.yml`` on one test database (or on ``hosts``, see write_inventory)."""
    with tempfile.TemporaryDirectory() as d:
        inventory = write_inventory(d, pg, db, tables, host_vars, hosts)
        cmd = [ANSIBLE_PLAYBOOK, os.path.join("playbooks", name + ".yml"), "-i", inventory]
        if check:
            cmd.append("--check")
        if extra_vars:
            cmd += ["-e", json.dumps(extra_vars)]
        full_env = dict(os.environ, ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1",
                        ANSIBLE_LOCAL_TEMP=os.path.join(d, "tmp"), ANSIBLE_REMOTE_TEMP=os.path.join(d, "tmp"))
        full_env.update(env or {})
        p = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True, timeout=timeout, check=False)
        return PlaybookRun(p.returncode, p.stdout + p.stderr)


def run_fleet_playbook(name, hosts, extra_vars=None, check=False, timeout=900):
    """``run_playbook`` on several hosts (name -> inventory_host(...)), its output in JSON (the recap's
    lines unwrapped: ``PlaybookRun.recap_lines``)."""
    return run_playbook(name, None, None, None, extra_vars=extra_vars, check=check, timeout=timeout, hosts=hosts,
                        env=dict(ANSIBLE_CALLBACK_RESULT_FORMAT="json"))
