"""Rows in the default partition moved out online (maintain/default_move.py; issue 8), on real servers.

* under a live write load (writers inserting, updating and deleting, keys moving into and out of
  the ranges being created) the table ends exactly as the writers' log says, and a reader counting
  the rows that nobody touches, each count in its own snapshot, never sees one missing or doubled;
* the locks, read from pg_locks: a copy batch holds nothing that stops the application (an INSERT
  and an UPDATE go through while it is open); the swap holds ACCESS EXCLUSIVE for catalog work only,
  with no scan of any partition (the CHECKs spare the validation scans);
* a kill after every step, and inside the swap, is resumed by the next run with nothing lost,
  duplicated or left behind; check mode changes nothing;
* phase 1 run again on a twin whose default partition holds rows of a range it wants (issue 9,
  item 7) makes that partition, with the rows in it.
"""
import datetime
import functools
import random
import threading

import psycopg2
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.maintain import default_move, premake as premake_module
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates

from ..helpers.maintenance import make_table, partitions, rows, run_premake, spec_of, utc
from ..helpers.phase3_setup import run

NOW = utc(2025, 6, 2)
MOVED = ["ev_2025_08", "ev_2025_09"]             # premake 3 from June: 07 is free, 08 and 09 hold rows
STABLE = 600                                      # rows of 08 and 09 that no writer touches


def fill(conn):
    """ev: 2025-05, 2025-06 and a default partition holding STABLE rows of 08-09, 40 of October
    (outside premake: they stay) and one of 2031."""
    make_table(conn, periods=2, first=datetime.date(2025, 5, 1))
    run(conn, "INSERT INTO public.ev (k, note) SELECT '2025-08-01 00:00+00'::timestamptz + g * interval '2 hours', "
              "'stable' FROM generate_series(0, %d) g" % (STABLE - 1),
        "INSERT INTO public.ev (k, note) SELECT '2025-10-02 00:00+00'::timestamptz + g * interval '1 day', 'later' "
        "FROM generate_series(1, 40) g",
        "INSERT INTO public.ev (k, note) VALUES ('2031-01-01 00:00+00', 'far')")


def content(conn):
    return rows(conn, "SELECT id, k, note FROM public.ev ORDER BY id")


def placement(conn):
    return dict(rows(conn, "SELECT tableoid::regclass::text, count(*) FROM public.ev GROUP BY 1"))


def leftovers(conn):
    return rows(conn, "SELECT to_regclass('public.ev_move'), to_regclass('public.ev_default_moved'), "
                      "to_regclass('public.ev_default_new'), (SELECT count(*) FROM partitioning.default_moves), "
                      "(SELECT count(*) FROM pg_proc WHERE proname = 'public__ev_default__fwd')")[0]


def premake_with(monkeypatch, pg, db, **hooks):
    monkeypatch.setattr(premake_module, "move_out_of_default",
                        functools.partial(default_move.move_out_of_default, hooks=hooks))
    return run_premake(pg, db, spec_of(premake=3), NOW)


def assert_moved(conn, before):
    assert content(conn) == before
    where = placement(conn)
    assert where["ev_2025_08"] + where["ev_2025_09"] == STABLE and where["ev_default"] == 41, where
    assert sorted(partitions(conn)) == ["ev_2025_05", "ev_2025_06", "ev_2025_07", "ev_2025_08", "ev_2025_09",
                                        "ev_default"]
    assert leftovers(conn) == (None, None, None, 0, 0)


