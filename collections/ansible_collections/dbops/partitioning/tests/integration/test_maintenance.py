"""Premake and retention (maintain/premake.py, retention.py) on real servers, with a fixed "now".

* premake makes exactly the partitions bounds.py plans, at month, quarter and year edges and on
  leap days, for every calendar key type; a second run makes nothing; check mode changes nothing;
* rows in the default partition block a partition without failing the run: reported, named;
* retention removes exactly the expired partitions: archived intact (rows, indexes, constraints),
  dropped after a dump that pg_restore reads and whose checksum is recorded, or kept; a second run
  changes nothing; an interrupted concurrent detach and a failed dump are finished by the next run;
* a table another run holds is skipped, the holder named; retention is refused for hash and list.
"""
import datetime
import hashlib
import os
import subprocess
import tempfile

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import (
    floor_boundary, next_boundary, plan_range)
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.dumps import find_program
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec

from ..helpers.maintenance import KEY_TYPES, interrupt_concurrent_detach, make_table, partitions, rows, run_premake, run_retention, spec_of, utc
from ..helpers.phase3_setup import run

EDGES = [utc(2024, 2, 29, 12), utc(2024, 12, 31, 23, 59, 59), utc(2025, 1, 1), utc(2025, 3, 31, 23, 59, 59),
         utc(2025, 4, 1), utc(2025, 6, 30, 23, 0)]


def expected_premake(spec, kind, now, premake):
    first = floor_boundary(now, spec.interval)
    end = first
    for _period in range(premake + 1):
        end = next_boundary(end, spec.interval)
    return [p.name for p in plan_range(spec, KEY_TYPES[kind], first, end)]


@pytest.mark.parametrize("kind", ["timestamptz", "date"])
def test_premake_at_edges_and_leap_days(pg, db, conn, kind):
    for i, interval in enumerate(("daily", "weekly", "monthly", "quarterly", "yearly")):
        for j, now in enumerate(EDGES):
            name = "e%d_%d" % (i, j)
            make_table(conn, name=name, kind=kind, interval=interval, first=floor_boundary(now, interval),
                       periods=1, default=False, per_period=1)
            spec = spec_of(name, interval, premake=2)
            made = run_premake(pg, db, spec, now)
            want = expected_premake(spec, kind, now, 2)
            assert made["created"] == want[1:], (interval, now, made)      # the current one existed
            assert sorted(partitions(conn, name)) == sorted(want)
            again = run_premake(pg, db, spec, now)
            assert again["created"] == [] and not again["changed"], again


def test_premake_fills_the_gap_and_respects_retention(pg, db, conn):
    make_table(conn, periods=2)                                 # 2025-01, 2025-02; nothing since
    made = run_premake(pg, db, spec_of(premake=1, retention=4), utc(2025, 7, 15))
    # 2025-03 is past retention (cutoff 2025-03-15: it ends 04-01 - kept), so from 03 through 08
    assert made["created"] == ["ev_2025_03", "ev_2025_04", "ev_2025_05", "ev_2025_06", "ev_2025_07", "ev_2025_08"]
    made = run_premake(pg, db, spec_of(premake=1, retention=2), utc(2026, 1, 10))
    # cutoff 2025-11-10: 2025-09 and 2025-10 would be expired at once, so the gap starts at 2025-11
    assert made["created"] == ["ev_2025_11", "ev_2025_12", "ev_2026_01", "ev_2026_02"], made


def test_check_mode_changes_nothing_on_a_fresh_database(pg, db, conn):
    make_table(conn, periods=1, first=datetime.date(2025, 5, 1))
    before = partitions(conn)
    result = run_premake(pg, db, spec_of(premake=2), utc(2025, 5, 2), check=True)
    assert result["created"] == ["ev_2025_06", "ev_2025_07"] and result["changed"]
    assert any("ATTACH PARTITION public.ev_2025_06" in q for q in result["queries"])
    assert partitions(conn) == before
    assert rows(conn, "SELECT to_regnamespace('partitioning')") == [(None,)]


