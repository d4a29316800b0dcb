"""DDL on the original during a migration never fails the application's writes (HP18).

Each case runs the application's DDL on a table in phase 'verified', then inserts, updates and
deletes through it: no write fails. The switchover refuses, naming the change and the playbook to
re-run; ONE re-run of phase 1 brings the twin in step (its columns follow, the rows the sync could
not carry are queued), and after phase 2's reconcile the twin equals the original row for row.
Both ways a sync is guarded are run: the DDL guard (event trigger: the test's superuser) and a
table owner without superuser (the sync function is guarded itself).
"""
import datetime

import pytest

from ..helpers.phase3_setup import SPEC, STATE, create_original, run
from ..helpers.switchover import swap_knobs

from ansible_collections.dbops.partitioning.plugins.module_utils import sync, sync_ddl
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, Session
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import backfill, reconcile
from ansible_collections.dbops.partitioning.plugins.module_utils.prepare.prepare_table import prepare_table
from ansible_collections.dbops.partitioning.plugins.module_utils.spec import normalize_spec
from ansible_collections.dbops.partitioning.plugins.module_utils.sql_templates import SqlTemplates
from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import swap

NOW = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)

# name: (the application's DDL, its writes afterwards)
CASES = {
    "drop_column": ("ALTER TABLE public.revenues DROP COLUMN note",
                    ["INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-01-03 00:00+00', 'eu', 3)",
                     "UPDATE public.revenues SET amount = 11 WHERE id = 5"]),
    "add_column": ("ALTER TABLE public.revenues ADD COLUMN channel text DEFAULT 'web'",
                   ["INSERT INTO public.revenues (occurred_at, region, amount, channel) "
                    "VALUES ('2025-01-03 00:00+00', 'eu', 3, 'shop')",
                    "UPDATE public.revenues SET channel = 'phone' WHERE id = 5"]),
    "rename_column": ("ALTER TABLE public.revenues RENAME COLUMN note TO memo",
                      ["INSERT INTO public.revenues (occurred_at, region, amount, memo) "
                       "VALUES ('2025-01-03 00:00+00', 'eu', 3, 'm')",
                       "UPDATE public.revenues SET memo = 'renamed' WHERE id = 5"]),
    "alter_type": ("ALTER TABLE public.revenues ALTER COLUMN amount TYPE numeric(14,4)",
                   ["INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-01-03 00:00+00', 'eu', 3.1234)",
                    "UPDATE public.revenues SET amount = 7.5678 WHERE id = 5"]),
    "drop_not_null": ("ALTER TABLE public.revenues ALTER COLUMN region DROP NOT NULL",
                      ["INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-01-03 00:00+00', NULL, 3)",
                       "UPDATE public.revenues SET region = NULL WHERE id = 5"]),
    "new_index": ("CREATE INDEX revenues_amount_idx ON public.revenues (amount)",
                  ["INSERT INTO public.revenues (occurred_at, region, amount) VALUES ('2025-01-03 00:00+00', 'eu', 3)",
                   "UPDATE public.revenues SET amount = 12 WHERE id = 5"]),
}
COMMON_WRITES = ["DELETE FROM public.revenues WHERE id = 6",
                 "UPDATE public.revenues SET occurred_at = '2025-02-20 00:00+00' WHERE id = 7"]


def _owner(db):
    return "own_" + db


def _verified(pg, db, guarded):
    """public.revenues brought to 'verified' by phase 1 as a superuser (the DDL guard is created) or as
    the table's owner without superuser (no event trigger: the sync function is guarded)."""
    conn = pg.connect(db)
    create_original(conn, db, rows=300, extras=False)
    user = None
    if guarded:
        user = _owner(db)
        run(conn, "DROP EVENT TRIGGER IF EXISTS partitioning_ddl_guard",
            "CREATE ROLE %s LOGIN" % user, "GRANT CREATE ON DATABASE %s TO %s" % (db, user),
            "GRANT CREATE ON SCHEMA public TO %s" % user, "ALTER TABLE public.revenues OWNER TO %s" % user,
            "GRANT pg_read_all_stats TO %s" % user)    # the guards see other sessions (HP21)
    session = _session(pg, db, user)
    try:
        _prepare_again(session)
    finally:
        session.close()
    run(conn, "INSERT INTO public.revenues_partitioned SELECT * FROM public.revenues ON CONFLICT DO NOTHING",
        "UPDATE partitioning.tables SET phase = 'verified', verified_at = now(), verification = '{\"status\": \"ok\"}'")
    conn.close()
    return user


def _session(pg, db, user=None):
    return Session(pg.connect(db, **({"user": user} if user else {})))


def _columns(conn):
    return [r[0] for r in _q(conn, "SELECT attname FROM pg_attribute WHERE attrelid = 'public.revenues'::regclass "
                                   "AND attnum > 0 AND NOT attisdropped ORDER BY attnum")]


def _q(conn, text):
    cur = conn.cursor()
    cur.execute(text)
    out = cur.fetchall() if cur.description else None
    cur.close()
    return out


def _table(conn, name, cols):
    return _q(conn, "SELECT %s FROM %s ORDER BY id" % (", ".join(cols), name))


