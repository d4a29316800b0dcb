"""Benchmark 5 (issue 8): rows in the default partition, moved out — the longest lock.

A range-partitioned table ``ev`` (bigserial id, timestamptz key, note, amount; primary key (id, k),
an index on note; monthly partitions 2025-05 and 2025-06 and a default partition) whose default
partition holds N rows (100 000 and 1 000 000; --quick 10 000 and 100 000): 90% in 2025-08 and
2025-09, the two partitions premake wants, 10% far in the future (they stay). Two ways to make
those partitions, each on its own freshly filled table, side by side in one run:

* **classic**: one transaction — ``LOCK TABLE ev IN ACCESS EXCLUSIVE MODE``, the range's rows copied
  aside, deleted from the default partition, ``CREATE TABLE ... PARTITION OF`` (which scans the
  default partition), the rows inserted back, COMMIT;
* **ours**: ``maintain/premake.py`` as ``maintenance.yml`` runs it (lock budget 200 ms), whose
  default move (``maintain/default_move.py``) copies online and swaps in one short transaction.

Measured: the ACCESS EXCLUSIVE lock on the table, from granted to COMMIT — for classic timed around
the transaction, for ours as the move reports it (its ``lock_ms``) and independently by a poller
that reads pg_locks in a loop from another connection (first to last sighting of a granted
AccessExclusiveLock on ev by the mover's backend); the whole call's wall time; ratio classic/ours.
No application load runs: the lock figure is the work done under the lock.
"""
import time

from bench import common, product
from bench.common import log, md_table, median
from bench.switchover import LockPoller

SETUP = """
CREATE TABLE public.ev (id bigserial, k timestamptz NOT NULL, note text, amount numeric NOT NULL DEFAULT 0,
                        PRIMARY KEY (id, k)) PARTITION BY RANGE (k);
CREATE INDEX ev_note ON public.ev (note);
CREATE TABLE public.ev_2025_05 PARTITION OF public.ev FOR VALUES FROM ('2025-05-01 00:00+00') TO ('2025-06-01 00:00+00');
CREATE TABLE public.ev_2025_06 PARTITION OF public.ev FOR VALUES FROM ('2025-06-01 00:00+00') TO ('2025-07-01 00:00+00');
CREATE TABLE public.ev_2025_07 PARTITION OF public.ev FOR VALUES FROM ('2025-07-01 00:00+00') TO ('2025-08-01 00:00+00');
CREATE TABLE public.ev_default PARTITION OF public.ev DEFAULT;
INSERT INTO public.ev (k, note, amount)
SELECT CASE WHEN g %% 10 = 0 THEN timestamptz '2031-01-01 00:00+00' + (g %% 1000) * interval '1 hour'
            ELSE timestamptz '2025-08-01 00:00+00' + (g %% (61 * 24 * 60)) * interval '1 minute' END,
       'row ' || g, g %% 1000
  FROM generate_series(1, %(rows)s) g;
"""
RANGES = (("ev_2025_08", "2025-08-01 00:00+00", "2025-09-01 00:00+00"),
          ("ev_2025_09", "2025-09-01 00:00+00", "2025-10-01 00:00+00"))
NOW = "2025-06-02T00:00:00Z"       # premake 3: 06 .. 09; 07 exists; 08 and 09 hold rows


def api():
    premake = product.optional("maintain.premake", "premake")
    mover = product.optional("maintain.default_move", "move_out_of_default")
    if premake is None or mover is None:
        raise common.Skip("module_utils/maintain/default_move.py is not available")
    return premake


def _fill(srv, dbname, rows):
    common.fresh_database(srv, dbname)
    conn = srv.connect(dbname)
    conn.autocommit = True
    conn.cursor().execute(SETUP, dict(rows=rows))
    conn.cursor().execute("VACUUM ANALYZE public.ev")
    oid = _scalar(conn, "SELECT 'public.ev'::regclass::oid")
    return conn, oid


def _scalar(conn, q, args=None):
    cur = conn.cursor()
    cur.execute(q, args)
    return cur.fetchone()[0]


def classic(srv, rows):
    conn, _oid = _fill(srv, "bench_move_classic", rows)
    cur = conn.cursor()
    started = time.monotonic()
    cur.execute("BEGIN")
    cur.execute("LOCK TABLE public.ev IN ACCESS EXCLUSIVE MODE")
    granted = time.monotonic()
    for name, lo, hi in RANGES:
        cur.execute("CREATE TEMP TABLE moving ON COMMIT DROP AS SELECT * FROM public.ev_default WHERE k >= %s "
                    "AND k < %s", (lo, hi))
        cur.execute("DELETE FROM public.ev_default WHERE k >= %s AND k < %s", (lo, hi))
        cur.execute("CREATE TABLE public.%s PARTITION OF public.ev FOR VALUES FROM ('%s') TO ('%s')" % (name, lo, hi))
        cur.execute("INSERT INTO public.ev SELECT * FROM moving")
        cur.execute("DROP TABLE moving")
    cur.execute("COMMIT")
    done = time.monotonic()
    moved = _scalar(conn, "SELECT count(*) FROM public.ev_2025_08") + _scalar(conn, "SELECT count(*) FROM "
                                                                                    "public.ev_2025_09")
    conn.close()
    return dict(lock_ms=(done - granted) * 1000.0, wall_s=done - started, moved=moved)


