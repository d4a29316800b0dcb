"""The swap's statements built from a captured pair alone, without a server: a snapshot of the
SQL for a table with views (a view of a view, a materialized view pre-built, an INSTEAD OF
trigger), an identity column, row-level security, grants (PUBLIC among them) and a publication
with a row filter and a column list.

psycopg2 prints an Identifier only through a live connection (libpq quotes it), so the
statements are rendered here from their composed parts with the same rules: identifiers always
double-quoted, strings as standard-conforming literals. tests/integration/test_swap_statements.py checks
that this rendering equals psycopg2's on a real server, statement for statement.
"""
import difflib
import os

from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.statements import (
    SwapNames, swap_statements)

from ..helpers.render_sql import render
from ..helpers.swap_pair import pair

SNAPSHOT = os.path.join(os.path.dirname(__file__), "snapshots", "swap_revenues.sql")


def statements():
    return swap_statements(pair(), SwapNames("revenues_old", "_old", "_p"),
                           prebuilt={"revenue_by_region": "revenue_by_region_swap"},
                           state_schema="partitioning", table_name="public.revenues", lock_timeout_ms=50)


def test_swap_statements_snapshot():
    got = "".join(render(s) + ";\n" for s in statements())
    if os.environ.get("UPDATE_SNAPSHOTS"):
        with open(SNAPSHOT, "w") as f:
            f.write(got)
    with open(SNAPSHOT) as f:
        want = f.read()
    assert got == want, "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                                     "snapshot", "built now"))


def test_the_lock_comes_first_and_views_are_dropped_before_the_renames():
    texts = [render(s) for s in statements()]
    assert texts[0] == "SET LOCAL lock_timeout = '50ms'"
    assert texts[1] == ('LOCK TABLE "public"."revenue_eu_big", "public"."revenue_eu", "public"."revenues", '
                        '"public"."revenues_partitioned" IN ACCESS EXCLUSIVE MODE')
    rename = texts.index('ALTER TABLE "public"."revenues" RENAME TO "revenues_old"')
    assert max(i for i, t in enumerate(texts) if t.startswith("DROP VIEW")) < rename
    assert min(i for i, t in enumerate(texts) if t.startswith("CREATE VIEW")) > rename


def test_not_pre_built_materialized_view_is_created_under_the_lock():
    texts = [render(s) for s in swap_statements(pair(), SwapNames("revenues_old", "_old", "_p"), {}, "partitioning",
                                                "public.revenues", 50)]
    assert ('CREATE MATERIALIZED VIEW "public"."revenue_by_region" AS  SELECT region, sum(amount) AS total '
            'FROM public.revenues GROUP BY region WITH DATA') in texts
    assert ("CREATE UNIQUE INDEX revenue_by_region_region ON public.revenue_by_region USING btree (region)") in texts
