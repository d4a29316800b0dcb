"""Preflight on real servers: each refusal has one clear message naming the table, every
problem of a table is reported at once, and the database is left exactly as it was."""
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.preflight import preflight
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

GOOD = """
CREATE TABLE revenues (
    id bigint PRIMARY KEY,
    org_id integer NOT NULL,
    occurred_at timestamptz NOT NULL,
    amount_cents bigint NOT NULL
);
INSERT INTO revenues
SELECT g, g % 7, '2025-01-01'::timestamptz + g * interval '1 hour', g FROM generate_series(1, 200) g;
"""

# Everything a database holds that preflight could have created or changed.
SNAPSHOT_SQL = """
SELECT (SELECT array_agg(c.oid::regclass::text || ':' || c.relkind::text ORDER BY c.oid) FROM pg_class c
         WHERE c.relnamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
           AND c.relnamespace::regnamespace::text NOT LIKE 'pg_toast%%') AS relations,
       (SELECT array_agg(nspname ORDER BY nspname) FROM pg_namespace) AS schemas,
       (SELECT array_agg(conname ORDER BY conname) FROM pg_constraint) AS constraints,
       (SELECT array_agg(tgname ORDER BY tgname) FROM pg_trigger) AS triggers,
       (SELECT count(*) FROM pg_proc) AS functions
"""


def snapshot(conn):
    cur = conn.cursor()
    cur.execute(SNAPSHOT_SQL)
    return cur.fetchone()


def run(conn, raw, state_row=None, state_schema="partitioning"):
    spec = normalize_spec(raw)
    session = Session(conn)
    info = describe_table(session, spec.schema, spec.name)
    if state_row is None:
        state_row = state_store.get_table(session, state_schema, spec.table_name)
    before = snapshot(conn)
    try:
        return preflight(session, spec, info, state_row, state_schema)
    finally:
        assert snapshot(conn) == before, "preflight changed the database"
        assert session.queries == [], "preflight ran a changing statement"


def refused(conn, raw, **kw):
    with pytest.raises(PartitioningError) as e:
        run(conn, raw, **kw)
    return e.value


def sql(conn, text):
    conn.cursor().execute(text)


RANGE = dict(table="public.revenues", partition_key="occurred_at", interval="monthly")


def key_warning(table, key):
    """The one warning a table whose primary key is (id) gets: the key grows by the partition key."""
    return ["%s: the primary key (id) becomes (id, %s) on the partitioned table; (id) alone is no longer "
            "enforced unique across partitions (PostgreSQL requires the partition key in it)." % (table, key)]


# ---------------------------------------------------------------- passing

def test_a_good_table_passes_with_the_primary_key_warning(conn):
    sql(conn, GOOD)
    warnings = run(conn, RANGE)
    assert warnings == key_warning("public.revenues", "occurred_at")


def test_composite_key_with_the_partition_key_has_no_warning(conn):
    sql(conn, "CREATE TABLE t (id bigint, d date NOT NULL, PRIMARY KEY (id, d))")
    assert run(conn, dict(table="t", partition_key="d", interval="yearly")) == []


def test_hash_and_list_accept_types_with_equality(conn):
    sql(conn, "CREATE DOMAIN org AS integer; CREATE TYPE mood AS ENUM ('a', 'b');"
              "CREATE TABLE h (id int PRIMARY KEY, o org NOT NULL, v varchar(5) NOT NULL, m mood NOT NULL, "
              "u uuid NOT NULL, a int[] NOT NULL)")
    for col in ("o", "v", "m", "u", "a"):
        assert run(conn, dict(table="h", partition_key=col, strategy="hash", partitions=4)) == \
            key_warning("public.h", col)
    assert run(conn, dict(table="h", partition_key="v", strategy="list", values={"x": ["x"]})) == \
        key_warning("public.h", "v")
    assert run(conn, dict(table="h", partition_key="m", strategy="list", values={"x": ["a"]})) == \
        key_warning("public.h", "m")


def test_quoted_names_in_another_schema(conn):
    sql(conn, 'CREATE SCHEMA "Sales"; CREATE TABLE "Sales"."Revenues" ("Id" int PRIMARY KEY, '
              '"At" date NOT NULL)')
    assert run(conn, dict(table='"Sales"."Revenues"', partition_key='"At"', interval="daily"))[0].startswith(
        '"Sales"."Revenues": the primary key (Id) becomes (Id, At)')


# ---------------------------------------------------------------- the table itself

