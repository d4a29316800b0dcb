"""Extreme partition keys in phase 1 (issue 9, item 6), on real servers.

The spec bounds the layout (``start`` through ``premake`` periods after now), not the data:
``9999-12-31`` and ``infinity`` no longer crash, a row in 2099 or in year 3000 costs no
partition and no refusal, ``start`` moves the first partition later as well as earlier, the
rows outside the layout go to the default partition and are reported, and a layout larger
than ``max_partitions`` is refused before anything is created. Phase 2 then copies and
verifies them like any other row.
"""
import datetime

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import backfill, verify
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ..helpers import backfill_driver
from ..helpers.phase2_setup import STATE, TABLE, create_original, run
from ..helpers.switchover import one as rows

NOW = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)


def phase1(pg, db, check=False, **spec):
    session = Session(pg.connect(db), check_mode=check)
    try:
        out = prepare_table(session, SqlTemplates.bundled(), normalize_spec(dict(
            dict(table=TABLE, partition_key="occurred_at", interval="monthly", premake=1), **spec)), STATE, now=NOW)
        return dict(out, queries=session.queries)
    finally:
        session.close()


def twin_partitions(conn):
    return [r[0] for r in rows(conn, "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                     "WHERE i.inhparent = 'public.revenues_partitioned'::regclass ORDER BY 1")]


def in_default(conn):
    """The keys in the twin's default partition, as text in UTC."""
    run(conn, "SET TimeZone = 'UTC'")
    return [r[0] for r in rows(conn, "SELECT occurred_at::text FROM public.revenues_default ORDER BY occurred_at")]


def copy_and_verify(pg, db):
    backfill_driver.copy(pg, db, batch_size=500)
    s = Session(pg.connect(db))
    try:
        row = state_store.get_table(s, STATE, TABLE)
        return verify.verify_table(s, backfill.load_context(s, STATE, row), row)
    finally:
        s.close()


@pytest.mark.parametrize("key_type", ["timestamptz", "date"])
def test_infinity_and_the_last_date_go_to_the_default_partition(pg, db, conn, key_type):
    """``9999-12-31`` and ``infinity`` ended in ``ValueError: year 10000 is out of range``."""
    create_original(conn, rows=300)
    if key_type == "date":
        run(conn, "ALTER TABLE public.revenues ALTER COLUMN occurred_at TYPE date")
    run(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('9999-12-31 00:00+00', 'eu', 1), "
              "('infinity', 'eu', 2), ('-infinity', 'us', 3)")
    out = phase1(pg, db)
    assert out["partitions"] == ["revenues_2025_%02d" % m for m in range(1, 8)] + ["revenues_default"]
    assert out["layout"] == dict(first="2025-01-01", end="2025-08-01", partitions=7, starts_at="min(key)")
    assert out["outside_layout"] == dict(before=1, after=2, earliest="-infinity", latest="infinity")
    assert any("3 rows have keys outside the range partitions" in w and "(the latest infinity)" in w
               for w in out["warnings"]), out["warnings"]
    result = copy_and_verify(pg, db)
    assert result["status"] == "ok", result
    assert in_default(conn) == ["-infinity", "9999-12-31" if key_type == "date" else "9999-12-31 00:00:00+00",
                                "infinity"]
    again = phase1(pg, db)
    assert not again["changed"], again["created"]


def test_the_last_year_python_writes_is_an_open_partition(pg, db, conn):
    """Without a default partition every key needs a partition: the year 9999 ends at MAXVALUE (which
    holds ``infinity`` too); ``-infinity`` before ``start`` is refused."""
    run(conn, "CREATE TABLE public.revenues (id bigserial PRIMARY KEY, occurred_at date NOT NULL, "
              "region text NOT NULL, amount numeric NOT NULL, note text)",
        "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('9990-03-01', 'eu', 1), "
        "('9999-12-31', 'eu', 2)")
    out = phase1(pg, db, interval="yearly", default_partition=False, start="9990-01-01", check=True)
    assert out["partitions"] == ["revenues_%d" % y for y in range(9990, 10000)]
    assert out["layout"] == dict(first="9990-01-01", end="MAXVALUE", partitions=10, starts_at="start")
    assert any("FOR VALUES FROM ('9999-01-01'::date) TO (MAXVALUE)" in q for q in out["queries"]), out["queries"]
    run(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-03-01', 'eu', 3)")
    with pytest.raises(PartitioningError, match=r"would be 7975, .* without a default partition the span must also "
                                                r"hold the earliest key 2025-03-01 and the latest key 9999-12-31\. Keep default_partition: true"):
        phase1(pg, db, interval="yearly", default_partition=False, start="9990-01-01")
    run(conn, "DELETE FROM public.revenues WHERE occurred_at = '2025-03-01'",
        "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('-infinity', 'eu', 4)")
    with pytest.raises(PartitioningError, match="1 rows have keys no partition can hold .*-infinity.* keep "
                                                "default_partition: true"):
        phase1(pg, db, interval="yearly", default_partition=False, start="9990-01-01")
    assert rows(conn, "SELECT to_regclass('public.revenues_partitioned'), to_regnamespace('partitioning')") == [
        (None, None)]


def test_sparse_far_rows_and_start_later_than_the_data(pg, db, conn):
    """Three rows dated 1970 and 2099 made 522 partitions, 511 empty; a row in year 3000 made phase 1
    refuse; ``start`` could only move the first partition earlier."""
    create_original(conn, rows=300)
    run(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('1970-01-01 00:00+00', 'eu', 1), "
              "('2099-05-01 00:00+00', 'us', 2), ('2099-12-31 00:00+00', 'us', 3), ('3000-01-01 00:00+00', 'us', 4)")
    run(conn, "ANALYZE public.revenues")
    plan = phase1(pg, db, interval="quarterly", check=True)       # 1970 still sets the start: said plainly
    assert plan["layout"] == dict(first="1970-01-01", end="2025-10-01", partitions=223, starts_at="min(key)")
    assert plan["outside_layout"]["after"] == 3
    assert any("the partitions start at the earliest key (1970-01-01), but the statistics put 99% of the rows from "
               "2025-01-01 on: 220 of the 223 partitions" in w and "Set start: 2025-01-01" in w
               for w in plan["warnings"]), plan["warnings"]
    out = phase1(pg, db, interval="quarterly", start="2025-01-01")
    assert out["partitions"] == ["revenues_2025_q1", "revenues_2025_q2", "revenues_2025_q3", "revenues_default"]
    assert twin_partitions(conn) == sorted(out["partitions"])
    assert out["layout"]["starts_at"] == "start"
    outside = out["outside_layout"]
    assert outside == dict(before=1, after=3, earliest="1970-01-01 00:00:00+00", latest="3000-01-01 00:00:00+00")
    warning = [w for w in out["warnings"] if "outside the range partitions" in w]
    assert warning and "1 before 2025-01-01 (the earliest 1970-01-01 00:00:00+00)" in warning[0] \
        and "3 from 2025-10-01 on (the latest 3000-01-01 00:00:00+00)" in warning[0], warning
    assert copy_and_verify(pg, db)["status"] == "ok"
    assert len(in_default(conn)) == 4
    assert phase1(pg, db, interval="quarterly", start="2025-01-01")["changed"] is False


def test_too_many_partitions_are_refused_before_anything_is_made(pg, db, conn):
    create_original(conn, rows=50)
    run(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('1900-01-01 00:00+00', 'eu', 1)")
    with pytest.raises(PartitioningError) as e:
        phase1(pg, db, interval="daily")
    assert e.value.msg.startswith("public.revenues: the daily partitions from 1900-01-01 to 2025-06-03 would be "
                                  "45809, more than max_partitions (1000): the span starts at the earliest key, "
                                  "1900-01-01 00:00:00+00:00. Set start: to the first period"), e.value.msg
    assert "Set start: to the first period to partition" in e.value.msg
    assert rows(conn, "SELECT to_regclass('public.revenues_partitioned'), to_regnamespace('partitioning')") == [
        (None, None)]
    out = phase1(pg, db, interval="daily", start="2025-05-20")
    assert len(out["partitions"]) == 15 and out["outside_layout"]["before"] == 1 + 50
