"""Bound arithmetic and partition names (pure Python), and the bound clauses on real servers
(the last tests use the ``conn`` fixture: PostgreSQL itself must accept the bounds and route
rows at the edges, whatever the session's time zone)."""
import datetime
from operator import attrgetter

import pytest
from psycopg2 import sql

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import (
    MAX_PARTITIONS, Partition, blocked_by_default, bound_clause, expired_partitions, floor_boundary, key_kind, missing_partitions,
    next_boundary, parse_bound, partition_for, plan_partitions, range_key_kind, range_layout, read_partitions,
    retention_cutoff, sparse_start, suffix_for)
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec

D = datetime.date
DT = datetime.datetime
UTC = datetime.timezone.utc


def spec(**kw):
    raw = dict(table="public.revenues", partition_key="occurred_at", interval="monthly")
    raw.update(kw)
    return normalize_spec(raw)


# ---------------------------------------------------------------- calendar edges

@pytest.mark.parametrize("value, interval, floor, nxt, suffix", [
    pytest.param(D(2025, 1, 15), "daily", D(2025, 1, 15), D(2025, 1, 16), "2025_01_15", id="daily-mid-month"),
    pytest.param(D(2024, 2, 28), "daily", D(2024, 2, 28), D(2024, 2, 29), "2024_02_28", id="daily-february-28-of-a-leap-year"),
    pytest.param(D(2024, 2, 29), "daily", D(2024, 2, 29), D(2024, 3, 1), "2024_02_29", id="daily-leap-day"),
    pytest.param(D(2023, 2, 28), "daily", D(2023, 2, 28), D(2023, 3, 1), "2023_02_28", id="daily-february-28-of-a-common-year"),
    pytest.param(D(2024, 12, 31), "daily", D(2024, 12, 31), D(2025, 1, 1), "2024_12_31", id="daily-last-day-of-the-year"),
    pytest.param(D(2025, 1, 15), "weekly", D(2025, 1, 13), D(2025, 1, 20), "2025_w03", id="weekly-midweek"),
    pytest.param(D(2025, 1, 13), "weekly", D(2025, 1, 13), D(2025, 1, 20), "2025_w03", id="weekly-a-monday-is-its-own-floor"),
    pytest.param(D(2025, 1, 19), "weekly", D(2025, 1, 13), D(2025, 1, 20), "2025_w03", id="weekly-sunday-ends-the-iso-week"),
    pytest.param(D(2021, 1, 1), "weekly", D(2020, 12, 28), D(2021, 1, 4), "2020_w53", id="weekly-iso-week-53-of-2020"),
    pytest.param(D(2024, 12, 31), "weekly", D(2024, 12, 30), D(2025, 1, 6), "2025_w01", id="weekly-week-1-of-2025-starts-in-2024"),
    pytest.param(D(2026, 12, 31), "weekly", D(2026, 12, 28), D(2027, 1, 4), "2026_w53", id="weekly-iso-week-53-of-2026"),
    pytest.param(D(2024, 2, 29), "monthly", D(2024, 2, 1), D(2024, 3, 1), "2024_02", id="monthly-leap-day"),
    pytest.param(D(2024, 12, 31), "monthly", D(2024, 12, 1), D(2025, 1, 1), "2024_12", id="monthly-last-day-of-the-year"),
    pytest.param(D(2025, 1, 1), "monthly", D(2025, 1, 1), D(2025, 2, 1), "2025_01", id="monthly-a-first-day-is-its-own-floor"),
    pytest.param(D(2025, 3, 31), "quarterly", D(2025, 1, 1), D(2025, 4, 1), "2025_q1", id="quarterly-last-day-of-q1"),
    pytest.param(D(2025, 4, 1), "quarterly", D(2025, 4, 1), D(2025, 7, 1), "2025_q2", id="quarterly-first-day-of-q2"),
    pytest.param(D(2025, 9, 30), "quarterly", D(2025, 7, 1), D(2025, 10, 1), "2025_q3", id="quarterly-last-day-of-q3"),
    pytest.param(D(2025, 12, 31), "quarterly", D(2025, 10, 1), D(2026, 1, 1), "2025_q4", id="quarterly-last-day-of-q4"),
    pytest.param(D(2024, 2, 29), "yearly", D(2024, 1, 1), D(2025, 1, 1), "2024", id="yearly-leap-day"),
    pytest.param(D(2025, 12, 31), "yearly", D(2025, 1, 1), D(2026, 1, 1), "2025", id="yearly-last-day-of-the-year"),
])
def test_edges(value, interval, floor, nxt, suffix):
    assert floor_boundary(value, interval) == floor
    assert next_boundary(floor, interval) == nxt
    assert suffix_for(floor, interval) == suffix