def test_moved_out_under_a_live_write_load_with_an_oracle_and_a_reader(pg, db, conn, monkeypatch):
    fill(conn)
    monkeypatch.setattr(default_move, "BATCH_ROWS", 50)          # many batches while the writers write
    stop = threading.Event()
    oracle, errors, counts = {}, [], []
    lock = threading.Lock()

    def writer(n):
        rnd = random.Random(n)
        c = pg.connect(db)
        c.autocommit = True
        mine = []
        try:
            while not stop.is_set():
                op = rnd.random()
                day = utc(2025, 6, 15) + datetime.timedelta(hours=rnd.randrange(0, 24 * 130))
                if rnd.random() < 0.05:
                    day = utc(2031, 3, 1)
                try:
                    cur = c.cursor()
                    if op < 0.45 or not mine:
                        cur.execute("INSERT INTO public.ev (k, note) VALUES (%s, %s) RETURNING id, k, note",
                                    (day, "w%d" % n))
                        row = cur.fetchone()
                        mine.append(row[0])
                    elif op < 0.75:        # the key moves: into, out of and between the ranges being made
                        cur.execute("UPDATE public.ev SET k = %s, note = note || '+' WHERE id = %s "
                                    "RETURNING id, k, note", (day, rnd.choice(mine)))
                        row = cur.fetchone()
                    elif op < 0.9:
                        cur.execute("UPDATE public.ev SET note = note || '.' WHERE id = %s RETURNING id, k, note",
                                    (rnd.choice(mine),))
                        row = cur.fetchone()
                    else:
                        victim = mine.pop(rnd.randrange(len(mine)))
                        cur.execute("DELETE FROM public.ev WHERE id = %s", (victim,))
                        row = (victim, None, None)
                    with lock:
                        if row[1] is None:
                            oracle.pop(row[0], None)
                        else:
                            oracle[row[0]] = row
                except psycopg2.Error as e:              # the application's write failed: never allowed
                    errors.append(repr(e))
                    return
        finally:
            c.close()

    def reader():
        c = pg.connect(db)
        c.autocommit = True
        try:
            while not stop.is_set():
                counts.append(rows(c, "SELECT count(*), count(DISTINCT id) FROM public.ev WHERE note = 'stable'")[0])
        finally:
            c.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(2)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    try:
        result = run_premake(pg, db, spec_of(premake=3), NOW)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert errors == []
    assert result["created"] == ["ev_2025_07"] + MOVED and result["blocked"] == [], result
    move = [s for s in result["steps"] if s["step"] == "move"]
    assert move and move[0]["status"] == "moved" and move[0]["lock_mode"] == "ACCESS EXCLUSIVE", move
    assert counts and set(counts) == {(STABLE, STABLE)}, sorted(set(counts))
    written = [r for r in content(conn) if r[2].startswith("w")]
    assert written == sorted(oracle.values()), "the table differs from the writers' log"
    assert rows(conn, "SELECT count(*) FROM public.ev_default WHERE k >= '2025-05-01' AND k < '2025-10-01'") == [(0,)]
    assert leftovers(conn) == (None, None, None, 0, 0)
    again = run_premake(pg, db, spec_of(premake=3), NOW)
    assert again["created"] == [] and not again["changed"], again


