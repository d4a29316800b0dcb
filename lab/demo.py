"""``make demo``: the lab, then the migration's phases under a live application load.

1. ``up``: the lab servers with the demo schema (LAB_ROWS rows each).
2. A ``Workload`` on every table of every server (inserts, updates, partition-key moves,
   deletes, primary-key updates), running for the whole demo.
3. ``ansible-playbook playbooks/<phase>.yml -i inventories/lab`` for each phase playbook that
   exists, in order (a missing one is skipped with a note), then ``status.yml``.
4. Under the still running load, the oracle: original and twin compared row for row in one
   snapshot (before switchover), or the new table and ``<table>_old`` (after).
5. The summary: per table rows, partitions, phase, application ops and errors, oracle, and the
   time each phase took. The exit status is non-zero if a phase failed, the application saw
   an error or the oracle found a difference.
"""
import os
import shutil
import subprocess
import sys
import time

from psycopg2 import sql

from lab import control, schema
from lab.workload import Workload, compare_tables, key_columns_of

PHASES = ("phase1_prepare", "phase2_migrate", "phase3_switchover")
DEMO_MIX = {"insert": 40, "update": 30, "move": 15, "delete": 10, "pk_update": 5}
# A phase whose work is over for a table in one of these states is not run again (a second
# `make demo` on a switched lab): phase 2 refuses a switched table rather than reporting no change.
DONE_AFTER = {"phase2_migrate": ("switched", "cleaned")}
THINK_MS = 5          # an application does other things between writes; 2 cores are shared


def _say(msg=""):
    print(msg, flush=True)


def _ansible_playbook():
    beside = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    return beside if os.path.exists(beside) else (shutil.which("ansible-playbook") or "ansible-playbook")


def run_playbook(cfg, servers, name, log_dir):
    """Run one playbook against inventories/lab, streaming its output; returns (rc, seconds)."""
    cmd = [_ansible_playbook(), os.path.join("playbooks", name + ".yml"), "-i", os.path.join("inventories", "lab"),
           "--limit", ",".join(s.name for s in servers)]
    if cfg.only:
        cmd += ["-e", "partitioning_only=" + ",".join("public." + t for t in cfg.tables)]
    env = dict(os.environ, LAB_DIR=cfg.lab_dir, LAB_PORT=str(servers[0].port), ANSIBLE_FORCE_COLOR="0",
               PYTHONUNBUFFERED="1")
    os.makedirs(log_dir, exist_ok=True)
    _say("\n$ %s" % " ".join(cmd))
    t0 = time.monotonic()
    with open(os.path.join(log_dir, name + ".log"), "w") as log:
        p = subprocess.Popen(cmd, cwd=control.ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
        for line in p.stdout:
            sys.stdout.write(line)
            log.write(line)
        rc = p.wait()
    return rc, time.monotonic() - t0


def start_workloads(servers, seconds=None, tables=schema.TABLES):
    workloads = []
    for i, ls in enumerate(servers):
        for table in tables:
            w = Workload(ls.conninfo(), "public." + table, threads=1, seed=i, mix=DEMO_MIX, think_ms=THINK_MS,
                         duration_s=seconds, application_name="lab-app")
            w.host = ls.name
            workloads.append(w.start())
    return workloads


def stop_workloads(workloads):
    for w in workloads:
        w.stop()
    for w in workloads:
        w.join()


def _exists(conn, table):
    cur = conn.cursor()
    cur.execute("SELECT to_regclass(%s) IS NOT NULL", (sql.Identifier("public", table).as_string(conn),))
    return cur.fetchone()[0]


def partitions_line(conn, table):
    """'N partitions (first .. last, default: R rows)' of whichever of table / its twin is partitioned."""
    cur = conn.cursor()
    cur.execute("""
        SELECT p.relname, array_agg(c.relname ORDER BY c.relname) FILTER (WHERE NOT pg_get_expr(c.relpartbound, c.oid)
                                                                          ILIKE 'DEFAULT'),
               max(c.relname) FILTER (WHERE pg_get_expr(c.relpartbound, c.oid) ILIKE 'DEFAULT')
          FROM pg_class p JOIN pg_namespace n ON n.oid = p.relnamespace
          JOIN pg_inherits i ON i.inhparent = p.oid JOIN pg_class c ON c.oid = i.inhrelid
         WHERE n.nspname = 'public' AND p.relkind = 'p' AND p.relname IN (%s, %s)
         GROUP BY p.relname ORDER BY p.relname = %s DESC LIMIT 1""", (table, table + "_partitioned", table))
    row = cur.fetchone()
    if not row:
        return "not partitioned"
    parent, names, default = row
    names = names or []
    text = "%s: %d partitions" % (parent, len(names) + (1 if default else 0))
    if names:
        text += " (%s .. %s" % (names[0], names[-1])
        if default:
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("public", default)))
            text += ", %s with %s rows" % (default, format(cur.fetchone()[0], ","))
        text += ")"
    return text