def test_rows_in_the_default_partition_are_moved_out_without_failing(pg, db, conn):
    """They block the partition (HP14): premake hands the range to the default move
    (test_default_move.py has the move under load, its locks and its resumption)."""
    make_table(conn, periods=2, first=datetime.date(2025, 5, 1))
    run(conn, "INSERT INTO public.ev (k) VALUES ('2025-08-03 00:00+00'), ('2025-08-20 00:00+00'), ('2031-01-01 00:00+00')")
    result = run_premake(pg, db, spec_of(premake=3), utc(2025, 6, 2))
    assert result["created"] == ["ev_2025_07", "ev_2025_09", "ev_2025_08"]
    assert result["blocked"] == [] and result["default_rows"] == 3
    assert [(s["step"], s["partition"], s["status"]) for s in result["steps"]][-1] == ("move", "ev_2025_08", "moved")
    assert rows(conn, "SELECT tableoid::regclass::text, count(*) FROM public.ev WHERE k >= '2025-08-01' "
                      "GROUP BY 1 ORDER BY 1") == [("ev_2025_08", 2), ("ev_default", 1)]


def test_skipped_while_another_run_holds_the_table(pg, db, conn):
    make_table(conn, periods=1)
    other = pg.connect(db, application_name="someone else's migration")
    run(other, "SELECT pg_advisory_lock(hashtextextended('dbops.partitioning:public.ev', 0))")
    try:
        for result in (run_premake(pg, db, spec_of(), utc(2025, 1, 5)),
                       run_retention(pg, db, spec_of(retention=1), utc(2025, 6, 5))):
            assert result["skipped"] and not result["changed"], result
            assert "pid %d" % other.get_backend_pid() in result["msg"]
            assert "someone else's migration" in result["msg"] and "since" in result["msg"]
    finally:
        other.close()
    assert len(partitions(conn)) == 2                  # ev_2025_01 and the default: nothing made


def _snapshot(conn, schema, name):
    return dict(rows=rows(conn, "SELECT id, k, note FROM %s.%s ORDER BY id" % (schema, name)),
                indexes=sorted(r[0] for r in rows(conn, "SELECT indexdef FROM pg_indexes WHERE schemaname = %s "
                                                        "AND tablename = %s", (schema, name))),
                checks=rows(conn, "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass",
                            ("%s.%s" % (schema, name),)))


def test_retention_archives_exactly_the_expired_partitions_intact(pg, db, conn):
    made, _last = make_table(conn, periods=18, first=datetime.date(2024, 1, 1))     # 2024-01 .. 2025-06
    spec = spec_of(premake=0, retention=12, retention_action="archive")
    now = utc(2025, 6, 15, 9)
    expired = ["ev_2024_%02d" % m for m in range(1, 6)]          # cutoff 2024-06-15: 2024-06 ends 07-01, stays
    before = dict((n, _snapshot(conn, "public", n)) for n in expired)
    total = rows(conn, "SELECT count(*) FROM public.ev")[0][0]
    result = run_retention(pg, db, spec, now)
    assert result["detached"] == expired and result["archived"] == expired, result
    for n in expired:
        after = _snapshot(conn, "partitioning_archive", n)
        assert after["rows"] == before[n]["rows"] and after["checks"] == before[n]["checks"]
        assert after["indexes"] == [i.replace("public.", "partitioning_archive.") for i in before[n]["indexes"]]
    left = partitions(conn)
    assert sorted(left) == sorted([p.name for p in made if p.name not in expired] + ["ev_default"])
    assert rows(conn, "SELECT count(*) FROM public.ev")[0][0] == total - 3 * len(expired)
    assert rows(conn, "SELECT partition_name, action, status FROM partitioning.retention_log ORDER BY 1") == [
        (n, "archive", "archived") for n in expired]
    again = run_retention(pg, db, spec, now)
    assert not again["changed"] and again["detached"] == [] and "nothing expired" in again["msg"], again