def test_locks_a_batch_blocks_no_write_and_the_swap_scans_nothing(pg, db, conn, monkeypatch):
    fill(conn)
    monkeypatch.setattr(default_move, "BATCH_ROWS", 100)
    before = content(conn)
    app = pg.connect(db)
    app.autocommit = True
    run(app, "SET lock_timeout = '5s'")           # a write that waited for the mover would fail here
    seen = {}

    def locks_of(session):
        return sorted(set(rows(conn, "SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                                     "WHERE l.pid = %s AND l.granted AND c.relname LIKE 'ev%%' AND c.relkind IN "
                                     "('r', 'p')", (session.conn.get_backend_pid(),))))

    def in_batch(session, move):
        if "batch" in seen:
            return
        seen["batch"] = locks_of(session)
        # while the batch is open the application inserts into the default partition and updates a row
        # of it that this batch does not copy
        run(app, "INSERT INTO public.ev (k, note) VALUES ('2025-08-20 00:00+00', 'during the copy')",
            "UPDATE public.ev SET note = 'stable' WHERE id = (SELECT max(id) FROM public.ev WHERE note = 'stable')")

    def verified(session, move):
        session.query("SET client_min_messages = debug1")     # ATTACH says whether it scans
        del session.conn.notices[:]

    def in_swap(session, move):
        seen["swap"] = locks_of(session)
        seen["attach"] = sorted(n.strip() for n in session.conn.notices if "partition constraint" in n
                                or "verifying table" in n)

    premake_with(monkeypatch, pg, db, batch=in_batch, verified=verified, swap=in_swap)
    app.close()
    # a batch: ACCESS SHARE and ROW SHARE (FOR SHARE of the rows it copies) on the default partition,
    # ROW EXCLUSIVE on the staging table it writes; nothing on ev itself
    assert seen["batch"] == [("ev_2025_08", "RowExclusiveLock"), ("ev_default", "AccessShareLock"),
                             ("ev_default", "RowShareLock"), ("ev_move", "RowExclusiveLock")], seen["batch"]
    swap = dict((rel, mode) for rel, mode in seen["swap"] if mode == "AccessExclusiveLock")
    # (names as another session reads them before the commit: the renames are the swap's own)
    assert sorted(swap) == ["ev", "ev_2025_08", "ev_2025_09", "ev_default", "ev_default_new", "ev_move"], seen["swap"]
    # no partition was read in the swap: the attached partitions' CHECKs spared every validation scan
    assert seen["attach"] == ['DEBUG:  partition constraint for table "%s" is implied by existing constraints' % name
                              for name in ("ev_2025_08", "ev_2025_09", "ev_default")], seen["attach"]
    after = content(conn)
    assert len(after) == len(before) + 1 and [r for r in after if r[2] == "during the copy"]
    assert placement(conn)["ev_2025_08"] + placement(conn)["ev_2025_09"] == STABLE + 1


class Killed(Exception):
    pass


@pytest.mark.parametrize("step", ["staged", "copying", "batch", "copied", "verified", "swap", "swapped"])
def test_killed_after_each_step_resumes(pg, db, conn, monkeypatch, step):
    fill(conn)
    monkeypatch.setattr(default_move, "BATCH_ROWS", 200)
    before = content(conn)

    def kill(session, move):
        raise Killed(step)
    with pytest.raises(Killed):
        premake_with(monkeypatch, pg, db, **{step: kill})
    run(conn, "INSERT INTO public.ev (k, note) VALUES ('2025-09-03 00:00+00', 'between the runs')")
    before = content(conn)
    result = premake_with(monkeypatch, pg, db)
    assert set(MOVED) <= set(result["created"]), result
    assert content(conn) == before
    where = placement(conn)
    assert where["ev_2025_08"] + where["ev_2025_09"] == STABLE + 1 and where["ev_default"] == 41, where
    assert leftovers(conn) == (None, None, None, 0, 0)


def test_check_mode_changes_nothing(pg, db, conn):
    fill(conn)
    before = content(conn), partitions(conn)
    result = run_premake(pg, db, spec_of(premake=3), NOW, check=True)
    assert result["created"] == ["ev_2025_07"] + MOVED and result["changed"], result
    assert [s["status"] for s in result["steps"] if s["step"] == "move"] == ["would_move", "would_move"]
    assert (content(conn), partitions(conn)) == before


