"""Phase 1 for one table: prepare.prepare_table and the partition_create module.

On the lab schema (lab/schema.py, a few thousand rows) and on awkward tables: the twin, its
partitions and the sync triggers are created once (second run: changed false, no statement),
check mode creates nothing, backfill_upper is the largest key when the triggers appeared,
inbound foreign keys are refused or dropped and recorded, and the sync works right away.
"""
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session, connect
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from lab.schema import create_demo_schema

from ..helpers.paths import ROOT
from ..helpers.switchover import lock_knobs
from ..helpers.sync_helpers import assert_equal

TEMPLATES = SqlTemplates.bundled()
NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.timezone.utc)
REVENUES = dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="quarterly",
                premake=2)


def prepare(params, raw, check=False, now=NOW):
    s = Session(connect(params), check_mode=check)
    try:
        out = prepare_table(s, TEMPLATES, normalize_spec(raw), "partitioning", now=now)
        out["queries"] = list(s.queries)
        return out
    finally:
        s.close()


def q(conn, text, args=None):
    with conn.cursor() as cur:
        cur.execute(text, args)
        return cur.fetchall() if cur.description else cur.rowcount


def relations(conn):
    return q(conn, "SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast') ORDER BY 1, 2")


@pytest.fixture
def lab(conn):
    create_demo_schema(conn, rows=3000, seed=7)
    return conn


def test_prepare_on_the_lab_schema_is_idempotent(params, lab):
    out = prepare(params, REVENUES)
    assert out["changed"]
    assert "table public.revenues_partitioned" in out["created"]
    assert "state schema partitioning" in out["created"]
    assert "revenues_2026_q4" in out["partitions"] and "revenues_default" in out["partitions"]
    assert any(c.startswith("trigger partitioning_sync on public.revenues") for c in out["created"])
    row = q(lab, "SELECT phase, backfill_upper, pk_columns, partition_key, twin_relname, old_relname, rows_estimated "
                 "FROM partitioning.tables WHERE table_name = 'public.revenues'")[0]
    assert row[0] == "prepared"
    assert row[1] == {"id": q(lab, "SELECT max(id) FROM public.revenues")[0][0]}
    assert row[2:6] == (["id"], "occurred_at", "revenues_partitioned", "revenues_old")
    assert row[6] > 0
    again = prepare(params, REVENUES)
    assert not again["changed"], again["created"]
    assert again["created"] == [] and again["queries"] == []
    # the sync works at once: a new row is in the twin, an update moves it
    q(lab, "INSERT INTO public.revenues (org_id, occurred_at, amount_cents, payment_mode, status) "
           "SELECT org_id, '2026-01-02', 5, payment_mode, status FROM public.revenues LIMIT 1")
    new_id = q(lab, "SELECT max(id) FROM public.revenues")[0][0]
    q(lab, "UPDATE public.revenues SET occurred_at = '2026-05-05' WHERE id = %s", (new_id,))
    assert q(lab, "SELECT tableoid::regclass::text FROM public.revenues_partitioned WHERE id = %s",
             (new_id,)) == [("revenues_2026_q2",)]


def test_the_application_role_writes_through_the_trigger(params, lab):
    """The trigger runs as the invoker: the application's role (DML grants only, no privilege on the
    state schema's tables) writes the twin through the grants phase 1 copied, and a REPEATABLE READ
    writer logs keys through the SECURITY DEFINER log_pending."""
    prepare(params, REVENUES)
    q(lab, "BEGIN; SET LOCAL ROLE app_rw;"
           "INSERT INTO public.revenues (org_id, occurred_at, amount_cents, payment_mode, status) "
           "  VALUES (1, '2026-03-03', 9, 'card', 'pending');"
           "UPDATE public.revenues SET occurred_at = occurred_at + interval '100 days' "
           "  WHERE id IN (SELECT id FROM public.revenues ORDER BY id LIMIT 5);"
           "DELETE FROM public.revenues WHERE id IN (SELECT id FROM public.revenues ORDER BY id DESC LIMIT 2);"
           "COMMIT")
    q(lab, "BEGIN ISOLATION LEVEL REPEATABLE READ; SET LOCAL ROLE app_rw;"
           "UPDATE public.revenues SET amount_cents = 1 WHERE id = 6; COMMIT")
    assert q(lab, "SELECT pk FROM partitioning.pending_keys") == [({"id": 6},)]   # not copied yet: logged
    q(lab, "INSERT INTO public.revenues_partitioned SELECT * FROM public.revenues ON CONFLICT DO NOTHING")
    assert_equal(lab)


