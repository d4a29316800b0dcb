"""Benchmark 2 (issues 3 and 11): the backfill.

a. Throughput, alternated on one server, on every server: our copy (module_utils/migrate/backfill.py
   with the module's defaults — 10000 rows at most per batch, auto-sized to 500 ms, one worker,
   the latency guard on — and the verification off: the copy alone) against one
   ``INSERT INTO twin SELECT * FROM original`` (goal: ours/insert >= 0.85); beside them
   ``ours_locked``, the same copy with every row read ``FOR SHARE`` (the design before the key
   log), and on PostgreSQL 15 pg_partman 4.7 ``partition_data_proc`` (p_wait 0, its default
   batch: one partition interval) moving a copy of the same rows into a partman-managed twin.
b. The same at ``flat_rows`` (10M; --quick 1M): ours against INSERT…SELECT, alternated.
c. Flatness: the time per batch of one more copy of ours after those rounds (not counted in b):
   last-decile / first-decile of the median milliseconds per 1000 rows (must stay ~1), beside a
   reference copy timed between batches (the machine's own drift).
d. The application's writes during the backfill (bench/backfill_latency.py).
e. The whole of phase 2 as ``ansible-playbook phase2_migrate.yml`` runs it (bench/backfill_phase2.py).
f. Workers: ``copy_workers`` 1, 2 and 4 on the table of part a, alternated: rows/s, the WAL
   written per second (pg_stat_wal) and how busy the machine's CPUs were.
"""
import json
import os
import sys
import time

from psycopg2 import sql

from bench import backfill_latency, backfill_phase2, common, product, schema
from bench.common import fmt, log, md_table, median, ratio

STATE = product.STATE_SCHEMA


def api():
    """The backfill API of module_utils/migrate/backfill.py, or Skip."""
    found = product.optional("migrate.backfill", "load_context", "start_backfill", "copy_for", "finish_if_done",
                             "CopyOptions")
    if found is None:
        raise common.Skip("module_utils/migrate/backfill.py (load_context, start_backfill, copy_for, finish_if_done) "
                          "is not available")
    return dict(zip(("load_context", "start_backfill", "copy_for", "finish_if_done", "CopyOptions"), found))


def default_tuning():
    """Every tuning knob at the spec's default (what the module and the playbook use)."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.spec import resolve_tuning
    return resolve_tuning({})


def module_session(srv, dbname):
    from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
    return Session.open(srv.module_params(dbname), False, "bench")


def build(srv, dbname, rows, view=False):
    """Original with ``rows`` rows; twin, partitions, sync triggers and state row as phase 1 leaves them."""
    common.fresh_database(srv, dbname)
    conn = srv.connect(dbname)
    cur = conn.cursor()
    t0 = time.time()
    schema.create_original(cur, rows, view=view)
    log("backfill: loaded %d rows in %.0f s" % (rows, time.time() - t0))
    how = product.phase1(conn)
    cur.execute("VACUUM ANALYZE public.revenues_partitioned")
    return conn, how


def reset_twin(conn):
    """Empty twin, no key log, state back to 'prepared': the next copy starts from nothing."""
    cur = conn.cursor()
    cur.execute("DROP TRIGGER IF EXISTS partitioning_sync_keylog_delete ON public.revenues")
    cur.execute("DROP TRIGGER IF EXISTS partitioning_sync_keylog_move ON public.revenues")
    cur.execute("TRUNCATE public.revenues_partitioned")
    cur.execute(sql.SQL("UPDATE {} SET phase = 'prepared', backfill_upper = NULL, checkpoint = NULL, "
                        "rows_copied = 0, batches = 0, batch_size = NULL, verification = NULL, verified_at = NULL "
                        "WHERE table_name = 'public.revenues'").format(sql.Identifier(STATE, "tables")))
    cur.execute(sql.SQL("DELETE FROM {} WHERE table_name = 'public.revenues'").format(
        sql.Identifier(STATE, "backfill_ranges")))
    cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(STATE, "pending_keys")))
    cur.execute("VACUUM public.revenues_partitioned")
    cur.execute("CHECKPOINT")


def phase_of(conn):
    cur = conn.cursor()
    cur.execute(sql.SQL("SELECT phase FROM {} WHERE table_name = 'public.revenues'").format(
        sql.Identifier(STATE, "tables")))
    return cur.fetchone()[0]


def run_ours(srv, dbname, hook=None, seconds=None, finish=True, verify_batches=False, **overrides):
    """Our backfill from the start, with the module's defaults (``overrides``: CopyOptions fields, or
    ``app_guard=False``: the latency guard off). Copies to the end and finishes (phase 'copied'), or for ``seconds``.
    Returns (seconds, rows copied), or with ``seconds`` the call's totals."""
    from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
    a = api()
    sess = module_session(srv, dbname)
    try:
        tpl = product.templates()
        t0 = time.monotonic()
        row = state_store.get_table(sess, STATE, "public.revenues")
        ctx = a["load_context"](sess, STATE, row)
        a["start_backfill"](sess, tpl, ctx, row, overrides.get("copy_workers", 1))
        opts = a["CopyOptions"].from_tuning(default_tuning())
        opts.verify_batches = verify_batches
        if not overrides.pop("app_guard", True):
            opts.limits.max_app_latency_ms = opts.limits.max_app_slowdown_pct = 0
        for k, v in overrides.items():
            setattr(opts, k, v)
        hooks = dict(after_batch=hook) if hook is not None else {}
        deadline = time.time() + (seconds if seconds is not None else 24 * 3600)
        totals = a["copy_for"](sess, lambda: module_session(srv, dbname), tpl, ctx, opts, deadline, hooks)
        if seconds is not None and not finish:
            return totals
        if not a["finish_if_done"](sess, ctx):
            raise RuntimeError("our backfill did not finish: %r" % (totals,))
        return time.monotonic() - t0, totals["rows"]
    finally:
        sess.close()


