"""Phase 2 backfill: exact copies, keyset order on simple and composite keys, workers, resume."""
from ..helpers import backfill_driver as drv
from ..helpers.phase2_setup import TABLE, assert_equal_tables, context, make_prepared, next_batch, run, scalar, session, state_row


def test_backfill_copies_every_row_exactly(pg, db, conn):
    make_prepared(pg, db, rows=3000)
    totals = drv.copy(pg, db, batch_size=700)
    assert totals["done"]
    assert_equal_tables(conn)
    row = state_row(conn)
    assert row["phase"] == "copied"
    assert row["rows_copied"] == 3000
    assert row["batches"] == 5  # 700 * 4 + 200, the last batch ends short
    assert row["backfill_finished_at"]


def test_integer_keys_with_a_gap_and_a_denser_stretch_copy_exactly(pg, db, conn):
    """Batches after the first reckon their upper key from the previous batch's density
    (batch.span_upper). A gap makes a batch miss its aim, and the next one reads its upper key
    again instead of walking the gap; a stretch denser than reckoned makes a batch reach its cap
    (twice its limit), roll back and read its upper key."""
    make_prepared(pg, db, rows=6000)
    run(conn, "DELETE FROM public.revenues WHERE id BETWEEN 1201 AND 3000",       # a gap
        "DELETE FROM public.revenues WHERE id <= 4000 AND id > 3000 AND id % 10 <> 0")  # sparse, then dense
    seen = []
    totals = drv.copy(pg, db, batch_size=300, hooks=dict(after_batch=seen.append))
    assert totals["done"]
    assert_equal_tables(conn)
    # the first two batches read (the first has no lower key to reckon from), then 300 keys each
    assert [r["reckoned"] for r in seen[:4]] == [False, False, True, True]
    assert seen[4]["seen"] == 0 and seen[4]["reckoned"]                       # 1201-1500: in the gap
    assert not seen[5]["reckoned"] and seen[5]["last_key"] == {"id": 4200}   # read: over the gap at once
    # reckoned from 3000 keys for 300 rows, the dense stretch from 4201 on would give 1800 rows:
    # capped, rolled back, read
    assert not seen[6]["reckoned"] and seen[6]["seen"] == 300
    assert all(r["reckoned"] for r in seen[7:])
    assert max(r["seen"] for r in seen) <= 2 * 300
    assert sum(r["seen"] for r in seen) == 6000 - 1800 - 900


def test_a_pause_while_a_capped_batch_rolls_back_leaves_the_batch_undone(pg, db, conn):
    """A reckoned batch reaches its cap and rolls back; the operator pauses before it reads its
    upper key: the batch does nothing (it must not take the range's end as its upper key)."""
    make_prepared(pg, db, rows=2000)
    drv.start(pg, db)
    s = session(pg, db)
    try:
        ctx, _unused = context(s)
        plain_query = s.query

        def query(stmt, params=None):
            rows = plain_query(stmt, params)
            if isinstance(params, dict) and params.get("cap"):  # the capped insert: 2000 rows reach the cap of 200
                scalar(conn, "SELECT partitioning.pause(%s, 'between the statements')", (TABLE,))
            return rows

        s.query = query
        res = next_batch(s, ctx, 100, reckon=True)
    finally:
        s.close()
    assert res["paused"] and not res["reckoned"]
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned") == 0
    assert scalar(conn, "SELECT checkpoint FROM partitioning.backfill_ranges") is None


def test_composite_key_in_keyset_order(pg, db, conn):
    make_prepared(pg, db, rows=2500, composite=True)
    drv.copy(pg, db, batch_size=300, verify_batches=True)
    assert_equal_tables(conn, cols="org_id, id, occurred_at, region, amount, note")
    # every key range was compared during the copy: verified without a second pass
    row = state_row(conn)
    assert row["phase"] == "verified" and row["verification"]["status"] == "ok", row["verification"]
    assert row["verification"]["rows"] == 2500


def test_parallel_workers_copy_disjoint_ranges_exactly(pg, db, conn):
    make_prepared(pg, db, rows=4000)
    totals = drv.copy(pg, db, batch_size=250, workers=3)
    assert totals["done"]
    assert scalar(conn, "SELECT count(*) FROM partitioning.backfill_ranges") == 3
    assert scalar(conn, "SELECT sum(rows_copied) FROM partitioning.backfill_ranges") == 4000
    assert_equal_tables(conn)