def test_phase1_under_live_writes_loses_no_row(params, lab, pg, db):
    """The application writes (lab Workload: inserts, updates, partition-key moves, deletes) while
    phase 1 installs the triggers. Every row above backfill_upper must already be in the twin
    (written after the triggers existed); after copying the rows up to it, as the backfill does,
    the twin equals the original (lab.workload.compare_tables, one snapshot)."""
    from lab.workload import Workload, compare_tables
    mix = {"insert": 40, "update": 25, "move": 20, "delete": 15, "pk_update": 0}
    with Workload(pg.dsn(db), "public.revenues", threads=2, seed=5, mix=mix) as w:
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=60)
        while w.total_ops < 20 and datetime.datetime.now() < deadline:
            time.sleep(0.05)
        prepare(params, REVENUES)
        start = w.total_ops
        while w.total_ops < start + 50 and datetime.datetime.now() < deadline:
            time.sleep(0.05)
    assert w.errors == 0, w.error_messages
    upper = q(lab, "SELECT (backfill_upper ->> 'id')::bigint FROM partitioning.tables")[0][0]
    assert q(lab, "SELECT count(*) FROM public.revenues o WHERE o.id > %s AND NOT EXISTS "
                  "(SELECT 1 FROM public.revenues_partitioned p WHERE p.id = o.id)", (upper,)) == [(0,)]
    assert q(lab, "SELECT count(*) FROM public.revenues WHERE id > %s", (upper,))[0][0] > 0
    q(lab, "INSERT INTO public.revenues_partitioned SELECT * FROM public.revenues WHERE id <= %s "
           "ON CONFLICT DO NOTHING", (upper,))
    diff = compare_tables(lab, "public.revenues", "public.revenues_partitioned", ["id"])
    assert diff["equal"], diff


def test_check_mode_creates_nothing_and_shows_the_sql(params, lab):
    before = relations(lab)
    out = prepare(params, REVENUES, check=True)
    assert out["changed"]
    assert relations(lab) == before
    text = "\n".join(out["queries"])
    assert "CREATE SCHEMA" in text and "revenues_partitioned" in text and "CREATE TRIGGER \"partitioning_sync\"" in text
    assert q(lab, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                  "AND tgname LIKE 'partitioning%%'") == [(0,)]


def test_hash_and_composite_key_table(params, lab):
    spec = dict(table="daily_cash_balances", partition_key="org_id", strategy="hash", partitions=4)
    out = prepare(params, spec)
    assert out["partitions"] == ["daily_cash_balances_p%02d" % i for i in range(4)]
    upper = q(lab, "SELECT backfill_upper FROM partitioning.tables")[0][0]
    assert set(upper) == {"org_id", "balance_date"}
    again = prepare(params, spec)
    assert not again["changed"], again.get("created")
    # twin gets every write from now on; copy the rest as the backfill would and compare
    q(lab, "UPDATE public.daily_cash_balances SET org_id = org_id + 100000 WHERE org_id = 1")
    q(lab, "INSERT INTO public.daily_cash_balances_partitioned SELECT * FROM public.daily_cash_balances "
           "ON CONFLICT DO NOTHING")
    assert_equal(lab, ("public", "daily_cash_balances"), ("public", "daily_cash_balances_partitioned"),
                 order_by="org_id,balance_date")


def test_premake_on_a_later_run_adds_partitions_only(params, lab):
    first = prepare(params, REVENUES)
    # the lab dates some rows up to two years ahead: go beyond the last planned partition
    later = prepare(params, REVENUES, now=NOW + datetime.timedelta(days=5 * 365))
    assert later["changed"]
    added = [c for c in later["created"] if c.startswith("partition ")]
    assert added and all(c.split(".")[-1] not in first["partitions"] for c in added)
    assert "partition public.revenues_2031_q4" in added
    assert not [c for c in later["created"] if c.startswith(("table ", "trigger ", "state "))]
    # the sync function is regenerated: its partition ladder names the new partitions too
    assert [c for c in later["created"] if c.startswith("function ")] == ["function partitioning.public__revenues__fwd"]


def test_a_later_run_never_queues_behind_a_long_transaction(params, lab, pg, db):
    """New partitions of a twin lock it; behind a long transaction the run gives up after the lock
    timeout and retries (HP8), then names the blocker. What it did is kept; the next run finishes."""
    raw = dict(REVENUES, lock_timeout_ms=20, swap_retries=1)
    prepare(params, raw)
    reader = pg.connect(db, autocommit=False)
    try:
        blocker = q(reader, "SELECT pg_backend_pid()")[0][0]
        q(reader, "SELECT count(*) FROM public.revenues_partitioned")     # holds ACCESS SHARE until commit
        with pytest.raises(PartitioningError) as e:
            prepare(params, raw, now=NOW + datetime.timedelta(days=5 * 365))
        assert "pid %d" % blocker in e.value.msg and "revenues_partitioned" in e.value.msg
    finally:
        reader.rollback()
        reader.close()
    assert "partition public.revenues_2031_q4" in prepare(params, raw, now=NOW + datetime.timedelta(days=5 * 365))[
        "created"]


