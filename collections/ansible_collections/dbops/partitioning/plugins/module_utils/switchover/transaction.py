# -*- coding: utf-8 -*-
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The swap transaction run with retries: one round trip under a short lock_timeout (HP8).

Every statement is decided before the transaction (``statements.swap_statements``), and the
whole transaction goes to the server in ONE round trip, then COMMIT: on a busy machine every
client round trip under the lock would add a wait for a CPU to the lock time. When the locks
are not granted within ``lock_timeout_ms`` (or a deadlock is detected) the attempt is rolled
back, the sessions in the way are read and named, and the next attempt follows after a backoff
with jitter; after the last one nothing has changed and the error names the blockers.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ansible_collections.dbops.partitioning.plugins.module_utils.db import PartitioningError
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


def run_swap(session, statements, relations, table_name, lock_timeout_ms, retries, backoff=BACKOFF_MS):
    """Run ``statements`` as one transaction, retried. Returns dict(lock_ms, attempts, retries=[...],
    reconciled).

    ``lock_ms`` = server time from the granted LOCK to the end of the statements + the COMMIT's
    round trip as measured here. ``relations`` ((schema, name) of the tables) are whose blockers
    are named. On the final failure a PartitioningError names them; every attempt was rolled
    back, nothing changed. In check mode the statements are only recorded.
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
            conn.rollback()
            conn.autocommit = True   # the blockers are read outside any transaction
            if not _is_retryable(e):
                raise
            blockers = blocking_sessions(session, relations)
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
            conn.autocommit = True
    return None  # pragma: no cover
