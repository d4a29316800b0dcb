"""Benchmark 4 (issue 8): the first user's success criteria, before and after partitioning.

The table is the first user's ``revenues`` at scale (bench/seed_revenues.py): 10M rows over
three years (--quick 200k), organisations Zipf-skewed over 1M ids, with the plain table's usual
indexes. It is partitioned by our phases 1-3 exactly as the playbooks run them (phase 1
``prepare_table`` with the first user's spec: quarterly, premake 4, a default partition; our
backfill; the full verification; the switchover). Afterwards the same database holds both
sides with the same rows: ``revenues`` (partitioned) and ``revenues_old`` (the plain original
phase 3 keeps for rollback, with its own indexes). Both are vacuumed and analyzed alike.

Measured, side by side in one run on one server:

1. **The three reports** as the first user runs them (seed_revenues.REPORTS): the daily report
   of one organisation, its monthly report, and a cross-organisation quarterly analytics query;
   the per-organisation reports for the biggest tenant (org 1, ~5 % of the rows: the worst case
   for the targets) and for one in the middle of the distribution (org 1000). Warm (every
   statement runs several times before timing), then alternated rounds (plain, partitioned;
   partitioned, plain; ...), each statement at least ``reps`` times per round (a fast one as often
   as fits in ``budget_ms``), median per round, timed by the client (latency) and by the server
   backend's CPU time (``/proc/<pid>/schedstat``: not inflated by the machine's load); the
   figure is the ratio of the medians over rounds (plain ÷ partitioned: > 1 means partitioning
   is faster) with the range of the per-round ratios as its spread. Three ways of sending each
   query: *literal* (values in the statement text, as psycopg2 and many ORMs send it: planned at
   every execution), *prepared* (``PREPARE``/``EXECUTE``, ``plan_cache_mode`` auto: after five
   executions PostgreSQL may switch to a generic plan, which prunes partitions at executor
   start instead of while planning) and *prepared_custom* (the same statements with
   ``plan_cache_mode = force_custom_plan``: planned with their values every time). Planning time alone (``EXPLAIN (SUMMARY)``) is sampled
   every round too. ``EXPLAIN (ANALYZE, BUFFERS)`` of every query on both sides is saved in
   ``reports_plans.md``: the partitions scanned show the pruning.
2. **Index sizes** of both sides (sum over the partitions): the primary key grows by the
   partition key, ``(id)`` → ``(id, occurred_at)``.
3. **Phase 4's partition-specific indexes** (``PHASE4_INDEXES``, the table spec's ``indexes:``
   key), built online (ON ONLY, each partition CONCURRENTLY, ATTACH), then the reports again:
   plain ÷ partitioned-with-phase-4, alternated the same way; then the control: the same indexes
   on the plain table too (what the index does, apart from what the partitioning does).
4. **Removing a year of data**, last (it destroys it): ``DELETE … WHERE occurred_at < …`` on the
   plain table (and the ``VACUUM`` that makes the space reusable) against retention on the
   partitioned one (retention's own steps: detach + drop of the expired partitions), one quarter per step, four steps
   alternated: time and WAL bytes (``pg_current_wal_insert_lsn()`` differences) with
   ``full_page_writes`` on for this stage (as in production; the lab servers run without it) and
   a ``CHECKPOINT`` before every step; autovacuum is off on the plain table meanwhile so that
   its VACUUM is measured where it belongs.
"""
import os
import subprocess
import time

from psycopg2 import sql

from bench import backfill as bf
from bench import common, product
from bench import seed_revenues as seed
from bench.common import fmt, log, median

DBNAME = "bench_reports"
PLAIN = ("public", "revenues_old")
PARTITIONED = ("public", "revenues")
# How a report is sent: the values in the text (planned at every execution); a prepared statement
# under plan_cache_mode auto (generic plan after five runs if PostgreSQL estimates it no worse);
# the same with plan_cache_mode = force_custom_plan (planned with its values at every execution).
MODES = ("literal", "prepared", "prepared_custom")
PLAN_CACHE_MODE = {"literal": "auto", "prepared": "auto", "prepared_custom": "force_custom_plan"}
WARMUP = {"literal": 2, "prepared": 6, "prepared_custom": 2}

