"""Guards that cannot measure are never silently off (HP21).

A role without the privileges of pg_read_all_stats sees other roles' sessions without their
transaction start, state or query, and the replicas without their replay lag. Read as "none",
the long-transaction check and the replica-lag guard would pass whatever happens, and blockers
printed as "in transaction for Nones". Now: phase 1 refuses with the GRANT, or, with
allow_blind_guards, warns; each guard that meets something hidden refuses (BlindGuard) unless
the downgrade was accepted; blockers whose details are hidden say so.
"""
import contextlib
from contextlib import closing

import psycopg2
import psycopg2.extras
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import health
from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import (
    blocking_sessions, describe_blockers, long_transactions)
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import throttle
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.preflight import preflight
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import swap

from ..helpers.phase3_setup import verify_by_phases
from ..helpers.roles import drop_roles, make_owner, session_as
from ..helpers.switchover import swap_knobs

RANGE = dict(table="public.revenues", partition_key="occurred_at", interval="monthly")


def sql(conn, text):
    conn.cursor().execute(text)


@pytest.fixture
def blind_owner(pg, conn, db):
    """The table's owner, not superuser, without pg_read_all_stats; and an application role."""
    role = make_owner(conn, db, stats=False)
    app = db.lower() + "_app"
    sql(conn, "CREATE ROLE %s LOGIN;"
              "CREATE TABLE public.revenues (id bigint PRIMARY KEY, occurred_at timestamptz NOT NULL);"
              "ALTER TABLE public.revenues OWNER TO %s;"
              "GRANT SELECT, INSERT, UPDATE ON public.revenues TO %s;" % (app, role, app))
    owner = session_as(pg, db, role)
    state_store.ensure_state_schema(owner, SqlTemplates.bundled(), "partitioning")   # the throttle reads it
    owner.close()
    yield role, app
    drop_roles(conn, role, app)


@contextlib.contextmanager
def streaming_replica(pg):
    """A walsender streaming from now on (a physical replication connection): what a replica is
    to pg_stat_replication."""
    conn = pg.connect()
    cur = conn.cursor()
    cur.execute("SELECT pg_current_wal_lsn()")
    lsn = cur.fetchone()[0]
    conn.close()
    rep = psycopg2.connect(pg.dsn(), connection_factory=psycopg2.extras.PhysicalReplicationConnection)
    try:
        rep.cursor().start_replication(start_lsn=lsn)
        watch = pg.connect()
        try:
            wc = watch.cursor()
            for _attempt in range(200):
                wc.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                if wc.fetchone()[0]:
                    break
                watch.poll()
        finally:
            watch.close()
        yield
    finally:
        rep.close()


def preflight_as(pg, db, role, **knobs):
    with closing(session_as(pg, db, role)) as session:
        spec = normalize_spec(dict(RANGE, **knobs))
        return preflight(session, spec, describe_table(session, "public", "revenues"),
                         state_store.get_table(session, "partitioning", spec.table_name), "partitioning")


def test_phase1_refuses_a_role_that_cannot_see_other_sessions_and_names_the_grant(pg, db, blind_owner):
    role, _app = blind_owner
    with pytest.raises(PartitioningError) as e:
        preflight_as(pg, db, role)
    assert e.value.details["problems"] == [
        "public.revenues: the role %s lacks the privileges of pg_read_all_stats: other roles' sessions show no "
        "transaction start, state nor query, so the switchover's check for long transactions and the backfill's "
        "count of active sessions cannot see them; a replica would hide its replay lag from the replica-lag guard "
        "(phases 2 and 3) (HP21). GRANT pg_read_all_stats TO %s (pg_monitor includes it), or set allow_blind_guards: "
        "true (partitioning_allow_blind_guards) to go on with the guards reduced to what the role can see."
        % (role, role)]


def test_allow_blind_guards_goes_on_with_a_warning(pg, db, blind_owner):
    role, _app = blind_owner
    warnings = preflight_as(pg, db, role, allow_blind_guards=True)
    assert [w for w in warnings if "pg_read_all_stats" in w] == [
        "public.revenues: the role %s lacks the privileges of pg_read_all_stats: other roles' sessions show no "
        "transaction start, state nor query, so the switchover's check for long transactions and the backfill's "
        "count of active sessions cannot see them; a replica would hide its replay lag from the replica-lag guard "
        "(phases 2 and 3) (HP21). Accepted with allow_blind_guards: those guards measure only what the role can see."
        % role]


def test_the_grant_makes_phase1_pass(pg, db, conn, blind_owner):
    role, _app = blind_owner
    sql(conn, "GRANT pg_monitor TO %s" % role)
    assert not any("pg_read_all_stats" in w for w in preflight_as(pg, db, role))


