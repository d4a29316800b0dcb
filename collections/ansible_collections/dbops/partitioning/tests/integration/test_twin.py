"""ensure_twin on real servers: the twin accepts the original's rows, carries over what the
original has (columns, keys extended with the partition key, indexes rebuilt from their parts,
FKs, comments, grants, owner, policies, storage parameters), is idempotent, and changes
nothing in check mode."""
import datetime

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import plan_partitions
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.twin import ensure_twin, twin_index_name

from ..helpers.catalog_tables import LAB_SQL

NOW = datetime.datetime(2026, 1, 15, 12, 0, tzinfo=datetime.timezone.utc)
LAB_YEARLY = dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="yearly")


def build(conn, raw, check_mode=False):
    session = Session(conn, check_mode=check_mode)
    spec = normalize_spec(raw)
    info = describe_table(session, spec.schema, spec.name)
    key_type = info.column(spec.partition_key).type
    lo, hi = session.query("SELECT min({k}) AS lo, max({k}) AS hi FROM {t}".format(
        k='"%s"' % spec.partition_key, t='"%s"."%s"' % (spec.schema, spec.name)))[0].values()
    partitions = plan_partitions(spec, key_type, lo, hi, NOW)
    warnings = []
    created = ensure_twin(session, info, spec, partitions, warnings)
    return session, spec, info, partitions, created, warnings


def lab_twin(conn, **options):
    """The lab table and its yearly twin (``options`` added to the spec); returns the spec, the
    original as described before the twin was built, and the partitions."""
    conn.cursor().execute(LAB_SQL)
    _unused, spec, info, partitions, _unused, _unused = build(conn, dict(LAB_YEARLY, **options))
    return spec, info, partitions


def scalar(conn, q, *args):
    cur = conn.cursor()
    cur.execute(q, args or None)
    return cur.fetchone()[0]


def copy_rows(conn, info, twin):
    cols = ", ".join('"%s"' % c.name for c in info.columns if not c.generated)
    conn.cursor().execute('INSERT INTO "%s"."%s" (%s) SELECT %s FROM "%s"."%s"'
                          % (twin[0], twin[1], cols, cols, info.schema, info.name))


def same_rows(conn, info, twin):
    """Every column (generated ones included) equal, both ways."""
    cols = ", ".join('"%s"' % c.name for c in info.columns)
    a = '"%s"."%s"' % (info.schema, info.name)
    b = '"%s"."%s"' % twin
    q = "SELECT count(*) FROM ((SELECT %s FROM %s EXCEPT ALL SELECT %s FROM %s) UNION ALL " \
        "(SELECT %s FROM %s EXCEPT ALL SELECT %s FROM %s)) d" % (cols, a, cols, b, cols, b, cols, a)
    return scalar(conn, q) == 0


def normalized_indexdef(definition, old_table, new_table, old_name, new_name):
    return definition.replace(" ON ONLY ", " ON ").replace(new_table, old_table).replace(new_name, old_name)


def test_lab_revenues_twin(conn):
    conn.cursor().execute(LAB_SQL)
    session, spec, info, partitions, created, warnings = build(
        conn, dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="monthly"))
    assert created[0] == "table public.revenues_partitioned"
    names = [p.name for p in partitions]
    assert names[0] == "revenues_2024_01" and names[-1] == "revenues_default"
    assert ["partition public." + n for n in names] == [c for c in created if c.startswith("partition ")]
    assert any("(id) becomes (id, occurred_at)" in w for w in warnings)
    copy_rows(conn, info, spec.twin)
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned") == 2000
    assert scalar(conn, "SELECT count(*) FROM public.revenues_default") == 0
    assert same_rows(conn, info, spec.twin)
    twin = describe_table(Session(conn), *spec.twin)
    assert twin.kind == "p" and twin.pk_columns == ["id", "occurred_at"]
    assert twin.partition_key == "RANGE (occurred_at)" and info.partition_key is None
    assert twin.primary_key.name == "revenues_pkey_p"
    assert twin.column("id").default == info.column("id").default     # the same sequence
    assert [c.name for c in twin.columns] == [c.name for c in info.columns]
    assert [c.type for c in twin.columns] == [c.type for c in info.columns]
    assert sorted(i.name for i in twin.indexes) == sorted(twin_index_name(i.name) for i in info.indexes)
    # a second run creates nothing
    again = ensure_twin(Session(conn), describe_table(Session(conn), "public", "revenues"), spec, partitions)
    assert again == []


