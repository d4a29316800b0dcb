"""The latency guard (migrate/latency.py) on a real server: the application's statements in
flight (an application session running a slow statement stands for a write stuck behind the
copy) make it strained, the copy's sleep after each batch grows; once they are gone it shrinks
again; nothing but the application counts. Without pg_read_all_stats it warns and assumes the
application works (never silently off), and so does the replica-lag guard without pg_monitor."""
import threading
import time

from ansible_collections.dbops.partitioning.plugins.module_utils import health
from ansible_collections.dbops.partitioning.plugins.module_utils.db import Session
from ansible_collections.dbops.partitioning.plugins.module_utils.migrate import latency, throttle

from ..helpers.phase2_setup import context, make_prepared, run, scalar, session


def _samples(guard, sess, n, in_flight):
    for _sample in range(n):
        if in_flight:
            guard.batch_started()
        guard.sample(sess)
        if in_flight:
            guard.batch_ended()
        time.sleep(0.05)


def test_the_guard_slows_the_copy_while_the_application_is_held_up_and_recovers(pg, db, conn):
    sess = session(pg, db)
    app = pg.connect(db)
    try:
        guard = latency.LatencyGuard(10)
        assert guard.start(sess) == []
        guard.register(conn.get_backend_pid())          # the test's own connection is ours
        _samples(guard, sess, 5, in_flight=False)       # the baseline: nobody works
        assert guard.report()["baseline_ms"] == 0
        assert guard.pause_after(0.2) == 0.0            # the application is idle: full speed

        slow = threading.Thread(target=lambda: app.cursor().execute("SELECT pg_sleep(1.5)"))
        slow.start()
        end = time.time() + 20
        while time.time() < end and not scalar(
                conn, "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT pg_sleep%%'"):
            time.sleep(0.02)
        time.sleep(0.1)
        _samples(guard, sess, 5, in_flight=True)        # the application's statement ages while a batch runs
        first = guard.pause_after(0.2)
        _samples(guard, sess, 3, in_flight=True)
        second = guard.pause_after(0.2)
        assert 0 < first < second, (first, second, guard.report())
        strained = guard.report()
        assert strained["strained"] == 2 and strained["factor"] > 0.5
        slow.join()

        time.sleep(latency.WINDOW_S + 0.1)             # the held-up statement is over
        _samples(guard, sess, 5, in_flight=True)
        after = guard.pause_after(0.2)
        assert after < second and guard.report()["factor"] < strained["factor"]
    finally:
        app.close()
        sess.close()


def test_our_own_sessions_do_not_count_as_the_application(pg, db, conn):
    sess = session(pg, db)
    ours = pg.connect(db)
    try:
        guard = latency.LatencyGuard(10)
        guard.start(sess)
        guard.register(conn.get_backend_pid())
        guard.register(ours.get_backend_pid())
        _samples(guard, sess, 3, in_flight=False)
        t = threading.Thread(target=lambda: ours.cursor().execute("SELECT pg_sleep(1)"))
        t.start()
        time.sleep(0.3)
        _samples(guard, sess, 5, in_flight=True)
        t.join()
        assert guard.pause_after(0.2) == 0.0 and guard.report()["strained"] == 0
    finally:
        ours.close()
        sess.close()


def test_without_the_privilege_to_see_the_application_the_guards_warn(pg, db, conn):
    make_prepared(pg, db, rows=10)
    role = "lg_" + db.lower()
    run(conn, "CREATE ROLE %s" % role)
    try:
        def open_unprivileged():
            s = Session(pg.connect(db))
            s.query("SET ROLE %s" % role)
            return s

        ctx, _row = context(session(pg, db))
        monitor = throttle.Monitor(open_unprivileged, ctx, throttle.Limits(max_replica_lag_s=0, max_app_latency_ms=10))
        monitor.start()
        try:
            assert any("pg_read_all_stats" in w for w in monitor.warnings), monitor.warnings
            # it cannot tell whether the application works: it assumes it does, and times its own reading
            assert monitor.guard.sees_all is False and monitor.guard.app_at > 0
        finally:
            monitor.close()
        s = open_unprivileged()
        try:
            # no replica here: nothing to warn about; with one, the warning names pg_monitor (below)
            assert health.replica_lag_warnings(s) == []
        finally:
            s.close()
    finally:
        run(conn, "DROP ROLE %s" % role)
