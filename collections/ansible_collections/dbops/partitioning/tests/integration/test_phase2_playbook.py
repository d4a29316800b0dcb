"""playbooks/phase2_migrate.yml as an operator runs it: progress lines, verify, idempotent, --check."""
import re

from ..helpers.playbook_runner import run_playbook
from ..helpers.phase2_setup import TABLE, assert_equal_tables, make_prepared, scalar, state_row

TABLES = [{"table": TABLE, "partition_key": "occurred_at", "strategy": "range", "interval": "monthly"}]


def test_phase2_copies_verifies_and_is_idempotent(pg, db, conn):
    make_prepared(pg, db, rows=3000)
    run = run_playbook("phase2_migrate", pg, db, TABLES,
                       extra_vars=dict(partitioning_batch_size=400, partitioning_batch_sleep_ms=150,
                                       partitioning_max_call_s=0.4))
    assert not run.failed, run
    lines = re.findall(r"public\.revenues: (\d+)/(\d+) rows \(([\d.]+)%\)", run.output)
    assert len(lines) >= 2, run  # one progress line per bounded call
    assert "ETA" in run.output and "batch " in run.output
    assert "public.revenues: verification ok" in run.output, run
    assert state_row(conn)["phase"] == "verified"
    assert_equal_tables(conn)

    again = run_playbook("phase2_migrate", pg, db, TABLES)
    assert not again.failed, again
    assert again.changed == 0, again


def test_phase2_check_mode_changes_nothing(pg, db, conn):
    make_prepared(pg, db, rows=500)
    run = run_playbook("phase2_migrate", pg, db, TABLES, check=True)
    assert not run.failed, run
    assert "would copy about 500 rows in 1 range(s)" in run.output, run
    assert scalar(conn, "SELECT count(*) FROM public.revenues_partitioned") == 0
    assert state_row(conn)["phase"] == "prepared"


def test_phase2_stops_at_max_runtime_and_resumes(pg, db, conn):
    make_prepared(pg, db, rows=2000)
    run = run_playbook("phase2_migrate", pg, db, TABLES,
                       extra_vars=dict(partitioning_batch_size=50, partitioning_batch_sleep_ms=400,
                                       partitioning_max_runtime_s=4, partitioning_max_call_s=1))
    assert not run.failed, run
    assert "not finished in this run" in run.output, run
    first = state_row(conn)
    # (how far it got depends on the machine; that it stopped before the end does not)
    assert first["phase"] == "copying" and first["rows_copied"] < 2000
    run = run_playbook("phase2_migrate", pg, db, TABLES, extra_vars=dict(partitioning_batch_size=500))
    assert not run.failed, run
    assert state_row(conn)["phase"] == "verified"
    assert_equal_tables(conn)


def test_phase2_only_selects_one_table(pg, db, conn):
    make_prepared(pg, db, rows=300)
    tables = TABLES + [{"table": "public.other", "partition_key": "at"}]
    run = run_playbook("phase2_migrate", pg, db, tables, extra_vars=dict(partitioning_only=TABLE))
    assert not run.failed, run
    assert state_row(conn)["phase"] == "verified"


def test_phase2_after_switchover_changes_nothing(pg, db, conn):
    """Operators rerun whole sequences: phase 2 on a switched table is over, not an error."""
    make_prepared(pg, db, rows=300)
    for playbook in ("phase2_migrate", "phase3_switchover"):
        run = run_playbook(playbook, pg, db, TABLES)
        assert not run.failed, run
    assert state_row(conn)["phase"] == "switched"
    again = run_playbook("phase2_migrate", pg, db, TABLES)
    assert not again.failed, again
    assert again.changed == 0, again
    assert "public.revenues: verification ok" in again.output, again