def test_awkward_twin(conn, awkward):
    r = awkward
    session, spec, info, partitions, created, warnings = build(
        conn, dict(table='"Sales"."Revenues"', partition_key="occurred_at", strategy="range", interval="monthly"))
    twin_name = spec.twin
    assert twin_name == ("Sales", "Revenues_partitioned")
    # what could not be carried over exactly is said
    assert any("primary key (id, OrgId) becomes (id, OrgId, occurred_at)" in w for w in warnings)
    assert any("revenues_ext_ref_key (ext_ref) becomes (ext_ref, occurred_at)" in w for w in warnings)
    assert any("exclusion constraint revenues_no_overlap" in w for w in warnings)
    assert any("unique index revenues_line_no_uidx" in w for w in warnings)

    copy_rows(conn, info, twin_name)
    assert scalar(conn, 'SELECT count(*) FROM "Sales"."Revenues_partitioned"') == 500
    assert same_rows(conn, info, twin_name)

    twin = describe_table(Session(conn), *twin_name)
    cols = dict((c.name, c) for c in twin.columns)
    orig = dict((c.name, c) for c in info.columns)
    for name, c in orig.items():
        t = cols[name]
        assert (t.type, t.not_null, t.collation, t.generated, t.generation_expr, t.comment) == \
            (c.type, c.not_null, c.collation, c.generated, c.generation_expr, c.comment), name
        if not c.identity:
            assert t.default == c.default, name
        assert (t.statistics_target, t.storage, t.compression) == (c.statistics_target, c.storage, c.compression)
    assert [(st.schema, st.name, st.kinds, st.columns, st.target) for st in twin.statistics] == \
        [(st.schema, st.name + "_p", st.kinds, st.columns, st.target) for st in info.statistics]
    # identity: BY DEFAULT on the twin, with the original's sequence options
    assert cols["id"].identity == "d" and cols["ext_ref"].identity == "d"
    seqs = dict((s.column, s) for s in twin.owned_sequences)
    assert (seqs["ext_ref"].start, seqs["ext_ref"].increment) == (1000, 5)
    assert "line_no" not in seqs          # serial: the original's sequence, not a new one
    assert twin.comment == "Revenue lines"

    # keys and constraints
    assert twin.pk_columns == ["id", "OrgId", "occurred_at"]
    cons = dict((c.name, c) for c in twin.constraints)
    assert cons["revenues_ext_ref_key_p"].columns == ["ext_ref", "occurred_at"]
    assert cons["revenues_status_check"].definition == \
        dict((c.name, c) for c in info.constraints)["revenues_status_check"].definition
    assert "Revenues_amount_cents_check" in cons
    assert cons["revenues_status_check"].comment == "three states"
    assert twin.primary_key.comment == "line per org"
    assert "revenues_no_overlap_p" not in cons and "revenues_no_overlap" not in cons
    [fk] = twin.foreign_keys
    assert fk.name == "Revenues_customer_id_fkey_p" and fk.ref_table == ("Sales", "customers")
    assert fk.definition == info.foreign_keys[0].definition
    assert twin.referenced_by == []

    # every index rebuilt from its parts deparses like the original (names and table aside)
    tix = dict((i.name, i) for i in twin.indexes)
    for ix in info.indexes:
        if ix.constraint_type is not None:
            continue
        new = tix[twin_index_name(ix.name)]
        got = normalized_indexdef(new.definition, '"Sales"."Revenues"', '"Sales"."Revenues_partitioned"',
                                  ix.name, new.name)
        if ix.name == "revenues_line_no_uidx":
            assert new.key_columns == ["line_no", "occurred_at"]
        else:
            assert got == ix.definition, ix.name
    assert tix["revenues_open_idx_p"].comment == "open lines"

    # security: owner, grants (parent and partitions), policies without RLS enabled
    assert twin.owner == r + "_owner"
    assert set((g.grantee, g.privilege, g.grantable) for g in twin.grants) == \
        set((g.grantee, g.privilege, g.grantable) for g in info.grants)
    assert [(g.column, g.grantee, g.privilege) for g in twin.column_grants] == [("status", r + "_reader", "UPDATE")]
    part = describe_table(Session(conn), "Sales", "Revenues_2025_01")
    assert part.owner == r + "_owner"
    assert set((g.grantee, g.privilege) for g in part.grants) == set((g.grantee, g.privilege) for g in info.grants)
    assert sorted(part.reloptions) == ["autovacuum_vacuum_scale_factor=0.05", "fillfactor=80"]
    assert part.toast_reloptions == ["toast.autovacuum_enabled=false"]
    assert (part.column("Description").storage, part.column("Description").statistics_target) == ("e", 500)
    assert twin.reloptions == []
    assert not twin.rls_enabled
    assert [(p.name, p.command, p.permissive, p.roles, p.using, p.with_check) for p in twin.policies] == \
        [(p.name, p.command, p.permissive, p.roles, p.using, p.with_check) for p in info.policies]
    # the application's writer role can write the twin (the sync trigger runs as the invoker)
    cur = conn.cursor()
    cur.execute("SET ROLE %s_writer" % r)
    # (with explicit values for every written column, as the trigger writes them)
    cur.execute('INSERT INTO "Sales"."Revenues_partitioned" (id, "OrgId", occurred_at, line_no, ext_ref, '
                "amount_cents) VALUES (100000, 1, '2025-03-01', 100000, 100000, 5)")
    cur.execute("RESET ROLE")
    # the application's triggers are not copied before switchover (they would fire twice)
    assert twin.triggers == []

    again = ensure_twin(Session(conn), describe_table(Session(conn), "Sales", "Revenues"), spec, partitions)
    assert again == []


