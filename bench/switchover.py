"""Benchmark 3 (issue 4): the switchover under load.

A 1M-row table (--quick 100k) with a dependent view goes through phase 1 (twin, triggers),
phase 2 (our backfill, then the full verification) and then phase 3 — module_utils/switchover/swap.py
``switchover`` with the module's defaults (lock_timeout 50 ms, 30 retries, final_check full) —
while pgbench writes and reads at a fixed rate (single-row inserts, updates of random ids,
reads through the view) with a per-transaction latency log (-l).

Measured:
* the time ACCESS EXCLUSIVE is held: ``swap_lock_ms`` as switchover reports it (from the
  granted LOCK to the returned COMMIT), and independently by a poller that reads pg_locks in
  a loop from another connection (first to last sighting of a granted AccessExclusiveLock on
  the table, the twin or the view; its resolution is the poll interval, reported);
* the worst stall of the application: the longest pgbench transaction of the run, beside the
  longest before the swap began (same run) and the number of failed transactions.
Goals: lock < 100 ms, stall < 500 ms, no failed transaction.
"""
import os
import re
import threading
import time

from bench import backfill as bf
from bench import common, product, schema
from bench.common import PgbenchRun, fmt, log, md_table, median, percentile

VIEW_SCRIPT = """\\set org random(8, 1000)
SELECT n, total FROM public.revenues_by_org WHERE org_id = :org;
"""


def api():
    found = product.optional("switchover.swap", "switchover")
    verify = product.optional("migrate.verify", "verify_table")
    if found is None or verify is None:
        raise common.Skip("module_utils/switchover/swap.py switchover or module_utils/migrate/verify.py verify_table is not available")
    return found, verify


class LockPoller(threading.Thread):
    """Sees when granted AccessExclusiveLocks on any of ``oids`` appear and disappear, per backend.

    The switchover's own backend (``swap_pid``) is what is measured; other holders (an
    autovacuum truncating a table, say) are reported separately, never added to it."""

    QUERY = ("SELECT DISTINCT l.pid, coalesce(a.backend_type, '?') FROM pg_locks l "
             "LEFT JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'relation' "
             "AND l.mode = 'AccessExclusiveLock' AND l.granted AND l.relation = ANY (%s::oid[]) "
             "AND l.pid <> pg_backend_pid()")

    def __init__(self, srv, dbname, oids, swap_pid):
        super().__init__(daemon=True)
        self.conn = srv.connect(dbname)
        self.oids = list(oids)
        self.swap_pid = swap_pid
        self.stop = threading.Event()
        self.seen = {}                      # pid -> [first, last, backend_type] (time.time())
        self.polls = 0
        self.intervals = []

    def run(self):
        cur = self.conn.cursor()
        prev = None
        while not self.stop.is_set():
            t = time.time()
            cur.execute(self.QUERY, (self.oids,))
            for pid, kind in cur.fetchall():
                entry = self.seen.setdefault(pid, [t, t, kind])
                entry[1] = t
            self.polls += 1
            if prev is not None:
                self.intervals.append(t - prev)
            prev = t
            time.sleep(0.0002)
        self.conn.close()

    @property
    def first(self):
        e = self.seen.get(self.swap_pid)
        return e[0] if e else None

    @property
    def last(self):
        e = self.seen.get(self.swap_pid)
        return e[1] if e else None

    def held_ms(self):
        if self.first is None:
            return None
        return (self.last - self.first) * 1000.0

    def others(self):
        return ["pid %s (%s): %.1f ms" % (pid, e[2], (e[1] - e[0]) * 1000.0)
                for pid, e in self.seen.items() if pid != self.swap_pid]

    def resolution_ms(self):
        return 1000.0 * median(self.intervals) if self.intervals else None


def _log_size(srv):
    try:
        return os.path.getsize(srv.logfile)
    except OSError:
        return 0


_ENTRY = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", re.M)
_DURATION = re.compile(r"dbops\.partitioning/bench LOG:  duration: ([0-9.]+) ms  statement: (.*)", re.S)


