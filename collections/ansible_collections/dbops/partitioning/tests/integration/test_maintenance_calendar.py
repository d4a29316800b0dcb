"""The maintenance functions in SQL and module_utils/bounds.py agree: names and bounds of calendar
partitions, retention cutoffs, which partitions expire, what premake plans.

Property-style: every day of a span that holds month, quarter, year and ISO-week edges and two
leap days, plus a seeded sample of dates over three centuries, for every interval and every
calendar key type; names also for long bases (cut with a hash, multibyte characters).
"""
import datetime
import random
import re

import pytest
from psycopg2 import sql

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import (
    bound_value, floor_boundary, literal, next_boundary, partition_name, plan_range, read_partitions,
    expired_partitions, retention_cutoff, suffix_for)
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import functions
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

D = datetime.date
UTC = datetime.timezone.utc
INTERVALS = ("daily", "weekly", "monthly", "quarterly", "yearly")
KEY_TYPES = {"date": "date", "timestamp": "timestamp without time zone", "timestamptz": "timestamp with time zone"}
BASES = ("revenues", "e" * 40 + "é" * 12, "Sales Ledger")


def _days():
    span = [D(2023, 12, 1) + datetime.timedelta(days=i) for i in range(0, 520)]        # ... 2025-05-03
    edges = [D(1999, 12, 31), D(2000, 1, 1), D(2000, 2, 29), D(2000, 3, 1), D(2020, 12, 28), D(2021, 1, 3),
             D(2026, 12, 28), D(2027, 1, 4), D(2100, 2, 28), D(2100, 3, 1), D(2096, 2, 29)]
    rng = random.Random(8)
    sample = [D(1900, 1, 1) + datetime.timedelta(days=rng.randrange(0, 300 * 365)) for _date in range(400)]
    return span + edges + sample


@pytest.fixture
def session(conn):
    s = Session(conn)
    functions.ensure_functions(s, SqlTemplates.bundled(), "partitioning")
    return s


def _one_literal(value, key_type, conn):
    """The text inside bounds.literal's quotes."""
    return re.match(r"^'(.*)'::", literal(value, key_type).as_string(conn)).group(1)


@pytest.mark.parametrize("interval", INTERVALS)
def test_calendar_names_and_bounds_agree(session, conn, interval):
    days = _days()
    rows = session.query(
        "SELECT d, b, partitioning.calendar_next(b, %(iv)s) AS n, partitioning.calendar_suffix(b, %(iv)s) AS s, "
        "       partitioning.bound_text(b, 'date') AS t_date, partitioning.bound_text(b, 'timestamp') AS t_ts, "
        "       partitioning.bound_text(b, 'timestamptz') AS t_tstz, "
        "       array(SELECT partitioning.partition_name(base, partitioning.calendar_suffix(b, %(iv)s)) "
        "             FROM unnest(%(bases)s::text[]) WITH ORDINALITY x(base, i) ORDER BY i) AS names "
        "FROM (SELECT d, partitioning.calendar_floor(d, %(iv)s) AS b FROM unnest(%(days)s::date[]) d) x",
        dict(iv=interval, days=days, bases=list(BASES)))
    assert len(rows) == len(days)
    for r in rows:
        b = floor_boundary(r["d"], interval)
        assert r["b"] == b, (interval, r["d"])
        assert r["n"] == next_boundary(b, interval), (interval, r["d"])
        assert r["s"] == suffix_for(b, interval), (interval, r["d"])
        assert r["names"] == [partition_name(base, suffix_for(b, interval)) for base in BASES]
        for kind, column in (("date", "t_date"), ("timestamp", "t_ts"), ("timestamptz", "t_tstz")):
            assert r[column] == _one_literal(bound_value(b, kind), KEY_TYPES[kind], conn), (kind, r["d"])


def test_long_names_are_cut_alike(session):
    bases = ["x" * n for n in range(50, 70)] + ["ü" * n for n in range(25, 40)] + ["a" * 62 + "€"]
    got = session.query("SELECT b, partitioning.derived_name(b, '_2025_q1') AS n FROM unnest(%s::text[]) b", (bases,))
    for r in got:
        assert r["n"] == partition_name(r["b"], "2025_q1")
        assert len(r["n"].encode("utf-8")) <= 63


