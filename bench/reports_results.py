"""The report benchmark's results: ``reports.md``, ``reports.json``, ``reports_plans.md``, ``reports.png``
and its block of ``summary.md``. Reads what bench/reports.py measured; measures nothing."""
import json

from bench import common
from bench import seed_revenues as seed
from bench.common import fmt, log, md_table
from bench.reports import MODES, PARTITIONED, PLAIN

CASE_LABELS = {
    "daily": "daily report, org 1 (biggest)",
    "daily_mid_org": "daily report, org 1000",
    "monthly": "monthly report, org 1 (biggest)",
    "monthly_mid_org": "monthly report, org 1000",
    "cross_org": "cross-org quarterly analytics",
}
MODE_LABELS = {"literal": "literal", "prepared": "prepared (auto)",
               "prepared_custom": "prepared, force_custom_plan"}
STAGES = (("phase3", "partitioned"), ("phase4", "partitioned + phase 4"), ("control", "plain + the same indexes"))


def target_ms(case):
    return seed.TARGET_MS[dict((c[0], c[1]) for c in seed.CASES)[case]]


def _x(value):
    return "%s×" % fmt(value, 2)


def _spread(m):
    return "%s (%s–%s)" % (_x(m["ratio"]), fmt(m["ratio_min"], 2), fmt(m["ratio_max"], 2))


def _mb(n):
    return n / 1048576.0 if n is not None else None


def latency_table(r):
    """What the application sees: ms per query, the ratios with their spread, the targets."""
    rows = []
    for case, _report, _params in seed.CASES:
        for mode in MODES:
            p3, p4, ctl = (r[stage][case][mode] for stage, _label in STAGES)
            rows.append([CASE_LABELS[case], MODE_LABELS[mode], p3["base_ms"], p3["other_ms"], _spread(p3),
                         p4["other_ms"],
                         _spread(p4), _spread(ctl), _met(case, p3["base_ms"], p3["other_ms"], p4["other_ms"])])
    return md_table(["report", "sent", "plain ms", "partitioned ms", "plain ÷ partitioned (spread)",
                     "+ phase 4 ms", "plain ÷ partitioned + phase 4 (spread)",
                     "plain + the same indexes ÷ partitioned + phase 4 (spread)",
                     "target met: plain / partitioned / + phase 4"], rows)


def _met(case, *latencies):
    target = target_ms(case)
    return "< %d ms: %s" % (target, " / ".join("yes" if ms < target else "**no**" for ms in latencies))


def cpu_table(r):
    """The server's CPU time per query: the same ratios without the machine's load."""
    rows = []
    for case, _report, _params in seed.CASES:
        for mode in MODES:
            p3, p4, ctl = (r[stage][case][mode] for stage, _label in STAGES)
            workers = max(r["plans"][stage][case][side][mode]["workers"]
                          for stage, sides in (("phase3", ("plain", "partitioned")),
                                               ("phase4", ("partitioned + phase 4",)),
                                               ("control", ("plain + the same indexes",))) for side in sides)
            rows.append([CASE_LABELS[case], MODE_LABELS[mode], p3["base_cpu_ms"], p3["other_cpu_ms"],
                         _x(p3["cpu_ratio"]),
                         p4["other_cpu_ms"], _x(p4["cpu_ratio"]), ctl["base_cpu_ms"], _x(ctl["cpu_ratio"]),
                         "%d planned: the leader's CPU only" % workers if workers else "none"])
    return md_table(["report", "sent", "plain ms", "partitioned ms", "plain ÷ partitioned", "+ phase 4 ms",
                     "plain ÷ partitioned + phase 4", "plain + the same indexes ms",
                     "plain + the same indexes ÷ partitioned + phase 4", "parallel workers"], rows)


def _plan_kind(kinds, case, table):
    k = kinds.get("r_%s_%s_prepared" % (case, table[1])) or {}
    if k.get("generic") is None:
        return "?"
    return "generic" if k["generic"] > k["custom"] else "custom"


def planning_table(r):
    rows = []
    for case, _report, _params in seed.CASES:
        p3, p4 = r["phase3"][case]["planning"], r["phase4"][case]["planning"]
        pl = r["plans"]["phase3"][case]
        kinds3, kinds4 = r["phase3"]["plan_kinds"], r["phase4"]["plan_kinds"]
        prep = pl["partitioned"]["prepared"]
        rows.append([CASE_LABELS[case], p3["base_ms"], p3["other_ms"], p4["other_ms"],
                     ", ".join(pl["partitioned"]["literal"]["relations"]),
                     "%s / %s / %s" % (_plan_kind(kinds3, case, PLAIN), _plan_kind(kinds3, case, PARTITIONED),
                                       _plan_kind(kinds4, case, PARTITIONED)),
                     "%d scanned, %d removed at executor start" % (len(prep["relations"]), prep["subplans_removed"])])
    return md_table(["report", "planning ms plain", "planning ms partitioned", "planning ms + phase 4",
                     "partitions scanned (literal)", "prepared: plan plain / partitioned / + phase 4",
                     "prepared, partitioned: partitions"], rows)


