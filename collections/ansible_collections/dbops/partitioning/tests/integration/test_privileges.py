"""Privileges of a table owner without superuser (managed PostgreSQL), checked in phase 1.

The regression: as the table's owner, a view owned by another role in a schema the owner may
not use passed phases 1 and 2 and failed the switchover (``permission denied for schema
analytics``). Now phase 1 refuses before anything changes, naming each missing privilege with
the GRANT that gives it; with the GRANTs given, every phase runs as that owner and the view is
re-created on the partitioned table for its owner.
"""
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.preflight import preflight
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import swap

from ..helpers.phase3_setup import verify_by_phases
from ..helpers.roles import drop_roles, make_owner, session_as
from ..helpers.switchover import swap_knobs
from .test_preflight import snapshot

RANGE = dict(table="public.revenues", partition_key="occurred_at", interval="monthly")
TABLE = """
CREATE TABLE public.revenues (id bigint PRIMARY KEY, occurred_at timestamptz NOT NULL, amount bigint NOT NULL);
INSERT INTO public.revenues SELECT g, timestamptz '2025-01-01 00:00+00' + g * interval '1 hour', g
  FROM generate_series(1, 500) g;
ALTER TABLE public.revenues OWNER TO {owner};
"""


def sql(conn, text):
    conn.cursor().execute(text)


def one(conn, q, args=None):
    cur = conn.cursor()
    cur.execute(q, args)
    return cur.fetchone()[0]


@pytest.fixture
def owner(conn, db):
    """The table's owner, not superuser; ``<db>_analyst`` owns what the application's analysts made."""
    role = make_owner(conn, db)
    sql(conn, "CREATE ROLE %s_analyst" % db.lower())
    yield role
    drop_roles(conn, role, db.lower() + "_analyst")


def check(pg, db, role, raw=None, runbook_schema=None):
    """Preflight as ``role`` (of ``raw``, by default RANGE): its warnings, or the PartitioningError;
    the database unchanged."""
    raw = RANGE if raw is None else raw
    session = session_as(pg, db, role)
    try:
        spec = normalize_spec(dict(raw))
        info = describe_table(session, spec.schema, spec.name)
        before = snapshot(session.conn)
        try:
            return preflight(session, spec, info, state_store.get_table(session, "partitioning", spec.table_name),
                             "partitioning", runbook_schema)
        except PartitioningError as e:
            return e
        finally:
            assert snapshot(session.conn) == before and session.queries == []
    finally:
        session.close()


def test_a_view_the_owner_cannot_recreate_is_refused_in_phase_1_with_the_grants(pg, db, conn, owner):
    analyst = db.lower() + "_analyst"
    sql(conn, TABLE.format(owner=owner) + """
        CREATE SCHEMA analytics AUTHORIZATION {a};
        GRANT SELECT ON public.revenues TO {a};
        SET ROLE {a};
        CREATE VIEW analytics.revenue_report AS SELECT date_trunc('month', occurred_at) AS month, sum(amount) AS total
          FROM public.revenues GROUP BY 1;
        RESET ROLE;""".format(a=analyst))

    refused = check(pg, db, owner)
    assert isinstance(refused, PartitioningError)
    lock, needs = lock_privilege(conn)
    assert refused.details["problems"] == [
        "public.revenues: view analytics.revenue_report (owner {a}) is dropped and re-created by the switchover "
        "(HP9), as the role {o}, which lacks USAGE and CREATE on schema analytics, the privileges of {a}, that {a} "
        "may lock public.revenues (LOCK TABLE on a view locks what it reads, as its owner; ACCESS EXCLUSIVE needs "
        "{n}). Fix: GRANT USAGE, CREATE ON SCHEMA analytics TO {o}; GRANT {a} TO {o}; GRANT {l} ON public.revenues "
        "TO {a} (or ALTER VIEW analytics.revenue_report OWNER TO {o}).".format(a=analyst, o=owner, l=lock, n=needs)]

    sql(conn, "GRANT USAGE, CREATE ON SCHEMA analytics TO {o}; GRANT {a} TO {o}; GRANT {l} ON public.revenues TO {a}"
        .format(a=analyst, o=owner, l=lock))
    assert not isinstance(check(pg, db, owner), PartitioningError)