def test_retention_cutoffs_agree(session):
    days = _days()
    for months in (1, 2, 3, 11, 12, 13, 24, 25, 120):
        spec = normalize_spec(dict(table="t", partition_key="k", interval="monthly", retention=months))
        rows = session.query("SELECT d, partitioning.retention_cutoff(d, %s) AS c FROM unnest(%s::date[]) d",
                             (months, days))
        for r in rows:
            assert r["c"] == retention_cutoff(spec, r["d"]), (months, r["d"])


def _nows():
    """Instants at and around the edges (UTC), leap days, and a seeded sample."""
    base = [datetime.datetime(2024, 2, 29, 12, 0, tzinfo=UTC), datetime.datetime(2024, 3, 1, 0, 0, tzinfo=UTC),
            datetime.datetime(2024, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), datetime.datetime(2025, 1, 1, tzinfo=UTC),
            datetime.datetime(2025, 3, 31, 23, 59, 59, tzinfo=UTC), datetime.datetime(2025, 4, 1, tzinfo=UTC),
            datetime.datetime(2025, 6, 30, 22, 30, tzinfo=datetime.timezone(datetime.timedelta(hours=-5))),
            datetime.datetime(2025, 12, 29, 0, 0, tzinfo=UTC)]
    rng = random.Random(15)
    return base + [datetime.datetime(2024, 1, 1, tzinfo=UTC) + datetime.timedelta(minutes=rng.randrange(0, 2 * 525600))
                   for _now in range(12)]


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_premake_plans_what_bounds_plans(session, conn, kind):
    """On an empty table the database plans exactly bounds.plan_range from now's period through
    premake periods after it: same names, same bounds."""
    cur = conn.cursor()
    cur.execute(sql.SQL("CREATE TABLE public.ev (k {} NOT NULL) PARTITION BY RANGE (k)").format(
        sql.SQL(KEY_TYPES[kind])))
    for interval in INTERVALS:
        spec = normalize_spec(dict(table="public.ev", partition_key="k", interval=interval, premake=3))
        for now in _nows():
            rows = session.query("SELECT partition_name, lower_bound, upper_bound, status FROM "
                                 "partitioning.premake_plan('public.ev', 'ev', %s, 3, %s)", (interval, now))
            first = floor_boundary(now, interval)
            end = first
            for _period in range(4):
                end = next_boundary(end, interval)
            want = plan_range(spec, KEY_TYPES[kind], first, end)
            assert [r["partition_name"] for r in rows] == [p.name for p in want], (interval, now)
            assert [(r["lower_bound"], r["upper_bound"]) for r in rows] == [
                (_one_literal(p.lower, KEY_TYPES[kind], conn), _one_literal(p.upper, KEY_TYPES[kind], conn))
                for p in want], (interval, now)
            assert set(r["status"] for r in rows) == {"missing"}


@pytest.mark.parametrize("kind", sorted(KEY_TYPES))
def test_retention_expires_what_bounds_expires(session, conn, kind):
    """Monthly partitions 2023-01 .. 2025-12 (one ending inside a day): the database's
    retention_plan and bounds.expired_partitions pick the same ones for every now and retention."""
    cur = conn.cursor()
    cur.execute(sql.SQL("CREATE TABLE public.ev (k {} NOT NULL) PARTITION BY RANGE (k)").format(
        sql.SQL(KEY_TYPES[kind])))
    spec = normalize_spec(dict(table="public.ev", partition_key="k", interval="monthly"))
    for p in plan_range(spec, KEY_TYPES[kind], D(2023, 1, 1), D(2026, 1, 1)):
        cur.execute(sql.SQL("CREATE TABLE {} PARTITION OF public.ev FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier("public", p.name), literal(p.lower, KEY_TYPES[kind]), literal(p.upper, KEY_TYPES[kind])))
    if kind != "date":       # a partition partitioned by other means, ending at noon
        cur.execute("CREATE TABLE public.ev_odd PARTITION OF public.ev FOR VALUES FROM ('2026-01-01 00:00:00+00') "
                    "TO ('2026-01-10 12:00:00+00')")
    existing = read_partitions(session, "public", "ev", KEY_TYPES[kind])
    for months in (1, 3, 12, 13, 24):
        for now in _nows() + [datetime.datetime(2027, 1, 10, 6, tzinfo=UTC), datetime.datetime(2027, 1, 11, tzinfo=UTC)]:
            spec_r = normalize_spec(dict(table="public.ev", partition_key="k", interval="monthly", retention=months))
            got = [r["partition_name"] for r in session.query(
                "SELECT partition_name FROM partitioning.retention_plan('public.ev', %s, %s)", (months, now))]
            assert got == [p.name for p in expired_partitions(spec_r, existing, now)], (months, now)
