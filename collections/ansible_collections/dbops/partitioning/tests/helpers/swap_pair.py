"""A captured swap pair built by hand, as ``describe_table`` would read it: public.revenues (views,
a view of a view, a materialized view with an index, an INSTEAD OF trigger, an identity column,
RLS, grants with PUBLIC among them, a trigger, a publication with a row filter and a column
list) and its partitioned twin as phase 1 made it. For unit tests of the pure switchover pieces."""
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import (
    Column, Constraint, DependentView, ForeignKey, Grant, Index, OwnedSequence, Policy, Publication, TableInfo,
    Trigger, ViewIndex)
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.pair import SwapPair


def table(name, oid, **kw):
    fields = dict(oid=oid, schema="public", name=name, kind="r", persistence="p", owner="app_owner", acl=[],
                  comment=None, reloptions=[], tablespace=None, replica_identity="d", rls_enabled=False,
                  rls_forced=False, estimated_rows=0, quoted=("public", name))
    fields.update(kw)
    return TableInfo(**fields)


def column(name, attnum, type_, identity="", generated=""):
    return Column(name=name, attnum=attnum, type=type_, type_oid=0, not_null=name == "id", default=None,
                  identity=identity, generated=generated, generation_expr=None, collation=None, comment=None)


def index(name, primary=False, constraint=None):
    return Index(name=name, oid=0, definition="", is_unique=primary, is_primary=primary, constraint_name=constraint,
                 constraint_type="p" if constraint else None, method="btree", key_columns=[], key_definitions=[],
                 include_columns=[], predicate=None, reloptions=[], tablespace=None, is_valid=True, comment=None)


def grant(grantee, privilege, grantable=False):
    return Grant(grantee=grantee, privilege=privilege, grantable=grantable, grantor="app_owner")


def view(name, oid, definition, depth=1, kind="v", **kw):
    return DependentView(schema="public", name=name, kind=kind, definition=definition, owner="app_owner", acl=[],
                         comment=kw.pop("comment", None), reloptions=kw.pop("reloptions", []),
                         depends_on_views=[], indexes=kw.pop("indexes", []), has_dependents=False, oid=oid,
                         depth=depth, reads_table=depth == 1, **kw)


COLUMNS = [column("id", 1, "bigint", identity="a"), column("occurred_at", 2, "timestamp with time zone"),
           column("region", 3, "text"), column("amount", 4, "numeric"),
           column("amount_cents", 5, "numeric", generated="s")]
TENANT = Policy(name="tenant", definition="", command="ALL", permissive=True, roles=["app_rw"],
                using="(region = current_setting('app.region'::text))", with_check=None)


def revenues():
    """public.revenues as describe_table reads it before the swap."""
    return table(
        "revenues", 16400, comment="money in", rls_enabled=True,
        columns=COLUMNS,
        primary_key=Constraint(name="revenues_pkey", type="p", definition="PRIMARY KEY (id)", columns=["id"],
                               validated=True, deferrable=False, comment=None, index_name="revenues_pkey"),
        indexes=[index("revenues_pkey", primary=True, constraint="revenues_pkey"), index("revenues_region_idx")],
        foreign_keys=[ForeignKey(name="revenues_org_fk", definition="FOREIGN KEY (org) REFERENCES public.orgs(id)",
                                 table=("public", "revenues"), columns=["org"], ref_table=("public", "orgs"),
                                 ref_columns=["id"])],
        grants=[grant("app_owner", "SELECT"), grant("app_rw", "INSERT"), grant("app_rw", "SELECT"),
                grant("PUBLIC", "SELECT"), grant("auditor", "SELECT", grantable=True)],
        triggers=[Trigger(name="revenues_lower_region", enabled="O", function=("public", "lower_region"),
                          definition="CREATE TRIGGER revenues_lower_region BEFORE INSERT OR UPDATE ON public.revenues "
                                     "FOR EACH ROW EXECUTE FUNCTION public.lower_region()")],
        policies=[TENANT],
        owned_sequences=[OwnedSequence(schema="public", name="revenues_id_seq", column="id", identity=True)],
        views=[
            view("revenue_eu", 16500, " SELECT id, region, amount FROM public.revenues WHERE (region = 'eu'::text);",
                 comment="eu only", reloptions=["security_barrier=true", "check_option=local"],
                 grants=[grant("app_owner", "SELECT"), grant("reporting", "SELECT")],
                 column_comments=[("amount", "in euros")],
                 triggers=[Trigger(name="revenue_eu_insert", enabled="O", function=("public", "eu_insert"),
                                   definition="CREATE TRIGGER revenue_eu_insert INSTEAD OF INSERT ON public.revenue_eu "
                                              "FOR EACH ROW EXECUTE FUNCTION public.eu_insert()")]),
            view("revenue_eu_big", 16501, " SELECT id, amount FROM public.revenue_eu WHERE (amount > (1000)::numeric);",
                 depth=2),
            view("revenue_by_region", 16502, " SELECT region, sum(amount) AS total FROM public.revenues GROUP BY region;",
                 kind="m", grants=[grant("reporting", "SELECT")],
                 indexes=[ViewIndex("revenue_by_region_region", "CREATE UNIQUE INDEX revenue_by_region_region ON "
                                                                "public.revenue_by_region USING btree (region)")]),
        ],
        publications=[Publication(name="revenues_pub", via_root=False, explicit=True, columns=["id", "region", "amount"],
                                  row_filter="(region <> 'test'::text)"),
                      Publication(name="everything", via_root=True, explicit=False)])


def twin():
    """public.revenues_partitioned as phase 1 made it."""
    return table(
        "revenues_partitioned", 16600, kind="p", owner="postgres", comment="money in",
        columns=[column("id", 1, "bigint", identity="d")] + COLUMNS[1:],
        primary_key=Constraint(name="revenues_pkey_p", type="p", definition="PRIMARY KEY (id, occurred_at)",
                               columns=["id", "occurred_at"], validated=True, deferrable=False, comment=None,
                               index_name="revenues_pkey_p"),
        indexes=[index("revenues_pkey_p", primary=True, constraint="revenues_pkey_p"), index("revenues_region_idx_p")],
        foreign_keys=[ForeignKey(name="revenues_org_fk_p", definition="FOREIGN KEY (org) REFERENCES public.orgs(id)",
                                 table=("public", "revenues_partitioned"), columns=["org"],
                                 ref_table=("public", "orgs"), ref_columns=["id"])],
        grants=[grant("postgres", "SELECT"), grant("app_rw", "SELECT")],
        policies=[TENANT])


def pair():
    return SwapPair(active=revenues(), standby=twin(), sync_triggers=[
        dict(rel=("public", "revenues"), name="partitioning_sync", enabled="A", fn_schema="partitioning",
             fn_name="public__revenues__fwd"),
        dict(rel=("public", "revenues"), name="partitioning_sync_truncate", enabled="A", fn_schema="partitioning",
             fn_name="public__revenues__fwd")])
