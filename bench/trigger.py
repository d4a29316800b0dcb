"""Benchmark 1 (issue 2): what the sync trigger costs the application's writes.

pgbench runs single-row INSERTs and single-row UPDATEs (random ids) against a
revenues-like table in three variants, alternated round by round on one server:

  none     no trigger
  ours     the collection's sync trigger as phase 1 installs it for a role that may create the DDL
           guard (event trigger): the fast body
  guarded  the same function's guarded body (a BEGIN ... EXCEPTION block: what a table owner
           without superuser runs, and what the guard swaps in after DDL)
  hand     a minimal hand-written PL/pgSQL dual-write trigger
           (INSERT ... ON CONFLICT / UPDATE / DELETE into the twin)

Reported: tps ratios ours/none, hand/none and ours/hand (goal: ours/hand >= 0.90).
"""
from psycopg2 import sql

from bench import common, product, schema
from bench.common import PgbenchRun, fmt, log, md_table, median, ratio

VARIANTS = ["none", "ours", "guarded", "hand"]
WORKLOADS = {"insert": schema.INSERT_SCRIPT, "update": schema.UPDATE_SCRIPT}


def handwritten_function_sql():
    cols = [sql.Identifier(c) for c in schema.COLUMN_NAMES]
    new_cols = sql.SQL(", ").join(sql.SQL("NEW.{}").format(c) for c in cols)
    col_list = sql.SQL(", ").join(cols)
    return sql.SQL("""
CREATE OR REPLACE FUNCTION public.bench_handwritten_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO public.revenues_partitioned ({cols}) VALUES ({new})
            ON CONFLICT (id, occurred_at) DO NOTHING;
    ELSIF TG_OP = 'UPDATE' THEN
        UPDATE public.revenues_partitioned SET ({cols}) = ROW({new})
         WHERE id = OLD.id AND occurred_at = OLD.occurred_at;
    ELSE
        DELETE FROM public.revenues_partitioned WHERE id = OLD.id AND occurred_at = OLD.occurred_at;
    END IF;
    RETURN NULL;
END
$$""").format(cols=col_list, new=new_cols)


class TriggerSwitch:
    """Puts exactly one variant's triggers on the table (no disabled leftovers)."""

    def __init__(self, conn):
        self.conn = conn
        cur = conn.cursor()
        # Our triggers as the product created them, to re-create them verbatim.
        cur.execute("SELECT tgname, pg_get_triggerdef(oid), tgenabled FROM pg_trigger "
                    "WHERE tgrelid = 'public.revenues'::regclass AND NOT tgisinternal AND tgname LIKE 'partitioning%' "
                    "ORDER BY tgname")
        self.ours = cur.fetchall()
        if not any(name == "partitioning_sync" for name, _d, _e in self.ours):
            raise RuntimeError("the sync trigger partitioning_sync is not on public.revenues")
        cur.execute(handwritten_function_sql())
        # the guarded body: the fast function's guarded twin (sync.guarded_name), or the function
        # itself when phase 1 could not create the DDL guard
        cur.execute("SELECT coalesce(to_regprocedure('partitioning.public__revenues__fwg()'), "
                    "to_regprocedure('partitioning.public__revenues__fwd()'))::text")
        self.guarded = cur.fetchone()[0]

    def _clear(self):
        cur = self.conn.cursor()
        for name, _d, _e in self.ours:
            cur.execute(sql.SQL("DROP TRIGGER IF EXISTS {} ON public.revenues").format(sql.Identifier(name)))
        cur.execute("DROP TRIGGER IF EXISTS bench_handwritten_sync ON public.revenues")
        cur.execute("DROP TRIGGER IF EXISTS bench_guarded_sync ON public.revenues")

    def set(self, variant):
        self._clear()
        cur = self.conn.cursor()
        if variant == "ours":
            for name, definition, enabled in self.ours:
                cur.execute(definition)
                if enabled == "A":
                    cur.execute(sql.SQL("ALTER TABLE public.revenues ENABLE ALWAYS TRIGGER {}").format(
                        sql.Identifier(name)))
        elif variant == "guarded":
            cur.execute("CREATE TRIGGER bench_guarded_sync AFTER INSERT OR UPDATE OR DELETE ON public.revenues "
                        "FOR EACH ROW EXECUTE FUNCTION %s" % self.guarded)
        elif variant == "hand":
            cur.execute("CREATE TRIGGER bench_handwritten_sync AFTER INSERT OR UPDATE OR DELETE ON public.revenues "
                        "FOR EACH ROW EXECUTE FUNCTION public.bench_handwritten_sync()")
        cur.execute("CHECKPOINT")


def build(srv, dbname, rows):
    """Original + twin holding the same rows (as after a backfill) + our sync trigger."""
    conn = srv.connect(dbname)
    cur = conn.cursor()
    schema.create_original(cur, rows)
    how = product.phase1(conn)
    schema.copy_all_to_twin(cur)
    return conn, how