def lock_privilege(conn):
    """What lets a view's owner lock the table (LOCK TABLE ... ACCESS EXCLUSIVE), and the list of them."""
    if conn.server_version >= 170000:
        return "MAINTAIN", "UPDATE, DELETE, TRUNCATE or MAINTAIN"
    return "UPDATE", "UPDATE, DELETE or TRUNCATE"


def test_a_privilege_revoked_after_phase_1_is_refused_by_the_switchover_with_nothing_changed(pg, db, conn, owner):
    """Phase 3 asks again before its lock: a GRANT taken back meanwhile is named, not met inside the swap;
    with every privilege the owner without superuser switches over and the view comes back for its owner."""
    analyst = db.lower() + "_analyst"
    lock, needs = lock_privilege(conn)
    sql(conn, TABLE.format(owner=owner) + """
        CREATE SCHEMA analytics AUTHORIZATION {a};
        GRANT SELECT, {l} ON public.revenues TO {a};
        SET ROLE {a};
        CREATE VIEW analytics.revenue_report AS SELECT sum(amount) AS total FROM public.revenues;
        RESET ROLE;
        GRANT USAGE, CREATE ON SCHEMA analytics TO {o}; GRANT {a} TO {o};""".format(a=analyst, o=owner, l=lock))
    session = session_as(pg, db, owner)
    try:
        verify_by_phases(session, RANGE)
        sql(conn, "REVOKE %s ON public.revenues FROM %s" % (lock, analyst))
        with pytest.raises(PartitioningError) as e:
            switchover(session)
        assert e.value.details["problems"] == [
            "public.revenues: view analytics.revenue_report (owner {a}) is dropped and re-created by the switchover "
            "(HP9), as the role {o}, which lacks that {a} may lock public.revenues (LOCK TABLE on a view locks what it "
            "reads, as its owner; ACCESS EXCLUSIVE needs {n}). Fix: GRANT {l} ON public.revenues TO {a} (or ALTER "
            "VIEW analytics.revenue_report OWNER TO {o}).".format(a=analyst, o=owner, l=lock, n=needs)]
        assert one(conn, "SELECT relkind FROM pg_class WHERE oid = 'public.revenues'::regclass") == "r"
        sql(conn, "GRANT %s ON public.revenues TO %s" % (lock, analyst))
        assert switchover(session)["phase"] == "switched"
    finally:
        session.close()
    assert one(conn, "SELECT relkind FROM pg_class WHERE oid = 'public.revenues'::regclass") == "p"
    assert one(conn, "SELECT pg_get_userbyid(relowner) FROM pg_class "
                     "WHERE oid = 'analytics.revenue_report'::regclass") == analyst
    assert one(conn, "SELECT total FROM analytics.revenue_report") == 125250


def switchover(session):
    return swap.switchover(session, SqlTemplates.bundled(), "public.revenues", **swap_knobs(state_schema="partitioning"))


def test_trigger_function_without_execute_is_named(pg, db, conn, owner):
    sql(conn, TABLE.format(owner=owner) + """
        CREATE SCHEMA audit;
        CREATE FUNCTION audit.stamp() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NEW; END$$;
        CREATE TRIGGER revenues_stamp BEFORE UPDATE ON public.revenues FOR EACH ROW EXECUTE FUNCTION audit.stamp();
        REVOKE EXECUTE ON FUNCTION audit.stamp() FROM PUBLIC;""")
    refused = check(pg, db, owner)
    assert refused.details["problems"] == [
        "public.revenues: trigger function audit.stamp() is attached again by the switchover, as the role {o}, which "
        "lacks USAGE on schema audit, EXECUTE on audit.stamp(). Fix: GRANT USAGE ON SCHEMA audit TO {o}; GRANT "
        "EXECUTE ON FUNCTION audit.stamp() TO {o}.".format(o=owner)]


