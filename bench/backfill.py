"""Benchmark 2 (issue 3): the backfill.

a. Throughput, alternated on one server: our backfill (module_utils/migrate/backfill.py, unthrottled,
   the module's default batch sizing: 10000 rows at most, auto-sized to 500 ms) against one
   ``INSERT INTO twin SELECT * FROM original`` (goal: ours/insert >= 0.85); on PostgreSQL 15
   also pg_partman 4.7 ``partition_data_proc`` (p_wait 0, its default batch: one partition
   interval) moving a copy of the same rows into a partman-managed twin.
b. Latency: p99 of a fixed-rate pgbench write load (single-row inserts and updates of random
   ids, with the sync trigger) while our backfill runs, against the same load without it.
c. Flatness: time per batch from the first to the last batch of a 10M-row copy (--quick 1M):
   last-decile / first-decile of the median milliseconds per 1000 rows (must stay ~1).
"""
import time

from psycopg2 import sql

from bench import common, product, schema
from bench.common import PgbenchRun, fmt, log, md_table, median, percentile, ratio

STATE = product.STATE_SCHEMA


def api():
    """The backfill API of module_utils/migrate/backfill.py, or Skip."""
    found = product.optional("migrate.backfill", "load_context", "start_backfill", "copy_for", "finish_if_done",
                             "CopyOptions")
    if found is None:
        raise common.Skip("module_utils/migrate/backfill.py (load_context, start_backfill, copy_for, finish_if_done) "
                          "is not available")
    return dict(zip(("load_context", "start_backfill", "copy_for", "finish_if_done", "CopyOptions"), found))


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
    """Empty twin, state back to 'prepared': the next copy starts from nothing."""
    cur = conn.cursor()
    cur.execute("TRUNCATE public.revenues_partitioned")
    cur.execute(sql.SQL("UPDATE {} SET phase = 'prepared', backfill_upper = NULL, checkpoint = NULL, "
                        "rows_copied = 0, batches = 0, batch_size = NULL WHERE table_name = 'public.revenues'").format(
        sql.Identifier(STATE, "tables")))
    cur.execute(sql.SQL("DELETE FROM {} WHERE table_name = 'public.revenues'").format(
        sql.Identifier(STATE, "backfill_ranges")))
    cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(STATE, "pending_keys")))
    cur.execute("VACUUM public.revenues_partitioned")
    cur.execute("CHECKPOINT")


BIG_BATCH = 50000


def run_ours(srv, dbname, batches=None, batch_size=None, hook=None):
    """Our backfill from the start to 'copied'; returns (seconds, rows copied).

    ``batch_size``: the module's default (10000) unless given (the 'ours_big' variant shows
    what a larger cap, still auto-sized toward 500 ms, would change)."""
    from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
    a = api()
    sess = module_session(srv, dbname)
    try:
        tpl = product.templates()
        t0 = time.monotonic()
        row = state_store.get_table(sess, STATE, "public.revenues")
        ctx = a["load_context"](sess, STATE, row)
        a["start_backfill"](sess, ctx, row, 1)
        hooks = {}
        if batches is not None:
            hooks["after_batch"] = lambda res: batches.append((res["seconds"], res["locked"]))
        if hook is not None:
            hooks["after_batch"] = hook
        from ansible_collections.dbops.partitioning.plugins.module_utils.migrate.throttle import Limits
        opts = a["CopyOptions"](limits=Limits())
        if batch_size:
            opts.batch_size = batch_size
        totals = a["copy_for"](sess, lambda: module_session(srv, dbname), tpl, ctx, opts,
                               time.time() + 24 * 3600, hooks)
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


# --- a. throughput --------------------------------------------------------------------------