def run(servers, opts):
    results = {}
    for major, srv in servers.each(opts.versions, "trigger"):
        results[major] = run_on(srv, opts)
    if not results:
        raise common.Skip("no PostgreSQL server available")
    report(results, opts)
    return results


def run_on(srv, opts):
    dbname = "bench_trigger"
    common.fresh_database(srv, dbname)
    log("trigger: PostgreSQL %d, %d rows, %d clients, %ss x %d rounds" % (
        srv.major, opts.trigger_rows, opts.clients, opts.duration, opts.rounds))
    conn, how = build(srv, dbname, opts.trigger_rows)
    switch = TriggerSwitch(conn)
    facts = common.setup_facts(srv, conn, rows=opts.trigger_rows, clients=opts.clients,
                               threads=min(opts.clients, 2), duration_s=opts.duration, rounds=opts.rounds,
                               twin_built_by=how, sync_function=product.sync_function_source(conn))
    samples = {(v, w): [] for v in VARIANTS for w in WORKLOADS}
    runs = []
    for rnd, order in enumerate(common.rotations(VARIANTS, opts.rounds)):
        for variant in order:
            switch.set(variant)
            for workload, script in WORKLOADS.items():
                res = PgbenchRun(srv, dbname, {workload: script}, clients=opts.clients, duration=opts.duration,
                                 defines={"maxid": opts.trigger_rows}).run()
                samples[(variant, workload)].append(res["tps"])
                runs.append(dict(round=rnd, variant=variant, workload=workload, tps=res["tps"],
                                 failed=res["failed"]))
                log("trigger pg%d round %d %-4s %-6s %8.1f tps" % (srv.major, rnd, variant, workload, res["tps"]))
    server_side = server_side_costs(conn, switch, opts)
    switch.set("ours")
    conn.close()
    med = {k: median(v) for k, v in samples.items()}
    ratios, of_medians = {}, {}
    pairs = (("ours_none", "ours", "none"), ("hand_none", "hand", "none"), ("ours_hand", "ours", "hand"),
             ("guarded_hand", "guarded", "hand"))
    for w in WORKLOADS:
        # Headline: the median over rounds of the ratio within each round (paired: the two
        # runs of a round are minutes apart, so slow drift of the machine cancels out).
        ratios[w] = dict((name, median([ratio(samples[(a, w)][i], samples[(b, w)][i]) for i in range(opts.rounds)]))
                         for name, a, b in pairs)
        of_medians[w] = dict((name, ratio(med[(a, w)], med[(b, w)])) for name, a, b in pairs)
    return dict(facts=facts, median_tps={"%s/%s" % k: v for k, v in med.items()}, ratios=ratios,
                ratios_of_medians=of_medians, runs=runs, server_side=server_side)


SERVER_SIDE_SQL = {
    "insert": """DO $$ BEGIN FOR i IN 1..{n} LOOP
        INSERT INTO public.revenues (org_id, property_id, amount_cents, payment_mode, status, description, category,
                                     occurred_at)
        VALUES (i % 1000 + 1, i % 5000 + 1, i, 'card', 'paid', 'bench loop', 'rent',
                timestamptz '2024-01-01 00:00:00+00' + (i * 3517 % 63000000) * interval '1 second');
    END LOOP; END $$""",
    "update": """DO $$ BEGIN FOR i IN 1..{n} LOOP
        UPDATE public.revenues SET amount_cents = amount_cents + 1, status = 'pending', updated_at = now()
         WHERE id = (i * 7919) % {rows} + 1;
    END LOOP; END $$""",
}