# What phase 4 adds: the spec's ``indexes:`` (docs/table-spec.md), as an operator writes it. Found
# with this benchmark (docs/benchmarks.md): a covering index for the per-organisation reports
# (index-only scans, no heap visit per row), and for the cross-organisation analytics an index
# whose order is the report's grouping (month, payment mode), partial on the rows it sums.
PHASE4_INDEXES = [
    dict(name="revenues_org_report_idx", columns=["org_id", "occurred_at"],
         include=["amount_cents", "payment_mode", "status", "category"]),
    dict(name="revenues_month_mode_settled_idx",
         columns=["date_trunc('month', occurred_at AT TIME ZONE 'UTC')", "payment_mode"],
         include=["occurred_at", "amount_cents"], where="status = 'settled'"),
]


# --- building both sides -----------------------------------------------------------------------

def build(srv, opts):
    """The plain table, then phases 1-3 on it; returns (connection, facts of the build)."""
    switchover = product.optional("switchover.swap", "switchover")
    if switchover is None:
        raise common.Skip("module_utils/switchover/swap.py switchover is not available")
    bf.api()
    common.fresh_database(srv, DBNAME)
    conn = srv.connect(DBNAME)
    facts = {}
    log("reports: loading %d rows" % opts.report_rows)
    facts.update(seed.create(conn, opts.report_rows))
    t0 = time.monotonic()
    facts["phase1_by"] = product.prepare_with_phase1(conn, **seed.SPEC)
    if facts["phase1_by"] is None:
        raise common.Skip("module_utils/prepare/prepare_table.py prepare_table is not available")
    facts["phase1_s"] = time.monotonic() - t0
    facts["backfill_s"], facts["rows_copied"] = bf.run_ours(srv, DBNAME)
    facts["verify_s"] = bf.verify_full(srv, DBNAME)
    sess = bf.module_session(srv, DBNAME)
    try:
        res = product.switch_over(sess, seed.TABLE[0] + "." + seed.TABLE[1], **seed.SPEC)
    finally:
        sess.close()
    facts["swap_lock_ms"] = res.get("swap_lock_ms")
    cur = conn.cursor()
    cur.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", (sql.Identifier(*PARTITIONED).as_string(cur),))
    if cur.fetchone()[0] != "p":
        raise RuntimeError("after the switchover %s is not the partitioned table: %r" % (PARTITIONED, res))
    t0 = time.monotonic()
    # Both sides in the same state: visibility map set (index-only scans), fresh statistics.
    for table in (PLAIN, PARTITIONED):
        cur.execute(sql.SQL("VACUUM (ANALYZE) {}").format(sql.Identifier(*table)))
    cur.execute("CHECKPOINT")
    facts["vacuum_s"] = time.monotonic() - t0
    log("reports: loaded in %.0f s + indexes %.0f s; phase 1 %.0f s, backfill %.0f s, verification %.0f s, "
        "swap lock %s ms" % (facts["load_s"], facts["index_s"], facts["phase1_s"], facts["backfill_s"],
                             facts["verify_s"], fmt(facts["swap_lock_ms"])))
    return conn, facts


def partitions(cur, table=PARTITIONED):
    """``[(name, bound expression)]`` of ``table``'s partitions."""
    cur.execute("SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass ORDER BY 1",
                (sql.Identifier(*table).as_string(cur),))
    return cur.fetchall()


# --- sizes ---------------------------------------------------------------------------------------

SIZES = """
SELECT ci.relname AS index, pg_get_indexdef(ci.oid) AS definition,
       coalesce((SELECT sum(pg_relation_size(t.relid)) FROM pg_partition_tree(ci.oid) t),
                pg_relation_size(ci.oid))::bigint AS bytes,
       (SELECT count(*) FROM pg_partition_tree(ci.oid) t WHERE t.isleaf) AS leaves
  FROM pg_index x JOIN pg_class ci ON ci.oid = x.indexrelid
 WHERE x.indrelid = %s::regclass
 ORDER BY x.indisprimary DESC, ci.relname
"""