def ours(srv, rows, premake):
    conn, oid = _fill(srv, "bench_move_ours", rows)
    from ansible_collections.dbops.partitioning.plugins.module_utils.bounds import parse_now
    from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
    spec = normalize_spec(dict(table="public.ev", partition_key="k", interval="monthly", premake=3))
    session = product.session(srv.connect("bench_move_ours"))
    poller = LockPoller(srv, "bench_move_ours", [oid], session.conn.get_backend_pid())
    poller.start()
    started = time.monotonic()
    try:
        result = premake(session, product.templates(), spec, product.STATE_SCHEMA, now=parse_now(NOW))
    finally:
        wall = time.monotonic() - started
        poller.stop.set()
        poller.join()
        session.close()
    moves = [s for s in result["steps"] if s["step"] == "move"]
    if not moves:
        raise RuntimeError("the default move did not run: %s" % result.get("warnings"))
    first, last = poller.first, poller.last
    moved = _scalar(conn, "SELECT count(*) FROM public.ev_2025_08") + _scalar(conn, "SELECT count(*) FROM "
                                                                                    "public.ev_2025_09")
    conn.close()
    return dict(lock_ms=moves[0]["lock_ms"], polled_lock_ms=None if first is None else (last - first) * 1000.0,
                poll_resolution_ms=median(poller.intervals) * 1000.0 if poller.intervals else None,
                attempts=moves[0]["attempts"], wall_s=wall, moved=moved)


def run(servers, opts):
    premake = api()
    sizes = [int(x) for x in str(opts.default_rows).split(",") if x.strip()]
    results = {}
    for major, srv in servers.each(opts.versions, "default_move"):
        runs = []
        for rows in sizes:
            for rnd in range(opts.default_rounds):
                log("default move: PostgreSQL %d, %d rows, round %d" % (major, rows, rnd + 1))
                # alternate which goes first, so neither always meets a warmer cache
                pair = [("classic", lambda: classic(srv, rows)), ("ours", lambda: ours(srv, rows, premake))]
                got = dict((name, fn()) for name, fn in (pair if rnd % 2 == 0 else pair[::-1]))
                runs.append(dict(rows=rows, round=rnd + 1, classic=got["classic"], ours=got["ours"]))
        c = srv.connect()
        facts = common.setup_facts(srv, c, sizes=sizes, rounds=opts.default_rounds, lock_budget_ms=200,
                                   move="module_utils/maintain/premake.py premake() -> default_move.move_out_of_default")
        c.close()
        results[major] = dict(facts=facts, runs=runs, by_rows=_by_rows(runs))
    if not results:
        raise common.Skip("no PostgreSQL server available")
    report(results, opts)
    return results


def _by_rows(runs):
    out = {}
    for rows in sorted(set(r["rows"] for r in runs)):
        mine = [r for r in runs if r["rows"] == rows]
        c = median([r["classic"]["lock_ms"] for r in mine])
        o = median([r["ours"]["lock_ms"] for r in mine])
        out[str(rows)] = dict(classic_lock_ms=c, ours_lock_ms=o,
                              ours_polled_lock_ms=median([r["ours"]["polled_lock_ms"] for r in mine]),
                              ratio=common.ratio(c, o), classic_wall_s=median([r["classic"]["wall_s"] for r in mine]),
                              ours_wall_s=median([r["ours"]["wall_s"] for r in mine]),
                              moved=mine[0]["ours"]["moved"])
    return out


def report(results, opts):
    rows = []
    for major, r in sorted(results.items(), reverse=True):
        for n, b in r["by_rows"].items():
            rows.append(["PostgreSQL %d" % major, int(n), b["moved"], b["classic_lock_ms"], b["ours_lock_ms"],
                         b["ours_polled_lock_ms"], b["ratio"], b["classic_wall_s"], b["ours_wall_s"],
                         "yes" if (b["ours_lock_ms"] or 0) < 200 else "NO"])
    sections = [("Result (medians)", md_table(
        ["server", "rows in the default partition", "rows moved", "classic: lock ms", "ours: lock ms (reported)",
         "ours: lock ms (pg_locks poll)", "classic/ours", "classic: wall s", "ours: wall s", "ours < 200 ms budget"],
        rows))]
    for major, r in sorted(results.items(), reverse=True):
        sections.append(("Setup (PostgreSQL %d)" % major, "\n".join(
            "- %s: %s" % (k, v) for k, v in sorted(r["facts"].items()))))
        sections.append(("Runs (PostgreSQL %d)" % major, md_table(
            ["rows", "round", "classic lock ms", "ours lock ms", "ours polled ms", "poll resolution ms",
             "ours attempts", "classic wall s", "ours wall s"],
            [[x["rows"], x["round"], x["classic"]["lock_ms"], x["ours"]["lock_ms"], x["ours"]["polled_lock_ms"],
              x["ours"]["poll_resolution_ms"], x["ours"]["attempts"], x["classic"]["wall_s"], x["ours"]["wall_s"]]
             for x in r["runs"]])))
    sections.append(("Method", __doc__.strip()))
    common.write_result(opts.outdir, "default_move", "Rows in the default partition, moved out (make bench, issue 8)",
                        sections, {str(k): v for k, v in results.items()})