def _slowest_statements(srv, offset, top=10):
    """The switchover session's statements from the server log: the slowest ones, and the
    count and summed duration of those between its LOCK TABLE and its COMMIT (the rest of the
    lock time is round trips and waiting for a CPU)."""
    try:
        with open(srv.logfile, errors="replace") as f:
            f.seek(offset)
            text = f.read()
    except OSError:
        return dict(slowest=[], in_lock=None)
    starts = [m.start() for m in _ENTRY.finditer(text)] + [len(text)]
    found = []
    for a, b in zip(starts, starts[1:]):
        m = _DURATION.search(text[a:b])
        if m:
            full = " ".join(m.group(2).split())
            found.append((float(m.group(1)), full[:160], "LOCK TABLE" in full.upper()))
    in_lock = None
    for i, (_ms, st, locks) in enumerate(found):
        if locks:
            j = next((k for k in range(i, len(found)) if found[k][1].upper().startswith("COMMIT")), len(found) - 1)
            span = found[i:j + 1]
            in_lock = dict(statements=len(span), sum_ms=sum(x[0] for x in span))
    return dict(slowest=[x[:2] for x in sorted(found, reverse=True)[:top]], in_lock=in_lock)


def prepare(srv, opts, dbname):
    api()
    conn, how = bf.build(srv, dbname, opts.swap_rows, view=True)
    t0 = time.time()
    bf.run_ours(srv, dbname)
    copy_s = time.time() - t0
    verify_s = bf.verify_full(srv, dbname)
    log("switchover: prepared %d rows (%s), copied in %.0f s, verified in %.0f s" % (
        opts.swap_rows, how, copy_s, verify_s))
    return conn, how, verify_s


def run_once(srv, opts, rnd):
    switchover, _verify = api()
    dbname = "bench_swap"
    conn, how, verify_s = prepare(srv, opts, dbname)
    cur = conn.cursor()
    cur.execute("SELECT 'public.revenues'::regclass::oid, 'public.revenues_partitioned'::regclass::oid, "
                "'public.revenues_by_org'::regclass::oid")
    oids = cur.fetchone()
    lead = 3.0
    duration = lead + max(8.0, 3 * verify_s + 5)
    scripts = [("insert", schema.INSERT_SCRIPT, 1), ("update", schema.UPDATE_SCRIPT, 1), ("view", VIEW_SCRIPT, 1)]
    pb = PgbenchRun(srv, dbname, scripts, clients=opts.clients, duration=duration, rate=opts.latency_rate,
                    latency_log=True, defines={"maxid": opts.swap_rows}).start()
    time.sleep(lead)
    sess = bf.module_session(srv, dbname)
    poller = LockPoller(srv, dbname, oids, sess.conn.get_backend_pid())
    poller.start()
    # Every statement of the switchover's own session goes to the server log with its duration:
    # the report lists the slowest ones (where the lock time goes).
    sess.conn.cursor().execute("SET log_min_duration_statement = 0")
    log_offset = _log_size(srv)
    t_call = time.time()
    result = product.switch_over(sess, "public.revenues")
    t_done = time.time()
    sess.close()
    time.sleep(0.5)
    poller.stop.set()
    poller.join()
    if t_done > pb.started_at + duration:
        log("switchover: WARNING the swap ended after the load; the stall may be under-measured")
    res = pb.wait()
    slowest = _slowest_statements(srv, log_offset)
    lats = res["latencies"]
    lock_from = poller.first or t_call
    before = [lat for start, lat in lats if start < t_call]
    overlapping = [lat for start, lat in lats if start <= (poller.last or t_done) + 0.05 and
                   start + lat / 1000.0 >= lock_from - 0.05]
    cur.execute("SELECT swap_lock_ms FROM partitioning.tables WHERE table_name = 'public.revenues'")
    state_lock_ms = cur.fetchone()[0]
    cur.execute("SELECT count(*) FROM public.revenues")
    rows_after = cur.fetchone()[0]
    cur.execute("SELECT relkind FROM pg_class WHERE oid = 'public.revenues'::regclass")
    kind = cur.fetchone()[0]
    conn.close()
    out = dict(round=rnd, twin_built_by=how, swap_lock_ms=result.get("swap_lock_ms"), state_swap_lock_ms=state_lock_ms,
               attempts=result.get("attempts"), polled_lock_ms=poller.held_ms(),
               poll_resolution_ms=poller.resolution_ms(), polls=poller.polls,
               other_lock_holders=poller.others(),
               switchover_call_s=t_done - t_call,
               worst_stall_ms=max(lat for _s, lat in lats) if lats else None,
               worst_overlapping_ms=max(overlapping) if overlapping else None,
               before_max_ms=max(before) if before else None, before_p99_ms=percentile(before, 99),
               transactions=len(lats), failed=res["failed"], aborted_clients=res["aborted_clients"],
               pgbench_stderr=res["stderr"].strip()[-500:], relkind_after=kind, rows_after=rows_after,
               slowest_statements=slowest,
               load="pgbench -R %d, %d clients, %.0f s: insert + update + read via view (1:1:1)" % (
                   opts.latency_rate, opts.clients, duration))
    log("switchover pg%d: lock %s ms (switchover) / %s ms (polled, resolution %s ms); worst stall %s ms "
        "(before swap max %s ms); failed %s" % (srv.major, fmt(out["swap_lock_ms"]), fmt(out["polled_lock_ms"]),
                                                fmt(out["poll_resolution_ms"]), fmt(out["worst_stall_ms"]),
                                                fmt(out["before_max_ms"]), out["failed"]))
    return out


