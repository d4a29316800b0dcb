"""describe_table on real servers: the lab's revenues table and an awkward one that has every
feature a migration must carry over (identity ALWAYS / BY DEFAULT, serial, stored generated,
quoted mixed-case names, a non-public schema, a composite primary key, partial / expression /
INCLUDE / GIN / BRIN indexes, unique, check and exclusion constraints, a collation, comments,
grants to two roles and per column, an owner, storage parameters, foreign keys in and out,
views and a materialized view, an RLS policy, a publication, a user trigger)."""
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils import catalog
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.sync import application_triggers

from ..helpers.catalog_tables import LAB_SQL


def test_missing_table_is_none(conn):
    assert describe_table(Session(conn), "public", "nope") is None


def test_a_view_is_not_a_table(conn):
    conn.cursor().execute("CREATE VIEW v AS SELECT 1 AS x")
    assert describe_table(Session(conn), "public", "v") is None


def test_lab_revenues(conn):
    conn.cursor().execute(LAB_SQL)
    conn.cursor().execute("ANALYZE public.revenues")
    info = describe_table(Session(conn), "public", "revenues")
    assert info.kind == "r" and info.persistence == "p" and info.owner == "postgres"
    assert [c.name for c in info.columns][:3] == ["id", "org_id", "property_id"]
    assert info.column("id").default == "nextval('revenues_id_seq'::regclass)"
    assert info.column("currency").type == "character(3)"
    assert info.column("occurred_at").type == "timestamp with time zone"
    assert info.column("description").not_null is False
    assert info.pk_columns == ["id"]
    assert info.primary_key.name == "revenues_pkey" and info.primary_key.index_name == "revenues_pkey"
    assert [i.name for i in info.indexes] == ["revenues_org_occurred_idx", "revenues_pkey", "revenues_property_idx"]
    assert info.estimated_rows == 2000
    seq = info.owned_sequences[0]
    assert (seq.name, seq.column, seq.identity, seq.last_value) == ("revenues_id_seq", "id", False, 2000)
    assert [(v.name, v.kind) for v in info.views] == [("revenues_monthly", "v")]
    assert "amount_cents) AS total" in info.views[0].definition  # pg15 qualifies columns, 16+ not
    assert info.constraints == [] and info.foreign_keys == [] and info.referenced_by == []
    # A NOT NULL column is a column fact on every version (contype 'n' on 18 is not a constraint here).
    assert all(c.type != "n" for c in info.constraints)


def test_awkward_columns(conn, awkward):
    info = describe_table(Session(conn), "Sales", "Revenues")
    assert (info.schema, info.name) == ("Sales", "Revenues")
    cols = dict((c.name, c) for c in info.columns)
    assert cols["id"].identity == "a" and cols["id"].default is None and cols["id"].not_null
    assert cols["ext_ref"].identity == "d"
    assert cols["line_no"].default == "nextval('\"Sales\".\"Revenues_line_no_seq\"'::regclass)"
    assert cols["amount_eur"].generated == "s" and cols["amount_eur"].default is None
    assert cols["amount_eur"].generation_expr == "((amount_cents)::numeric / 100.0)"
    assert cols["Description"].collation == '"C"' or cols["Description"].collation.endswith('."C"')
    assert cols["status"].collation is None
    assert cols["OrgId"].comment == "Tenant" and info.comment == "Revenue lines"
    assert cols["tags"].type == "text[]" and cols["tags"].default == "'{}'::text[]"
    assert [g.privilege for g in cols["status"].acl] == ["UPDATE"]
    assert cols["status"].acl[0].grantee == awkward + "_reader"
    assert (cols["Description"].statistics_target, cols["Description"].storage) == (500, "e")
    assert cols["tags"].compression == "p" and cols["status"].compression is None
    assert (cols["status"].statistics_target, cols["status"].storage) == (None, None)
    stats = dict((st.name, st) for st in info.statistics)
    assert (stats["revenues_org_status"].kinds, stats["revenues_org_status"].columns) == (["dependencies"],
                                                                                          '"OrgId", status')
    assert (stats["revenues_org_customer"].kinds, stats["revenues_org_customer"].target) == ([], 300)


