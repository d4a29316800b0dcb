"""The first user's ``revenues`` at scale, and the three reports they run on it.

Columns as in the first user's runbook (id, org_id, property_id, amount_cents, payment_mode,
occurred_at, status, description, category, created_at, updated_at), the indexes a plain
table of theirs carries (the primary key, ``(org_id, occurred_at)`` for the per-organisation
reports, ``(occurred_at)`` for the time-range ones), and rows spread evenly over three years
(2023-2025, UTC) in the order they occurred, as an append-mostly payments table is written.

Organisations are skewed over ``ORGS`` ids like real tenants: ``org_id = floor(exp(u * ln(ORGS + 1)))``
with ``u`` uniform is Zipf-like (P(org = k) ~ 1/k): org 1 holds about 5 % of the rows, the top
1000 orgs half of them, and the tail reaches ids near a million.

Generated on the server by one ``INSERT … SELECT … generate_series`` into the bare table, the
indexes built afterwards (faster than maintaining them row by row); ``setseed`` makes it
repeatable. The benchmarks own this schema (the lab's demo data may change; published numbers
must not).
"""
import datetime

from psycopg2 import sql

TABLE = ("public", "revenues")
ORGS = 1000000
FIRST = datetime.datetime(2023, 1, 1, tzinfo=datetime.timezone.utc)
END = datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)     # three years, exclusive
NOW = datetime.datetime(2025, 12, 15, tzinfo=datetime.timezone.utc)   # "now" for phase 1's premake

# The first user's partitioning spec (inventories/lab): quarterly, four quarters ahead, a default.
SPEC = dict(interval="quarterly", premake=4, default_partition=True)

DDL = """
CREATE TABLE public.revenues (
    id            bigserial   PRIMARY KEY,
    org_id        bigint      NOT NULL,
    property_id   bigint,
    amount_cents  bigint      NOT NULL,
    payment_mode  text        NOT NULL,
    occurred_at   timestamptz NOT NULL,
    status        text        NOT NULL DEFAULT 'pending',
    description   text,
    category      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
)
"""

INDEXES = (
    "CREATE INDEX revenues_org_id_occurred_at_idx ON public.revenues (org_id, occurred_at)",
    "CREATE INDEX revenues_occurred_at_idx ON public.revenues (occurred_at)",
)

# %(name)s are parameters (values), never SQL.
LOAD = """
INSERT INTO public.revenues (id, org_id, property_id, amount_cents, payment_mode, occurred_at, status,
                             description, category, created_at, updated_at)
SELECT g, org_id, org_id * 10 + (random() * 9)::int, amount, mode, at,
       CASE WHEN r < 0.93 THEN 'settled' WHEN r < 0.96 THEN 'pending' WHEN r < 0.98 THEN 'refunded'
            ELSE 'failed' END,
       initcap(category) || ' payment, property ' || (org_id * 10) || ', ref ' || lpad(g::text, 10, '0'),
       category, at + interval '1 minute', at + interval '1 minute'
  FROM (SELECT g,
               floor(exp(random() * ln(%(orgs)s + 1)))::bigint AS org_id,
               (100 + random() * random() * 250000)::bigint AS amount,
               (ARRAY['card','card','card','bank_transfer','bank_transfer','cash','direct_debit','wallet'])
                   [1 + floor(random() * 8)::int] AS mode,
               (ARRAY['rent','rent','rent','deposit','fees','services','utilities','other'])
                   [1 + floor(random() * 8)::int] AS category,
               random() AS r,
               -- in the order they occurred, a few seconds of jitter
               %(first)s::timestamptz + ((g - 1 + random()) / %(n)s) * (%(end)s::timestamptz - %(first)s::timestamptz)
                   AS at
          FROM generate_series(1::bigint, %(n)s::bigint) AS g) AS s
"""


def create(conn, rows, seed=0.42):
    """``public.revenues`` with ``rows`` rows, its indexes, vacuumed and analyzed.

    ``conn`` is autocommit. Returns ``{'load_s': …, 'index_s': …}``."""
    import time
    cur = conn.cursor()
    cur.execute(DDL)
    t0 = time.monotonic()
    cur.execute("BEGIN")
    cur.execute("SELECT setseed(%s)", (seed,))
    cur.execute(LOAD, dict(n=rows, orgs=ORGS, first=FIRST, end=END))
    cur.execute("COMMIT")
    cur.execute("SELECT setval('public.revenues_id_seq', %s)", (rows,))
    load_s = time.monotonic() - t0
    t0 = time.monotonic()
    cur.execute("SET maintenance_work_mem = '256MB'")
    for stmt in INDEXES:
        cur.execute(stmt)
    cur.execute("RESET maintenance_work_mem")
    index_s = time.monotonic() - t0
    cur.execute("VACUUM (ANALYZE) public.revenues")
    return dict(load_s=load_s, index_s=index_s)