@pytest.mark.parametrize("guarded", [False, True], ids=["ddl_guard", "owner_guarded"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_ddl_during_the_migration_never_fails_a_write(pg, db, case, guarded):
    user = _verified(pg, db, guarded)
    ddl, writes = CASES[case]
    app = pg.connect(db)
    run(app, ddl)
    for w in writes + COMMON_WRITES:       # the application's writes: none may fail
        run(app, w)
    session = _session(pg, db, user)
    row = session.query("SELECT * FROM partitioning.tables")[0]
    if case == "new_index":
        assert sync_ddl.drift(session, STATE, ("public", "revenues"), ("public", "revenues_partitioned"),
                              (STATE, "public__revenues__fwd")) == []
    else:
        with pytest.raises(PartitioningError) as err:
            swap.switchover(session, SqlTemplates.bundled(), "public.revenues", **swap_knobs(state_schema=STATE))
        assert "altered during the migration" in err.value.msg and "phase1_prepare.yml" in err.value.msg
        with pytest.raises(PartitioningError) as err:
            backfill.load_context(session, STATE, row)
        assert "phase1_prepare.yml" in err.value.msg
    # ONE re-run of phase 1, then phase 2's reconcile: in step, exactly
    _prepare_again(session)
    assert sync_ddl.drift(session, STATE, ("public", "revenues"), ("public", "revenues_partitioned"),
                          (STATE, "public__revenues__fwd")) == []
    ctx = backfill.load_context(session, STATE, row)
    reconcile.reconcile(session, ctx)
    for w in writes[1:] + ["UPDATE public.revenues SET amount = amount + 1 WHERE id = 8"]:   # synced again
        run(app, w)
    _assert_in_step(app)
    assert _q(app, "SELECT count(*) FROM partitioning.pending_keys") == [(0,)]
    session.close()
    app.close()


def _prepare_again(session):
    """Phase 1 run again on the table (it follows the application's DDL)."""
    prepare_table(session, SqlTemplates.bundled(), normalize_spec(dict(SPEC)), STATE, now=NOW)


def _in_step_after_reconcile(session, app):
    """Phase 2's reconcile, then the original and the twin hold the same rows."""
    row = session.query("SELECT * FROM partitioning.tables")[0]
    reconcile.reconcile(session, backfill.load_context(session, STATE, row))
    _assert_in_step(app)


def _assert_in_step(app):
    cols = _columns(app)
    assert _table(app, "public.revenues", cols) == _table(app, "public.revenues_partitioned", cols)


def _xids_of(conn, statements):
    """Transaction ids the statements consume when run in one transaction: its own, plus one per
    subtransaction that wrote (the measure of what a guarded sync function costs the server)."""
    before = _q(conn, "SELECT pg_current_xact_id()::text::bigint")[0][0]
    conn.autocommit = False
    cur = conn.cursor()
    for s in statements:
        cur.execute(s)
    conn.commit()
    conn.autocommit = True
    return _q(conn, "SELECT pg_current_xact_id()::text::bigint")[0][0] - before - 1


BULK = ["UPDATE public.revenues SET amount = amount + 1 WHERE id <= 200",
        "INSERT INTO public.revenues (occurred_at, region, amount) "
        "SELECT '2025-01-03 00:00+00', 'eu', g FROM generate_series(1, 100) g"]


def test_a_guarded_sync_caps_its_subtransactions_per_transaction(pg, db):
    """A table owner's guarded sync mirrors 300 rows of one transaction exactly, but runs only the
    first GUARD_ROWS of them in a subtransaction each: the subtransaction cache (64) never
    overflows, and the rest of the transaction runs the fast body."""
    _verified(pg, db, guarded=True)
    app = pg.connect(db)
    xids = _xids_of(app, BULK)
    assert 1 <= xids <= sync.GUARD_ROWS + 1
    _assert_in_step(app)
    assert _q(app, "SELECT count(*) FROM partitioning.pending_keys") == [(0,)]
    app.close()


def test_a_guarded_sync_after_drift_logs_the_rest_of_the_transaction_without_subtransactions(pg, db):
    """After the application dropped a column, the first write of a transaction that cannot be
    mirrored switches the rest of that transaction to logging keys only: every write succeeds,
    one subtransaction in all, and one re-run of phase 1 plus the reconcile bring the twin in step."""
    user = _verified(pg, db, guarded=True)
    app = pg.connect(db)
    run(app, "ALTER TABLE public.revenues DROP COLUMN note")
    assert _xids_of(app, BULK) <= 2
    assert _q(app, "SELECT count(*) > 0 FROM partitioning.pending_keys") == [(True,)]
    session = _session(pg, db, user)
    _prepare_again(session)
    _in_step_after_reconcile(session, app)
    session.close()
    app.close()


@pytest.mark.parametrize("guarded", [False, True], ids=["ddl_guard", "owner_guarded"])
def test_partition_key_made_nullable_keeps_writes_working_and_phase1_names_the_fix(pg, db, guarded):
    """DROP NOT NULL on the partition key: a NULL key cannot enter the twin (the key is part of its
    primary key), yet the application's writes never fail; the next phase refuses, and phase 1's
    re-run refuses with the fix (SET NOT NULL again) and changes nothing; once fixed, one re-run
    and the reconcile bring the twin in step."""
    user = _verified(pg, db, guarded)
    app = pg.connect(db)
    run(app, "ALTER TABLE public.revenues ALTER COLUMN occurred_at DROP NOT NULL",
        "INSERT INTO public.revenues (occurred_at, region, amount) VALUES (NULL, 'eu', 3)",
        "UPDATE public.revenues SET occurred_at = NULL WHERE id = 5")
    session = _session(pg, db, user)
    with pytest.raises(PartitioningError) as err:
        _prepare_again(session)
    assert "occurred_at" in err.value.msg and "SET NOT NULL" in err.value.msg
    assert "Unexpected error" not in err.value.msg
    run(app, "DELETE FROM public.revenues WHERE occurred_at IS NULL",
        "ALTER TABLE public.revenues ALTER COLUMN occurred_at SET NOT NULL")
    _prepare_again(session)
    _in_step_after_reconcile(session, app)
    session.close()
    app.close()
