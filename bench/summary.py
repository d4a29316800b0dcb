"""``bench/results/summary.md``: the headline figures of the latest results, one block per benchmark.

Written after every run from the ``*.json`` files in the results directory (so a run of one
benchmark keeps the others' latest figures); docs/benchmarks.md quotes these blocks.
``python -m bench.summary [DIR]`` rewrites it without running anything.
"""
import json
import os
import sys

from bench.common import RESULTS_DIR, fmt, md_table


def _load(outdir, name):
    path = os.path.join(outdir, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _date(facts):
    return facts.get("date", "?")


def trigger_block(data):
    rows = []
    dates = set()
    for major, r in sorted(data.items(), key=lambda kv: -int(kv[0])):
        f = r["facts"]
        dates.add(_date(f))
        for w, rt in r["ratios"].items():
            rows.append(["PostgreSQL %s" % major, w, rt["ours_none"], rt["hand_none"], rt["ours_hand"],
                         rt.get("guarded_hand")])
    any_f = next(iter(data.values()))["facts"]
    srows = []
    for major, r in sorted(data.items(), key=lambda kv: -int(kv[0])):
        ss = r.get("server_side")
        for w in (ss or {}).get("ours_hand", {}):
            srows.append(["PostgreSQL %s" % major, w, ss["us_per_row"]["none/" + w], ss["added_us"][w]["ours"],
                          ss["added_us"][w]["hand"], ss["ours_hand"][w], (ss.get("guarded_hand") or {}).get(w),
                          "yes" if (ss["ours_hand"][w] or 0) >= 1.0 else "NO"])
    server_side = ("\n\nServer side (the same writes from a PL/pgSQL loop in one session: no client noise; "
                   "ratios are the median of per-round paired ratios; goal: ours costs no more than hand):\n\n" +
                   md_table(["server", "workload", "us/row without trigger", "us/row added by ours",
                             "us/row added by hand", "ours/hand (rows/s)", "guarded/hand (rows/s)",
                             "goal ours/hand >= 1.0"], srows)) if srows else ""
    return ("Run of %s; %s rows, %s clients, %s s per run, %s rounds; twin and trigger: %s.\n\n" % (
        ", ".join(sorted(dates)), any_f["rows"], any_f["clients"], any_f["duration_s"], any_f["rounds"],
        any_f["twin_built_by"]) + md_table(
        ["server", "workload", "ours/none", "hand/none", "ours/hand", "guarded/hand"], rows)
        + server_side)


def _dated(data, key):
    """"Run of <dates>." of one part of the backfill results (its parts may be run apart)."""
    dates = sorted(set(_date(v["facts"]) for v in data.get(key, {}).values()))
    return "Run of %s.\n\n" % ", ".join(dates) if dates else ""


def backfill_block(data):
    out = []
    for key, what in (("throughput", "copy"), ("large", "copy")):
        rows = []
        for major, tp in sorted(data.get(key, {}).items(), key=lambda kv: -int(kv[0])):
            m, rt = tp["median_rows_per_s"], tp["ratios"]
            rows.append(["PostgreSQL %s" % major, tp["facts"]["rows"], m.get("ours"), m.get("insert_select"),
                         rt["ours_insert"], "yes" if (rt["ours_insert"] or 0) >= 0.85 else "NO",
                         rt.get("ours_locked_insert"), rt.get("ours_partman"),
                         "%s rounds, per round %s" % (tp["facts"]["rounds"], ", ".join(
                             fmt(x["ours_insert"]) for x in tp.get("per_round", {}).values()))])
        if rows:
            out.append(_dated(data, key) + md_table(
                ["server", "rows", "ours rows/s", "INSERT…SELECT rows/s", "ours/insert", "goal >= 0.85",
                 "every row locked / insert", "ours/pg_partman", "noise"], rows))
    rows = []
    for major, p2 in sorted(data.get("phase2", {}).items(), key=lambda kv: -int(kv[0])):
        rows.append(["PostgreSQL %s" % major, p2["facts"]["rows"], p2["median_s"]["phase2"],
                     p2["median_s"]["insert_select"], p2["raw_over_phase2"],
                     "yes" if (p2["raw_over_phase2"] or 0) >= 0.5 else "NO"])
    if rows:
        out.append(_dated(data, "phase2") + md_table(["server", "rows", "phase2_migrate.yml s", "INSERT…SELECT s", "raw / whole phase 2",
                             "goal >= 0.5"], rows))
    rows = []
    for major, lt in sorted(data.get("latency", {}).items(), key=lambda kv: -int(kv[0])):
        for v in ("guarded", "unguarded"):
            rows.append(["PostgreSQL %s" % major, v, lt["p99_ratio"][v], "yes" if (lt["p99_ratio"][v] or 99) <= 3 else
                         "NO", lt["tps_ratio"][v], "yes" if (lt["tps_ratio"][v] or 0) >= 0.8 else "NO",
                         lt["copy_rows_per_s"][v]])
    if rows:
        out.append(_dated(data, "latency") + md_table(["server", "backfill", "p99 during / alone", "goal <= 3", "tps during / alone",
                             "goal >= 0.8", "copy rows/s meanwhile"], rows) + "\n\n![latency](IMGDIR/backfill_latency.png)")
    rows = []
    for major, w in sorted(data.get("workers", {}).items(), key=lambda kv: -int(kv[0])):
        for n in sorted(w["median"], key=int):
            m = w["median"][n]
            rows.append(["PostgreSQL %s" % major, n, m["rows_per_s"], w["speedup"][n], m["wal_mb_per_s"],
                         "%.0f%%" % (100 * (m["cpu_busy"] or 0))])
    if rows:
        out.append(_dated(data, "workers") + md_table(["server", "copy_workers", "rows/s", "speed-up", "WAL MB/s", "CPUs busy"], rows) +
                   "\n\n![workers](IMGDIR/backfill_workers.png)")
    rows = []
    for major, f in sorted(data.get("flatness", {}).items(), key=lambda kv: -int(kv[0])):
        rows.append(["PostgreSQL %s" % major, f["rows"], f["batches"], f["last_first_ratio"],
                     f.get("reference_last_first_ratio"), f.get("normalized_last_first_ratio")])
    if rows:
        out.append(_dated(data, "large") + md_table(["server", "rows copied", "batches", "ms/1k rows last/first decile",
                             "reference last/first (the machine)", "normalized last/first"], rows)
                   + "\n\n![time per batch](IMGDIR/backfill_batches.png)")
    return "\n\n".join(out)


def switchover_block(data):
    rows = []
    for major, r in sorted(data.items(), key=lambda kv: -int(kv[0])):
        lk = {}
        for x in r["runs"]:
            lk = (x.get("slowest_statements") or {}).get("in_lock") or {}
        rows.append(["PostgreSQL %s" % major, r["facts"]["rows"], r["lock_ms"], r["polled_lock_ms"],
                     "yes" if (r["lock_ms"] or 1e9) < 100 else "NO", r["worst_stall_ms"], r["before_max_ms"],
                     "yes" if r["worst_stall_ms"] < 500 else "NO", r["failed"],
                     "%s / %s ms" % (lk.get("statements", "n/a"), fmt(lk.get("sum_ms")))])
        date = _date(r["facts"])
    return "Run of %s.\n\n" % date + md_table(
        ["server", "rows", "lock ms (switchover)", "lock ms (pg_locks poll)", "goal < 100 ms", "worst stall ms",
         "worst before the swap ms", "goal < 500 ms", "failed txns", "statements / server time under the lock"],
        rows)


def reports_block(data):
    from bench.reports_results import summary_block
    return summary_block(data)


DOCS = os.path.join(os.path.dirname(RESULTS_DIR), "..", "docs", "benchmarks.md")


def update_docs(blocks, path=DOCS):
    """Replace the text between ``<!-- results:NAME -->`` and ``<!-- /results:NAME -->`` in the docs."""
    if not os.path.exists(path):
        return False
    with open(path) as f:
        text = f.read()
    for name, block in blocks.items():
        start, end = "<!-- results:%s -->" % name, "<!-- /results:%s -->" % name
        if start in text and end in text:
            a = text.index(start) + len(start)
            b = text.index(end)
            text = text[:a] + "\n" + block.replace("IMGDIR", "../bench/results") + "\n" + text[b:]
    with open(path, "w") as f:
        f.write(text)
    return True


def write(outdir=RESULTS_DIR):
    parts = ["# Latest benchmark results", "",
             "Generated by `python -m bench` (bench/summary.py) from the JSON files beside it; "
             "method and caveats: docs/benchmarks.md.", ""]
    blocks = {}
    for name, title, fn in (("trigger", "1. Sync trigger overhead", trigger_block),
                            ("backfill", "2. Backfill", backfill_block),
                            ("switchover", "3. Switchover", switchover_block),
                            ("reports", "4. The first user's reports and retention", reports_block)):
        data = _load(outdir, name)
        blocks[name] = fn(data) if data else "Not run yet."
        parts += ["## " + title, "", blocks[name].replace("IMGDIR/", ""), ""]
    if os.path.abspath(outdir) == os.path.abspath(RESULTS_DIR):
        # Only a full run's results are quoted by the docs (not --quick, not a scratch --outdir).
        update_docs(blocks)
    path = os.path.join(outdir, "summary.md")
    os.makedirs(outdir, exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


if __name__ == "__main__":
    print(write(sys.argv[1] if len(sys.argv) > 1 else RESULTS_DIR))
