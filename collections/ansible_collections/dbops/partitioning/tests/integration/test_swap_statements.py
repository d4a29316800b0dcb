"""The swap's statement builder on a real server: the pair captured from phase 1's twin of the
fixture table (views, a materialized view, grants, RLS, a trigger, a publication) gives
statements that the server-less rendering of tests/unit/test_swap_statements.py prints exactly
as psycopg2 does through a connection."""
from ..helpers.phase3_setup import make_verified
from ..helpers.render_sql import render

from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.pair import capture
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.statements import (
    SwapNames, swap_statements)


def test_rendering_without_a_server_matches_psycopg2(pg, db):
    make_verified(pg, db, rows=50)
    conn = pg.connect(db)
    try:
        conn.cursor().execute("COMMENT ON TABLE public.revenues IS 'it''s money, \\ in'")   # quotes, a backslash
        pair = capture(Session(conn), "public", "revenues", "revenues_partitioned")
        assert pair.active.views and pair.active.publications and pair.active.rls_enabled
        stmts = swap_statements(pair, SwapNames("revenues_old", "_old", "_p"), {}, "partitioning",
                                "public.revenues", 50)
        assert [render(s) for s in stmts] == [s.as_string(conn) for s in stmts]
    finally:
        conn.close()
