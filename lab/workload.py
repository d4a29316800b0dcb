"""An application-like write load on the demo tables, and the row-for-row oracle.

``Workload(dsn, 'public.revenues', threads=2, seed=1, duration_s=5)`` runs writer threads,
each with its own connection, doing what the finance application does: inserts (a few
back-dated or future-dated, HP4), updates of non-key columns, updates of the partition key
(the row moves to another month or tenant), deletes and, when the mix asks for it, primary-
key updates. Every operation is one transaction of one statement that names the table in
plain SQL, so each statement resolves the name afresh: the load keeps running across a
switchover (the rename), and a statement that waits for the swap's lock is simply slow
(HP8/HP9). Application errors are counted (they must stay zero); serialization failures and
deadlocks under REPEATABLE READ / SERIALIZABLE are retried as an application would and
counted as ``retries``; an update or delete whose row is gone is a ``miss``.

The operations are drawn from ``random.Random(seed, thread)``: the sequence of intended
operations is deterministic; only the interleaving of the threads is not.

``compare_tables(conn, left, right, key_columns)`` compares two tables row for row in one
REPEATABLE READ snapshot (``EXCEPT ALL`` both ways over the columns they share).
"""
import random
import threading
import time

import psycopg2
import psycopg2.errorcodes
import psycopg2.extensions
from psycopg2 import sql

ISOLATION = {
    "read committed": psycopg2.extensions.ISOLATION_LEVEL_READ_COMMITTED,
    "repeatable read": psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ,
    "serializable": psycopg2.extensions.ISOLATION_LEVEL_SERIALIZABLE,
}
DEFAULT_MIX = {"insert": 40, "update": 30, "move": 15, "delete": 10, "pk_update": 0}
RETRYABLE = (psycopg2.errorcodes.SERIALIZATION_FAILURE, psycopg2.errorcodes.DEADLOCK_DETECTED)
MAX_ERROR_MESSAGES = 20


def _split(table):
    if isinstance(table, (tuple, list)):
        return tuple(table)
    parts = str(table).split(".", 1)
    return tuple(parts) if len(parts) == 2 else ("public", parts[0])


def _connect(dsn, application_name):
    if isinstance(dsn, dict):
        return psycopg2.connect(application_name=application_name, **dsn)
    return psycopg2.connect(dsn, application_name=application_name)


# --- what the application does, per table ------------------------------------------------
class _Profile:
    """Statements of one demo table. ``rng`` is the thread's Random; ``state`` its key range."""

    key_columns = ("id",)

    def __init__(self, schema, name):
        self.t = sql.Identifier(schema, name)
        # The table's name as text, quoted, for regclass-taking functions.
        self.regclass_text = ".".join('"%s"' % part.replace('"', '""') for part in (schema, name))

    def load_state(self, cur):
        cur.execute(sql.SQL("SELECT coalesce(min(id), 1), coalesce(max(id), 1) FROM {}").format(self.t))
        lo, hi = cur.fetchone()
        return {"lo": lo, "hi": hi}

    def pick_id(self, rng, state):
        return rng.randint(state["lo"], state["hi"])

    def after(self, op, cur, state):
        if op == "insert":
            row = cur.fetchone()
            if row and row[0] > state["hi"]:
                state["hi"] = row[0]

    def pk_update(self, rng, state):
        # Renumbering draws a fresh id from the column's own sequence (serial or identity),
        # looked up by the table's name at each statement, as an application's ORM would.
        return (sql.SQL("UPDATE {} SET id = nextval(pg_get_serial_sequence(%s, 'id')) WHERE id = %s").format(
            self.t), (self.regclass_text, self.pick_id(rng, state)))


def _days(rng):
    """Days from today: mostly the last month (late bookings); 0.5 % back-dated 5-6 years, just
    older than the oldest generated row (a correction of the legacy import), 0.5 % 2-3 years
    ahead, just beyond the newest (a scheduled payment). Written after phase 1 they land in the
    default partition (HP4); written before it they widen the twin's range a little."""
    r = rng.random()
    if r < 0.005:
        return -rng.randint(5 * 365, 6 * 365)
    if r < 0.01:
        return rng.randint(2 * 365 + 1, 3 * 365)
    return -rng.randint(0, 30)


