"""Cleanup (partition_cleanup, playbooks/cleanup.yml) on real servers.

Refused before the switchover, before the soak time, and when the verification after the
switch finds the new table and _old different; check mode changes nothing; with dump_dir a
pg_dump of _old is written first (and restores); a second run reports no change.
"""
import os
import threading
import time
import subprocess
import tempfile

import pytest

from ..helpers.phase3_setup import make_verified, phase, rows_of, under_load, write_unsynced
from ..helpers.switchover import TABLES, lock_knobs, one, switch
from ..helpers.playbook_runner import run_playbook

from ansible_collections.dbops.partitioning.plugins.module_utils.dumps import find_program
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import cleanup
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session


def clean(pg, db, **kw):
    s = Session(pg.connect(db), check_mode=kw.pop("check_mode", False))
    try:
        return cleanup.cleanup(s, "public.revenues", params=pg.module_params(db), **lock_knobs(**kw))
    finally:
        s.close()


def test_cleanup_refusals(pg, db):
    make_verified(pg, db, rows=200, extras=False)
    conn = pg.connect(db)
    with pytest.raises(PartitioningError) as err:
        clean(pg, db)
    assert "phase 'verified'" in err.value.msg
    switch(pg, db)
    with pytest.raises(PartitioningError) as err:
        clean(pg, db, min_soak_s=3600)
    assert "soak time" in err.value.msg
    # a difference between the new table and _old (a write that bypassed the reverse sync)
    write_unsynced(conn, "UPDATE public.revenues SET amount = amount + 1 WHERE id = 5")
    with pytest.raises(PartitioningError) as err:
        clean(pg, db)
    assert "different" in err.value.msg
    assert phase(conn) == "switched"
    assert one(conn, "SELECT to_regclass('public.revenues_old') IS NOT NULL") == [(True,)]
    conn.close()


def test_cleanup_playbook_with_dump_check_mode_idempotent(pg, db):
    make_verified(pg, db, rows=300)
    switch(pg, db)
    conn = pg.connect(db)
    one(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-06-06 00:00+00', 'eu', 9)")
    old_rows = rows_of(conn, "public.revenues_old")
    run = run_playbook("cleanup", pg, db, TABLES)          # default soak: 24 hours
    assert run.failed and "soak time" in run.output, run
    run = run_playbook("cleanup", pg, db, TABLES, check=True, extra_vars={"cleanup_min_soak_s": 0})
    assert not run.failed, run
    assert phase(conn) == "switched" and one(conn, "SELECT to_regclass('public.revenues_old') IS NOT NULL") == [(True,)]
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)
        run = run_playbook("cleanup", pg, db, TABLES, extra_vars={"cleanup_min_soak_s": 0, "partitioning_dump_dir": d})
        assert not run.failed and run.changed >= 1, run
        dumps = os.listdir(d)
        assert len(dumps) == 1 and dumps[0].startswith("public.revenues_old.")
        # the dump restores the dropped table
        restore = find_program(Session(pg.connect(db)), "pg_restore")
        if restore:
            p = subprocess.run([restore, "-h", pg.host, "-p", str(pg.port), "-U", "postgres", "-d", db,
                                os.path.join(d, dumps[0])], capture_output=True, text=True, check=False)
            assert p.returncode == 0, p.stderr
            assert rows_of(conn, "public.revenues_old") == old_rows
            one(conn, "DROP TABLE public.revenues_old")
    assert phase(conn) == "cleaned"
    assert one(conn, "SELECT to_regclass('public.revenues_old')") == [(None,)]
    assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'partitioning_sync%%'") == [(0,)]
    assert one(conn, "SELECT count(*) FROM pg_proc WHERE proname LIKE 'public__revenues__%%'") == [(0,)]
    assert one(conn, "SELECT count(*) FROM public.revenue_eu") == one(
        conn, "SELECT count(*) FROM public.revenues WHERE region = 'eu'")
    run = run_playbook("cleanup", pg, db, TABLES, extra_vars={"cleanup_min_soak_s": 0})
    assert not run.failed and run.changed == 0, run
    # rollback is impossible now, and says so
    run = run_playbook("rollback", pg, db, TABLES)
    assert run.failed and "cleaned up" in run.output, run
    conn.close()


@pytest.mark.parametrize("identity", [True, False], ids=["identity", "serial"])
def test_cleanup_under_a_steady_write_load(pg, db, identity):
    """Three writers with short transactions keep writing through the reverse sync: they lock
    <table> (and a partition) and then <table>_old. Cleanup locks in the same order, so it waits
    for them instead of deadlocking with them until lock_timeout (issue: 31 attempts failed)."""
    make_verified(pg, db, rows=600, identity=identity, extras=False)
    switch(pg, db)
    conn, initial, writers = under_load(pg, db, seed=5)
    result = clean(pg, db, lock_timeout_ms=50, swap_retries=30)
    writers.wait_ops(20)
    writers.stop()
    assert writers.errors == []
    assert result["changed"] and phase(conn) == "cleaned"
    assert one(conn, "SELECT to_regclass('public.revenues_old')") == [(None,)]
    assert rows_of(conn, "public.revenues") == writers.expected(initial)
    conn.close()


def test_cleanup_takes_its_locks_in_the_writers_order(pg, db):
    """Deterministic: a writer's transaction holds <table> and one partition and then writes to
    another partition (and, through the reverse sync, to <table>_old). Cleanup started in between
    waits for the parent first, holding nothing the writer needs: the writer finishes, then cleanup
    runs. Locking a partition or <table>_old before the parent would make the two wait on each
    other until lock_timeout."""
    make_verified(pg, db, rows=300, extras=False)
    switch(pg, db)
    conn = pg.connect(db)
    w = pg.connect(db)
    w.autocommit = False
    one(w, "SET statement_timeout = '20s'")
    one(w, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-02-02 00:00+00', 'eu', 1)")
    out = {}

    def run_cleanup():
        try:
            out["result"] = clean(pg, db, lock_timeout_ms=20000, swap_retries=0)
        except Exception as e:  # noqa: BLE001 - reported below
            out["error"] = e
    t = threading.Thread(target=run_cleanup)
    t.start()
    for _attempt in range(400):     # until cleanup waits for a lock
        if one(conn, "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'relation'")[0][0]:
            break
        time.sleep(0.05)
    one(w, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-09-09 00:00+00', 'us', 2)")
    one(w, "UPDATE public.revenues SET amount = 3 WHERE id = 7")
    w.commit()
    t.join(60)
    w.close()
    assert "error" not in out, out
    assert out["result"]["changed"] and phase(conn) == "cleaned"
    assert one(conn, "SELECT count(*) FROM public.revenues WHERE amount IN (1, 2, 3) AND note IS NULL "
                     "AND occurred_at IN ('2025-02-02 00:00+00', '2025-09-09 00:00+00')") == [(2,)]
    conn.close()