def test_a_column_added_to_the_original_reaches_the_twin_and_the_trigger(params, conn):
    """A deploy adds a column during the migration: phase 1 run again adds it to the twin and
    regenerates the sync function (its body lists the columns)."""
    q(conn, "CREATE TABLE public.ev (id bigint PRIMARY KEY, at date NOT NULL)")
    raw = dict(table="ev", partition_key="at", interval="yearly", premake=0)
    prepare(params, raw)
    q(conn, "ALTER TABLE public.ev ADD COLUMN extra text")
    out = prepare(params, raw)
    assert "column public.ev_partitioned.extra" in out["created"]
    assert "function partitioning.public__ev__fwd" in out["created"]
    assert not [c for c in out["created"] if c.startswith("trigger")]
    q(conn, "INSERT INTO public.ev VALUES (1, '2026-01-01', 'x')")
    assert_equal(conn, ("public", "ev"), ("public", "ev_partitioned"))


def test_inbound_foreign_keys_refused_by_default_then_dropped_and_recorded(params, conn):
    q(conn, """
        CREATE TABLE public.invoices (id bigint PRIMARY KEY, issued_on date NOT NULL);
        CREATE TABLE public.lines (id bigint PRIMARY KEY, invoice_id bigint REFERENCES public.invoices (id));
        INSERT INTO public.invoices VALUES (1, '2025-01-01'), (2, '2025-03-01');
        INSERT INTO public.lines VALUES (10, 1);
    """)
    raw = dict(table="invoices", partition_key="issued_on", interval="monthly")
    with pytest.raises(PartitioningError) as e:
        prepare(params, raw)
    assert "lines_invoice_id_fkey" in e.value.msg and "inbound_foreign_keys: drop" in e.value.msg
    assert q(conn, "SELECT to_regnamespace('partitioning'), to_regclass('public.invoices_partitioned')") == [(None, None)]
    out = prepare(params, dict(raw, inbound_foreign_keys="drop"))
    assert "dropped foreign key lines_invoice_id_fkey on public.lines" in out["created"]
    recorded = q(conn, "SELECT dropped_foreign_keys FROM partitioning.tables")[0][0]
    assert recorded[0]["name"] == "lines_invoice_id_fkey" and recorded[0]["table"] == ["public", "lines"]
    assert "FOREIGN KEY (invoice_id) REFERENCES invoices(id)" in recorded[0]["definition"]
    assert q(conn, "SELECT count(*) FROM pg_constraint WHERE conname = 'lines_invoice_id_fkey'") == [(0,)]
    assert not prepare(params, dict(raw, inbound_foreign_keys="drop"))["changed"]


def test_prepare_again_after_rollback(params, conn):
    """rollback.yml's code undoes phase 1 (FKs re-created); phase 1 then starts a fresh migration."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.rollback import rollback
    q(conn, """
        CREATE TABLE public.invoices (id bigint PRIMARY KEY, issued_on date NOT NULL);
        CREATE TABLE public.lines (id bigint PRIMARY KEY, invoice_id bigint REFERENCES public.invoices (id));
        INSERT INTO public.invoices VALUES (1, '2025-01-01'), (2, '2025-03-01');
    """)
    raw = dict(table="invoices", partition_key="issued_on", interval="monthly", inbound_foreign_keys="drop")
    prepare(params, raw)
    # phase 1's table lock is session-level: it ends when that backend has exited, a moment after
    # the client closed its connection
    for _attempt in range(200):
        if not q(conn, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"):
            break
        time.sleep(0.05)
    s = Session(connect(params))
    try:
        rollback(s, TEMPLATES, "public.invoices", **lock_knobs())
    finally:
        s.close()
    assert q(conn, "SELECT phase FROM partitioning.tables") == [("rolled_back",)]
    assert q(conn, "SELECT count(*) FROM pg_constraint WHERE conname = 'lines_invoice_id_fkey'") == [(1,)]
    q(conn, "INSERT INTO public.invoices VALUES (3, '2025-04-01')")
    again = prepare(params, raw)
    assert "table public.invoices_partitioned" in again["created"]
    assert q(conn, "SELECT phase, backfill_upper, dropped_foreign_keys -> 0 ->> 'name' FROM partitioning.tables") == [
        ("prepared", {"id": 3}, "lines_invoice_id_fkey")]
    assert not prepare(params, raw)["changed"]


def test_awkward_table_identity_generated_quoted_names(params, conn):
    q(conn, """
        CREATE SCHEMA "Ledger";
        CREATE TABLE "Ledger"."Entries" (
            "Id" bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            "BookedOn" date NOT NULL,
            cents bigint NOT NULL CHECK (cents <> 0),
            euros numeric GENERATED ALWAYS AS (cents / 100.0) STORED);
        CREATE INDEX entries_cents_partial ON "Ledger"."Entries" (cents) WHERE cents < 0;
        INSERT INTO "Ledger"."Entries" ("BookedOn", cents) VALUES ('2025-01-01', 1), ('2025-02-01', -2);
    """)
    raw = {"table": '"Ledger"."Entries"', "partition_key": '"BookedOn"', "interval": "monthly", "premake": 1}
    out = prepare(params, raw)
    assert out["twin"] == '"Ledger"."Entries_partitioned"'
    q(conn, 'INSERT INTO "Ledger"."Entries" ("BookedOn", cents) VALUES (\'2025-02-03\', 5)')
    q(conn, 'UPDATE "Ledger"."Entries" SET "BookedOn" = \'2025-01-09\', cents = 7 WHERE "Id" = 3')
    q(conn, 'INSERT INTO "Ledger"."Entries_partitioned" ("Id", "BookedOn", cents) '
            'SELECT "Id", "BookedOn", cents FROM "Ledger"."Entries" ON CONFLICT DO NOTHING')
    assert_equal(conn, ("Ledger", "Entries"), ("Ledger", "Entries_partitioned"), order_by="Id")
    assert not prepare(params, raw)["changed"]


MODULE_PLAY = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - dbops.partitioning.partition_create:
      args: "{{ module_args }}"
      register: result
      ignore_errors: true
    - ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ out }}"
      check_mode: false
"""