def verify_full(srv, dbname):
    """Phase 2's full verification (module_utils/migrate/verify.py ``verify_table``); returns its seconds.
    A difference is an error: what follows would measure a wrong table."""
    from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
    verify_table = product.optional("migrate.verify", "verify_table")
    if verify_table is None:
        raise common.Skip("module_utils/migrate/verify.py verify_table is not available")
    sess = module_session(srv, dbname)
    try:
        t0 = time.monotonic()
        row = state_store.get_table(sess, STATE, "public.revenues")
        res = verify_table(sess, api()["load_context"](sess, STATE, row), row, full=True)
        if res["status"] != "ok":
            raise RuntimeError("the full verification found differences: %r" % (res,))
        return time.monotonic() - t0
    finally:
        sess.close()


def run_insert_select(conn):
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in schema.COLUMN_NAMES)
    cur = conn.cursor()
    t0 = time.monotonic()
    cur.execute(sql.SQL("INSERT INTO public.revenues_partitioned ({c}) SELECT {c} FROM public.revenues").format(c=cols))
    return time.monotonic() - t0, cur.rowcount


def run_variant(srv, dbname, conn, v, hook=None):
    """(seconds, rows) of one throughput variant, from an empty twin."""
    if v == "partman":
        return run_partman(conn)
    reset_twin(conn)
    if v == "insert_select":
        return run_insert_select(conn)
    return run_ours(srv, dbname, hook=hook, lock_rows=(v == "ours_locked"))


# --- pg_partman (PostgreSQL 15) -------------------------------------------------------------

