"""playbooks/phase4_optimize.yml as an operator runs it on the lab's table: refused before the
switchover with nothing changed; after it, --check changes nothing, a run builds the spec's
indexes on every partition, premakes and installs the functions, a second run changes nothing;
partitioning_only selects the table."""
from ..helpers.maintenance import partitions, rows
from ..helpers.phase3_setup import make_verified
from ..helpers.playbook_runner import run_playbook
from ..helpers.switchover import switch

INDEXES = [dict(columns=["region", "occurred_at DESC"], include=["amount"]),
           dict(name="revenues_month_paid_idx", columns=["date_trunc('month', occurred_at AT TIME ZONE 'UTC')"],
                where="amount > 0")]
REVENUES = dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="monthly",
                premake=1, indexes=INDEXES)
NOW = {"partitioning_now": "2025-06-15T10:00:00Z"}
NAMES = ("revenues_region_occurred_at_idx", "revenues_month_paid_idx")


def index_tree(conn):
    """{index: (valid, number of partitions it is attached on)} for the spec's indexes."""
    return dict((r[0], (r[1], r[2])) for r in rows(conn, """
        SELECT i.relname, x.indisvalid, (SELECT count(*) FROM pg_inherits h WHERE h.inhparent = i.oid)
          FROM pg_class i JOIN pg_index x ON x.indexrelid = i.oid
         WHERE i.relname = ANY (%s) AND x.indrelid = 'public.revenues'::regclass""", (list(NAMES),)))


def test_phase4_on_the_lab(pg, db, conn):
    make_verified(pg, db, rows=300, extras=False)            # public.revenues, monthly 2025-01 .. 2025-06 + default
    before = run_playbook("phase4_optimize", pg, db, [REVENUES], extra_vars=NOW)
    assert before.failed and "phase 4 runs after the switchover" in before.output, before
    assert rows(conn, "SELECT count(*) FROM pg_class WHERE relname = ANY (%s)", (list(NAMES),)) == [(0,)]

    switch(pg, db)
    made = sorted(partitions(conn, "revenues"))
    check = run_playbook("phase4_optimize", pg, db, [REVENUES], extra_vars=NOW, check=True)
    assert not check.failed and check.changed >= 1, check
    assert "CREATE INDEX CONCURRENTLY" in check.output and "would be built" in check.output
    assert index_tree(conn) == {} and sorted(partitions(conn, "revenues")) == made

    first = run_playbook("phase4_optimize", pg, db, [REVENUES], extra_vars=NOW)
    assert not first.failed, first
    leaves = len(partitions(conn, "revenues"))
    assert "revenues_2025_07" in partitions(conn, "revenues")      # premake, after the indexes: it has them too
    assert index_tree(conn) == dict((n, (True, leaves)) for n in NAMES)
    assert "indexes %s built" % ", ".join(NAMES) in " ".join(first.output.split()), first.output

    second = run_playbook("phase4_optimize", pg, db, [REVENUES], extra_vars=NOW)
    assert not second.failed and second.changed == 0, second
    assert "2 indexes in place" in " ".join(second.output.split())

    other = dict(REVENUES, table="public.other")
    only = run_playbook("phase4_optimize", pg, db, [REVENUES, other], extra_vars=dict(NOW, partitioning_only="public.revenues"))
    assert not only.failed and only.changed == 0 and "public.other" not in only.output, only