def test_missing_table(conn):
    e = refused(conn, RANGE)
    assert e.msg == ("Preflight failed for public.revenues: public.revenues does not exist (check the schema and "
                     "the spelling; unqualified names mean public).")


@pytest.mark.parametrize("ddl, what", [
    ("CREATE VIEW revenues AS SELECT 1 AS occurred_at", "is a view"),
    ("CREATE MATERIALIZED VIEW revenues AS SELECT now() AS occurred_at", "is a materialized view"),
    ("CREATE TABLE revenues (id int, occurred_at date NOT NULL, PRIMARY KEY (id, occurred_at)) "
     "PARTITION BY RANGE (occurred_at)", "is a partitioned table (already partitioned"),
])
def test_not_a_plain_table(conn, ddl, what):
    sql(conn, ddl)
    assert what in refused(conn, RANGE).msg


def test_unlogged(conn):
    sql(conn, GOOD + "ALTER TABLE revenues SET UNLOGGED;")
    assert "public.revenues is UNLOGGED" in refused(conn, RANGE).msg


def test_inheritance(conn):
    sql(conn, GOOD + "CREATE TABLE revenues_child () INHERITS (revenues);")
    assert "takes part in table inheritance (0 parent(s), 1 child table(s))" in refused(conn, RANGE).msg


def test_no_primary_key(conn):
    sql(conn, "CREATE TABLE revenues (id bigint UNIQUE, occurred_at timestamptz NOT NULL)")
    assert "public.revenues has no primary key" in refused(conn, RANGE).msg


# ---------------------------------------------------------------- the partition key

def test_missing_key_with_did_you_mean(conn):
    sql(conn, GOOD)
    e = refused(conn, dict(RANGE, partition_key="occured_at"))
    assert e.msg == "Preflight failed for public.revenues: public.revenues has no column occured_at " \
                    "(did you mean 'occurred_at'?)."


def test_range_needs_a_time_key(conn):
    sql(conn, GOOD)
    msg = refused(conn, dict(RANGE, partition_key="org_id")).msg
    assert "org_id is integer; range partitioning by a calendar interval supports date, timestamp and " \
           "timestamptz keys (a numeric interval suits integer keys" in msg


def test_numeric_interval_needs_an_integer_key(conn):
    sql(conn, GOOD)
    msg = refused(conn, dict(RANGE, interval=1000)).msg
    assert "occurred_at is timestamp with time zone; a numeric interval (1000) needs a smallint, integer or " \
           "bigint key" in msg
    sql(conn, "ALTER TABLE revenues DROP CONSTRAINT revenues_pkey, ADD PRIMARY KEY (id, org_id)")
    assert run(conn, dict(RANGE, partition_key="id", interval=1000)) == []


@pytest.mark.parametrize("strategy, extra, method", [("hash", dict(partitions=4), "hash"),
                                                     ("list", dict(values={"a": ["(1,1)"]}), "btree")])
def test_hash_and_list_need_an_operator_class(conn, strategy, extra, method):
    sql(conn, "CREATE TABLE t (id int PRIMARY KEY, p point NOT NULL)")
    msg = refused(conn, dict(table="t", partition_key="p", strategy=strategy, **extra)).msg
    assert "p is point, which has no default %s operator class" % method in msg


def test_list_values_must_fit_the_key_type(conn):
    sql(conn, "CREATE TABLE t (id int PRIMARY KEY, n integer NOT NULL, d date NOT NULL)")
    e = refused(conn, dict(table="t", partition_key="n", strategy="list", values={"a": [1, "2"], "b": ["x", 3]}))
    assert e.details["problems"] == [
        "public.t: values.b: 'x' is not a valid integer (invalid input syntax for type integer: \"x\")."]
    assert run(conn, dict(table="t", partition_key="d", strategy="list", values={"a": ["2025-01-01"]})) == \
        key_warning("public.t", "d")


def test_list_without_default_must_cover_the_data(conn):
    sql(conn, "CREATE TABLE t (id int PRIMARY KEY, n integer NOT NULL); "
              "INSERT INTO t SELECT g, g % 9 FROM generate_series(1, 100) g")
    raw = dict(table="t", partition_key="n", strategy="list", values={"low": [0, 1, 2], "mid": ["3"]},
               default_partition=False)
    assert refused(conn, raw).details["problems"] == [
        "public.t: rows with n '4', '5', '6', '7', '8' are in no list partition and there is no default "
        "partition: add them to values or set default_partition: true."]
    warnings = run(conn, dict(raw, values={"low": [0, 1, 2, 3, 4], "high": [5, 6, 7, 8]}))
    assert any("default_partition is false: during the migration a write whose n falls outside" in w
               for w in warnings)
    assert not any("default_partition" in w for w in run(conn, dict(raw, default_partition=True)))