def oracle(conn, table, phase):
    """Row-for-row check of the pair the phase keeps in sync; (verdict, ok-or-None).

    Before the backfill has finished the twin holds only the rows the sync triggers wrote:
    each of them must equal its original (no extra, no different row); rows not yet copied
    are expected to be missing. From ``copied`` on the two must be equal, and after the
    switchover the new table and ``<table>_old`` (kept in sync by the reverse trigger).
    """
    keys = list(key_columns_of(table))
    if phase == "switched" and _exists(conn, table + "_old"):
        pair, complete = (table, table + "_old"), True
    elif phase in ("copied", "verified") and _exists(conn, table + "_partitioned"):
        pair, complete = (table, table + "_partitioned"), True
    elif phase in ("prepared", "copying") and _exists(conn, table + "_partitioned"):
        pair, complete = (table, table + "_partitioned"), False
    else:
        return "n/a (phase %s: no twin to compare)" % (phase or "none"), None
    r = compare_tables(conn, "public." + pair[0], "public." + pair[1], keys, limit=5)
    if r["equal"]:
        return "equal: %s = %s, %s rows, one snapshot" % (pair[0], pair[1], format(r["left_rows"], ",")), True
    if not complete and not r["extra"] and not r["different"]:
        return ("consistent so far: %s holds %s of %s rows, each equal to its original; no extra or different "
                "row (the backfill copies the rest)" % (pair[1], format(r["right_rows"], ","),
                                                        format(r["left_rows"], ","))), True
    return ("DIFFERENT %s vs %s: missing %s, extra %s, different %s (first keys shown)"
            % (pair[0], pair[1], r["missing"], r["extra"], r["different"])), False


def _phases(servers, tables):
    out = []
    for ls in servers:
        conn = ls.connect()
        try:
            out += [control.phase_of(conn, t) for t in tables]
        finally:
            conn.close()
    return out


