"""Kill the backfill anywhere and run it again: it continues from the checkpoint, never
starts over and never duplicates (issue 3, item 3).

* the batch's backend is terminated (pg_terminate_backend) inside its transaction;
* the module process is SIGKILLed at a random moment;
* the server is restarted (immediate mode: crash-like) while the module copies.
Each is followed by a completing run and an exact, row-for-row comparison; the ranges'
row counters prove that no committed batch ran twice.
"""
import json
import os
import random
import subprocess
import tempfile
import time

import psycopg2
import pytest

from ..helpers.paths import ROOT
from ..helpers.playbook_runner import ANSIBLE_PLAYBOOK, run_playbook, write_inventory
from ..helpers import backfill_driver as drv
from ..helpers.phase2_setup import TABLE, assert_equal_tables, make_prepared, scalar, state_row

ROWS = 2000


def _copied(conn):
    return scalar(conn, "SELECT coalesce(sum(rows_copied), 0) FROM partitioning.backfill_ranges "
                        "WHERE table_name = %s", (TABLE,)) if scalar(
        conn, "SELECT to_regclass('partitioning.backfill_ranges') IS NOT NULL") else 0


def _wait_until(fn, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        if fn():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def _no_module_backend(conn):
    return scalar(conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE "
                        "'dbops.partitioning/batch_copy%%' AND datname = current_database()") == 0


def _finish_and_check(pg, db, conn):
    _wait_until(lambda: _no_module_backend(conn))
    res = drv.run_module("batch_copy", pg, db, table=TABLE, batch_size=300, verify_batches=True)
    assert not res.get("failed"), res
    # verify_batches compared every key range during the copy (also the part copied before the
    # kill): the table is verified when the copy ends
    assert res["done"] and res["phase"] == "verified", res
    assert_equal_tables(conn)
    # every row was counted exactly once: no committed batch was repeated, none lost
    assert _copied(conn) == ROWS
    assert state_row(conn)["rows_copied"] == ROWS


def test_backend_terminated_inside_a_batch(pg, db, conn):
    make_prepared(pg, db, rows=ROWS)
    calls = []

    def hook(res):
        calls.append(res)
        if len(calls) == 3:  # the third batch dies before its commit
            pid = scalar(conn, "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                               "AND state = 'idle in transaction'")
            scalar(conn, "SELECT pg_terminate_backend(%s)", (pid,))

    with pytest.raises(psycopg2.Error):
        drv.copy(pg, db, batch_size=300, hooks=dict(before_commit=hook))
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned") == 600
    assert scalar(conn, "SELECT checkpoint->>'id' FROM partitioning.backfill_ranges") == "600"
    _finish_and_check(pg, db, conn)
    assert scalar(conn, "SELECT batches FROM partitioning.backfill_ranges") == 2 + 5


@pytest.mark.parametrize("workers", [1, 2])
def test_module_killed_at_a_random_moment(pg, db, conn, workers):
    make_prepared(pg, db, rows=ROWS)
    p = drv.module_process("batch_copy", pg, db, table=TABLE, batch_size=100, batch_sleep_ms=30,
                           batch_target_ms=0, copy_workers=workers, verify_batches=True)
    # a random point of the copy, chosen by rows copied (a random sleep let the copy, 2000 rows in
    # about a third of a second, end before the kill), then a random instant within a batch
    target = random.randint(200, ROWS // 2)
    _wait_until(lambda: _copied(conn) >= target)
    time.sleep(random.uniform(0, 0.03))
    p.kill()
    p.communicate()
    at_kill = _copied(conn)
    assert at_kill < ROWS
    _finish_and_check(pg, db, conn)


def test_server_restart_while_copying(pg, db, conn):
    make_prepared(pg, db, rows=ROWS)
    p = drv.module_process("batch_copy", pg, db, table=TABLE, batch_size=100, batch_sleep_ms=30,
                           batch_target_ms=0)
    _wait_until(lambda: _copied(conn) >= 300)
    conn.close()
    pg.restart(mode="immediate")
    out, _unused = p.communicate(timeout=60)
    assert '"failed": true' in out and "Traceback" not in out, out
    c = pg.connect(db)
    try:
        assert _copied(c) < ROWS
        _finish_and_check(pg, db, c)
    finally:
        c.close()


def test_ansible_playbook_killed_then_run_again(pg, db, conn):
    """SIGKILL of ansible-playbook alone leaves its module call running to the end of its
    max_call_s; the next run waits for that call's lock instead of failing, and continues."""
    make_prepared(pg, db, rows=ROWS)
    tables = [{"table": TABLE, "partition_key": "occurred_at", "interval": "monthly"}]
    with tempfile.TemporaryDirectory() as d:
        inventory = write_inventory(d, pg, db, tables)
        extra = dict(partitioning_batch_size=100, partitioning_batch_sleep_ms=30, partitioning_max_call_s=2)
        env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCAL_TEMP=os.path.join(d, "tmp"))
        p = subprocess.Popen([ANSIBLE_PLAYBOOK, os.path.join("playbooks", "phase2_migrate.yml"), "-i", inventory,
                              "-e", json.dumps(extra)], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        _wait_until(lambda: _copied(conn) >= 200)
        p.kill()
        p.wait()
    run = run_playbook("phase2_migrate", pg, db, tables)
    assert not run.failed, run
    assert state_row(conn)["phase"] == "verified"
    assert_equal_tables(conn)
    assert _copied(conn) == ROWS
