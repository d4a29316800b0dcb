"""A session the server ends is reported with its real cause, in every module (db.run_module).

psycopg2 reports a terminated backend as "server closed the connection unexpectedly", without
its SQLSTATE, and any later call on the dead connection (a rollback, resetting autocommit)
replaced even that by "connection already closed". The server's FATAL message is still in
libpq's error message: ``db.connection_lost`` reads it and says what it means, and nothing runs
on a dead connection after the error.
"""
import json
import time
import types

import pytest

from ansible_collections.dbops.partitioning.plugins.module_utils.db import (
    Session, connection_lost, open_session, run_module)

from ..helpers.backfill_driver import module_process, run_module as run_module_process
from ..helpers.phase3_setup import is_partitioned, make_verified, phase
from ..helpers.switchover import one, switch


class FakeModule:
    """What run_module uses of an AnsibleModule; fail_json and exit_json end the call as Ansible's do."""

    def __init__(self, params, check_mode=False):
        self.params, self.check_mode, self.warnings = params, check_mode, []

    def fail_json(self, **kw):
        raise SystemExit(dict(kw, failed=True))

    def exit_json(self, **kw):
        raise SystemExit(kw)

    def warn(self, text):
        self.warnings.append(text)


def run(params, work):
    with pytest.raises(SystemExit) as e:
        run_module(FakeModule(params), work)
    return e.value.args[0]


def test_a_terminated_session_is_reported_with_the_servers_words_and_sqlstate(params):
    def work(module, state):
        session = open_session(module, state, "partition_create")
        with session.transaction():           # leaving it must not hide the cause behind "already closed"
            session.execute("CREATE TABLE t (i int)")
            session.query("SELECT pg_terminate_backend(pg_backend_pid())")
        return dict(changed=True)

    result = run(params, work)
    assert result["failed"]
    assert result["msg"] == (
        "The connection to PostgreSQL was lost while partition_create ran: the server ended the session: FATAL:  "
        "terminating connection due to administrator command (SQLSTATE 57P01: an administrator ended the session "
        "(pg_terminate_backend) or the server is shutting down). The transaction in progress was rolled back by the "
        "server; what this run committed before it stays. Run it again: it resumes where it stopped.")
    assert "already closed" not in result["msg"]
    assert result["queries"] == ["CREATE TABLE t (i int)"]


def test_a_terminated_worker_session_is_reported_with_its_cause_too(params):
    def work(module, state):
        open_session(module, state, "batch_copy")
        worker = Session.open(params, application_suffix="batch_copy/worker")
        worker.query("SELECT pg_terminate_backend(pg_backend_pid())")
        return dict(changed=False)

    result = run(params, work)
    assert result["msg"].startswith(
        "The connection to PostgreSQL was lost while batch_copy ran: the server ended the session: FATAL:  "
        "terminating connection due to administrator command (SQLSTATE 57P01: ")


def test_the_transaction_was_rolled_back_and_a_session_can_reconnect(pg, db, params):
    session = Session.open(params, application_suffix="test")
    with pytest.raises(Exception):
        with session.transaction():
            session.execute("CREATE TABLE t (i int)")
            session.query("SELECT pg_terminate_backend(pg_backend_pid())")
    assert "57P01" in session.lost
    session.reconnect()
    assert session.lost is None
    assert session.scalar("SELECT to_regclass('t') IS NULL")
    session.close()


@pytest.mark.parametrize("said, expected", [
    ("FATAL:  terminating connection because of crash of another server process\nDETAIL: ...\nserver closed the "
     "connection unexpectedly\n", "(SQLSTATE 57P02: another server process crashed and the server restarted every "
     "session)"),
    ("FATAL:  terminating connection due to idle-in-transaction timeout\n", "(SQLSTATE 25P03: "),
    ("FATAL:  the database system is shutting down\n", "the server ended the session: FATAL:  the database system is "
     "shutting down"),
    ("server closed the connection unexpectedly\n\tThis probably means the server terminated abnormally\n",
     "the server closed the connection without a message (its backend was killed or crashed, the server went down, "
     "or the network failed)"),
])
def test_every_cause_is_said_in_words(said, expected):
    conn = types.SimpleNamespace(closed=2, info=types.SimpleNamespace(error_message=said))
    assert expected in connection_lost(conn)
    assert connection_lost(types.SimpleNamespace(closed=0)) is None


