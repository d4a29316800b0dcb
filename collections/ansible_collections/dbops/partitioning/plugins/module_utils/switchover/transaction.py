# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The swap transaction run with retries: one round trip under a short lock_timeout (HP8).

Every statement is decided before the transaction (``statements.swap_statements``), and the
whole transaction goes to the server in ONE round trip, then COMMIT: on a busy machine every
client round trip under the lock would add a wait for a CPU to the lock time. When the locks
are not granted within ``lock_timeout_ms`` (or a deadlock is detected) the attempt is rolled
back, the sessions in the way are read and named, and the next attempt follows after a backoff
with jitter; after the last one nothing has changed and the error names the blockers.

When the server ends the session inside the transaction (``pg_terminate_backend``, a crash, a
shutdown, the network), nothing is run on the dead connection (a rollback there would only
replace the cause by "connection already closed"): a new connection finds out what the server
kept (``after_lost_connection``) and the operator is told the cause and the outcome.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbops.partitioning.plugins.module_utils import state as state_store
from ansible_collections.dbops.partitioning.plugins.module_utils.catalog import describe_relation
from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError, connection_lost
from ansible_collections.dbops.partitioning.plugins.module_utils.identifiers import qualified
from ansible_collections.dbops.partitioning.plugins.module_utils.locking import (
    BACKOFF_MS, backoff_ms, blocking_sessions, describe_blockers)

try:
    import psycopg2
except ImportError:  # pragma: no cover
    psycopg2 = None

LOCK_NOT_AVAILABLE = "55P03"
DEADLOCK = "40P01"

# Last in the batch: the server's time since the locks were granted (statements.swap_statements
# records the moment) and how many pending keys were reconciled under them.
LOCK_TIME_SQL = ("SELECT (extract(epoch FROM clock_timestamp() - current_setting('dbops.lock_at')::timestamptz) * 1000)"
                 "::float8 AS ms, current_setting('dbops.reconciled')::int AS reconciled")


def _is_retryable(exc):
    return getattr(exc, "pgcode", None) in (LOCK_NOT_AVAILABLE, DEADLOCK)


def run_swap(session, statements, pair, table_name, state_schema, lock_timeout_ms, retries, backoff=BACKOFF_MS):
    """Run ``statements`` (the swap of ``pair``) as one transaction, retried. Returns dict(lock_ms,
    attempts, retries=[...], reconciled).

    ``lock_ms`` = server time from the granted LOCK to the end of the statements + the COMMIT's
    round trip as measured here (None when the COMMIT's answer was lost). The blockers of both
    tables are named on every retry. On the final failure a PartitioningError names them; every
    attempt was rolled back, nothing changed. In check mode the statements are only recorded.
    """
    texts = [session.as_text(x).strip().rstrip(";").strip() for x in statements]
    texts = [t for t in texts if t]
    session.queries.extend(texts)
    session.changed = True
    if session.check_mode:
        return dict(lock_ms=None, attempts=0, retries=[], reconciled=0)
    batch = ";\n".join(texts + [LOCK_TIME_SQL])
    attempts = max(0, int(retries)) + 1
    report = []
    conn = session.conn
    for attempt in range(attempts):
        conn.autocommit = False
        try:
            cur = conn.cursor()
            try:
                cur.execute(batch)
                server_ms, reconciled = cur.fetchone()
            finally:
                cur.close()
            t0 = time.monotonic()
            conn.commit()
            lock_ms = server_ms + (time.monotonic() - t0) * 1000.0
            return dict(lock_ms=lock_ms, attempts=attempt + 1, retries=report, reconciled=reconciled)
        except psycopg2.Error as e:
            if conn.closed:
                return after_lost_connection(session, pair, table_name, state_schema, attempt + 1, report)
            conn.rollback()
            conn.autocommit = True   # the blockers are read outside any transaction
            if not _is_retryable(e):
                raise
            blockers = blocking_sessions(session, pair.relations)
            report.append("attempt %d: %s; blocking: %s" % (attempt + 1, (e.pgerror or str(e)).strip().splitlines()[0],
                                                            describe_blockers(blockers)))
            if attempt + 1 < attempts:
                time.sleep(backoff_ms(attempt, backoff) / 1000.0)
                continue
            raise PartitioningError(
                "The swap of %s could not get its locks within %d ms in %d attempts; nothing was changed. "
                "Blocking: %s. Let those transactions finish (or end them), then run again."
                % (table_name, int(lock_timeout_ms), attempts, describe_blockers(blockers)),
                blockers=blockers, retries=report)
        finally:
            if not conn.closed:
                conn.autocommit = True
    return None  # pragma: no cover


def lock_held(result):
    """The lock time of ``run_swap``'s result, for the operator."""
    if result["lock_ms"] is None:
        return "lock time unknown: the COMMIT's answer was lost, and a new connection found the swap done"
    return "lock held %.1f ms" % result["lock_ms"]


def after_lost_connection(session, pair, table_name, state_schema, attempt, report):
    """The swap's session ended inside its transaction: what did the server keep?

    The swap is one transaction, so either none of it committed (the session ended before the
    COMMIT: the usual case) or all of it (the COMMIT was done and only its answer was lost). A
    new connection tells which from the tables' OIDs: the first case raises the operator's error
    (the cause, and that nothing changed); the second returns the swap's result."""
    cause = connection_lost(session.conn)
    said = "The connection to PostgreSQL was lost during the swap of %s: %s." % (table_name, cause)
    try:
        session.reconnect()
    except psycopg2.Error as e:
        raise PartitioningError(
            "%s No new connection could be opened to see what the server kept (%s); the swap is one transaction, so "
            "either all of it committed or nothing. Run it again once the server answers: it finds out which."
            % (said, str(e).strip().splitlines()[0]), connection_lost=True, retries=report)
    state_store.lock_table_work(session, table_name)      # the lost session's lock ended with it
    a, s = [describe_relation(session, *rel) for rel in pair.relations]
    now = (a.oid if a else None, s.oid if s else None)
    row = state_store.get_table(session, state_schema, table_name)
    phase = row["phase"] if row else None
    names = " and ".join(qualified(*rel) for rel in pair.relations)
    if now == (pair.active.oid, pair.standby.oid):
        raise PartitioningError(
            "%s Nothing changed: the swap is one transaction, and a new connection finds %s as they were, and the "
            "phase still %r. Run it again." % (said, names, phase), connection_lost=True, retries=report)
    if now[0] == pair.standby.oid:
        report.append("attempt %d: %s The COMMIT had reached the server: a new connection finds the swap done "
                      "(phase %r)." % (attempt, said, phase))
        return dict(lock_ms=None, attempts=attempt, retries=report, reconciled=None)
    raise PartitioningError(
        "%s A new connection finds %s neither as they were nor swapped (phase %r): something else changed them "
        "meanwhile; look before running again." % (said, names, phase), connection_lost=True, retries=report)