def sizes(cur, table):
    """The heap and every index of ``table`` (partitions summed), in bytes."""
    ident = sql.Identifier(*table).as_string(cur)
    # pg_partition_tree lists nothing for a relation that is not partitioned
    cur.execute("SELECT coalesce((SELECT sum(pg_table_size(relid)) FROM pg_partition_tree(%s::regclass)), "
                "pg_table_size(%s::regclass))::bigint", (ident, ident))
    heap = cur.fetchone()[0]
    cur.execute(SIZES, (ident,))
    indexes = [dict(index=r[0], definition=r[1], bytes=r[2], leaves=r[3]) for r in cur.fetchall()]
    return dict(heap=heap, indexes=indexes, index_total=sum(i["bytes"] for i in indexes))


def btree_levels(cur, table):
    """Levels of each btree of ``table`` (the largest partition's for a partitioned one), when
    pageinspect is installable: an index one level shallower costs one page less per lookup."""
    cur.execute("SELECT EXISTS (SELECT FROM pg_available_extensions WHERE name = 'pageinspect')")
    if not cur.fetchone()[0]:
        return None
    cur.execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
    ident = sql.Identifier(*table).as_string(cur)
    cur.execute("""
        SELECT coalesce(pi.relname, ci.relname), max((bt_metap(ci.oid::regclass::text)).level) + 1
          FROM (SELECT relid FROM pg_partition_tree(%(t)s::regclass) WHERE isleaf
                UNION ALL SELECT %(t)s::regclass WHERE NOT EXISTS (SELECT FROM pg_partition_tree(%(t)s::regclass))) t
          JOIN pg_index x ON x.indrelid = t.relid
          JOIN pg_class ci ON ci.oid = x.indexrelid
          JOIN pg_am am ON am.oid = ci.relam AND am.amname = 'btree'
          LEFT JOIN pg_inherits h ON h.inhrelid = ci.oid
          LEFT JOIN pg_class pi ON pi.oid = h.inhparent
         GROUP BY 1 ORDER BY 1""", dict(t=ident))
    return dict(cur.fetchall())


# --- timing the reports --------------------------------------------------------------------------

def _statement(case, table, mode):
    """(statement, parameters) of ``case`` on ``table`` sent the ``mode`` way."""
    _name, report, params = case
    if mode == "literal":
        return seed.report_sql(report, table), params
    stmt = sql.SQL("EXECUTE {} ({})").format(prepared_name(case[0], table, mode),
                                              sql.SQL(", ").join(sql.Placeholder() * len(params)))
    return stmt, params


def prepared_name(case, table, mode):
    """The prepared statement of ``case`` on ``table`` for ``mode``: one per mode, so that
    pg_prepared_statements counts each mode's generic and custom plans apart."""
    return sql.Identifier("r_%s_%s_%s" % (case, table[1], mode))


def prepare_statements(cur, variants):
    cur.execute("DEALLOCATE ALL")
    for case in seed.CASES:
        for table in variants.values():
            for mode in MODES[1:]:
                cur.execute(sql.SQL("PREPARE {} AS {}").format(prepared_name(case[0], table, mode),
                                                               seed.report_sql(case[1], table, prepared=True)))


def send_as(cur, mode):
    cur.execute("SET plan_cache_mode = %s", (PLAN_CACHE_MODE[mode],))


def run_once(cur, stmt, params):
    t0 = time.perf_counter()
    cur.execute(stmt, params)
    cur.fetchall()
    return (time.perf_counter() - t0) * 1000.0


class BackendCpu:
    """CPU time of the server backend serving ``conn``, in ms, from ``/proc/<pid>/schedstat``
    (nanoseconds on a CPU, excluding time waiting for one): immune to the machine's load, unlike
    the latency. None where the server is not on this host or not readable. Parallel workers
    run in other processes and are not counted: the results say when a plan used them."""

    def __init__(self, conn):
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        self.path = "/proc/%d/schedstat" % cur.fetchone()[0]
        self.available = self.read() is not None

    def read(self):
        try:
            with open(self.path) as f:
                return int(f.read().split()[0]) / 1e6
        except (OSError, ValueError, IndexError):
            return None


