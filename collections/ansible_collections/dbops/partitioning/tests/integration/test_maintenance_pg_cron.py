"""The pg_cron recipe of docs/runbooks/maintenance.md, for sites without AWX, on PostgreSQL 15 with
Debian's postgresql-15-cron (installed here when missing and possible; skipped with the reason
otherwise): pg_cron CALLs partitioning.maintenance_job() at top level, which commits after every
step, under the same lock budget; the steps land in maintenance_steps (source 'job').

The recipe schedules it hourly ('17 * * * *'); the test schedules the same command every minute.
"""
import datetime
import os
import shutil
import subprocess
import time

import pytest

from lab.servers import Server, available_bindirs

from ..helpers.maintenance import install, make_table, partitions, registered, rows, spec_of

CRON_LIBRARY = "/usr/lib/postgresql/15/lib/pg_cron.so"


def _pg_cron_missing():
    """None when pg_cron for PostgreSQL 15 is there (installed now if need be), else why not."""
    if os.path.exists(CRON_LIBRARY):
        return None
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "pg_cron for PostgreSQL 15 is not installed and apt-get cannot install it here (not root, or no apt)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    out = ""
    for cmd in (["apt-get", "install", "-y", "-q", "postgresql-15-cron"], ["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "postgresql-15-cron"]):
        p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
        out = p.stdout[-500:] + p.stderr[-500:]
        if os.path.exists(CRON_LIBRARY):
            return None
    return "apt-get install postgresql-15-cron did not install %s: %s" % (CRON_LIBRARY, out.strip())


@pytest.fixture(scope="module")
def cron_server(pg_base_dir):
    bindirs = available_bindirs()
    if 15 not in bindirs:
        pytest.skip("PostgreSQL 15 binaries are not installed")
    reason = _pg_cron_missing()
    if reason:
        pytest.skip(reason)
    server = Server(bindirs[15], os.path.join(pg_base_dir, "pg15cron"), name="pg15cron")
    server.init(settings={"shared_preload_libraries": "pg_cron", "cron.database_name": "postgres",
                          "cron.use_background_workers": "on", "max_worker_processes": "16"}).start()
    yield server
    server.destroy()


def test_pg_cron_runs_the_maintenance_job(cron_server):
    server, db = cron_server, "maintained"
    server.create_database(db)
    conn = server.connect(db)
    today = datetime.datetime.now(datetime.timezone.utc).date()
    make_table(conn, first=datetime.date(today.year - 1, 1, 1), periods=1)
    install(conn)
    registered(conn, spec_of(premake=2))
    cron = server.connect("postgres")
    cur = cron.cursor()
    cur.execute("CREATE EXTENSION IF NOT EXISTS pg_cron")
    # the recipe's command; the recipe's schedule is '17 * * * *' (hourly), here every minute
    cur.execute("SELECT cron.schedule_in_database('dbops-partitioning-maintenance', '* * * * *', "
                "'CALL partitioning.maintenance_job()', %s)", (db,))
    job = cur.fetchone()[0]
    try:
        deadline = time.monotonic() + 180
        done = []
        while time.monotonic() < deadline and not done:
            cur.execute("SELECT status, return_message FROM cron.job_run_details WHERE jobid = %s "
                        "AND status IN ('succeeded', 'failed')", (job,))
            done = cur.fetchall()
            time.sleep(1)
        assert done, "pg_cron did not run the job within three minutes"
        assert done[0][0] == "succeeded", done
    finally:
        cur.execute("SELECT cron.unschedule(%s)", (job,))
        cron.close()
    current = datetime.date(today.year, today.month, 1)
    wanted = [(current.replace(day=1) + datetime.timedelta(days=31 * i)).strftime("ev_%Y_%m") for i in range(3)]
    assert set(wanted) <= set(partitions(conn)), partitions(conn)
    steps = rows(conn, "SELECT step, status, source, lock_mode, lock_ms FROM partitioning.maintenance_steps")
    assert steps and all(s[2] == "job" and s[1] == "created" for s in steps), steps
    budget = spec_of().tuning["lock_budget_ms"]
    assert all(s[3] == "ACCESS EXCLUSIVE (default partition)" and 0 < s[4] <= budget for s in steps), steps
    conn.close()