def test_retention_dumps_checks_and_drops_without_a_default_partition(pg, db, conn):
    """No default partition: DETACH ... CONCURRENTLY; the dump is read back before the drop."""
    make_table(conn, periods=4, first=datetime.date(2024, 11, 1), default=False)
    spec = spec_of(retention=2, retention_action="drop")
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)
        result = run_retention(pg, db, spec, utc(2025, 3, 1), dump_dir=d)
        assert result["dropped"] == ["ev_2024_11", "ev_2024_12"], result
        assert [s["lock_mode"] for s in result["steps"] if s["step"] == "detach"] == [
            "SHARE UPDATE EXCLUSIVE (concurrent)"] * 2
        logged = rows(conn, "SELECT partition_name, status, dump_path, dump_sha256, dump_bytes, dump_verified_at "
                            "FROM partitioning.retention_log ORDER BY 1")
        assert [r[:2] for r in logged] == [("ev_2024_11", "dropped"), ("ev_2024_12", "dropped")]
        for name, _status, path, sha, size, verified in logged:
            with open(path, "rb") as f:
                data = f.read()
            assert hashlib.sha256(data).hexdigest() == sha and len(data) == size and verified is not None
            listing = subprocess.run([find_program(Session(conn), "pg_restore"), "--list", path], capture_output=True,
                                     text=True, check=True).stdout
            assert "TABLE DATA public %s " % name in listing
        assert [d_["partition"] for d_ in result["dumps"]] == ["public.ev_2024_11", "public.ev_2024_12"]
    assert sorted(partitions(conn)) == ["ev_2025_01", "ev_2025_02"]
    assert rows(conn, "SELECT to_regclass('public.ev_2024_11')") == [(None,)]


def test_a_failed_dump_drops_nothing_and_the_next_run_finishes(pg, db, conn):
    make_table(conn, periods=3, first=datetime.date(2024, 12, 1))
    spec = spec_of(retention=2, retention_action="drop")
    with tempfile.TemporaryDirectory() as d:
        os.chmod(d, 0o777)
        with pytest.raises(PartitioningError, match="not an executable"):
            run_retention(pg, db, spec, utc(2025, 3, 2), dump_dir=d, pg_dump="/nonexistent/pg_dump")
        # detached (catalog only), not dropped: it waits for its dump
        assert rows(conn, "SELECT to_regclass('public.ev_2024_12') IS NOT NULL") == [(True,)]
        assert rows(conn, "SELECT status FROM partitioning.retention_log") == [("detached",)]
        result = run_retention(pg, db, spec, utc(2025, 3, 2), dump_dir=d)
        assert result["dropped"] == ["ev_2024_12"] and len(result["dumps"]) == 1, result
    assert rows(conn, "SELECT status FROM partitioning.retention_log") == [("dropped",)]


def test_an_interrupted_concurrent_detach_is_finalized(pg, db, conn):
    make_table(conn, periods=3, first=datetime.date(2024, 12, 1), default=False)
    interrupt_concurrent_detach(pg, db, "ev_2025_01")
    result = run_retention(pg, db, spec_of(retention=1, retention_action="archive"), utc(2025, 2, 10))
    # the pending one is finished first and, not expired (it ends 2025-02-01, after the cutoff 2025-01-10),
    # kept where it is; ev_2024_12 expired and is archived
    assert result["detached"] == ["ev_2025_01", "ev_2024_12"], result
    assert result["steps"][0]["status"] == "finalized"
    assert result["archived"] == ["ev_2024_12"] and result["kept"] == ["ev_2025_01"], result
    assert sorted(partitions(conn)) == ["ev_2025_02"]
    assert rows(conn, "SELECT partition_name, action, status FROM partitioning.retention_log ORDER BY 1") == [
        ("ev_2024_12", "archive", "archived"), ("ev_2025_01", "detach", "kept")]
    again = run_retention(pg, db, spec_of(retention=1, retention_action="archive"), utc(2025, 2, 10))
    assert not again["changed"], again


def test_retention_is_refused_for_hash_and_list(pg, db, conn):
    with pytest.raises(PartitioningError, match="retention: applies only to strategy range"):
        normalize_spec(dict(table="public.h", partition_key="k", strategy="hash", partitions=4, retention=3))
    run(conn, "CREATE TABLE public.ev (k date NOT NULL) PARTITION BY LIST (k)",
        "CREATE TABLE public.ev_a PARTITION OF public.ev FOR VALUES IN ('2020-01-01')")
    with pytest.raises(PartitioningError, match="spec says strategy range but public.ev is partitioned by list"):
        run_retention(pg, db, spec_of(retention=3), utc(2025, 1, 1))