# --- the reports ------------------------------------------------------------------------------

# The reporting day, month and quarter: recent, complete periods.
DAY = (datetime.datetime(2025, 11, 14, tzinfo=datetime.timezone.utc),
       datetime.datetime(2025, 11, 15, tzinfo=datetime.timezone.utc))
MONTH = (datetime.datetime(2025, 11, 1, tzinfo=datetime.timezone.utc),
         datetime.datetime(2025, 12, 1, tzinfo=datetime.timezone.utc))
QUARTER = (datetime.datetime(2025, 7, 1, tzinfo=datetime.timezone.utc),
           datetime.datetime(2025, 10, 1, tzinfo=datetime.timezone.utc))

# The organisations reported on: the biggest tenant (the worst case for the targets) and one
# from the middle of the distribution (about 0.01 % of the rows).
BIG_ORG = 1
MID_ORG = 1000

# Each report's SQL with {t} for the table and {p1}, {p2}, ... for its parameters. The application
# sends both bounds of the period: constants, so the planner prunes partitions while planning.
# Days and months are UTC's, written ``occurred_at AT TIME ZONE 'UTC'``: immutable on every
# supported version, so an index can hold the expression (``date_trunc(…, 'UTC')`` with three
# arguments is immutable on PostgreSQL 18 but not on 15).
REPORTS = {
    "daily": ("""
SELECT payment_mode, category, count(*) AS payments, sum(amount_cents) AS amount_cents
  FROM {t}
 WHERE org_id = {p1} AND occurred_at >= {p2} AND occurred_at < {p3} AND status <> 'failed'
 GROUP BY payment_mode, category
 ORDER BY payment_mode, category""", "the daily report of one organisation: totals per payment mode and category"),
    "monthly": ("""
SELECT date_trunc('day', occurred_at AT TIME ZONE 'UTC') AS day, count(*) AS payments,
       sum(amount_cents) FILTER (WHERE status = 'settled') AS settled_cents,
       sum(amount_cents) FILTER (WHERE status = 'refunded') AS refunded_cents,
       sum(amount_cents) FILTER (WHERE status = 'pending') AS pending_cents
  FROM {t}
 WHERE org_id = {p1} AND occurred_at >= {p2} AND occurred_at < {p3}
 GROUP BY 1
 ORDER BY 1""", "the monthly report of one organisation: per day, settled, refunded and pending amounts"),
    "cross_org": ("""
SELECT date_trunc('month', occurred_at AT TIME ZONE 'UTC') AS month, payment_mode, count(*) AS payments,
       sum(amount_cents) AS amount_cents
  FROM {t}
 WHERE occurred_at >= {p1} AND occurred_at < {p2} AND status = 'settled'
 GROUP BY 1, 2
 ORDER BY 1, 2""", "cross-organisation quarterly analytics: settled revenue per month and payment mode"),
}

# (name, report, parameters): what is timed. The targets are the first user's.
CASES = (
    ("daily", "daily", (BIG_ORG,) + DAY),
    ("daily_mid_org", "daily", (MID_ORG,) + DAY),
    ("monthly", "monthly", (BIG_ORG,) + MONTH),
    ("monthly_mid_org", "monthly", (MID_ORG,) + MONTH),
    ("cross_org", "cross_org", QUARTER),
)
TARGET_MS = {"daily": 100, "monthly": 500, "cross_org": 2000}


def report_sql(report, table, prepared=False):
    """The report's statement on ``table``: with ``%s`` placeholders (psycopg2 sends the values in
    the text: planned at every execution), or ``$1, $2, ...`` for ``PREPARE`` (``prepared``)."""
    text = REPORTS[report][0].strip()
    n = text.count("{p")
    params = dict(("p%d" % i, sql.SQL("$%d" % i) if prepared else sql.Placeholder()) for i in range(1, n + 1))
    return sql.SQL(text).format(t=sql.Identifier(*table), **params)
