"""The benchmark table: revenues-like (the lab's first table), small enough to load fast.

The benchmarks own this schema rather than importing the lab's, so that a change of the
demo data does not silently change the published numbers.  Data is generated in SQL
(``generate_series``), deterministic (no random()) so that every run loads the same rows.
"""
from psycopg2 import sql

TABLE = "revenues"
TWIN = "revenues_partitioned"
VIEW = "revenues_by_org"
FIRST_MONTH = "2024-01-01"
MONTHS = 24            # data spans 2024-01 .. 2025-12
KEY_COLS = ["id", "occurred_at"]

COLUMNS = [
    # name, type, default
    ("id", "bigint", None),
    ("org_id", "integer", None),
    ("property_id", "integer", None),
    ("amount_cents", "bigint", None),
    ("payment_mode", "text", None),
    ("status", "text", None),
    ("description", "text", None),
    ("category", "text", None),
    ("occurred_at", "timestamptz", None),
    ("created_at", "timestamptz", "now()"),
    ("updated_at", "timestamptz", "now()"),
]
COLUMN_NAMES = [c[0] for c in COLUMNS]


def _columns_sql(with_serial):
    parts = []
    for name, typ, default in COLUMNS:
        if name == "id" and with_serial:
            parts.append(sql.SQL("id bigint NOT NULL DEFAULT nextval('public.revenues_id_seq')"))
            continue
        p = sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(typ))
        if name in ("org_id", "amount_cents", "occurred_at", "status"):
            p = sql.SQL("{} NOT NULL").format(p)
        if default:
            p = sql.SQL("{} DEFAULT {}").format(p, sql.SQL(default))
        parts.append(p)
    return sql.SQL(", ").join(parts)


def create_original(cur, rows, view=False):
    """``public.revenues`` with ``rows`` rows over 24 months, its indexes and optionally a view."""
    cur.execute("CREATE SEQUENCE public.revenues_id_seq")
    cur.execute(sql.SQL("CREATE TABLE public.revenues ({}, PRIMARY KEY (id), "
                        "CHECK (amount_cents > -100000000))").format(_columns_sql(True)))
    cur.execute("ALTER SEQUENCE public.revenues_id_seq OWNED BY public.revenues.id")
    load_rows(cur, ("public", "revenues"), 1, rows)
    cur.execute("SELECT setval('public.revenues_id_seq', %s)", (rows,))
    cur.execute("CREATE INDEX revenues_org_occurred_idx ON public.revenues (org_id, occurred_at)")
    cur.execute("CREATE INDEX revenues_occurred_idx ON public.revenues (occurred_at)")
    if view:
        cur.execute("CREATE VIEW public.revenues_by_org AS SELECT org_id, count(*) AS n, sum(amount_cents) AS total "
                    "FROM public.revenues GROUP BY org_id")
    cur.execute("VACUUM ANALYZE public.revenues")


def load_rows(cur, table, first, last, total=None):
    """Rows ``first..last`` (ids), spread evenly over the 24 months; orgs skewed (a few big tenants)."""
    cur.execute(sql.SQL("""
        INSERT INTO {} (id, org_id, property_id, amount_cents, payment_mode, status, description, category,
                        occurred_at, created_at, updated_at)
        SELECT g,
               CASE WHEN g %% 10 < 5 THEN g %% 7 + 1 ELSE g %% 997 + 1 END,
               g %% 5003 + 1,
               (g * 7919) %% 500000 - 1000,
               (ARRAY['card','transfer','cash','cheque'])[g %% 4 + 1],
               (ARRAY['paid','pending','refunded'])[g %% 3 + 1],
               'revenue line ' || g,
               (ARRAY['rent','fees','deposit','services','other'])[g %% 5 + 1],
               timestamptz %s + ((g::double precision / %s) * %s) * interval '1 day',
               timestamptz %s, timestamptz %s
          FROM generate_series(%s::bigint, %s::bigint) g
    """).format(sql.Identifier(*table)), (FIRST_MONTH, max(total or last, 1), MONTHS * 30.4, FIRST_MONTH, FIRST_MONTH, first, last))


def create_twin_by_hand(cur, premake_months=6):
    """A partitioned twin as phase 1 builds it (monthly ranges, default partition, same indexes).

    Used only when the collection's own phase-1 code (``prepare_table``) is not available;
    the results say which one built the twin.
    """
    cur.execute(sql.SQL("CREATE TABLE public.revenues_partitioned ({}, PRIMARY KEY (id, occurred_at), "
                        "CHECK (amount_cents > -100000000)) PARTITION BY RANGE (occurred_at)").format(
        _columns_sql(True)))
    for m in range(MONTHS + premake_months):
        y, mo = 2024 + m // 12, m % 12 + 1
        ny, nmo = 2024 + (m + 1) // 12, (m + 1) % 12 + 1
        cur.execute(sql.SQL("CREATE TABLE {} PARTITION OF public.revenues_partitioned "
                            "FOR VALUES FROM ({}) TO ({})").format(
            sql.Identifier("revenues_%04d_%02d" % (y, mo)),
            sql.Literal("%04d-%02d-01 00:00:00+00" % (y, mo)), sql.Literal("%04d-%02d-01 00:00:00+00" % (ny, nmo))))
    cur.execute("CREATE TABLE public.revenues_default PARTITION OF public.revenues_partitioned DEFAULT")
    cur.execute("CREATE INDEX revenues_org_occurred_idx_p ON public.revenues_partitioned (org_id, occurred_at)")
    cur.execute("CREATE INDEX revenues_occurred_idx_p ON public.revenues_partitioned (occurred_at)")


def copy_all_to_twin(cur):
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMN_NAMES)
    cur.execute(sql.SQL("INSERT INTO public.revenues_partitioned ({c}) SELECT {c} FROM public.revenues").format(c=cols))
    cur.execute("VACUUM ANALYZE public.revenues_partitioned")


# pgbench scripts: the application's single-row writes on the original table.
INSERT_SCRIPT = """\\set org random(1, 1000)
\\set prop random(1, 5000)
\\set amount random(100, 500000)
\\set sec random(0, 63000000)
INSERT INTO public.revenues (org_id, property_id, amount_cents, payment_mode, status, description, category, occurred_at)
VALUES (:org, :prop, :amount, 'card', 'paid', 'bench insert', 'rent',
        timestamptz '2024-01-01 00:00:00+00' + :sec * interval '1 second');
"""

UPDATE_SCRIPT = """\\set id random(1, :maxid)
\\set delta random(1, 100)
UPDATE public.revenues SET amount_cents = amount_cents + :delta, status = 'pending', updated_at = now()
 WHERE id = :id;
"""
