"""Test setup for phase 3: a table that phases 1 and 2 have brought to 'verified'.

Phase 1 is the real one (prepare.prepare_table: twin, monthly partitions plus ``_default``,
forward sync trigger); rows are copied with a plain ``INSERT … SELECT … ON CONFLICT DO NOTHING``
while no test writer runs, then the state row is set to 'verified' as phase 2 would.
"""
import datetime
import json
import random
import threading
import time

import psycopg2
from psycopg2 import sql

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils import sync
from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import plan_partitions
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_table
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import display, qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.twin import ensure_twin
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

STATE = "partitioning"
SPEC = dict(table="public.revenues", partition_key="occurred_at", strategy="range", interval="monthly", premake=0,
            default_partition=True)
COLS = "id, occurred_at, region, amount, note"
NOW = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)


def role_name(db):
    return "app_" + db


def run(conn, *stmts):
    cur = conn.cursor()
    for s in stmts:
        cur.execute(s)
    cur.close()


def write_unsynced(conn, statement, pending_key=None):
    """``statement`` on public.revenues with its sync trigger off (a write the other table misses);
    ``pending_key`` (an id) is then logged for reconciliation, as a REPEATABLE READ writer would."""
    run(conn, "ALTER TABLE public.revenues DISABLE TRIGGER partitioning_sync", statement,
        "ALTER TABLE public.revenues ENABLE ALWAYS TRIGGER partitioning_sync")
    if pending_key is not None:
        conn.cursor().execute("INSERT INTO partitioning.pending_keys (table_name, pk, reason) "
                              "VALUES ('public.revenues', jsonb_build_object('id', %s), 'test')", (pending_key,))


def create_original(conn, db, rows=2000, identity=False, extras=True):
    """public.revenues with a serial (or identity ALWAYS) key, and what the swap must carry over."""
    role = role_name(db)
    idcol = "id bigint GENERATED ALWAYS AS IDENTITY" if identity else "id bigserial"
    run(conn,
        "DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '%s') THEN CREATE ROLE %s; END IF; END$$"
        % (role, role),
        "CREATE TABLE public.revenues (%s PRIMARY KEY, occurred_at timestamptz NOT NULL, region text NOT NULL, "
        "amount numeric(12,2) NOT NULL, note text, CHECK (amount >= 0))" % idcol,
        "CREATE INDEX revenues_region_idx ON public.revenues (region)",
        "INSERT INTO public.revenues (occurred_at, region, amount) SELECT timestamptz '2025-01-01 00:00+00' + "
        "((g * 251) %% (360 * 1440)) * interval '1 minute', (ARRAY['eu','us','apac'])[1 + g %% 3], g %% 1000 "
        "FROM generate_series(1, %d) g" % rows)
    if extras:
        run(conn,
            "COMMENT ON TABLE public.revenues IS 'money in'",
            "GRANT SELECT, INSERT, UPDATE, DELETE ON public.revenues TO %s" % role,
            "CREATE VIEW public.revenue_eu WITH (security_barrier = true) AS "
            "SELECT id, occurred_at, amount FROM public.revenues WHERE region = 'eu' WITH LOCAL CHECK OPTION",
            "COMMENT ON VIEW public.revenue_eu IS 'eu only'",
            "GRANT SELECT ON public.revenue_eu TO %s" % role,
            "CREATE VIEW public.revenue_eu_big AS SELECT id FROM public.revenue_eu WHERE amount > 500",
            "CREATE MATERIALIZED VIEW public.revenue_by_region AS "
            "SELECT region, count(*) AS n, sum(amount) AS total FROM public.revenues GROUP BY region",
            "CREATE UNIQUE INDEX revenue_by_region_region ON public.revenue_by_region (region)",
            "GRANT SELECT ON public.revenue_by_region TO %s" % role,
            # the application's own trigger: a BEFORE trigger that normalises the region
            "CREATE FUNCTION public.revenues_lower_region() RETURNS trigger LANGUAGE plpgsql AS "
            "$$BEGIN NEW.region := lower(NEW.region); RETURN NEW; END$$",
            "CREATE TRIGGER revenues_lower_region BEFORE INSERT OR UPDATE ON public.revenues "
            "FOR EACH ROW EXECUTE FUNCTION public.revenues_lower_region()",
            "ALTER TABLE public.revenues ENABLE ROW LEVEL SECURITY",
            "CREATE POLICY revenues_app ON public.revenues TO %s USING (region <> 'secret')" % role,
            "CREATE PUBLICATION revenues_pub FOR TABLE public.revenues")


def _templates():
    return SqlTemplates.bundled()


