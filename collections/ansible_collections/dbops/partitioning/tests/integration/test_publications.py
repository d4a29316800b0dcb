"""Publications and their subscribers (HP12, HP19), with a real subscriber where it matters.

The regressions: a publication with a row filter or a column list made the switchover fail
after the whole backfill (publish_via_partition_root false), or, with it true, every UPDATE and
DELETE fail after the swap (the column list did not cover the replica identity, which grew by
the partition key); a FOR ALL TABLES publication published the state schema and the twin, and a
native subscriber stopped. Now phase 1 finds each of these before anything changes and names
the fix; with the fix applied, writes and replication keep working across the switchover.

The subscriber is the suite's server of the same version; the publisher a server of that
version with wal_level = logical, started for this module (the others keep wal_level = replica).
"""
import contextlib
import os
import time
import uuid

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import swap

from ..helpers.phase3_setup import switch_over_by_phases, verify_by_phases
from ..helpers.servers import running_server
from ..helpers.switchover import swap_knobs
from .test_preflight import snapshot

RANGE = dict(table="public.revenues", partition_key="occurred_at", interval="monthly", premake=0)
TABLE = """
CREATE TABLE public.revenues (id bigint PRIMARY KEY, occurred_at timestamptz NOT NULL, amount bigint NOT NULL);
INSERT INTO public.revenues SELECT g, timestamptz '2025-01-01 00:00+00' + g * interval '1 hour', g
  FROM generate_series(1, 300) g;
"""
# The subscriber's copy: what it receives, with the key nullable (a column list may leave it out).
SUBSCRIBER_TABLE = "CREATE TABLE public.revenues (id bigint PRIMARY KEY, occurred_at timestamptz, amount bigint)"
WAIT_S = 90


def sql(conn, text, args=None):
    cur = conn.cursor()
    cur.execute(text, args)
    return cur.fetchall() if cur.description else None


def phase1(conn, raw=None):
    """Phase 1 (of ``raw``, by default RANGE) as an operator runs it; returns its result or the refusal."""
    raw = RANGE if raw is None else raw
    session = Session(conn)
    try:
        return prepare_table(session, SqlTemplates.bundled(), normalize_spec(dict(raw)), "partitioning")
    except PartitioningError as e:
        return e


@pytest.fixture(scope="module")
def publisher(pg, pg_base_dir):
    """A server of ``pg``'s version that can publish (wal_level = logical)."""
    with running_server(pg.bindir, os.path.join(pg_base_dir, "pub%d-%s" % (pg.major, uuid.uuid4().hex[:6])),
                        "publisher%d" % pg.major, settings={"wal_level": "logical"}) as server:
        yield server


@pytest.fixture
def pub_db(publisher, new_database):
    """A fresh database on the publisher for one test."""
    return new_database(publisher, "p_")


@contextlib.contextmanager
def subscribed(publisher, pub_db, pg, db, publication):
    """``db`` on the suite's server subscribes to ``publication`` of ``pub_db``; yields the
    subscriber's connection and the subscription's name once the initial copy is done. The
    subscription (and its slot on the publisher) is dropped after."""
    sub = pg.connect(db)
    name = "s_" + uuid.uuid4().hex[:10]
    sql(sub, SUBSCRIBER_TABLE)
    sql(sub, "CREATE SUBSCRIPTION %s CONNECTION 'host=%s port=%d user=postgres dbname=%s' PUBLICATION %s"
        % (name, publisher.host, publisher.port, pub_db, publication))
    try:
        wait_for(sub, "SELECT bool_and(srsubstate = 'r') FROM pg_subscription_rel", True)
        yield sub, name
    finally:
        sql(sub, "DROP SUBSCRIPTION %s" % name)
        sub.close()


@contextlib.contextmanager
def replicated(publisher, pub_db, pg, db, publication, create_publication):
    """On the publisher: the table (TABLE) and ``create_publication``, which creates
    ``publication``; ``db`` subscribed to it. Yields the publisher's connection, the subscriber's
    and the subscription's name, once the initial copy is done; all closed or dropped after."""
    with contextlib.closing(publisher.connect(pub_db)) as pub:
        sql(pub, TABLE + create_publication)
        with subscribed(publisher, pub_db, pg, db, publication) as (sub, name):
            yield pub, sub, name