class _Revenues(_Profile):
    def insert(self, rng, state):
        days = _days(rng)
        org = 1 + int(50 * rng.random() ** 8)
        return (sql.SQL("INSERT INTO {} (org_id, property_id, amount_cents, currency, payment_mode, status, "
                        "description, occurred_at) VALUES (%s, %s, %s, %s, %s, 'pending', %s, "
                        "now() + %s * interval '1 day') RETURNING id").format(self.t),
                (org, org * 100 + rng.randint(0, 4), rng.randint(100, 250000), rng.choice(["EUR", "USD", "GBP"]),
                 rng.choice(["card", "bank_transfer", "cash", "direct_debit", "wallet"]),
                 "workload payment", days))

    def update(self, rng, state):
        return (sql.SQL("UPDATE {} SET status = %s, amount_cents = amount_cents + %s, description = %s "
                        "WHERE id = %s").format(self.t),
                (rng.choice(["settled", "refunded", "failed", "pending"]), rng.randint(-50, 50),
                 "updated by workload", self.pick_id(rng, state)))

    def move(self, rng, state):
        months = rng.choice([-4, -3, -2, -1, 1, 2, 3])
        return (sql.SQL("UPDATE {} SET occurred_at = occurred_at + %s * interval '1 month' WHERE id = %s").format(
            self.t), (months, self.pick_id(rng, state)))

    def delete(self, rng, state):
        return sql.SQL("DELETE FROM {} WHERE id = %s").format(self.t), (self.pick_id(rng, state),)


class _Expenses(_Profile):
    def insert(self, rng, state):
        days = _days(rng)
        org = 1 + int(50 * rng.random() ** 8)
        return (sql.SQL("INSERT INTO {} (org_id, property_id, category, amount_cents, expense_date, description, "
                        "vendor) VALUES (%s, %s, %s, %s, current_date + %s, %s, %s) RETURNING id").format(self.t),
                (org, org * 100 + rng.randint(0, 4), rng.choice(["rent", "utilities", "maintenance", "supplies"]),
                 rng.randint(50, 500000), days, "workload expense", rng.choice(["Acme Facility", "Initech IT"])))

    def update(self, rng, state):
        return (sql.SQL("UPDATE {} SET status = %s, vendor = %s WHERE id = %s").format(self.t),
                (rng.choice(["paid", "pending", "disputed"]), rng.choice(["Hooli Cloud", "Stark Supplies"]),
                 self.pick_id(rng, state)))

    def move(self, rng, state):
        return (sql.SQL("UPDATE {} SET expense_date = expense_date + %s WHERE id = %s").format(self.t),
                (rng.choice([-62, -31, 31, 45]), self.pick_id(rng, state)))

    def delete(self, rng, state):
        return sql.SQL("DELETE FROM {} WHERE id = %s").format(self.t), (self.pick_id(rng, state),)


class _Balances(_Profile):
    key_columns = ("org_id", "balance_date")

    def load_state(self, cur):
        # Keys moved out of the way (org ids >= 1e9, dates in year 3000+) by earlier runs are
        # not picked, and new moves start beyond them, so no run collides with an earlier one.
        cur.execute(sql.SQL("SELECT coalesce(max(org_id) FILTER (WHERE org_id < 1000000000), 1), "
                            "coalesce(min(balance_date), current_date), "
                            "coalesce(max(balance_date) FILTER (WHERE balance_date < DATE '3000-01-01'), current_date), "
                            "greatest(max(org_id), 999999999), "
                            "greatest(max(balance_date) FILTER (WHERE balance_date >= DATE '3000-01-01') "
                            "         - DATE '3000-01-01', 0) "
                            "FROM {}").format(self.t))
        orgs, first, last, max_org, max_offset = cur.fetchone()
        return {"orgs": orgs, "first": first, "days": max(1, (last - first).days + 1), "moved": 0,
                "org_after": max_org, "date_after": max_offset}

    def _key(self, rng, state):
        return 1 + int(state["orgs"] * rng.random() ** 2), rng.randrange(state["days"])

    def insert(self, rng, state):
        # The nightly job's upsert: a day ahead of the newest, or a correction of an old one.
        org, day = self._key(rng, state)
        return (sql.SQL("INSERT INTO {} (org_id, balance_date, opening_cents, closing_cents) "
                        "VALUES (%s, %s::date + %s, %s, %s) ON CONFLICT (org_id, balance_date) "
                        "DO UPDATE SET closing_cents = EXCLUDED.closing_cents").format(self.t),
                (org, state["first"], day + rng.randint(0, 30), rng.randint(0, 10 ** 7), rng.randint(0, 10 ** 7)))

    def update(self, rng, state):
        org, day = self._key(rng, state)
        return (sql.SQL("UPDATE {} SET closing_cents = closing_cents + %s WHERE org_id = %s "
                        "AND balance_date = %s::date + %s").format(self.t),
                (rng.randint(-5000, 5000), org, state["first"], day))

    def move(self, rng, state):
        # A balance re-assigned to another tenant (partition key change: another hash partition).
        # The new org ids are unique to this thread, so the move never collides.
        state["moved"] += 1
        org, day = self._key(rng, state)
        new_org = state["org_base"] + state["moved"]
        return (sql.SQL("UPDATE {} SET org_id = %s WHERE org_id = %s AND balance_date = %s::date + %s").format(
            self.t), (new_org, org, state["first"], day))

    def delete(self, rng, state):
        org, day = self._key(rng, state)
        return (sql.SQL("DELETE FROM {} WHERE org_id = %s AND balance_date = %s::date + %s").format(self.t),
                (org, state["first"], day))

    def pk_update(self, rng, state):
        org, day = self._key(rng, state)
        # The key is (org_id, balance_date): move the date to one no generated row has and no
        # other thread or seed uses (year 3000 and later; still within Python's dates).
        state["moved"] += 1
        offset = state["date_base"] + state["moved"]      # < 10000 moves per thread and run
        return (sql.SQL("UPDATE {} SET balance_date = DATE '3000-01-01' + %s WHERE org_id = %s "
                        "AND balance_date = %s::date + %s").format(self.t), (offset, org, state["first"], day))

    def after(self, op, cur, state):
        pass


