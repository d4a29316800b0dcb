"""playbooks/maintenance.yml as an operator runs it: on a table migrated by us (after cleanup) and on
tables partitioned by other means, with a fixed now (-e partitioning_now); --check changes nothing;
a second run changes nothing; one summary line per host and table; partitioning_only; the runbook's
functions installed where partitioning_runbook_schema says; a held table skipped, the holder named.
"""
import datetime

from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import cleanup

from ..helpers.maintenance import make_table, partitions, rows
from ..helpers.phase3_setup import make_verified, run
from ..helpers.switchover import lock_knobs, switch
from ..helpers.playbook_runner import run_playbook

REVENUES = dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="monthly", premake=2,
                retention=12, retention_action="archive")
EVENTS = dict(table="public.ev", partition_key="k", strategy="range", interval="quarterly", premake=1)
HASHED = dict(table="public.h", partition_key="k", strategy="hash", partitions=2)
NOW = {"partitioning_now": "2026-12-15T10:00:00Z"}


def clean(pg, db):
    s = Session(pg.connect(db))
    try:
        cleanup.cleanup(s, "public.revenues", params=pg.module_params(db), **lock_knobs())
    finally:
        s.close()


def test_maintenance_after_the_migration(pg, db, conn):
    make_verified(pg, db, rows=300, extras=False)                  # public.revenues, monthly 2025-01 .. 2025-06
    switch(pg, db)
    clean(pg, db)
    make_table(conn, name="ev", interval="quarterly", first=datetime.date(2026, 7, 1), periods=1)
    run(conn, "CREATE TABLE public.h (k int NOT NULL) PARTITION BY HASH (k)",
        "CREATE TABLE public.h_p0 PARTITION OF public.h FOR VALUES WITH (MODULUS 2, REMAINDER 0)",
        "CREATE TABLE public.h_p1 PARTITION OF public.h FOR VALUES WITH (MODULUS 2, REMAINDER 1)")
    # a row in the default partition, in a month premake wants: moved out, never a failure
    run(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2026-12-20 00:00+00', 'eu', 5)")
    tables = [REVENUES, EVENTS, HASHED]
    before = (partitions(conn, "revenues"), partitions(conn, "ev"))

    check = run_playbook("maintenance", pg, db, tables, extra_vars=NOW, check=True)
    assert not check.failed and check.changed >= 1, check
    assert (partitions(conn, "revenues"), partitions(conn, "ev")) == before
    flat = " ".join(check.output.split())              # the summary line is wrapped where its words fall
    assert "would be created" in flat and "would be archived" in flat

    first = run_playbook("maintenance", pg, db, tables, extra_vars=dict(NOW, partitioning_runbook_schema="public"))
    assert not first.failed, first
    made = partitions(conn, "revenues")
    # the gap since 2025-06 is filled up to two months ahead, but for the months already past retention
    # (2025-07 .. 2025-11); the six months past retention are archived
    assert ["revenues_2025_12"] + ["revenues_2026_%02d" % m for m in range(1, 13)] + [
        "revenues_2027_01", "revenues_2027_02"] == sorted(n for n in made if n >= "revenues_2025_07" and n[-1].isdigit())
    assert rows(conn, "SELECT tableoid::regclass::text FROM public.revenues WHERE occurred_at = '2026-12-20 00:00+00'"
                ) == [("revenues_2026_12",)]
    archived = sorted(r[0] for r in rows(conn, "SELECT relname FROM pg_class WHERE relnamespace = "
                                               "'partitioning_archive'::regnamespace AND relkind = 'r'"))
    assert archived == ["revenues_2025_%02d" % m for m in range(1, 7)]
    assert sorted(partitions(conn, "ev")) == ["ev_2026_q3", "ev_2026_q4", "ev_2027_q1", "ev_default"]
    lines = [l for l in first.output.splitlines() if "testdb public." in l]
    assert any("testdb public.revenues: premake 15 created" in l for l in lines), lines
    assert "retention 6 detached" in first.output.replace("\n        ", " "), first.output
    assert "testdb public.h: premake nothing to premake" in first.output
    assert rows(conn, "SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace "
                      "AND proname = 'maintain_partition_system'") == [(1,)]

    second = run_playbook("maintenance", pg, db, tables, extra_vars=dict(NOW, partitioning_runbook_schema="public"))
    assert not second.failed and second.changed == 0, second

    only = run_playbook("maintenance", pg, db, tables, extra_vars=dict(NOW, partitioning_only="public.ev"))
    assert not only.failed and "public.revenues" not in only.output.split("PLAY RECAP")[0].replace(
        "Install or upgrade", ""), only


def test_a_table_another_run_holds_is_skipped_and_the_holder_named(pg, db, conn):
    make_table(conn, name="ev", interval="quarterly", first=datetime.date(2026, 10, 1), periods=1)
    other = pg.connect(db, application_name="phase 2 elsewhere")
    run(other, "SELECT pg_advisory_lock(hashtextextended('dbops.partitioning:public.ev', 0))")
    try:
        result = run_playbook("maintenance", pg, db, [EVENTS], extra_vars=NOW)
        assert not result.failed, result
        assert "skipped, another run is working on it (pid %d, phase 2 elsewhere, since" % other.get_backend_pid() \
            in result.output.replace("\n        ", " "), result
    finally:
        other.close()
    assert sorted(partitions(conn, "ev")) == ["ev_2026_q4", "ev_default"]
