"""What every benchmark shares: throwaway servers, pgbench, alternation, results.

Rules the benchmarks follow (docs/benchmarks.md):

* every figure is a *ratio* of two things measured side by side in one run on the same
  server, because this machine (2 cores shared with other work) is noisy;
* the variants are repeated and alternated (A B A B ...; with three variants the order
  rotates every round) so that drift (autovacuum, a neighbour's load, table growth)
  spreads over all of them; the ratio is taken of the medians;
* the setup (server version, rows, clients, duration, cores) is written beside the result.
"""
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
COLLECTIONS = os.path.join(ROOT, "collections")
for _p in (ROOT, COLLECTIONS):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from lab.servers import Server, available_bindirs, scratch_dir  # noqa: E402

RESULTS_DIR = os.path.join(ROOT, "bench", "results")


class Skip(Exception):
    """A benchmark that cannot run here (missing binaries, missing API): reported, not failed."""


def log(msg):
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# --- servers ---------------------------------------------------------------------------

class Servers:
    """Throwaway servers under one temporary directory, started on demand, destroyed at exit."""

    def __init__(self, settings=None):
        self.base = scratch_dir("bench-")        # owned by the user the servers run as
        self.bindirs = available_bindirs()
        self.settings = settings or {}
        self.started = {}

    def versions(self):
        return sorted(self.bindirs, reverse=True)

    def get(self, major):
        if major not in self.bindirs:
            raise Skip("PostgreSQL %d binaries are not installed" % major)
        if major not in self.started:
            log("starting PostgreSQL %d" % major)
            srv = Server(self.bindirs[major], os.path.join(self.base, "pg%d" % major), name="bench-pg%d" % major)
            srv.init(self.settings).start()
            self.started[major] = srv
        return self.started[major]

    def each(self, versions, what):
        """``(major, server)`` for each of ``versions`` that runs here; the others are logged
        as skipped for benchmark ``what``."""
        for major in versions:
            try:
                yield major, self.get(major)
            except Skip as e:
                log("%s: skip PostgreSQL %d: %s" % (what, major, e))

    def close(self):
        for srv in self.started.values():
            try:
                srv.destroy()
            except Exception as e:  # noqa: BLE001 - cleanup must go on
                log("could not destroy %s: %s" % (srv.name, e))
        shutil.rmtree(self.base, ignore_errors=True)


def fresh_database(srv, name):
    """Drop and create database ``name`` on ``srv``: every benchmark starts from nothing."""
    drop_database(srv, name)
    srv.create_database(name)


def drop_database(srv, name):
    from psycopg2 import sql
    conn = srv.connect()
    try:
        conn.cursor().execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
    finally:
        conn.close()


def server_version(conn):
    cur = conn.cursor()
    cur.execute("SHOW server_version")
    return cur.fetchone()[0]


# --- pgbench ---------------------------------------------------------------------------

def pgbench_binary(srv):
    """pgbench of the server's own installation; Debian's as a fallback."""
    for cand in (os.path.join(srv.bindir, "pgbench"), "/usr/lib/postgresql/%d/bin/pgbench" % srv.major):
        if os.path.exists(cand):
            return cand
    found = shutil.which("pgbench")
    if found:
        return found
    raise Skip("pgbench is not installed next to PostgreSQL %d" % srv.major)


_TPS = re.compile(r"^tps = ([0-9.]+) \((?:without initial connection time|excluding connections establishing)\)",
                  re.M)
_XACTS = re.compile(r"number of transactions actually processed: (\d+)")
_FAILED = re.compile(r"number of failed transactions: (\d+)")


