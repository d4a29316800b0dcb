"""playbooks/phase1_prepare.yml as an operator runs it (tests/helpers/playbook_runner.py).

On the lab schema: twins for every table, a second run changes nothing, --check creates
nothing and shows the SQL, -e partitioning_only restricts the run. Each bad spec fails with
one clear message and leaves the database untouched: no state schema, no twin.
"""
import pytest

from lab.schema import create_demo_schema

from ..helpers.playbook_runner import run_playbook

LAB_TABLES = [
    dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="quarterly", premake=2),
    dict(table="public.expenses", partition_key="expense_date", strategy="range", interval="yearly", premake=1),
    dict(table="public.daily_cash_balances", partition_key="org_id", strategy="hash", partitions=4),
]
NOW = {"partitioning_now": "2026-11-25T12:00:00+00:00"}


def q(conn, text, args=None):
    with conn.cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall() if cur.description else cur.rowcount


def twins(conn):
    return [r[0] for r in q(conn, "SELECT c.relname FROM pg_class c WHERE c.relkind = 'p' "
                                  "AND c.relname LIKE '%%_partitioned' ORDER BY 1")]


def untouched(conn):
    return (q(conn, "SELECT to_regnamespace('partitioning') IS NULL")[0][0]
            and twins(conn) == []
            and q(conn, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'partitioning_sync%%'")[0][0] == 0)


@pytest.fixture
def lab(conn):
    create_demo_schema(conn, rows=3000, seed=11)
    return conn


def test_check_then_run_then_idempotent_then_only(pg, db, lab):
    checked = run_playbook("phase1_prepare", pg, db, LAB_TABLES, extra_vars=NOW, check=True)
    assert not checked.failed, checked
    assert untouched(lab), "check mode changed the database"
    assert "CREATE TRIGGER \"partitioning_sync\"" in checked.output and "would be created" in checked.output

    only = run_playbook("phase1_prepare", pg, db, LAB_TABLES, extra_vars=dict(NOW, partitioning_only="expenses"))
    assert not only.failed, only
    assert twins(lab) == ["expenses_partitioned"]

    first = run_playbook("phase1_prepare", pg, db, LAB_TABLES, extra_vars=NOW)
    assert not first.failed, first
    assert first.changed == 2, first          # expenses was done already
    assert twins(lab) == ["daily_cash_balances_partitioned", "expenses_partitioned", "revenues_partitioned"]
    assert q(lab, "SELECT table_name, phase FROM partitioning.tables ORDER BY 1") == [
        ("public.daily_cash_balances", "prepared"), ("public.expenses", "prepared"), ("public.revenues", "prepared")]
    assert "public.revenues: twin public.revenues_partitioned with" in first.output

    second = run_playbook("phase1_prepare", pg, db, LAB_TABLES, extra_vars=NOW)
    assert not second.failed, second
    assert second.changed == 0, second
    assert "nothing to do" in second.output


# Through the playbook: a spec refused before connecting, and two refused by preflight. The
# other refusals (missing table, nullable key with NULLs, unsupported type) are checked the same
# way, faster, through prepare_table in test_partition_create.py.
BAD_SPECS = [
    ("unknown key", dict(table="public.t", partition_key="at", interval="monthly", premak=2),
     "premak: unknown key"),
    ("missing pk", dict(table="public.no_pk", partition_key="at", interval="monthly"),
     "has no primary key"),
    ("inbound FK refused", dict(table="public.t", partition_key="at", interval="monthly"),
     "t_ref_t_id_fkey"),
]

AWKWARD = """
CREATE TABLE public.t (id bigint PRIMARY KEY, at date NOT NULL, flag boolean NOT NULL DEFAULT false);
CREATE TABLE public.t_ref (id bigint PRIMARY KEY, t_id bigint REFERENCES public.t (id));
CREATE TABLE public.no_pk (id bigint, at date NOT NULL);
CREATE TABLE public.nullable (id bigint PRIMARY KEY, at date);
INSERT INTO public.t VALUES (1, '2025-01-01');
INSERT INTO public.nullable VALUES (1, NULL), (2, '2025-01-01');
"""


@pytest.mark.parametrize("case,spec,expected", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_a_bad_spec_fails_with_one_message_and_changes_nothing(pg, db, conn, case, spec, expected):
    q(conn, AWKWARD)
    run = run_playbook("phase1_prepare", pg, db, [spec], extra_vars=NOW)
    assert run.failed, run
    assert expected in run.output, run
    assert "Traceback" not in run.output, run
    # one failure, before the recap (which fails the host again, naming the same cause)
    assert run.output.split("PLAY [Recap]")[0].count("fatal: [testdb]") == 1, run
    assert untouched(conn), "a failed preflight changed the database"