def test_publication_references_and_archive_schema_are_named(pg, db, conn, owner):
    sql(conn, TABLE.format(owner=owner) + """
        CREATE SCHEMA ref;
        CREATE TABLE ref.currencies (code text PRIMARY KEY);
        ALTER TABLE public.revenues ADD COLUMN currency text REFERENCES ref.currencies;
        CREATE PUBLICATION revenues_pub FOR TABLE public.revenues;
        REVOKE CREATE ON DATABASE "{db}" FROM {o};""".format(db=db, o=owner))
    refused = check(pg, db, owner, dict(RANGE, retention=12, retention_action="archive"))
    problems = [p for p in refused.details["problems"] if "state schema" not in p]
    assert problems == [
        "public.revenues: the twin's foreign key revenues_currency_fkey references ref.currencies, as the role {o}, "
        "which lacks USAGE on schema ref, REFERENCES on ref.currencies (code). Fix: GRANT USAGE ON SCHEMA ref TO {o}; "
        "GRANT REFERENCES (code) ON ref.currencies TO {o}.".format(o=owner),
        "public.revenues: retention_action archive moves old partitions into schema partitioning_archive, as the role "
        "{o}, which lacks CREATE on the database (the schema partitioning_archive does not exist yet). Fix: CREATE "
        "SCHEMA partitioning_archive AUTHORIZATION {o} (as a role that may).".format(o=owner),
        "public.revenues: publication revenues_pub (owner postgres): the switchover moves the table's membership "
        "(HP12), as the role {o}, which lacks the privileges of postgres. Fix: ALTER PUBLICATION revenues_pub OWNER "
        "TO {o} (or GRANT postgres TO {o}).".format(o=owner)]


def test_the_runbook_schema_maintenance_installs_into_is_named(pg, db, conn, owner):
    sql(conn, TABLE.format(owner=owner) + "CREATE SCHEMA ops;")
    refused = check(pg, db, owner, runbook_schema="ops")
    assert [p for p in refused.details["problems"] if "runbook" in p] == [
        "public.revenues: maintenance installs the runbook's functions into schema ops (partitioning_runbook_schema), "
        "as the role {o}, which lacks USAGE and CREATE on schema ops. Fix: GRANT USAGE, CREATE ON SCHEMA ops TO "
        "{o}.".format(o=owner)]
    sql(conn, "GRANT USAGE, CREATE ON SCHEMA ops TO %s" % owner)
    assert not isinstance(check(pg, db, owner, runbook_schema="ops"), PartitioningError)


def test_a_state_schema_another_role_made_is_refused_before_anything_changes(pg, db, conn, owner):
    sql(conn, TABLE.format(owner=owner))
    admin = Session(pg.connect(db))
    state_store.ensure_state_schema(admin, SqlTemplates.bundled(), "partitioning")
    admin.close()
    session = session_as(pg, db, owner)
    try:
        before = snapshot(conn)
        with pytest.raises(PartitioningError) as e:
            prepare_table(session, SqlTemplates.bundled(), normalize_spec(dict(RANGE)), "partitioning")
        assert snapshot(conn) == before
    finally:
        session.close()
    assert e.value.msg == (
        "The state schema partitioning belongs to postgres and the role {o} may not read it; every phase reads and "
        "writes it. GRANT postgres TO {o} (or run as postgres, or give this table another "
        "partitioning_state_schema).".format(o=owner))


def test_a_superuser_needs_only_what_a_views_owner_must_have(pg, db, conn, owner):
    """The same objects, checked as the superuser the other suites run as: only the view's owner's
    right to lock the table is named (LOCK TABLE checks it as the view's owner, even for a superuser)."""
    analyst = db.lower() + "_analyst"
    sql(conn, TABLE.format(owner=owner) + """
        CREATE SCHEMA analytics AUTHORIZATION {a};
        GRANT SELECT ON public.revenues TO {a};
        SET ROLE {a};
        CREATE VIEW analytics.revenue_report AS SELECT sum(amount) AS total FROM public.revenues;
        RESET ROLE;""".format(a=analyst))
    lock, _needs = lock_privilege(conn)
    assert [p.split(". Fix: ")[1] for p in check(pg, db, "postgres").details["problems"]] == [
        "GRANT {l} ON public.revenues TO {a} (or ALTER VIEW analytics.revenue_report OWNER TO postgres).".format(
            l=lock, a=analyst)]
    sql(conn, "GRANT %s ON public.revenues TO %s" % (lock, analyst))
    assert not isinstance(check(pg, db, "postgres"), PartitioningError)