def planning_ms(cur, case, table):
    cur.execute(sql.SQL("EXPLAIN (SUMMARY, FORMAT JSON) {}").format(seed.report_sql(case[1], table)), case[2])
    return cur.fetchone()[0][0]["Planning Time"]


def time_reports(conn, variants, rounds, reps, budget_ms=300.0):
    """Per case, mode and variant: the median ms of each round; planning ms likewise.

    ``variants``: {name: table}. Warm-up runs each statement twice, a prepared one six times (more
    than five, so that it has settled on its custom or generic plan). Each round then runs a
    statement at least ``reps`` times, and a fast one as often as fits in ``budget_ms`` (at most
    200): sub-millisecond queries on a shared machine need many runs for a stable median."""
    cur = conn.cursor()
    backend = BackendCpu(conn)
    prepare_statements(cur, variants)
    runs = {}
    for case in seed.CASES:
        for v, table in variants.items():
            for mode in MODES:
                send_as(cur, mode)
                warm = [run_once(cur, *_statement(case, table, mode)) for _ in range(WARMUP[mode])]
                runs[case[0], v, mode] = int(min(200, max(reps, budget_ms // max(median(warm), 0.01))))

    def per_case():
        return dict((case[0], dict((mode, dict((v, []) for v in variants)) for mode in MODES)) for case in seed.CASES)
    samples, cpu = per_case(), per_case()
    planning = dict((case[0], dict((v, []) for v in variants)) for case in seed.CASES)
    for order in common.rotations(list(variants), rounds):
        for case in seed.CASES:
            for v in order:
                table = variants[v]
                for mode in MODES:
                    send_as(cur, mode)
                    stmt, params = _statement(case, table, mode)
                    n = runs[case[0], v, mode]
                    cpu0 = backend.read()
                    samples[case[0]][mode][v].append(median([run_once(cur, stmt, params) for _ in range(n)]))
                    cpu[case[0]][mode][v].append((backend.read() - cpu0) / n if backend.available else None)
                planning[case[0]][v].append(median([planning_ms(cur, case, table) for _ in range(5)]))
    send_as(cur, "literal")
    # generic_plans and custom_plans: PostgreSQL 14+
    cur.execute("SELECT name, generic_plans, custom_plans FROM pg_prepared_statements")
    plan_kinds = dict((r[0], dict(generic=r[1], custom=r[2])) for r in cur.fetchall())
    cur.execute("DEALLOCATE ALL")
    return dict(samples=samples, cpu=cpu, planning=planning, plan_kinds=plan_kinds,
                runs_per_round=dict(("%s/%s/%s" % k, n) for k, n in runs.items()))


def compare(timing, base, other):
    """Per case and mode: medians, ratio base ÷ other of the medians, and the per-round ratio range."""
    out = {}
    for case, modes in timing["samples"].items():
        out[case] = {}
        for mode, by_variant in modes.items():
            a, b = by_variant[base], by_variant[other]
            per_round = [x / y for x, y in zip(a, b) if y]
            out[case][mode] = dict(base_ms=median(a), other_ms=median(b), ratio=common.ratio(median(a), median(b)),
                                   ratio_min=min(per_round) if per_round else None,
                                   ratio_max=max(per_round) if per_round else None,
                                   base_rounds=a, other_rounds=b)
        pl = timing["planning"][case]
        out[case]["planning"] = dict(base_ms=median(pl[base]), other_ms=median(pl[other]))
        for mode, by_variant in timing["cpu"][case].items():
            a, b = by_variant[base], by_variant[other]
            out[case][mode].update(base_cpu_ms=median(a), other_cpu_ms=median(b),
                                   cpu_ratio=common.ratio(median(a), median(b)))
    return out


# --- plans -----------------------------------------------------------------------------------------

def _walk(node):
    yield node
    for child in node.get("Plans", []):
        for n in _walk(child):
            yield n


def explain(conn, case, table, mode):
    """EXPLAIN (ANALYZE, BUFFERS) of ``case`` on ``table`` sent the ``mode`` way: the text, and what
    the plan shows (partitions scanned, partitions removed at executor start, index-only, workers)."""
    cur = conn.cursor()
    stmt, params = _statement(case, table, mode)
    send_as(cur, mode)
    if mode != "literal":
        prepare_statements(cur, {"t": table})
        for _ in range(WARMUP[mode]):
            run_once(cur, stmt, params)
    out = {}
    # What the plan shows, from EXPLAIN without ANALYZE (it prunes at executor start too); the
    # text below, with ANALYZE, for people.
    cur.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(stmt), params)
    nodes = list(_walk(cur.fetchone()[0][0]["Plan"]))
    out["relations"] = sorted(set(n["Relation Name"] for n in nodes if "Relation Name" in n))
    out["subplans_removed"] = sum(n.get("Subplans Removed", 0) for n in nodes)
    out["index_only"] = any(n["Node Type"] == "Index Only Scan" for n in nodes)
    out["workers"] = sum(n.get("Workers Planned", 0) for n in nodes)
    cur.execute(sql.SQL("EXPLAIN (ANALYZE, BUFFERS) {}").format(stmt), params)
    out["text"] = "\n".join(r[0] for r in cur.fetchall())
    if mode != "literal":
        cur.execute("DEALLOCATE ALL")
    send_as(cur, "literal")
    return out


def explain_all(conn, variants):
    return dict((case[0], dict((v, dict((mode, explain(conn, case, table, mode)) for mode in MODES))
                               for v, table in variants.items())) for case in seed.CASES)


# --- phase 4 ---------------------------------------------------------------------------------------

PHASE4_BY = ("module_utils/maintain/optimize.py (phase 4, partition_optimize: the spec's indexes checked by "
             "PostgreSQL, indexes.build_online, ANALYZE)")
RETENTION_BY = ("module_utils/maintain/steps.py (retention's steps detach_range_partition and retire_partition "
                "under the lock budget)")


def _spec():
    """The first user's spec with phase 4's indexes, as an operator writes it."""
    return product.table_spec(**dict(seed.SPEC, indexes=PHASE4_INDEXES))


def phase4(srv, conn):
    """Build PHASE4_INDEXES on the partitioned table with phase 4's own code (indexes, then ANALYZE);
    (seconds, by)."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.optimize import optimize
    sess = bf.module_session(srv, DBNAME)
    try:
        t0 = time.monotonic()
        result = optimize(sess, _spec(), product.STATE_SCHEMA)
        seconds = time.monotonic() - t0
    finally:
        sess.close()
    if [ix["status"] for ix in result["indexes"]] != ["built"] * len(PHASE4_INDEXES):
        raise RuntimeError("phase 4 built %s" % result["indexes"])
    return seconds, PHASE4_BY


def same_indexes_on_plain(srv, conn):
    """The control: PHASE4_INDEXES on the plain table too, as PostgreSQL parses them for phase 4
    (optimize.probe), with a plain CREATE INDEX; returns their names."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.indexes import index_statement
    from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.optimize import probe
    sess = bf.module_session(srv, DBNAME)
    try:
        statements = [(index_statement(PLAIN, index.name + "_plain", probe(sess, PLAIN, index, 1000)),
                       index.name + "_plain") for index in _spec().indexes]
    finally:
        sess.close()
    cur = conn.cursor()
    cur.execute("SET maintenance_work_mem = '256MB'")
    for stmt, _name in statements:
        cur.execute(stmt)
    cur.execute("RESET maintenance_work_mem")
    cur.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(*PLAIN)))
    return [name for _stmt, name in statements]