def test_a_hidden_lock_holder_is_named_as_hidden_never_as_none(pg, db, blind_owner):
    role, app = blind_owner
    with closing(pg.connect(db, user=app, autocommit=False)) as writer:
        writer.cursor().execute("INSERT INTO public.revenues VALUES (1, now())")   # holds ROW EXCLUSIVE, open
        with closing(session_as(pg, db, role)) as session:
            blockers = blocking_sessions(session, [("public", "revenues")])
            oid = session.scalar("SELECT 'public.revenues'::regclass::oid")
            old = long_transactions(session, [oid], 3600)
        text = describe_blockers(blockers)
        assert "None" not in text
        assert text == ("pid %d (%s; its state, transaction age and query are hidden from this role, which lacks the "
                        "privileges of pg_read_all_stats)" % (writer.get_backend_pid(), app))
        # a holder whose age is hidden is returned for the caller to decide, not dropped as "young"
        assert [(h["pid"], h["hidden"]) for h in old] == [(writer.get_backend_pid(), True)]
        with closing(session_as(pg, db, "postgres")) as admin:
            assert long_transactions(admin, [oid], 3600) == []     # seen: younger than an hour


def test_the_replica_lag_guard_refuses_when_the_lag_is_hidden_unless_accepted(pg, db, blind_owner):
    role, _app = blind_owner
    with streaming_replica(pg), closing(session_as(pg, db, role)) as session, \
            closing(session_as(pg, db, "postgres")) as admin:
        assert health.replica_lag(admin).hidden == 0
        assert health.replica_lag_s(admin) == 0.0
        lag = health.replica_lag(session)
        assert lag.replicas >= 1 and lag.hidden == lag.replicas
        with pytest.raises(health.BlindGuard) as e:
            health.replica_lag_s(session)
        assert e.value.msg.startswith(
            "The replica-lag guard cannot measure the replay lag of %d of %d replica(s): hidden from the role %s, "
            "which lacks the privileges of pg_read_all_stats; what it cannot see would pass as nothing (HP21). "
            "GRANT pg_read_all_stats TO %s" % (lag.hidden, lag.replicas, role, role))
        assert health.replica_lag_s(session, allow_blind=True) == 0.0
        # the backfill's brake is the same guard
        with pytest.raises(health.BlindGuard):
            throttle.check(session, "partitioning", "public.revenues", throttle.Limits(max_replica_lag_s=30))
        blind = health.blind_guards(session)
        assert "the replay lag of its %d replica(s) reads NULL" % lag.replicas in blind.what


def test_the_active_sessions_guard_refuses_when_sessions_are_hidden_unless_accepted(pg, db, blind_owner):
    role, app = blind_owner
    # the application's session is one the role cannot see
    with closing(pg.connect(db, user=app)), closing(session_as(pg, db, role)) as session:
        limits = throttle.Limits(max_replica_lag_s=0, max_active_backends=5)
        with pytest.raises(health.BlindGuard) as e:
            throttle.check(session, "partitioning", "public.revenues", limits)
        assert "The active-sessions guard cannot measure the state of" in e.value.msg
        limits.allow_blind_guards = True
        assert throttle.check(session, "partitioning", "public.revenues", limits) is None


def test_the_switchover_refuses_a_hidden_lock_holder_unless_blind_guards_are_allowed(pg, db, blind_owner):
    role, app = blind_owner
    with closing(session_as(pg, db, role)) as session, closing(pg.connect(db, user=app, autocommit=False)) as reader:
        verify_by_phases(session, dict(RANGE, allow_blind_guards=True))
        reader.cursor().execute("SELECT count(*) FROM public.revenues")   # ACCESS SHARE, its age hidden
        pid = reader.get_backend_pid()
        with pytest.raises(PartitioningError) as e:
            switchover(session, max_xact_age_s=3600)
        assert e.value.details["problems"] == [
            "The long-transaction check cannot measure the transaction age of 1 session(s) holding a lock on the table "
            "or its views (pid %d): hidden from the role %s, which lacks the privileges of pg_read_all_stats; what it "
            "cannot see would pass as nothing (HP21). GRANT pg_read_all_stats TO %s (pg_monitor includes it), or set "
            "allow_blind_guards: true (partitioning_allow_blind_guards) to go on with the guards reduced to what the "
            "role can see." % (pid, role, role)]
        # accepted: the check measures what it can see, and the swap meets the lock it could not see
        with pytest.raises(PartitioningError) as e:
            switchover(session, max_xact_age_s=3600, allow_blind_guards=True, swap_retries=0)
        assert e.value.msg.endswith(
            "nothing was changed. Blocking: pid %d (%s; its state, transaction age and query are hidden from this "
            "role, which lacks the privileges of pg_read_all_stats). Let those transactions finish (or end them), then "
            "run again." % (pid, app))
        reader.rollback()
        result = switchover(session, allow_blind_guards=True)
        assert result["phase"] == "switched"
        assert [w for w in result["warnings"] if "pg_read_all_stats" in w] == [
            "the role %s lacks the privileges of pg_read_all_stats: other roles' sessions show no transaction start, "
            "state nor query, so the switchover's check for long transactions and the backfill's count of active "
            "sessions cannot see them; a replica would hide its replay lag from the replica-lag guard (phases 2 and 3) "
            "(HP21). Accepted with allow_blind_guards: those guards measure only what the role can see." % role]


def switchover(session, **options):
    return swap.switchover(session, SqlTemplates.bundled(), "public.revenues",
                           **swap_knobs(state_schema="partitioning", **options))