def throughput(srv, opts):
    dbname = "bench_backfill"
    conn, how = build(srv, dbname, opts.backfill_rows)
    variants = ["ours", "insert_select", "ours_big"]
    partman = None
    if srv.major == 15:
        partman = partman_available(srv, conn)
        if partman:
            variants.append("partman")
        else:
            log("backfill: pg_partman cannot be installed here: its comparison is skipped")
    facts = common.setup_facts(srv, conn, rows=opts.backfill_rows, rounds=opts.backfill_rounds, twin_built_by=how,
                               pg_partman=partman or ("not installed" if srv.major == 15 else
                                                      "n/a (compared on PostgreSQL 15 only)"),
                               our_options="CopyOptions() defaults: batch_size 10000, batch_target_ms 500, "
                                           "1 worker, no sleep, no throttle limits")
    runs = []
    for rnd, order in enumerate(common.rotations(variants, opts.backfill_rounds)):
        for v in order:
            if v == "partman":
                seconds, rows = run_partman(conn)
            else:
                reset_twin(conn)
                if v == "insert_select":
                    seconds, rows = run_insert_select(conn)
                else:
                    seconds, rows = run_ours(srv, dbname, batch_size=BIG_BATCH if v == "ours_big" else None)
            runs.append(dict(round=rnd, variant=v, seconds=seconds, rows=rows, rows_per_s=rows / seconds))
            log("backfill pg%d round %d %-13s %8d rows %7.2f s %9.0f rows/s" % (
                srv.major, rnd, v, rows, seconds, rows / seconds))
    out = dict(facts=facts, runs=runs,
               ours_seconds=median([r["seconds"] for r in runs if r["variant"] == "ours"]))
    out.update(throughput_ratios(runs))
    conn.close()
    return out


def throughput_ratios(runs):
    """Medians of rows/s per variant, and the ratios: the median over rounds of the ratio
    within each round (paired, as for the trigger: a round's runs are minutes apart, so the
    machine's drift cancels out), beside the ratio of the medians."""
    variants = sorted(set(r["variant"] for r in runs))
    med = {v: median([r["rows_per_s"] for r in runs if r["variant"] == v]) for v in variants}
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["variant"]] = r["rows_per_s"]

    def paired(a, b):
        return median([ratio(x.get(a), x.get(b)) for x in by_round.values() if x.get(a) and x.get(b)])

    pairs = dict(ours_insert=("ours", "insert_select"), ours_big_insert=("ours_big", "insert_select"),
                 ours_partman=("ours", "partman"), partman_insert=("partman", "insert_select"))
    return dict(median_rows_per_s=med, ratios=dict((k, paired(a, b)) for k, (a, b) in pairs.items()),
                ratios_of_medians=dict((k, ratio(med.get(a), med.get(b))) for k, (a, b) in pairs.items()),
                per_round=dict((str(rnd), dict((k, ratio(x.get(a), x.get(b))) for k, (a, b) in pairs.items()))
                               for rnd, x in sorted(by_round.items())))


# --- b. latency under backfill ------------------------------------------------------------

LATENCY_SCRIPTS = [("insert", schema.INSERT_SCRIPT, 1), ("update", schema.UPDATE_SCRIPT, 1)]


LATENCY_MAX_WINDOW_S = 60


def latency(srv, opts, backfill_seconds):
    """p99 of the fixed-rate load alone and during our backfill, alternated.

    The load runs for the backfill's expected duration, at most LATENCY_MAX_WINDOW_S (on a
    loaded machine a 1M-row copy takes minutes); only transactions that started inside the
    window (and, with the backfill, while it ran) count."""
    dbname = "bench_backfill"
    conn = srv.connect(dbname)
    window = min(LATENCY_MAX_WINDOW_S, backfill_seconds)
    rate = opts.latency_rate
    facts = dict(load="pgbench -R %d (fixed rate), %d clients, single-row insert + update of a random id "
                      "(weights 1:1), on the original with the sync trigger" % (rate, min(opts.clients, 2)),
                 window_s=round(window, 1), rows=opts.backfill_rows, rounds=opts.backfill_rounds)
    runs = []
    for rnd, order in enumerate(common.rotations(["alone", "with_backfill"], opts.backfill_rounds)):
        for v in order:
            reset_twin(conn)
            pb = PgbenchRun(srv, dbname, LATENCY_SCRIPTS, clients=min(opts.clients, 2), duration=window + 2,
                            rate=rate, latency_log=True, defines={"maxid": opts.backfill_rows}).start()
            time.sleep(1.0)
            t0 = time.time()
            if v == "with_backfill":
                seconds, _rows = run_ours(srv, dbname)
                t1 = min(t0 + seconds, t0 + window)
            else:
                t1 = t0 + window
            res = pb.wait()
            lats = [lat for start, lat in res["latencies"] if t0 <= start <= t1]
            runs.append(dict(round=rnd, variant=v, window_s=t1 - t0, transactions=len(lats),
                             p50_ms=percentile(lats, 50), p99_ms=percentile(lats, 99),
                             max_ms=max(lats) if lats else None, failed=res["failed"]))
            log("backfill latency pg%d round %d %-13s n=%d p99 %s ms max %s ms" % (
                srv.major, rnd, v, len(lats), fmt(runs[-1]["p99_ms"]), fmt(runs[-1]["max_ms"])))
    conn.close()
    p99 = {v: median([r["p99_ms"] for r in runs if r["variant"] == v]) for v in ("alone", "with_backfill")}
    return dict(facts=facts, runs=runs, median_p99_ms=p99, p99_ratio=ratio(p99["with_backfill"], p99["alone"]))


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