def test_awkward_constraints_and_keys(conn, awkward):
    info = describe_table(Session(conn), "Sales", "Revenues")
    assert info.pk_columns == ["id", "OrgId"]
    by_name = dict((c.name, c) for c in info.constraints)
    assert set(by_name) == {"revenues_status_check", "revenues_ext_ref_key", "revenues_no_overlap",
                            "Revenues_amount_cents_check"}
    assert by_name["revenues_ext_ref_key"].type == "u" and by_name["revenues_ext_ref_key"].columns == ["ext_ref"]
    assert by_name["revenues_no_overlap"].type == "x"
    assert by_name["revenues_no_overlap"].definition == "EXCLUDE USING gist (during WITH &&)"
    assert by_name["Revenues_amount_cents_check"].definition == "CHECK ((amount_cents >= 0))"
    [fk] = info.foreign_keys
    assert fk.ref_table == ("Sales", "customers") and fk.columns == ["customer_id"] and fk.ref_columns == ["id"]
    assert "ON DELETE SET NULL" in fk.definition
    [inbound] = info.referenced_by
    assert inbound.name == "refunds_revenue_fk" and inbound.table == ("Sales", "refunds")
    assert inbound.columns == ["revenue_id", "org_id"] and inbound.ref_columns == ["id", "OrgId"]


def test_awkward_indexes(conn, awkward):
    info = describe_table(Session(conn), "Sales", "Revenues")
    ix = dict((i.name, i) for i in info.indexes)
    assert set(ix) == {"Revenues_pkey", "revenues_ext_ref_key", "revenues_no_overlap", "revenues_open_idx",
                       "Revenues_lower_idx", "revenues_org_incl_idx", "revenues_tags_gin",
                       "revenues_occurred_brin", "revenues_line_no_uidx"}
    assert ix["Revenues_pkey"].is_primary and ix["Revenues_pkey"].constraint_type == "p"
    assert ix["Revenues_pkey"].key_columns == ["id", "OrgId"]
    assert ix["revenues_open_idx"].predicate == "status = 'open'::text"
    assert ix["revenues_open_idx"].key_specs == ['"occurred_at" pg_catalog.timestamptz_ops DESC']
    assert ix["Revenues_lower_idx"].key_columns == [None]
    assert ix["Revenues_lower_idx"].key_definitions == ['lower("Description")']
    assert ix["Revenues_lower_idx"].key_specs[0].startswith('(lower("Description")) COLLATE ')
    assert ix["Revenues_lower_idx"].key_specs[0].endswith("pg_catalog.text_pattern_ops")
    assert ix["revenues_org_incl_idx"].include_columns == ["amount_cents"]
    assert ix["revenues_org_incl_idx"].key_columns == ["OrgId", "occurred_at"]
    assert ix["revenues_tags_gin"].method == "gin" and ix["revenues_occurred_brin"].method == "brin"
    assert ix["revenues_occurred_brin"].reloptions == ["pages_per_range=16"]
    assert ix["revenues_line_no_uidx"].is_unique and ix["revenues_line_no_uidx"].constraint_name is None
    assert ix["revenues_no_overlap"].constraint_type == "x"
    assert ix["revenues_open_idx"].comment == "open lines"
    assert all(i.is_valid for i in info.indexes)