SIDES = (("plain", "plain table"), ("partitioned", "partitioned (phases 1-3)"), ("phase4", "partitioned + phase 4"),
         ("plain_same_indexes", "plain + the same indexes (control)"))


def sizes_table(r):
    rows = []
    for side, label in SIDES:
        s = r["sizes"][side]
        for ix in s["indexes"]:
            rows.append([label, ix["index"], _definition(ix), ix["leaves"] or "",
                         _mb(ix["bytes"])])
        rows.append([label, "**all indexes**", "", "", _mb(s["index_total"])])
        rows.append([label, "heap (with TOAST, FSM, VM)", "", "", _mb(s["heap"])])
    return md_table(["side", "index", "definition", "partitions", "MB"], rows)


def _definition(index):
    """``btree (id, occurred_at)`` of an index's ``CREATE INDEX … USING btree (id, occurred_at)``."""
    return index["definition"].split(" USING ", 1)[-1]


def pkey_growth(r):
    plain = r["sizes"]["plain"]["indexes"][0]
    part = r["sizes"]["partitioned"]["indexes"][0]
    return dict(plain_mb=_mb(plain["bytes"]), partitioned_mb=_mb(part["bytes"]),
                ratio=common.ratio(part["bytes"], plain["bytes"]), plain=_definition(plain),
                partitioned=_definition(part), index_ratio=common.ratio(r["sizes"]["partitioned"]["index_total"], r["sizes"]["plain"]["index_total"]))


def retention_table(r):
    rows = []
    for s in r["retention"]["steps"]:
        rows.append([s["quarter"], s["rows"], s["delete_s"], _mb(s["delete_wal"]), s["vacuum_s"], _mb(s["vacuum_wal"]),
                     s["drop_s"], _mb(s["drop_wal"]), _x(common.ratio(s["delete_s"] + s["vacuum_s"], s["drop_s"])),
                     _x(common.ratio(s["delete_wal"] + s["vacuum_wal"], s["drop_wal"]))])
    t = r["retention"]["total"]
    rows.append(["**the year**", t["rows"], t["delete_s"], _mb(t["delete_wal"]), t["vacuum_s"], _mb(t["vacuum_wal"]),
                 t["drop_s"], _mb(t["drop_wal"]), _x(t["time_ratio"]), _x(t["wal_ratio"])])
    return md_table(["removed", "rows", "DELETE s", "DELETE WAL MB", "VACUUM s", "VACUUM WAL MB",
                     "detach + drop s", "detach + drop WAL MB", "(DELETE + VACUUM) ÷ (detach + drop), time",
                     "the same, WAL"], rows)


def _yaml_scalar(value):
    text = str(value)
    return text if text.isidentifier() else json.dumps(text)


def indexes_yaml(indexes):
    """The spec's ``indexes:`` key as an operator writes it (JSON strings are YAML scalars)."""
    lines = ["indexes:"]
    for ix in indexes:
        for n, (key, value) in enumerate(ix.items()):
            if isinstance(value, list):
                value = "[%s]" % ", ".join(_yaml_scalar(v) for v in value)
            elif isinstance(value, dict):
                value = "{%s}" % ", ".join("%s: %s" % (k, _yaml_scalar(v)) for k, v in value.items())
            else:
                value = _yaml_scalar(value)
            lines.append("%s%s: %s" % ("  - " if n == 0 else "    ", key, value))
    return "\n".join(lines) + "\n"


def plans_markdown(results):
    out = ["# Plans of the report queries (make bench, issue 8)", "",
           "`EXPLAIN (ANALYZE, BUFFERS)` of each report on each side, sent both ways (literal: values in the "
           "text; prepared: `EXECUTE` after six runs, when PostgreSQL may have chosen a generic plan that "
           "prunes at executor start: `Subplans Removed`; prepared_custom: the same with "
           "`plan_cache_mode = force_custom_plan`). Written by bench/reports_results.py.", ""]
    for major, r in sorted(results.items(), reverse=True):
        for case, report, params in seed.CASES:
            out += ["## PostgreSQL %d: %s" % (major, CASE_LABELS[case]), "",
                    "```sql", seed.REPORTS[report][0].strip(), "```", "",
                    "Parameters: %s" % ", ".join(str(p) for p in params), ""]
            plans = {}
            for stage in ("phase3", "phase4", "control"):
                plans.update(r["plans"][stage][case])
            for side, by_mode in plans.items():
                for mode, p in by_mode.items():
                    out += ["### %s, %s" % (side, MODE_LABELS[mode]), "", "```", p["text"], "```", ""]
    return "\n".join(out)