def partman_available(srv, conn):
    cur = conn.cursor()
    cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'pg_partman'")
    row = cur.fetchone()
    if row is None and srv.major == 15:
        log("backfill: pg_partman absent; trying apt-get install postgresql-15-partman")
        import subprocess
        r = subprocess.run(["apt-get", "install", "-y", "postgresql-15-partman"], capture_output=True, text=True,
                           env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        if r.returncode != 0:
            return None
        cur.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'pg_partman'")
        row = cur.fetchone()
    if row is None:
        return None
    cur.execute("CREATE SCHEMA IF NOT EXISTS partman")
    cur.execute("CREATE EXTENSION IF NOT EXISTS pg_partman SCHEMA partman")
    return row[0]


def run_partman(conn):
    """partman.partition_data_proc moving a copy of the original into a partman twin; (seconds, rows)."""
    cur = conn.cursor()
    cur.execute("DROP TABLE IF EXISTS public.revenues_pm, public.revenues_pm_src CASCADE")
    cur.execute("DELETE FROM partman.part_config WHERE parent_table = 'public.revenues_pm'")
    cur.execute("CREATE TABLE public.revenues_pm_src (LIKE public.revenues INCLUDING ALL)")
    cols = sql.SQL(", ").join(sql.Identifier(c) for c in schema.COLUMN_NAMES)
    cur.execute(sql.SQL("INSERT INTO public.revenues_pm_src ({c}) SELECT {c} FROM public.revenues").format(c=cols))
    cur.execute("CREATE TABLE public.revenues_pm (LIKE public.revenues INCLUDING DEFAULTS INCLUDING CONSTRAINTS, "
                "PRIMARY KEY (id, occurred_at)) PARTITION BY RANGE (occurred_at)")
    cur.execute("CREATE INDEX ON public.revenues_pm (org_id, occurred_at)")
    cur.execute("CREATE INDEX ON public.revenues_pm (occurred_at)")
    cur.execute("SELECT partman.create_parent('public.revenues_pm', 'occurred_at', 'native', 'monthly', "
                "p_start_partition := %s, p_premake := 4)", (schema.FIRST_MONTH,))
    cur.execute("VACUUM ANALYZE public.revenues_pm_src")
    cur.execute("CHECKPOINT")
    cur.execute("SELECT count(*) FROM public.revenues_pm_src")
    rows = cur.fetchone()[0]
    t0 = time.monotonic()
    cur.execute("CALL partman.partition_data_proc('public.revenues_pm', p_wait := 0, "
                "p_source_table := 'public.revenues_pm_src', p_quiet := true)")
    seconds = time.monotonic() - t0
    cur.execute("SELECT count(*) FROM public.revenues_pm")
    moved = cur.fetchone()[0]
    if moved != rows:
        raise RuntimeError("pg_partman moved %d of %d rows" % (moved, rows))
    cur.execute("DROP TABLE public.revenues_pm, public.revenues_pm_src CASCADE")
    cur.execute("DELETE FROM partman.part_config WHERE parent_table = 'public.revenues_pm'")
    return seconds, rows


# --- a, b. throughput --------------------------------------------------------------------------

def throughput(srv, opts, dbname, rows, variants, rounds):
    """Alternated rounds of ``variants`` on a ``rows``-row table."""
    conn, how = build(srv, dbname, rows)
    # The first copy after loading a table is slower, whichever it is (the load's aftermath:
    # checkpoints, autovacuum, caches); the rotation starts with ours, so a warm-up copy that is
    # not counted takes it.
    seconds, _n = run_variant(srv, dbname, conn, "insert_select")
    log("backfill pg%d %d rows warm-up INSERT…SELECT %.2f s (not counted)" % (srv.major, rows, seconds))
    partman = None
    if "partman" in variants:
        partman = partman_available(srv, conn) if srv.major == 15 else None
        if not partman:
            variants = [v for v in variants if v != "partman"]
            if srv.major == 15:
                log("backfill: pg_partman cannot be installed here: its comparison is skipped")
    facts = common.setup_facts(srv, conn, rows=rows, rounds=rounds, twin_built_by=how,
                               pg_partman=partman or ("not installed" if srv.major == 15 else
                                                      "n/a (compared on PostgreSQL 15 only)"),
                               our_options="the module's defaults (spec.TUNING): batch_size 10000, batch_target_ms "
                                           "500, 1 worker, latency guard on; verification off (the copy alone)")
    runs = []
    for rnd, order in enumerate(common.rotations(variants, rounds)):
        for v in order:
            seconds, n = run_variant(srv, dbname, conn, v)
            runs.append(dict(round=rnd, variant=v, seconds=seconds, rows=n, rows_per_s=n / seconds))
            log("backfill pg%d %d rows round %d %-13s %7.2f s %9.0f rows/s" % (
                srv.major, rows, rnd, v, seconds, n / seconds))
    conn.close()
    out = dict(facts=facts, runs=runs, ours_seconds=median([r["seconds"] for r in runs if r["variant"] == "ours"]))
    out.update(throughput_ratios(runs))
    return out


PAIRS = dict(ours_insert=("ours", "insert_select"), ours_locked_insert=("ours_locked", "insert_select"),
             ours_partman=("ours", "partman"), partman_insert=("partman", "insert_select"))


def throughput_ratios(runs):
    """Medians of rows/s per variant, and the ratios: the median over rounds of the ratio
    within each round (paired: a round's runs are minutes apart, so the machine's drift
    cancels out), beside the ratio of the medians."""
    variants = sorted(set(r["variant"] for r in runs))
    med = {v: median([r["rows_per_s"] for r in runs if r["variant"] == v]) for v in variants}
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["variant"]] = r["rows_per_s"]

    def paired(a, b):
        return median([ratio(x.get(a), x.get(b)) for x in by_round.values() if x.get(a) and x.get(b)])

    return dict(median_rows_per_s=med, ratios=dict((k, paired(a, b)) for k, (a, b) in PAIRS.items()),
                ratios_of_medians=dict((k, ratio(med.get(a), med.get(b))) for k, (a, b) in PAIRS.items()),
                per_round=dict((str(rnd), dict((k, ratio(x.get(a), x.get(b))) for k, (a, b) in PAIRS.items()))
                               for rnd, x in sorted(by_round.items())))