def flatness(srv, opts):
    dbname = "bench_flat"
    conn, how = build(srv, dbname, opts.flat_rows)
    ref = Reference(srv, dbname)
    batches = []

    def after_batch(res):
        batches.append((res["seconds"], res["locked"]))
        if len(batches) % REFERENCE_EVERY == 1:
            last = (res.get("last_key") or {}).get("id") or 0
            ref.measure(len(batches), last)

    seconds, rows = run_ours(srv, dbname, hook=after_batch)
    ref.close()
    conn.close()
    c = srv.connect()
    c.cursor().execute("DROP DATABASE IF EXISTS bench_flat WITH (FORCE)")
    c.close()
    per_k = [1000.0 * s * 1000.0 / n if n else None for s, n in batches]      # ms per 1000 rows
    full = [(i, x) for i, x in enumerate(per_k, 1) if x is not None and batches[i - 1][1] >= 1000]
    dec = max(1, len(full) // 10)
    first, last = median([x for _i, x in full[:dec]]), median([x for _i, x in full[-dec:]])
    norm = [(i, x / ref.at(i)) for i, x in full if ref.at(i)]
    nfirst, nlast = median([x for _i, x in norm[:dec]]), median([x for _i, x in norm[-dec:]])
    rfirst = median([t for _b, t in ref.times[:max(1, len(ref.times) // 10)]])
    rlast = median([t for _b, t in ref.times[-max(1, len(ref.times) // 10):]])
    return dict(rows=rows, seconds=seconds, batches=len(batches), twin_built_by=how,
                batch_ms=[1000.0 * s for s, _n in batches], batch_rows=[n for _s, n in batches],
                reference=ref.times,
                first_decile_ms_per_1k=first, last_decile_ms_per_1k=last, last_first_ratio=ratio(last, first),
                reference_last_first_ratio=ratio(rlast, rfirst),
                normalized_last_first_ratio=ratio(nlast, nfirst))


# --- driver -----------------------------------------------------------------------------------

def run(servers, opts):
    api()
    results = dict(throughput={}, latency={}, flatness={})
    for major, srv in servers.each(opts.all_versions, "backfill"):
        results["throughput"][major] = tp = throughput(srv, opts)
        report(results, opts)      # after every step: a run cut short keeps what it measured
        if major == opts.all_versions[0]:
            # Latency and flatness on the newest server only (time budget of make bench).
            results["latency"][major] = latency(srv, opts, tp["ours_seconds"])
            report(results, opts)
            log("backfill: flatness over %d rows" % opts.flat_rows)
            results["flatness"][major] = flatness(srv, opts)
            f = results["flatness"][major]
            log("backfill flatness pg%d: %d batches, last/first decile %s, reference %s, normalized %s" % (
                major, f["batches"], fmt(f["last_first_ratio"]), fmt(f["reference_last_first_ratio"]),
                fmt(f["normalized_last_first_ratio"])))
            report(results, opts)
    report(results, opts)
    return results


def report(results, opts):
    sections = []
    rows = []
    for major, tp in sorted(results["throughput"].items(), reverse=True):
        m = tp["median_rows_per_s"]
        rows.append(["PostgreSQL %d" % major, tp["facts"]["rows"], m.get("ours"), m.get("insert_select"),
                     m.get("partman"), tp["ratios"]["ours_insert"],
                     "yes" if (tp["ratios"]["ours_insert"] or 0) >= 0.85 else "NO", tp["ratios"]["ours_partman"],
                     m.get("ours_big"), tp["ratios"]["ours_big_insert"]])
    sections.append(("a. Throughput (rows/s, medians)", md_table(
        ["server", "rows", "ours", "INSERT ... SELECT", "pg_partman", "ours/insert", ">= 0.85", "ours/partman",
         "ours, batch_size %d" % BIG_BATCH, "that/insert"], rows) +
        "\n\nRatios: median over rounds of the ratio within each round. Per round: " + "; ".join(
            "PG%d round %s ours/insert %s ours/partman %s" % (major, rnd, fmt(x["ours_insert"]), fmt(x["ours_partman"]))
            for major, tp in sorted(results["throughput"].items(), reverse=True)
            for rnd, x in tp.get("per_round", {}).items()) + "."))
    lrows = []
    for major, lt in sorted(results["latency"].items(), reverse=True):
        lrows.append(["PostgreSQL %d" % major, lt["median_p99_ms"]["alone"], lt["median_p99_ms"]["with_backfill"],
                      lt["p99_ratio"]])
    if lrows:
        sections.append(("b. p99 latency of the application's writes during the backfill", md_table(
            ["server", "p99 ms, load alone", "p99 ms, during backfill", "ratio"], lrows)))
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
    for major, tp in sorted(results["throughput"].items(), reverse=True):
        sections.append(("Setup (PostgreSQL %d)" % major, "\n".join(
            "- %s: %s" % (k, v) for k, v in sorted(tp["facts"].items()))))
        sections.append(("Throughput runs (PostgreSQL %d), in order" % major, md_table(
            ["round", "variant", "rows", "seconds", "rows/s"],
            [[r["round"], r["variant"], r["rows"], r["seconds"], r["rows_per_s"]] for r in tp["runs"]])))
    for major, lt in sorted(results["latency"].items(), reverse=True):
        sections.append(("Latency runs (PostgreSQL %d), in order" % major, "\n".join(
            "- %s: %s" % (k, v) for k, v in sorted(lt["facts"].items())) + "\n\n" + md_table(
            ["round", "variant", "window s", "transactions", "p50 ms", "p99 ms", "max ms", "failed"],
            [[r["round"], r["variant"], r["window_s"], r["transactions"], r["p50_ms"], r["p99_ms"], r["max_ms"],
              r["failed"]] for r in lt["runs"]])))
    sections.append(("Method", __doc__.strip()))
    data = {k: {str(m): v for m, v in d.items()} for k, d in results.items()}
    common.write_result(opts.outdir, "backfill", "Backfill (make bench, issue 3)", sections, data)
    plot(results, opts)


def plot(results, opts):
    if not results["flatness"]:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for major, f in sorted(results["flatness"].items(), reverse=True):
        xs = list(range(1, len(f["batch_ms"]) + 1))
        ax.plot(xs, f["batch_ms"], lw=0.6, label="PG%d batch duration (ms)" % major)
        per_k = [ms * 1000.0 / n if n else None for ms, n in zip(f["batch_ms"], f["batch_rows"])]
        ax.plot(xs, per_k, lw=0.6, label="PG%d ms per 1000 rows" % major)
        if f.get("reference"):
            ax.plot([b for b, _t in f["reference"]], [t for _b, t in f["reference"]], lw=0.8,
                    label="reference: ms per 1000 rows of a plain copy")
        ax.set_title("Backfill of %d rows: %d batches, last/first decile %s (normalized by the reference: %s)" % (
            f["rows"], f["batches"], fmt(f["last_first_ratio"], 2), fmt(f["normalized_last_first_ratio"], 2)),
            fontsize=9)
    ax.set_xlabel("batch number")
    ax.set_ylabel("ms")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = "%s/backfill_batches.png" % opts.outdir
    fig.savefig(path, dpi=90)
    plt.close(fig)
    log("wrote %s" % path)