REFUSALS = [
    ("missing table", dict(table="public.nope", partition_key="at", interval="monthly"), "public.nope does not exist"),
    ("nullable key with NULLs", dict(table="public.nullable", partition_key="at", interval="monthly"), "NULL"),
    ("unsupported type", dict(table="public.t", partition_key="flag", interval="monthly"), "flag"),
    ("missing pk", dict(table="public.no_pk", partition_key="at", interval="monthly"), "has no primary key"),
]


@pytest.mark.parametrize("case,raw,expected", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_preflight_refusals_change_nothing(params, conn, case, raw, expected):
    q(conn, """
        CREATE TABLE public.t (id bigint PRIMARY KEY, at date NOT NULL, flag boolean NOT NULL DEFAULT false);
        CREATE TABLE public.no_pk (id bigint, at date NOT NULL);
        CREATE TABLE public.nullable (id bigint PRIMARY KEY, at date);
        INSERT INTO public.nullable VALUES (1, NULL), (2, '2025-01-01');
    """)
    before = relations(conn)
    with pytest.raises(PartitioningError) as e:
        prepare(params, raw)
    assert expected in e.value.msg
    assert relations(conn) == before


def _run_module(params, args, check=False):
    """The module through ansible-playbook (action plugin, templates hand-over), result as JSON."""
    ansible = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    module_args = dict(login_host=params["login_host"], port=params["port"], login_user=params["login_user"],
                       login_db=params["login_db"], ssl_mode="disable")
    module_args.update(args)
    with tempfile.TemporaryDirectory() as d:
        play, out = os.path.join(d, "play.yml"), os.path.join(d, "out.json")
        with open(play, "w") as f:
            f.write(MODULE_PLAY)
        cmd = [ansible, play, "-i", "localhost,", "-e", json.dumps(dict(
            module_args=module_args, out=out, ansible_python_interpreter=sys.executable))]
        if check:
            cmd.append("--check")
        p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, ANSIBLE_NOCOLOR="1"), check=False)
        assert os.path.exists(out), p.stdout + p.stderr
        with open(out) as f:
            return json.load(f)


def test_module_creates_then_reports_no_change(params, lab):
    args = dict(REVENUES, now="2026-11-25T12:00:00+00:00")
    checked = _run_module(params, args, check=True)
    assert checked["changed"] and not checked.get("failed"), checked
    assert any("CREATE TRIGGER \"partitioning_sync\"" in x for x in checked["queries"])
    assert q(lab, "SELECT to_regclass('public.revenues_partitioned')") == [(None,)]
    first = _run_module(params, args)
    assert first["changed"] and not first.get("failed"), first
    assert first["twin"] == "public.revenues_partitioned" and "revenues_default" in first["partitions"]
    second = _run_module(params, args)
    assert not second["changed"] and second["queries"] == [], second


def test_module_refuses_a_bad_spec_before_connecting():
    """No server needed (port 1 has none): the spec is refused before any connection."""
    nowhere = dict(login_host="127.0.0.1", port=1, login_user="postgres", login_db="postgres")
    out = _run_module(nowhere, dict(table="public.revenues", partition_key="occurred_at",
                                    strategy="range", interval="fortnightly"))
    assert out.get("failed") and "interval" in out["msg"] and "Traceback" not in json.dumps(out), out