def test_list_values_checked_inside_a_transaction_leave_it_usable(conn):
    sql(conn, "CREATE TABLE t (id int PRIMARY KEY, n integer NOT NULL)")
    conn.autocommit = False
    try:
        refused(conn, dict(table="t", partition_key="n", strategy="list", values={"a": ["x"]}))
        cur = conn.cursor()
        cur.execute("SELECT 1")     # not "current transaction is aborted"
        assert cur.fetchone() == (1,)
    finally:
        conn.rollback()
        conn.autocommit = True


def test_generated_key(conn):
    sql(conn, "CREATE TABLE t (id int PRIMARY KEY, y int GENERATED ALWAYS AS (id * 2) STORED)")
    e = refused(conn, dict(table="t", partition_key="y", strategy="hash", partitions=2))
    assert "y is a generated column; PostgreSQL cannot partition by one" in e.details["problems"][0]


def test_nullable_key_without_nulls_is_refused_with_the_fix(conn):
    sql(conn, GOOD + "ALTER TABLE revenues ALTER occurred_at DROP NOT NULL;")
    msg = refused(conn, RANGE).msg
    assert "the partition key occurred_at must be NOT NULL" in msg
    assert "it holds no NULL now, so add the constraint without a long lock" in msg


def test_nullable_key_with_nulls(conn):
    sql(conn, GOOD + "ALTER TABLE revenues ALTER occurred_at DROP NOT NULL; "
                     "UPDATE revenues SET occurred_at = NULL WHERE id = 3;")
    assert "it holds NULLs now: give them a value" in refused(conn, RANGE).msg


# ---------------------------------------------------------------- keys and constraints

def test_unique_constraints_are_extended_with_a_warning(conn):
    sql(conn, GOOD + "ALTER TABLE revenues ADD CONSTRAINT revenues_ref UNIQUE (org_id, amount_cents); "
                     "CREATE UNIQUE INDEX revenues_lower ON revenues (lower(amount_cents::text)); "
                     "CREATE UNIQUE INDEX revenues_at ON revenues (occurred_at, org_id);")
    warnings = run(conn, RANGE)
    assert any(w.startswith("public.revenues: unique constraint revenues_ref (org_id, amount_cents) becomes "
                            "(org_id, amount_cents, occurred_at)") for w in warnings)
    assert any("unique index revenues_lower gets the partition key occurred_at" in w for w in warnings)
    assert not any("revenues_at" in w for w in warnings)


def test_exclusion_constraint(conn):
    sql(conn, GOOD + "ALTER TABLE revenues ADD COLUMN during tstzrange; "
                     "ALTER TABLE revenues ADD CONSTRAINT no_overlap EXCLUDE USING gist (during WITH &&);")
    msg = refused(conn, RANGE).msg
    assert "exclusion constraint no_overlap (EXCLUDE USING gist (during WITH &&)) cannot exist on a " \
           "partitioned table" in msg


def test_exclusion_constraint_with_the_key_on_17(conn):
    sql(conn, GOOD + "CREATE EXTENSION IF NOT EXISTS btree_gist; ALTER TABLE revenues ADD COLUMN during tstzrange; "
                     "ALTER TABLE revenues ADD CONSTRAINT no_overlap "
                     "EXCLUDE USING gist (occurred_at WITH =, during WITH &&);")
    if conn.server_version >= 170000:
        assert run(conn, RANGE) == key_warning("public.revenues", "occurred_at")
    else:
        assert "cannot exist on a partitioned table before PostgreSQL 17" in refused(conn, RANGE).msg


def test_inbound_foreign_keys_refused_by_default(conn):
    sql(conn, GOOD + "CREATE SCHEMA billing; CREATE TABLE billing.invoices (id int PRIMARY KEY, "
                     "revenue_id bigint CONSTRAINT invoices_revenue_fk REFERENCES revenues (id));")
    msg = refused(conn, RANGE).msg
    assert ("public.revenues is referenced by foreign keys that cannot follow it to a partitioned table: "
            "invoices_revenue_fk on billing.invoices (revenue_id). Set inbound_foreign_keys: drop") in msg