def drop_expired_partitions(sess, partitions):
    """Retention with ``retention_action: drop`` of ``partitions`` (names in the partitioned table's
    schema), one step at a time with retention's own steps: the detach (with a default partition
    PostgreSQL refuses DETACH ... CONCURRENTLY, HP15, so a plain one under the lock budget), then the
    drop. The playbook's plan is not asked: it waits for cleanup, and the benchmark keeps
    ``revenues_old`` as its plain side."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import steps, target
    from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.functions import functions_schema
    spec = _spec()
    tgt = target.resolve(sess, spec, product.STATE_SCHEMA)
    fn_schema = functions_schema(sess, product.templates(), product.STATE_SCHEMA)
    for name in partitions:
        part = sql.Identifier(PARTITIONED[0], name).as_string(sess.conn)
        for step, function, args in (
                ("detach", "detach_range_partition", dict(p_parent=tgt.regclass(sess), p_partition=part,
                                                          p_table_name=tgt.table_name, p_action="drop")),
                ("retire", "retire_partition", dict(p_table_name=tgt.table_name, p_schema=PARTITIONED[0], p_name=name,
                                                    p_action="drop", p_archive_schema=spec.tuning["archive_schema"]))):
            out = steps.run_step(sess, fn_schema, product.STATE_SCHEMA, tgt, step, name, function, args)
            if out["status"] not in ("detached", "dropped"):
                raise RuntimeError("retention's %s of %s: %s (%s)" % (step, name, out["status"], out["detail"]))


def drop_indexes(conn, names):
    cur = conn.cursor()
    for name in names:
        cur.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(PLAIN[0], name)))


# --- removing a year ---------------------------------------------------------------------------------

def _wal_lsn(cur):
    cur.execute("SELECT pg_current_wal_insert_lsn()")
    return cur.fetchone()[0]


def _measured(cur, fn):
    """(seconds, WAL bytes) of ``fn()``."""
    before = _wal_lsn(cur)
    t0 = time.monotonic()
    result = fn()
    seconds = time.monotonic() - t0
    cur.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)::bigint", (before,))
    return seconds, cur.fetchone()[0], result


def remove_a_year(srv, conn, year=2023):
    """DELETE + VACUUM on the plain table against detach + drop of the partitions, quarter by quarter."""
    cur = conn.cursor()
    cur.execute("SHOW full_page_writes")
    fpw = cur.fetchone()[0]
    cur.execute("ALTER SYSTEM SET full_page_writes = on")
    cur.execute("SELECT pg_reload_conf()")
    cur.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(sql.Identifier(*PLAIN)))
    steps = []
    sess = bf.module_session(srv, DBNAME)
    try:
        time.sleep(0.5)  # the reload reaches every backend
        names = dict(partitions(cur))
        for q, order in enumerate(common.rotations(["plain", "partitioned"], 4)):
            upper = "%04d-%02d-01 00:00:00+00" % (year + (q == 3), 1 if q == 3 else 3 * q + 4)
            part = "%s_%04d_q%d" % (PARTITIONED[1], year, q + 1)
            if part not in names:
                raise RuntimeError("no partition %s to remove (partitions: %s)" % (part, ", ".join(names)))
            step = dict(quarter="%d Q%d" % (year, q + 1), partition=part, order=order)
            for variant in order:
                cur.execute("CHECKPOINT")
                if variant == "plain":
                    delete = sql.SQL("DELETE FROM {} WHERE occurred_at < %s").format(sql.Identifier(*PLAIN))
                    step["delete_s"], step["delete_wal"], step["rows"] = _measured(
                        cur, lambda: cur.execute(delete, (upper,)) or cur.rowcount)
                    step["vacuum_s"], step["vacuum_wal"], _ = _measured(
                        cur, lambda: cur.execute(sql.SQL("VACUUM {}").format(sql.Identifier(*PLAIN))))
                else:
                    step["drop_s"], step["drop_wal"], _ = _measured(
                        cur, lambda: drop_expired_partitions(sess, [part]))
            steps.append(step)
            log("reports: removed %s: DELETE %.1f s / %d kB WAL (+ VACUUM %.1f s / %d kB), detach + drop %.3f s / "
                "%d kB" % (step["quarter"], step["delete_s"], step["delete_wal"] // 1024, step["vacuum_s"],
                           step["vacuum_wal"] // 1024, step["drop_s"], step["drop_wal"] // 1024))
        counts = []
        for table in (PLAIN, PARTITIONED):
            cur.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table)))
            counts.append(cur.fetchone()[0])
        if counts[0] != counts[1]:
            raise RuntimeError("after removing %d the plain table holds %d rows, the partitioned %d" % (
                year, counts[0], counts[1]))
    finally:
        sess.close()
        cur.execute(sql.SQL("ALTER TABLE {} RESET (autovacuum_enabled)").format(sql.Identifier(*PLAIN)))
        cur.execute(sql.SQL("ALTER SYSTEM SET full_page_writes = {}").format(sql.Literal(fpw)))
        cur.execute("SELECT pg_reload_conf()")
    total = dict((k, sum(s[k] for s in steps)) for k in ("rows", "delete_s", "delete_wal", "vacuum_s", "vacuum_wal",
                                                         "drop_s", "drop_wal"))
    total["time_ratio"] = common.ratio(total["delete_s"] + total["vacuum_s"], total["drop_s"])
    total["wal_ratio"] = common.ratio(total["delete_wal"] + total["vacuum_wal"], total["drop_wal"])
    per_step = [common.ratio(s["delete_s"] + s["vacuum_s"], s["drop_s"]) for s in steps]
    total["time_ratio_min"], total["time_ratio_max"] = min(per_step), max(per_step)
    return dict(year=year, steps=steps, total=total, rows_left=counts[0], full_page_writes_before=fpw, by=RETENTION_BY)


# --- the run -------------------------------------------------------------------------------------------

def run(servers, opts):
    # One server unless --pg names several: a 10M-row build per server is most of the run's time.
    versions = opts.versions if opts.pg else opts.versions[:1]
    results = {}
    for major, srv in servers.each(versions, "reports"):
        results[major] = run_server(srv, opts)
    if not results:
        raise common.Skip("no PostgreSQL server available")
    from bench import reports_results
    reports_results.report(results, opts, __doc__)
    return results


def run_server(srv, opts):
    loadavg_at_start = "%.2f %.2f %.2f" % os.getloadavg()
    conn, build_facts = build(srv, opts)
    cur = conn.cursor()
    out = dict(build=build_facts, partitions=[p[0] for p in partitions(cur)], plans={})
    out["sizes"] = dict(plain=sizes(cur, PLAIN), partitioned=sizes(cur, PARTITIONED))
    out["btree_levels"] = dict(plain=btree_levels(cur, PLAIN), partitioned=btree_levels(cur, PARTITIONED))

    def stage(name, explained):
        """One alternation of the reports on both sides; the plans of the ``explained`` sides."""
        log("reports: %s: timing the reports (%d rounds)" % (name, opts.report_rounds))
        out["plans"][name] = explain_all(conn, explained)
        timing = time_reports(conn, {"plain": PLAIN, "partitioned": PARTITIONED}, opts.report_rounds,
                              opts.report_reps, opts.report_budget_ms)
        out[name] = dict(compare(timing, "plain", "partitioned"), plan_kinds=timing["plan_kinds"],
                         runs_per_round=timing["runs_per_round"])

    stage("phase3", {"plain": PLAIN, "partitioned": PARTITIONED})

    out["phase4_s"], out["phase4_by"] = phase4(srv, conn)
    out["phase4_indexes"] = PHASE4_INDEXES
    out["sizes"]["phase4"] = sizes(cur, PARTITIONED)
    log("reports: phase 4's indexes built in %.0f s" % out["phase4_s"])
    stage("phase4", {"partitioned + phase 4": PARTITIONED})

    # The control: is it the partitioning or the index? The same indexes on the plain table.
    extra = same_indexes_on_plain(srv, conn)
    out["sizes"]["plain_same_indexes"] = sizes(cur, PLAIN)
    stage("control", {"plain + the same indexes": PLAIN})
    drop_indexes(conn, extra)

    out["retention"] = remove_a_year(srv, conn)
    out["facts"] = common.setup_facts(
        srv, conn, rows=opts.report_rows, orgs=seed.ORGS, rounds=opts.report_rounds, reps=opts.report_reps,
        budget_ms=opts.report_budget_ms,
        spec="quarterly, premake 4, default partition (phase 1 prepare_table, our backfill, full verification, "
             "switchover)", jit=_setting(cur, "jit"), jit_available=_jit_available(cur),
        max_parallel_workers_per_gather=_setting(cur, "max_parallel_workers_per_gather"),
        work_mem=_setting(cur, "work_mem"), loadavg_at_start=loadavg_at_start, uptime_at_end=_uptime())
    conn.close()
    return out


def _setting(cur, name):
    cur.execute("SELECT current_setting(%s)", (name,))
    return cur.fetchone()[0]


def _jit_available(cur):
    cur.execute("SELECT pg_jit_available()")
    return cur.fetchone()[0]


def _uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