def test_check_mode_creates_nothing(conn, awkward):
    session, spec, info, partitions, created, _unused = build(
        conn, dict(table='"Sales"."Revenues"', partition_key="occurred_at", strategy="range", interval="quarterly"),
        check_mode=True)
    assert created and len(session.queries) == len(created)
    assert session.queries[0].startswith('CREATE TABLE "Sales"."Revenues_partitioned" (')
    assert any(q.startswith('CREATE TABLE "Sales"."Revenues_2025_q1" PARTITION OF') for q in session.queries)
    assert scalar(conn, "SELECT count(*) FROM pg_class WHERE relname IN ('Revenues_partitioned', 'Revenues_2025_q1')") == 0
    # and the same statements, run for real, create the same things
    _unused, _unused, _unused, _unused, real, _unused = build(
        conn, dict(table='"Sales"."Revenues"', partition_key="occurred_at", strategy="range", interval="quarterly"))
    assert real == created


def test_missing_pieces_are_repaired(conn):
    spec, _unused, partitions = lab_twin(conn)
    conn.cursor().execute("DROP INDEX public.revenues_property_idx_p; DROP TABLE public.revenues_2025; "
                          "COMMENT ON TABLE public.revenues_partitioned IS NULL; COMMENT ON TABLE public.revenues IS 'x'")
    info = describe_table(Session(conn), "public", "revenues")
    again = ensure_twin(Session(conn), info, spec, partitions)
    assert again == ["index public.revenues_property_idx_p", "partition public.revenues_2025",
                     "comment on public.revenues_partitioned"]
    assert ensure_twin(Session(conn), info, spec, partitions) == []


def test_a_foreign_table_in_the_way_is_refused(conn):
    conn.cursor().execute(LAB_SQL + "CREATE TABLE public.revenues_2024 (x int);")
    with pytest.raises(PartitioningError, match="revenues_2024 exists and is not a partition"):
        build(conn, LAB_YEARLY)
    conn.cursor().execute("DROP TABLE public.revenues_2024, public.revenues_partitioned")
    conn.cursor().execute("CREATE TABLE public.revenues_partitioned (x int)")
    with pytest.raises(PartitioningError, match="not a partitioned table"):
        build(conn, LAB_YEARLY)


def test_hash_and_list_twins(conn):
    conn.cursor().execute("""
        CREATE TABLE balances (org_id integer NOT NULL, day date NOT NULL, cents bigint NOT NULL DEFAULT 0,
                               status text NOT NULL, PRIMARY KEY (org_id, day));
        CREATE INDEX balances_status_idx ON balances (status);
        INSERT INTO balances SELECT g % 37, date '2025-01-01' + g / 37, g, (ARRAY['open', 'paid'])[1 + g % 2]
          FROM generate_series(0, 999) g;""")
    session, spec, info, partitions, created, warnings = build(
        conn, dict(table="balances", partition_key="org_id", strategy="hash", partitions=4))
    assert [p.name for p in partitions] == ["balances_p00", "balances_p01", "balances_p02", "balances_p03"]
    assert not any("primary key" in w for w in warnings)       # org_id is in the key already
    copy_rows(conn, info, spec.twin)
    assert same_rows(conn, info, spec.twin)
    assert describe_table(Session(conn), *spec.twin).pk_columns == ["org_id", "day"]

    conn.cursor().execute("CREATE TABLE ledger AS SELECT * FROM balances; ALTER TABLE ledger ADD PRIMARY KEY (org_id, day)")
    session, spec, info, partitions, created, warnings = build(
        conn, dict(table="ledger", partition_key="status", strategy="list", values={"open": ["open"], "paid": ["paid"]}))
    assert [p.name for p in partitions] == ["ledger_open", "ledger_paid", "ledger_default"]
    copy_rows(conn, info, spec.twin)
    assert scalar(conn, "SELECT count(*) FROM ledger_open") == 500
    assert scalar(conn, "SELECT count(*) FROM ledger_default") == 0
    assert describe_table(Session(conn), *spec.twin).pk_columns == ["org_id", "day", "status"]