def test_resume_continues_from_the_checkpoint(pg, db, conn):
    make_prepared(pg, db, rows=2000)
    seen = []

    def stop_after_two(res):
        seen.append(res)
        if len(seen) == 2:
            raise KeyboardInterrupt  # the process dies between batches

    try:
        drv.copy(pg, db, batch_size=300, hooks=dict(after_batch=stop_after_two))
    except KeyboardInterrupt:
        pass
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned") == 600
    assert scalar(conn, "SELECT checkpoint->>'id' FROM partitioning.backfill_ranges") == "600"
    drv.copy(pg, db, batch_size=300)
    assert_equal_tables(conn)
    # never started over: 2 batches, then 5 more (300 * 4 + 200)
    assert scalar(conn, "SELECT batches FROM partitioning.backfill_ranges") == 7


def test_more_workers_on_resume_split_the_rest_of_the_range(pg, db, conn):
    make_prepared(pg, db, rows=3000)
    drv.copy(pg, db, batch_size=400, seconds=0.0001, finish=False)  # started, at most one batch
    n = []

    def stop_after_two(res):
        n.append(res)
        if len(n) == 2:
            raise KeyboardInterrupt

    try:
        drv.copy(pg, db, batch_size=400, hooks=dict(after_batch=stop_after_two))
    except KeyboardInterrupt:
        pass
    checkpoint = int(scalar(conn, "SELECT checkpoint->>'id' FROM partitioning.backfill_ranges"))
    totals = drv.copy(pg, db, batch_size=400, workers=3)
    assert totals["done"]
    assert scalar(conn, "SELECT count(*) FROM partitioning.backfill_ranges") == 3
    # the new ranges cut the rest (checkpoint, upper]: nothing before the checkpoint again
    assert scalar(conn, "SELECT min((lower_key->>'id')::int) FROM partitioning.backfill_ranges "
                        "WHERE range_no > 0") > checkpoint
    assert scalar(conn, "SELECT sum(rows_copied) FROM partitioning.backfill_ranges") == 3000
    assert_equal_tables(conn)


def test_plain_insert_falls_back_to_on_conflict_when_the_twin_has_the_key(pg, db, conn):
    """The batch tries a plain INSERT first; a key the sync trigger already wrote (an update of a
    row not copied yet) makes it conflict: rolled back to the savepoint, the batch runs with
    ON CONFLICT DO NOTHING in the same transaction, and the trigger's newer version stays."""
    from ..helpers.phase2_setup import context, next_batch, session

    make_prepared(pg, db, rows=2000)
    drv.start(pg, db)
    cur = conn.cursor()
    cur.execute("UPDATE public.revenues SET amount = amount + 1000, note = 'newer' WHERE id IN (150, 1650)")
    sess = session(pg, db)
    try:
        ctx, _row = context(sess)
        results = []
        while True:
            res = next_batch(sess, ctx, 500)
            if res is None:
                break
            results.append(res)
            if res["done"]:
                break
        assert ctx.forms["plain_allowed"] is True
        assert ctx.forms["fallbacks"] == 1        # the first batch met id 150 and fell back
        assert [r["form"] for r in results] == ["conflict"] * 5
        assert [r["locked"] for r in results] == [500, 500, 500, 500, 0]
        # batch 1: fell back (148 + 351 inserted, 150 kept); 2, 3: backoff (ON CONFLICT); 4 too (1650 kept)
        assert [r["inserted"] for r in results] == [499, 500, 500, 499, 0]
    finally:
        sess.close()
    assert_equal_tables(conn)
    assert scalar(conn, "SELECT note FROM public.revenues_partitioned WHERE id = 150") == "newer"


def test_plain_insert_is_used_when_nothing_conflicts(pg, db, conn):
    from ..helpers.phase2_setup import context, next_batch, session

    make_prepared(pg, db, rows=1200)
    drv.start(pg, db)
    sess = session(pg, db)
    try:
        ctx, _row = context(sess)
        while True:
            res = next_batch(sess, ctx, 500)
            if res is None or res["done"]:
                break
        assert ctx.forms["plain_allowed"] is True and ctx.forms.get("fallbacks", 0) == 0
        assert set(ctx.batch_sql) == {(False, "plain"), (True, "plain")}
    finally:
        sess.close()
    assert_equal_tables(conn)