def test_timestamps_at_and_just_before_midnight():
    assert floor_boundary(DT(2025, 4, 1, 0, 0, 0), "quarterly") == D(2025, 4, 1)
    assert floor_boundary(DT(2025, 3, 31, 23, 59, 59, 999999), "quarterly") == D(2025, 1, 1)


def test_aware_timestamps_are_taken_as_utc_instants():
    # 2025-01-01 01:00 in Berlin is 2024-12-31 00:00 UTC: the row belongs to December (UTC).
    berlin = datetime.timezone(datetime.timedelta(hours=1))
    assert floor_boundary(DT(2025, 1, 1, 0, 30, tzinfo=berlin), "monthly") == D(2024, 12, 1)
    assert floor_boundary(DT(2024, 12, 31, 20, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
                          "monthly") == D(2025, 1, 1)


def test_dst_does_not_move_bounds():
    # Bounds are calendar days in UTC: a month spanning a DST change still has exact midnights.
    s = spec(interval="daily", premake=0)
    parts = plan_partitions(s, "timestamp with time zone", DT(2025, 3, 29, tzinfo=UTC), None,
                            DT(2025, 3, 31, tzinfo=UTC))
    ranges = [p for p in parts if p.kind == "range"]
    assert [p.lower for p in ranges] == [DT(2025, 3, d, tzinfo=UTC) for d in (29, 30, 31)]
    for p in ranges:
        assert p.upper - p.lower == datetime.timedelta(days=1)


def test_key_kinds():
    assert range_key_kind("timestamp(3) with time zone") == "timestamptz"
    assert range_key_kind("timestamp without time zone") == "timestamp"
    assert range_key_kind("date") == "date"
    assert range_key_kind("integer") is None and key_kind("integer") == "integer"
    assert key_kind("character varying(20)") == "varchar"
    assert key_kind("numeric(10,2)") is None


# ---------------------------------------------------------------- planning range partitions

NOW = DT(2025, 5, 10, 12, 0, tzinfo=UTC)


def names(parts):
    return [p.suffix for p in parts]


def test_premake_counts_beyond_the_current_period():
    parts = plan_partitions(spec(interval="quarterly", premake=2), "date", D(2025, 1, 3), D(2025, 5, 1), NOW)
    assert names(parts) == ["2025_q1", "2025_q2", "2025_q3", "2025_q4", "default"]
    assert parts[-1].kind == "default" and parts[-1].name == "revenues_default"


def test_premake_zero_ends_with_the_current_period():
    parts = plan_partitions(spec(interval="yearly", premake=0, default_partition=False), "date",
                            D(2023, 6, 1), D(2025, 1, 1), NOW)
    assert names(parts) == ["2023", "2024", "2025"]


def test_partitions_are_contiguous():
    parts = plan_partitions(spec(interval="weekly", default_partition=False), "date", D(2024, 11, 1), None, NOW)
    for a, b in zip(parts, parts[1:]):
        assert a.upper == b.lower


def test_value_types_follow_the_key():
    p_date = plan_partitions(spec(premake=0), "date", None, None, NOW)[0]
    p_ts = plan_partitions(spec(premake=0), "timestamp without time zone", None, None, NOW)[0]
    p_tz = plan_partitions(spec(premake=0), "timestamp with time zone", None, None, NOW)[0]
    assert (p_date.lower, p_date.upper) == (D(2025, 5, 1), D(2025, 6, 1))
    assert (p_ts.lower, p_ts.upper) == (DT(2025, 5, 1), DT(2025, 6, 1))
    assert (p_tz.lower, p_tz.upper) == (DT(2025, 5, 1, tzinfo=UTC), DT(2025, 6, 1, tzinfo=UTC))
    assert p_tz.as_dict() == dict(name="revenues_2025_05", suffix="2025_05", kind="range",
                                  lower="2025-05-01T00:00:00+00:00", upper="2025-06-01T00:00:00+00:00")


def test_empty_table_uses_now():
    parts = plan_partitions(spec(premake=1), "date", None, None, NOW)
    assert names(parts) == ["2025_05", "2025_06", "default"]


def test_min_far_in_the_past():
    parts = plan_partitions(spec(interval="yearly", premake=1), "date", D(1999, 7, 4), None, NOW)
    assert names(parts)[0] == "1999" and names(parts)[-2] == "2026" and len(parts) == 2026 - 1999 + 1 + 1


def test_future_rows_wait_in_the_default_partition():
    """The layout ends premake periods after now: a far-future key does not widen it (issue 9: a row
    dated 2099 made 290 empty partitions, one in year 3000 made phase 1 refuse)."""
    for far in (DT(2026, 1, 15, 8, 0, tzinfo=UTC), DT(3000, 1, 1, tzinfo=UTC), DT.max.replace(tzinfo=UTC)):
        parts = plan_partitions(spec(premake=1), "timestamp with time zone", DT(2025, 4, 2, tzinfo=UTC), far, NOW)
        assert names(parts) == ["2025_04", "2025_05", "2025_06", "default"]


def test_without_a_default_partition_the_layout_holds_every_key():
    parts = plan_partitions(spec(premake=1, default_partition=False), "timestamp with time zone",
                            DT(2025, 4, 2, tzinfo=UTC), DT(2026, 1, 15, 8, 0, tzinfo=UTC), NOW)
    assert names(parts)[:2] == ["2025_04", "2025_05"] and names(parts)[-1] == "2026_01"
    parts = plan_partitions(spec(premake=0, start="2025-04-01", default_partition=False), "date",
                            D(2025, 2, 1), None, NOW)
    assert names(parts)[0] == "2025_02"


def test_a_key_in_the_last_year_python_writes_ends_at_maxvalue():
    """9999-12-31 (and infinity, which psycopg2 reads as it) has no period end Python can write: the
    last partition is open (MAXVALUE), never a ValueError."""
    parts = plan_partitions(spec(interval="yearly", premake=0, start="9990-01-01", default_partition=False),
                            "date", D(9990, 5, 1), D(9999, 12, 31), D(9990, 6, 1))
    assert names(parts)[-1] == "9999" and (parts[-1].lower, parts[-1].upper) == (D(9999, 1, 1), None)
    assert len(parts) == 10
    assert range_layout(spec(interval="quarterly", premake=1), None, None, D(9999, 11, 1)).end is None


def test_start_earlier_than_the_data():
    parts = plan_partitions(spec(premake=0, start="2025-01-15"), "date", D(2025, 3, 1), None, NOW)
    assert names(parts)[0] == "2025_01"


def test_start_later_than_the_data_bounds_the_layout():
    """start moves the first partition later too: earlier keys go to the default partition."""
    parts = plan_partitions(spec(premake=0, start="2025-04-01"), "date", D(1970, 1, 1), D(2099, 1, 1), NOW)
    assert names(parts) == ["2025_04", "2025_05", "default"]
    layout = range_layout(spec(premake=0, start="2025-04-01"), D(1970, 1, 1), D(2099, 1, 1), NOW)
    assert (layout.first, layout.end, layout.source, layout.count) == (D(2025, 4, 1), D(2025, 6, 1), "start", 2)
    assert layout.bounds("timestamptz") == (DT(2025, 4, 1, tzinfo=UTC), DT(2025, 6, 1, tzinfo=UTC))


def test_start_after_now_makes_premake_periods_from_it():
    assert names(plan_partitions(spec(premake=1, start="2026-01-01"), "date", None, None, NOW)) == [
        "2026_01", "2026_02", "default"]


def test_data_only_in_the_future_gets_the_current_period_and_premake():
    parts = plan_partitions(spec(premake=0), "date", D(2025, 8, 1), D(2025, 8, 2), NOW)
    assert names(parts) == ["2025_05", "default"]
    assert range_layout(spec(premake=0), D(2025, 8, 1), D(2025, 8, 2), NOW).source == "now"


def test_now_may_be_a_date_or_naive():
    assert names(plan_partitions(spec(premake=0), "date", None, None, D(2025, 5, 10))) == ["2025_05", "default"]
    assert names(plan_partitions(spec(premake=0), "date", None, None, DT(2025, 5, 10))) == ["2025_05", "default"]


def test_too_many_partitions_are_refused_naming_the_fix():
    with pytest.raises(PartitioningError, match=r"more than max_partitions \(1000\)") as e:
        plan_partitions(spec(interval="monthly"), "date", D(1930, 1, 1), None, NOW)
    assert e.value.msg.startswith("public.revenues: the monthly partitions from 1930-01-01 to 2025-10-01 would be "
                                  "1149, more than max_partitions (1000): the span starts at the earliest key, "
                                  "1930-01-01. Set start:") and "at most %d" % MAX_PARTITIONS in e.value.msg
    assert len(plan_partitions(spec(interval="monthly", max_partitions=1200), "date", D(1930, 1, 1), None, NOW)) \
        == 1150
    with pytest.raises(PartitioningError, match="the span starts at start 1990-01-01"):
        plan_partitions(spec(interval="daily", start="1990-01-01"), "date", None, None, NOW)
    with pytest.raises(PartitioningError, match="without a default partition the span must also hold the latest key "
                                                "3000-01-01"):
        plan_partitions(spec(default_partition=False), "date", D(2025, 1, 1), D(3000, 1, 1), NOW)


def test_range_needs_a_time_key():
    with pytest.raises(PartitioningError, match="date, timestamp or timestamptz key; occurred_at is integer"):
        plan_partitions(spec(), "integer", 1, 5, NOW)


def test_long_table_names_are_shortened_deterministically():
    long = "a" * 60
    parts = plan_partitions(spec(table=long, interval="daily", premake=1), "date", None, None, NOW)
    assert all(len(p.name.encode()) <= 63 for p in parts)
    assert parts[0].name.endswith("_2025_05_10") and parts[-1].name.endswith("_default")
    assert len(set(p.name for p in parts)) == len(parts)
    again = plan_partitions(spec(table=long, interval="daily", premake=1), "date", None, None, NOW)
    assert [p.name for p in again] == [p.name for p in parts]


# ---------------------------------------------------------------- hash and list

@pytest.mark.parametrize("n, first, last", [(2, "p00", "p01"), (16, "p00", "p15"), (100, "p00", "p99"),
                                            (101, "p000", "p100"), (1024, "p0000", "p1023")])
def test_hash_widths(n, first, last):
    parts = plan_partitions(normalize_spec(dict(table="h", partition_key="org_id", strategy="hash",
                                                partitions=n)), "integer", None, None, NOW)
    assert len(parts) == n and parts[0].suffix == first and parts[-1].suffix == last
    assert {p.modulus for p in parts} == {n} and [p.remainder for p in parts] == list(range(n))
    assert parts[0].name == "h_" + first


def test_list_partitions():
    s = normalize_spec(dict(table="sales.orders", partition_key="region", strategy="list",
                            values={"eu": ["de", "fr"], "us": ["us"]}))
    parts = plan_partitions(s, "text", None, None, NOW)
    assert [(p.name, p.kind, p.values) for p in parts] == [
        ("orders_eu", "list", ["de", "fr"]), ("orders_us", "list", ["us"]), ("orders_default", "default", [])]


# ---------------------------------------------------------------- bound clauses on a real server

def text(clause, conn):
    return clause.as_string(conn)


def test_bound_clause_texts(conn):
    tz = plan_partitions(spec(premake=0, default_partition=False), "timestamp with time zone", None, None, NOW)[0]
    assert text(bound_clause(tz, "timestamp with time zone"), conn) == \
        "FOR VALUES FROM ('2025-05-01 00:00:00+00'::timestamptz) TO ('2025-06-01 00:00:00+00'::timestamptz)"
    d = plan_partitions(spec(premake=0, default_partition=False), "date", None, None, NOW)[0]
    assert text(bound_clause(d, "date"), conn) == "FOR VALUES FROM ('2025-05-01'::date) TO ('2025-06-01'::date)"
    ts = plan_partitions(spec(premake=0, default_partition=False), "timestamp(6) without time zone",
                         None, None, NOW)[0]
    assert text(bound_clause(ts, "timestamp(6) without time zone"), conn) == \
        "FOR VALUES FROM ('2025-05-01 00:00:00'::timestamp) TO ('2025-06-01 00:00:00'::timestamp)"
    assert text(bound_clause(Partition("h_p01", "p01", "hash", modulus=4, remainder=1), "integer"), conn) == \
        "FOR VALUES WITH (MODULUS 4, REMAINDER 1)"
    assert text(bound_clause(Partition("o_eu", "eu", "list", values=["de", "it's"]), "text"), conn) == \
        "FOR VALUES IN ('de'::text, 'it''s'::text)"
    assert text(bound_clause(Partition("o_default", "default", "default"), "text"), conn) == "DEFAULT"


def _create(conn, table, key_type, parts, by="RANGE"):
    """``table`` (id, k) partitioned ``by`` its key k with ``parts``; returns a cursor on ``conn``."""
    cur = conn.cursor()
    cur.execute(sql.SQL("CREATE TABLE {} (id int, k {} NOT NULL) PARTITION BY {} (k)").format(
        sql.Identifier(table), sql.SQL(key_type), sql.SQL(by)))  # key_type, by: constants of this test
    for p in parts:
        cur.execute(sql.SQL("CREATE TABLE {} PARTITION OF {} {}").format(
            sql.Identifier(p.name), sql.Identifier(table), bound_clause(p, key_type)))
    return cur


@pytest.mark.parametrize("server_tz", ["America/New_York", "Asia/Kolkata", "Pacific/Chatham"])
def test_timestamptz_bounds_do_not_depend_on_the_session_time_zone(conn, server_tz):
    cur = conn.cursor()
    cur.execute("SET TimeZone = %s", (server_tz,))  # a session NOT in UTC writes the bounds
    parts = plan_partitions(spec(table="r", interval="quarterly", premake=0), "timestamp with time zone",
                            DT(2024, 12, 31, tzinfo=UTC), None, DT(2025, 1, 1, tzinfo=UTC))
    _create(conn, "r", "timestamptz", parts)
    cur.execute("SET TimeZone = 'UTC'")
    cur.execute("INSERT INTO r VALUES (1, '2024-12-31 23:59:59.999999+00'), (2, '2025-01-01 00:00:00+00'), "
                "(3, '2025-03-31 23:59:59+00'), (4, '2025-04-01 00:00:00+00')")
    cur.execute("SELECT id, tableoid::regclass::text FROM r ORDER BY id")
    assert cur.fetchall() == [(1, "r_2024_q4"), (2, "r_2025_q1"), (3, "r_2025_q1"), (4, "r_default")]


def test_date_and_timestamp_edges_on_the_server(conn):
    parts = plan_partitions(spec(table="d", interval="monthly", premake=0), "date",
                            D(2024, 2, 29), None, D(2024, 3, 1))
    cur = _create(conn, "d", "date", parts)
    cur.execute("INSERT INTO d VALUES (1, '2024-02-29'), (2, '2024-03-01'), (3, '2024-04-01')")
    cur.execute("SELECT id, tableoid::regclass::text FROM d ORDER BY id")
    assert cur.fetchall() == [(1, "d_2024_02"), (2, "d_2024_03"), (3, "d_default")]
    parts = plan_partitions(spec(table="w", interval="weekly", premake=0), "timestamp without time zone",
                            DT(2020, 12, 31, 23, 0), None, DT(2021, 1, 4, 0, 0))
    cur = _create(conn, "w", "timestamp", parts)
    cur.execute("INSERT INTO w VALUES (1, '2021-01-03 23:59:59'), (2, '2021-01-04 00:00:00')")
    cur.execute("SELECT id, tableoid::regclass::text FROM w ORDER BY id")
    assert cur.fetchall() == [(1, "w_2020_w53"), (2, "w_2021_w01")]


def test_hash_and_list_bounds_on_the_server(conn):
    s = normalize_spec(dict(table="h", partition_key="k", strategy="hash", partitions=3))
    cur = _create(conn, "h", "bigint", plan_partitions(s, "bigint", None, None, NOW), by="HASH")
    cur.execute("INSERT INTO h (k) SELECT generate_series(1, 300)")
    cur.execute("SELECT count(DISTINCT tableoid) FROM h")
    assert cur.fetchone()[0] == 3
    s = normalize_spec(dict(table="l", partition_key="k", strategy="list", values={"low": [1, 2], "high": ["3"]}))
    cur = _create(conn, "l", "integer", plan_partitions(s, "integer", None, None, NOW), by="LIST")
    cur.execute("INSERT INTO l (k) VALUES (1), (3), (7)")
    cur.execute("SELECT k, tableoid::regclass::text FROM l ORDER BY k")
    assert cur.fetchall() == [(1, "l_low"), (3, "l_high"), (7, "l_default")]


# ---------------------------------------------------------------- integer keys by a numeric width

def wspec(**kw):
    raw = dict(table="events", partition_key="id", interval=1000, premake=1)
    raw.update(kw)
    return normalize_spec(raw)


def test_width_edges_and_names():
    assert floor_boundary(0, 1000) == 0 and floor_boundary(999, 1000) == 0 and floor_boundary(1000, 1000) == 1000
    assert floor_boundary(-1, 1000) == -1000 and next_boundary(-1000, 1000) == 0
    assert suffix_for(2000, 1000) == "2000" and suffix_for(-1000, 1000) == "m1000"


def test_width_plan_covers_min_to_max_plus_premake():
    parts = plan_partitions(wspec(), "bigint", 1, 2500, NOW)
    assert [(p.suffix, p.lower, p.upper) for p in parts] == [
        ("0", 0, 1000), ("1000", 1000, 2000), ("2000", 2000, 3000), ("3000", 3000, 4000),
        ("default", None, None)]
    assert names(plan_partitions(wspec(premake=0, default_partition=False), "integer", None, None, NOW)) == ["0"]
    assert names(plan_partitions(wspec(premake=0, start=-1500), "integer", 10, 20, NOW))[:2] == ["m2000", "m1000"]


def test_width_at_the_end_of_the_type_becomes_maxvalue():
    top = 2 ** 31 - 1
    parts = plan_partitions(wspec(interval=1000000000, premake=3, default_partition=False), "integer",
                            top - 5, top, NOW)
    assert [(p.lower, p.upper) for p in parts] == [(2000000000, None)]


def test_width_refuses_time_keys_and_vice_versa():
    with pytest.raises(PartitioningError, match="numeric interval .1000. needs a smallint, integer or bigint key"):
        plan_partitions(wspec(), "date", None, None, NOW)
    with pytest.raises(PartitioningError, match="partitions of width 1 from 0 to 20002 would be 20002, more than max_partitions"):
        plan_partitions(wspec(interval=1), "bigint", 0, 20000, NOW)


def test_width_bounds_on_the_server(conn):
    parts = plan_partitions(wspec(table="ev", interval=1000000000, premake=1), "integer", -5, 2 ** 31 - 1, NOW)
    cur = _create(conn, "ev", "integer", parts)
    assert text(bound_clause(parts[-2], "integer"), conn) == "FOR VALUES FROM (2000000000::integer) TO (MAXVALUE)"
    cur.execute("INSERT INTO ev VALUES (1, -5), (2, 0), (3, 999999999), (4, 2147483647)")
    cur.execute("SELECT id, tableoid::regclass::text FROM ev ORDER BY id")
    assert cur.fetchall() == [(1, "ev_m1000000000"), (2, "ev_0"), (3, "ev_0"), (4, "ev_2000000000")]


# ---------------------------------------------------------------- existing partitions read back

@pytest.mark.parametrize("key_type, cast, interval", [
    ("timestamp with time zone", "timestamptz", "quarterly"), ("timestamp without time zone", "timestamp", "weekly"),
    ("date", "date", "monthly"), ("bigint", "bigint", 1000)])
def test_read_partitions_gives_back_the_plan(conn, key_type, cast, interval):
    conn.cursor().execute("SET TimeZone = 'Asia/Kolkata'")   # the text of the bounds is local; values are not
    s = spec(table="rp", interval=interval, premake=2)
    lo, hi = (1, 2500) if interval == 1000 else (D(2024, 12, 30), D(2025, 2, 1))
    planned = plan_partitions(s, key_type, lo, hi, NOW if interval != 1000 else None)
    _create(conn, "rp", cast, planned)
    got = read_partitions(Session(conn), "public", "rp", key_type)
    assert sorted(got, key=attrgetter("name")) == sorted(planned, key=attrgetter("name"))
    assert missing_partitions(planned, got) == ([], [])


def test_read_hash_and_list_partitions(conn):
    cur = conn.cursor()
    cur.execute("CREATE TABLE h (k text NOT NULL) PARTITION BY HASH (k)")
    cur.execute("CREATE TABLE h_p01 PARTITION OF h FOR VALUES WITH (MODULUS 2, REMAINDER 1)")
    cur.execute("CREATE TABLE l (k text NOT NULL) PARTITION BY LIST (k)")
    cur.execute("CREATE TABLE l_eu PARTITION OF l FOR VALUES IN ('de', 'it''s, ok')")
    cur.execute("CREATE TABLE l_default PARTITION OF l DEFAULT")
    assert read_partitions(Session(conn), "public", "h", "text") == [
        Partition("h_p01", "p01", "hash", modulus=2, remainder=1)]
    assert read_partitions(Session(conn), "public", "l", "text") == [
        Partition("l_default", "default", "default"), Partition("l_eu", "eu", "list", values=["de", "it's, ok"])]


def test_missing_partitions_skips_existing_and_reports_overlaps():
    s = spec(table="r", premake=2)
    planned = plan_partitions(s, "date", D(2025, 4, 1), None, NOW)   # 04, 05, 06, 07, default
    existing = [planned[0], Partition("r_custom", "custom", "range", lower=D(2025, 5, 15), upper=D(2025, 6, 15)),
                Partition("r_other_default", "other_default", "default")]
    to_create, conflicts = missing_partitions(planned, existing)
    assert [p.suffix for p in to_create] == ["2025_07"]
    assert conflicts == [
        "partition r_2025_05 [2025-05-01, 2025-06-01) overlaps the existing partition r_custom "
        "[2025-05-15, 2025-06-15); not created.",
        "partition r_2025_06 [2025-06-01, 2025-07-01) overlaps the existing partition r_custom "
        "[2025-05-15, 2025-06-15); not created."]
    unbounded = [Partition("r_old", "old", "range", lower=None, upper=D(2025, 5, 1))]
    assert [p.suffix for p in missing_partitions(planned, unbounded)[0]] == ["2025_05", "2025_06", "2025_07",
                                                                             "default"]


def test_parse_bound_refuses_what_it_cannot_read():
    with pytest.raises(PartitioningError, match="multi-column"):
        parse_bound("t", "t_x", "FOR VALUES FROM (1, 2) TO (3, 4)", "integer")
    with pytest.raises(PartitioningError, match="Cannot read the bound"):
        parse_bound("t", "t_x", "something else", "integer")


# ---------------------------------------------------------------- retention and routing

def test_retention_cutoff_counts_months_back():
    assert retention_cutoff(spec(retention=12), NOW) == D(2024, 5, 10)
    assert retention_cutoff(spec(retention=1), D(2024, 3, 31)) == D(2024, 2, 29)   # clamped, leap year
    assert retention_cutoff(spec(retention=5), D(2025, 3, 31)) == D(2024, 10, 31)
    assert retention_cutoff(spec(), NOW) is None


def test_expired_partitions():
    s = spec(interval="quarterly", retention=12)
    parts = plan_partitions(s, "timestamp with time zone", D(2023, 11, 1), None, NOW)
    assert [p.suffix for p in expired_partitions(s, parts, NOW)] == ["2023_q4", "2024_q1"]   # 2024_q2 ends 07-01
    assert expired_partitions(spec(interval="quarterly"), parts, NOW) == []


def test_partition_for():
    assert partition_for(spec(interval="quarterly"), DT(2025, 3, 31, 23, 59, tzinfo=UTC)) == "revenues_2025_q1"
    assert partition_for(spec(interval="weekly"), D(2021, 1, 3)) == "revenues_2020_w53"
    ls = normalize_spec(dict(table="o", partition_key="r", strategy="list", values={"eu": ["de"], "n": [1]}))
    assert (partition_for(ls, "de"), partition_for(ls, "1"), partition_for(ls, "xx")) == ("o_eu", "o_n", "o_default")
    assert partition_for(normalize_spec(dict(table="h", partition_key="k", strategy="hash", partitions=2)), 1) is None


def test_blocked_by_default_finds_rows_a_new_partition_would_need(conn):
    s = spec(table="b", premake=0)
    planned = plan_partitions(s, "timestamp with time zone", None, None, NOW)    # b_2025_05, b_default
    _create(conn, "b", "timestamptz", planned)
    conn.cursor().execute("INSERT INTO b VALUES (1, '2025-07-31 23:59:59+00'), (2, '2025-09-01 00:00:00+00')")
    later = plan_partitions(s, "timestamp with time zone", D(2025, 5, 1), None, DT(2025, 10, 2, tzinfo=UTC))
    new, _unused = missing_partitions(later, read_partitions(Session(conn), "public", "b", "timestamp with time zone"))
    blocked = blocked_by_default(Session(conn), "public", "b_default", "k", new, "timestamp with time zone")
    assert [p.suffix for p in new] == ["2025_06", "2025_07", "2025_08", "2025_09", "2025_10"]
    assert [p.suffix for p in blocked] == ["2025_07", "2025_09"]


# ---------------------------------------------------------------- properties over many random values

@pytest.mark.parametrize("interval", ["daily", "weekly", "monthly", "quarterly", "yearly", 7, 1000])
def test_every_value_lies_in_its_own_period(interval):
    import random
    rnd = random.Random(42)
    seen = {}
    for _unused in range(3000):
        if isinstance(interval, int):
            v = rnd.randint(-10 ** 6, 10 ** 6)
            lo = floor_boundary(v, interval)
            assert lo <= v < next_boundary(lo, interval)
        else:
            v = DT(1990, 1, 1) + datetime.timedelta(seconds=rnd.randint(0, 60 * 365 * 86400))
            lo = floor_boundary(v, interval)
            assert DT(lo.year, lo.month, lo.day) <= v < DT(*next_boundary(lo, interval).timetuple()[:3])
            assert floor_boundary(lo, interval) == lo                     # a boundary is its own floor
            assert floor_boundary(next_boundary(lo, interval) - datetime.timedelta(days=1), interval) == lo
        suffix = suffix_for(lo, interval)
        assert seen.setdefault(suffix, lo) == lo                          # one suffix per period


def test_expired_partitions_compare_instants_not_days():
    """A bound inside a day (a table partitioned by other means) is compared as the instant it is:
    a partition ending at noon of the cutoff day holds rows newer than the cutoff's midnight."""
    s = spec(interval="monthly", retention=12)                 # cutoff 2024-05-10
    noon = datetime.datetime(2024, 5, 10, 12, 0)
    parts = [Partition(name="a", suffix="a", kind="range", lower=datetime.datetime(2024, 4, 1), upper=noon),
             Partition(name="b", suffix="b", kind="range", lower=datetime.datetime(2024, 3, 1),
                       upper=datetime.datetime(2024, 5, 10))]
    assert [p.name for p in expired_partitions(s, parts, NOW)] == ["b"]
    aware = [Partition(name="c", suffix="c", kind="range", lower=None,
                       upper=datetime.datetime(2024, 5, 10, 0, 0, 1, tzinfo=datetime.timezone.utc))]
    assert expired_partitions(s, aware, NOW) == []


def test_sparse_start_names_where_the_rows_begin():
    s = spec(interval="quarterly", premake=1)
    layout = range_layout(s, D(1970, 1, 1), D(2025, 8, 1), NOW)
    assert sparse_start(s, layout, DT(2024, 2, 3, tzinfo=UTC)) == (D(2024, 1, 1), 216)
    assert sparse_start(s, layout, D(1972, 1, 1)) is None                  # the rows begin near the first period
    assert sparse_start(s, layout, None) is None                            # never analyzed
    started = range_layout(spec(interval="quarterly", start="1970-01-01"), D(1970, 1, 1), None, NOW)
    assert sparse_start(s, started, D(2024, 1, 1)) is None                  # start chose it: the operator's call