def run(cfg):
    t_start = time.monotonic()
    _say("== lab: %d server(s), %s demo rows each ==" % (cfg.servers, format(cfg.rows, ",")))
    t0 = time.monotonic()
    servers = control.up(cfg)
    timings = [("lab up", "ok", time.monotonic() - t0)]
    _say("\n== application load: %d writer(s) on %d table(s) x %d server(s) ==" % (
        len(servers) * len(cfg.tables), len(cfg.tables), len(servers)))
    workloads = start_workloads(servers, tables=cfg.tables)
    failed = False
    oracles = {}
    try:
        missing = None
        for name in PHASES:
            if not os.path.exists(os.path.join(control.ROOT, "playbooks", name + ".yml")):
                _say("\n-- %s: playbooks/%s.yml does not exist yet: skipped" % (name, name))
                timings.append((name, "skipped (not written yet)", 0.0))
                missing = missing or name
                continue
            if missing:                 # each phase needs the one before it
                _say("\n-- %s: skipped, it needs %s" % (name, missing))
                timings.append((name, "skipped (needs %s)" % missing, 0.0))
                continue
            if name in DONE_AFTER and all(p in DONE_AFTER[name] for p in _phases(servers, cfg.tables)):
                _say("\n-- %s: already done (every table is past it): skipped" % name)
                timings.append((name, "skipped (already done)", 0.0))
                continue
            rc, secs = run_playbook(cfg, servers, name, os.path.join(cfg.lab_dir, "logs"))
            timings.append((name, "ok" if rc == 0 else "FAILED (rc %d)" % rc, secs))
            if rc != 0:
                failed = True
                _say("\n-- %s failed: the later phases are not run (log: %s)" % (
                    name, os.path.join(cfg.lab_dir, "logs", name + ".log")))
                break
        if os.path.exists(os.path.join(control.ROOT, "playbooks", "status.yml")):
            rc, secs = run_playbook(cfg, servers, "status", os.path.join(cfg.lab_dir, "logs"))
            timings.append(("status", "ok" if rc == 0 else "FAILED (rc %d)" % rc, secs))
            failed = failed or rc != 0
        # The oracle runs while the application still writes: both tables are written in the
        # same transactions, so one snapshot must show them equal.
        for ls in servers:
            conn = ls.connect()
            try:
                for table in cfg.tables:
                    phase = control.phase_of(conn, table)
                    oracles[(ls.name, table)] = (phase,) + oracle(conn, table, phase)
            finally:
                conn.close()
    finally:
        stop_workloads(workloads)
    return summary(servers, workloads, oracles, timings, failed, time.monotonic() - t_start, cfg.tables)


def summary(servers, workloads, oracles, timings, failed, total_s, tables=schema.TABLES):
    _say("\n== summary ==")
    for name, result, secs in timings:
        _say("  %-20s %-28s %7.1f s" % (name, result, secs))
    _say("")
    by_key = dict(((w.host, w.table.split(".", 1)[1]), w) for w in workloads)
    bad = failed
    for ls in servers:
        conn = ls.connect()
        try:
            for table in tables:
                w = by_key[(ls.name, table)]
                phase, verdict, equal = oracles.get((ls.name, table), (None, "not run", None))
                rows = schema.table_counts(conn, [table])[table]
                _say("  %s public.%s: %s rows, phase %s; %s" % (
                    ls.name, table, format(rows or 0, ","), phase or "not managed", partitions_line(conn, table)))
                _say("      application: %s ops (%s), %d errors, %d retries, slowest write %.2f s" % (
                    format(w.total_ops, ","), ", ".join("%s %d" % kv for kv in w.ops.items() if kv[1]),
                    w.errors, w.retries, w.max_latency_s))
                for msg in w.error_messages[:3]:
                    _say("        error: %s" % msg)
                _say("      oracle: %s" % verdict)
                bad = bad or w.errors > 0 or equal is False
        finally:
            conn.close()
    _say("\n  total %.0f s: %s" % (total_s, "FAILED" if bad else "ok"))
    return 1 if bad else 0


def load(cfg, seconds=60):
    """``python -m lab load``: the application load alone, e.g. while running playbooks by hand."""
    servers = control.lab_servers(cfg)
    if not servers:
        raise SystemExit("lab: not up; start it with make lab-up")
    _say("application load on %d server(s) for %d s (Ctrl-C stops it) ..." % (len(servers), seconds))
    workloads = start_workloads(servers, seconds, tables=cfg.tables)
    try:
        for w in workloads:
            w.join()
    except KeyboardInterrupt:
        stop_workloads(workloads)
    errors = 0
    for w in workloads:
        s = w.summary()
        errors += s["errors"]
        _say("  %s %s: %s ops, %d errors, %d retries, slowest write %.2f s" % (
            w.host, w.table, format(s["total_ops"], ","), s["errors"], s["retries"], s["max_latency_s"]))
        for msg in s["error_messages"][:3]:
            _say("    error: %s" % msg)
    return 1 if errors else 0