PROFILES = {"revenues": _Revenues, "expenses": _Expenses, "daily_cash_balances": _Balances}


def key_columns_of(table):
    return PROFILES[_split(table)[1]].key_columns


class Workload:
    """Writer threads on one demo table. Use as a context manager or start()/stop()/join()."""

    def __init__(self, dsn, table, threads=2, seed=0, mix=None, isolation="read committed",
                 duration_s=None, max_ops=None, think_ms=0, application_name="lab-workload"):
        schema, name = _split(table)
        if name not in PROFILES:
            raise ValueError("no workload profile for table %r (known: %s)" % (name, ", ".join(PROFILES)))
        if isolation not in ISOLATION:
            raise ValueError("isolation must be one of %s" % ", ".join(ISOLATION))
        self.dsn = dsn
        self.table = "%s.%s" % (schema, name)
        self.profile = PROFILES[name](schema, name)
        self.threads = threads
        self.seed = seed
        self.mix = dict(DEFAULT_MIX)
        self.mix.update(mix or {})
        self.isolation = isolation
        self.duration_s = duration_s
        self.max_ops = max_ops
        self.think_ms = think_ms
        self.application_name = application_name
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self._started_at = None
        self.elapsed_s = 0.0
        self.ops = dict((k, 0) for k in self.mix)
        self.misses = 0
        self.retries = 0
        self.errors = 0
        self.error_messages = []
        self.max_latency_s = 0.0

    # --- control ------------------------------------------------------------------------
    def start(self):
        conn = _connect(self.dsn, self.application_name)
        try:
            with conn.cursor() as cur:
                self._initial_state = self.profile.load_state(cur)
        finally:
            conn.close()
        self._started_at = time.monotonic()
        for i in range(self.threads):
            t = threading.Thread(target=self._run, args=(i,), name="workload-%s-%d" % (self.table, i), daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self):
        self._stop.set()

    def join(self, timeout=None):
        for t in self._threads:
            t.join(timeout)
        if self._started_at is not None:
            self.elapsed_s = time.monotonic() - self._started_at
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        self.join()
        return False

    @property
    def total_ops(self):
        return sum(self.ops.values())

    def summary(self):
        return dict(table=self.table, ops=dict(self.ops), total_ops=self.total_ops, misses=self.misses,
                    retries=self.retries, errors=self.errors, error_messages=list(self.error_messages),
                    max_latency_s=round(self.max_latency_s, 3), elapsed_s=round(self.elapsed_s, 1))

    # --- the writer ------------------------------------------------------------------------
    def _done(self):
        if self._stop.is_set():
            return True
        if self.duration_s is not None and time.monotonic() - self._started_at >= self.duration_s:
            return True
        return self.max_ops is not None and self.total_ops >= self.max_ops

    def _error(self, exc):
        with self._lock:
            self.errors += 1
            if len(self.error_messages) < MAX_ERROR_MESSAGES:
                self.error_messages.append("%s: %s" % (type(exc).__name__, str(exc).strip()))

    def _run(self, index):
        rng = random.Random("%s/%s/%d" % (self.seed, self.table, index))
        ops = [op for op, w in self.mix.items() if w > 0]
        weights = [self.mix[op] for op in ops]
        conn = None
        # The key ranges as start() read them, once for all threads (so that their private
        # ranges for moved keys are spaced apart from one common maximum, never overlap).
        state = dict(self._initial_state)
        state["org_base"] = state.get("org_after", 10 ** 9) + 1 + index * 10 ** 6
        state["date_base"] = state.get("date_after", 0) + 1 + index * 10000
        while not self._done():
            try:
                if conn is None or conn.closed:
                    conn = _connect(self.dsn, self.application_name)
                    conn.set_session(isolation_level=ISOLATION[self.isolation])
            except psycopg2.Error as exc:
                self._error(exc)
                time.sleep(0.2)
                continue
            op = rng.choices(ops, weights)[0]
            statement, args = getattr(self.profile, op)(rng, state)
            self._execute(conn, op, statement, args, state)
            if self.think_ms:
                time.sleep(self.think_ms / 1000.0)
        if conn is not None and not conn.closed:
            conn.close()

    def _execute(self, conn, op, statement, args, state):
        for _attempt in range(10):
            t0 = time.monotonic()
            try:
                with conn.cursor() as cur:
                    cur.execute(statement, args)
                    rowcount = cur.rowcount
                    self.profile.after(op, cur, state)
                conn.commit()
            except psycopg2.Error as exc:
                try:
                    conn.rollback()
                except psycopg2.Error:
                    conn.close()
                if exc.pgcode in RETRYABLE:
                    with self._lock:
                        self.retries += 1
                    continue
                self._error(exc)
                return
            latency = time.monotonic() - t0
            with self._lock:
                self.ops[op] += 1
                if rowcount == 0:
                    self.misses += 1
                if latency > self.max_latency_s:
                    self.max_latency_s = latency
            return
        self._error(RuntimeError("%s gave up after 10 serialization retries" % op))