def test_virtual_generated_column_pg18(conn):
    if conn.server_version < 180000:
        pytest.skip("virtual generated columns are PostgreSQL 18+")
    conn.cursor().execute("CREATE TABLE t (id int PRIMARY KEY, d date NOT NULL, a int NOT NULL, "
                          "b int GENERATED ALWAYS AS (a * 2) VIRTUAL);"
                          "INSERT INTO t (id, d, a) SELECT g, date '2025-01-01' + g, g FROM generate_series(1, 100) g")
    _unused, spec, info, _unused, _unused, _unused = build(conn, dict(table="t", partition_key="d", strategy="range", interval="monthly"))
    copy_rows(conn, info, spec.twin)
    assert same_rows(conn, info, spec.twin)
    assert describe_table(Session(conn), *spec.twin).column("b").generated == "v"


def test_replica_identity_index_and_exclusion(conn):
    conn.cursor().execute("""
        CREATE TABLE accounts (id integer NOT NULL, org_id integer NOT NULL, name text NOT NULL,
                               PRIMARY KEY (id),
                               CONSTRAINT accounts_one_name EXCLUDE USING btree (org_id WITH =, name WITH =));
        CREATE UNIQUE INDEX accounts_org_id_uidx ON accounts (org_id, id);
        ALTER TABLE accounts REPLICA IDENTITY USING INDEX accounts_org_id_uidx;
        INSERT INTO accounts SELECT g, g % 5, 'n' || g FROM generate_series(1, 200) g;""")
    session, spec, info, partitions, created, warnings = build(
        conn, dict(table="accounts", partition_key="org_id", strategy="hash", partitions=2))
    copy_rows(conn, info, spec.twin)
    assert same_rows(conn, info, spec.twin)
    cur = conn.cursor()
    cur.execute("SELECT c.relname, c.relreplident, (SELECT i.relname FROM pg_index x JOIN pg_class i "
                "ON i.oid = x.indexrelid WHERE x.indrelid = c.oid AND x.indisreplident) FROM pg_class c "
                "WHERE c.relname LIKE 'accounts\\_p%%' AND c.relkind IN ('r', 'p') ORDER BY 1")
    got = cur.fetchall()
    assert [(n, r) for n, r, _unused in got] == [("accounts_p00", "i"), ("accounts_p01", "i"),
                                                 ("accounts_partitioned", "i")]
    assert got[2][2] == "accounts_org_id_uidx_p" and all(ix for _unused, _unused, ix in got)
    twin = describe_table(Session(conn), *spec.twin)
    exclusion = [c.name for c in twin.constraints if c.type == "x"]
    if conn.server_version >= 170000:
        assert exclusion == ["accounts_one_name_p"] and not any("exclusion" in w for w in warnings)
    else:
        assert exclusion == [] and any("exclusion constraint accounts_one_name" in w for w in warnings)
    assert ensure_twin(Session(conn), info, spec, partitions) == []


def test_replica_identity_full(conn):
    conn.cursor().execute("CREATE TABLE notes (id int PRIMARY KEY, kind text NOT NULL, body text);"
                          "ALTER TABLE notes REPLICA IDENTITY FULL")
    session, spec, info, partitions, created, _unused = build(
        conn, dict(table="notes", partition_key="kind", strategy="list", values={"a": ["a"], "b": ["b"]}))
    assert [c for c in created if c.startswith("replica identity")] == [
        "replica identity of public.notes_partitioned", "replica identity of public.notes_a",
        "replica identity of public.notes_b", "replica identity of public.notes_default"]
    assert scalar(conn, "SELECT string_agg(DISTINCT relreplident::text, '') FROM pg_class "
                        "WHERE relname LIKE 'notes\\_%%' AND relkind IN ('r', 'p')") == "f"
    assert ensure_twin(Session(conn), info, spec, partitions) == []