def make_prepared_real(pg, db, rows=2000, identity=False, extras=True):
    """public.revenues (with views, trigger, RLS, publication ...) brought to 'prepared' by phase 1's code
    (prepare.prepare_table)."""
    conn = pg.connect(db)
    conn.autocommit = True
    try:
        create_original(conn, db, rows=rows, identity=identity, extras=extras)
    finally:
        conn.close()
    session = Session(pg.connect(db))
    try:
        prepare_table(session, _templates(), normalize_spec(dict(SPEC)), STATE, now=NOW)
    finally:
        session.close()


def make_verified(pg, db, rows=2000, identity=False, extras=True):
    """``make_prepared_real``, then a plain copy into the twin and phase 'verified' (as phase 2 leaves it)."""
    make_prepared_real(pg, db, rows=rows, identity=identity, extras=extras)
    conn = pg.connect(db)
    conn.autocommit = True
    try:
        run(conn, "INSERT INTO public.revenues_partitioned (%s) OVERRIDING SYSTEM VALUE SELECT %s "
                  "FROM public.revenues ON CONFLICT DO NOTHING" % (COLS, COLS),
            "UPDATE partitioning.tables SET phase = 'verified', verified_at = now(), "
            "verification = '{\"status\": \"ok\"}'")
    finally:
        conn.close()


def verify_by_phases(session, raw):
    """Phases 1 and 2 of the spec ``raw`` as ``session``'s role: phase 1's code (preflight first),
    then the copy as phase 2 leaves it (a plain copy, phase 'verified'). Returns the table's name."""
    spec = normalize_spec(dict(raw))
    prepare_table(session, _templates(), spec, STATE, now=NOW)
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in describe_table(session, spec.schema, spec.name).columns
                              if not c.generated)
    session.conn.cursor().execute(sql.SQL(
        "INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ON CONFLICT DO NOTHING; "
        "UPDATE {} SET phase = 'verified', verified_at = now() WHERE table_name = %s").format(
        sql.Identifier(*spec.twin), cols, cols, sql.Identifier(spec.schema, spec.name),
        sql.Identifier(STATE, "tables")), (spec.table_name,))
    return spec.table_name


def switch_over_by_phases(session, raw, **options):
    """Phases 1 to 3 of the spec ``raw`` as ``session``'s role (``verify_by_phases``, then the
    switchover with ``options``); the switchover's result."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import swap
    from .switchover import swap_knobs

    return swap.switchover(session, _templates(), verify_by_phases(session, raw),
                           **swap_knobs(state_schema=STATE, **options))


def make_verified_generic(pg, db, schema, name, create_sql, key, interval="monthly", pk=("id",)):
    """Any table (``create_sql`` creates and fills it) brought to 'verified' with phase 1's twin code."""
    conn = pg.connect(db)
    conn.autocommit = True
    run(conn, *create_sql)
    table_name = qualified(schema, name)
    spec = normalize_spec(dict(table=table_name, partition_key=display(key), strategy="range", interval=interval,
                               premake=0, default_partition=True))
    session = Session(pg.connect(db))
    templates = _templates()
    state_store.ensure_state_schema(session, templates, STATE)
    info = describe_table(session, schema, name)
    cur = conn.cursor()
    cur.execute(sql.SQL("SELECT min({k}), max({k}) FROM {t}").format(k=sql.Identifier(key),
                                                                     t=sql.Identifier(schema, name)))
    lo, hi = cur.fetchone()
    with session.transaction():
        ensure_twin(session, info, spec, plan_partitions(spec, info.column(key).type, lo, hi, NOW))
    sync.install_sync(session, templates, STATE, spec, (schema, name), spec.twin, info=info, direction="forward")
    cols = sql.SQL(", ").join(sql.Identifier(c.name) for c in info.columns if not c.generated)
    cur.execute(sql.SQL("INSERT INTO {} ({}) OVERRIDING SYSTEM VALUE SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
        sql.Identifier(*spec.twin), cols, cols, sql.Identifier(schema, name)))
    with session.transaction():
        state_store.insert_table(session, STATE, table_name, table_schema=schema, table_relname=name,
                                 twin_relname=spec.twin[1], old_relname=spec.old[1], phase="verified",
                                 spec=json.loads(json.dumps(spec.to_json(), default=str)), pk_columns=list(pk),
                                 partition_key=key, verification=dict(status="ok"))
    session.close()
    conn.close()
    return table_name


def rows_of(conn, table):
    cur = conn.cursor()
    cur.execute("SELECT id, occurred_at, region, amount, note FROM %s ORDER BY id" % table)
    out = cur.fetchall()
    cur.close()
    return out


def phase(conn):
    cur = conn.cursor()
    cur.execute("SELECT phase FROM partitioning.tables WHERE table_name = 'public.revenues'")
    r = cur.fetchone()
    cur.close()
    return r[0] if r else None


