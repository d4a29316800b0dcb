"""Backfill benchmark, part d: the application's writes while the backfill copies.

A closed-loop pgbench write load — ``clients`` sessions back to back, single-row inserts and
updates of random existing ids (1:1), on the original with its sync trigger — on a
``latency_rows``-row table, in three variants alternated per round:

* ``alone``: the load without a backfill;
* ``guarded``: the load while our backfill copies with the module's defaults (the latency guard
  on: ``max_app_latency_ms`` and ``max_app_slowdown_pct`` at the spec's defaults);
* ``unguarded``: the same with the guard off (both 0).

Each run lasts ``latency_window_s``; the copy runs for that window (it need not finish). Counted:
the transactions that started inside the window — their p50 and p99 latency and their rate
(transactions per second: in a closed loop the rate is what the application gets done) — and
the rows the backfill copied in the window. Ratios are taken within each round and their
median is published. Goals (defaults): p99 guarded/alone <= 3, rate guarded/alone >= 0.8.
"""
import time

from bench import common, schema
from bench.common import PgbenchRun, fmt, log, md_table, median, percentile, ratio

SCRIPTS = [("insert", schema.INSERT_SCRIPT, 1), ("update", schema.UPDATE_SCRIPT, 1)]
VARIANTS = ["alone", "guarded", "unguarded"]


def latency(srv, opts, bf):
    """``bf`` is bench.backfill (its build, reset and run_ours)."""
    dbname = "bench_latency"
    conn, how = bf.build(srv, dbname, opts.latency_rows)
    window = opts.latency_window_s
    tuning = bf.default_tuning()
    facts = common.setup_facts(srv, conn, rows=opts.latency_rows, rounds=opts.backfill_rounds, window_s=window,
                               clients=opts.latency_clients, twin_built_by=how,
                               max_app_latency_ms=tuning["max_app_latency_ms"],
                               max_app_slowdown_pct=tuning["max_app_slowdown_pct"],
                               load="pgbench closed loop, %d clients (no rate limit), single-row insert + update of a "
                                    "random id (1:1), on the original with the sync trigger" % opts.latency_clients)
    runs = []
    for rnd, order in enumerate(common.rotations(VARIANTS, opts.backfill_rounds)):
        for v in order:
            bf.reset_twin(conn)
            pb = PgbenchRun(srv, dbname, SCRIPTS, clients=opts.latency_clients, duration=window + 3,
                            latency_log=True, defines={"maxid": opts.latency_rows}).start()
            time.sleep(1.0)
            t0 = time.time()
            copied, guard = 0, None
            if v == "alone":
                time.sleep(window)
            else:
                totals = bf.run_ours(srv, dbname, seconds=window, finish=False, verify_batches=False,
                                     app_guard=v == "guarded")
                copied, guard = totals["rows"], totals.get("app_latency")
            t1 = time.time()
            res = pb.wait()
            lats = [lat for start, lat in res["latencies"] if t0 <= start <= t1]
            runs.append(dict(round=rnd, variant=v, window_s=t1 - t0, transactions=len(lats),
                             tps=len(lats) / (t1 - t0), p50_ms=percentile(lats, 50), p99_ms=percentile(lats, 99),
                             max_ms=max(lats) if lats else None, failed=res["failed"],
                             copied_rows=copied, copy_rows_per_s=copied / (t1 - t0), guard=guard))
            r = runs[-1]
            log("backfill latency pg%d round %d %-9s %6.0f tps p99 %s ms, copy %7.0f rows/s" % (
                srv.major, rnd, v, r["tps"], fmt(r["p99_ms"]), r["copy_rows_per_s"]))
    conn.close()
    common.drop_database(srv, dbname)
    return dict(facts=facts, runs=runs, **ratios(runs))


def ratios(runs):
    by_round = {}
    for r in runs:
        by_round.setdefault(r["round"], {})[r["variant"]] = r

    def paired(v, field):
        return median([ratio(x[v][field], x["alone"][field]) for x in by_round.values() if v in x and "alone" in x])
    out = dict(median={}, p99_ratio={}, tps_ratio={}, copy_rows_per_s={})
    for v in VARIANTS:
        out["median"][v] = dict((f, median([r[f] for r in runs if r["variant"] == v]))
                                for f in ("tps", "p50_ms", "p99_ms", "copy_rows_per_s"))
        if v != "alone":
            out["p99_ratio"][v] = paired(v, "p99_ms")
            out["tps_ratio"][v] = paired(v, "tps")
            out["copy_rows_per_s"][v] = out["median"][v]["copy_rows_per_s"]
    return out


def section(results):
    """The report's section (markdown), or None."""
    rows, detail = [], []
    for major, lt in sorted(results.items(), reverse=True):
        m = lt["median"]
        for v in ("guarded", "unguarded"):
            rows.append(["PostgreSQL %d" % major, v, m["alone"]["p99_ms"], m[v]["p99_ms"], lt["p99_ratio"][v],
                         "yes" if (lt["p99_ratio"][v] or 99) <= 3 else "NO", m["alone"]["tps"], m[v]["tps"],
                         lt["tps_ratio"][v], "yes" if (lt["tps_ratio"][v] or 0) >= 0.8 else "NO",
                         lt["copy_rows_per_s"][v]])
        detail.append("Runs (PostgreSQL %d), in order: " % major + "\n".join(
            "- %s: %s" % (k, v) for k, v in sorted(lt["facts"].items())) + "\n\n" + md_table(
            ["round", "variant", "window s", "transactions", "tps", "p50 ms", "p99 ms", "max ms", "failed",
             "copied rows/s", "guard"],
            [[r["round"], r["variant"], r["window_s"], r["transactions"], r["tps"], r["p50_ms"], r["p99_ms"],
              r["max_ms"], r["failed"], r["copy_rows_per_s"], guard_text(r["guard"])] for r in lt["runs"]]))
    if not rows:
        return None
    return md_table(["server", "backfill", "p99 ms alone", "p99 ms during", "p99 ratio", "<= 3", "tps alone",
                     "tps during", "tps ratio", ">= 0.8", "copy rows/s during the load"], rows) + \
        "\n\nRatios: median over rounds of the ratio within each round.\n\n" + "\n\n".join(detail)


def guard_text(g):
    if not g:
        return "off"
    return "strained %s/%s, factor max %s, baseline %s ms" % (g.get("strained"), g.get("samples"),
                                                              fmt(g.get("max_factor"), 2), fmt(g.get("baseline_ms"), 2))