def test_a_column_added_to_the_original_reaches_the_twin(conn):
    spec, _unused, partitions = lab_twin(conn)
    conn.cursor().execute("ALTER TABLE public.revenues ADD COLUMN vat_cents bigint NOT NULL DEFAULT 0, "
                          "ADD COLUMN note varchar(20) COLLATE \"C\"")
    info = describe_table(Session(conn), "public", "revenues")
    assert ensure_twin(Session(conn), info, spec, partitions) == [
        "column public.revenues_partitioned.vat_cents", "column public.revenues_partitioned.note"]
    copy_rows(conn, info, spec.twin)
    assert same_rows(conn, info, spec.twin)
    conn.cursor().execute("ALTER TABLE public.revenues ALTER COLUMN note TYPE text")
    with pytest.raises(PartitioningError, match="Column note of public.revenues_partitioned is character varying"):
        ensure_twin(Session(conn), describe_table(Session(conn), "public", "revenues"), spec, partitions)


def test_the_lab_schema_with_the_lab_inventory(conn):
    """The real lab tables (lab/schema.py) with the specs of inventories/lab, small."""
    import os

    import psycopg2
    import yaml

    from lab.schema import create_demo_schema

    from ..helpers.paths import ROOT

    try:
        create_demo_schema(conn, rows=3000)
    except psycopg2.IntegrityError:      # two tests creating the cluster-wide lab roles at once
        create_demo_schema(conn, rows=3000)
    with open(os.path.join(ROOT, "inventories", "lab", "group_vars", "partitioning_hosts.yml")) as f:
        specs = yaml.safe_load(f)["partitioning_tables"]
    assert [s["table"] for s in specs] == ["public.revenues", "public.expenses", "public.daily_cash_balances"]
    for raw in specs:
        _unused, spec, info, partitions, created, _unused = build(conn, raw)
        assert created[0] == "table public.%s" % spec.twin[1]
        copy_rows(conn, info, spec.twin)
        assert same_rows(conn, info, spec.twin), spec.table_name
        assert scalar(conn, 'SELECT count(*) FROM "%s"."%s"' % spec.twin) > 0
        twin = describe_table(Session(conn), *spec.twin)
        assert set((g.grantee, g.privilege) for g in twin.grants) == set((g.grantee, g.privilege) for g in info.grants)
        assert twin.comment == info.comment
        assert ensure_twin(Session(conn), info, spec, partitions) == []


def test_what_cannot_be_carried_over_is_skipped_and_said(conn):
    cur = conn.cursor()
    cur.execute("""
        CREATE TABLE other (id int PRIMARY KEY);
        CREATE TABLE tree (id int PRIMARY KEY, d date NOT NULL, parent_id int REFERENCES tree (id), v int,
                           ref int, CONSTRAINT v_pos CHECK (v > 0) NO INHERIT);
        INSERT INTO tree SELECT g, date '2025-01-01' + g, NULL, 1 + g % 10, NULL FROM generate_series(1, 100) g;
        ALTER TABLE tree ADD CONSTRAINT tree_ref_fk FOREIGN KEY (ref) REFERENCES other (id) NOT VALID;""")
    with pytest.raises(Exception):
        cur.execute("CREATE UNIQUE INDEX CONCURRENTLY tree_v_uidx ON tree (v)")   # duplicates: left invalid
    _unused, spec, info, partitions, created, warnings = build(
        conn, dict(table="tree", partition_key="d", strategy="range", interval="yearly"))
    said = "\n".join(warnings)
    assert "foreign key tree_parent_id_fkey references the table itself" in said
    assert "check constraint v_pos is NO INHERIT" in said
    assert "index tree_v_uidx is invalid" in said
    assert ("foreign key tree_ref_fk is NOT VALID" in said) == (conn.server_version < 180000)
    twin = describe_table(Session(conn), *spec.twin)
    assert [fk.name for fk in twin.foreign_keys] == ["tree_ref_fk_p"]
    assert twin.foreign_keys[0].validated == (conn.server_version < 180000)
    assert [c.name for c in twin.constraints if c.type == "c"] == []
    assert "tree_v_uidx_p" not in [i.name for i in twin.indexes]
    copy_rows(conn, info, spec.twin)
    assert same_rows(conn, info, spec.twin)
    assert ensure_twin(Session(conn), info, spec, partitions) == []