def _without_plan_text(plans):
    return dict((case, dict((side, dict((mode, dict((k, v) for k, v in p.items() if k != "text"))
                                        for mode, p in by_mode.items())) for side, by_mode in sides.items()))
                for case, sides in plans.items())


def report(results, opts, method, plans=True):
    sections = []
    for major, r in sorted(results.items(), reverse=True):
        pk = pkey_growth(r)
        t = r["retention"]["total"]
        sections += [
            ("Reports: latency (PostgreSQL %d)" % major,
             "What the application sees: median ms over %d alternated rounds, warm (each round: every statement "
             "run at least %d times, fast ones up to 200, median). Ratio = plain ÷ partitioned of the medians "
             "(> 1: partitioning is faster); spread = the range of the per-round ratios. The control runs the "
             "same alternation with phase 4's indexes built on the plain table too.\n\n"
             % (r["facts"]["rounds"], r["facts"]["reps"]) + latency_table(r)),
            ("Reports: server CPU per query (PostgreSQL %d)" % major,
             "The same runs measured by the CPU time of the server backend (`/proc/<pid>/schedstat`), which the "
             "machine's load does not inflate (the latency includes waiting for a CPU).\n\n" + cpu_table(r)),
            ("Planning and pruning (PostgreSQL %d)" % major,
             "Planning time alone (`EXPLAIN (SUMMARY)`, median over rounds), the partitions each plan scans, and "
             "the plan PostgreSQL settled on for the prepared statements (generic: planned once, pruned at "
             "executor start; custom: planned at every execution). The plans: "
             "[reports_plans.md](reports_plans.md).\n\n" + planning_table(r)),
            ("Index sizes (PostgreSQL %d)" % major,
             "The primary key grows by the partition key: `%s` → `%s`, %s MB → %s MB (%s); all indexes %s. "
             "B-tree levels (the deepest partition for the partitioned side): plain %s; partitioned %s.\n\n" % (
                 pk["plain"], pk["partitioned"], fmt(pk["plain_mb"], 1), fmt(pk["partitioned_mb"], 1),
                 _x(pk["ratio"]), _x(pk["index_ratio"]), r["btree_levels"]["plain"],
                 r["btree_levels"]["partitioned"]) + sizes_table(r)),
            ("Phase 4's indexes (PostgreSQL %d)" % major,
             "Built online in %.0f s by %s. As the table spec's `indexes:` key:\n\n```yaml\n%s```"
             % (r["phase4_s"], r["phase4_by"], indexes_yaml(r["phase4_indexes"]))),
            ("Removing a year (PostgreSQL %d)" % major,
             "%d rows of %d, one quarter per step, the two sides alternated; `full_page_writes` on, a CHECKPOINT "
             "before each step; the partitions removed by %s. Time ratio over the steps: %s–%s.\n\n"
             % (t["rows"], r["facts"]["rows"], r["retention"].get("by", "DETACH + DROP"), fmt(t["time_ratio_min"], 0),
                fmt(t["time_ratio_max"], 0))
             + retention_table(r)),
            ("Setup (PostgreSQL %d)" % major, "\n".join(
                "- %s: %s" % (k, v) for k, v in sorted(list(r["facts"].items()) + [
                    ("build", ", ".join("%s %s" % (k, fmt(v)) for k, v in sorted(r["build"].items())))])))]
    sections.append(("Method", method.strip()))
    data = {}
    for major, r in results.items():
        data[str(major)] = dict(r, plans=dict((stage, _without_plan_text(p)) for stage, p in r["plans"].items()))
    common.write_result(opts.outdir, "reports", "The first user's reports, before and after partitioning "
                                                "(make bench, issue 8)", sections, data)
    if plans:
        with open("%s/reports_plans.md" % opts.outdir, "w") as f:
            f.write(plans_markdown(results))
    plot(results, opts)