def test_phase1_run_again_moves_the_twins_default_rows(pg, db, conn):
    """Issue 9, item 7: a row of the application in the twin's default partition, inside a range
    phase 1 wants, made every later phase 1 fail (``updated partition constraint for default
    partition ... would be violated``); now the range is made and the row moves into it. The other
    new partitions are made with maintenance's step (no ACCESS EXCLUSIVE on the twin the sync
    trigger writes), the moved range by the default move's staging table."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
    from ..helpers.phase3_setup import SPEC, make_prepared_real
    make_prepared_real(pg, db, rows=50)                      # twin: 2025-01 .. 2025-06 and a default partition
    run(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-09-10 00:00+00', 'eu', 1)")
    assert rows(conn, "SELECT count(*) FROM public.revenues_default") == [(1,)]
    session = Session(pg.connect(db))
    try:
        out = prepare_table(session, SqlTemplates.bundled(), normalize_spec(dict(SPEC)), "partitioning",
                            now=utc(2025, 10, 15))
    finally:
        session.close()
    assert [c for c in out["created"] if c.startswith("partition ")] == [
        "partition public.revenues_2025_07", "partition public.revenues_2025_08", "partition public.revenues_2025_10",
        "partition public.revenues_2025_09"]
    assert not any("default partition" in w for w in out["warnings"]), out["warnings"]
    assert rows(conn, "SELECT step, partition_name, lock_mode FROM partitioning.maintenance_steps ORDER BY id") == [
        ("create", n, "ACCESS EXCLUSIVE (default partition)") for n in ("revenues_2025_07", "revenues_2025_08",
                                                                        "revenues_2025_10")] + [
        ("move", "revenues_default", "ACCESS EXCLUSIVE")]
    assert not any(q.startswith("CREATE TABLE") and " PARTITION OF " in q and "_move" not in q
                   for q in session.queries)
    assert rows(conn, "SELECT tableoid::regclass::text FROM public.revenues_partitioned "
                      "WHERE occurred_at = '2025-09-10 00:00+00'") == [("revenues_2025_09",)]
    run(conn, "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-09-11 00:00+00', 'eu', 2)")
    assert rows(conn, "SELECT count(*) FROM public.revenues_2025_09") == [(2,)]     # the sync writes through it


def test_after_the_switchover_the_reverse_sync_follows_the_moved_rows(pg, db, conn):
    """During the soak the table's writes are mirrored into <table>_old by a row trigger (cloned on
    every partition) and a TRUNCATE trigger on each partition (HP20): the partitions the move attaches
    carry both, so the rows moved and the writes after them stay mirrored, and rollback stays exact."""
    from ..helpers.phase3_setup import make_verified
    from ..helpers.switchover import switch
    make_verified(pg, db, rows=200, extras=False)                # revenues: 2025-01 .. 2025-06 and a default
    switch(pg, db)
    run(conn, "INSERT INTO public.revenues (occurred_at, region, amount) SELECT '2025-07-01 00:00+00'::timestamptz "
              "+ g * interval '3 hours', 'eu', g FROM generate_series(1, 300) g")
    spec = normalize_spec(dict(table="public.revenues", partition_key="occurred_at", interval="monthly", premake=1))
    s = Session(pg.connect(db))
    try:
        result = premake_module.premake(s, SqlTemplates.bundled(), spec, "partitioning", now=utc(2025, 7, 20))
    finally:
        s.close()
    assert sorted(result["created"]) == ["revenues_2025_07", "revenues_2025_08"] and result["blocked"] == [], result
    assert rows(conn, "SELECT tableoid::regclass::text, count(*) FROM public.revenues WHERE occurred_at >= "
                      "'2025-07-01' GROUP BY 1 ORDER BY 1") == [("revenues_2025_07", 247), ("revenues_2025_08", 53)]
    triggers = rows(conn, "SELECT tgname, tgparentid <> 0 FROM pg_trigger WHERE tgrelid = "
                          "'public.revenues_2025_07'::regclass AND NOT tgisinternal ORDER BY 1")
    assert triggers == [("partitioning_sync", True), ("partitioning_sync_truncate", False)], triggers
    run(conn, "UPDATE public.revenues SET amount = amount + 1 WHERE occurred_at >= '2025-07-01'",
        "INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-07-30 00:00+00', 'us', 7)")
    same = "SELECT count(*) FROM ((TABLE public.revenues EXCEPT ALL TABLE public.revenues_old) UNION ALL " \
           "(TABLE public.revenues_old EXCEPT ALL TABLE public.revenues)) d"
    assert rows(conn, same) == [(0,)]
    run(conn, "TRUNCATE public.revenues_2025_07")
    assert rows(conn, same) == [(0,)]
    assert rows(conn, "SELECT count(*) FROM public.revenues_old WHERE occurred_at >= '2025-07-01' "
                      "AND occurred_at < '2025-08-01'") == [(0,)]


def test_a_default_partition_too_large_to_scan_is_rebuilt_instead(pg, db, conn):
    """A range with no row in the default partition, but a default partition too large for ATTACH to
    scan within the budget (premake's default_too_large): the move makes it all the same, and its
    swap scans nothing; the rows stay in the (new) default partition."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.maintain.target import resolve
    fill(conn)
    before = content(conn)
    s = Session(pg.connect(db))
    try:
        result = default_move.move_out_of_default(
            s, SqlTemplates.bundled(), resolve(s, spec_of(premake=3), "partitioning"),
            [dict(partition_name="ev_2025_07", lower_bound="2025-07-01 00:00:00+00",
                  upper_bound="2025-08-01 00:00:00+00", rows=0)], 200, state_schema="partitioning")
    finally:
        s.close()
    assert result["created"] == ["ev_2025_07"] and result["warnings"] == [], result
    assert content(conn) == before
    assert placement(conn)["ev_default"] == STABLE + 41
    assert leftovers(conn) == (None, None, None, 0, 0)


def test_a_column_added_during_the_move_restarts_it(pg, db, conn, monkeypatch):
    """The application's DDL reaches the default partition, not the staging table: the next run sees
    the drift, abandons the staged copy and moves again, the new column's values included."""
    fill(conn)

    def kill(session, move):
        raise Killed("copied")
    with pytest.raises(Killed):
        premake_with(monkeypatch, pg, db, copied=kill)
    run(conn, "ALTER TABLE public.ev ADD COLUMN extra text",
        "INSERT INTO public.ev (k, note, extra) VALUES ('2025-09-04 00:00+00', 'after the DDL', 'kept')")
    result = premake_with(monkeypatch, pg, db)
    assert any("the columns of public.ev changed since the move began" in w for w in result["warnings"]), result
    assert set(MOVED) <= set(result["created"]), result
    assert rows(conn, "SELECT tableoid::regclass::text, extra FROM public.ev WHERE note = 'after the DDL'") == [
        ("ev_2025_09", "kept")]
    assert placement(conn)["ev_2025_08"] + placement(conn)["ev_2025_09"] == STABLE + 1
    assert leftovers(conn) == (None, None, None, 0, 0)


def test_a_key_pending_at_the_swap_is_reconciled_first(pg, db, conn, monkeypatch):
    """A key a writer held when the batch or the reconcile met it stays in pending_keys: the swap
    refuses under its lock (rolled back), the key is reconciled, the swap runs again."""
    fill(conn)
    before = content(conn)
    seen = []

    def verified(session, move):
        # a stable row the copy missed (as if a writer held it), its key logged as a batch would
        run(conn, "DELETE FROM public.ev_move WHERE note = 'stable' AND id = (SELECT min(id) FROM public.ev_default)",
            "INSERT INTO partitioning.pending_keys (table_name, pk, reason) SELECT 'public.ev (default move)', "
            "jsonb_build_object('id', id, 'k', k), 'batch-skipped' FROM public.ev_default WHERE id = "
            "(SELECT min(id) FROM public.ev_default)")

    def swap(session, move):
        seen.append(rows(conn, "SELECT count(*) FROM partitioning.pending_keys")[0][0])
    result = premake_with(monkeypatch, pg, db, verified=verified, swap=swap)
    assert set(MOVED) <= set(result["created"]) and seen == [0], (result, seen)
    assert content(conn) == before
    assert placement(conn)["ev_2025_08"] + placement(conn)["ev_2025_09"] == STABLE