def is_partitioned(conn, name):
    cur = conn.cursor()
    cur.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (name,))
    r = cur.fetchone()
    cur.close()
    return r and r[0] == "p"


# --- an application-like write load with an exact oracle ------------------------------------


def under_load(pg, db, n=3, seed=1, warm_up_ops=20):
    """``n`` Writers started on public.revenues, each with ``warm_up_ops`` done; returns a
    connection, the rows before the load (for ``writers.expected``) and the writers (stop them)."""
    conn = pg.connect(db)
    initial = rows_of(conn, "public.revenues")
    writers = Writers(pg, db, n=n, seed=seed).start()
    writers.wait_ops(warm_up_ops)
    return conn, initial, writers


class Writers:
    """``n`` writer threads, each its own autocommit connection, each statement naming
    ``public.revenues`` in plain SQL (so a statement waiting on the swap's lock resolves the
    name afresh and lands on whichever table holds it). Writer k owns the initial ids with
    ``id % n == k`` and the rows it inserts; it records what each committed statement
    RETURNED, so the expected final content is exact: ``expected(initial_rows)``.
    Errors are counted: they must stay zero.
    """

    def __init__(self, pg, db, n=2, seed=1, isolation=None):
        self.pg, self.db, self.n, self.seed = pg, db, n, seed
        self.isolation = isolation
        self.stop_flag = threading.Event()
        self.errors = []
        self.ops = [0] * n
        self.oracle = [dict() for _unused in range(n)]
        self.threads = []

    def start(self):
        conn = self.pg.connect(self.db)
        cur = conn.cursor()
        cur.execute("SELECT id FROM public.revenues")
        ids = sorted(r[0] for r in cur.fetchall())
        conn.close()
        for k in range(self.n):
            mine = [i for i in ids if i % self.n == k]
            t = threading.Thread(target=self._run, args=(k, mine), daemon=True)
            self.threads.append(t)
            t.start()
        return self

    def ops_total(self):
        return sum(self.ops)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(60)

    def _run(self, k, mine):
        rng = random.Random(self.seed * 100 + k)
        conn = self.pg.connect(self.db)
        conn.autocommit = True
        if self.isolation:
            conn.set_session(isolation_level=self.isolation, autocommit=True)
        live = list(mine)
        cur = conn.cursor()
        while not self.stop_flag.is_set():
            op = rng.random()
            try:
                if op < 0.4 or not live:
                    cur.execute("INSERT INTO public.revenues (occurred_at, region, amount, note) VALUES "
                                "(timestamptz '2025-01-01 00:00+00' + %s * interval '1 hour', %s, %s, 'new') "
                                "RETURNING " + COLS, (rng.randint(0, 8000), rng.choice(["EU", "us", "Apac"]),
                                                      rng.randint(0, 999)))
                    row = cur.fetchone()
                    self.oracle[k][row[0]] = row
                    live.append(row[0])
                elif op < 0.7:
                    i = rng.choice(live)
                    cur.execute("UPDATE public.revenues SET amount = %s, note = %s WHERE id = %s RETURNING " + COLS,
                                (rng.randint(0, 999), "u%d" % rng.randint(0, 99), i))
                    for row in cur.fetchall():
                        self.oracle[k][row[0]] = row
                elif op < 0.85:
                    # the partition key changes: the row moves to another partition
                    i = rng.choice(live)
                    cur.execute("UPDATE public.revenues SET occurred_at = occurred_at + %s * interval '1 day' "
                                "WHERE id = %s AND occurred_at < timestamptz '2025-11-01 00:00+00' RETURNING " + COLS,
                                (rng.choice([31, 45]), i))
                    for row in cur.fetchall():
                        self.oracle[k][row[0]] = row
                else:
                    i = rng.choice(live)
                    cur.execute("DELETE FROM public.revenues WHERE id = %s RETURNING id", (i,))
                    if cur.fetchall():
                        self.oracle[k][i] = None
                    live.remove(i)
                self.ops[k] += 1
            except psycopg2.Error as e:  # an application error: must never happen
                self.errors.append("%s: %s" % (type(e).__name__, str(e).strip()))
                if len(self.errors) > 20:
                    break
        conn.close()

    def expected(self, initial_rows):
        rows = dict((r[0], r) for r in initial_rows)
        for o in self.oracle:
            for i, row in o.items():
                if row is None:
                    rows.pop(i, None)
                else:
                    rows[i] = row
        return [rows[i] for i in sorted(rows)]

    def wait_ops(self, more, timeout=60):
        """Wait until every writer did ``more`` further operations (the load spans the swap)."""
        start = list(self.ops)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.errors:
            if all(self.ops[k] - start[k] >= more for k in range(self.n)):
                return
            time.sleep(0.05)