# --- the oracle -----------------------------------------------------------------------------
_SHARED_COLUMNS = """
SELECT a.attname, t.typname, t.typcategory
  FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
 WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped
   AND a.attname IN (SELECT attname FROM pg_attribute
                      WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped)
 ORDER BY a.attnum
"""
# Types without an equality operator are compared by their text form.
_NO_EQUALITY = ("json", "xml", "point", "line", "lseg", "box", "path", "polygon", "circle")


def compare_tables(conn, left, right, key_columns, limit=None):
    """Row-for-row comparison of two tables in ONE REPEATABLE READ snapshot.

    ``left``/``right``: 'schema.name' or (schema, name). Compares the columns both have
    (in ``left``'s order) with ``EXCEPT ALL`` both ways, so duplicates count. Returns
    ``dict(missing, extra, different, equal, left_rows, right_rows)``: ``missing`` lists the
    keys of rows of ``left`` that ``right`` lacks, ``extra`` those of ``right`` that ``left``
    lacks, ``different`` the keys present on both sides with differing contents (a key is
    a tuple of ``key_columns`` values). ``limit`` caps each list (``None``: all).
    """
    lt, rt = sql.Identifier(*_split(left)), sql.Identifier(*_split(right))
    old_autocommit, old_isolation = conn.autocommit, conn.isolation_level
    if not old_autocommit:
        conn.rollback()
    conn.autocommit = False
    conn.set_session(isolation_level=psycopg2.extensions.ISOLATION_LEVEL_REPEATABLE_READ, readonly=True)
    try:
        cur = conn.cursor()
        cur.execute(_SHARED_COLUMNS, (lt.as_string(conn), rt.as_string(conn)))
        columns = cur.fetchall()
        names = [c[0] for c in columns]
        missing_keys = [k for k in key_columns if k not in names]
        if missing_keys:
            raise ValueError("key columns %s are not in both %s and %s" % (missing_keys, left, right))
        select = sql.SQL(", ").join(
            sql.SQL("{}::text").format(sql.Identifier(n)) if (t in _NO_EQUALITY or cat == "G")
            else sql.Identifier(n) for n, t, cat in columns)
        key_pos = [names.index(k) for k in key_columns]

        def diff(a, b):
            q = sql.SQL("SELECT {cols} FROM {a} EXCEPT ALL SELECT {cols} FROM {b}").format(cols=select, a=a, b=b)
            cur.execute(q)
            return [tuple(row[i] for i in key_pos) for row in cur.fetchall()]

        only_left = diff(lt, rt)                       # the first statement takes the snapshot
        only_right = diff(rt, lt)
        cur.execute(sql.SQL("SELECT (SELECT count(*) FROM {}), (SELECT count(*) FROM {})").format(lt, rt))
        left_rows, right_rows = cur.fetchone()
        conn.commit()
    except Exception:
        conn.rollback()
        raise
    finally:
        conn.set_session(isolation_level=old_isolation, readonly=False)
        conn.autocommit = old_autocommit
    right_keys, left_keys = set(only_right), set(only_left)
    different = sorted(set(k for k in only_left if k in right_keys), key=repr)
    missing = [k for k in only_left if k not in right_keys]
    extra = [k for k in only_right if k not in left_keys]
    if limit is not None:
        missing, extra, different = missing[:limit], extra[:limit], different[:limit]
    return dict(missing=missing, extra=extra, different=different,
                equal=not (only_left or only_right), left_rows=left_rows, right_rows=right_rows)