def test_inbound_foreign_keys_dropped_on_request(conn):
    sql(conn, GOOD + "CREATE TABLE invoices (id int PRIMARY KEY, revenue_id bigint REFERENCES revenues (id));"
                     "ALTER TABLE revenues ADD COLUMN parent_id bigint REFERENCES revenues (id);")
    warnings = run(conn, dict(RANGE, inbound_foreign_keys="drop"))
    dropped = [w for w in warnings if "will drop the foreign keys" in w]
    assert len(dropped) == 1
    assert "invoices_revenue_id_fkey on public.invoices (revenue_id)" in dropped[0]
    assert "revenues_parent_id_fkey on public.revenues (parent_id)" in dropped[0]  # self-reference too


def test_switchover_blockers_are_announced_early(conn):
    sql(conn, GOOD + "CREATE FUNCTION total() RETURNS numeric LANGUAGE sql BEGIN ATOMIC "
                     "SELECT sum(amount_cents) FROM revenues; END; "
                     "CREATE PUBLICATION pub_rev FOR TABLE revenues;")
    warnings = run(conn, RANGE)
    assert any("functions with SQL-standard bodies (BEGIN ATOMIC) are bound to the table" in w and "total()" in w
               for w in warnings), warnings
    assert any("publication pub_rev has publish_via_partition_root = false" in w for w in warnings)


# ---------------------------------------------------------------- the twin and the state

def test_unmanaged_twin_and_old_names_are_refused(conn):
    sql(conn, GOOD + "CREATE TABLE revenues_partitioned (x int); CREATE TABLE revenues_old (x int);")
    e = refused(conn, RANGE)
    assert e.details["problems"] == [
        "public.revenues_partitioned already exists but no migration of public.revenues is recorded in the state "
        "schema; it is not ours to reuse: drop or rename it.",
        "public.revenues_old already exists; the switchover needs that name for the original table: drop or "
        "rename it."]
    assert e.msg.startswith("Preflight failed for public.revenues (2 problems):\n- public.revenues_partitioned")


def test_a_relation_with_a_partitions_name_is_refused(conn):
    sql(conn, GOOD + "CREATE TABLE revenues_2025_03 (x int); CREATE INDEX revenues_default ON revenues (org_id);"
                     "CREATE TABLE revenues_2025_q1 (x int); CREATE TABLE revenues_archive (x int);")
    problems = refused(conn, RANGE).details["problems"]
    assert sorted(problems) == [
        "public.revenues_2025_03 already exists (a table) and is not a partition of public.revenues_partitioned; "
        "phase 1 needs that name for a partition: rename or drop it.",
        "public.revenues_default already exists (an index) and is not a partition of "
        "public.revenues_partitioned; phase 1 needs that name for a partition: rename or drop it."]
    sql(conn, "DROP TABLE revenues_2025_03; DROP INDEX revenues_default; CREATE TABLE revenues_p00 (x int);")
    assert "public.revenues_p00 already exists" in \
        refused(conn, dict(RANGE, strategy="hash", partitions=2, interval=None, partition_key="org_id")).msg


def _managed(conn, raw, phase, twin=True, recorded=None):
    session = Session(conn)
    state_store.ensure_state_schema(session, SqlTemplates.bundled(), "partitioning")
    spec = normalize_spec(raw)
    state_store.insert_table(session, "partitioning", spec.table_name, table_schema=spec.schema,
                             table_relname=spec.name, twin_relname=spec.twin[1], old_relname=spec.old[1],
                             phase=phase, spec=recorded or spec.to_json(), pk_columns=["id"],
                             partition_key=spec.partition_key)
    if twin:
        sql(conn, "CREATE TABLE revenues_partitioned (id bigint, occurred_at timestamptz NOT NULL, "
                  "PRIMARY KEY (id, occurred_at)) PARTITION BY RANGE (occurred_at)")


@pytest.mark.parametrize("phase", ["prepared", "copying", "copied", "verified"])
def test_a_recorded_twin_can_be_continued(conn, phase):
    sql(conn, GOOD)
    _managed(conn, RANGE, phase)
    sql(conn, "CREATE TABLE revenues_2025_01 PARTITION OF revenues_partitioned "
              "FOR VALUES FROM ('2025-01-01') TO ('2025-02-01')")     # the twin's own partition is fine
    assert len(run(conn, RANGE)) == 1   # only the primary key warning


