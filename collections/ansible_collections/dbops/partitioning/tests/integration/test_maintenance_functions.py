"""The runbook's functions in the database (templates/sql/maintenance/40_runbook.sql.j2).

* callable by hand from psql exactly as the first user's runbook calls them, unqualified (wrappers
  in public), with the documented columns;
* they agree with the modules: the same settings give the same partitions made, archived, blocked;
* one transaction (a function): a step is not started once the locks held plus the longest step
  would pass the budget, and the rest is reported 'postponed' for the next call; the pg_cron job
  (a procedure called at top level) commits after every step instead;
* a table another run holds is skipped and the holder named; retention on hash is refused; a
  wrapper never replaces somebody else's function.
"""
import datetime

import psycopg2
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import next_boundary, retention_cutoff
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import functions
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ..helpers.maintenance import (
    STATE, install, make_table, partitions, registered, rows, run_premake, run_retention, spec_of, utc)
from ..helpers.phase3_setup import run

COLUMNS = ["table_name", "step", "partition_name", "lower_bound", "upper_bound", "status", "detail", "lock_ms"]


def results(conn, query, args=None):
    cur = conn.cursor()
    cur.execute(query, args)
    assert [c.name for c in cur.description] == COLUMNS
    out = [dict(zip(COLUMNS, r)) for r in cur.fetchall()]
    cur.close()
    return out


def test_the_runbook_by_hand_in_psql(pg, db, conn):
    """The runbook's own lines, unqualified, from psql (wrappers in public)."""
    today = datetime.datetime.now(datetime.timezone.utc).date()
    first = datetime.date(today.year - 2, 1, 1)
    make_table(conn, name="revenues", interval="quarterly", first=first, periods=4)
    install(conn)
    assert functions.install_wrappers(Session(conn), SqlTemplates.bundled(), STATE, "public")
    registered(conn, spec_of("revenues", "quarterly", premake=2))

    quarter = "SELECT create_quarterly_partition('revenues', '%d-01-01', '%d-04-01');" % (today.year + 3, today.year + 3)
    out = pg.psql(quarter, db)
    assert "created" in out.stdout, out
    assert "revenues_%d_q1" % (today.year + 3) in partitions(conn, "revenues")
    out = pg.psql(quarter, db)
    assert "exists" in out.stdout, out
    bad = pg.psql("SELECT create_quarterly_partition('revenues', '2025-02-01', '2025-05-01');", db, check=False)
    assert bad.returncode != 0 and "first day of a quarter" in bad.stderr

    until_done(pg, db, "SELECT create_next_year_partitions();")
    for q in range(1, 5):
        assert "revenues_%d_q%d" % (today.year + 1, q) in partitions(conn, "revenues")

    spec12 = normalize_spec(dict(table="revenues", partition_key="k", interval="quarterly", retention=12))
    cutoff = retention_cutoff(spec12, today)
    expected = sorted(p for p in partitions(conn, "revenues")
                      if p != "revenues_default" and _upper(p) <= cutoff)
    assert expected, "the table holds partitions older than a year"
    until_done(pg, db, "SELECT archive_old_partitions(12);")
    assert sorted(r[0] for r in rows(conn, "SELECT relname FROM pg_class WHERE relnamespace = "
                                           "'partitioning_archive'::regnamespace AND relkind = 'r'")) == expected

    out = pg.psql("SELECT maintain_partition_system();", db)
    assert out.returncode == 0 and "postponed" not in out.stdout and "failed" not in out.stdout, out
    again = results(conn, "SELECT * FROM maintain_partition_system()")
    assert not [r for r in again if r["status"] in ("created", "detached", "archived", "failed")], again


def until_done(pg, db, line):
    """Run a runbook line until nothing is left 'postponed' (each call stays within the lock budget)."""
    for _attempt in range(30):
        out = pg.psql(line, db)
        if "postponed" not in out.stdout:
            return out
    raise AssertionError("%s still postpones work: %s" % (line, out.stdout))


def _upper(partition):
    year, quarter = partition.split("_")[-2:]
    start = datetime.date(int(year), 3 * (int(quarter[1]) - 1) + 1, 1)
    return next_boundary(start, "quarterly")


def test_the_functions_agree_with_the_modules(pg, db, conn):
    """Twin tables with the same settings: modules on one, maintain_partition_system() on the other."""
    now = utc(2025, 6, 20, 8)
    for name in ("am", "bf"):
        make_table(conn, name=name, first=datetime.date(2024, 9, 1), periods=8)        # 2024-09 .. 2025-04
        run(conn, "INSERT INTO public.%s (k) VALUES ('2025-08-10 00:00+00')" % name)    # blocks 2025-08
    install(conn)
    settings = dict(premake=3, retention=6, retention_action="archive", lock_budget_ms=5000)
    by_module = [run_premake(pg, db, spec_of("am", **settings), now),
                 run_retention(pg, db, spec_of("am", **settings), now)]
    registered(conn, spec_of("bf", **settings))
    by_function = results(conn, "SELECT * FROM partitioning.maintain_partition_system(%s)", (now,))
    mine = [r for r in by_function if r["table_name"] == "public.bf"]
    theirs = [r for r in by_function if r["table_name"] == "public.am"]

    def suffixes(names, prefix):
        return sorted(n[len(prefix):] for n in names)
    assert suffixes([r["partition_name"] for r in mine if r["status"] == "created"], "bf_") == [
        "2025_05", "2025_06", "2025_07", "2025_09"]
    # a blocked range: the function reports it, the module moves its rows out online (several
    # transactions and a copy, which a function running in its caller's transaction cannot do)
    assert suffixes([r["partition_name"] for r in mine if r["status"] == "blocked_by_default"], "bf_") == ["2025_08"]
    assert suffixes(by_module[0]["created"], "am_") == ["2025_05", "2025_06", "2025_07", "2025_08", "2025_09"]
    assert by_module[0]["blocked"] == []
    assert suffixes(by_module[1]["archived"], "am_") == suffixes(
        [r["partition_name"] for r in mine if r["step"] == "retire" and r["status"] == "archived"], "bf_") == [
        "2024_09", "2024_10", "2024_11"]
    assert suffixes(partitions(conn, "am"), "am_") == sorted(suffixes(partitions(conn, "bf"), "bf_") + ["2025_08"])
    # the table the modules keep is registered too, and the function finds nothing left to do there
    assert theirs and not [r for r in theirs if r["status"] not in ("exists", "rows", "blocked_by_default")], theirs