class PgbenchRun:
    """One pgbench invocation: ``start()`` then ``wait()``; or ``run()`` for both."""

    def __init__(self, srv, dbname, scripts, clients=2, threads=None, duration=5, transactions=None,
                 rate=None, latency_log=False, defines=None):
        self.srv = srv
        self.dbname = dbname
        self.scripts = scripts          # {name: text} or [(name, text, weight)]
        self.clients = clients
        self.threads = threads or min(clients, os.cpu_count() or 1)
        self.duration = duration
        self.transactions = transactions
        self.rate = rate
        self.latency_log = latency_log
        self.defines = defines or {}
        self.workdir = tempfile.mkdtemp(prefix="pgbench-")
        self.proc = None
        self.result = None

    def _args(self):
        args = [pgbench_binary(self.srv), "-n", "-h", self.srv.host, "-p", str(self.srv.port), "-U", "postgres",
                "-c", str(self.clients), "-j", str(self.threads)]
        if self.transactions:
            args += ["-t", str(self.transactions)]
        else:
            args += ["-T", str(max(1, int(round(self.duration))))]
        if self.rate:
            args += ["-R", str(self.rate)]
        if self.latency_log:
            args += ["-l", "--log-prefix", os.path.join(self.workdir, "lat")]
        for k, v in self.defines.items():
            args += ["-D", "%s=%s" % (k, v)]
        items = self.scripts.items() if isinstance(self.scripts, dict) else [(n, t) for n, t, _w in self.scripts]
        weights = {} if isinstance(self.scripts, dict) else {n: w for n, _t, w in self.scripts}
        for name, text in items:
            path = os.path.join(self.workdir, name + ".sql")
            with open(path, "w") as f:
                f.write(text)
            args += ["-f", path + ("@%d" % weights[name] if name in weights else "")]
        args.append(self.dbname)
        return args

    def start(self):
        env = dict(os.environ, PGAPPNAME="bench-pgbench", PGOPTIONS="-c TimeZone=UTC")
        self.started_at = time.time()
        self.proc = subprocess.Popen(self._args(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     cwd=self.workdir, env=env)
        return self

    def wait(self):
        out, err = self.proc.communicate()
        self.ended_at = time.time()
        m = _TPS.search(out)
        if self.proc.returncode not in (0, 2) or not m:
            raise RuntimeError("pgbench failed (%s):\n%s\n%s" % (self.proc.returncode, out[-2000:], err[-2000:]))
        xacts = _XACTS.search(out)
        failed = _FAILED.search(out)
        self.result = dict(tps=float(m.group(1)), transactions=int(xacts.group(1)) if xacts else None,
                           failed=int(failed.group(1)) if failed else 0,
                           aborted_clients=err.count("aborted in command") + err.count("client aborted"),
                           returncode=self.proc.returncode, stderr=err[-1000:])
        if self.latency_log:
            self.result["latencies"] = self.read_latency_log()
        shutil.rmtree(self.workdir, ignore_errors=True)
        return self.result

    def run(self):
        return self.start().wait()

    def read_latency_log(self):
        """``[(start_epoch_s, latency_ms)]`` from pgbench's per-transaction log (-l).

        Line format: client_id transaction_no latency_us script_no end_epoch_s end_epoch_us [lag_us].
        """
        rows = []
        for name in os.listdir(self.workdir):
            if not name.startswith("lat."):
                continue
            with open(os.path.join(self.workdir, name)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) < 6 or parts[2] in ("skipped", "failed"):
                        continue
                    lat_us = int(parts[2])
                    end = int(parts[4]) + int(parts[5]) / 1e6
                    rows.append((end - lat_us / 1e6, lat_us / 1000.0))
        rows.sort()
        return rows


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    k = (len(values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# --- alternation and ratios --------------------------------------------------------------

def rotations(variants, rounds):
    """The order in which variants run: A B C, B C A, C A B, ... (each position equally often)."""
    order = []
    n = len(variants)
    for r in range(rounds):
        order.append([variants[(r + i) % n] for i in range(n)])
    return order


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt(x, digits=3):
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if abs(x) >= 100:
            return "%.1f" % x
        return ("%%.%df" % digits) % x
    return str(x)


def setup_facts(srv, conn, **extra):
    facts = dict(postgresql=server_version(conn), major=srv.major, cores=os.cpu_count(),
                 machine=platform.machine(), python=platform.python_version(),
                 loadavg_at_start="%.2f %.2f %.2f" % os.getloadavg(),
                 settings="fsync=off synchronous_commit=off full_page_writes=off shared_buffers=128MB (lab/servers.py)",
                 date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    facts.update(extra)
    return facts


# --- results -----------------------------------------------------------------------------

def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(c) for c in r) + " |")
    return "\n".join(lines)


def write_result(outdir, name, title, sections, data):
    """``<outdir>/<name>.md`` (human) and ``<name>.json`` (machine) of one benchmark."""
    os.makedirs(outdir, exist_ok=True)
    md = ["# " + title, ""]
    for heading, body in sections:
        if heading:
            md += ["## " + heading, ""]
        md += [body, ""]
    with open(os.path.join(outdir, name + ".md"), "w") as f:
        f.write("\n".join(md))
    with open(os.path.join(outdir, name + ".json"), "w") as f:
        json.dump(data, f, indent=2, sort_keys=True, default=str)
    log("wrote %s" % os.path.join(outdir, name + ".md"))