def test_mixed_case_key_and_long_names(conn):
    long = "ledger_lines_of_the_accounting_department_for_every_tenant_x"   # 61 bytes
    conn.cursor().execute("""
        CREATE SCHEMA "Mixed Case";
        CREATE TABLE "Mixed Case"."%(t)s" ("Id" bigint PRIMARY KEY, "BookedOn" date NOT NULL, "Ref" text NOT NULL);
        CREATE UNIQUE INDEX "%(t)s_ref_key" ON "Mixed Case"."%(t)s" ("Ref");
        INSERT INTO "Mixed Case"."%(t)s" SELECT g, date '2025-06-01' + g, 'r' || g FROM generate_series(1, 300) g;
        """ % dict(t=long))
    raw = dict(table='"Mixed Case"."%s"' % long, partition_key='"BookedOn"', strategy="range", interval="monthly")
    _unused, spec, info, partitions, created, _unused = build(conn, raw)
    assert len(spec.twin[1].encode()) <= 63 and spec.twin[1].endswith("_partitioned")
    twin = describe_table(Session(conn), *spec.twin)
    assert twin.pk_columns == ["Id", "BookedOn"]
    [uidx] = [i for i in twin.indexes if not i.is_primary]
    [orig] = [i for i in info.indexes if not i.is_primary]        # its name was cut to 63 bytes by PostgreSQL
    assert uidx.name == twin_index_name(orig.name) and len(uidx.name.encode()) <= 63
    assert uidx.key_columns == ["Ref", "BookedOn"]
    copy_rows(conn, info, spec.twin)
    assert same_rows(conn, info, spec.twin)
    assert ensure_twin(Session(conn), info, spec, partitions) == []


def test_integer_range_twin(conn):
    conn.cursor().execute("CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                          "payload jsonb NOT NULL DEFAULT '{}');"
                          "CREATE INDEX events_payload_idx ON events USING gin (payload jsonb_path_ops);"
                          "INSERT INTO events (payload) SELECT jsonb_build_object('n', g) FROM generate_series(1, 3500) g")
    _unused, spec, info, partitions, created, warnings = build(
        conn, dict(table="events", partition_key="id", strategy="range", interval=1000))
    assert warnings == []                       # the key is the primary key already
    copy_rows(conn, info, spec.twin)
    assert same_rows(conn, info, spec.twin)
    assert scalar(conn, "SELECT count(*) FROM events_1000") == 1000
    [ix] = [i for i in describe_table(Session(conn), *spec.twin).indexes if i.method == "gin"]
    assert ix.key_specs == ['"payload" pg_catalog.jsonb_path_ops']
    assert ensure_twin(Session(conn), info, spec, partitions) == []


def test_an_index_added_to_a_filled_twin_is_built_online(conn):
    spec, info, partitions = lab_twin(conn, premake=0)
    copy_rows(conn, info, spec.twin)
    conn.cursor().execute("CREATE INDEX revenues_category_idx ON public.revenues (category) WHERE category IS NOT NULL")
    # an interrupted earlier attempt: the parent index exists, one partition's index is attached
    conn.cursor().execute(
        "CREATE INDEX revenues_category_idx_p ON ONLY public.revenues_partitioned (category) WHERE category IS NOT NULL;"
        "CREATE INDEX revenues_2024_x ON public.revenues_2024 (category) WHERE category IS NOT NULL;"
        "ALTER INDEX revenues_category_idx_p ATTACH PARTITION revenues_2024_x")
    info = describe_table(Session(conn), "public", "revenues")
    session = Session(conn)
    created = ensure_twin(session, info, spec, partitions)
    assert created == [
        "index public.revenues_2025_revenues_category_idx",
        "attached public.revenues_2025_revenues_category_idx to public.revenues_category_idx_p",
        "index public.revenues_2026_revenues_category_idx",
        "attached public.revenues_2026_revenues_category_idx to public.revenues_category_idx_p",
        "index public.revenues_default_revenues_category_idx",
        "attached public.revenues_default_revenues_category_idx to public.revenues_category_idx_p"]
    assert session.queries[0].startswith('CREATE INDEX CONCURRENTLY "revenues_2025_revenues_category_idx" ON '
                                         '"public"."revenues_2025"')
    twin = describe_table(Session(conn), *spec.twin)
    ix = [i for i in twin.indexes if i.name == "revenues_category_idx_p"][0]
    assert ix.is_valid and ix.predicate == "category IS NOT NULL"
    assert ensure_twin(Session(conn), info, spec, partitions) == []