def test_prepared_without_twin_is_resumable(conn):
    sql(conn, GOOD)
    _managed(conn, RANGE, "prepared", twin=False)
    assert run(conn, RANGE) == key_warning("public.revenues", "occurred_at")


def test_copying_without_twin_is_refused(conn):
    sql(conn, GOOD)
    _managed(conn, RANGE, "copying", twin=False)
    assert "says phase copying but the twin public.revenues_partitioned is missing; run rollback.yml" in \
        refused(conn, RANGE).msg


def test_rolled_back_starts_over_once_the_twin_is_gone(conn):
    sql(conn, GOOD)
    _managed(conn, RANGE, "rolled_back")
    assert "the last migration was rolled back but its twin public.revenues_partitioned still exists" in \
        refused(conn, RANGE).msg
    sql(conn, "DROP TABLE revenues_partitioned")
    # a new spec is fine: a new twin will be built
    assert run(conn, dict(RANGE, interval="yearly")) == key_warning("public.revenues", "occurred_at")


def test_changed_spec_is_refused(conn):
    sql(conn, GOOD)
    _managed(conn, RANGE, "prepared")
    msg = refused(conn, dict(RANGE, interval="quarterly")).msg
    assert "the spec changed since phase 1 (interval 'monthly' -> 'quarterly')" in msg
    # tuning and premake may change at any time
    assert run(conn, dict(RANGE, premake=9, batch_size=10)) == key_warning("public.revenues", "occurred_at")


def test_after_switchover_nothing_is_checked(conn):
    sql(conn, "CREATE TABLE revenues (id int, occurred_at date NOT NULL, PRIMARY KEY (id, occurred_at)) "
              "PARTITION BY RANGE (occurred_at)")
    _managed(conn, RANGE, "switched", twin=False)
    assert run(conn, RANGE) == ["public.revenues was switched over already (phase switched): it is the "
                                "partitioned table now; nothing for phase 1 to check."]


def test_foreign_state_schema_is_refused(conn):
    sql(conn, GOOD + "CREATE SCHEMA partitioning; CREATE TABLE partitioning.stuff (x int);")
    assert "schema partitioning exists and holds other objects but no dbops.partitioning state" in \
        refused(conn, RANGE).msg


def test_an_empty_state_schema_made_by_the_dba_is_fine(conn):
    sql(conn, GOOD + "CREATE SCHEMA partitioning;")
    assert run(conn, RANGE) == key_warning("public.revenues", "occurred_at")


# ---------------------------------------------------------------- privileges and many problems

def test_a_role_that_does_not_own_the_table(conn, db):
    role = db + "_app"
    sql(conn, GOOD + "CREATE ROLE %s; GRANT SELECT ON revenues TO %s;" % (role, role))
    try:
        sql(conn, "SET ROLE %s" % role)
        e = refused(conn, RANGE)
        assert any("the role %s does not own the table (owner: " % role in p for p in e.details["problems"])
        if conn.server_version >= 150000:  # before 15, everyone could CREATE in public
            assert any("may not CREATE in schema public (the twin goes there)" in p for p in e.details["problems"])
    finally:
        sql(conn, "RESET ROLE; DROP OWNED BY %s; DROP ROLE %s" % (role, role))


def test_every_problem_at_once(conn):
    sql(conn, "CREATE UNLOGGED TABLE revenues (id bigint, occurred_at integer); "
              "CREATE TABLE revenues_partitioned (x int);")
    e = refused(conn, RANGE)
    problems = e.details["problems"]
    assert len(problems) == 5, problems
    assert [p.split(" ")[0:2] for p in problems] == [
        ["public.revenues_partitioned", "already"], ["public.revenues", "is"], ["public.revenues", "has"],
        ["public.revenues:", "occurred_at"], ["public.revenues:", "the"]]
    assert e.msg.count("\n- ") == 5


# ---------------------------------------------------------------- the lab as operators run it

def test_the_lab_tables_pass_with_the_lab_inventory(conn):
    import os

    import yaml

    from lab.schema import create_demo_schema
    from ansible_collections.dbops.partitioning.plugins.module_utils.spec import validate_specs

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), *[".."] * 6))
    with open(os.path.join(root, "inventories", "lab", "group_vars", "partitioning_hosts.yml")) as f:
        raws = yaml.safe_load(f)["partitioning_tables"]
    create_demo_schema(conn, rows=2000)
    for spec in validate_specs(raws):
        warnings = run(conn, spec.to_json())
        assert all(w.startswith(spec.table_name + ": ") for w in warnings), warnings