def server_side_costs(conn, switch, opts):
    """The same writes from a PL/pgSQL loop in one session: no client, no network, no
    pgbench threads competing for the 2 cores, so far less noise. Reports microseconds per row
    of each variant and what the trigger adds to 'none'. ours/hand is the median over rounds of
    the ratio within each round (paired, like the pgbench figures): a shared machine's slow drift
    cancels out of each pair."""
    import time as _time
    # about a second per loop: a loop of a few milliseconds' writes (3000 rows, the earlier
    # size) moved by tens of percent with any other process's burst of work
    n = max(100, min(20000, opts.trigger_rows // 5))
    cur = conn.cursor()
    per_row = {(v, w): [] for v in VARIANTS for w in WORKLOADS}
    for order in common.rotations(VARIANTS, max(4, opts.rounds)):
        for v in order:
            switch.set(v)
            for w, text in SERVER_SIDE_SQL.items():
                t0 = _time.monotonic()
                cur.execute(text.format(n=int(n), rows=int(opts.trigger_rows)))
                per_row[(v, w)].append((_time.monotonic() - t0) * 1e6 / n)
    med = {k: median(x) for k, x in per_row.items()}
    out = dict(rows_per_loop=n, us_per_row={"%s/%s" % k: v for k, v in med.items()}, added_us={}, ours_hand={},
               guarded_hand={})
    for w in WORKLOADS:
        ours = med[("ours", w)] - med[("none", w)]
        hand = med[("hand", w)] - med[("none", w)]
        out["added_us"][w] = dict(ours=ours, hand=hand)
        out["ours_hand"][w] = median([ratio(h, o) for o, h in zip(per_row[("ours", w)], per_row[("hand", w)])])
        out["guarded_hand"][w] = median([ratio(h, g) for g, h in zip(per_row[("guarded", w)], per_row[("hand", w)])])
    log("trigger server-side: " + "; ".join("%s: none %.1f ours %.1f hand %.1f us/row" % (
        w, med[("none", w)], med[("ours", w)], med[("hand", w)]) for w in WORKLOADS))
    return out


def report(results, opts):
    sections = []
    summary_rows = []
    for major, r in sorted(results.items(), reverse=True):
        for w, rt in r["ratios"].items():
            summary_rows.append(["PostgreSQL %d" % major, w, r["median_tps"]["none/" + w], r["median_tps"]["ours/" + w],
                                 r["median_tps"]["hand/" + w], rt["ours_none"], rt["hand_none"], rt["ours_hand"],
                                 rt["guarded_hand"]])
    sections.append(("Result", md_table(
        ["server", "workload", "tps none", "tps ours", "tps hand", "ours/none", "hand/none", "ours/hand",
         "guarded/hand"], summary_rows) +
        "\n\ntps: medians over rounds. Ratios: median over rounds of the ratio within each round (paired). "
        "Ratios of the medians, for comparison: " + "; ".join(
            "PG%d %s ours/none %s hand/none %s ours/hand %s" % (
                major, w, fmt(rm["ours_none"]), fmt(rm["hand_none"]), fmt(rm["ours_hand"]))
            for major, r in sorted(results.items(), reverse=True) for w, rm in r["ratios_of_medians"].items()) + "."))
    srows = []
    for major, r in sorted(results.items(), reverse=True):
        ss = r.get("server_side")
        if not ss:
            continue
        for w in WORKLOADS:
            srows.append(["PostgreSQL %d" % major, w, ss["us_per_row"]["none/" + w], ss["us_per_row"]["ours/" + w],
                          ss["us_per_row"]["hand/" + w], ss["us_per_row"]["guarded/" + w], ss["added_us"][w]["ours"],
                          ss["added_us"][w]["hand"], ss["ours_hand"][w], ss["guarded_hand"][w],
                          "yes" if ss["ours_hand"][w] and ss["ours_hand"][w] >= 1.0 else "NO"])
    if srows:
        sections.append(("Server side: the same writes from a PL/pgSQL loop (one session, no client)", md_table(
            ["server", "workload", "us/row none", "us/row ours", "us/row hand", "us/row guarded", "added by ours",
             "added by hand", "ours/hand (rows/s)", "guarded/hand (rows/s)", "ours costs no more than hand"], srows) + "\n\nMedians over alternated rounds; each loop writes %s rows." %
            next(iter(results.values()))["server_side"]["rows_per_loop"]))
    for major, r in sorted(results.items(), reverse=True):
        f = r["facts"]
        sections.append(("Setup (PostgreSQL %d)" % major, "\n".join("- %s: %s" % (k, v) for k, v in sorted(f.items()))))
        sections.append(("Runs (PostgreSQL %d), in the order they ran" % major, md_table(
            ["round", "variant", "workload", "tps", "failed"],
            [[x["round"], x["variant"], x["workload"], x["tps"], x["failed"]] for x in r["runs"]])))
    sections.append(("Method", __doc__.strip() + "\n\nEach pgbench run: `-n -c clients -j min(clients, 2) -T duration`, "
                     "one script per run. Variants rotate every round (none ours hand, ours hand none, ...); "
                     "a CHECKPOINT precedes each variant. Figures are medians over rounds."))
    common.write_result(opts.outdir, "trigger", "Sync trigger overhead (make bench, issue 2)", sections,
                        {str(k): v for k, v in results.items()})
    plot(results, opts)


def plot(results, opts):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (major, r) in zip(axes[0], sorted(results.items(), reverse=True)):
        ws = list(WORKLOADS)
        width = 0.2
        for i, v in enumerate(VARIANTS):
            vals = [r["median_tps"]["%s/%s" % (v, w)] or 0 for w in ws]
            ax.bar([j + (i - 1.5) * width for j in range(len(ws))], vals, width, label=v)
        ax.set_xticks(range(len(ws)))
        ax.set_xticklabels(ws)
        ax.set_ylabel("tps (median)")
        ax.set_title("PostgreSQL %d: %s" % (major, ", ".join(
            "%s ours/hand %s" % (w, fmt(r["ratios"][w]["ours_hand"], 2)) for w in ws)), fontsize=9)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = "%s/trigger.png" % opts.outdir
    fig.savefig(path, dpi=90)
    plt.close(fig)
    log("wrote %s" % path)