def test_a_function_stops_before_its_budget_the_job_commits_each_step(pg, db, conn):
    make_table(conn, first=datetime.date(2025, 1, 1), periods=1)
    install(conn)
    registered(conn, spec_of(premake=3, lock_budget_ms=1))
    now = utc(2025, 1, 15)
    out = results(conn, "SELECT * FROM partitioning.maintain_partition_system(%s)", (now,))
    out = [r for r in out if r["status"] != "exists"]
    assert [(r["partition_name"], r["status"]) for r in out] == [
        ("ev_2025_02", "created"), ("ev_2025_03", "postponed"), ("ev_2025_04", "postponed")], out
    assert "lock budget of 1 ms" in out[1]["detail"]
    out = results(conn, "SELECT * FROM partitioning.maintain_partition_system(%s)", (now,))
    assert [(r["partition_name"], r["status"]) for r in out if r["status"] != "exists"] == [
        ("ev_2025_03", "created"), ("ev_2025_04", "postponed")], out
    # the job commits after every step: each lock ends with its step, the whole plan is done
    run(conn, "CALL partitioning.maintenance_job('2025-01-15 00:00+00')")
    assert "ev_2025_04" in partitions(conn)
    recorded = rows(conn, "SELECT partition_name, status, source, lock_mode, lock_ms FROM partitioning.maintenance_steps "
                          "ORDER BY id")
    assert [r[:3] for r in recorded] == [("ev_2025_02", "created", "function"), ("ev_2025_03", "created", "function"),
                                         ("ev_2025_04", "created", "job")]
    assert all(r[3] == "ACCESS EXCLUSIVE (default partition)" and r[4] > 0 for r in recorded)
    # in an explicit transaction block the job cannot commit: it says so
    tx = pg.connect(db, autocommit=False)
    with pytest.raises(psycopg2.Error, match="invalid transaction termination"):
        run(tx, "CALL partitioning.maintenance_job('2025-06-15 00:00+00')")
    tx.rollback()
    tx.close()


def test_functions_skip_a_held_table_and_refuse_retention_on_hash(pg, db, conn):
    make_table(conn, first=datetime.date(2025, 1, 1), periods=1)
    run(conn, "CREATE TABLE public.h (k int NOT NULL) PARTITION BY HASH (k)",
        "CREATE TABLE public.h_p0 PARTITION OF public.h FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        "CREATE TABLE public.h_p1 PARTITION OF public.h FOR VALUES WITH (MODULUS 2, REMAINDER 1)")
    install(conn)
    registered(conn, spec_of(premake=1))
    registered(conn, normalize_spec(dict(table="public.h", partition_key="k", strategy="hash", partitions=2)))
    other = pg.connect(db, application_name="a long migration")
    holder = other.get_backend_pid()
    run(other, "SELECT pg_advisory_lock(hashtextextended('dbops.partitioning:public.ev', 0))")
    out = results(conn, "SELECT * FROM partitioning.archive_old_partitions(3, '2025-06-01')")
    other.close()
    by_table = dict((r["table_name"], r) for r in out)
    assert by_table["public.ev"]["status"] == "skipped"
    assert "a long migration" in by_table["public.ev"]["detail"] and "pid %d" % holder in \
        by_table["public.ev"]["detail"]
    assert by_table["public.h"]["status"] == "refused" and "partitioned by hash" in by_table["public.h"]["detail"]
    assert set(partitions(conn)) == {"ev_2025_01", "ev_default"}


def test_a_wrapper_never_replaces_somebody_elses_function(conn):
    install(conn)
    run(conn, "CREATE FUNCTION public.maintain_partition_system(p_now timestamptz DEFAULT now()) RETURNS int "
              "LANGUAGE sql AS 'SELECT 1'")
    with pytest.raises(psycopg2.Error, match="is not a dbops.partitioning wrapper"):
        functions.install_wrappers(Session(conn), SqlTemplates.bundled(), STATE, "public")
    assert rows(conn, "SELECT public.maintain_partition_system()") == [(1,)]


def test_before_the_switchover_the_twin_is_premade(pg, db, conn):
    """create_quarterly_partition('revenues', ...) finds the twin while the migration runs."""
    from ..helpers.phase3_setup import make_prepared_real
    make_prepared_real(pg, db, rows=50)
    install(conn)
    out = results(conn, "SELECT * FROM partitioning.create_quarterly_partition('revenues', '2030-01-01', '2030-04-01')")
    assert out[0]["status"] == "created" and out[0]["partition_name"] == "revenues_2030_q1", out
    assert "revenues_2030_q1" in partitions(conn, "revenues_partitioned")