def refused_changing_nothing(conn):
    """Phase 1's refusal, checked to have changed nothing."""
    before = snapshot(conn)
    refused = phase1(conn)
    assert snapshot(conn) == before
    return refused


def wait_for(conn, query, expected):
    """Poll ``query`` until it returns ``expected`` (replication is asynchronous): its value, or its
    row of several; the last one read."""
    deadline = time.monotonic() + WAIT_S
    while True:
        row = sql(conn, query)[0]
        value = row[0] if len(row) == 1 else tuple(row)
        if value == expected or time.monotonic() > deadline:
            return value
        time.sleep(0.1)


def replicates_writes_after_the_switchover(pub, sub, where="true"):
    """The application's INSERT, UPDATE (also of the partition key) and DELETE on the switched table
    work, and the subscriber ends with the publisher's rows that match ``where``."""
    sql(pub, "INSERT INTO public.revenues VALUES (2000, timestamptz '2025-01-20 00:00+00', 5);"
             "UPDATE public.revenues SET amount = amount + 1 WHERE id <= 20;"
             "UPDATE public.revenues SET occurred_at = occurred_at + interval '40 days' WHERE id = 21;"
             "DELETE FROM public.revenues WHERE id = 22;")
    rows = "SELECT count(*), sum(amount) FROM public.revenues WHERE %s" % where
    expected = sql(pub, rows)[0]
    assert wait_for(sub, rows, expected) == expected
    assert sql(sub, "SELECT occurred_at FROM public.revenues WHERE id = 21") == \
        sql(pub, "SELECT occurred_at FROM public.revenues WHERE id = 21")


@pytest.mark.parametrize("create_publication, problem, fix, published, where", [
    # the filter's column is in the replica identity (else PostgreSQL refuses UPDATE already)
    pytest.param(
        "CREATE PUBLICATION revenues_pub FOR TABLE public.revenues WHERE (id > 10);",
        "public.revenues: publication revenues_pub publishes it with a row filter WHERE (id > 10), which "
        "PostgreSQL allows on a partitioned table only with publish_via_partition_root = true: the "
        "switchover would fail (HP19). Run ALTER PUBLICATION revenues_pub SET (publish_via_partition_root = "
        "true) (plain tables are published as before; partitioned tables in revenues_pub are then published "
        "under their own name, as this one will be).",
        "ALTER PUBLICATION revenues_pub SET (publish_via_partition_root = true)",
        ("revenues", "(id > 10)"), "id > 10",
        id="a-row-filter-without-publish-via-partition-root"),
    pytest.param(
        "CREATE PUBLICATION revenues_pub FOR TABLE public.revenues (id, amount) WITH (publish_via_partition_root = true);",
        "public.revenues: publication revenues_pub publishes the column list (id, amount) and every UPDATE "
        "and DELETE; on the partitioned table the replica identity is (id, occurred_at), which the list does "
        "not cover, so from the switchover on every UPDATE and DELETE of the table would fail (HP19). Add "
        "occurred_at to the list (and to the subscribers' table if it lacks it), in one transaction: BEGIN; "
        "ALTER PUBLICATION revenues_pub DROP TABLE public.revenues; ALTER PUBLICATION revenues_pub ADD TABLE "
        "public.revenues (id, amount, occurred_at); COMMIT;",
        "BEGIN; ALTER PUBLICATION revenues_pub DROP TABLE public.revenues; ALTER PUBLICATION "
        "revenues_pub ADD TABLE public.revenues (id, amount, occurred_at); COMMIT;",
        ("revenues", None), "true",
        id="a-column-list-without-the-partition-key"),
])
def test_a_publication_the_partitioned_table_breaks_is_refused_and_with_the_fix_writes_and_replication_work(
        publisher, pub_db, pg, db, create_publication, problem, fix, published, where):
    with replicated(publisher, pub_db, pg, db, "revenues_pub", create_publication) as (pub, sub, _name):
        assert refused_changing_nothing(pub).details["problems"] == [problem]
        sql(pub, fix)

        assert switch_over_by_phases(Session(pub), RANGE)["phase"] == "switched"
        assert sql(pub, "SELECT prrelid::regclass::text, pg_get_expr(prqual, prrelid) FROM pg_publication_rel") \
            == [published]
        replicates_writes_after_the_switchover(pub, sub, where)
        assert sql(sub, "SELECT count(*) FROM public.revenues WHERE NOT (%s)" % where) == [(0,)]


