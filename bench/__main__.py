"""``python -m bench [NAME ...] [--quick]``: run the benchmarks, write bench/results/.

Benchmarks, in order: trigger (issue 2), backfill (issue 3), switchover (issue 4), reports (issue 8:
the first user's report queries and retention on a 10M-row table, before and after partitioning),
default_move (issue 8: the longest lock moving rows out of the default partition, ours against the
classic single-transaction move).
Names select some of them (``python -m bench reports``; ``--only NAME`` does the same).
Full mode takes about an hour on 2 cores; ``--quick`` a few minutes.
"""
import argparse
import os
import signal
import sys
import time
import traceback

from bench import common

BENCHMARKS = ["trigger", "backfill", "switchover", "reports", "default_move"]

# (full, quick) defaults; every one can be overridden on the command line.
PRESETS = {
    "duration": (5, 3),             # seconds per pgbench run (trigger): short runs, many rounds
    "rounds": (6, 2),               # alternation rounds
    "backfill_rounds": (3, 2),      # alternation rounds of the backfill (each copies backfill_rows)
    "clients": (4, 4),
    "trigger_rows": (100000, 20000),
    "backfill_rows": (1000000, 100000),
    "flat_rows": (10000000, 1000000),
    "flat_rounds": (2, 1),          # alternated rounds at flat_rows (ours, INSERT…SELECT)
    "latency_rate": (200, 100),     # tps of the fixed-rate pgbench load during the switchover
    "latency_rows": (2000000, 200000),
    "latency_window_s": (30, 8),    # seconds of pgbench per latency run (the copy runs that long)
    "latency_clients": (2, 2),      # closed-loop pgbench sessions
    "worker_counts": ("1,2,4", "1,2,4"),
    "backfill_parts": ("throughput,workers,phase2,latency,large", "throughput,workers,phase2,latency,large"),
    "swap_rows": (1000000, 100000),
    "swap_rounds": (1, 1),          # each round builds, copies, verifies and switches a fresh table
    "report_rows": (10000000, 200000),  # the seed-shaped revenues of the reports benchmark
    "report_rounds": (5, 3),        # alternated rounds of the report queries (per stage)
    "report_reps": (3, 3),          # runs of each query per round at least (the round's median is kept)
    "report_budget_ms": (300, 100), # ... and as many more as fit in this many ms (at most 200)
    "default_rows": ("100000,1000000", "10000,100000"),  # rows in the default partition (default_move)
    "default_rounds": (3, 1),       # alternated rounds of classic and ours per size
}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="*", metavar="NAME", help="run only these benchmarks (%s)" % ", ".join(BENCHMARKS))
    p.add_argument("--only", action="append", choices=BENCHMARKS,
                   help="run only this benchmark (repeatable)")
    p.add_argument("--quick", action="store_true", help="small settings: a few minutes in all")
    p.add_argument("--pg", default=None,
                   help="comma-separated major versions (default: every installed one of 18,15; --quick: 18 "
                        "for trigger/switchover)")
    p.add_argument("--outdir", default=None, help="where results go (default bench/results, or "
                                                  "bench/results/quick with --quick)")
    for name, (full, _quick) in PRESETS.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(full), default=None, dest=name,
                       help="default %s (quick: %s)" % (full, _quick))
    opts = p.parse_args(argv)
    unknown = [n for n in opts.names if n not in BENCHMARKS]
    if unknown:
        p.error("unknown benchmark %s (choose from %s)" % (", ".join(unknown), ", ".join(BENCHMARKS)))
    for name, (full, quick) in PRESETS.items():
        if getattr(opts, name) is None:
            setattr(opts, name, quick if opts.quick else full)
    if opts.outdir is None:
        opts.outdir = os.path.join(common.RESULTS_DIR, "quick") if opts.quick else common.RESULTS_DIR
    opts.only = (opts.only or []) + opts.names or BENCHMARKS
    return opts


def _stop(signum, _frame):
    # SIGTERM (and SIGINT, which a background job ignores by default) must still run the
    # ``finally`` below: the throwaway servers are stopped and removed.
    raise SystemExit(128 + signum)


def main(argv=None):
    opts = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    servers = common.Servers()
    if opts.pg:
        wanted = [int(v) for v in opts.pg.split(",") if v.strip()]
    else:
        wanted = [v for v in (18, 15) if v in servers.bindirs]
        if opts.quick:
            wanted = wanted[:1]
    opts.versions = wanted
    # pg_partman runs on 15 only: the backfill benchmark wants 15 also in quick mode.
    opts.all_versions = wanted if opts.pg else [v for v in (18, 15) if v in servers.bindirs]
    started = time.time()
    status = {}
    try:
        for name in BENCHMARKS:
            if name not in opts.only:
                continue
            module = __import__("bench." + name, fromlist=["run"])
            common.log("=== %s ===" % name)
            t0 = time.time()
            try:
                module.run(servers, opts)
                status[name] = "ok (%.0f s)" % (time.time() - t0)
            except common.Skip as e:
                status[name] = "skipped: %s" % e
                common.log("%s skipped: %s" % (name, e))
            except Exception as e:  # noqa: BLE001 - report and go on with the next benchmark
                traceback.print_exc()
                status[name] = "FAILED: %s: %s" % (type(e).__name__, e)
    finally:
        servers.close()
    try:
        from bench import summary
        common.log("wrote %s" % summary.write(opts.outdir))
    except Exception as e:  # noqa: BLE001 - a summary must not hide the results themselves
        common.log("summary not written: %s" % e)
    common.log("done in %.0f s" % (time.time() - started))
    for name, st in status.items():
        print("%-11s %s" % (name, st))
    return 1 if any(st.startswith("FAILED") for st in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