def _wait_for_lock_wait(conn, application):
    """The pid of the session of ``application`` once it waits for a lock (it then holds none of
    the tables yet: the swap's LOCK is its first statement)."""
    for _attempt in range(1200):
        rows = one(conn, "SELECT a.pid FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid AND NOT l.granted "
                         "WHERE a.application_name = %s", (application,))
        if rows:
            return rows[0][0]
        time.sleep(0.05)
    raise AssertionError("%s never waited for a lock" % application)


def test_a_swap_whose_session_is_terminated_reports_the_cause_and_that_nothing_changed(pg, db):
    """The swap is one transaction: a session ended inside it changed nothing. The module says why
    it ended (not "connection already closed"), checks on a new connection that the table is still
    the original, and a second run switches over."""
    make_verified(pg, db, rows=200)
    conn = pg.connect(db)
    blocker = pg.connect(db, autocommit=False)
    one(blocker, "SELECT count(*) FROM public.revenues")     # ACCESS SHARE: the swap's LOCK waits behind it
    swap = module_process("table_swap", pg, db, table="public.revenues", lock_timeout_ms=600000, swap_retries=0,
                          max_xact_age_s=3600)
    try:
        pid = _wait_for_lock_wait(conn, "dbops.partitioning/table_swap")
        assert one(conn, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
        out, err = swap.communicate(timeout=300)
    finally:
        blocker.rollback()
        blocker.close()
    result = json.loads(out)
    assert result["failed"], (result, err)      # changed: the materialized view pre-built before the lock
    assert "already closed" not in result["msg"]
    assert result["msg"] == (
        "The connection to PostgreSQL was lost during the swap of public.revenues: the server ended the session: "
        "FATAL:  terminating connection due to administrator command (SQLSTATE 57P01: an administrator ended the "
        "session (pg_terminate_backend) or the server is shutting down). Nothing changed: the swap is one "
        "transaction, and a new connection finds public.revenues and public.revenues_partitioned as they were, and "
        "the phase still 'verified'. Run it again.")
    assert phase(conn) == "verified" and not is_partitioned(conn, "public.revenues")
    assert one(conn, "SELECT to_regclass('public.revenues_old')") == [(None,)]
    assert one(conn, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.revenues'::regclass "
                     "AND tgname = 'partitioning_sync'") == [(1,)]
    assert one(conn, "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dbops.partitioning%%'") \
        == [(0,)]                                            # the module left no session behind

    again = run_module_process("table_swap", pg, db, table="public.revenues")
    assert again["changed"] and again["phase"] == "switched", again
    assert is_partitioned(conn, "public.revenues")
    conn.close()


def test_a_swap_whose_commit_answer_was_lost_is_found_done(pg, db, params):
    """The other outcome: the COMMIT reached the server and only its answer was lost. A new
    connection finds the tables swapped, and the swap's result says so instead of an error."""
    from ansible_collections.dbops.partitioning.plugins.module_utils.switchover import pair as swap_pair
    from ansible_collections.dbops.partitioning.plugins.module_utils.switchover.transaction import (
        after_lost_connection, lock_held)

    make_verified(pg, db, rows=200)
    session = Session.open(params, application_suffix="table_swap")
    pair = swap_pair.capture(session, "public", "revenues", "revenues_partitioned")
    switched, _queries = switch(pg, db)                  # what the lost COMMIT had done
    assert switched["phase"] == "switched"
    with pytest.raises(Exception):
        session.query("SELECT pg_terminate_backend(pg_backend_pid())")
    report = []
    result = after_lost_connection(session, pair, "public.revenues", "partitioning", 1, report)
    assert result["lock_ms"] is None and result["attempts"] == 1
    assert report == [
        "attempt 1: The connection to PostgreSQL was lost during the swap of public.revenues: the server ended the "
        "session: FATAL:  terminating connection due to administrator command (SQLSTATE 57P01: an administrator ended "
        "the session (pg_terminate_backend) or the server is shutting down). The COMMIT had reached the server: a new "
        "connection finds the swap done (phase 'switched')."]
    assert lock_held(result).startswith("lock time unknown")
    assert session.lost is None                          # the session goes on, on its new connection
    session.close()