def test_a_publication_altered_after_phase1_is_refused_by_the_switchover_with_nothing_changed(conn):
    sql(conn, TABLE + "CREATE PUBLICATION revenues_pub FOR TABLE public.revenues WHERE (id > 10) "
                      "WITH (publish_via_partition_root = true);")
    session = Session(conn)
    verify_by_phases(session, RANGE)
    sql(conn, "ALTER PUBLICATION revenues_pub SET (publish_via_partition_root = false)")
    with pytest.raises(PartitioningError) as e:
        swap.switchover(session, SqlTemplates.bundled(), "public.revenues", **swap_knobs(state_schema="partitioning"))
    assert e.value.details["problems"] == [
        "public.revenues: publication revenues_pub publishes it with a row filter WHERE (id > 10), which PostgreSQL "
        "allows on a partitioned table only with publish_via_partition_root = true: the switchover would fail (HP19). "
        "Run ALTER PUBLICATION revenues_pub SET (publish_via_partition_root = true) (plain tables are published as "
        "before; partitioned tables in revenues_pub are then published under their own name, as this one will be)."]
    assert sql(conn, "SELECT relkind FROM pg_class WHERE oid = 'public.revenues'::regclass") == [("r",)]


def test_without_a_subscriber_what_would_stop_one_is_a_warning(conn):
    sql(conn, TABLE + "CREATE PUBLICATION everything FOR ALL TABLES; CREATE PUBLICATION by_name FOR TABLE "
                      "public.revenues;")
    warnings = phase1(conn)["warnings"]
    said = [w for w in warnings if "publication" in w]
    assert [w.split(":")[1].strip().split(" ")[:2] for w in said] == [["publication", "by_name"],
                                                                      ["publication", "everything"]]
    assert "no logical replication slot uses this database now" in said[0]
    assert ("publication everything is FOR ALL TABLES: it also publishes what the migration creates (the twin "
            "public.revenues_partitioned and its partitions; public.revenues_old after the switchover; the tables of "
            "the state schema partitioning)") in said[1]


def test_for_all_tables_with_a_live_subscriber_is_refused_and_with_the_fix_replication_goes_on(
        publisher, pub_db, pg, db):
    with replicated(publisher, pub_db, pg, db, "everything",
                    "CREATE PUBLICATION everything FOR ALL TABLES;") as (pub, sub, name):
        refused = refused_changing_nothing(pub)   # no state schema, no twin: nothing the subscriber lacks
        assert len(refused.details["problems"]) == 1
        problem = refused.details["problems"][0]
        assert problem.startswith(
            "public.revenues: publication everything is FOR ALL TABLES: it also publishes what the migration "
            "creates")
        assert "a logical replication slot of this database streams them now" in problem
        assert problem.endswith(
            "Publish the application's tables by name instead: CREATE PUBLICATION ... FOR TABLE ... WITH "
            "(publish_via_partition_root = true), ALTER SUBSCRIPTION ... SET PUBLICATION ... on each subscriber, "
            "then DROP PUBLICATION everything; or, when every subscriber accepts those tables, set "
            "subscribers_ready: true.")
        sql(pub, "INSERT INTO public.revenues VALUES (1000, now(), 7)")
        assert wait_for(sub, "SELECT count(*) FROM public.revenues", 301) == 301

        # the fix, as printed
        sql(pub, "CREATE PUBLICATION app FOR TABLE public.revenues WITH (publish_via_partition_root = true)")
        sql(sub, "ALTER SUBSCRIPTION %s SET PUBLICATION app" % name)
        sql(pub, "DROP PUBLICATION everything")
        assert not [w for w in phase1(pub)["warnings"] if "publication" in w]
        assert switch_over_by_phases(Session(pub), RANGE)["phase"] == "switched"
        replicates_writes_after_the_switchover(pub, sub)
        assert wait_for(sub, "SELECT count(*) FROM pg_stat_subscription WHERE pid IS NOT NULL", 1) == 1