# --- c. flatness ------------------------------------------------------------------------------

REFERENCE_EVERY = 10
REFERENCE_ROWS = 5000


class Reference:
    """A fixed piece of work timed between batches: the machine's speed at that moment.

    Copying 5000 rows of the original into an emptied scratch table with the twin's indexes
    costs the same at the start and at the end of the copy, unless the *machine* got slower
    (a neighbour's load): dividing each batch's time by the nearest reference separates a
    backfill that slows down from a machine that does."""

    def __init__(self, srv, dbname):
        self.conn = srv.connect(dbname)
        cur = self.conn.cursor()
        cur.execute("CREATE TABLE public.bench_reference (LIKE public.revenues INCLUDING DEFAULTS)")
        cur.execute("ALTER TABLE public.bench_reference ADD PRIMARY KEY (id, occurred_at)")
        cur.execute("CREATE INDEX ON public.bench_reference (org_id, occurred_at)")
        cur.execute("CREATE INDEX ON public.bench_reference (occurred_at)")
        self.times = []          # (batch number, ms per 1000 rows)

    def measure(self, batch_no, after_key):
        cur = self.conn.cursor()
        cur.execute("TRUNCATE public.bench_reference")
        cols = sql.SQL(", ").join(sql.Identifier(c) for c in schema.COLUMN_NAMES)
        t0 = time.monotonic()
        cur.execute(sql.SQL("INSERT INTO public.bench_reference ({c}) SELECT {c} FROM public.revenues "
                            "WHERE id > %s ORDER BY id LIMIT %s").format(c=cols), (after_key, REFERENCE_ROWS))
        self.times.append((batch_no, (time.monotonic() - t0) * 1000.0 * 1000.0 / REFERENCE_ROWS))

    def close(self):
        self.conn.close()

    def at(self, batch_no):
        """The reference measured nearest to ``batch_no``."""
        if not self.times:
            return None
        return min(self.times, key=lambda t: abs(t[0] - batch_no))[1]


def large(srv, opts):
    """Part b (ours against INSERT…SELECT at ``flat_rows``), then part c (flatness) from one more copy
    of ours: its reference copies take time of their own, which the timed rounds must not carry."""
    dbname = "bench_flat"
    tp = throughput(srv, opts, dbname, opts.flat_rows, ["ours", "insert_select"], opts.flat_rounds)
    batches, ref = [], Reference(srv, dbname)

    def after_batch(res):
        batches.append((res["seconds"], res["locked"]))
        if len(batches) % REFERENCE_EVERY == 1:
            ref.measure(len(batches), (res.get("last_key") or {}).get("id") or 0)
    conn = srv.connect(dbname)
    run_variant(srv, dbname, conn, "ours", after_batch)
    conn.close()
    ref.close()
    common.drop_database(srv, dbname)
    return tp, flatness_of(batches, ref, tp)


