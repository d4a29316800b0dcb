"""Full verification (partition_verify): exact, resumable, and it catches a row changed
behind the triggers' back (the trigger is ENABLE ALWAYS, so the test disables it explicitly)."""
import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import verify

from ..helpers import backfill_driver as drv
from ..helpers.phase2_setup import STATE, TABLE, make_prepared, run, scalar, session, state_row
from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store


def _ranges(conn):
    """Leaf partitions of the twin plus the total count."""
    return scalar(conn, "SELECT count(*) FROM pg_partition_tree('public.revenues_partitioned') WHERE isleaf") + 1


def _behind_the_triggers_back(conn, stmt):
    run(conn, "BEGIN", "ALTER TABLE public.revenues DISABLE TRIGGER partitioning_sync",
        "SET LOCAL session_replication_role = replica", stmt,
        "ALTER TABLE public.revenues ENABLE ALWAYS TRIGGER partitioning_sync", "COMMIT")


@pytest.fixture
def copied(pg, db, conn):
    make_prepared(pg, db, rows=1500)
    drv.copy(pg, db, batch_size=500)
    assert state_row(conn)["phase"] == "copied"
    return conn


def test_verification_passes_and_records_every_range(pg, db, copied):
    res = drv.run_module("partition_verify", pg, db, table=TABLE)
    assert not res.get("failed"), res
    assert res["status"] == "ok" and res["changed"]
    assert res["rows"] == 1500
    assert res["ranges"] == _ranges(copied)  # e.g. 12 months + default + the total count
    assert state_row(copied)["phase"] == "verified"
    assert state_row(copied)["verified_at"]
    assert scalar(copied, "SELECT count(*) FROM partitioning.verify_ranges WHERE status = 'ok'") == _ranges(copied)
    again = drv.run_module("partition_verify", pg, db, table=TABLE)
    assert not again["changed"] and again["status"] == "ok"


@pytest.mark.parametrize("stmt,side", [
    ("UPDATE public.revenues SET note = 'sneaky' WHERE id = 77", "both (rows differ)"),
    ("DELETE FROM public.revenues WHERE id = 77", "twin"),
    ("INSERT INTO public.revenues (id, occurred_at, region, amount) VALUES (77777, '2025-05-05', 'eu', 1)",
     "original"),
], ids=["update", "delete", "insert"])
def test_a_row_changed_behind_the_triggers_back_fails_verification(pg, db, copied, stmt, side):
    _behind_the_triggers_back(copied, stmt)
    res = drv.run_module("partition_verify", pg, db, table=TABLE)
    assert res.get("failed"), res
    assert "differ" in res["msg"] and "phase 3 will refuse" in res["msg"], res["msg"]
    key = 77777 if "INSERT" in stmt else 77
    assert any(d["key"] == {"id": key} and d["side"] == side for d in res["differences"]), res["differences"]
    assert '{"id": %d}' % key in res["msg"]
    row = state_row(copied)
    assert row["phase"] == "copied"
    assert row["verification"]["status"] == "different"


def test_verification_resumes_after_an_interruption(pg, db, copied):
    s = session(pg, db)
    done = []

    def stop_after_three(name):
        if len(done) == 3:
            raise KeyboardInterrupt
        done.append(name)

    try:
        row = state_store.get_table(s, STATE, TABLE)
        ctx = drv.backfill.load_context(s, STATE, row)
        with pytest.raises(KeyboardInterrupt):
            verify.verify_table(s, ctx, row, before_range=stop_after_three)
    finally:
        s.close()
    assert state_row(copied)["verification"]["status"] == "running"
    res = drv.run_module("partition_verify", pg, db, table=TABLE)
    assert res["status"] == "ok", res
    assert sorted(res["skipped"]) == sorted(done)
    assert len(res["checked"]) == _ranges(copied) - 3
    full = drv.run_module("partition_verify", pg, db, table=TABLE, full=True)
    assert full["status"] == "ok" and full["skipped"] == [] and len(full["checked"]) == _ranges(copied)


def test_verification_refuses_before_the_copy_and_in_check_mode_changes_nothing(pg, db, conn):
    make_prepared(pg, db, rows=100)
    res = drv.run_module("partition_verify", pg, db, table=TABLE)
    assert res.get("failed") and "run batch_copy" in res["msg"], res
    drv.copy(pg, db, batch_size=500)
    res = drv.run_module("partition_verify", pg, db, table=TABLE, check_mode=True)
    assert not res.get("failed"), res
    assert len(res["would_check"]) == _ranges(conn)
    assert state_row(conn)["phase"] == "copied"


def test_batch_copy_without_phase1_says_what_to_run(pg, db, conn):
    run(conn, "CREATE TABLE public.revenues (id int PRIMARY KEY)")
    res = drv.run_module("batch_copy", pg, db, table=TABLE)
    assert res.get("failed") and "run phase1_prepare first" in res["msg"], res
    res = drv.run_module("partition_verify", pg, db, table=TABLE)
    assert res.get("failed") and "run phase1_prepare first" in res["msg"], res


def test_pending_keys_are_reconciled_before_they_count_and_a_held_key_waits(pg, db, copied):
    """The runbook's repair: log a differing key to pending_keys; verification reconciles it.
    While a writer still holds the row, verification says so and stays resumable."""
    _behind_the_triggers_back(copied, "UPDATE public.revenues SET note = 'sneaky' WHERE id = 77")
    run(copied, "INSERT INTO partitioning.pending_keys (table_name, pk, reason) "
                "VALUES ('public.revenues', '{\"id\": 77}', 'manual')")
    holder = pg.connect(db, autocommit=False)
    holder.cursor().execute("SELECT 1 FROM public.revenues WHERE id = 77 FOR UPDATE")
    try:
        res = drv.run_module("partition_verify", pg, db, table=TABLE)
        assert res.get("failed") and "held by open transactions" in res["msg"], res
        assert state_row(copied)["verification"]["status"] == "running"
    finally:
        holder.rollback()
        holder.close()
    res = drv.run_module("partition_verify", pg, db, table=TABLE)
    assert res["status"] == "ok", res  # the same run, resumed
    assert scalar(copied, "SELECT note FROM public.revenues_partitioned WHERE id = 77") == "sneaky"