def test_awkward_security_and_storage(conn, awkward):
    r = awkward
    info = describe_table(Session(conn), "Sales", "Revenues")
    assert info.owner == r + "_owner"
    grants = set((g.grantee, g.privilege, g.grantable) for g in info.grants)
    assert (r + "_reader", "SELECT", False) in grants
    assert {(r + "_writer", p, True) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")} <= grants
    assert (r + "_owner", "TRUNCATE", False) in grants
    assert not any(g.grantee == "postgres" for g in info.grants)
    assert sorted(info.reloptions) == ["autovacuum_vacuum_scale_factor=0.05", "fillfactor=80"]
    assert info.toast_reloptions == ["toast.autovacuum_enabled=false"]
    assert info.rls_enabled and not info.rls_forced
    pol = dict((p.name, p) for p in info.policies)
    assert pol["tenant_isolation"].roles == sorted([r + "_reader", r + "_writer"])
    assert pol["tenant_isolation"].command == "ALL" and pol["tenant_isolation"].permissive
    assert "current_setting('app.org'::text, true)" in pol["tenant_isolation"].using
    assert pol["tenant_isolation"].with_check is not None
    assert pol["no_void"].command == "DELETE" and not pol["no_void"].permissive
    assert pol["no_void"].roles == ["PUBLIC"] and pol["no_void"].with_check is None
    assert pol["no_void"].definition.startswith('CREATE POLICY "no_void" ON "Sales"."Revenues" AS RESTRICTIVE FOR DELETE TO PUBLIC')
    assert [(p.name, p.via_root) for p in info.publications] == [(r + "_pub", False)]
    assert info.explicit_publications == [r + "_pub"]
    assert info.replica_identity == "d"


def test_awkward_dependents(conn, awkward):
    info = describe_table(Session(conn), "Sales", "Revenues")
    assert [(v.name, v.kind) for v in info.views] == [
        ("open_revenues", "v"), ("revenue_by_org", "m"), ("open_totals", "v")]
    views = dict((v.name, v) for v in info.views)
    assert views["open_totals"].depends_on_views == [("Sales", "open_revenues")]
    assert views["open_revenues"].has_dependents and not views["open_totals"].has_dependents
    assert views["open_revenues"].comment == "open only"
    assert any(a.startswith(awkward + "_reader=r/") for a in views["open_revenues"].acl)
    assert [(i.name, i.definition) for i in views["revenue_by_org"].indexes] == [(
        "revenue_by_org_key", 'CREATE UNIQUE INDEX revenue_by_org_key ON "Sales".revenue_by_org USING btree ("OrgId")')]
    assert info.sql_functions == ['"Sales".revenue_count()']
    assert sorted(t.name for t in info.triggers) == ["partitioning_sync", "revenues_touch"]
    assert [t.name for t in application_triggers(info.triggers)] == ["revenues_touch"]   # ours left out
    assert application_triggers(info.triggers)[0].function == ("Sales", "touch")
    seqs = dict((s.column, s) for s in info.owned_sequences)
    assert set(seqs) == {"id", "line_no", "ext_ref"}
    assert seqs["id"].identity and seqs["ext_ref"].identity and not seqs["line_no"].identity
    assert seqs["ext_ref"].start == 1000 and seqs["ext_ref"].increment == 5
    assert seqs["id"].last_value == 500 and seqs["line_no"].last_value == 500
    assert seqs["ext_ref"].last_value == 1000 + 499 * 5


def test_fresh_sequence_has_no_last_value(conn):
    conn.cursor().execute("CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, v int)")
    info = describe_table(Session(conn), "public", "t")
    assert info.owned_sequences[0].last_value is None
    assert info.owned_sequences[0].data_type == "bigint"


def test_virtual_generated_column_pg18(conn):
    if conn.server_version < 180000:
        pytest.skip("virtual generated columns are PostgreSQL 18+")
    conn.cursor().execute("CREATE TABLE t (id int PRIMARY KEY, a int NOT NULL, "
                          "b int GENERATED ALWAYS AS (a * 2) VIRTUAL)")
    info = describe_table(Session(conn), "public", "t")
    b = info.column("b")
    assert (b.generated, b.generation_expr, b.default) == ("v", "(a * 2)", None)
    assert info.constraints == []          # NOT NULL constraints ('n' on 18) are not listed
    assert info.column("a").not_null


def test_dependents_as_the_switchover_re_creates_them(conn, awkward):
    """Views with their depth, grants (PUBLIC spelled 'PUBLIC'), INSTEAD OF triggers and bound
    functions; definitions printed with every name qualified and without pretty-printing."""
    r = awkward
    conn.cursor().execute("""
        GRANT SELECT ON "Sales".open_totals TO PUBLIC;
        CREATE FUNCTION "Sales".no_write() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
        CREATE TRIGGER open_revenues_write INSTEAD OF INSERT ON "Sales".open_revenues
            FOR EACH ROW EXECUTE FUNCTION "Sales".no_write();
        CREATE FUNCTION "Sales".open_count() RETURNS bigint LANGUAGE sql
            BEGIN ATOMIC SELECT count(*) FROM "Sales".open_totals; END;
        CREATE VIEW public.plain AS SELECT id FROM "Sales"."Revenues" WHERE id * 2 > 0;
    """)
    info = describe_table(Session(conn), "Sales", "Revenues")
    views = dict((v.name, v) for v in info.views)
    assert (views["open_revenues"].depth, views["open_revenues"].reads_table) == (1, True)
    assert (views["open_totals"].depth, views["open_totals"].reads_table) == (2, False)
    assert (r + "_reader", "SELECT", False) in [(g.grantee, g.privilege, g.grantable)
                                                for g in views["open_revenues"].grants]
    assert ("PUBLIC", "SELECT") in [(g.grantee, g.privilege) for g in views["open_totals"].grants]
    [trigger] = views["open_revenues"].triggers
    assert trigger.name == "open_revenues_write" and trigger.function == ("Sales", "no_write")
    assert 'ON "Sales".open_revenues' in trigger.definition
    assert views["open_totals"].sql_functions == ['"Sales".open_count()']
    assert info.sql_functions == ['"Sales".revenue_count()']
    # not pretty-printed: every parenthesis kept (pretty: "WHERE (id * 2) > 0")
    assert 'FROM "Sales"."Revenues"' in views["plain"].definition and "WHERE ((" in views["plain"].definition
    assert info.deparsed_name == '"Sales"."Revenues"' and info.quoted == ('"Sales"', '"Revenues"')


def test_definitions_of_dependents_name_their_schema(conn):
    """On the search path or not, a view's definition names the table with its schema: the
    switchover finds it there and re-creates the view from this text after the renames."""
    conn.cursor().execute(LAB_SQL + "GRANT SELECT ON public.revenues TO PUBLIC;")
    info = describe_table(Session(conn), "public", "revenues")
    assert "FROM public.revenues" in info.views[0].definition
    assert info.column("id").default == "nextval('revenues_id_seq'::regclass)"   # the table's own: as seen
    assert ("PUBLIC", "SELECT") in [(g.grantee, g.privilege) for g in info.grants]
    assert Session(conn).scalar("SHOW search_path") == '"$user", public'       # restored


def test_publication_membership_row_filter_and_columns(conn):
    if conn.server_version < 150000:
        pytest.skip("publication row filters and column lists are PostgreSQL 15+")
    conn.cursor().execute("""
        CREATE TABLE t (id int PRIMARY KEY, region text, secret text);
        CREATE PUBLICATION t_pub FOR TABLE t (id, region) WHERE (region <> 'test');
        CREATE PUBLICATION all_pub FOR ALL TABLES;
    """)
    try:
        info = describe_table(Session(conn), "public", "t")
        pubs = dict((p.name, p) for p in info.publications)
        assert (pubs["t_pub"].explicit, pubs["t_pub"].columns) == (True, ["id", "region"])
        assert pubs["t_pub"].row_filter == "(region <> 'test'::text)"
        assert (pubs["all_pub"].explicit, pubs["all_pub"].row_filter, pubs["all_pub"].columns) == (False, None, None)
        assert info.explicit_publications == ["t_pub"]
    finally:
        conn.cursor().execute("DROP PUBLICATION t_pub, all_pub")


def test_partitions_and_relations(conn):
    conn.cursor().execute("""
        CREATE TABLE p (id int, k int, PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
        CREATE TABLE p_1 PARTITION OF p FOR VALUES FROM (0) TO (10);
        CREATE TABLE p_d PARTITION OF p DEFAULT;
        CREATE VIEW pv AS SELECT 1 AS x;
    """)
    s = Session(conn)
    info = describe_table(s, "public", "p")
    assert info.kind == "p" and info.partition_key == "RANGE (k)"
    assert [(x.name, x.bound) for x in info.partitions] == [("p_1", "FOR VALUES FROM (0) TO (10)"),
                                                            ("p_d", "DEFAULT")]
    assert "(k >= 0)" in info.partitions[0].constraint and "NOT" in info.partitions[1].constraint
    p_1 = catalog.describe_relation(s, "public", "p_1")
    assert (p_1.parent, p_1.parents, p_1.children, p_1.typed) == (info.oid, 1, 0, False)
    assert (info.parents, info.children) == (0, 2)
    assert catalog.describe_relation(s, "public", "pv").kind == "v"
    assert catalog.describe_relation(s, "public", "nope") is None
    assert catalog.attached_indexes(s, "public", "p_pkey") == {("public", "p_1"): "p_1_pkey",
                                                               ("public", "p_d"): "p_d_pkey"}
    assert catalog.index_is_valid(s, "public", "p_1_pkey") is True
    assert catalog.index_is_valid(s, "public", "nope") is None