def run(servers, opts):
    api()
    results = {}
    for major, srv in servers.each(opts.versions, "switchover"):
        runs = [run_once(srv, opts, r) for r in range(opts.swap_rounds)]
        c = srv.connect()
        facts = common.setup_facts(srv, c, rows=opts.swap_rows, clients=opts.clients, rate=opts.latency_rate,
                                   view="public.revenues_by_org (GROUP BY org_id) on the table",
                                   switchover="module_utils/switchover/swap.py switchover(), defaults: lock_timeout_ms 50, "
                                              "swap_retries 30, final_check full")
        c.close()
        results[major] = dict(facts=facts, runs=runs,
                              lock_ms=median([r["swap_lock_ms"] for r in runs]),
                              polled_lock_ms=median([r["polled_lock_ms"] for r in runs]),
                              worst_stall_ms=max(r["worst_stall_ms"] or 0 for r in runs),
                              before_max_ms=max(r["before_max_ms"] or 0 for r in runs),
                              failed=sum(r["failed"] + r["aborted_clients"] for r in runs))
    if not results:
        raise common.Skip("no PostgreSQL server available")
    report(results, opts)
    return results


def report(results, opts):
    rows = []
    for major, r in sorted(results.items(), reverse=True):
        rows.append(["PostgreSQL %d" % major, r["facts"]["rows"], r["lock_ms"], r["polled_lock_ms"],
                     "yes" if r["lock_ms"] is not None and r["lock_ms"] < 100 else "NO", r["worst_stall_ms"],
                     r["before_max_ms"], "yes" if r["worst_stall_ms"] < 500 else "NO", r["failed"]])
    sections = [("Result", md_table(
        ["server", "rows", "lock held ms (switchover)", "lock held ms (pg_locks poll)", "< 100 ms",
         "worst stall ms", "worst before swap ms", "< 500 ms", "failed txns"], rows))]
    for major, r in sorted(results.items(), reverse=True):
        sections.append(("Setup (PostgreSQL %d)" % major, "\n".join(
            "- %s: %s" % (k, v) for k, v in sorted(r["facts"].items()))))
        keys = ["round", "swap_lock_ms", "state_swap_lock_ms", "polled_lock_ms", "poll_resolution_ms", "attempts",
                "switchover_call_s", "worst_stall_ms", "worst_overlapping_ms", "before_max_ms", "before_p99_ms",
                "transactions", "failed", "aborted_clients", "relkind_after", "rows_after"]
        sections.append(("Runs (PostgreSQL %d)" % major, md_table(keys, [[x[k] for k in keys] for x in r["runs"]])
                         + "\n\nLoad: " + r["runs"][0]["load"]
                         + "".join("\n\nOther backends seen holding ACCESS EXCLUSIVE on the table, the twin or the "
                                   "view during round %d (not part of the swap): %s" % (
                                       x["round"], "; ".join(x["other_lock_holders"]))
                                   for x in r["runs"] if x.get("other_lock_holders"))
                         + "".join("\n\npgbench stderr (round %d): `%s`" % (x["round"], x["pgbench_stderr"])
                                   for x in r["runs"] if x["pgbench_stderr"])))
    for major, r in sorted(results.items(), reverse=True):
        for x in r["runs"]:
            st = x.get("slowest_statements") or {}
            if st.get("slowest"):
                lk = st.get("in_lock") or {}
                sections.append(("Statements of the switchover session (PostgreSQL %d, round %d; "
                                 "from the server log, log_min_duration_statement = 0)" % (major, x["round"]),
                                 "From the statement holding its LOCK TABLE to its COMMIT: %s statement(s) "
                                 "(client round trips) taking %s ms in the server; the rest of the lock time is "
                                 "round trips and waiting for a CPU.\n\n"
                                 % (lk.get("statements", "n/a"), fmt(lk.get("sum_ms"))) +
                                 md_table(["ms", "statement (slowest first)"],
                                          [[ms, "`%s`" % q.replace("|", "\\|")] for ms, q in st["slowest"]])))
    sections.append(("Method", __doc__.strip()))
    common.write_result(opts.outdir, "switchover", "Switchover under load (make bench, issue 4)", sections,
                        {str(k): v for k, v in results.items()})