def summary_block(data):
    """``summary.md``'s block (bench/summary.py): the headline ratios of the latest run."""
    out = []
    for major, r in sorted(data.items(), key=lambda kv: -int(kv[0])):
        rows = []
        for case, _report, _params in seed.CASES:
            p3, p4, ctl = (r[stage][case]["literal"] for stage, _label in STAGES)
            rows.append([CASE_LABELS[case], p3["base_ms"], p3["other_ms"], p4["other_ms"],
                         _met(case, p3["base_ms"], p3["other_ms"], p4["other_ms"]), _spread(p3), _spread(p4),
                         _x(p3["cpu_ratio"]), _x(p4["cpu_ratio"]), _x(ctl["cpu_ratio"])])
        pk = pkey_growth(r)
        t = r["retention"]["total"]
        out.append("Run of %s, PostgreSQL %s, %d rows (load average at the start %s). Literal queries (values in "
                   "the statement text); latency in ms (median) and its ratios with their spread, then the ratios of "
                   "the server's CPU time per query (the load-independent measure); prepared statements, plans and "
                   "the control in reports.md.\n\n" % (
                       r["facts"]["date"], major, r["facts"]["rows"], r["facts"]["loadavg_at_start"]) + md_table(
            ["report", "plain ms", "partitioned ms", "+ phase 4 ms", "target met: plain / partitioned / + phase 4",
             "latency plain ÷ partitioned (spread)",
             "÷ partitioned + phase 4 (spread)", "CPU plain ÷ partitioned", "CPU ÷ partitioned + phase 4",
             "CPU plain + the same indexes ÷ partitioned + phase 4"], rows)
            + "\n\nRemoving a year (%d rows): DELETE + VACUUM ÷ detach + drop: %s the time, %s the WAL. Primary key "
              "`%s` → `%s`: %s the size; all indexes %s.\n\n![reports](IMGDIR/reports.png)" % (
                  t["rows"], _x(t["time_ratio"]), _x(t["wal_ratio"]), pk["plain"], pk["partitioned"], _x(pk["ratio"]),
                  _x(pk["index_ratio"])))
    return "\n\n".join(out)


def plot(results, opts):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    major, r = sorted(results.items(), reverse=True)[0]
    fig, (ax, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw=dict(width_ratios=[3.2, 0.8, 0.8]))
    cases = [c[0] for c in seed.CASES]
    width = 0.27
    series = (("plain", [r["phase3"][c]["literal"]["base_ms"] for c in cases]),
              ("partitioned", [r["phase3"][c]["literal"]["other_ms"] for c in cases]),
              ("partitioned + phase 4", [r["phase4"][c]["literal"]["other_ms"] for c in cases]))
    for i, (label, values) in enumerate(series):
        ax.bar([j + (i - 1) * width for j in range(len(cases))], values, width, label=label)
    for j, c in enumerate(cases):
        ax.hlines(target_ms(c), j - 1.5 * width, j + 1.5 * width, colors="red", linestyles="dashed", lw=1)
        top = max(v[j] for _label, v in series)
        ax.text(j, top * 1.25, "%s / %s" % (_x(r["phase3"][c]["literal"]["ratio"]),
                                             _x(r["phase4"][c]["literal"]["ratio"])), ha="center", fontsize=7)
    ax.set_yscale("log")
    ax.set_xticks(range(len(cases)))
    ax.set_xticklabels([CASE_LABELS[c].replace(", ", "\n") for c in cases], fontsize=7)
    ax.set_ylabel("latency ms (median, warm; log scale)")
    ax.set_title("PostgreSQL %d, %d rows. Labels: plain ÷ partitioned / plain ÷ partitioned + phase 4; red: target"
                 % (major, r["facts"]["rows"]), fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    t = r["retention"]["total"]
    for axis, values, unit, title in ((ax2, [t["delete_s"] + t["vacuum_s"], t["drop_s"]], "s", "time"),
                                      (ax3, [_mb(t["delete_wal"] + t["vacuum_wal"]), _mb(t["drop_wal"])], "MB",
                                       "WAL")):
        axis.bar([0, 1], values, color=["tab:blue", "tab:green"])
        for j, v in enumerate(values):
            axis.text(j, v * 1.2, "%s %s" % (fmt(v, 1), unit), ha="center", fontsize=7)
        axis.set_yscale("log")
        axis.set_ylim(min(values) / 5, max(values) * 5)
        axis.set_xticks([0, 1])
        axis.set_xticklabels(["DELETE\n+ VACUUM", "detach\n+ drop"], fontsize=7)
        axis.set_title("Removing a year: %s\n(%s)" % (title, _x(values[0] / values[1] if values[1] else None)),
                       fontsize=9)
    fig.tight_layout()
    path = "%s/reports.png" % opts.outdir
    fig.savefig(path, dpi=90)
    plt.close(fig)
    log("wrote %s" % path)


if __name__ == "__main__":
    # ``python -m bench.reports_results [DIR]``: reports.md and the plot again from reports.json
    # (the plans' text is not in the JSON: reports_plans.md stays as the run wrote it).
    import sys
    import types
    from bench import reports
    outdir = sys.argv[1] if len(sys.argv) > 1 else common.RESULTS_DIR
    with open("%s/reports.json" % outdir) as f:
        loaded = dict((int(k), v) for k, v in json.load(f).items())
    report(loaded, types.SimpleNamespace(outdir=outdir), reports.__doc__, plans=False)