def flatness_of(batches, ref, tp):
    per_k = [1000.0 * s * 1000.0 / n if n else None for s, n in batches]      # ms per 1000 rows
    full = [(i, x) for i, x in enumerate(per_k, 1) if x is not None and batches[i - 1][1] >= 1000]
    dec = max(1, len(full) // 10)
    first, last = median([x for _i, x in full[:dec]]), median([x for _i, x in full[-dec:]])
    norm = [(i, x / ref.at(i)) for i, x in full if ref.at(i)]
    nfirst, nlast = median([x for _i, x in norm[:dec]]), median([x for _i, x in norm[-dec:]])
    rfirst = median([t for _b, t in ref.times[:max(1, len(ref.times) // 10)]])
    rlast = median([t for _b, t in ref.times[-max(1, len(ref.times) // 10):]])
    return dict(rows=tp["facts"]["rows"], batches=len(batches), twin_built_by=tp["facts"]["twin_built_by"],
                seconds=sum(s for s, _n in batches),
                batch_ms=[1000.0 * s for s, _n in batches], batch_rows=[n for _s, n in batches],
                reference=ref.times,
                first_decile_ms_per_1k=first, last_decile_ms_per_1k=last, last_first_ratio=ratio(last, first),
                reference_last_first_ratio=ratio(rlast, rfirst),
                normalized_last_first_ratio=ratio(nlast, nfirst))


# --- f. workers -------------------------------------------------------------------------------

def cpu_busy():
    """(busy, total) jiffies of the machine's CPUs (/proc/stat)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    return sum(parts) - idle, sum(parts)


def wal_bytes(conn):
    cur = conn.cursor()
    cur.execute("SELECT wal_bytes FROM pg_stat_wal")
    return int(cur.fetchone()[0])


PART_A_DB = "bench_backfill"


def part_a_table(srv, opts):
    """A connection to part a's database: the table as part a left it, or built now when part a
    did not run (``--backfill-parts workers,phase2``)."""
    cur = srv.connect().cursor()
    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (PART_A_DB,))
    exists = cur.fetchone() is not None
    cur.connection.close()
    return srv.connect(PART_A_DB) if exists else build(srv, PART_A_DB, opts.backfill_rows)[0]


def workers(srv, opts):
    """``copy_workers`` 1, 2, 4 on the table of part a."""
    dbname = PART_A_DB
    conn = part_a_table(srv, opts)
    counts = [int(x) for x in opts.worker_counts.split(",")]
    facts = common.setup_facts(srv, conn, rows=opts.backfill_rows, rounds=opts.backfill_rounds, workers=counts)
    runs = []
    for rnd, order in enumerate(common.rotations(counts, opts.backfill_rounds)):
        for n in order:
            reset_twin(conn)
            w0, c0 = wal_bytes(conn), cpu_busy()
            seconds, rows = run_ours(srv, dbname, copy_workers=n)
            w1, c1 = wal_bytes(conn), cpu_busy()
            runs.append(dict(round=rnd, workers=n, seconds=seconds, rows=rows, rows_per_s=rows / seconds,
                             wal_mb_per_s=(w1 - w0) / seconds / 1e6,
                             cpu_busy=(c1[0] - c0[0]) / max(1, c1[1] - c0[1])))
            r = runs[-1]
            log("backfill workers pg%d round %d %d worker(s): %9.0f rows/s, WAL %.1f MB/s, CPUs %.0f%% busy" % (
                srv.major, rnd, n, r["rows_per_s"], r["wal_mb_per_s"], 100 * r["cpu_busy"]))
    conn.close()
    med = dict((n, dict((f, median([r[f] for r in runs if r["workers"] == n]))
                        for f in ("rows_per_s", "wal_mb_per_s", "cpu_busy"))) for n in counts)
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["workers"]] = r["rows_per_s"]
    speedup = dict((n, median([ratio(x.get(n), x.get(counts[0])) for x in by_round.values()])) for n in counts)
    return dict(facts=facts, runs=runs, median=med, speedup=speedup, cores=os.cpu_count())


# --- driver -----------------------------------------------------------------------------------

PARTS = ("throughput", "large", "flatness", "workers", "latency", "phase2")


def earlier_results(opts):
    """The published results this run leaves alone (parts not in ``--backfill-parts``, servers not
    in ``--pg``): a part run again replaces its own results and keeps the others' (each says when
    it ran)."""
    results = dict((k, {}) for k in PARTS)
    try:
        with open(os.path.join(opts.outdir, "backfill.json")) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return results
    ran = set(opts.backfill_parts.split(","))
    ran |= {"flatness"} if "large" in ran else set()
    for key in PARTS:
        results[key] = dict((int(m), v) for m, v in (data.get(key) or {}).items()
                            if key not in ran or int(m) not in opts.all_versions)
    return results


def run(servers, opts):
    api()
    results = earlier_results(opts)
    steps = [("throughput", lambda srv: throughput(srv, opts, PART_A_DB, opts.backfill_rows,
                                                   ["ours", "insert_select", "ours_locked", "partman"],
                                                   opts.backfill_rounds)),
             ("workers", lambda srv: workers(srv, opts)),
             ("phase2", lambda srv: backfill_phase2.phase2(srv, opts, sys.modules[__name__])),
             ("latency", lambda srv: backfill_latency.latency(srv, opts, sys.modules[__name__])),
             ("large", None)]
    for major, srv in servers.each(opts.all_versions, "backfill"):
        for name, step in steps:
            if name not in opts.backfill_parts:
                continue
            if name == "large":
                log("backfill: %d rows against INSERT…SELECT, and flatness" % opts.flat_rows)
                results["large"][major], results["flatness"][major] = large(srv, opts)
            else:
                results[name][major] = step(srv)
            report(results, opts)      # after every step: a run cut short keeps what it measured
    return results


def throughput_table(results, key):
    rows = []
    for major, tp in sorted(results[key].items(), reverse=True):
        m, rt = tp["median_rows_per_s"], tp["ratios"]
        rows.append(["PostgreSQL %d" % major, tp["facts"]["rows"], m.get("ours"), m.get("insert_select"),
                     rt["ours_insert"], "yes" if (rt["ours_insert"] or 0) >= 0.85 else "NO",
                     m.get("ours_locked"), rt["ours_locked_insert"], m.get("partman"), rt["ours_partman"]])
    return md_table(["server", "rows", "ours", "INSERT ... SELECT", "ours/insert", ">= 0.85", "ours, every row "
                     "locked", "that/insert", "pg_partman", "ours/pg_partman"], rows) + \
        "\n\nRatios: median over rounds of the ratio within each round. Per round: " + "; ".join(
            "PG%d round %s ours/insert %s" % (major, rnd, fmt(x["ours_insert"]))
            for major, tp in sorted(results[key].items(), reverse=True)
            for rnd, x in tp.get("per_round", {}).items()) + "."


def workers_table(results):
    rows = []
    for major, w in sorted(results["workers"].items(), reverse=True):
        for n in sorted(w["median"], key=int):
            m = w["median"][n]
            rows.append(["PostgreSQL %d" % major, n, m["rows_per_s"], w["speedup"][n], m["wal_mb_per_s"],
                         "%.0f%%" % (100 * m["cpu_busy"]) if m["cpu_busy"] is not None else "n/a"])
    return md_table(["server", "copy_workers", "rows/s", "speed-up over 1 worker", "WAL MB/s",
                     "the machine's CPUs busy"], rows) + "\n\n![workers](backfill_workers.png)"


def report(results, opts):
    sections = []
    if results["throughput"]:
        sections.append(("a. Throughput, %d rows (rows/s, medians)" % opts.backfill_rows,
                         throughput_table(results, "throughput")))
    if results["large"]:
        sections.append(("b. Throughput, %d rows (rows/s, medians)" % opts.flat_rows, throughput_table(results, "large")))
    frows = []
    for major, f in sorted(results["flatness"].items(), reverse=True):
        frows.append(["PostgreSQL %d" % major, f["rows"], f["batches"], f["seconds"], f["first_decile_ms_per_1k"],
                      f["last_decile_ms_per_1k"], f["last_first_ratio"], f["reference_last_first_ratio"],
                      f["normalized_last_first_ratio"]])
    if frows:
        sections.append(("c. Time per batch over a long copy (flatness)", md_table(
            ["server", "rows", "batches", "seconds", "first decile ms/1k rows", "last decile ms/1k rows",
             "last/first", "reference last/first", "normalized last/first"], frows) +
            "\n\nReference: every %d batches, %d rows of the original copied into an emptied scratch table with "
            "the twin's indexes (the machine's speed at that moment); normalized = each batch's ms per 1000 rows "
            "divided by the nearest reference. Deciles over batches of at least 1000 rows."
            % (REFERENCE_EVERY, REFERENCE_ROWS) + "\n\n![batch duration](backfill_batches.png)"))
    text = backfill_latency.section(results["latency"])
    if text:
        sections.append(("d. The application's writes during the backfill", text + "\n\n![latency](backfill_latency.png)"))
    text = backfill_phase2.section(results["phase2"])
    if text:
        sections.append(("e. The whole of phase 2 (ansible-playbook phase2_migrate.yml)", text))
    if results["workers"]:
        sections.append(("f. Workers", workers_table(results)))
    for key, title in (("throughput", "Throughput"), ("large", "Throughput at %d rows" % opts.flat_rows)):
        for major, tp in sorted(results[key].items(), reverse=True):
            sections.append(("%s: setup and runs (PostgreSQL %d), in order" % (title, major), "\n".join(
                "- %s: %s" % (k, v) for k, v in sorted(tp["facts"].items())) + "\n\n" + md_table(
                ["round", "variant", "rows", "seconds", "rows/s"],
                [[r["round"], r["variant"], r["rows"], r["seconds"], r["rows_per_s"]] for r in tp["runs"]])))
    for major, w in sorted(results["workers"].items(), reverse=True):
        sections.append(("Workers: runs (PostgreSQL %d), in order" % major, md_table(
            ["round", "workers", "seconds", "rows/s", "WAL MB/s", "CPUs busy"],
            [[r["round"], r["workers"], r["seconds"], r["rows_per_s"], r["wal_mb_per_s"], r["cpu_busy"]]
             for r in w["runs"]])))
    sections.append(("Method", __doc__.strip() + "\n\n" + backfill_latency.__doc__.strip() + "\n\n" +
                     backfill_phase2.__doc__.strip()))
    data = {k: {str(m): v for m, v in d.items()} for k, d in results.items()}
    common.write_result(opts.outdir, "backfill", "Backfill (make bench, issues 3 and 11)", sections, data)
    plot(results, opts)


def plot(results, opts):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for name, draw, data in (("backfill_batches", plot_batches, results["flatness"]),
                             ("backfill_latency", plot_latency, results["latency"]),
                             ("backfill_workers", plot_workers, results["workers"])):
        if not data:
            continue
        fig, ax = plt.subplots(figsize=(8, 3.8))
        draw(ax, data)
        fig.tight_layout()
        path = os.path.join(opts.outdir, name + ".png")
        fig.savefig(path, dpi=90)
        plt.close(fig)
        log("wrote %s" % path)


def plot_batches(ax, flatness):
    for major, f in sorted(flatness.items(), reverse=True):
        xs = list(range(1, len(f["batch_ms"]) + 1))
        ax.plot(xs, f["batch_ms"], lw=0.6, label="PG%d batch duration (ms)" % major)
        per_k = [ms * 1000.0 / n if n else None for ms, n in zip(f["batch_ms"], f["batch_rows"])]
        ax.plot(xs, per_k, lw=0.6, label="PG%d ms per 1000 rows" % major)
        if f.get("reference"):
            ax.plot([b for b, _t in f["reference"]], [t for _b, t in f["reference"]], lw=0.8,
                    label="PG%d reference: ms per 1000 rows of a plain copy" % major)
    f = flatness[max(flatness)]
    ax.set_title("Backfill of %d rows: %d batches, last/first decile %s (normalized by the reference: %s)" % (
        f["rows"], f["batches"], fmt(f["last_first_ratio"], 2), fmt(f["normalized_last_first_ratio"], 2)), fontsize=9)
    ax.set_xlabel("batch number")
    ax.set_ylabel("ms")
    ax.legend(fontsize=7)


def plot_latency(ax, latency):
    labels, p99, tps, copy = [], [], [], []
    for major, lt in sorted(latency.items(), reverse=True):
        for v in backfill_latency.VARIANTS:
            m = lt["median"][v]
            labels.append("PG%d %s" % (major, v))
            p99.append(m["p99_ms"] or 0)
            tps.append(m["tps"] or 0)
            copy.append((m["copy_rows_per_s"] or 0) / 1000.0)
    xs = range(len(labels))
    ax.bar([x - 0.27 for x in xs], p99, width=0.27, label="p99 ms of the application")
    ax.bar(xs, [t / 100.0 for t in tps], width=0.27, label="application tps / 100")
    ax.bar([x + 0.27 for x in xs], copy, width=0.27, label="copy, 1000 rows/s")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_title("pgbench writes alone, during the guarded backfill (defaults) and with the guard off", fontsize=9)
    ax.legend(fontsize=7)


def plot_workers(ax, workers):
    for major, w in sorted(workers.items(), reverse=True):
        ns = sorted(w["median"], key=int)
        ax.plot([int(n) for n in ns], [w["median"][n]["rows_per_s"] / 1000.0 for n in ns], marker="o",
                label="PG%d rows/s (thousands)" % major)
        ax.plot([int(n) for n in ns], [w["median"][n]["wal_mb_per_s"] for n in ns], marker="x", ls="--",
                label="PG%d WAL MB/s" % major)
    ax.set_xlabel("copy_workers (the machine has %s CPUs)" % os.cpu_count())
    ax.set_title("Copy rate and WAL rate by number of workers", fontsize=9)
    ax.legend(fontsize=7)
