"""Backfill benchmark, part e: the whole of phase 2 as an operator runs it.

``ansible-playbook playbooks/phase2_migrate.yml`` with the defaults (copy, verification during
the copy, the playbook's own verification task, Ansible's start-up and module calls) on the
``backfill_rows`` table of part a, against one ``INSERT INTO twin SELECT * FROM original`` on
the same server, alternated per round. Each round starts from phase 'prepared' with an empty
twin. Goal: raw copy / whole phase 2 >= 0.5.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

from bench import common
from bench.common import fmt, log, md_table, median, ratio

PLAYBOOK = os.path.join(common.ROOT, "playbooks", "phase2_migrate.yml")
ANSIBLE_PLAYBOOK = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
TABLES = [dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="monthly")]


def run_playbook(srv, dbname):
    """One run of phase2_migrate.yml; returns its seconds."""
    with tempfile.TemporaryDirectory() as d:
        host = dict(ansible_connection="local", ansible_python_interpreter=sys.executable, pg_host=srv.host,
                    pg_port=srv.port, pg_user="postgres", pg_database=dbname, pg_sslmode="disable",
                    partitioning_tables=TABLES)
        inventory = os.path.join(d, "inventory.json")
        with open(inventory, "w") as f:
            json.dump({"all": {"hosts": {"bench": host}}}, f)
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=os.path.join(d, "tmp"))
        t0 = time.monotonic()
        p = subprocess.run([ANSIBLE_PLAYBOOK, PLAYBOOK, "-i", inventory], cwd=common.ROOT, env=env,
                           capture_output=True, text=True, timeout=3600)
        seconds = time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError("phase2_migrate.yml failed:\n%s" % (p.stdout + p.stderr)[-3000:])
    return seconds


def phase2(srv, opts, bf):
    """``bf`` is bench.backfill (its build, reset and raw copy)."""
    dbname = bf.PART_A_DB
    conn = bf.part_a_table(srv, opts)
    facts = common.setup_facts(srv, conn, rows=opts.backfill_rows, rounds=opts.backfill_rounds,
                               playbook="playbooks/phase2_migrate.yml, inventory defaults (verify_batches true)")
    runs = []
    for rnd, order in enumerate(common.rotations(["phase2", "insert_select"], opts.backfill_rounds)):
        for v in order:
            bf.reset_twin(conn)
            if v == "phase2":
                seconds = run_playbook(srv, dbname)
                phase = bf.phase_of(conn)
                if phase != "verified":
                    raise RuntimeError("phase2_migrate.yml left the table in phase %r" % phase)
            else:
                seconds, _rows = bf.run_insert_select(conn)
            runs.append(dict(round=rnd, variant=v, seconds=seconds))
            log("backfill phase 2 pg%d round %d %-13s %7.2f s" % (srv.major, rnd, v, seconds))
    conn.close()
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["variant"]] = r["seconds"]
    raw_over_phase2 = median([ratio(x["insert_select"], x["phase2"]) for x in by_round.values()])
    return dict(facts=facts, runs=runs, raw_over_phase2=raw_over_phase2,
                median_s=dict((v, median([r["seconds"] for r in runs if r["variant"] == v]))
                              for v in ("phase2", "insert_select")))


def section(results):
    rows = []
    for major, p2 in sorted(results.items(), reverse=True):
        rows.append(["PostgreSQL %d" % major, p2["facts"]["rows"], p2["median_s"]["phase2"],
                     p2["median_s"]["insert_select"], p2["raw_over_phase2"],
                     "yes" if (p2["raw_over_phase2"] or 0) >= 0.5 else "NO",
                     "; ".join("round %s %s %s s" % (r["round"], r["variant"], fmt(r["seconds"])) for r in p2["runs"])])
    if not rows:
        return None
    return md_table(["server", "rows", "phase2_migrate.yml s", "INSERT…SELECT s", "raw/phase 2", ">= 0.5", "runs"],
                    rows)
